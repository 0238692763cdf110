// The one table of ops. A row: id, name, #inputs, #outputs, CPU reference, CUDA.
#include <array>

#include "engine/cpu/ops.h"
#include "engine/op.h"
#if ENGINE_WITH_CUDA
#include "engine/cuda/ops.h"
#define CUDA_IMPL(name) OpImpl{cuda_ops::name##_forward, cuda_ops::name##_backward}
#else
#define CUDA_IMPL(name) OpImpl{}
#endif
#define CPU_IMPL(name) OpImpl{cpu::name##_forward, cpu::name##_backward}
// Ops that only touch shapes (views) run unchanged on every device.
#if ENGINE_WITH_CUDA
#define ANY_DEVICE(name) CPU_IMPL(name)
#else
#define ANY_DEVICE(name) OpImpl{}
#endif
#define NO_CUDA OpImpl{}

namespace engine {

namespace {
const std::array<OpDef, static_cast<size_t>(OpId::kCount)> kOps = {{
    {OpId::Matmul, "matmul", 2, 1, CPU_IMPL(matmul), CUDA_IMPL(matmul)},
    {OpId::Add, "add", 2, 1, CPU_IMPL(add), CUDA_IMPL(add)},
    {OpId::Mul, "mul", 2, 1, CPU_IMPL(mul), CUDA_IMPL(mul)},
    {OpId::Scale, "scale", 1, 1, CPU_IMPL(scale), CUDA_IMPL(scale)},
    {OpId::Sum, "sum", 1, 1, CPU_IMPL(sum), NO_CUDA},
    {OpId::Mean, "mean", 1, 1, CPU_IMPL(mean), NO_CUDA},
    {OpId::Reshape, "reshape", 1, 1, CPU_IMPL(reshape), ANY_DEVICE(reshape)},
    {OpId::RmsNorm, "rms_norm", 2, 1, CPU_IMPL(rms_norm), CUDA_IMPL(rms_norm)},
    {OpId::Rope, "rope", 1, 1, CPU_IMPL(rope), CUDA_IMPL(rope)},
    {OpId::Silu, "silu", 1, 1, CPU_IMPL(silu), CUDA_IMPL(silu)},
    {OpId::SwiGLU, "swiglu", 2, 1, CPU_IMPL(swiglu), CUDA_IMPL(swiglu)},
    {OpId::Softmax, "softmax", 1, 1, CPU_IMPL(softmax), NO_CUDA},
    {OpId::Attention, "attention", 3, 1, CPU_IMPL(attention), CUDA_IMPL(attention)},
    {OpId::Embedding, "embedding", 2, 1, CPU_IMPL(embedding), CUDA_IMPL(embedding)},
    {OpId::CrossEntropy, "cross_entropy", 2, 1, CPU_IMPL(cross_entropy), NO_CUDA},
    {OpId::Dropout, "dropout", 1, 1, CPU_IMPL(dropout), CUDA_IMPL(dropout)},
    {OpId::LoraLinear, "lora_linear", 3, 1, CPU_IMPL(lora_linear), CUDA_IMPL(lora_linear)},
    {OpId::LmHeadCrossEntropy, "lm_head_cross_entropy", 3, 1, CPU_IMPL(lm_head_cross_entropy),
     CUDA_IMPL(lm_head_cross_entropy)},
}};

// The table is indexed by OpId: catch a row out of place at startup.
[[maybe_unused]] const bool kOrderChecked = [] {
  for (size_t i = 0; i < kOps.size(); ++i)
    ENGINE_CHECK(static_cast<size_t>(kOps[i].id) == i, "op table row ", i, " is out of order");
  return true;
}();
}  // namespace

std::span<const OpDef> all_ops() { return kOps; }

}  // namespace engine
