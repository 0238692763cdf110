// QLoRA linear (engine/cuda/lora_linear.cpp) on the Llama-3-70B linear shapes, forward
// and backward, each beside a plain cuBLASLt bf16 GEMM of the same (M, N, K) timed in
// the same benchmark run.
//
//   forward   y  = x W^T + s d(x) A^T B^T    x [M, in] bf16, W [out, in] NF4, A [16, in],
//                                           B [out, 16] fp32, s = 2, no dropout
//             baseline: y = x W^T with a dense bf16 W, (M, N, K) = (M, out, in)
//   backward  dx = dy W + s (dy B) A, dA, dB (no dW)
//             baseline: dx = dy W with a dense bf16 W, (M, N, K) = (M, in, out)
// Shapes (out x in): q/o 8192 x 8192, k/v 1024 x 8192, gate/up 28672 x 8192,
// down 8192 x 28672; M = 16, 512, 4096, 16384 tokens. Cases whose buffers would pass
// kMaxBytes are skipped (with the reason); none of these do on their own.
//
// Counters (from mean CUDA-event times):
//   TFLOP/s          2 M out in / time of the QLoRA op: the frozen-weight GEMM's FLOPs
//                    only (the rank-16 LoRA work is < 0.5% of it), so that it is
//                    directly comparable with the baseline
//   gemm_TFLOP/s     the same FLOPs / time of the bf16 GEMM
//   ratio_to_gemm    gemm time / QLoRA time, the headline: 1 = as fast as a bf16 GEMM
//                    of the same shape, with the weight in 4 bits. The target
//                    is >= 1/1.1 (within 10%) for the forward at M = 4096.
//   frac_of_ceiling  TFLOP/s over the device's 8192^3 bf16 GEMM (bench_ceilings.cpp)
// The QLoRA time includes everything the op queues: NF4 dequantization into the
// bf16 workspace (or the direct kernel for M <= 64), the LoRA GEMMs, allocations from
// the caching pool. The op runs without autograd (the registry functions directly).
// NF4 weights are quantized once per shape on the host (random values: speed does
// not depend on them) and kept on the device for the process.
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "bench/cuda_timing.h"
#include "engine/cuda/cublaslt.h"
#include "engine/cuda/ops.h"
#include "engine/quant/nf4_linear.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace bench {

namespace {

using engine::Device;
using engine::DType;
using engine::Tensor;

constexpr int64_t kRank = 16;
constexpr float kScaling = 2.0f;  // lora_alpha 32 / r 16
constexpr double kMaxBytes = 40e9;
constexpr int kGemmWarmups = 2, kGemmReps = 10;

struct LinearShape {
  const char* role;
  int64_t out, in;
};
constexpr LinearShape kShapes[] = {
    {"q_o", 8192, 8192}, {"k_v", 1024, 8192}, {"gate_up", 28672, 8192}, {"down", 8192, 28672}};
constexpr int64_t kTokens[] = {16, 512, 4096, 16384};

// Device bytes a case holds at its peak: NF4 weight, the baseline's dense bf16 W, the
// op's bf16 workspace, and the activations (x, y, dy, dx, one mask-sized temporary).
double footprint(int64_t out, int64_t in, int64_t m) {
  const double w = double(out) * double(in);
  return w * (0.52 + 2 + 2) + 2.0 * double(m) * (3.0 * double(in) + 2.0 * double(out));
}

// The NF4 weight of a shape, on the device; quantized on first use. Never freed (a
// static cache would otherwise be destroyed after the CUDA allocator at exit).
std::shared_ptr<const engine::FrozenLinear> nf4_weight(int64_t out, int64_t in) {
  static auto* cache = new std::map<std::pair<int64_t, int64_t>, std::shared_ptr<const engine::FrozenLinear>>;
  auto& slot = (*cache)[{out, in}];
  if (!slot) {
    engine::Generator gen(static_cast<uint64_t>(out * 31 + in));
    const Tensor dense =
        engine::uniform({out, in}, -1.0f, 1.0f, gen, DType::F32, Device::cuda()).to(Device::cpu());
    slot = engine::quant::Nf4FrozenLinear::quantize(dense)->to(Device::cuda());
  }
  return slot;
}


// The baseline: c [m, n] = a [m, k] op(b) in bf16 with fp32 accumulation; b is the
// dense weight [out, in], transposed for the forward (x W^T), not for dx = dy W.
double gemm_seconds(int64_t m, int64_t n, int64_t k, bool transpose_w, engine::Generator& gen) {
  const Device gpu = Device::cuda();
  const Tensor a = engine::uniform({m, k}, -1.0f, 1.0f, gen, DType::BF16, gpu);
  const Tensor w = engine::uniform(transpose_w ? engine::Shape{n, k} : engine::Shape{k, n}, -1.0f,
                                   1.0f, gen, DType::BF16, gpu);
  Tensor c = Tensor::empty({m, n}, DType::BF16, gpu);
  return mean_seconds(
      [&](int) {
        engine::cuda::gemm(false, transpose_w, m, n, k, 1.0f, a.raw_data(), DType::BF16, 0,
                           w.raw_data(), DType::BF16, 0, 0.0f, c.raw_data(), DType::BF16, 0, 1,
                           engine::cuda::current_stream());
      },
      kGemmWarmups, kGemmReps);
}

void BM_Qlora(benchmark::State& state, LinearShape shape, int64_t m, bool backward) {
  if (skip_without_gpu(state)) return;
  const double bytes = footprint(shape.out, shape.in, m);
  if (bytes > kMaxBytes) {
    char why[128];
    std::snprintf(why, sizeof why, "needs ~%.1f GB of buffers, over the %.0f GB cap", bytes * 1e-9,
                  kMaxBytes * 1e-9);
    state.SkipWithError(why);
    return;
  }
  guarded(state, [&] {
    const Ceilings& ceil = ceilings();
    const Device gpu = Device::cuda();
    const int64_t out = shape.out, in = shape.in;
    engine::Generator gen(static_cast<uint64_t>(m * 7 + out));
    const double flops = 2.0 * double(m) * double(out) * double(in);
    // Baseline first, its buffers released before the op runs.
    const double gemm_s = backward ? gemm_seconds(m, in, out, false, gen)
                                   : gemm_seconds(m, out, in, true, gen);

    const std::shared_ptr<const engine::FrozenLinear> w = nf4_weight(out, in);
    const float a_bound = 1.0f / std::sqrt(static_cast<float>(in));
    const Tensor x = engine::uniform({m, in}, -1.0f, 1.0f, gen, DType::BF16, gpu);
    const Tensor a = engine::uniform({kRank, in}, -a_bound, a_bound, gen, DType::F32, gpu);
    const Tensor b = engine::uniform({out, kRank}, -0.01f, 0.01f, gen, DType::F32, gpu);
    engine::OpContext ctx;
    ctx.attrs.frozen = w;
    ctx.attrs.lora_scaling = kScaling;
    ctx.needs_grad = {true, true, true};
    double s = 0;
    if (!backward) {
      s = time_cuda(state, [&] {
        ctx.saved.clear();
        std::vector<Tensor> y = engine::cuda_ops::lora_linear_forward(ctx, {x, a, b});
      });
    } else {
      engine::cuda_ops::lora_linear_forward(ctx, {x, a, b});  // fills ctx.saved
      const Tensor dy = engine::uniform({m, out}, -1.0f, 1.0f, gen, DType::BF16, gpu);
      s = time_cuda(state, [&] {
        std::vector<Tensor> grads = engine::cuda_ops::lora_linear_backward(ctx, {dy});
      });
    }
    set_flops(state, flops, s, ceil.gemm_tflops);
    state.counters["gemm_TFLOP/s"] = flops / gemm_s * 1e-12;
    state.counters["ratio_to_gemm"] = s > 0 ? gemm_s / s : 0.0;
  });
}

// qlora/{forward,backward}/<role>_<out>x<in>/M<tokens>
const bool kRegistered = [] {
  for (bool backward : {false, true})
    for (const LinearShape& shape : kShapes)
      for (int64_t m : kTokens) {
        const std::string name = std::string("qlora/") + (backward ? "backward/" : "forward/") +
                                 shape.role + "_" + std::to_string(shape.out) + "x" +
                                 std::to_string(shape.in) + "/M" + std::to_string(m);
        benchmark::RegisterBenchmark(name.c_str(), BM_Qlora, shape, m, backward)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
  return true;
}();

}  // namespace

}  // namespace bench
