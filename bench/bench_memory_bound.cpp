// The memory-bound transformer kernels on Llama-3-70B shapes, as GB/s and as a
// fraction of the measured device-to-device copy bandwidth (bench_ceilings.cpp).
// Target: >= 0.85 of copy for each. Bytes counted are the minimum each kernel must
// move (every input read once, every output written once), bf16 activations:
//   rmsnorm fwd  x [4096, 8192] -> y, rstd          2 N + 2 N + 2 D + 4 R
//   rmsnorm bwd  x, dy, rstd, w -> dx, dw           3 x 2 N + 4 R + 2 D (+ fp32 tile
//                partials: 2 x 4 D ceil(R/16), counted, as they are real traffic)
//   rope fwd/bwd q [1, 4096, 64, 128]               2 N + 2 N
//   embedding fwd  4096 ids, table [128256, 8192]   4 n + 2 (n D) + 2 (n D)
//   embedding bwd  dtable cleared (2 V D written) + dout read (2 n D) + rows written
//                (2 n D, at most) + the sort (ids, positions: ~24 n)
//   adamw        the 207 M LoRA parameters of Llama-3-70B at r = 16 (80 layers x 7
//                projections x {A, B} = 1120 fp32 tensors): 16 bytes read + 12 written
//                per parameter, one fused launch.
// Every benchmark skips with the reason when no GPU can be used.
#include <vector>

#include "bench/cuda_timing.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "kernels/adamw.h"
#include "kernels/embedding.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"

namespace bench {

namespace {

using engine::Device;
using engine::DType;
using engine::Tensor;

constexpr int64_t kTokens = 4096, kHidden = 8192, kHeads = 64, kHeadDim = 128;
constexpr int64_t kVocab = 128256;
constexpr kernels::ElemType kBf16 = kernels::ElemType::BF16;

Tensor random(const engine::Shape& s, DType dt, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::empty(s, dt, Device::cuda());
  engine::fill_uniform(t, lo, hi, seed, 0);
  return t;
}

cudaStream_t stream() { return engine::cuda::current_stream(); }

void BM_RmsNormForward(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const Ceilings& ceil = ceilings();
    Tensor x = random({kTokens, kHidden}, DType::BF16, 1), w = random({kHidden}, DType::BF16, 2);
    Tensor y = Tensor::empty({kTokens, kHidden}, DType::BF16, Device::cuda());
    Tensor rstd = Tensor::empty({kTokens}, DType::F32, Device::cuda());
    double s = time_cuda(state, [&] {
      kernels::rmsnorm_forward(y.raw_data(), static_cast<float*>(rstd.raw_data()), x.raw_data(),
                               w.raw_data(), kBf16, kTokens, kHidden, 1e-5f, stream());
    });
    const double n = double(kTokens) * kHidden;
    set_bandwidth(state, 4 * n + 2.0 * kHidden + 4.0 * kTokens, s, ceil.copy_gbs);
  });
}

void BM_RmsNormBackward(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const Ceilings& ceil = ceilings();
    const bool with_dw = state.range(0) != 0;
    Tensor x = random({kTokens, kHidden}, DType::BF16, 3), w = random({kHidden}, DType::BF16, 4);
    Tensor dy = random({kTokens, kHidden}, DType::BF16, 5);
    Tensor rstd = random({kTokens}, DType::F32, 6, 0.5f, 2.0f);
    Tensor dx = Tensor::empty({kTokens, kHidden}, DType::BF16, Device::cuda());
    Tensor dw = Tensor::empty({kHidden}, DType::BF16, Device::cuda());
    const int64_t ws_floats = kernels::rmsnorm_backward_workspace_floats(kTokens, kHidden);
    Tensor ws = Tensor::empty({ws_floats}, DType::F32, Device::cuda());
    double s = time_cuda(state, [&] {
      kernels::rmsnorm_backward(dx.raw_data(), with_dw ? dw.raw_data() : nullptr,
                                static_cast<float*>(ws.raw_data()), dy.raw_data(), x.raw_data(),
                                w.raw_data(), static_cast<const float*>(rstd.raw_data()), kBf16,
                                kTokens, kHidden, stream());
    });
    const double n = double(kTokens) * kHidden;
    double bytes = 6 * n + 4.0 * kTokens + 2.0 * kHidden;
    if (with_dw) bytes += 2.0 * kHidden + 2.0 * 4.0 * double(ws_floats);
    set_bandwidth(state, bytes, s, ceil.copy_gbs);
  });
}

void BM_Rope(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const Ceilings& ceil = ceilings();
    const bool inverse = state.range(0) != 0;
    Tensor q = random({1, kTokens, kHeads, kHeadDim}, DType::BF16, 7);
    Tensor out = Tensor::empty(q.shape(), DType::BF16, Device::cuda());
    kmath::RopeConfig p;  // Llama 3.1 70B: theta 500000, llama3 scaling 8 / 1 / 4 / 8192
    p.theta = 500000.0f;
    p.scaling_factor = 8.0f;
    std::vector<float> inv_freq(kHeadDim / 2);
    kernels::rope_inv_freq_table(inv_freq.data(), kHeadDim, p);
    double s = time_cuda(state, [&] {
      kernels::rope(out.raw_data(), q.raw_data(), kBf16, 1, kTokens, kHeads, kHeadDim, 0,
                    inv_freq.data(), inverse, stream());
    });
    set_bandwidth(state, 4.0 * double(q.numel()), s, ceil.copy_gbs);
  });
}

Tensor random_ids(int64_t n, uint64_t seed) {
  engine::Generator gen(seed);
  std::vector<float> u = engine::uniform({n}, 0.0f, 1.0f, gen).to_floats();
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>(u[i] * kVocab) % kVocab;
  return Tensor::from_ints(ids, {n}).to(Device::cuda());
}

void BM_EmbeddingForward(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const Ceilings& ceil = ceilings();
    Tensor ids = random_ids(kTokens, 8);
    Tensor table = random({kVocab, kHidden}, DType::BF16, 9);
    Tensor out = Tensor::empty({kTokens, kHidden}, DType::BF16, Device::cuda());
    Tensor status = Tensor::empty({2}, DType::I32, Device::cuda());
    double s = time_cuda(state, [&] {
      kernels::embedding_forward(out.raw_data(), static_cast<const int32_t*>(ids.raw_data()),
                                 table.raw_data(), kBf16, kTokens, kVocab, kHidden,
                                 static_cast<uint64_t*>(status.raw_data()), stream());
    });
    set_bandwidth(state, 4.0 * kTokens + 4.0 * double(kTokens) * kHidden, s, ceil.copy_gbs);
  });
}

void BM_EmbeddingBackward(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const Ceilings& ceil = ceilings();
    Tensor ids = random_ids(kTokens, 10);
    Tensor dout = random({kTokens, kHidden}, DType::BF16, 11);
    Tensor dtable = Tensor::empty({kVocab, kHidden}, DType::BF16, Device::cuda());
    const size_t ws_bytes = kernels::embedding_backward_workspace_bytes(kTokens, kVocab);
    Tensor ws = Tensor::empty({static_cast<int64_t>(ws_bytes)}, DType::U8, Device::cuda());
    double s = time_cuda(state, [&] {
      kernels::embedding_backward(dtable.raw_data(), dout.raw_data(),
                                  static_cast<const int32_t*>(ids.raw_data()), kBf16, kTokens,
                                  kVocab, kHidden, ws.raw_data(), ws_bytes, stream());
    });
    const double nd = double(kTokens) * kHidden;
    set_bandwidth(state, 2.0 * double(kVocab) * kHidden + 4 * nd + 24.0 * kTokens, s,
                  ceil.copy_gbs);
  });
}

// Llama-3-70B LoRA r = 16 on q, k, v, o, gate, up, down: per layer (in, out) pairs.
struct Proj {
  int64_t in, out;
};
constexpr Proj kProjections[] = {{8192, 8192}, {8192, 1024}, {8192, 1024}, {8192, 8192},
                                 {8192, 28672}, {8192, 28672}, {28672, 8192}};

void BM_AdamW(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  guarded(state, [&] {
    const Ceilings& ceil = ceilings();
    const int64_t layers = state.range(0), rank = 16;
    std::vector<Tensor> keep;
    std::vector<kernels::AdamWTensor> list;
    int64_t params = 0;
    uint64_t seed = 100;
    for (int64_t l = 0; l < layers; ++l)
      for (const Proj& pr : kProjections)
        for (int64_t numel : {rank * pr.in, pr.out * rank}) {  // lora_A, lora_B
          Tensor p = random({numel}, DType::F32, seed++), g = random({numel}, DType::F32, seed++);
          Tensor m = Tensor::zeros({numel}, DType::F32, Device::cuda());
          Tensor v = Tensor::zeros({numel}, DType::F32, Device::cuda());
          list.push_back({static_cast<float*>(p.raw_data()), static_cast<const float*>(g.raw_data()),
                          static_cast<float*>(m.raw_data()), static_cast<float*>(v.raw_data()),
                          numel});
          keep.insert(keep.end(), {p, g, m, v});
          params += numel;
        }
    const int n = static_cast<int>(list.size());
    Tensor ws = Tensor::empty({static_cast<int64_t>(kernels::adamw_workspace_bytes(n))}, DType::U8,
                              Device::cuda());
    kmath::AdamWStep step;
    step.lr = 1e-4f;
    step.step_size = 1e-3f;
    step.bias2_sqrt = 0.03f;
    double s = time_cuda(state, [&] {
      kernels::adamw_step(list.data(), n, step, ws.raw_data(), ws.nbytes(), stream());
    });
    state.counters["params_M"] = double(params) * 1e-6;
    set_bandwidth(state, 28.0 * double(params), s, ceil.copy_gbs);
  });
}

}  // namespace

}  // namespace bench

BENCHMARK(bench::BM_RmsNormForward)
    ->Name("memory_bound/rmsnorm_fwd_bf16_4096x8192")
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(bench::BM_RmsNormBackward)
    ->Name("memory_bound/rmsnorm_bwd_bf16_4096x8192")
    ->ArgName("dw")
    ->Arg(0)
    ->Arg(1)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(bench::BM_Rope)
    ->Name("memory_bound/rope_bf16_q_1x4096x64x128")
    ->ArgName("backward")
    ->Arg(0)
    ->Arg(1)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(bench::BM_EmbeddingForward)
    ->Name("memory_bound/embedding_fwd_bf16_4096_of_128256x8192")
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(bench::BM_EmbeddingBackward)
    ->Name("memory_bound/embedding_bwd_bf16_4096_of_128256x8192")
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(bench::BM_AdamW)
    ->Name("memory_bound/adamw_fp32_lora_r16_70b")
    ->ArgName("layers")
    ->Arg(80)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
