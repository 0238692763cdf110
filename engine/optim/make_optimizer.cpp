#include "engine/optim/make_optimizer.h"

#include "engine/optim/paged_adamw.h"

namespace engine::optim {

const std::vector<std::string>& optimizer_kinds() {
  static const std::vector<std::string> kinds = {"adamw", "paged_adamw_32bit", "paged_adamw_8bit"};
  return kinds;
}

void check_optimizer_kind(const std::string& kind) {
  for (const std::string& k : optimizer_kinds())
    if (k == kind) return;
  std::string list;
  for (const std::string& k : optimizer_kinds()) list += (list.empty() ? "" : ", ") + k;
  throw InputError("unknown optimizer '" + one_line(kind) + "' (" + list + ")");
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<Tensor> params,
                                          AdamWConfig config) {
  check_optimizer_kind(kind);
  if (kind == "adamw") return std::make_unique<AdamW>(std::move(params), config);
  return std::make_unique<PagedAdamW>(std::move(params), config, kind == "paged_adamw_8bit");
}

}  // namespace engine::optim
