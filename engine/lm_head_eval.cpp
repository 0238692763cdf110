// engine::lm_head_eval: the inputs' device picks the implementation (engine/lm_head_eval.h).
#include "engine/lm_head_eval.h"

#include "engine/backend.h"
#include "engine/nvtx.h"

namespace engine {

LmHeadEval lm_head_eval(const Tensor& h, const Tensor& weight, const Tensor& targets,
                        int ignore_index, int64_t chunk_rows) {
  NvtxRange range("lm_head_eval");
  ENGINE_CHECK(h.device() == weight.device() && h.device() == targets.device(),
               "lm_head_eval: h ", h.str(), ", weight ", weight.str(), " and targets ",
               targets.str(), " are not on one device");
  if (h.device().is_cpu()) return cpu::lm_head_eval(h, weight, targets, ignore_index, chunk_rows);
  std::vector<Tensor> r = backend::device_lm_head_eval(h, weight, targets, ignore_index, chunk_rows);
  return {r[0], r[1]};
}

}  // namespace engine
