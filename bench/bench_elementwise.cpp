// Elementwise kernels (kernels/elementwise.cu) on 256 Mi bf16 elements, as GB/s and
// as a fraction of the measured device-to-device copy bandwidth (bench_ceilings.cpp).
// These kernels are pure streaming: the copy ceiling is the most they can reach.
//   add     reads a, b; writes out      6 bytes per element
//   silu    reads x; writes y           4 bytes per element
//   swiglu  reads gate, up; writes y    6 bytes per element
#include "bench/cuda_timing.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "kernels/elementwise.h"

namespace bench {

namespace {

using engine::Device;
using engine::DType;
using engine::Tensor;

Tensor random_bf16(int64_t n, uint64_t seed) {
  Tensor t = Tensor::empty({n}, DType::BF16, Device::cuda());
  engine::fill_uniform(t, -4.0f, 4.0f, seed, 0);
  return t;
}

void BM_AddBf16(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const int64_t n = state.range(0);
    const Ceilings& ceil = ceilings();
    Tensor a = random_bf16(n, 1), b = random_bf16(n, 2);
    Tensor out = Tensor::empty({n}, DType::BF16, Device::cuda());
    double s = time_cuda(state, [&] {
      kernels::add(out.raw_data(), a.raw_data(), b.raw_data(), kernels::ElemType::BF16, n,
                   engine::cuda::current_stream());
    });
    set_bandwidth(state, 6.0 * double(n), s, ceil.copy_gbs);
  });
}

void BM_SiluBf16(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const int64_t n = state.range(0);
    const Ceilings& ceil = ceilings();
    Tensor x = random_bf16(n, 3);
    Tensor y = Tensor::empty({n}, DType::BF16, Device::cuda());
    double s = time_cuda(state, [&] {
      kernels::silu_forward(y.raw_data(), x.raw_data(), kernels::ElemType::BF16, n,
                            engine::cuda::current_stream());
    });
    set_bandwidth(state, 4.0 * double(n), s, ceil.copy_gbs);
  });
}

void BM_SwigluBf16(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const int64_t n = state.range(0);
    const Ceilings& ceil = ceilings();
    Tensor gate = random_bf16(n, 4), up = random_bf16(n, 5);
    Tensor y = Tensor::empty({n}, DType::BF16, Device::cuda());
    double s = time_cuda(state, [&] {
      kernels::swiglu_forward(y.raw_data(), gate.raw_data(), up.raw_data(),
                              kernels::ElemType::BF16, n, engine::cuda::current_stream());
    });
    set_bandwidth(state, 6.0 * double(n), s, ceil.copy_gbs);
  });
}

constexpr int64_t kElements = int64_t(1) << 28;  // 256 Mi

}  // namespace

}  // namespace bench

BENCHMARK(bench::BM_AddBf16)
    ->Name("elementwise/add_bf16")
    ->Arg(bench::kElements)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(bench::BM_SiluBf16)
    ->Name("elementwise/silu_bf16")
    ->Arg(bench::kElements)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(bench::BM_SwigluBf16)
    ->Name("elementwise/swiglu_bf16")
    ->Arg(bench::kElements)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
