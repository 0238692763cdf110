// The tile walk of the fused lm_head ops (engine/cuda/lm_head_tiles.h).
#include "engine/cuda/lm_head_tiles.h"

#include <algorithm>

#include "engine/cuda/cublaslt.h"
#include "engine/cuda/op_helpers.h"
#include "engine/cuda/runtime.h"
#include "kernels/elementwise.h"
#include "kernels/math/cross_entropy.h"

namespace engine::cuda_ops {

LmHeadProblem make_lm_head_problem(const char* op, const Tensor& h, const Tensor& w, const Tensor& targets,
                                   bool want_dh, bool want_dw, int64_t chunk_rows) {
  for (const Tensor* t : {&h, &w, &targets})
    ENGINE_CHECK(t->device().is_cuda(), op, ": inputs must be on a CUDA device, got ", t->str());
  ENGINE_CHECK(h.dtype() == w.dtype() && (h.dtype() == DType::F32 || h.dtype() == DType::BF16), op,
               ": h ", h.str(), " and weight ", w.str(), " must both be f32 or both bf16");
  ENGINE_CHECK(targets.dtype() == DType::I32, op, ": targets must be i32, got ", targets.str());
  ENGINE_CHECK(h.rank() == 2 && w.rank() == 2 && w.dim(1) == h.dim(1), op, ": h ", h.shape().str(),
               " and weight ", w.shape().str(), " are not [N, H] and [V, H]");
  ENGINE_CHECK(targets.rank() == 1 && targets.dim(0) == h.dim(0), op, ": targets ", targets.shape().str(),
               " do not match h ", h.shape().str());
  // Vocabulary indices are int32 in the kernels (targets, argmax).
  ENGINE_CHECK(w.dim(0) > 0 && w.dim(0) <= 0x7fffffff, op, ": vocabulary of ", w.dim(0), " entries");
  LmHeadProblem p{h.dim(0), h.dim(1), w.dim(0), h.dtype(), want_dh, want_dw, {}};
  p.tile = kernels::plan_lm_head_tiling(p.n, p.v, p.h, dtype_bits(p.type) / 8, p.split(),
                                        p.split() && p.want_dh, chunk_rows);
  return p;
}

std::vector<int32_t> checked_targets(const char* op, const Tensor& host_targets, int64_t v, int ignore) {
  std::vector<int32_t> t = host_targets.to_ints();
  for (size_t i = 0; i < t.size(); ++i)
    ENGINE_CHECK(!kmath::ce_counted(t[i], ignore) || (t[i] >= 0 && t[i] < v), op, ": target ", t[i],
                 " at row ", i, " is outside [0, ", v, ") and is not ignore_index ", ignore);
  return t;
}

bool chunk_counted(const std::vector<int32_t>& targets, int64_t r0, int64_t rows, int ignore) {
  for (int64_t i = r0; i < r0 + rows; ++i)
    if (kmath::ce_counted(targets[static_cast<size_t>(i)], ignore)) return true;
  return false;
}

namespace {

// The row chunks with a counted target, and for each its vocab blocks: `visit(tile)` after
// `compute` filled the tile's logits; `skipped(r0, rows)` for the other chunks.
template <class Visit, class Skipped>
void walk(const LmHeadProblem& p, const Tensor& h, const Tensor& w, const std::vector<int32_t>& targets,
          int ignore, float* z, Visit&& visit, Skipped&& skipped) {
  for (int64_t r0 = 0; r0 < p.n; r0 += p.tile.rows) {
    const int64_t rows = std::min(p.tile.rows, p.n - r0);
    if (!chunk_counted(targets, r0, rows, ignore)) {
      skipped(r0, rows);
      continue;
    }
    for (int64_t v0 = 0; v0 < p.v; v0 += p.tile.vocab_block) {
      const LogitTile tile{z, r0, rows, v0, std::min(p.tile.vocab_block, p.v - v0), v0 == 0,
                           v0 + p.tile.vocab_block >= p.v};
      cuda::gemm(false, true, rows, tile.cols, p.h, 1.0f, element(h, r0 * p.h), p.type, 0,
                 element(w, v0 * p.h), p.type, 0, 0.0f, z, DType::F32, 0, 1, cuda::current_stream());
      visit(tile);
    }
  }
}

}  // namespace

void for_each_logit_tile(const LmHeadProblem& p, const Tensor& h, const Tensor& w,
                         const std::vector<int32_t>& targets, int ignore,
                         const std::function<void(const LogitTile&)>& visit) {
  Tensor logits = Tensor::empty(Shape{p.tile.rows * p.tile.vocab_block}, DType::F32, h.device());
  walk(p, h, w, targets, ignore, logits.data<float>(), visit, [](int64_t, int64_t) {});
}

std::vector<Tensor> lm_head_zero_grads(const LmHeadProblem& p, const Tensor& h, const Tensor& w) {
  return {p.want_dh ? Tensor::zeros(h.shape(), p.type, h.device()) : Tensor(),
          p.want_dw ? Tensor::zeros(w.shape(), p.type, w.device()) : Tensor(), Tensor()};
}

std::vector<Tensor> lm_head_tiled_backward(const LmHeadProblem& p, const Tensor& h, const Tensor& w,
                                           const std::vector<int32_t>& targets, int ignore, const Tensor& g,
                                           const TileGrad& tile_grad) {
  const Device dev = h.device();
  cudaStream_t stream = cuda::current_stream();
  Tensor dh = p.want_dh ? Tensor::empty(h.shape(), p.type, dev) : Tensor();
  Tensor dw = p.want_dw ? Tensor::empty(w.shape(), p.type, dev) : Tensor();
  const Tensor g32 = g.dtype() == DType::F32 ? g : g.to_dtype(DType::F32);
  const bool split = p.split();
  const DType d_type = split ? DType::BF16 : DType::F32;  // the GEMM operand type of D
  const int64_t tile_elements = p.tile.rows * p.tile.vocab_block;
  Tensor logits = Tensor::empty(Shape{tile_elements}, DType::F32, dev);
  // hi at element 0, lo at a 256-byte boundary after it (aligned GEMM operands).
  const int64_t lo_offset = (tile_elements + 127) / 128 * 128;
  Tensor parts = split ? Tensor::empty(Shape{lo_offset + tile_elements}, DType::BF16, dev) : Tensor();
  uint16_t* hi = split ? element<uint16_t>(parts, 0) : nullptr;
  uint16_t* lo = split ? element<uint16_t>(parts, lo_offset) : nullptr;
  // fp32 sums: bf16 dh rows of one chunk; dW whole (f32: the outputs themselves).
  Tensor dh_acc = split && p.want_dh ? Tensor::empty(Shape{p.tile.rows, p.h}, DType::F32, dev) : dh;
  Tensor dw_acc = split && p.want_dw ? Tensor::empty(w.shape(), DType::F32, dev) : dw;
  if (dw_acc.defined()) dw_acc.fill(0.0f);

  auto finish_chunk = [&](int64_t r0, int64_t rows) {
    if (split && p.want_dh)
      kernels::convert(element(dh, r0 * p.h), kernels::ElemType::BF16, dh_acc.data<float>(),
                       kernels::ElemType::F32, rows * p.h, stream);
  };
  auto visit = [&](const LogitTile& t) {
    tile_grad(t, hi, lo, g32.data<float>());
    float* dh_rows = !p.want_dh ? nullptr : split ? dh_acc.data<float>() : element<float>(dh, t.r0 * p.h);
    // The operands carrying D: the fp32 tile, or its bf16 hi and lo parts.
    const void* d_parts[2] = {split ? static_cast<const void*>(hi) : t.z, lo};
    for (int k = 0; k < (split ? 2 : 1); ++k) {
      if (p.want_dh)  // dh_rows [rows, H] (+)= D [rows, cols] @ W_block [cols, H]
        cuda::gemm(false, false, t.rows, p.h, t.cols, 1.0f, d_parts[k], d_type, 0, element(w, t.v0 * p.h),
                   p.type, 0, t.first && k == 0 ? 0.0f : 1.0f, dh_rows, DType::F32, 0, 1, stream);
      if (p.want_dw)  // dW_block [cols, H] += D^T [cols, rows] @ h_chunk [rows, H]
        cuda::gemm(true, false, t.cols, p.h, t.rows, 1.0f, d_parts[k], d_type, 0, element(h, t.r0 * p.h),
                   p.type, 0, 1.0f, element<float>(dw_acc, t.v0 * p.h), DType::F32, 0, 1, stream);
    }
    if (t.last) finish_chunk(t.r0, t.rows);
  };
  auto skipped = [&](int64_t r0, int64_t rows) {  // no counted row: no gradient
    if (p.want_dh) kernels::fill(element(dh, r0 * p.h), elem_type(p.type), 0.0f, rows * p.h, stream);
  };
  walk(p, h, w, targets, ignore, logits.data<float>(), visit, skipped);
  if (split && p.want_dw) cuda::convert(dw, dw_acc);
  return {dh, dw, Tensor()};
}

}  // namespace engine::cuda_ops
