// CUDA implementation of the per-sequence log-probabilities (op lm_head_logprobs;
// semantics and math in engine/cpu/lm_head_logprobs.cpp), f32 or bf16 h and W, f32 out:
//
//   out_g = sum (or mean) over counted rows n of sequence g of log softmax(h_n W^T)[t_n]
//   dh = D W,  dW = D^T h,  D_n = -c_n (softmax(h_n W^T) - onehot(t_n)),  c_n = dout_g (/ C_g)
//
// The [N, V] logits never exist: the tiling, the GEMMs and the per-row softmax statistics
// are lm_head_cross_entropy's (engine/cuda/lm_head_loss.cpp, kernels::plan_lm_head_tiling,
// kernels::ce_tile_stats); only the reduction (kernels::logprob_segment_sums, per
// sequence instead of one mean) and the gradient's per-row coefficient
// (kernels::logprob_tile_grad) differ. Every sum runs in a fixed order: deterministic.
// Saved: h, W, targets, lse [N] and the counted rows per sequence [G] (fp32, device),
// and the targets on the host (validated there once; the copy synchronises the stream).
#include <algorithm>

#include "engine/cuda/cublaslt.h"
#include "engine/cuda/op_helpers.h"
#include "engine/cuda/ops.h"
#include "engine/cuda/runtime.h"
#include "engine/nvtx.h"
#include "kernels/cross_entropy.h"
#include "kernels/cross_entropy_tiling.h"
#include "kernels/elementwise.h"
#include "kernels/logprobs.h"
#include "kernels/math/cross_entropy.h"

namespace engine::cuda_ops {

namespace {

constexpr const char* kOp = "lm_head_logprobs";

struct Problem {
  int64_t n, h, v, seg_rows, segments;
  DType type;  // of h and W (f32 or bf16)
  bool want_dh, want_dw;
  kernels::LmHeadTiling tile;
  bool split() const { return type == DType::BF16 && (want_dh || want_dw); }
};

Problem make_problem(const OpContext& ctx, const Tensor& h, const Tensor& w, const Tensor& targets) {
  for (const Tensor* t : {&h, &w, &targets})
    ENGINE_CHECK(t->device().is_cuda(), kOp, ": inputs must be on a CUDA device, got ", t->str());
  ENGINE_CHECK(h.dtype() == w.dtype() && (h.dtype() == DType::F32 || h.dtype() == DType::BF16),
               kOp, ": h ", h.str(), " and weight ", w.str(), " must both be f32 or both bf16");
  ENGINE_CHECK(targets.dtype() == DType::I32, kOp, ": targets must be i32, got ", targets.str());
  ENGINE_CHECK(h.rank() == 2 && w.rank() == 2 && w.dim(1) == h.dim(1), kOp, ": h ",
               h.shape().str(), " and weight ", w.shape().str(), " are not [N, H] and [V, H]");
  ENGINE_CHECK(targets.rank() == 1 && targets.dim(0) == h.dim(0), kOp, ": targets ",
               targets.shape().str(), " do not match h ", h.shape().str());
  ENGINE_CHECK(w.dim(0) > 0, kOp, ": empty vocabulary");
  const int64_t n = h.dim(0);
  const int64_t r = ctx.attrs.segment_rows > 0 ? ctx.attrs.segment_rows : n;
  ENGINE_CHECK(n > 0 && n % r == 0, kOp, ": ", n, " rows are not whole sequences of ", r);
  Problem p{n, h.dim(1), w.dim(0), r, n / r, h.dtype(), ctx.wants_grad(0), ctx.wants_grad(1), {}};
  // The same plan in forward and backward: the recomputed logits are the same GEMMs.
  p.tile = kernels::plan_lm_head_tiling(p.n, p.v, p.h, dtype_bits(p.type) / 8, p.split(),
                                      p.split() && p.want_dh, ctx.attrs.chunk_rows);
  return p;
}

// Element `i` of a tensor's storage, as a typed or untyped device pointer.
template <class T = char>
T* at(const Tensor& t, int64_t i) {
  return reinterpret_cast<T*>(static_cast<char*>(t.raw_data()) +
                              i * static_cast<int64_t>(dtype_bits(t.dtype()) / 8));
}

template <class Fn>
void for_each_block(const Problem& p, Fn&& fn) {
  for (int64_t v0 = 0; v0 < p.v; v0 += p.tile.vocab_block)
    fn(v0, std::min(p.tile.vocab_block, p.v - v0), v0 == 0, v0 + p.tile.vocab_block >= p.v);
}

bool chunk_counted(const std::vector<int32_t>& t, int64_t r0, int64_t rows, int ignore) {
  for (int64_t i = r0; i < r0 + rows; ++i)
    if (kmath::ce_counted(t[i], ignore)) return true;
  return false;
}

// logits [rows, cols] fp32 = h[r0 .. r0 + rows) @ W[v0 .. v0 + cols)^T.
void tile_logits(const Problem& p, const Tensor& h, const Tensor& w, int64_t r0, int64_t rows,
                 int64_t v0, int64_t cols, float* logits) {
  cuda::gemm(false, true, rows, cols, p.h, 1.0f, at(h, r0 * p.h), p.type, 0, at(w, v0 * p.h),
             p.type, 0, 0.0f, logits, DType::F32, 0, 1, cuda::current_stream());
}

}  // namespace

std::vector<Tensor> lm_head_logprobs_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &h = in[0], &w = in[1], &targets = in[2];
  const Problem p = make_problem(ctx, h, w, targets);
  const int ignore = ctx.attrs.ignore_index;
  Tensor host_targets = targets.to(Device::cpu());  // synchronises the stream
  const std::vector<int32_t> t = host_targets.to_ints();
  for (int64_t i = 0; i < p.n; ++i)
    ENGINE_CHECK(!kmath::ce_counted(t[i], ignore) || (t[i] >= 0 && t[i] < p.v), kOp, ": target ",
                 t[i], " at row ", i, " is outside [0, ", p.v, ") and is not ignore_index ", ignore);
  cudaStream_t stream = cuda::current_stream();
  const Device dev = h.device();
  Tensor out = Tensor::empty(Shape{p.segments}, DType::F32, dev);
  Tensor counts = Tensor::empty(Shape{p.segments}, DType::F32, dev);
  Tensor lse = Tensor::zeros(Shape{p.n}, DType::F32, dev);       // 0 on ignored rows
  Tensor row_loss = Tensor::zeros(Shape{p.n}, DType::F32, dev);  // -log p(t_n); 0 on ignored rows
  Tensor state = Tensor::empty(Shape{3, p.n}, DType::F32, dev);  // running max, sum; z_t
  Tensor logits = Tensor::empty(Shape{p.tile.rows * p.tile.vocab_block}, DType::F32, dev);
  for (int64_t r0 = 0; r0 < p.n; r0 += p.tile.rows) {
    const int64_t rows = std::min(p.tile.rows, p.n - r0);
    if (!chunk_counted(t, r0, rows, ignore)) continue;
    for_each_block(p, [&](int64_t v0, int64_t cols, bool first, bool last) {
      tile_logits(p, h, w, r0, rows, v0, cols, logits.data<float>());
      kernels::ce_tile_stats(logits.data<float>(), rows, cols, v0, first, last,
                             at<const int32_t>(targets, r0), ignore, at<float>(state, r0),
                             at<float>(state, p.n + r0), at<float>(state, 2 * p.n + r0),
                             at<float>(lse, r0), at<float>(row_loss, r0), stream);
    });
  }
  kernels::logprob_segment_sums(out.data<float>(), counts.data<float>(), row_loss.data<float>(),
                                targets.data<int32_t>(), ignore, p.segments, p.seg_rows,
                                ctx.attrs.segment_mean, stream);
  ctx.save({h, w, targets, lse, counts, host_targets});
  return {out};
}

std::vector<Tensor> lm_head_logprobs_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  NvtxRange range("lm_head_logprobs_backward");
  const Tensor &h = ctx.saved[0], &w = ctx.saved[1], &targets = ctx.saved[2], &lse = ctx.saved[3],
               &counts = ctx.saved[4];
  const std::vector<int32_t> t = ctx.saved[5].to_ints();
  const Problem p = make_problem(ctx, h, w, targets);
  const int ignore = ctx.attrs.ignore_index;
  const Device dev = h.device();
  cudaStream_t stream = cuda::current_stream();
  Tensor dh = p.want_dh ? Tensor::empty(h.shape(), p.type, dev) : Tensor();
  Tensor dw = p.want_dw ? Tensor::empty(w.shape(), p.type, dev) : Tensor();
  const Tensor& g = grad_out[0];
  if (!g.defined() || !(p.want_dh || p.want_dw)) {
    if (dh.defined()) dh.fill(0.0f);
    if (dw.defined()) dw.fill(0.0f);
    return {dh, dw, Tensor()};
  }
  ENGINE_CHECK(g.numel() == p.segments && g.device() == dev, kOp, ": gradient ", g.str(),
               " is not [", p.segments, "] on ", dev.str());
  const Tensor g32 = g.dtype() == DType::F32 ? g : g.to_dtype(DType::F32);

  const bool split = p.split();
  const DType d_type = split ? DType::BF16 : DType::F32;  // the GEMM operand type of D
  const int64_t tile_elements = p.tile.rows * p.tile.vocab_block;
  Tensor logits = Tensor::empty(Shape{tile_elements}, DType::F32, dev);
  const int64_t lo_offset = (tile_elements + 127) / 128 * 128;  // 256-byte aligned lo part
  Tensor parts = split ? Tensor::empty(Shape{lo_offset + tile_elements}, DType::BF16, dev) : Tensor();
  Tensor dh_acc = split && p.want_dh ? Tensor::empty(Shape{p.tile.rows, p.h}, DType::F32, dev) : dh;
  Tensor dw_acc = split && p.want_dw ? Tensor::empty(w.shape(), DType::F32, dev) : dw;
  if (dw_acc.defined()) dw_acc.fill(0.0f);

  for (int64_t r0 = 0; r0 < p.n; r0 += p.tile.rows) {
    const int64_t rows = std::min(p.tile.rows, p.n - r0);
    if (!chunk_counted(t, r0, rows, ignore)) {
      if (p.want_dh)
        kernels::fill(at(dh, r0 * p.h), cuda_ops::elem_type(p.type), 0.0f, rows * p.h, stream);
      continue;
    }
    float* dh_rows = !p.want_dh ? nullptr : split ? dh_acc.data<float>() : at<float>(dh, r0 * p.h);
    for_each_block(p, [&](int64_t v0, int64_t cols, bool first, bool) {
      float* z = logits.data<float>();
      tile_logits(p, h, w, r0, rows, v0, cols, z);
      uint16_t* hi = split ? at<uint16_t>(parts, 0) : nullptr;
      uint16_t* lo = split ? at<uint16_t>(parts, lo_offset) : nullptr;
      kernels::logprob_tile_grad(z, hi, lo, rows, cols, v0, r0, at<const int32_t>(targets, r0),
                                 ignore, at<const float>(lse, r0), g32.data<float>(),
                                 counts.data<float>(), p.seg_rows, ctx.attrs.segment_mean, stream);
      const void* d_parts[2] = {split ? static_cast<const void*>(hi) : z, lo};
      const int num_parts = split ? 2 : 1;
      for (int k = 0; k < num_parts; ++k) {
        if (p.want_dh)  // dh_rows [rows, H] (+)= D [rows, cols] @ W_block [cols, H]
          cuda::gemm(false, false, rows, p.h, cols, 1.0f, d_parts[k], d_type, 0, at(w, v0 * p.h),
                     p.type, 0, first && k == 0 ? 0.0f : 1.0f, dh_rows, DType::F32, 0, 1, stream);
        if (p.want_dw)  // dW_block [cols, H] += D^T [cols, rows] @ h_chunk [rows, H]
          cuda::gemm(true, false, cols, p.h, rows, 1.0f, d_parts[k], d_type, 0, at(h, r0 * p.h),
                     p.type, 0, 1.0f, at<float>(dw_acc, v0 * p.h), DType::F32, 0, 1, stream);
      }
    });
    if (split && p.want_dh)
      kernels::convert(at(dh, r0 * p.h), kernels::ElemType::BF16, dh_acc.data<float>(),
                       kernels::ElemType::F32, rows * p.h, stream);
  }
  if (split && p.want_dw) cuda::convert(dw, dw_acc);
  return {dh, dw, Tensor()};
}

}  // namespace engine::cuda_ops
