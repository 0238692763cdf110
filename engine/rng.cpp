#include "engine/rng.h"

#include "engine/backend.h"

namespace engine {

void fill_uniform(Tensor& t, float low, float high, uint64_t seed, uint64_t offset) {
  backend::fill_random(t, /*normal=*/false, low, high, seed, offset);
}

void fill_normal(Tensor& t, float mean, float stddev, uint64_t seed, uint64_t offset) {
  backend::fill_random(t, /*normal=*/true, mean, stddev, seed, offset);
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
