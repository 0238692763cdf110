// Causal grouped-query attention (kernels/attention.h, tensor-core path) on Llama-3-70B's
// heads: B = 1, Hq = 64 query heads, Hkv = 8 KV heads, head_dim 128, bf16, at
// T = 1024, 4096 and 16384 tokens, forward and backward.
//
// FLOPs (the convention of FlashAttention and PyTorch's benchmarks, so the numbers are
// comparable with bench/sdpa_reference.py, which prints SDPA's on the same shapes):
//   forward   2 products (Q K^T, P V) of 2 B Hq T^2 D each, halved by the causal mask:
//             4 B Hq T^2 D / 2
//   backward  2.5 x forward (five products: Q K^T recomputed, dO V^T, P^T dO, dS^T Q, dS K).
//             This engine's deterministic backward does seven (dQ recomputes Q K^T and
//             dO V^T instead of accumulating dQ with atomics), so its TFLOP/s count the
//             useful work, not the work done.
// Counters: TFLOP/s from the mean CUDA-event time, frac_of_ceiling against the measured
// bf16 GEMM ceiling (bench_ceilings.cpp). The backward time includes everything
// kernels::attention_backward queues (Delta, dK/dV, the split reduction when used, dQ).
#include <cmath>

#include "bench/cuda_timing.h"
#include "engine/cuda/runtime.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "kernels/attention.h"

namespace bench {

namespace {

using engine::Device;
using engine::DType;
using engine::Tensor;

constexpr int64_t kQHeads = 64, kKvHeads = 8, kHeadDim = 128;

double forward_flops(int64_t t) {
  return 4.0 * double(kQHeads) * double(t) * double(t) * double(kHeadDim) / 2.0;
}

struct AttentionBuffers {
  kmath::AttentionDims s;
  float scale;
  Tensor q, k, v, out, lse, dout, dq, dk, dv, workspace;

  explicit AttentionBuffers(int64_t t)
      : s{1, t, kQHeads, kKvHeads, kHeadDim}, scale(float(1.0 / std::sqrt(double(kHeadDim)))) {
    auto random = [](engine::Shape shape, uint64_t seed) {
      Tensor x = Tensor::empty(shape, DType::BF16, Device::cuda());
      engine::fill_uniform(x, -1.0f, 1.0f, seed, 0);
      return x;
    };
    q = random({1, t, kQHeads, kHeadDim}, 1);
    k = random({1, t, kKvHeads, kHeadDim}, 2);
    v = random({1, t, kKvHeads, kHeadDim}, 3);
    dout = random({1, t, kQHeads, kHeadDim}, 4);
    out = Tensor::empty(q.shape(), DType::BF16, Device::cuda());
    dq = Tensor::empty(q.shape(), DType::BF16, Device::cuda());
    dk = Tensor::empty(k.shape(), DType::BF16, Device::cuda());
    dv = Tensor::empty(v.shape(), DType::BF16, Device::cuda());
    lse = Tensor::empty({1, kQHeads, t}, DType::F32, Device::cuda());
    const size_t ws = kernels::attention_backward_workspace_bytes(kernels::ElemType::BF16, s);
    workspace = Tensor::empty({int64_t(ws / 4 + 1)}, DType::F32, Device::cuda());
  }
  void forward() const {
    kernels::attention_forward(out.raw_data(), lse.data<float>(), q.raw_data(), k.raw_data(),
                               v.raw_data(), kernels::ElemType::BF16, s, scale,
                               engine::cuda::current_stream());
  }
  void backward() const {
    kernels::attention_backward(dq.raw_data(), dk.raw_data(), dv.raw_data(), q.raw_data(),
                                k.raw_data(), v.raw_data(), out.raw_data(), lse.data<float>(),
                                dout.raw_data(), kernels::ElemType::BF16, s, scale,
                                workspace.raw_data(), workspace.nbytes(),
                                engine::cuda::current_stream());
  }
};

void BM_AttentionForward(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const int64_t t = state.range(0);
    const Ceilings& ceil = ceilings();
    AttentionBuffers b(t);
    double s = time_cuda(state, [&] { b.forward(); });
    set_flops(state, forward_flops(t), s, ceil.gemm_tflops);
  });
}

void BM_AttentionBackward(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const int64_t t = state.range(0);
    const Ceilings& ceil = ceilings();
    AttentionBuffers b(t);
    b.forward();  // out and lse for the backward
    double s = time_cuda(state, [&] { b.backward(); });
    set_flops(state, 2.5 * forward_flops(t), s, ceil.gemm_tflops);
  });
}

}  // namespace

}  // namespace bench

BENCHMARK(bench::BM_AttentionForward)
    ->Name("attention/forward_bf16_hq64_hkv8_d128")
    ->Arg(1024)
    ->Arg(4096)
    ->Arg(16384)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(bench::BM_AttentionBackward)
    ->Name("attention/backward_bf16_hq64_hkv8_d128")
    ->Arg(1024)
    ->Arg(4096)
    ->Arg(16384)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
