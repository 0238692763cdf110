// SIGINT and SIGTERM ask a training run to stop at the end of its current step, save a
// checkpoint and exit; a second signal ends the process at once (the default action).
#pragma once

namespace train {

class StopSignals {
 public:
  // Installs the handlers for the lifetime of this object (one at a time).
  StopSignals();
  // Restores the handlers that were there before.
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  bool requested() const;
  const char* name() const;  // "SIGINT" or "SIGTERM" once requested
};

}  // namespace train
