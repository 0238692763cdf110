// DPO on the CPU: the loss of models/dpo_loss.h and its gradient by finite differences,
// the adapter-off model equal to a model without LoRA, the per-sequence log-probs against
// the model's own cross-entropy, and the preference-pair reader (formats and errors).
// (The fused op lm_head_logprobs has its finite-difference and CUDA checks in the op
// harness; the whole DPO gradient against PyTorch + peft is test_dpo_reference.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>

#include "engine/autograd.h"
#include "models/dpo_loss.h"
#include "models/llama.h"
#include "models/lora_scope.h"
#include "models/preference_data.h"
#include "models/tokenizer.h"
#include "tests/support/errors.h"

using engine::Tensor;
using models::DpoConfig;
using models::DpoLossType;

namespace {

constexpr double kUDouble = 1.0 / (1ull << 53);

double pair_loss(const DpoConfig& c, double pc, double pr, double rc, double rr) {
  return models::dpo_pair(c, pc, pr, rc, rr).loss;
}

// Central differences in double: |g - D(h)| <= |D(h) - D(2h)| (truncation, 3x margin)
// + 4 u |L| / h (rounding of the two loss evaluations, each a handful of operations).
void expect_derivative(const std::function<double(double)>& f, double x, double g, const char* what) {
  const double h = 1e-4 * std::max(1.0, std::fabs(x));
  auto d = [&](double s) { return (f(x + s) - f(x - s)) / (2 * s); };
  const double dh = d(h), d2h = d(2 * h);
  const double tol = std::fabs(dh - d2h) + 16 * kUDouble * (std::fabs(f(x)) + 1) / h;
  EXPECT_NEAR(g, dh, tol) << what << " at " << x;
}

TEST(DpoLoss, GradientsMatchFiniteDifferences) {
  const DpoConfig configs[] = {{DpoLossType::Sigmoid, 0.1, 0.0}, {DpoLossType::Sigmoid, 0.5, 0.2},
                               {DpoLossType::Ipo, 0.5, 0.0}, {DpoLossType::Sigmoid, 2.0, 0.0}};
  const double points[][4] = {{-20, -25, -21, -24}, {-3.5, -1.25, -2, -2}, {-40, -10, -35, -12},
                              {-7, -7, -7, -7}};
  for (const DpoConfig& c : configs)
    for (const auto& p : points) {
      const models::DpoPair r = models::dpo_pair(c, p[0], p[1], p[2], p[3]);
      expect_derivative([&](double x) { return pair_loss(c, x, p[1], p[2], p[3]); }, p[0],
                        r.dloss_dchosen, "dloss/dchosen");
      expect_derivative([&](double x) { return pair_loss(c, p[0], x, p[2], p[3]); }, p[1],
                        r.dloss_drejected, "dloss/drejected");
    }
}

TEST(DpoLoss, ValuesAndRewards) {
  // Policy = reference: h = 0, loss log 2 whatever the smoothing; rewards 0.
  for (double e : {0.0, 0.3}) {
    const models::DpoPair p = models::dpo_pair({DpoLossType::Sigmoid, 0.1, e}, -5, -6, -5, -6);
    EXPECT_NEAR(p.loss, std::log(2.0), 1e-15);
    EXPECT_EQ(p.reward_chosen, 0.0);
  }
  // h = (-10 + 12) - (-20 + 15) = 7; -log sigmoid(0.7) = log(1 + e^-0.7).
  const models::DpoPair p = models::dpo_pair({DpoLossType::Sigmoid, 0.1, 0.0}, -10, -20, -12, -15);
  EXPECT_NEAR(p.loss, std::log1p(std::exp(-0.7)), 1e-15);
  EXPECT_NEAR(p.reward_chosen, 0.2, 1e-15);
  EXPECT_NEAR(p.reward_rejected, -0.5, 1e-15);
  // IPO: (h - 1 / (2 beta))^2 = (7 - 1)^2.
  EXPECT_NEAR(models::dpo_pair({DpoLossType::Ipo, 0.5, 0.0}, -10, -20, -12, -15).loss, 36.0, 1e-12);
  // Huge margins stay finite (no exp overflow).
  const models::DpoPair far = models::dpo_pair({DpoLossType::Sigmoid, 1.0, 0.0}, 0, -5000, 0, 0);
  EXPECT_TRUE(std::isfinite(far.loss) && std::isfinite(far.dloss_dchosen));
  const models::DpoPair wrong = models::dpo_pair({DpoLossType::Sigmoid, 1.0, 0.0}, -5000, 0, 0, 0);
  EXPECT_NEAR(wrong.loss, 5000.0, 1e-9);
  EXPECT_NEAR(wrong.dloss_dchosen, -1.0, 1e-12);

  models::DpoMetrics m;
  m.add(p, -10, -20);
  m.add(models::dpo_pair({DpoLossType::Sigmoid, 0.1, 0.0}, -30, -20, -12, -15), -30, -20);
  const models::DpoMetrics mean = m.mean();
  EXPECT_EQ(mean.pairs, 2);
  EXPECT_DOUBLE_EQ(mean.accuracy, 0.5);
  EXPECT_DOUBLE_EQ(mean.logp_chosen, -20.0);
}

models::LlamaConfig small_config() {
  models::LlamaConfig c = models::preset("tiny");
  c.hidden = 32, c.heads = 4, c.kv_heads = 2, c.head_dim = 8, c.intermediate = 48, c.vocab = 40;
  return c;
}

// Two rows: a prompt of 3 (labels -100), then a response; the second row right-padded.
struct Rows {
  Tensor ids, labels;
};
Rows rows() {
  std::vector<int32_t> ids = {1, 5, 9, 13, 2, 7, 30, 11, 4, 9, 3, 8, 22, 0, 0, 0};
  std::vector<int32_t> labels = ids;
  for (int r = 0; r < 2; ++r)
    for (int t = 0; t < 3; ++t) labels[r * 8 + t] = -100;
  for (int t = 13; t < 16; ++t) labels[t] = -100;
  return {Tensor::from_ints(ids, {2, 8}), Tensor::from_ints(labels, {2, 8})};
}

models::LlamaModel adapted_model(uint64_t seed, bool with_lora) {
  models::LlamaModel m(small_config(), seed);
  m.freeze_base(models::BaseFormat::NF4);
  if (!with_lora) return m;
  models::LoraConfig lora;
  lora.r = 4;
  lora.alpha = 8;
  m.add_lora(lora, seed + 1);
  engine::Generator gen(7);
  for (auto& [name, t] : m.lora_parameters())
    if (name.find("lora_B") != std::string::npos)
      engine::fill_uniform(t, -0.3f, 0.3f, 7, gen.advance(t.numel()));
  return m;
}

TEST(DpoModel, AdapterOffLogprobsEqualTheBaseModel) {
  models::LlamaModel adapted = adapted_model(5, true);
  const models::LlamaModel base = adapted_model(5, false);
  const Rows r = rows();
  engine::NoGradGuard no_grad;
  for (bool mean : {false, true}) {
    const std::vector<float> want = base.sequence_logprobs(r.ids, r.labels, {}, mean).to_floats();
    std::vector<float> off;
    {
      models::LoraDisabledScope scope(adapted);
      EXPECT_FALSE(adapted.lora_enabled());
      off = adapted.sequence_logprobs(r.ids, r.labels, {}, mean).to_floats();
    }
    EXPECT_TRUE(adapted.lora_enabled()) << "the scope restores the adapters";
    const std::vector<float> on = adapted.sequence_logprobs(r.ids, r.labels, {}, mean).to_floats();
    ASSERT_EQ(off.size(), 2u);
    for (size_t i = 0; i < off.size(); ++i) {
      EXPECT_EQ(off[i], want[i]) << "row " << i << " (bitwise: the same frozen weights and ops)";
      EXPECT_GT(std::fabs(on[i] - want[i]), 1e-3) << "row " << i << ": the adapters must matter";
    }
  }
}

// Row sums of log-probs are -(the model's mean cross-entropy x counted tokens) per row.
TEST(DpoModel, SequenceLogprobsAgreeWithTheLoss) {
  const models::LlamaModel m = adapted_model(11, true);
  const Rows r = rows();
  engine::NoGradGuard no_grad;
  const std::vector<float> sums = m.sequence_logprobs(r.ids, r.labels).to_floats();
  const std::vector<float> means = m.sequence_logprobs(r.ids, r.labels, {}, true).to_floats();
  const int counted[2] = {5, 2};  // labels at t >= 1 that are not -100
  const std::vector<int32_t> all_ids = r.ids.to_ints(), all_labels = r.labels.to_ints();
  for (int64_t row = 0; row < 2; ++row) {
    const Tensor ids = Tensor::from_ints({all_ids.begin() + row * 8, all_ids.begin() + row * 8 + 8}, {1, 8});
    const Tensor labels =
        Tensor::from_ints({all_labels.begin() + row * 8, all_labels.begin() + row * 8 + 8}, {1, 8});
    const double loss = m.loss(ids, labels).item();
    // Both are double sums of the same f32 terms rounded to f32: a few ulp of the sum.
    EXPECT_NEAR(sums[row], -loss * counted[row], 1e-5 * std::fabs(sums[row]));
    EXPECT_NEAR(means[row], -loss, 1e-5 * std::fabs(loss));
  }
}

// ---- preference pairs ------------------------------------------------------------

struct TempFile {
  std::string path;
  explicit TempFile(const std::string& text)
      : path((std::filesystem::temp_directory_path() /
              ("dpo_pairs_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".jsonl"))
                 .string()) {
    std::ofstream(path) << text;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

TEST(PreferenceData, StringPairsFollowTrl) {
  models::ByteTokenizer tok;
  TempFile f("{\"prompt\": \"ab\", \"chosen\": \"c\", \"rejected\": \"de\"}\n\n");
  models::PreferenceStats stats;
  const auto pairs = models::load_preference_dataset(f.path, tok, models::DatasetOptions{}, &stats);
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(stats.records, 1);
  // The byte tokenizer: bytes are ids, bos 256 from encode_hf's special tokens, eos 257.
  const std::vector<int32_t> prompt = tok.encode_hf("ab", true);
  std::vector<int32_t> chosen = prompt;
  chosen.push_back('c');
  chosen.push_back(tok.eos_id());
  EXPECT_EQ(pairs[0].chosen.input_ids, chosen);
  std::vector<int32_t> labels(prompt.size(), -100);
  labels.push_back('c');
  labels.push_back(tok.eos_id());
  EXPECT_EQ(pairs[0].chosen.labels, labels);
  EXPECT_EQ(pairs[0].rejected.input_ids.size(), prompt.size() + 3);
}

TEST(PreferenceData, ConversationalPairsTrainOnlyTheResponse) {
  models::ByteTokenizer tok;
  models::DatasetOptions o;
  o.chat_template = models::ChatTemplate::Llama3;
  TempFile f(
      R"({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, )"
      R"({"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}], )"
      R"("rejected": {"role": "assistant", "content": "5!"}})"
      "\n");
  models::PreferenceStats stats;
  const auto pairs = models::load_preference_dataset(f.path, tok, o, &stats);
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(stats.conversational, 1);
  // Trained: the final answer's content and the token closing it, nothing of the prompt
  // (its earlier assistant turn "yo" included).
  std::string trained;
  for (size_t t = 0; t < pairs[0].chosen.labels.size(); ++t)
    if (pairs[0].chosen.labels[t] != -100) trained += tok.decode({pairs[0].chosen.labels[t]});
  // (The byte tokenizer spells <|eot_id|> out in bytes.)
  EXPECT_EQ(trained, "4<|eot_id|>");
  int rejected_trained = 0;
  for (int32_t l : pairs[0].rejected.labels) rejected_trained += l != -100;
  EXPECT_EQ(rejected_trained, static_cast<int>(trained.size()) + 1) << "\"5!\" is one byte longer than \"4\"";
}

// Over --max-seq-len: --truncation right cuts the long side (the pair is kept), drop leaves
// the pair out; each is counted.
TEST(PreferenceData, LongPairsAreCutOrDropped) {
  models::ByteTokenizer tok;
  TempFile f(R"({"prompt": "ab", "chosen": "c", "rejected": "dddddddd"})"
             "\n"
             R"({"prompt": "ab", "chosen": "c", "rejected": "d"})"
             "\n");
  models::DatasetOptions o;
  o.max_seq_len = 6;  // bos a b + response + eos: 5 for the short sides, 12 for the long one
  models::PreferenceStats stats;
  std::vector<models::PreferencePair> pairs = models::load_preference_dataset(f.path, tok, o, &stats);
  EXPECT_EQ(pairs.size(), 2u);
  EXPECT_EQ(stats.truncated, 1);
  EXPECT_EQ(stats.dropped, 0);
  EXPECT_EQ(pairs[0].rejected.input_ids.size(), 6u);
  o.truncation = models::Truncation::Drop;
  stats = {};
  pairs = models::load_preference_dataset(f.path, tok, o, &stats);
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(stats.truncated, 0);
  EXPECT_EQ(stats.dropped, 1);
  EXPECT_EQ(pairs[0].rejected.input_ids.size(), 5u);
}

TEST(PreferenceData, BadRecordsNameFileLineAndField) {
  models::ByteTokenizer tok;
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"{\"prompt\": \"a\", \"chosen\": \"b\"}", ":2: missing field \"rejected\""},
      {"{\"prompt\": \"a\", \"chosen\": 3, \"rejected\": \"c\"}", ":2: field \"chosen\": must be a string"},
      {"{\"prompt\": 1, \"chosen\": \"b\", \"rejected\": \"c\"}", ":2: field \"prompt\": must be a string or a list"},
      {"{\"prompt\": [{\"role\": \"user\", \"content\": \"q\"}], \"chosen\": [{\"role\": \"user\", "
       "\"content\": \"b\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"c\"}]}",
       ":2: field \"chosen[0]\": role is \"user\""},
      {"{\"prompt\": [{\"role\": \"user\"}], \"chosen\": [], \"rejected\": []}",
       ":2: field \"prompt[0]\": needs a string \"content\""},
      {"not json", ":2: not valid JSON"},
  };
  for (const Case& c : cases) {
    TempFile f(std::string("{\"prompt\": \"x\", \"chosen\": \"y\", \"rejected\": \"z\"}\n") + c.text + "\n");
    models::DatasetOptions o;
    o.chat_template = models::ChatTemplate::Llama3;
    testing_support::expect_one_line_error([&] { models::load_preference_dataset(f.path, tok, o); },
                                           {f.path + c.message});
  }
}

}  // namespace
