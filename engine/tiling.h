// Sequence tiling: y = fn(x) computed over row tiles of x, so that fn's intermediates
// exist for one tile at a time, in forward and in backward.
//
//   x [..., H]: rows = the product of the leading dims; tile k = rows [k T, (k + 1) T)
//   y[tile k] = fn(x[tile k], k T)           fn must be row-wise: row i of y depends on
//                                            row i of x only (an MLP: gate, up, SwiGLU, down)
// Forward runs fn without recording and keeps only x. Backward takes the tiles in order,
// re-runs fn on each with recording on, back-propagates dy[tile] through it, and writes
// dx[tile]; parameters fn uses get their gradient summed over the tiles (+= into .grad).
// So the working set is one tile's, not the whole sequence's: for Llama-3-70B's MLP,
// 3 x T x 28,672 activations instead of 3 x tokens x 28,672.
//
// fn gets the tile's first row so that position-dependent randomness (dropout's Philox
// offset) can continue where the untiled call would be: the results equal the untiled
// fn(x) bitwise where fn's per-row arithmetic does not depend on the row count; the
// parameter gradients are sums of per-tile sums (a different rounding order).
// Costs one more forward of fn per step (its recompute inside backward).
#pragma once
#include <functional>

#include "engine/tensor.h"

namespace engine {

using TiledFn = std::function<Tensor(const Tensor& x_tile, int64_t first_row)>;

// fn applied over tiles of `tile_rows` rows; tile_rows <= 0 or >= rows calls fn(x, 0)
// directly (no tiling node, the untiled graph exactly).
Tensor tiled_rows(const TiledFn& fn, const Tensor& x, int64_t tile_rows);

// Rows [first, first + count) of x (flattened to [rows, last dim]) as a new tensor of
// shape [count, last dim] on x's device: a copy, not a view.
Tensor copy_rows(const Tensor& x, int64_t first, int64_t count);

}  // namespace engine
