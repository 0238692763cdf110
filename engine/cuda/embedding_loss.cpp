// CUDA implementation of embedding; semantics of the CPU reference
// (engine/cpu/embedding_loss.cpp), kernels in kernels/embedding.cu.
//
// ids: i32 of any shape S (rank <= 3) on the device; table [V, D] f32 or bf16 on the
// same device. out [S..., D] in the table's dtype. The forward checks every id on the
// device and reads one status word back (a stream synchronisation): an id outside
// [0, V) raises the CPU reference's error, naming the first bad id and its position.
// Backward: dtable [V, D] in the table's dtype, deterministic (sorted segments summed
// in position order; kernels/embedding.cu). Saved: ids and the table (a view of a
// weight that lives anyway; only its dtype and device are read).
#include <string>

#include "engine/cuda/op_helpers.h"
#include "engine/cuda/ops.h"
#include "engine/cuda/runtime.h"
#include "engine/gpu_spec.h"
#include "engine/op_shapes.h"
#include "kernels/embedding.h"

namespace engine::cuda_ops {

namespace {

}  // namespace

std::vector<Tensor> embedding_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &ids = in[0], &table = in[1];
  ENGINE_CHECK(ids.dtype() == DType::I32, "embedding: ids must be i32, got ", ids.str());
  const kernels::ElemType t = arith_type(table, "embedding", "table");
  ENGINE_CHECK(ids.device() == table.device(), "embedding: ids ", ids.str(), " and table ",
               table.str(), " are on different devices");
  ENGINE_CHECK(table.rank() == 2, "embedding: table must be [V, D], got ", table.shape().str());
  const int64_t vocab = table.dim(0), d = table.dim(1), n = ids.numel();
  Tensor out = Tensor::empty(embedding_output_shape(ids.shape(), d), table.dtype(), table.device());
  Tensor status = Tensor::empty({2}, DType::I32, table.device());  // one 64-bit word
  kernels::embedding_forward(out.raw_data(), static_cast<const int32_t*>(ids.raw_data()),
                             table.raw_data(), t, n, vocab, d,
                             static_cast<uint64_t*>(status.raw_data()), cuda::current_stream());
  uint64_t word = kernels::kEmbeddingIdsOk;
  cuda::copy(&word, Device::cpu(), status.raw_data(), status.device(), sizeof(word));
  if (word != kernels::kEmbeddingIdsOk && !dry_run_active()) {  // a dry run's word is a placeholder
    const int64_t index = kernels::embedding_bad_index(word);
    ENGINE_CHECK(false, "embedding: id ", kernels::embedding_bad_id(word), " at ids",
                 index_text(ids.shape(), index), " is outside the table's [0, ", vocab, ")");
  }
  ctx.save({ids, table});
  return {out};
}

std::vector<Tensor> embedding_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &ids = ctx.saved[0], &table = ctx.saved[1];
  const Shape& table_shape = ctx.input_shapes[1];
  const int64_t vocab = table_shape[0], d = table_shape[1], n = ids.numel();
  Tensor dtable = Tensor::empty(table_shape, table.dtype(), table.device());
  if (!grad_out[0].defined()) {
    dtable.fill(0.0f);
    return {Tensor(), dtable};
  }
  Tensor g = grad_out[0];
  ENGINE_CHECK(g.shape() == embedding_output_shape(ids.shape(), d) && g.device() == table.device(),
               "embedding: gradient ", g.str(), " does not match the output");
  if (g.dtype() != table.dtype()) g = g.to_dtype(table.dtype());
  const size_t bytes = kernels::embedding_backward_workspace_bytes(n, vocab);
  Tensor workspace = Tensor::empty({static_cast<int64_t>(bytes)}, DType::U8, table.device());
  kernels::embedding_backward(
      dtable.raw_data(), g.raw_data(), static_cast<const int32_t*>(ids.raw_data()),
      arith_type(table, "embedding", "table"), n, vocab, d, bytes ? workspace.raw_data() : nullptr,
      bytes, cuda::current_stream());
  return {Tensor(), dtable};
}

}  // namespace engine::cuda_ops
