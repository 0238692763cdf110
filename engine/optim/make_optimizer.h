// The optimizer --optim names (bitsandbytes' names): adamw (resident fp32 states),
// paged_adamw_32bit and paged_adamw_8bit (engine/optim/paged_adamw.h).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/optim/adamw.h"
#include "engine/optim/optimizer.h"
#include "engine/tensor.h"

namespace engine::optim {

// Every kind make_optimizer accepts, in --help order.
const std::vector<std::string>& optimizer_kinds();
// Throws engine::InputError "unknown optimizer 'x' (adamw, paged_adamw_32bit, paged_adamw_8bit)"
// for any other kind (callers put the flag in front).
void check_optimizer_kind(const std::string& kind);
std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<Tensor> params,
                                          AdamWConfig config);

}  // namespace engine::optim
