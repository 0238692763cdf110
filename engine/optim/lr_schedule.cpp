#include "engine/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace engine::optim {

float LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) return peak_lr * static_cast<float>(step) / static_cast<float>(warmup_steps);
  const double span = std::max<int64_t>(1, total_steps - warmup_steps);
  const double progress = std::min(1.0, (step - warmup_steps) / span);
  switch (kind) {
    case ScheduleKind::Constant: return peak_lr;
    case ScheduleKind::Linear: return static_cast<float>(peak_lr * (1.0 - progress));
    case ScheduleKind::Cosine: return static_cast<float>(peak_lr * 0.5 * (1.0 + std::cos(M_PI * progress)));
  }
  return peak_lr;
}

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "constant") return ScheduleKind::Constant;
  if (name == "linear") return ScheduleKind::Linear;
  if (name == "cosine") return ScheduleKind::Cosine;
  throw InputError("unknown learning-rate schedule '" + name + "' (constant, linear, cosine)");
}

}  // namespace engine::optim
