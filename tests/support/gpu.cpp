#include "tests/support/gpu.h"

#include <cmath>
#include <vector>

#include "engine/tensor.h"

namespace testing_support {

void poison_device_pool(size_t bytes) {
  std::vector<engine::Tensor> blocks;
  for (size_t size = 256; size <= bytes; size *= 2) {
    engine::Tensor t = engine::Tensor::empty({static_cast<int64_t>(size / 4)}, engine::DType::F32,
                                             engine::Device::cuda());
    t.fill(NAN);
    blocks.push_back(t);
  }
}  // blocks return to the cache here, NaN-filled

}  // namespace testing_support
