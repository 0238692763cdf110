// The tiny Llama end to end on the CPU: a directional finite-difference check of
// the whole model's gradient (LoRA factors and the embedding table), checkpointing
// giving identical gradients, the NF4 model equal to the f32 model of its
// dequantized weights, and PEFT naming of the LoRA parameters.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "models/llama.h"

using engine::Tensor;
using models::LlamaModel;

namespace {

models::LlamaConfig small_config() {
  models::LlamaConfig c = models::preset("tiny");
  c.hidden = 32, c.heads = 4, c.kv_heads = 2, c.head_dim = 8, c.intermediate = 48, c.vocab = 40;
  return c;
}

struct Data {
  Tensor ids, labels;
};

Data data(int64_t batch, int64_t seq, int64_t vocab, uint64_t seed) {
  engine::Generator gen(seed);
  std::vector<float> u = engine::uniform({batch * seq}, 0, 1, gen).to_floats();
  std::vector<int32_t> ids(u.size()), labels(u.size());
  for (size_t i = 0; i < u.size(); ++i) {
    ids[i] = static_cast<int32_t>(u[i] * vocab) % vocab;
    labels[i] = i % 5 == 1 ? -100 : ids[i];  // some positions not trained
  }
  return {Tensor::from_ints(ids, {batch, seq}), Tensor::from_ints(labels, {batch, seq})};
}

// A QLoRA-style model whose LoRA B factors are random (not PEFT's zeros) so every
// gradient path carries signal, with a trainable embedding table.
LlamaModel lora_model(models::BaseFormat format, float dropout) {
  LlamaModel m(small_config(), 3);
  m.freeze_base(format);
  models::LoraConfig lora;
  lora.r = 4;
  lora.alpha = 8;
  lora.dropout = dropout;
  m.add_lora(lora, 4);
  engine::Generator gen(9);
  for (auto& [name, t] : m.lora_parameters())
    if (name.find("lora_B") != std::string::npos) engine::fill_uniform(t, -0.2f, 0.2f, 9, gen.advance(t.numel()));
  return m;
}

std::vector<Tensor> params_with_embedding(const LlamaModel& m) {
  std::vector<Tensor> p;
  for (auto& [name, t] : m.lora_parameters()) p.push_back(t);
  Tensor embed = m.named_parameters()[0].second;
  p.push_back(embed.set_requires_grad(true));
  return p;
}

}  // namespace

// Along a direction v over all checked parameters (v_i = s_t sign(g_i) r_i, r_i
// uniform in [0, 1), s_t the rms of parameter tensor t, so the directional
// derivative is large and the loss stays smooth over the step), the Richardson
// extrapolated central difference
//   D(h) = (L(p + h v) - L(p - h v)) / 2h,   R(h) = (4 D(h) - D(2h)) / 3
// is compared with g . v. Tolerance, as in tests/support/gradcheck.h:
//   truncation  |R(h) - R(2h)|                    (R's error is O(h^4))
//   rounding    (5/3) K u |L| / h                 (R combines 4/3 D(h) and 1/3 D(2h))
//   backward    K u sum |g_i v_i|
// with u = 2^-24 and K the number of fp32 roundings in series from a parameter to
// the loss. The CPU reference accumulates every reduction in double and rounds
// each op's output once, so K counts ops, not reduction lengths: per layer 22 op
// outputs on the longest path (norm, LoRA linear = 5 roundings, rope, attention,
// o_proj, residual add, norm, gate, SwiGLU, down, add), then norm, head and loss;
// 4 roundings per op cover the elementwise float math inside (exp, rsqrt, divide).
// A 1% error in g . v must exceed the tolerance, which the last expectation checks.
TEST(LlamaGradient, DirectionalFiniteDifference) {
  const models::ForwardOptions opts{.checkpoint_layers = false, .train = true, .dropout_seed = 17};
  LlamaModel m = lora_model(models::BaseFormat::F32, 0.1f);
  Data d = data(2, 7, small_config().vocab, 5);
  std::vector<Tensor> params = params_with_embedding(m);
  Tensor loss = m.loss(d.ids, d.labels, opts);
  engine::backward(loss);

  engine::Generator gen(21);
  std::vector<Tensor> dirs;
  double g_dot_v = 0, g_abs_v = 0;
  for (const Tensor& p : params) {
    std::vector<float> pv = p.to_floats(), g = p.grad().to_floats();
    double ms = 0;
    for (float x : pv) ms += double(x) * x;
    const float scale = static_cast<float>(std::sqrt(ms / pv.size()));
    std::vector<float> v = engine::uniform(p.shape(), 0, scale, gen).to_floats();
    for (size_t i = 0; i < g.size(); ++i) {
      if (g[i] < 0) v[i] = -v[i];
      g_dot_v += double(g[i]) * v[i];
      g_abs_v += std::fabs(double(g[i]) * v[i]);
    }
    dirs.push_back(Tensor::from_floats(v, p.shape()));
  }
  std::vector<Tensor> saved;
  for (const Tensor& p : params) saved.push_back(p.clone());
  auto loss_at = [&](double step) {
    for (size_t k = 0; k < params.size(); ++k) {
      float* p = params[k].data<float>();
      const float *p0 = saved[k].data<float>(), *v = dirs[k].data<float>();
      for (int64_t i = 0; i < params[k].numel(); ++i) p[i] = static_cast<float>(p0[i] + step * v[i]);
    }
    engine::NoGradGuard no_grad;
    return double(m.loss(d.ids, d.labels, opts).item());
  };
  auto central = [&](double h) { return (loss_at(h) - loss_at(-h)) / (2 * h); };
  const double h = 1.0 / 128;
  const double d_h = central(h), d_2h = central(2 * h), d_4h = central(4 * h);
  const double r_h = (4 * d_h - d_2h) / 3, r_2h = (4 * d_2h - d_4h) / 3;
  const models::LlamaConfig c = small_config();
  const double k = 4.0 * (22 * c.layers + 3);
  const double u = 1.0 / (1 << 24);
  const double tol = std::fabs(r_h - r_2h) + 5.0 / 3 * k * u * loss.item() / h + k * u * g_abs_v;
  EXPECT_NEAR(g_dot_v, r_h, tol) << "D(h) " << d_h << " D(2h) " << d_2h;
  EXPECT_LT(tol, 0.01 * std::fabs(g_dot_v)) << "the check would not catch a 1% error";
}

TEST(LlamaGradient, CheckpointingGivesIdenticalGradients) {
  std::vector<std::vector<float>> grads[2];
  for (int ck = 0; ck < 2; ++ck) {
    LlamaModel m = lora_model(models::BaseFormat::NF4, 0.1f);
    Data d = data(2, 6, small_config().vocab, 8);
    std::vector<Tensor> params = params_with_embedding(m);
    engine::backward(m.loss(d.ids, d.labels, {.checkpoint_layers = ck == 1, .train = true, .dropout_seed = 3}));
    for (const Tensor& p : params) grads[ck].push_back(p.grad().to_floats());
  }
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t i = 0; i < grads[0].size(); ++i) EXPECT_EQ(grads[0][i], grads[1][i]) << "parameter " << i;
}

// The NF4 model computes exactly what an f32 model holding dequantize(quantize(W))
// computes: quantization error is the only difference from the f32 base, and its
// bound is tested per element in tests/engine/test_nf4.cpp.
TEST(LlamaNf4, EqualsF32ModelOfDequantizedWeights) {
  LlamaModel nf4(small_config(), 3);
  nf4.freeze_base(models::BaseFormat::NF4);
  models::NamedTensors weights = LlamaModel(small_config(), 3).named_parameters();
  for (size_t i = 0; i < nf4.layers().size(); ++i) {
    auto lin = nf4.layers()[i].linears();
    for (size_t j = 0; j < lin.size(); ++j) {
      std::string name = "model.layers." + std::to_string(i) + (j < 4 ? ".self_attn." : ".mlp.") +
                         models::all_linear_names()[j] + ".weight";
      for (auto& [n, t] : weights)
        if (n == name) t = lin[j]->frozen->dequantize(engine::DType::F32, engine::Device::cpu());
    }
  }
  LlamaModel dequantized(small_config(), weights, "test");
  Data d = data(2, 5, small_config().vocab, 1);
  engine::NoGradGuard no_grad;
  EXPECT_EQ(nf4.logits(d.ids).to_floats(), dequantized.logits(d.ids).to_floats());
}

TEST(LlamaLora, PeftNamesShapesAndInitialisation) {
  LlamaModel m(small_config(), 1);
  m.freeze_base(models::BaseFormat::NF4);
  models::LoraConfig lora;
  lora.r = 4;
  lora.targets = {"q_proj", "down_proj"};
  m.add_lora(lora, 2);
  models::NamedTensors p = m.lora_parameters();
  ASSERT_EQ(p.size(), 2u * 2 * small_config().layers);
  EXPECT_EQ(p[0].first, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(p[0].second.shape(), (engine::Shape{4, 32}));
  EXPECT_EQ(p[1].first, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  EXPECT_EQ(p[1].second.shape(), (engine::Shape{32, 4}));
  EXPECT_EQ(p[3].first, "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
  EXPECT_EQ(p[2].second.shape(), (engine::Shape{4, 48}));
  const float bound = 1.0f / std::sqrt(48.0f);
  for (float a : p[2].second.to_floats()) EXPECT_LE(std::fabs(a), bound);
  for (float b : p[3].second.to_floats()) EXPECT_EQ(b, 0.0f);
  // B = 0 at the start: the adapted model equals the base model.
  Data d = data(1, 4, small_config().vocab, 2);
  engine::NoGradGuard no_grad;
  std::vector<float> a = m.logits(d.ids).to_floats();
  LlamaModel plain_nf4(small_config(), 1);
  plain_nf4.freeze_base(models::BaseFormat::NF4);
  EXPECT_EQ(a, plain_nf4.logits(d.ids).to_floats());
  EXPECT_EQ(m.trainable_parameters().size(), p.size());
}

// A NaN or Inf in a base weight (an Inf norm weight trains to an all-NaN adapter) is
// refused at load, naming the source file and the weight.
TEST(LlamaLoad, NonFiniteWeightsAreRefused) {
  const models::LlamaConfig c = small_config();
  for (const char* name : {"model.layers.1.input_layernorm.weight", "model.layers.0.mlp.up_proj.weight"})
    for (float bad : {INFINITY, std::nanf("")}) {
      models::NamedTensors weights = LlamaModel(c, 5).named_parameters();
      for (auto& [n, t] : weights)
        if (n == name) {
          t = t.clone();
          t.data<float>()[3] = bad;
        }
      try {
        LlamaModel m(c, weights, "/models/x/model.safetensors");
        ADD_FAILURE() << name << " holding " << bad << " was accepted";
      } catch (const engine::InputError& e) {
        const std::string msg = e.what();
        EXPECT_EQ(msg.rfind(std::string("/models/x/model.safetensors: weight '") + name + "'", 0), 0u)
            << msg;
        EXPECT_NE(msg.find("non-finite value"), std::string::npos) << msg;
        EXPECT_NE(msg.find("flat index 3"), std::string::npos) << msg;
      }
    }
}
