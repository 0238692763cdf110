// Packing (models/packing.h) on the CPU: the greedy first-fit rows hold every example
// once, the packed batch's layout (positions restarting per document, document starts,
// the padding as a document of its own), and one training step of a tiny QLoRA Llama
// on packed rows against the same examples unpacked: the same loss and gradients.
//
// Bound: per token, the packed forward computes what the unpacked one does (positions
// and the visible keys are the same, and every CPU op rounds its f32 output once from a
// double accumulator); only the order of the double sums over tokens differs (the loss
// mean, the weight gradients), which can move an op's f32 output by one rounding. Over
// the longest chain of ops (kOpsOnPath, as in tests/models/test_llama.cpp) that is
//   |packed - unpacked| <= kOpsOnPath u (|unpacked| + rms),  u = 2^-24.
// The same step with the packed rows but without their layout (positions running on,
// attention across documents) must miss that bound: the check can fail.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "engine/autograd.h"
#include "models/llama.h"
#include "models/packing.h"
#include "tests/support/compare.h"

namespace {

using engine::Tensor;

constexpr double kOpsOnPath = 4.0 * (22 * 2 + 3);  // 2 layers (tests/models/test_llama.cpp)

std::vector<models::Example> examples(int32_t vocab) {
  std::vector<models::Example> out;
  uint32_t x = 12345;
  for (int n : {5, 9, 3, 12, 7, 4, 16, 2}) {
    models::Example e;
    for (int t = 0; t < n; ++t) {
      x = x * 1664525u + 1013904223u;
      e.input_ids.push_back(static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab)));
      // A prompt of n / 3 tokens is not trained, as in a completion example.
      e.labels.push_back(t < n / 3 ? models::kIgnoreLabel : e.input_ids.back());
    }
    out.push_back(std::move(e));
  }
  return out;
}

TEST(Packing, FirstFitRowsHoldEveryExampleOnce) {
  const std::vector<models::Example> ex = examples(40);
  const auto rows = models::pack_examples(ex, 16, 7);
  std::vector<int> seen(ex.size(), 0);
  int64_t tokens = 0;
  for (const auto& row : rows) {
    int64_t used = 0;
    for (int64_t i : row) {
      ++seen[static_cast<size_t>(i)];
      used += static_cast<int64_t>(ex[static_cast<size_t>(i)].input_ids.size());
    }
    EXPECT_LE(used, 16);
    tokens += used;
  }
  for (int s : seen) EXPECT_EQ(s, 1);
  // 58 tokens need at least 4 rows of 16; first fit here finds 4 or 5.
  EXPECT_GE(rows.size(), 4u);
  EXPECT_LE(rows.size(), 5u);
  EXPECT_DOUBLE_EQ(models::packing_efficiency(ex, rows, 16),
                   double(tokens) / (double(rows.size()) * 16));
  EXPECT_EQ(models::pack_examples(ex, 16, 7), rows);  // seeded: reproducible
}

TEST(Packing, BatchLayoutRestartsPositionsPerDocument) {
  const std::vector<models::Example> ex = examples(40);
  const models::PackedBatch b = models::make_packed_batch(ex, {{2, 0}, {7}}, {0, 1}, 10, 0);
  // Row 0: example 2 (3 tokens), example 0 (5), padding (2); row 1: example 7 (2), padding.
  EXPECT_EQ(b.positions.to_ints(), (std::vector<int32_t>{0, 1, 2, 0, 1, 2, 3, 4, 0, 1,  //
                                                          0, 1, 0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(b.doc_start.to_ints(), (std::vector<int32_t>{0, 0, 0, 3, 3, 3, 3, 3, 8, 8,  //
                                                          0, 0, 2, 2, 2, 2, 2, 2, 2, 2}));
  const std::vector<int32_t> labels = b.batch.labels.to_ints(), ids = b.batch.ids.to_ints();
  EXPECT_EQ(ids[3], ex[0].input_ids[0]);
  EXPECT_EQ(labels[9], models::kIgnoreLabel);
  // Targets: t >= 1 of each document with a label, as make_batch counts them.
  EXPECT_EQ(b.batch.target_tokens, models::make_batch(ex, {2, 0, 7}, 0).target_tokens);
}

models::LlamaConfig config() {
  models::LlamaConfig c = models::preset("tiny");
  c.hidden = 32, c.heads = 4, c.kv_heads = 2, c.head_dim = 8, c.intermediate = 48, c.vocab = 40;
  c.layers = 2;
  return c;
}

struct StepResult {
  double loss;
  std::vector<std::vector<float>> grads;
};

// One forward and backward of a QLoRA model (random LoRA B so every path carries signal).
StepResult step(const models::Batch& batch, const models::ForwardOptions& options) {
  models::LlamaModel m(config(), 3);
  m.freeze_base(models::BaseFormat::NF4);
  models::LoraConfig lora;
  lora.r = 4;
  lora.alpha = 8;
  m.add_lora(lora, 4);
  engine::Generator gen(9);
  for (auto& [name, t] : m.lora_parameters())
    if (name.find("lora_B") != std::string::npos)
      engine::fill_uniform(t, -0.2f, 0.2f, 9, gen.advance(t.numel()));
  Tensor loss = m.loss(batch.ids, batch.labels, options);
  engine::backward(loss);
  StepResult r{loss.item(), {}};
  for (auto& [name, t] : m.lora_parameters()) r.grads.push_back(t.grad().to_floats());
  return r;
}

TEST(Packing, PackedStepEqualsUnpackedStep) {
  const std::vector<models::Example> ex = examples(40);
  std::vector<int64_t> all(ex.size());
  std::iota(all.begin(), all.end(), 0);
  const StepResult plain = step(models::make_batch(ex, all, 0), {});

  const auto rows = models::pack_examples(ex, 16, 7);
  std::vector<int64_t> every_row(rows.size());
  std::iota(every_row.begin(), every_row.end(), 0);
  const models::PackedBatch packed = models::make_packed_batch(ex, rows, every_row, 16, 0);
  models::ForwardOptions o;
  o.positions = packed.positions;
  o.doc_start = packed.doc_start;
  const StepResult got = step(packed.batch, o);

  const double k_u = kOpsOnPath / (1 << 24);
  EXPECT_NEAR(got.loss, plain.loss, k_u * std::fabs(plain.loss));
  ASSERT_EQ(got.grads.size(), plain.grads.size());
  for (size_t i = 0; i < got.grads.size(); ++i)
    testing_support::expect_within(got.grads[i], plain.grads[i],
                                   testing_support::relative_tolerance(plain.grads[i], 0, k_u),
                                   "LoRA tensor " + std::to_string(i));

  // Without the layout the rows are one long sequence each: the loss moves far outside.
  const StepResult mixed = step(packed.batch, {});
  EXPECT_GT(std::fabs(mixed.loss - plain.loss), 100 * k_u * std::fabs(plain.loss));
}

}  // namespace
