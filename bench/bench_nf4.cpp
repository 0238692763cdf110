// NF4 kernels (kernels/nf4.cu) on the Llama-3-70B weight shapes [out, in].
//
//   nf4/dequantize_bf16   NF4 -> bf16 for q/o (8192 x 8192) and gate/up (28672 x 8192).
//       bytes = packed n/2 + absmax codes n/64 + nested 4 n/16384 (read) + 2n (written)
//       counters: GB/s, frac_of_ceiling = GB/s over the measured device-to-device copy
//       (bench_ceilings.cpp). Target: >= 0.9.
//   nf4/matmul_small_m    y = x W^T straight from NF4 (nf4_matmul_small_m) at M = 1, 16, 64,
//       beside a cuBLASLt bf16 GEMM of the same shape (x [M, in] @ W^T, W dense bf16 [out, in])
//       timed in the same run.
//       counters: us (NF4 kernel, mean), gemm_us (bf16 GEMM, mean of kGemmReps),
//       speedup_vs_bf16_gemm = gemm_us / us (target at M = 16: >= 2.5),
//       GB/s = bytes the NF4 kernel must move (NF4 weight + x + y) / time, frac_of_ceiling.
// L2: a 32 MB NF4 weight fits in an H100/H200's L2, so repeated calls would read it from
// cache. Both sides therefore rotate over enough copies of their weight (at least 3x the L2
// between two uses of one copy) that every call reads its weight from DRAM.
// Weights are normal random (speed does not depend on the values), quantized on the device.
#include <algorithm>
#include <memory>
#include <vector>

#include "bench/cuda_timing.h"
#include "engine/cuda/cublaslt.h"
#include "engine/quant/nf4_linear.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "kernels/nf4.h"

namespace bench {

namespace {

using engine::Device;
using engine::DType;
using engine::Tensor;
using engine::quant::Nf4FrozenLinear;
using engine::quant::Nf4Weight;

constexpr int kGemmWarmups = 2, kGemmReps = 20;
constexpr int kMaxCopies = 8;

// Copies of a `bytes`-sized operand needed so that 3x the L2 passes between two uses of one.
int copies_for(double bytes) {
  int device = 0, l2 = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
  const int n = static_cast<int>(3.0 * l2 / bytes) + 1;
  return std::clamp(n, 1, kMaxCopies);
}

Tensor random_bf16(engine::Shape shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape, DType::BF16, Device::cuda());
  engine::fill_normal(t, 0.0f, 0.02f, seed, 0);
  return t;
}

kernels::Nf4Scales scales_of(const Nf4Weight& w) {
  kernels::Nf4Scales s;
  s.absmax_q = w.absmax_q.data<uint8_t>();
  s.nested = w.nested_absmax.data<float>();
  s.offset = w.offset;
  return s;
}

// `copies` device copies of one NF4 weight [out, in] (quantized once on the device).
std::vector<std::shared_ptr<Nf4FrozenLinear>> nf4_weights(int64_t out, int64_t in, int copies) {
  auto first = Nf4FrozenLinear::quantize_on_device(random_bf16({out, in}, 11));
  std::vector<std::shared_ptr<Nf4FrozenLinear>> all{first};
  for (int i = 1; i < copies; ++i) {
    Nf4Weight w = first->weight();
    w.packed = w.packed.clone();
    w.absmax_q = w.absmax_q.clone();
    w.nested_absmax = w.nested_absmax.clone();
    all.push_back(std::make_shared<Nf4FrozenLinear>(std::move(w)));
  }
  return all;
}

double nf4_read_bytes(int64_t n) {
  return 0.5 * double(n) + double(n) / 64 + 4.0 * double((n / 64 + 255) / 256);
}


void BM_Nf4Dequantize(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const int64_t out = state.range(0), in = state.range(1), n = out * in;
    const Ceilings& ceil = ceilings();
    const auto weights = nf4_weights(out, in, copies_for(nf4_read_bytes(n)));
    Tensor dense = Tensor::empty({out, in}, DType::BF16, Device::cuda());
    size_t next = 0;
    double s = time_cuda(state, [&] {
      const Nf4Weight& w = weights[next++ % weights.size()]->weight();
      kernels::nf4_dequantize(dense.raw_data(), kernels::ElemType::BF16, w.packed.data<uint8_t>(),
                              scales_of(w), n, engine::cuda::current_stream());
    });
    set_bandwidth(state, nf4_read_bytes(n) + 2.0 * double(n), s, ceil.copy_gbs);
  });
}

void BM_Nf4MatmulSmallM(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const int64_t m = state.range(0), out = state.range(1), in = state.range(2);
    const Ceilings& ceil = ceilings();
    cudaStream_t stream = engine::cuda::current_stream();
    const Tensor x = random_bf16({m, in}, 5);
    Tensor y = Tensor::empty({m, out}, DType::BF16, Device::cuda());

    // The bf16 GEMM first (its dense copies are freed before the NF4 ones are made).
    double gemm_s = 0;
    {
      const int copies = copies_for(2.0 * double(out) * double(in));
      std::vector<Tensor> dense;
      for (int i = 0; i < copies; ++i) dense.push_back(random_bf16({out, in}, 100 + i));
      gemm_s = mean_seconds(
          [&](int i) {
            engine::cuda::gemm(false, true, m, out, in, 1.0f, x.raw_data(), DType::BF16, 0,
                               dense[static_cast<size_t>(i) % dense.size()].raw_data(),
                               DType::BF16, 0, 0.0f, y.raw_data(), DType::BF16, 0, 1, stream);
          },
          kGemmWarmups, kGemmReps);
    }

    const auto weights = nf4_weights(out, in, copies_for(nf4_read_bytes(out * in)));
    const size_t ws_bytes = kernels::nf4_matmul_small_m_workspace_bytes(m, out, in);
    Tensor ws = Tensor::empty({static_cast<int64_t>(std::max<size_t>(ws_bytes, 16))}, DType::U8,
                              Device::cuda());
    size_t next = 0;
    double s = time_cuda(state, [&] {
      const Nf4Weight& w = weights[next++ % weights.size()]->weight();
      kernels::nf4_matmul_small_m(y.raw_data(), x.raw_data(), w.packed.data<uint8_t>(), scales_of(w),
                                  m, out, in, ws.raw_data(), ws_bytes, stream);
    });
    const double bytes = nf4_read_bytes(out * in) + 2.0 * double(m) * double(in + out);
    set_bandwidth(state, bytes, s, ceil.copy_gbs);
    if (s > 0) {
      state.counters["us"] = s * 1e6;
      state.counters["gemm_us"] = gemm_s * 1e6;
      state.counters["speedup_vs_bf16_gemm"] = gemm_s / s;
    }
  });
}

}  // namespace

}  // namespace bench

BENCHMARK(bench::BM_Nf4Dequantize)
    ->Name("nf4/dequantize_bf16")
    ->ArgNames({"out", "in"})
    ->Args({8192, 8192})
    ->Args({28672, 8192})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(bench::BM_Nf4MatmulSmallM)
    ->Name("nf4/matmul_small_m")
    ->ArgNames({"m", "out", "in"})
    ->ArgsProduct({{1, 16, 64}, {8192, 28672}, {8192}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
