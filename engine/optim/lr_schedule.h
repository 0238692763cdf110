// Learning-rate schedules with linear warmup, as in transformers' get_*_schedule_with_warmup:
//   warmup:   lr * step / warmup_steps                    for step < warmup_steps
//   constant: lr
//   linear:   lr * (total - step) / (total - warmup)      decays to 0 at `total`
//   cosine:   lr * 0.5 * (1 + cos(pi * progress)),  progress = (step - warmup) / (total - warmup)
// `step` counts optimizer steps from 0 (the rate used for the first update).
#pragma once
#include <cstdint>
#include <string>

namespace engine::optim {

enum class ScheduleKind { Constant, Linear, Cosine };

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::Constant;
  float peak_lr = 1e-4f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  float at(int64_t step) const;
};

// "constant", "linear" or "cosine"; anything else is an error naming the value.
ScheduleKind parse_schedule_kind(const std::string& name);

}  // namespace engine::optim
