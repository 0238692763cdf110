// The fused lm_head cross-entropy (engine/cuda/lm_head_loss.cpp) at Llama-3-70B's
// head: H = 8192, V = 128256, bf16, N = 4096 and 16384 tokens, every target counted.
// One iteration = forward + backward with the lm_head frozen (QLoRA: only dh), through
// the registry's CUDA implementation directly.
//
// Counters:
//   TFLOP/s, frac_of_ceiling   GEMM FLOPs executed / time, against the measured cuBLASLt
//                              bf16 GEMM: forward logits 2NHV, recomputed logits 2NHV,
//                              dh from the bf16 hi and lo parts of the logits' gradient
//                              2 x 2NHV: 8 N H V in all
//   useful_TFLOP/s             6 N H V / time (forward, recompute, one dh product): what an
//                              unsplit implementation would execute
//   peak_bytes                 the op's device peak beyond its inputs and outputs (loss,
//                              dh), from an untimed pass with the peak counter reset
//   logits_bytes               N V 2: the bf16 logits an unfused loss would materialise
//   peak_fraction_of_logits    peak_bytes / logits_bytes (target: at most 1/20)
#include <vector>

#include "bench/cuda_timing.h"
#include "engine/allocator.h"
#include "engine/op.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace bench {

namespace {

using engine::Device;
using engine::DType;
using engine::Tensor;

constexpr int64_t kHidden = 8192, kVocab = 128256;

struct LmHeadProblem {
  std::vector<Tensor> inputs;  // h, W (bf16), targets (i32) on the GPU
  Tensor seed;                 // dloss = 1
  explicit LmHeadProblem(int64_t n) {
    const Device gpu = Device::cuda();
    Tensor h = Tensor::empty({n, kHidden}, DType::BF16, gpu);
    Tensor w = Tensor::empty({kVocab, kHidden}, DType::BF16, gpu);
    // Llama-like scales: normalised hidden states, lm_head entries ~ 1/sqrt(H).
    engine::fill_uniform(h, -1.7f, 1.7f, /*seed=*/1, /*offset=*/0);
    engine::fill_uniform(w, -0.02f, 0.02f, /*seed=*/2, /*offset=*/0);
    engine::Generator gen(3);
    std::vector<int32_t> t(static_cast<size_t>(n));
    std::vector<float> u = engine::uniform({n}, 0.0f, 1.0f, gen).to_floats();
    for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>(u[i] * kVocab) % kVocab;
    inputs = {h, w, Tensor::from_ints(t, {n}).to(gpu)};
    seed = Tensor::full({}, 1.0f).to_dtype(DType::BF16).to(gpu);
  }
  // Forward + backward; returns the bytes of the outputs (loss and dh).
  size_t run() const {
    const engine::OpDef& def = engine::op_def(engine::OpId::LmHeadCrossEntropy);
    engine::OpContext ctx;
    ctx.needs_grad = {true, false, false};
    for (const Tensor& x : inputs) ctx.input_shapes.push_back(x.shape());
    std::vector<Tensor> out = def.cuda.forward(ctx, inputs);
    std::vector<Tensor> grads = def.cuda.backward(ctx, {seed});
    return out[0].nbytes() + grads[0].nbytes();
  }
};

void BM_LmHeadCrossEntropy(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const int64_t n = state.range(0);
    const Ceilings& ceil = ceilings();
    LmHeadProblem problem(n);
    problem.run();  // warm-up: the cuBLASLt workspace, cached blocks
    engine::cuda::synchronize();
    engine::Allocator& alloc = engine::allocator_for(Device::cuda());
    const size_t base = alloc.stats().in_use;
    alloc.reset_peak();
    const size_t outputs = problem.run();
    engine::cuda::synchronize();
    const double peak = double(alloc.stats().peak - base - outputs);
    const double logits = double(n) * double(kVocab) * 2.0;

    const double s = time_cuda(state, [&] { problem.run(); }, /*warmup=*/1);
    const double nhv = double(n) * double(kHidden) * double(kVocab);
    set_flops(state, 8.0 * nhv, s, ceil.gemm_tflops);
    if (s > 0) state.counters["useful_TFLOP/s"] = 6.0 * nhv / s * 1e-12;
    state.counters["peak_bytes"] = peak;
    state.counters["logits_bytes"] = logits;
    state.counters["peak_fraction_of_logits"] = peak / logits;
  });
}

}  // namespace

}  // namespace bench

BENCHMARK(bench::BM_LmHeadCrossEntropy)
    ->Name("cross_entropy/lm_head_fused_bf16_H8192_V128256")
    ->ArgName("tokens")
    ->Arg(4096)
    ->Arg(16384)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
