// Comparing a CUDA result with the CPU reference, element by element:
//   |got - ref| <= u_out |ref| + 2 K u_f32 (|ref| + rms ref)
// u_out: unit roundoff of the output type (2^-8 bf16, 2^-24 f32), for the final
// rounding; 2 K u_f32: an fp32 accumulation of length K in either order. Non-finite
// results always fail (outputs are poisoned with NaN before the run).
#pragma once
#include <string>

#include "engine/tensor.h"

namespace testing_support {

void expect_close_to_reference(const engine::Tensor& got, const engine::Tensor& ref,
                               engine::DType dtype, int64_t k, const std::string& what);

}  // namespace testing_support
