// The attention op on CUDA (engine/cuda/attention.cpp, kernels/attention_*.cu)
// against the CPU reference (engine/cpu/attention.cpp).
//
// Tensor-core path: bf16, D = 64 and 128, T in {1, 17, 128, 300} (partial tiles, one
// tile, several tiles with a ragged end), GQA ratios 1, 4 and 8; forward (out and the
// saved lse) and backward (dq, dk, dv); device memory NaN-poisoned before each call;
// two backward runs bitwise equal; every split of the GQA group in the dK/dV kernel.
// Fallback path: f32 at D = 64 and bf16 at D = 96 (the op harness covers small D).
// Packed sequences (doc_start): the same bounds with each row's sums starting at its
// document, on both paths, with documents that begin and end inside and on tile edges.
//
// Inputs are bf16 values on both sides; the reference runs in f32 with double sums.
// Tolerance of the tensor-core path, per element, from the computation itself
// (u = 2^-8 the bf16 unit roundoff, u32 = 2^-24, u_acc = 2^-23 for the tensor cores'
// fp32 accumulation, which may truncate; all other quantities computed here in double):
//   S      S_ij = scale q_i . k_j accumulates D products: eS_i = scale D u_acc
//          max_j sum_d |q_id k_jd|. Scaling to base 2, subtracting the running maximum
//          and exp2 add u32 (2 |S| + 2 |m_i| + 4) relative to each p; the online
//          rescale factors multiply numerator and denominator alike (2 u32 per tile).
//          So every p_ij is off by a relative d_i = eS_i + u32 (2 max|S_i| + 2|m_i| + 4
//          + 2 n_tiles).
//   P      rounded to bf16 before P V (as FlashAttention does), normalised by the fp32
//          sum: O_id is off by (u + 2 d_i + n_i u_acc) A_id, A_id = sum_j P_ij |v_jd|.
//   lse    d_i + u32 (n_i + 2 |lse_i| + 4).
//   out    one bf16 rounding: u (|O| + e) (e: the error before it).
//   backward  P is recomputed from the stored lse: relative db_i = eS_i + u32 (2 max|S_i|
//          + 2|lse_i| + 4) + e_lse_i. dP_ij = dO_i . v_j accumulates: D u_acc sum|dO v|.
//          Delta_i = dO_i . O_i uses the GPU's bf16 O (checked above): its actual
//          difference |dO_i . (O_gpu - O)| + D u32 sum |dO O_gpu|. dS_ij = P (dP - Delta): e_dS = db_i |dS| + P (e_dP + e_Delta), then
//          rounded to bf16 for dS K and dS^T Q: + u (|dS| + e_dS). bf16(P) for P^T dO:
//          (db_i + u (1 + db_i)) P. Each gradient sums n = (group) T products in fp32:
//          n u_acc sum |products|; then one bf16 rounding; the reference's own f32
//          rounding u32 |ref|.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "engine/cpu/ops.h"
#include "engine/error.h"
#include "engine/rng.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"

#if ENGINE_WITH_CUDA
#include "engine/cuda/ops.h"
#include "engine/cuda/runtime.h"
#include "kernels/attention.h"
#endif

using engine::Device;
using engine::DType;
using engine::OpContext;
using engine::Shape;
using engine::Tensor;

namespace {

#if ENGINE_WITH_CUDA
constexpr double kU = 1.0 / 256, kU32 = 1.0 / (1 << 24), kUAcc = 1.0 / (1 << 23);

struct Dims {
  int64_t b, t, hq, hkv, d;
  std::string str() const {
    std::ostringstream s;
    s << "B" << b << " T" << t << " Hq" << hq << " Hkv" << hkv << " D" << d;
    return s.str();
  }
};

// Host f32 tensor of values that are exact in `dtype`.
Tensor random_host(const Shape& s, float lo, float hi, engine::Generator& gen, DType dtype) {
  return engine::uniform(s, lo, hi, gen).to_dtype(dtype).to_dtype(DType::F32);
}

struct Problem {
  Dims d;
  Tensor q, k, v, dout;  // host f32, values exact in the device dtype
  Tensor doc_start;      // host i32 [B, T] of packed sequences, or undefined
  // The first key row i of batch entry b sees.
  int64_t first_key(int64_t b, int64_t i) const {
    return doc_start.defined() ? doc_start.data<int32_t>()[b * d.t + i] : 0;
  }
};

// doc_start for documents of the given lengths, cycled until they fill each row (batch
// entry b starts the cycle at its b-th length).
Tensor doc_layout(const Dims& d, const std::vector<int32_t>& lengths) {
  std::vector<int32_t> v;
  for (int64_t b = 0; b < d.b; ++b)
    for (int64_t t = 0, n = b, start = 0; t < d.t; ++t) {
      if (t - start == lengths[size_t(n) % lengths.size()]) start = t, ++n;
      v.push_back(int32_t(start));
    }
  return Tensor::from_ints(v, Shape{d.b, d.t});
}

Problem make_problem(const Dims& d, uint64_t seed, DType dtype) {
  engine::Generator gen(seed);
  Problem p{d, {}, {}, {}, {}, {}};
  p.q = random_host({d.b, d.t, d.hq, d.d}, -2.0f, 2.0f, gen, dtype);  // scores of order 1
  p.k = random_host({d.b, d.t, d.hkv, d.d}, -1.0f, 1.0f, gen, dtype);
  p.v = random_host({d.b, d.t, d.hkv, d.d}, -1.0f, 1.0f, gen, dtype);
  p.dout = random_host({d.b, d.t, d.hq, d.d}, -1.0f, 1.0f, gen, dtype);
  return p;
}

struct Results {
  std::vector<float> out, lse, dq, dk, dv;
};

Results cpu_reference(const Problem& p) {
  OpContext ctx;
  ctx.attrs.softmax_scale = 0.0f;
  Results r;
  std::vector<Tensor> in = {p.q, p.k, p.v};
  if (p.doc_start.defined()) in.push_back(p.doc_start);
  r.out = engine::cpu::attention_forward(ctx, in)[0].to_floats();
  r.lse = ctx.saved[4].to_floats();
  std::vector<Tensor> g = engine::cpu::attention_backward(ctx, {p.dout});
  r.dq = g[0].to_floats();
  r.dk = g[1].to_floats();
  r.dv = g[2].to_floats();
  return r;
}

// Forward and backward through the CUDA op, each into a NaN-poisoned pool; `ctx` keeps
// the saved tensors for further backward runs.
Results gpu_run(const Problem& p, DType dtype, OpContext& ctx) {
  auto dev = [&](const Tensor& t) { return t.to_dtype(dtype).to(Device::cuda()); };
  ctx.attrs.softmax_scale = 0.0f;
  const size_t bytes = 4 * size_t(p.q.numel()) * 4 + 4096;
  testing_support::poison_device_pool(bytes);
  Results r;
  std::vector<Tensor> in = {dev(p.q), dev(p.k), dev(p.v)};
  if (p.doc_start.defined()) in.push_back(p.doc_start.to(Device::cuda()));
  r.out = engine::cuda_ops::attention_forward(ctx, in)[0].to_floats();
  r.lse = ctx.saved[4].to_floats();
  testing_support::poison_device_pool(bytes);
  std::vector<Tensor> g = engine::cuda_ops::attention_backward(ctx, {dev(p.dout)});
  r.dq = g[0].to_floats();
  r.dk = g[1].to_floats();
  r.dv = g[2].to_floats();
  return r;
}

// Per-element bounds of the tensor-core path (header comment), computed in double.
struct Bounds {
  std::vector<double> out, lse, dq, dk, dv;
};

// `gpu_out`: the bf16 output the backward consumed (Delta = dO . O uses it); its actual
// difference from the exact O then enters Delta's error instead of the worst case.
Bounds fast_path_bounds(const Problem& p, const std::vector<float>& gpu_out) {
  const Dims& d = p.d;
  const int64_t group = d.hq / d.hkv, T = d.t, D = d.d;
  const double scale = 1.0 / std::sqrt(double(D));
  const std::vector<float> q = p.q.to_floats(), k = p.k.to_floats(), v = p.v.to_floats(),
                           go = p.dout.to_floats();
  auto qa = [&](int64_t b, int64_t i, int64_t h) { return ((b * T + i) * d.hq + h) * D; };
  auto ka = [&](int64_t b, int64_t j, int64_t g) { return ((b * T + j) * d.hkv + g) * D; };
  Bounds e;
  e.out.assign(q.size(), 0.0);
  e.dq.assign(q.size(), 0.0);
  e.dk.assign(k.size(), 0.0);
  e.dv.assign(v.size(), 0.0);
  e.lse.assign(size_t(d.b * d.hq * T), 0.0);
  const size_t tt = static_cast<size_t>(T * T), td = static_cast<size_t>(T * D),
               t1 = static_cast<size_t>(T);
  std::vector<double> S(tt), P(tt), dP(tt), edP(tt), O(td), eO(td), db(t1), delta(t1), edelta(t1);
  EXPECT_EQ(gpu_out.size(), q.size());
  const int64_t n_sum_k = group * T;  // dK, dV reduction length
  for (int64_t b = 0; b < d.b; ++b)
    for (int64_t h = 0; h < d.hq; ++h) {
      const int64_t g = h / group;
      for (int64_t i = 0; i < T; ++i) {
        const float *qi = &q[size_t(qa(b, i, h))], *gi = &go[size_t(qa(b, i, h))];
        double m = -INFINITY, smax = 0, eS = 0;
        const int64_t j0 = p.first_key(b, i);
        for (int64_t j = j0; j <= i; ++j) {
          const float *kj = &k[size_t(ka(b, j, g))], *vj = &v[size_t(ka(b, j, g))];
          double s = 0, sa = 0, dp = 0, dpa = 0;
          for (int64_t c = 0; c < D; ++c) {
            s += double(qi[c]) * kj[c];
            sa += std::fabs(double(qi[c]) * kj[c]);
            dp += double(gi[c]) * vj[c];
            dpa += std::fabs(double(gi[c]) * vj[c]);
          }
          S[size_t(i * T + j)] = scale * s;
          dP[size_t(i * T + j)] = dp;
          edP[size_t(i * T + j)] = D * kUAcc * dpa;
          m = std::max(m, scale * s);
          smax = std::max(smax, std::fabs(scale * s));
          eS = std::max(eS, scale * D * kUAcc * sa);
        }
        double l = 0;
        for (int64_t j = j0; j <= i; ++j) l += std::exp(S[size_t(i * T + j)] - m);
        const double lse = m + std::log(l);
        const double n_tiles = double(i / 64 + 1);  // (j0 > 0 visits fewer: an upper bound)
        const double dfwd = eS + kU32 * (2 * smax + 2 * std::fabs(m) + 4 + 2 * n_tiles);
        const double e_lse = dfwd + kU32 * (double(i + 1) + 2 * std::fabs(lse) + 4);
        e.lse[size_t((b * d.hq + h) * T + i)] = e_lse;
        db[size_t(i)] = eS + kU32 * (2 * smax + 2 * std::fabs(lse) + 4) + e_lse;
        for (int64_t c = 0; c < D; ++c) O[size_t(i * D + c)] = 0, eO[size_t(i * D + c)] = 0;
        for (int64_t j = j0; j <= i; ++j) {
          const double pij = std::exp(S[size_t(i * T + j)] - lse);
          P[size_t(i * T + j)] = pij;
          const float* vj = &v[size_t(ka(b, j, g))];
          for (int64_t c = 0; c < D; ++c) {
            O[size_t(i * D + c)] += pij * vj[c];
            eO[size_t(i * D + c)] += pij * std::fabs(double(vj[c]));  // A_id for now
          }
        }
        double dl = 0, dl_gpu = 0, dla = 0;
        for (int64_t c = 0; c < D; ++c) {
          const double a = eO[size_t(i * D + c)], o = O[size_t(i * D + c)];
          const double before = (kU + 2 * dfwd + double(i + 1) * kUAcc) * a + kU32 * std::fabs(o);
          e.out[size_t(qa(b, i, h) + c)] = before + kU * (std::fabs(o) + before);
          const double o_gpu = gpu_out[size_t(qa(b, i, h) + c)];
          dl += double(gi[c]) * o;
          dl_gpu += double(gi[c]) * o_gpu;
          dla += std::fabs(double(gi[c]) * o_gpu);
        }
        delta[size_t(i)] = dl;
        edelta[size_t(i)] = std::fabs(dl_gpu - dl) + D * kU32 * dla;
      }
      // Gradients: accumulate the error bounds of every product term.
      for (int64_t i = 0; i < T; ++i) {
        const float *qi = &q[size_t(qa(b, i, h))], *gi = &go[size_t(qa(b, i, h))];
        for (int64_t j = p.first_key(b, i); j <= i; ++j) {
          const size_t ij = size_t(i * T + j);
          const double pij = P[ij], ds = pij * (dP[ij] - delta[size_t(i)]);
          const double eds0 = db[size_t(i)] * std::fabs(ds) + pij * (edP[ij] + edelta[size_t(i)]);
          const double eds = eds0 + kU * (std::fabs(ds) + eds0);  // bf16 operand of dS K
          const double ep = (db[size_t(i)] + kU * (1 + db[size_t(i)])) * pij;
          const float* kj = &k[size_t(ka(b, j, g))];
          for (int64_t c = 0; c < D; ++c) {
            e.dq[size_t(qa(b, i, h) + c)] +=
                scale * (eds + double(T) * kUAcc * std::fabs(ds)) * std::fabs(double(kj[c]));
            e.dk[size_t(ka(b, j, g) + c)] +=
                scale * (eds + double(n_sum_k) * kUAcc * std::fabs(ds)) * std::fabs(double(qi[c]));
            e.dv[size_t(ka(b, j, g) + c)] +=
                (ep + double(n_sum_k) * kUAcc * pij) * std::fabs(double(gi[c]));
          }
        }
      }
    }
  return e;
}

// Adds the final roundings: bf16 of the GPU value (|ref| + e), the fp32 scale multiply
// before it, and f32 of the reference.
void finish(std::vector<double>& e, const std::vector<float>& ref, bool bf16_output) {
  for (size_t i = 0; i < e.size(); ++i) {
    const double r = std::fabs(double(ref[i]));
    e[i] += (bf16_output ? kU * (r + e[i]) : 0.0) + 2 * kU32 * r + 1e-30;
  }
}

using testing_support::bitwise_equal;
using testing_support::expect_within;

// The op harness's tolerance (fallback path: fp32 math, one output rounding).
std::vector<double> harness_tolerance(const std::vector<float>& ref, DType dtype, int64_t k) {
  return testing_support::relative_tolerance(ref, testing_support::unit_roundoff(dtype),
                                             2.0 * double(k) * kU32);
}

#endif  // ENGINE_WITH_CUDA

class AttentionCudaFast : public testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

#if ENGINE_WITH_CUDA
// The tensor-core path on `p` against the CPU reference within the derived bounds, and
// a second backward from the same saved tensors bit for bit (with every split of the
// GQA group in `splits`, through the launcher).
void check_fast_path(const Problem& p, std::initializer_list<int> splits = {}) {
  const Dims& d = p.d;
  const Results ref = cpu_reference(p);
  OpContext ctx;
  const Results got = gpu_run(p, DType::BF16, ctx);
  Bounds tol = fast_path_bounds(p, got.out);
  finish(tol.out, ref.out, true);
  finish(tol.lse, ref.lse, false);
  finish(tol.dq, ref.dq, true);
  finish(tol.dk, ref.dk, true);
  finish(tol.dv, ref.dv, true);
  const std::string at = d.str() + (p.doc_start.defined() ? " packed" : "");
  expect_within(got.out, ref.out, tol.out, at + " out");
  expect_within(got.lse, ref.lse, tol.lse, at + " lse");
  expect_within(got.dq, ref.dq, tol.dq, at + " dq");
  expect_within(got.dk, ref.dk, tol.dk, at + " dk");
  expect_within(got.dv, ref.dv, tol.dv, at + " dv");

  // Determinism: a second backward from the same saved tensors, bit for bit.
  testing_support::poison_device_pool(4 * size_t(p.q.numel()) * 4 + 4096);
  std::vector<Tensor> again = engine::cuda_ops::attention_backward(
      ctx, {p.dout.to_dtype(DType::BF16).to(Device::cuda())});
  EXPECT_TRUE(bitwise_equal(again[0].to_floats(), got.dq)) << at << " dq differs between runs";
  EXPECT_TRUE(bitwise_equal(again[1].to_floats(), got.dk)) << at << " dk differs between runs";
  EXPECT_TRUE(bitwise_equal(again[2].to_floats(), got.dv)) << at << " dv differs between runs";

  const Tensor &q = ctx.saved[0], &k = ctx.saved[1], &v = ctx.saved[2], &out = ctx.saved[3],
               &lse = ctx.saved[4];
  const Tensor go = p.dout.to_dtype(DType::BF16).to(Device::cuda());
  const Tensor doc = p.doc_start.defined() ? p.doc_start.to(Device::cuda()) : Tensor();
  const kmath::AttentionDims s{d.b, d.t, d.hq, d.hkv, d.d};
  for (int split : splits) {
    const size_t ws = kernels::attention_backward_workspace_bytes(kernels::ElemType::BF16, s, split);
    Tensor w = Tensor::empty({int64_t(ws / 4 + 1)}, DType::F32, Device::cuda());
    Tensor dq = Tensor::empty(q.shape(), DType::BF16, Device::cuda());
    Tensor dk = Tensor::empty(k.shape(), DType::BF16, Device::cuda());
    Tensor dv = Tensor::empty(v.shape(), DType::BF16, Device::cuda());
    kernels::attention_backward(dq.raw_data(), dk.raw_data(), dv.raw_data(), q.raw_data(),
                                k.raw_data(), v.raw_data(), out.raw_data(), lse.data<float>(),
                                go.raw_data(), kernels::ElemType::BF16, s,
                                float(1.0 / std::sqrt(double(d.d))), w.raw_data(), w.nbytes(),
                                engine::cuda::current_stream(), split,
                                doc.defined() ? doc.data<int32_t>() : nullptr);
    const std::string at_split = at + " splits " + std::to_string(split);
    expect_within(dq.to_floats(), ref.dq, tol.dq, at_split + " dq");
    expect_within(dk.to_floats(), ref.dk, tol.dk, at_split + " dk");
    expect_within(dv.to_floats(), ref.dv, tol.dv, at_split + " dv");
  }
}
#endif

TEST_P(AttentionCudaFast, MatchesCpuWithinDerivedBoundsAndIsDeterministic) {
  SKIP_WITHOUT_GPU();
#if ENGINE_WITH_CUDA
  auto [head_dim, seq, ratio] = GetParam();
  const int64_t hkv = 2, batch = seq <= 17 ? 2 : 1;
  const Dims d{batch, seq, hkv * ratio, hkv, head_dim};
  ASSERT_TRUE(kernels::attention_fast_path(kernels::ElemType::BF16,
                                           {d.b, d.t, d.hq, d.hkv, d.d}));
  check_fast_path(make_problem(d, 1000 + uint64_t(seq * 7 + ratio * 3 + head_dim), DType::BF16));
#endif
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionCudaFast,
    testing::Combine(testing::Values(int64_t(64), int64_t(128)),
                     testing::Values(int64_t(1), int64_t(17), int64_t(128), int64_t(300)),
                     testing::Values(int64_t(1), int64_t(4), int64_t(8))),
    [](const testing::TestParamInfo<std::tuple<int64_t, int64_t, int64_t>>& param_info) {
      std::ostringstream name;  // (not operator+: GCC 12 raises a false -Wrestrict there)
      name << "D" << std::get<0>(param_info.param) << "_T" << std::get<1>(param_info.param)
           << "_ratio" << std::get<2>(param_info.param);
      return name.str();
    });

// Packed sequences on the tensor-core path. Document lengths (cycled, shifted by one
// in the second batch entry): one-token documents, starts on and off the 64- and 128-row
// tile edges, documents longer than a tile, and many short ones; the GQA group split.
class AttentionCudaFastPacked
    : public testing::TestWithParam<std::tuple<int64_t, std::vector<int32_t>>> {};

TEST_P(AttentionCudaFastPacked, MatchesCpuWithinDerivedBounds) {
  SKIP_WITHOUT_GPU();
#if ENGINE_WITH_CUDA
  const auto& [head_dim, lengths] = GetParam();
  const Dims d{2, 300, 8, 2, head_dim};
  Problem p = make_problem(d, 31 + uint64_t(head_dim + lengths.size()), DType::BF16);
  p.doc_start = doc_layout(d, lengths);
  check_fast_path(p, {1, 4});
#endif
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, AttentionCudaFastPacked,
    testing::Combine(testing::Values(int64_t(64), int64_t(128)),
                     testing::Values(std::vector<int32_t>{1, 63, 2, 130, 40},
                                     std::vector<int32_t>{128, 64, 1},
                                     std::vector<int32_t>{17, 5, 29},
                                     std::vector<int32_t>{127, 1, 95})),
    [](const testing::TestParamInfo<std::tuple<int64_t, std::vector<int32_t>>>& param_info) {
      std::ostringstream name;
      name << "D" << std::get<0>(param_info.param) << "_docs";
      for (int32_t n : std::get<1>(param_info.param)) name << "_" << n;
      return name.str();
    });

// The fallback kernels with packed sequences: f32 at D = 64 (the op harness covers small D).
TEST(AttentionCuda, FallbackPathMasksDocuments) {
  SKIP_WITHOUT_GPU();
#if ENGINE_WITH_CUDA
  const Dims d{2, 37, 4, 2, 64};
  Problem p = make_problem(d, 91, DType::F32);
  p.doc_start = doc_layout(d, {1, 9, 16, 3});
  const Results ref = cpu_reference(p);
  OpContext ctx;
  const Results got = gpu_run(p, DType::F32, ctx);
  const int64_t k = d.t * d.d;
  expect_within(got.out, ref.out, harness_tolerance(ref.out, DType::F32, k), "packed out");
  expect_within(got.lse, ref.lse, harness_tolerance(ref.lse, DType::F32, k), "packed lse");
  expect_within(got.dq, ref.dq, harness_tolerance(ref.dq, DType::F32, k), "packed dq");
  expect_within(got.dk, ref.dk, harness_tolerance(ref.dk, DType::F32, 4 * k), "packed dk");
  expect_within(got.dv, ref.dv, harness_tolerance(ref.dv, DType::F32, 4 * k), "packed dv");
#endif
}

// Every split of the GQA group in the dK/dV kernel (1: direct bf16 store; more: fp32
// partials summed in split order) is within the same bounds and deterministic.
TEST(AttentionCuda, EveryGroupSplitMatchesCpu) {
  SKIP_WITHOUT_GPU();
#if ENGINE_WITH_CUDA
  const Dims d{1, 300, 16, 2, 128};
  const Problem p = make_problem(d, 77, DType::BF16);
  const Results ref = cpu_reference(p);
  OpContext ctx;
  const Results first = gpu_run(p, DType::BF16, ctx);
  Bounds tol = fast_path_bounds(p, first.out);
  finish(tol.dq, ref.dq, true);
  finish(tol.dk, ref.dk, true);
  finish(tol.dv, ref.dv, true);
  const Tensor &q = ctx.saved[0], &k = ctx.saved[1], &v = ctx.saved[2], &out = ctx.saved[3],
               &lse = ctx.saved[4];
  const Tensor go = p.dout.to_dtype(DType::BF16).to(Device::cuda());
  const kmath::AttentionDims s{d.b, d.t, d.hq, d.hkv, d.d};
  for (int splits : {1, 2, 4, 8}) {
    const size_t ws = kernels::attention_backward_workspace_bytes(kernels::ElemType::BF16, s, splits);
    std::vector<float> first_dk;
    for (int run = 0; run < 2; ++run) {
      testing_support::poison_device_pool(8 * size_t(q.numel()) * 4);
      Tensor w = Tensor::empty({int64_t(ws / 4 + 1)}, DType::F32, Device::cuda());
      Tensor dq = Tensor::empty(q.shape(), DType::BF16, Device::cuda());
      Tensor dk = Tensor::empty(k.shape(), DType::BF16, Device::cuda());
      Tensor dv = Tensor::empty(v.shape(), DType::BF16, Device::cuda());
      kernels::attention_backward(dq.raw_data(), dk.raw_data(), dv.raw_data(), q.raw_data(),
                                  k.raw_data(), v.raw_data(), out.raw_data(), lse.data<float>(),
                                  go.raw_data(), kernels::ElemType::BF16, s,
                                  float(1.0 / std::sqrt(128.0)), w.raw_data(), w.nbytes(),
                                  engine::cuda::current_stream(), splits);
      const std::string at = "splits " + std::to_string(splits);
      expect_within(dq.to_floats(), ref.dq, tol.dq, at + " dq");
      expect_within(dk.to_floats(), ref.dk, tol.dk, at + " dk");
      expect_within(dv.to_floats(), ref.dv, tol.dv, at + " dv");
      if (run == 0)
        first_dk = dk.to_floats();
      else
        EXPECT_TRUE(bitwise_equal(first_dk, dk.to_floats())) << at << " dk differs between runs";
    }
  }
#endif
}

// The fallback kernels beyond the op harness's small head dims: f32 (D = 64) and an odd
// bf16 head dim (D = 96); fp32 math, tolerance as in the op harness (K = T D).
TEST(AttentionCuda, FallbackPathMatchesCpu) {
  SKIP_WITHOUT_GPU();
#if ENGINE_WITH_CUDA
  for (auto [dtype, dim] : {std::pair{DType::F32, int64_t(64)}, std::pair{DType::BF16, int64_t(96)}}) {
    const Dims d{2, 37, 8, 2, dim};
    const Problem p = make_problem(d, 5 + uint64_t(dim), dtype);
    const Results ref = cpu_reference(p);
    OpContext ctx;
    const Results got = gpu_run(p, dtype, ctx);
    const std::string at = d.str() + " " + engine::dtype_name(dtype);
    const int64_t k = d.t * d.d;
    expect_within(got.out, ref.out, harness_tolerance(ref.out, dtype, k), at + " out");
    expect_within(got.lse, ref.lse, harness_tolerance(ref.lse, DType::F32, k), at + " lse");
    expect_within(got.dq, ref.dq, harness_tolerance(ref.dq, dtype, k), at + " dq");
    expect_within(got.dk, ref.dk, harness_tolerance(ref.dk, dtype, 4 * k), at + " dk");
    expect_within(got.dv, ref.dv, harness_tolerance(ref.dv, dtype, 4 * k), at + " dv");
  }
#endif
}

TEST(AttentionCuda, RejectsBadShapes) {
  SKIP_WITHOUT_GPU();
#if ENGINE_WITH_CUDA
  OpContext ctx;
  auto dev = [](const Shape& s) { return Tensor::zeros(s, DType::BF16, Device::cuda()); };
  EXPECT_THROW(engine::cuda_ops::attention_forward(
                   ctx, {dev({1, 4, 3, 64}), dev({1, 4, 2, 64}), dev({1, 4, 2, 64})}),
               engine::Error);  // 3 query heads over 2 KV heads
  EXPECT_THROW(engine::cuda_ops::attention_forward(
                   ctx, {dev({1, 4, 2, 512}), dev({1, 4, 2, 512}), dev({1, 4, 2, 512})}),
               engine::Error);  // head dim beyond the fallback's 256
  EXPECT_THROW(engine::cuda_ops::attention_forward(
                   ctx, {dev({1, 4, 2, 64}), Tensor::zeros({1, 4, 2, 64}, DType::F32, Device::cuda()),
                         dev({1, 4, 2, 64})}),
               engine::Error);  // mixed dtypes
#endif
}

}  // namespace
