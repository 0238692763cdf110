// Seeded random tensors from the counter-based Philox generator (kernels/math/philox.h).
// Element i of a draw uses counter offset + i, so the same (seed, offset) gives the
// same tensor on the CPU and on the GPU, and any slice can be regenerated alone.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace engine {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  // Reserves `count` counters and returns the first one.
  uint64_t advance(uint64_t count) {
    uint64_t first = offset_;
    offset_ += count;
    return first;
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// Fills t (f32 or bf16, any device) in place.
void fill_uniform(Tensor& t, float low, float high, uint64_t seed, uint64_t offset);
void fill_normal(Tensor& t, float mean, float stddev, uint64_t seed, uint64_t offset);

Tensor uniform(const Shape& shape, float low, float high, Generator& gen, DType dtype = DType::F32,
               Device device = Device::cpu());
Tensor normal(const Shape& shape, float mean, float stddev, Generator& gen,
              DType dtype = DType::F32, Device device = Device::cpu());

}  // namespace engine
