#include "engine/rng.h"

#include "kernels/math/bf16.h"
#include "kernels/math/philox.h"
#if ENGINE_WITH_CUDA
#include "engine/cuda/runtime.h"
#endif

namespace engine {

namespace {
template <class Draw>
void fill_host(Tensor& t, Draw draw) {
  ENGINE_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16, "random fill of ", t.str());
  for (int64_t i = 0; i < t.numel(); ++i) {
    float v = draw(static_cast<uint64_t>(i));
    if (t.dtype() == DType::F32) t.data<float>()[i] = v;
    else t.data<uint16_t>()[i] = kmath::float_to_bf16_bits(v);
  }
}
}  // namespace

void fill_uniform(Tensor& t, float low, float high, uint64_t seed, uint64_t offset) {
  if (t.device().is_cuda()) {
#if ENGINE_WITH_CUDA
    cuda::fill_random(t, /*normal=*/false, low, high, seed, offset);
#endif
    return;
  }
  fill_host(t, [&](uint64_t i) { return low + (high - low) * kmath::philox_uniform(seed, offset, i); });
}

void fill_normal(Tensor& t, float mean, float stddev, uint64_t seed, uint64_t offset) {
  if (t.device().is_cuda()) {
#if ENGINE_WITH_CUDA
    cuda::fill_random(t, /*normal=*/true, mean, stddev, seed, offset);
#endif
    return;
  }
  fill_host(t, [&](uint64_t i) { return mean + stddev * kmath::philox_normal(seed, offset, i); });
}

Tensor uniform(const Shape& shape, float low, float high, Generator& gen, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  fill_uniform(t, low, high, gen.seed(), gen.advance(shape.numel()));
  return t;
}

Tensor normal(const Shape& shape, float mean, float stddev, Generator& gen, DType dtype,
              Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  fill_normal(t, mean, stddev, gen.seed(), gen.advance(shape.numel()));
  return t;
}

}  // namespace engine
