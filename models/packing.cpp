#include "models/packing.h"

#include <algorithm>
#include <limits>

#include "engine/error.h"
#include "engine/rng.h"

namespace models {

namespace {

int64_t length_of(const Example& e) { return static_cast<int64_t>(e.input_ids.size()); }

}  // namespace

std::vector<std::vector<int64_t>> pack_examples(const std::vector<Example>& examples,
                                                int64_t max_seq_len, uint64_t seed) {
  ENGINE_CHECK(max_seq_len > 0, "pack_examples: max_seq_len ", max_seq_len);
  const int64_t n = static_cast<int64_t>(examples.size());
  int64_t shortest = max_seq_len;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = length_of(examples[static_cast<size_t>(i)]);
    ENGINE_CHECK(len >= 1 && len <= max_seq_len, "pack_examples: example ", i, " has ", len,
                 " tokens, outside 1..", max_seq_len);
    shortest = std::min(shortest, len);
  }
  // A seeded random order (as the trainer shuffles), so rows mix examples of every kind.
  engine::Generator gen(seed);
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  if (n > 1) {
    const std::vector<float> keys = engine::uniform({n}, 0, 1, gen).to_floats();
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
  }
  std::vector<std::vector<int64_t>> rows;
  std::vector<int64_t> free;  // room left in each row
  std::vector<size_t> open;   // rows that can still take the shortest example, in row order
  for (int64_t i : order) {
    const int64_t len = length_of(examples[static_cast<size_t>(i)]);
    size_t slot = open.size();
    for (size_t o = 0; o < open.size(); ++o)
      if (free[open[o]] >= len) {
        slot = o;
        break;
      }
    if (slot == open.size()) {  // first fit found none: a new row
      rows.emplace_back();
      free.push_back(max_seq_len);
      open.push_back(rows.size() - 1);
    }
    const size_t row = open[slot];
    rows[row].push_back(i);
    free[row] -= len;
    if (free[row] < shortest) open.erase(open.begin() + static_cast<ptrdiff_t>(slot));
  }
  return rows;
}

double packing_efficiency(const std::vector<Example>& examples,
                          const std::vector<std::vector<int64_t>>& rows, int64_t max_seq_len) {
  if (rows.empty()) return 0.0;
  int64_t tokens = 0;
  for (const auto& row : rows)
    for (int64_t i : row) tokens += length_of(examples[static_cast<size_t>(i)]);
  return static_cast<double>(tokens) /
         (static_cast<double>(rows.size()) * static_cast<double>(max_seq_len));
}

PackedBatch make_packed_batch(const std::vector<Example>& examples,
                              const std::vector<std::vector<int64_t>>& rows,
                              const std::vector<int64_t>& row_indices, int64_t max_seq_len,
                              int64_t pad_id) {
  ENGINE_CHECK(!row_indices.empty(), "make_packed_batch: no rows");
  ENGINE_CHECK(pad_id >= 0 && pad_id <= std::numeric_limits<int32_t>::max(),
               "make_packed_batch: pad_id ", pad_id, " is not a token id");
  const size_t t_len = static_cast<size_t>(max_seq_len), n_rows = row_indices.size();
  std::vector<int32_t> ids(n_rows * t_len, static_cast<int32_t>(pad_id));
  std::vector<int32_t> labels(n_rows * t_len, kIgnoreLabel), positions(n_rows * t_len),
      doc_start(n_rows * t_len);
  PackedBatch out;
  for (size_t r = 0; r < n_rows; ++r) {
    const int64_t ri = row_indices[r];
    ENGINE_CHECK(ri >= 0 && static_cast<size_t>(ri) < rows.size(), "make_packed_batch: row ", ri,
                 " outside [0, ", rows.size(), ")");
    size_t t = 0;
    const size_t base = r * t_len;
    auto document = [&](size_t begin, size_t end) {  // positions and starts of [begin, end)
      for (size_t k = begin; k < end; ++k) {
        positions[base + k] = static_cast<int32_t>(k - begin);
        doc_start[base + k] = static_cast<int32_t>(begin);
      }
    };
    for (int64_t i : rows[static_cast<size_t>(ri)]) {
      const Example& e = examples[static_cast<size_t>(i)];
      ENGINE_CHECK(!e.input_ids.empty() && e.labels.size() == e.input_ids.size() &&
                       t + e.input_ids.size() <= t_len,
                   "make_packed_batch: example ", i, " (", e.input_ids.size(),
                   " tokens) does not fit row ", ri);
      const auto at = static_cast<ptrdiff_t>(base + t);
      std::copy(e.input_ids.begin(), e.input_ids.end(), ids.begin() + at);
      std::copy(e.labels.begin(), e.labels.end(), labels.begin() + at);
      for (size_t k = 1; k < e.labels.size(); ++k)  // as make_batch counts them
        out.batch.target_tokens += e.labels[k] != kIgnoreLabel;
      document(t, t + e.input_ids.size());
      t += e.input_ids.size();
    }
    document(t, t_len);  // the padding: one document of its own, never a target
  }
  const engine::Shape shape{static_cast<int64_t>(n_rows), max_seq_len};
  out.batch.ids = engine::Tensor::from_ints(ids, shape);
  out.batch.labels = engine::Tensor::from_ints(labels, shape);
  out.positions = engine::Tensor::from_ints(positions, shape);
  out.doc_start = engine::Tensor::from_ints(doc_start, shape);
  return out;
}

}  // namespace models
