// CUDA implementation of the per-sequence log-probabilities (op lm_head_logprobs;
// semantics and math in engine/cpu/lm_head_logprobs.cpp), f32 or bf16 h and W, f32 out:
//
//   out_g = sum (or mean) over counted rows n of sequence g of log softmax(h_n W^T)[t_n]
//   dh = D W,  dW = D^T h,  D_n = -c_n (softmax(h_n W^T) - onehot(t_n)),  c_n = dout_g (/ C_g)
//
// The [N, V] logits never exist: the tiling, the GEMMs and the per-row softmax statistics
// are lm_head_cross_entropy's (engine/cuda/lm_head_tiles.h, kernels::ce_tile_stats); only the reduction (kernels::logprob_segment_sums, per
// sequence instead of one mean) and the gradient's per-row coefficient
// (kernels::logprob_tile_grad) differ. Every sum runs in a fixed order: deterministic.
// Saved: h, W, targets, lse [N] and the counted rows per sequence [G] (fp32, device),
// and the targets on the host (validated there once; the copy synchronises the stream).
#include "engine/cuda/lm_head_tiles.h"
#include "engine/cuda/ops.h"
#include "engine/cuda/runtime.h"
#include "engine/nvtx.h"
#include "kernels/cross_entropy.h"
#include "kernels/logprobs.h"

namespace engine::cuda_ops {

namespace {

constexpr const char* kOp = "lm_head_logprobs";

struct Segments {
  int64_t rows, count;  // rows per sequence, sequences
};

LmHeadProblem make_problem(const OpContext& ctx, const Tensor& h, const Tensor& w, const Tensor& targets,
                           Segments* seg) {
  const LmHeadProblem p =
      make_lm_head_problem(kOp, h, w, targets, ctx.wants_grad(0), ctx.wants_grad(1), ctx.attrs.chunk_rows);
  const int64_t r = ctx.attrs.segment_rows > 0 ? ctx.attrs.segment_rows : p.n;
  ENGINE_CHECK(p.n > 0 && p.n % r == 0, kOp, ": ", p.n, " rows are not whole sequences of ", r);
  *seg = {r, p.n / r};
  return p;
}

}  // namespace

std::vector<Tensor> lm_head_logprobs_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &h = in[0], &w = in[1], &targets = in[2];
  Segments seg{};
  const LmHeadProblem p = make_problem(ctx, h, w, targets, &seg);
  const int ignore = ctx.attrs.ignore_index;
  Tensor host_targets = targets.to(Device::cpu());  // synchronises the stream
  const std::vector<int32_t> t = checked_targets(kOp, host_targets, p.v, ignore);
  cudaStream_t stream = cuda::current_stream();
  const Device dev = h.device();
  Tensor out = Tensor::empty(Shape{seg.count}, DType::F32, dev);
  Tensor counts = Tensor::empty(Shape{seg.count}, DType::F32, dev);
  Tensor lse = Tensor::zeros(Shape{p.n}, DType::F32, dev);       // 0 on ignored rows
  Tensor row_loss = Tensor::zeros(Shape{p.n}, DType::F32, dev);  // -log p(t_n); 0 on ignored rows
  Tensor state = Tensor::empty(Shape{3, p.n}, DType::F32, dev);  // running max, sum; z_t
  for_each_logit_tile(p, h, w, t, ignore, [&](const LogitTile& z) {
    kernels::ce_tile_stats(z.z, z.rows, z.cols, z.v0, z.first, z.last, element<const int32_t>(targets, z.r0),
                           ignore, element<float>(state, z.r0), element<float>(state, p.n + z.r0),
                           element<float>(state, 2 * p.n + z.r0), element<float>(lse, z.r0),
                           element<float>(row_loss, z.r0), stream);
  });
  kernels::logprob_segment_sums(out.data<float>(), counts.data<float>(), row_loss.data<float>(),
                                targets.data<int32_t>(), ignore, seg.count, seg.rows, ctx.attrs.segment_mean,
                                stream);
  ctx.save({h, w, targets, lse, counts, host_targets});
  return {out};
}

std::vector<Tensor> lm_head_logprobs_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  NvtxRange range("lm_head_logprobs_backward");
  const Tensor &h = ctx.saved[0], &w = ctx.saved[1], &targets = ctx.saved[2], &lse = ctx.saved[3],
               &counts = ctx.saved[4];
  const std::vector<int32_t> t = ctx.saved[5].to_ints();
  Segments seg{};
  const LmHeadProblem p = make_problem(ctx, h, w, targets, &seg);
  const int ignore = ctx.attrs.ignore_index;
  const Tensor& g = grad_out[0];
  if (!g.defined() || !(p.want_dh || p.want_dw)) return lm_head_zero_grads(p, h, w);
  ENGINE_CHECK(g.numel() == seg.count && g.device() == h.device(), kOp, ": gradient ", g.str(), " is not [",
               seg.count, "] on ", h.device().str());
  cudaStream_t stream = cuda::current_stream();
  return lm_head_tiled_backward(p, h, w, t, ignore, g, [&](const LogitTile& z, uint16_t* hi, uint16_t* lo,
                                                           const float* g32) {
    kernels::logprob_tile_grad(z.z, hi, lo, z.rows, z.cols, z.v0, z.r0, element<const int32_t>(targets, z.r0),
                               ignore, element<const float>(lse, z.r0), g32, counts.data<float>(), seg.rows,
                               ctx.attrs.segment_mean, stream);
  });
}

}  // namespace engine::cuda_ops
