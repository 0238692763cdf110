// CUDA implementation of the fused lm_head cross-entropy (op lm_head_cross_entropy;
// semantics and math in engine/cpu/lm_head_loss.cpp), f32 or bf16 h and W:
//
//   loss = (1 / C) sum over counted n of lse(h_n W^T) - (h_n W^T)[t_n]
//   dh = D W,  dW = D^T h,  D = (g / C) (softmax(h W^T) - onehot(t)) (0 on ignored rows)
//
// The [N, V] logits never exist. The op walks them in tiles of `rows` tokens by
// `vocab_block` vocabulary entries (kernels::plan_lm_head_tiling: all scratch within 1/24
// of the materialised logits and 256 MiB), row chunks outer, vocab blocks inner:
//   forward   per tile: cuBLASLt GEMM h_chunk @ W_block^T -> fp32 tile buffer;
//             ce_tile_stats folds it into the rows' running (max, sum) and, after the
//             last block, writes lse and the row losses. Then ce_mean_loss sums the row
//             losses in a fixed order. Saved: h, W, targets (device), lse [N] fp32, and
//             the targets on the host (validation and the count C are done once there).
//   backward  per tile: the same GEMM recomputes the logits; ce_tile_grad turns them
//             into D (fp32 in place, or the bf16 split hi + lo when h, W are bf16, so
//             that the bf16 GEMM operands carry D to 2^-16); then
//               dh_chunk (+)= D_tile @ W_block          fp32, summed over vocab blocks
//               dW_block  += D_tile^T @ h_chunk         fp32, summed over row chunks
//             (bf16: hi and lo products both, into fp32 accumulators, then rounded
//             once). dW is computed only when W needs a gradient. Every sum runs in a
//             fixed order with beta = 1 GEMMs: no atomics, deterministic.
// Row chunks without a counted row are skipped (their loss and gradient are 0).
// The host copy of the targets synchronises the stream once per forward.
#include <algorithm>

#include "engine/cuda/cublaslt.h"
#include "engine/cuda/op_helpers.h"
#include "engine/cuda/ops.h"
#include "engine/cuda/runtime.h"
#include "engine/nvtx.h"
#include "kernels/cross_entropy.h"
#include "kernels/cross_entropy_tiling.h"
#include "kernels/elementwise.h"
#include "kernels/math/cross_entropy.h"

namespace engine::cuda_ops {

namespace {

constexpr const char* kOp = "lm_head_cross_entropy";

struct Problem {
  int64_t n, h, v;
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
  Problem p{h.dim(0), h.dim(1), w.dim(0), h.dtype(), false, false, {}};
  p.want_dh = ctx.wants_grad(0);
  p.want_dw = ctx.wants_grad(1);
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

// The tiles of one row chunk [r0, r0 + rows), vocab blocks in order.
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

std::vector<Tensor> lm_head_cross_entropy_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &h = in[0], &w = in[1], &targets = in[2];
  const Problem p = make_problem(ctx, h, w, targets);
  const int ignore = ctx.attrs.ignore_index;
  Tensor host_targets = targets.to(Device::cpu());  // synchronises the stream
  const std::vector<int32_t> t = host_targets.to_ints();
  int64_t count = 0;
  for (int64_t i = 0; i < p.n; ++i) {
    ENGINE_CHECK(!kmath::ce_counted(t[i], ignore) || (t[i] >= 0 && t[i] < p.v), kOp, ": target ",
                 t[i], " at row ", i, " is outside [0, ", p.v, ") and is not ignore_index ", ignore);
    count += kmath::ce_counted(t[i], ignore);
  }
  cudaStream_t stream = cuda::current_stream();
  const Device dev = h.device();
  Tensor loss = Tensor::empty(Shape{}, p.type, dev);
  Tensor lse = Tensor::zeros(Shape{p.n}, DType::F32, dev);       // saved; 0 on ignored rows
  Tensor row_loss = Tensor::zeros(Shape{p.n}, DType::F32, dev);  // 0 on ignored rows
  if (count > 0) {
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
  }
  kernels::ce_mean_loss(loss.raw_data(), cuda_ops::elem_type(p.type), row_loss.data<float>(), p.n,
                        count, stream);
  ctx.save({h, w, targets, lse, host_targets});
  return {loss};
}

std::vector<Tensor> lm_head_cross_entropy_backward(OpContext& ctx,
                                                   const std::vector<Tensor>& grad_out) {
  NvtxRange range("lm_head_cross_entropy_backward");
  const Tensor &h = ctx.saved[0], &w = ctx.saved[1], &targets = ctx.saved[2], &lse = ctx.saved[3];
  const std::vector<int32_t> t = ctx.saved[4].to_ints();
  const Problem p = make_problem(ctx, h, w, targets);
  const int ignore = ctx.attrs.ignore_index;
  int64_t count = 0;
  for (int32_t x : t) count += kmath::ce_counted(x, ignore);
  const Device dev = h.device();
  cudaStream_t stream = cuda::current_stream();
  Tensor dh = p.want_dh ? Tensor::empty(h.shape(), p.type, dev) : Tensor();
  Tensor dw = p.want_dw ? Tensor::empty(w.shape(), p.type, dev) : Tensor();
  const Tensor& g = grad_out[0];
  if (count == 0 || !g.defined() || !(p.want_dh || p.want_dw)) {
    if (dh.defined()) dh.fill(0.0f);
    if (dw.defined()) dw.fill(0.0f);
    return {dh, dw, Tensor()};
  }
  ENGINE_CHECK(g.numel() == 1 && g.device() == dev, kOp, ": gradient ", g.str(),
               " is not a scalar on ", dev.str());
  const Tensor g32 = g.dtype() == DType::F32 ? g : g.to_dtype(DType::F32);

  const bool split = p.split();
  const DType d_type = split ? DType::BF16 : DType::F32;  // the GEMM operand type of D
  const int64_t tile_elements = p.tile.rows * p.tile.vocab_block;
  Tensor logits = Tensor::empty(Shape{tile_elements}, DType::F32, dev);
  // hi at element 0, lo at a 256-byte boundary after it (aligned GEMM operands).
  const int64_t lo_offset = (tile_elements + 127) / 128 * 128;
  Tensor parts = split ? Tensor::empty(Shape{lo_offset + tile_elements}, DType::BF16, dev) : Tensor();
  // fp32 sums: bf16 dh rows of one chunk; dW whole (f32: the outputs themselves).
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
      kernels::ce_tile_grad(z, hi, lo, rows, cols, v0, at<const int32_t>(targets, r0), ignore,
                            at<const float>(lse, r0), g32.data<float>(), count, stream);
      // The operands carrying D: the fp32 tile, or its bf16 hi and lo parts.
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
