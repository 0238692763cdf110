#include "tools/train/evaluate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <utility>

#include "engine/autograd.h"
#include "engine/nvtx.h"

namespace train {

using engine::Tensor;

// Token-weighted loss and greedy accuracy over `examples`, in batches. Per batch only the
// [batch * seq] per-token losses and predictions come to the host (LlamaModel::eval_stats:
// the logits never exist); the sums run in double in token order.
EvalResult evaluate(const models::LlamaModel& model, const std::vector<models::Example>& examples,
                    int64_t batch_size, int64_t tile_tokens) {
  engine::MemoryOwnerScope owner("evaluation");  // the memory report's owner (engine/allocator.h)
  engine::NvtxRange range("evaluate");
  engine::NoGradGuard no_grad;
  models::ForwardOptions options;
  options.tile_tokens = tile_tokens;
  EvalResult r;
  double loss_sum = 0;
  int64_t right = 0;
  for (size_t first = 0; first < examples.size(); first += batch_size) {
    std::vector<int64_t> idx;
    for (size_t i = first; i < std::min(examples.size(), first + batch_size); ++i) idx.push_back(i);
    models::Batch b = models::make_batch(examples, idx, 0);
    if (b.target_tokens == 0) continue;
    const auto [loss, argmax] = model.eval_stats(b.ids, b.labels, options);
    const std::vector<float> row_loss = loss.to_floats();
    const std::vector<int32_t> best = argmax.to_ints();
    const int64_t rows = b.ids.dim(0), seq = b.ids.dim(1);
    const std::vector<int32_t> lab = b.labels.to_ints();
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t t = 0; t + 1 < seq; ++t) {
        const int32_t target = lab[row * seq + t + 1];
        if (target == models::kIgnoreLabel) continue;
        loss_sum += row_loss[row * seq + t];
        right += best[row * seq + t] == target;
        ++r.tokens;
      }
  }
  ENGINE_CHECK(r.tokens > 0, "the evaluation split has no trained tokens");
  r.loss = loss_sum / r.tokens;
  r.accuracy = double(right) / r.tokens;
  return r;
}

std::string eval_line(const char* when, const EvalResult& r, const char* split) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "%s %s: loss %.4f  perplexity %.3f  accuracy %.1f%%  (%lld tokens)", split,
                when, r.loss, std::exp(r.loss), 100 * r.accuracy, static_cast<long long>(r.tokens));
  return buf;
}

std::string forgetting_line(const EvalResult& before, const EvalResult& after, double threshold,
                            bool* forgetting) {
  // Perplexity is exp(loss), so the relative rise is exp(after - before) - 1.
  const double rise = std::exp(after.loss - before.loss) - 1;
  *forgetting = !(rise <= threshold);  // a NaN loss counts as forgetting
  char buf[400];
  if (*forgetting)
    std::snprintf(buf, sizeof buf,
                  "FORGETTING: the general-text perplexity rose %.1f%% (%.3f -> %.3f), more than "
                  "--forgetting-threshold %.0f%%: the model has lost some general ability; try a lower --lr, "
                  "fewer --epochs or mixing general text into the training data",
                  100 * rise, std::exp(before.loss), std::exp(after.loss), 100 * threshold);
  else
    std::snprintf(buf, sizeof buf,
                  "no forgetting: the general-text perplexity changed %+.1f%% (%.3f -> %.3f), within "
                  "--forgetting-threshold %.0f%%",
                  100 * rise, std::exp(before.loss), std::exp(after.loss), 100 * threshold);
  return buf;
}

size_t count_examples_seen_in_training(const std::vector<models::Example>& eval,
                                      const std::vector<models::Example>& train) {
  auto key = [](const models::Example& e) { return std::make_pair(e.input_ids, e.labels); };
  std::set<std::pair<std::vector<int32_t>, std::vector<int32_t>>> seen;
  for (const models::Example& e : train) seen.insert(key(e));
  size_t count = 0;
  for (const models::Example& e : eval) count += seen.count(key(e));
  return count;
}

}  // namespace train
