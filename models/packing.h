// Packing (`train70b --packing`): several examples share one row of max_seq_len tokens.
// Each example stays a document of its own: positions restart at 0 with it (RoPE), and
// attention never crosses into another document (doc_start, engine/ops.h attention).
// The loss drops the target of a document's last token (models::LlamaModel::loss), so a
// packed batch trains on exactly the (input, target) pairs of the unpacked examples.
//
// Rows are filled greedily, first fit: the examples are taken in a seeded random order
// and each goes to the first row with room for it (a row closes once no example could
// still fit). The padding after a row's last document is one document of its own, with
// labels -100, so no real token attends to it.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"
#include "models/dataset.h"

namespace models {

// The examples of each packed row, in row order. Every example is in exactly one row;
// every example must be at most max_seq_len tokens (load_jsonl_dataset truncates).
std::vector<std::vector<int64_t>> pack_examples(const std::vector<Example>& examples,
                                                int64_t max_seq_len, uint64_t seed);

// Share of non-padding tokens in `rows` packed into rows of max_seq_len: tokens / (rows x
// max_seq_len). (An unpacked batch's share is the same ratio against its longest row.)
double packing_efficiency(const std::vector<Example>& examples,
                          const std::vector<std::vector<int64_t>>& rows, int64_t max_seq_len);

struct PackedBatch {
  Batch batch;  // ids, labels i32 [B, max_seq_len], target_tokens
  // i32 [B, max_seq_len] on the CPU: each token's position in its document, and its
  // document's first token (models::ForwardOptions).
  engine::Tensor positions, doc_start;
};

// Rows rows[row_indices[0]], rows[row_indices[1]], ... as one batch of full-length rows.
PackedBatch make_packed_batch(const std::vector<Example>& examples,
                              const std::vector<std::vector<int64_t>>& rows,
                              const std::vector<int64_t>& row_indices, int64_t max_seq_len,
                              int64_t pad_id);

}  // namespace models
