// The streaming loader and synthetic models on a CUDA device (label gpu; skips without
// one, runs in the SIMT emulation build): each weight uploaded into a staging buffer and
// quantized there gives the NF4 bytes the CPU loader gives (the NF4 kernel is bit-identical
// to the CPU quantizer); embedding and norms arrive as bf16 on the device; a synthetic
// model is drawn and quantized on the device, with the sizes nf4_model_bytes predicts.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/io/safetensors.h"
#include "engine/quant/nf4_linear.h"
#include "kernels/math/bf16.h"
#include "models/synthetic.h"
#include "models/weight_loader.h"
#include "tests/support/gpu.h"

namespace {

namespace fs = std::filesystem;
using engine::DType;
using engine::Tensor;

models::LlamaConfig config() {
  models::LlamaConfig c;
  c.hidden = 64;
  c.layers = 1;
  c.heads = 2;
  c.kv_heads = 1;
  c.head_dim = 32;
  c.intermediate = 96;
  c.vocab = 40;
  return c;
}

void write_model(const fs::path& dir, const models::LlamaConfig& c) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json")
      << nlohmann::json{{"hidden_size", c.hidden}, {"num_hidden_layers", c.layers},
                        {"num_attention_heads", c.heads}, {"num_key_value_heads", c.kv_heads},
                        {"intermediate_size", c.intermediate}, {"vocab_size", c.vocab},
                        {"rms_norm_eps", 1e-5}}.dump();
  std::vector<std::pair<std::string, Tensor>> tensors;
  uint32_t s = 1;
  for (const models::WeightSpec& w : models::llama_weight_specs(c)) {
    Tensor t = Tensor::empty(w.shape, DType::BF16);
    for (int64_t i = 0; i < t.numel(); ++i) {
      s = s * 1664525u + 1013904223u;
      t.data<uint16_t>()[i] = kmath::float_to_bf16_bits(static_cast<float>(s >> 8) / (1u << 24) - 0.5f);
    }
    tensors.push_back({w.name, t});
  }
  engine::io::write_safetensors((dir / "model.safetensors").string(), tensors);
}

const engine::quant::Nf4Weight& nf4(const models::Linear& l) {
  return dynamic_cast<const engine::quant::Nf4FrozenLinear&>(*l.frozen).weight();
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(engine::Device::cpu()), y = b.to(engine::Device::cpu());
  return x.nbytes() == y.nbytes() && std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0;
}

TEST(WeightLoaderCuda, QuantizedOnTheDeviceEqualsTheCpuLoaderBitwise) {
  SKIP_WITHOUT_GPU();
  const fs::path dir = fs::temp_directory_path() / ("weight_loader_cuda_" + std::to_string(::getpid()));
  write_model(dir, config());
  models::LoadOptions gpu;
  gpu.device = engine::Device::cuda();
  const auto on_gpu = models::load_llama(config(), dir.string(), gpu);
  const auto on_cpu = models::load_llama(config(), dir.string(), {});
  fs::remove_all(dir);
  EXPECT_TRUE(on_gpu->device().is_cuda());
  auto a = on_gpu->layers()[0].linears(), b = on_cpu->layers()[0].linears();
  for (size_t j = 0; j < a.size(); ++j) {
    EXPECT_TRUE(a[j]->frozen->device().is_cuda());
    EXPECT_TRUE(same_bytes(nf4(*a[j]).packed, nf4(*b[j]).packed)) << j;
    EXPECT_TRUE(same_bytes(nf4(*a[j]).absmax_q, nf4(*b[j]).absmax_q)) << j;
    EXPECT_TRUE(same_bytes(nf4(*a[j]).nested_absmax, nf4(*b[j]).nested_absmax)) << j;
    EXPECT_EQ(nf4(*a[j]).offset, nf4(*b[j]).offset) << j;
  }
  const auto pa = on_gpu->named_parameters(), pb = on_cpu->named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].second.dtype(), DType::BF16) << pa[i].first;
    EXPECT_TRUE(same_bytes(pa[i].second, pb[i].second.to_dtype(DType::BF16))) << pa[i].first;
  }
}

TEST(WeightLoaderCuda, SyntheticModelIsBuiltOnTheDevice) {
  SKIP_WITHOUT_GPU();
  const models::LlamaConfig c = config();
  const auto m = models::synthetic_llama(c, 3, engine::Device::cuda());
  EXPECT_TRUE(m->device().is_cuda());
  EXPECT_TRUE(m->base_frozen());
  EXPECT_EQ(static_cast<int64_t>(m->frozen_bytes()), models::nf4_model_bytes(c, DType::BF16).nf4);
  for (const models::Linear* l : m->layers()[0].linears()) EXPECT_TRUE(l->frozen->device().is_cuda());
}

}  // namespace
