// CUDA implementation of the fused lm_head cross-entropy (op lm_head_cross_entropy;
// semantics and math in engine/cpu/lm_head_loss.cpp), f32 or bf16 h and W:
//
//   loss = (1 / C) sum over counted n of lse(h_n W^T) - (h_n W^T)[t_n]
//   dh = D W,  dW = D^T h,  D = (g / C) (softmax(h W^T) - onehot(t)) (0 on ignored rows)
//
// The [N, V] logits never exist. The op walks them in tiles of `rows` tokens by
// `vocab_block` vocabulary entries (engine/cuda/lm_head_tiles.h; kernels::plan_lm_head_tiling:
// all scratch within 1/24 of the materialised logits and 256 MiB), row chunks outer, vocab
// blocks inner:
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
#include "engine/cuda/lm_head_tiles.h"
#include "engine/cuda/op_helpers.h"
#include "engine/cuda/ops.h"
#include "engine/cuda/runtime.h"
#include "engine/nvtx.h"
#include "kernels/cross_entropy.h"
#include "kernels/math/cross_entropy.h"

namespace engine::cuda_ops {

namespace {

constexpr const char* kOp = "lm_head_cross_entropy";

LmHeadProblem make_problem(const OpContext& ctx, const Tensor& h, const Tensor& w, const Tensor& targets) {
  return make_lm_head_problem(kOp, h, w, targets, ctx.wants_grad(0), ctx.wants_grad(1), ctx.attrs.chunk_rows);
}

int64_t counted_rows(const std::vector<int32_t>& t, int ignore) {
  int64_t count = 0;
  for (int32_t x : t) count += kmath::ce_counted(x, ignore);
  return count;
}

}  // namespace

std::vector<Tensor> lm_head_cross_entropy_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &h = in[0], &w = in[1], &targets = in[2];
  const LmHeadProblem p = make_problem(ctx, h, w, targets);
  const int ignore = ctx.attrs.ignore_index;
  Tensor host_targets = targets.to(Device::cpu());  // synchronises the stream
  const std::vector<int32_t> t = checked_targets(kOp, host_targets, p.v, ignore);
  const int64_t count = counted_rows(t, ignore);
  cudaStream_t stream = cuda::current_stream();
  const Device dev = h.device();
  Tensor loss = Tensor::empty(Shape{}, p.type, dev);
  Tensor lse = Tensor::zeros(Shape{p.n}, DType::F32, dev);       // saved; 0 on ignored rows
  Tensor row_loss = Tensor::zeros(Shape{p.n}, DType::F32, dev);  // 0 on ignored rows
  if (count > 0) {
    Tensor state = Tensor::empty(Shape{3, p.n}, DType::F32, dev);  // running max, sum; z_t
    for_each_logit_tile(p, h, w, t, ignore, [&](const LogitTile& z) {
      kernels::ce_tile_stats(z.z, z.rows, z.cols, z.v0, z.first, z.last, element<const int32_t>(targets, z.r0),
                             ignore, element<float>(state, z.r0), element<float>(state, p.n + z.r0),
                             element<float>(state, 2 * p.n + z.r0), element<float>(lse, z.r0),
                             element<float>(row_loss, z.r0), stream);
    });
  }
  kernels::ce_mean_loss(loss.raw_data(), elem_type(p.type), row_loss.data<float>(), p.n, count, stream);
  ctx.save({h, w, targets, lse, host_targets});
  return {loss};
}

std::vector<Tensor> lm_head_cross_entropy_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  NvtxRange range("lm_head_cross_entropy_backward");
  const Tensor &h = ctx.saved[0], &w = ctx.saved[1], &targets = ctx.saved[2], &lse = ctx.saved[3];
  const std::vector<int32_t> t = ctx.saved[4].to_ints();
  const LmHeadProblem p = make_problem(ctx, h, w, targets);
  const int ignore = ctx.attrs.ignore_index;
  const int64_t count = counted_rows(t, ignore);
  const Tensor& g = grad_out[0];
  if (count == 0 || !g.defined() || !(p.want_dh || p.want_dw)) return lm_head_zero_grads(p, h, w);
  ENGINE_CHECK(g.numel() == 1 && g.device() == h.device(), kOp, ": gradient ", g.str(), " is not a scalar on ",
               h.device().str());
  cudaStream_t stream = cuda::current_stream();
  return lm_head_tiled_backward(p, h, w, t, ignore, g, [&](const LogitTile& z, uint16_t* hi, uint16_t* lo,
                                                           const float* g32) {
    kernels::ce_tile_grad(z.z, hi, lo, z.rows, z.cols, z.v0, element<const int32_t>(targets, z.r0), ignore,
                          element<const float>(lse, z.r0), g32, count, stream);
  });
}

}  // namespace engine::cuda_ops
