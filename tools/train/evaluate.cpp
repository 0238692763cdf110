#include "tools/train/evaluate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "engine/autograd.h"
#include "engine/nvtx.h"

namespace train {

using engine::Tensor;

// Token-weighted loss and greedy accuracy over `examples`, in batches.
EvalResult evaluate(const models::LlamaModel& model, const std::vector<models::Example>& examples,
                    int64_t batch_size) {
  engine::NvtxRange range("evaluate");
  engine::NoGradGuard no_grad;
  EvalResult r;
  double loss_sum = 0;
  int64_t right = 0;
  for (size_t first = 0; first < examples.size(); first += batch_size) {
    std::vector<int64_t> idx;
    for (size_t i = first; i < std::min(examples.size(), first + batch_size); ++i) idx.push_back(i);
    models::Batch b = models::make_batch(examples, idx, 0);
    if (b.target_tokens == 0) continue;
    Tensor logits = model.logits(b.ids);
    const int64_t rows = b.ids.dim(0), seq = b.ids.dim(1), vocab = model.config().vocab;
    std::vector<int32_t> lab = b.labels.to_ints();
    const std::vector<float> logit_values = logits.to_floats();
    const float* l = logit_values.data();
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t t = 0; t + 1 < seq; ++t) {
        const int32_t target = lab[row * seq + t + 1];
        if (target == models::kIgnoreLabel) continue;
        const float* z = l + (row * seq + t) * vocab;
        double mx = z[0];
        int64_t best = 0;
        for (int64_t v = 1; v < vocab; ++v)
          if (z[v] > z[best]) best = v;
        mx = z[best];
        double s = 0;
        for (int64_t v = 0; v < vocab; ++v) s += std::exp(double(z[v]) - mx);
        loss_sum += std::log(s) + mx - z[target];
        right += best == target;
        ++r.tokens;
      }
  }
  ENGINE_CHECK(r.tokens > 0, "the evaluation split has no trained tokens");
  r.loss = loss_sum / r.tokens;
  r.accuracy = double(right) / r.tokens;
  return r;
}

std::string eval_line(const char* when, const EvalResult& r) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "held-out %s: loss %.4f  accuracy %.1f%%  (%lld tokens)", when, r.loss,
                100 * r.accuracy, static_cast<long long>(r.tokens));
  return buf;
}

}  // namespace train
