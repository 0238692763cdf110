#include "models/synthetic.h"

#include <cmath>

#include "engine/quant/nf4_linear.h"
#include "engine/rng.h"
#include "models/weight_loader.h"

namespace models {

using engine::DType;
using engine::Tensor;
namespace q = engine::quant;

std::string synthetic_preset(const std::string& model) {
  const std::string prefix = kSyntheticPrefix;
  return model.rfind(prefix, 0) == 0 ? model.substr(prefix.size()) : "";
}

ModelBytes nf4_model_bytes(const LlamaConfig& c, DType dense_dtype) {
  c.validate();
  ModelBytes b;
  for (const WeightSpec& s : llama_weight_specs(c)) {
    const int64_t n = s.shape.numel();
    if (!s.linear) {
      b.dense += static_cast<int64_t>(engine::dtype_bytes(dense_dtype, n));
      continue;
    }
    const int64_t blocks = (n + q::kNf4Block - 1) / q::kNf4Block;
    const int64_t nested = (blocks + q::kNestedBlock - 1) / q::kNestedBlock;
    b.nf4 += (n + 1) / 2 + blocks + 4 * nested + 4;
    b.largest_linear = std::max(b.largest_linear, n);
  }
  return b;
}

std::unique_ptr<LlamaModel> synthetic_llama(const LlamaConfig& config, uint64_t seed,
                                            engine::Device device, int threads, bool embedding_on_host) {
  config.validate();
  const DType dense = dense_dtype(device);
  engine::Generator gen(seed);
  auto normal = [&](const engine::Shape& shape, float stddev, DType dtype, engine::Device where) {
    Tensor t = Tensor::empty(shape, dtype, where);
    engine::fill_normal(t, 0.0f, stddev, gen.seed(), gen.advance(static_cast<uint64_t>(shape.numel())));
    return t;
  };
  LlamaModel::Parts parts;
  parts.layers.resize(static_cast<size_t>(config.layers));
  for (const WeightSpec& s : llama_weight_specs(config)) {
    if (s.linear) {
      // One staging weight at a time, drawn and quantized where the model lives.
      const float stddev = 1.0f / std::sqrt(static_cast<float>(s.shape[1]));
      std::shared_ptr<const engine::FrozenLinear> frozen;
      if (device.is_cpu()) {
        const Tensor w = normal(s.shape, stddev, DType::F32, device);
        frozen = std::make_shared<q::Nf4FrozenLinear>(
            quantize_nf4_host(w.raw_data(), DType::F32, s.shape, threads, s.name));
      } else {
        frozen = q::Nf4FrozenLinear::quantize_on_device(normal(s.shape, stddev, DType::BF16, device));
      }
      place_weight(parts, s.name, Tensor(), frozen);
      continue;
    }
    Tensor t;
    if (s.shape.rank() == 1) t = Tensor::full(s.shape, 1.0f, dense, device);  // norms
    else if (s.name == "model.embed_tokens.weight" && embedding_on_host)
      t = normal(s.shape, 1.0f, dense, engine::Device::cpu());
    else t = normal(s.shape, s.name == "lm_head.weight" ? 1.0f / std::sqrt(float(config.hidden)) : 1.0f, dense, device);
    place_weight(parts, s.name, t, nullptr);
  }
  if (config.tie_embeddings) parts.lm_head = parts.embed_tokens;
  return std::make_unique<LlamaModel>(config, std::move(parts));
}

}  // namespace models
