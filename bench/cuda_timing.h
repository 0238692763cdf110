// Helpers shared by the benches: CUDA-event timing for Google Benchmark's manual
// time, the GB/s, TFLOP/s and frac_of_ceiling counters, and the device's measured
// ceilings (bench_ceilings.cpp).
//
// Usage, in a benchmark registered with ->UseManualTime():
//   if (bench::skip_without_gpu(state)) return;
//   bench::guarded(state, [&] {
//     double s = bench::time_cuda(state, [&] { kernels::add(...); });
//     bench::set_bandwidth(state, bytes_moved, s, bench::ceilings().copy_gbs);
//   });
// Counters are plain values computed from the mean event time, not benchmark "rate"
// counters (those divide by CPU time, which is meaningless for queued GPU work).
#pragma once
#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <exception>
#include <string>

#include "engine/backend.h"
#include "engine/cuda/runtime.h"
#include "kernels/check.h"

namespace bench {

// The device's measured ceilings, measured once per process on first use:
//   copy_gbs     device-to-device cudaMemcpyAsync of 1 GiB, bytes read + written, GB/s
//   gemm_tflops  cuBLASLt bf16 GEMM 8192 x 8192 x 8192 (fp32 accumulation), TFLOP/s
// Both are the best of several timed repetitions. Zeros when no GPU can be used.
struct Ceilings {
  double copy_gbs = 0;
  double gemm_tflops = 0;
};
const Ceilings& ceilings();

// True (and the benchmark marked skipped, with the reason) when no GPU can be used.
inline bool skip_without_gpu(benchmark::State& state) {
  std::string reason;
  if (engine::cuda_available(&reason)) return false;
  state.SkipWithError(("no usable GPU: " + reason).c_str());
  return true;
}

// Runs body; an engine::Error (out of budget, a CUDA failure) marks the benchmark as
// failed with its message instead of terminating the program.
template <class Body>
void guarded(benchmark::State& state, Body&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// Times fn() once per benchmark iteration between two CUDA events on the current
// stream and reports it as the iteration's manual time. `warmup` untimed calls come
// first. Returns the mean seconds per iteration.
template <class Fn>
double time_cuda(benchmark::State& state, Fn&& fn, int warmup = 2) {
  cudaStream_t stream = engine::cuda::current_stream();
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  double total = 0;
  int64_t count = 0;
  try {
    for (auto _ : state) {
      CUDA_CHECK(cudaEventRecord(start, stream));
      fn();
      CUDA_CHECK(cudaEventRecord(stop, stream));
      CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      state.SetIterationTime(ms * 1e-3);
      total += ms * 1e-3;
      ++count;
    }
  } catch (...) {
    (void)cudaEventDestroy(start);
    (void)cudaEventDestroy(stop);
    throw;
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  return count ? total / static_cast<double>(count) : 0.0;
}

// Mean seconds per call of fn(i), i = 0 .. reps-1: one event pair around `reps`
// back-to-back calls after `warmups` untimed ones. For a baseline (a cuBLASLt GEMM
// of the same shape) measured inside another benchmark, outside its timing loop.
template <class Fn>
double mean_seconds(Fn&& fn, int warmups, int reps) {
  cudaStream_t stream = engine::cuda::current_stream();
  for (int i = 0; i < warmups; ++i) fn(i);
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  CUDA_CHECK(cudaEventRecord(start, stream));
  for (int i = 0; i < reps; ++i) fn(i);
  CUDA_CHECK(cudaEventRecord(stop, stream));
  CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  return ms * 1e-3 / reps;
}

// "GB/s" = bytes moved per iteration / mean seconds; "frac_of_ceiling" against a
// measured bandwidth ceiling in GB/s (omitted when the ceiling is unknown).
inline void set_bandwidth(benchmark::State& state, double bytes, double seconds,
                          double ceiling_gbs) {
  if (seconds <= 0) return;
  double gbs = bytes / seconds * 1e-9;
  state.counters["GB/s"] = gbs;
  if (ceiling_gbs > 0) state.counters["frac_of_ceiling"] = gbs / ceiling_gbs;
}

// "TFLOP/s" = floating-point operations per iteration / mean seconds, and
// "frac_of_ceiling" against a measured TFLOP/s ceiling.
inline void set_flops(benchmark::State& state, double flops, double seconds,
                      double ceiling_tflops) {
  if (seconds <= 0) return;
  double tflops = flops / seconds * 1e-12;
  state.counters["TFLOP/s"] = tflops;
  if (ceiling_tflops > 0) state.counters["frac_of_ceiling"] = tflops / ceiling_tflops;
}

}  // namespace bench
