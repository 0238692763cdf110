// The device's ceilings, which every other bench reports a fraction of:
//   copy   device-to-device cudaMemcpyAsync of 1 GiB; bytes = read + written (2 GiB).
//   gemm   cuBLASLt bf16 GEMM, M = N = K = 8192, fp32 accumulation, bf16 output;
//          FLOPs = 2 M N K. Inputs are uniform random (zeros run faster on tensor cores).
// ceilings() measures each once per process (best of kReps event-timed repetitions
// after warm-ups) and caches the result; the two benchmarks below report the same
// operations through Google Benchmark (mean time, so frac_of_ceiling is just under 1).
#include <algorithm>

#include "bench/cuda_timing.h"
#include "engine/allocator.h"
#include "engine/cuda/cublaslt.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace bench {

namespace {

using engine::Device;
using engine::DType;
using engine::Tensor;

constexpr int64_t kCopyBytes = int64_t(1) << 30;
constexpr int64_t kGemmDim = 8192;
constexpr int kWarmups = 3;
constexpr int kReps = 10;

double copy_bytes_moved() { return 2.0 * static_cast<double>(kCopyBytes); }
double gemm_flops() { return 2.0 * double(kGemmDim) * double(kGemmDim) * double(kGemmDim); }

struct CopyBuffers {
  Tensor src = Tensor::zeros({kCopyBytes}, DType::U8, Device::cuda());
  Tensor dst = Tensor::empty({kCopyBytes}, DType::U8, Device::cuda());
  void run() const {
    CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), static_cast<size_t>(kCopyBytes),
                               cudaMemcpyDeviceToDevice, engine::cuda::current_stream()));
  }
};

struct GemmBuffers {
  Tensor a = Tensor::empty({kGemmDim, kGemmDim}, DType::BF16, Device::cuda());
  Tensor b = Tensor::empty({kGemmDim, kGemmDim}, DType::BF16, Device::cuda());
  Tensor c = Tensor::empty({kGemmDim, kGemmDim}, DType::BF16, Device::cuda());
  GemmBuffers() {
    engine::fill_uniform(a, -1.0f, 1.0f, /*seed=*/1, /*offset=*/0);
    engine::fill_uniform(b, -1.0f, 1.0f, /*seed=*/2, /*offset=*/0);
  }
  void run() const {
    engine::cuda::gemm(false, false, kGemmDim, kGemmDim, kGemmDim, 1.0f, a.raw_data(), DType::BF16,
                       0, b.raw_data(), DType::BF16, 0, 0.0f, c.raw_data(), DType::BF16, 0, 1,
                       engine::cuda::current_stream());
  }
};

// Best seconds of kReps event-timed calls after kWarmups untimed ones.
template <class Fn>
double best_seconds(Fn&& fn) {
  cudaStream_t stream = engine::cuda::current_stream();
  for (int i = 0; i < kWarmups; ++i) fn();
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  float best_ms = 0;
  for (int i = 0; i < kReps; ++i) {
    CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    best_ms = i == 0 ? ms : std::min(best_ms, ms);
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  return best_ms * 1e-3;
}

Ceilings measure() {
  Ceilings c;
  if (!engine::cuda_available()) return c;
  {
    CopyBuffers copy;
    c.copy_gbs = copy_bytes_moved() / best_seconds([&] { copy.run(); }) * 1e-9;
  }
  {
    GemmBuffers gemm;
    c.gemm_tflops = gemm_flops() / best_seconds([&] { gemm.run(); }) * 1e-12;
  }
  engine::allocator_for(Device::cuda()).empty_cache();  // give the 2.4 GiB back
  return c;
}

void BM_CopyD2D(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const Ceilings& ceil = ceilings();
    CopyBuffers copy;
    double s = time_cuda(state, [&] { copy.run(); });
    set_bandwidth(state, copy_bytes_moved(), s, ceil.copy_gbs);
  });
}

void BM_GemmBf16(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const Ceilings& ceil = ceilings();
    GemmBuffers gemm;
    double s = time_cuda(state, [&] { gemm.run(); });
    set_flops(state, gemm_flops(), s, ceil.gemm_tflops);
  });
}

}  // namespace

const Ceilings& ceilings() {
  static const Ceilings measured = measure();
  return measured;
}

}  // namespace bench

BENCHMARK(bench::BM_CopyD2D)
    ->Name("ceiling/copy_d2d_1GiB")
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(bench::BM_GemmBf16)
    ->Name("ceiling/gemm_bf16_8192")
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
