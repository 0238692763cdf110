// engine::cuda::gemm against a double-precision host reference: random shapes (odd
// sizes included), all four transpose combinations, batches with and without a
// shared B, f32 and bf16 inputs, f32 and bf16 outputs, and the beta path.
//
// Tolerance. The inputs are rounded to their storage type on the host before the
// reference is computed, so input rounding is not an error of the GEMM. For one
// output element with s = sum_p |a_ip b_pj| and the exact value c = sum_p a_ip b_pj:
//   products   exact for bf16 inputs (8-bit x 8-bit significands fit in fp32's 24);
//              one rounding each for f32 inputs: <= u_in * s, u_in = 2^-24.
//   the sum    K - 1 fp32 additions in any order (tiles, split-K): the classic bound
//              gamma_{K-1} * s ~= (K - 1) u_acc * s. Tensor-core adders may truncate
//              rather than round, so u_acc is one ulp, 2^-23, not half of one.
//   epilogue   alpha * acc + beta * c0 in fp32: <= 2 u_acc (|alpha| s' + |beta c0|).
//   output     one rounding to the output type: <= u_out * |result|,
//              u_out = 2^-24 (f32) or 2^-8 (bf16).
// So |got - ref| <= |alpha| (K u_acc + u_in) s + 2 u_acc |beta c0| + u_out |ref|
// (u_acc absorbs the epilogue's rounding of alpha * acc). This is a worst-case
// bound; typical errors are ~sqrt(K) times smaller, so it is not tight, but it never
// needs tuning and still catches any wrong element (a wrong index or transpose moves
// the value by O(s), far above K u s for K << 2^23).
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <random>
#include <sstream>

#include "engine/cuda/cublaslt.h"
#include "engine/cuda/runtime.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"

using engine::Device;
using engine::DType;
using engine::Tensor;

namespace {

struct GemmCase {
  int64_t batch, m, n, k;
  bool ta, tb, b_shared;
  DType in, out;
  float alpha = 1.0f, beta = 0.0f;
  std::string str() const {
    std::ostringstream s;
    s << engine::dtype_name(in) << "->" << engine::dtype_name(out) << " batch=" << batch
      << " m=" << m << " n=" << n << " k=" << k << (ta ? " A^T" : "") << (tb ? " B^T" : "")
      << (b_shared ? " shared-B" : "") << " alpha=" << alpha << " beta=" << beta;
    return s.str();
  }
};

// Host values as the device sees them: uniform in [-1, 1), rounded through `dtype`.
Tensor host_values(int64_t count, DType dtype, engine::Generator& gen) {
  return engine::uniform({count}, -1.0f, 1.0f, gen).to_dtype(dtype).to_dtype(DType::F32);
}

void run_case(const GemmCase& c, engine::Generator& gen) {
  SCOPED_TRACE(c.str());
  const int64_t b_batches = c.b_shared ? 1 : c.batch;
  Tensor a = host_values(c.batch * c.m * c.k, c.in, gen);
  Tensor b = host_values(b_batches * c.k * c.n, c.in, gen);
  Tensor c0 = host_values(c.batch * c.m * c.n, c.out, gen);
  const float* ap = a.data<float>();
  const float* bp = b.data<float>();
  const float* cp = c0.data<float>();

  Tensor da = a.to_dtype(c.in).to(Device::cuda());
  Tensor db = b.to_dtype(c.in).to(Device::cuda());
  Tensor dc = Tensor::empty({c.batch * c.m * c.n}, c.out, Device::cuda());
  if (c.beta == 0.0f) dc.fill(NAN);  // poison: C must not be read, every element written
  else dc.copy_from(c0.to_dtype(c.out).to(Device::cuda()));

  engine::cuda::gemm(c.ta, c.tb, c.m, c.n, c.k, c.alpha, da.raw_data(), c.in, c.m * c.k,
                     db.raw_data(), c.in, c.b_shared ? 0 : c.k * c.n, c.beta, dc.raw_data(), c.out,
                     c.m * c.n, c.batch, engine::cuda::current_stream());
  std::vector<float> got = dc.to_floats();

  const double u_acc = std::ldexp(1.0, -23);
  const double u_in = c.in == DType::F32 ? std::ldexp(1.0, -24) : 0.0;
  const double u_out = c.out == DType::F32 ? std::ldexp(1.0, -24) : std::ldexp(1.0, -8);
  std::vector<double> want, tol;
  for (int64_t bi = 0; bi < c.batch; ++bi) {
    const float* A = ap + bi * c.m * c.k;
    const float* B = bp + (c.b_shared ? 0 : bi * c.k * c.n);
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        double sum = 0, abs_sum = 0;
        for (int64_t p = 0; p < c.k; ++p) {
          double x = c.ta ? A[p * c.m + i] : A[i * c.k + p];
          double y = c.tb ? B[j * c.k + p] : B[p * c.n + j];
          sum += x * y;
          abs_sum += std::fabs(x * y);
        }
        const int64_t idx = (bi * c.m + i) * c.n + j;
        const double c_old = c.beta == 0.0f ? 0.0 : cp[idx];
        const double ref = c.alpha * sum + c.beta * c_old;
        want.push_back(ref);
        tol.push_back(std::fabs(c.alpha) * (c.k * u_acc + u_in) * abs_sum +
                      2 * u_acc * std::fabs(c.beta * c_old) + u_out * std::fabs(ref));
      }
  }
  testing_support::expect_within(got, want, tol, "C (row-major [batch, m, n])");
}

TEST(CublasLt, GemmMatchesDoubleReference) {
  SKIP_WITHOUT_GPU();
  engine::Generator gen(2024);
  std::mt19937 rng(11);
  std::uniform_int_distribution<int64_t> dim(1, 150);
  struct Types {
    DType in, out;
  };
  const Types types[] = {{DType::F32, DType::F32}, {DType::BF16, DType::BF16},
                         {DType::BF16, DType::F32}};
  // Fixed corner shapes, then random ones.
  std::vector<std::array<int64_t, 4>> shapes = {
      {1, 1, 1, 1}, {1, 7, 5, 3}, {3, 17, 33, 65}, {2, 64, 128, 96}, {1, 1, 257, 31}};
  for (int r = 0; r < 4; ++r) shapes.push_back({1 + int64_t(rng() % 3), dim(rng), dim(rng), dim(rng)});
  for (const Types& t : types)
    for (int tr = 0; tr < 4; ++tr)
      for (const auto& s : shapes) {
        GemmCase c{s[0], s[1], s[2], s[3], bool(tr & 1), bool(tr & 2), false, t.in, t.out};
        run_case(c, gen);
        if (c.batch > 1) {
          c.b_shared = true;  // stride 0: one B for every batch
          run_case(c, gen);
        }
      }
}

TEST(CublasLt, AlphaAndBetaScaleAndAccumulate) {
  SKIP_WITHOUT_GPU();
  engine::Generator gen(77);
  for (DType out : {DType::F32, DType::BF16}) {
    DType in = out == DType::F32 ? DType::F32 : DType::BF16;
    GemmCase c{2, 19, 23, 41, false, true, false, in, out, -0.5f, 1.0f};
    run_case(c, gen);
    c.beta = 0.25f;
    c.ta = true;
    run_case(c, gen);
  }
}

TEST(CublasLt, EmptyReductionGivesBetaTimesC) {
  SKIP_WITHOUT_GPU();
  engine::Generator gen(5);
  GemmCase c{2, 3, 4, 0, false, false, false, DType::F32, DType::F32};
  run_case(c, gen);  // beta = 0: zeros over the NaN poison
  c.beta = 2.0f;
  run_case(c, gen);
}

TEST(CublasLt, RejectsUnsupportedTypes) {
  SKIP_WITHOUT_GPU();
  Tensor a = Tensor::zeros({4, 4}, DType::F32, Device::cuda());
  Tensor c = Tensor::zeros({4, 4}, DType::BF16, Device::cuda());
  EXPECT_THROW(engine::cuda::gemm(false, false, 4, 4, 4, 1.0f, a.raw_data(), DType::F32, 0,
                                  a.raw_data(), DType::F32, 0, 0.0f, c.raw_data(), DType::BF16, 0,
                                  1, engine::cuda::current_stream()),
               engine::Error);
}

}  // namespace
