// Test cases for every registry op: random inputs of several shapes (odd sizes
// included) with the attributes to call the op with. One table drives both the
// finite-difference gradient checks and the CUDA-vs-CPU comparisons, so an op added
// to the registry without cases fails RegistryCoverage.EveryOpHasCases.
#pragma once
#include <ostream>
#include <string>
#include <vector>

#include "engine/op.h"

namespace testing_support {

struct OpCase {
  std::string label;                    // shape summary, shown on failure
  std::vector<engine::Tensor> inputs;   // f32 (or i32 index) CPU tensors
  engine::OpAttrs attrs;
  std::vector<bool> differentiable;     // per input: check its gradient
  // Longest chain of rounded operations feeding one output element (the reduction
  // length) on the CPU reference: tolerances grow linearly with it.
  int64_t accumulation = 1;

  // Error terms of the CUDA path alone when its inputs are bf16. The CUDA parity check
  // adds them; the CPU gradient check never sees them.
  // bf16_accumulation: extra accumulation length (lm_head's bf16 hi + lo gradient split).
  int64_t bf16_accumulation = 0;
  // bf16_roundings: intermediates rounded to bf16 along one product chain (a frozen NF4
  // weight makes lora_linear compute in bf16). Each costs at most u_bf16 times the sum of
  // the absolute products, which is the op itself evaluated on |inputs| with `abs_attrs`
  // (the attributes with |W| as the frozen weight): the op must be multilinear.
  int bf16_roundings = 0;
  engine::OpAttrs abs_attrs;
};

// Fresh random cases for `id`; `seed` makes a failing run reproducible.
std::vector<OpCase> op_cases(engine::OpId id, uint64_t seed);

}  // namespace testing_support

namespace engine {
// GoogleTest prints parameters with these (test names in ctest read "matmul", not bytes).
inline void PrintTo(OpId id, std::ostream* os) { *os << op_def(id).name; }
inline void PrintTo(DType t, std::ostream* os) { *os << dtype_name(t); }
}  // namespace engine
