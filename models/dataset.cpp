// JSONL dataset loading (records converted by dataset_formats.cpp on all cores, counted
// here), the seeded train/eval split and right-padded batches. See dataset.h.
#include "models/dataset.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <thread>
#include <string_view>
#include <unordered_map>

#include "engine/error.h"
#include "engine/rng.h"
#include "kernels/math/philox.h"
#include "models/dataset_formats.h"
#include "models/jsonl_lines.h"

namespace models {

namespace {

bool has_target(const std::vector<int32_t>& labels) {
  return std::any_of(labels.begin() + (labels.empty() ? 0 : 1), labels.end(),
                     [](int32_t l) { return l != kIgnoreLabel; });
}

int64_t count_targets(const std::vector<int32_t>& labels) {
  if (labels.empty()) return 0;
  return std::count_if(labels.begin() + 1, labels.end(),
                       [](int32_t l) { return l != kIgnoreLabel; });
}

// Records whose ids and labels equal an earlier record's: hashed, then compared.
int64_t count_duplicates(const std::vector<Record>& records) {
  auto bytes = [](const std::vector<int32_t>& v) {
    return std::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(int32_t));
  };
  std::unordered_multimap<uint64_t, size_t> seen;
  int64_t duplicates = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const Example& e = records[i].example;
    const uint64_t h = std::hash<std::string_view>{}(bytes(e.input_ids)) * 31 +
                       std::hash<std::string_view>{}(bytes(e.labels));
    auto [lo, hi] = seen.equal_range(h);
    const bool dup = std::any_of(lo, hi, [&](const auto& kv) {
      const Example& f = records[kv.second].example;
      return f.input_ids == e.input_ids && f.labels == e.labels;
    });
    if (dup)
      ++duplicates;
    else
      seen.emplace(h, i);
  }
  return duplicates;
}

}  // namespace

const char* record_format_name(RecordFormat f) {
  switch (f) {
    case RecordFormat::Text: return "text";
    case RecordFormat::PromptCompletion: return "prompt_completion";
    case RecordFormat::Messages: return "messages";
    case RecordFormat::ShareGPT: return "sharegpt";
    case RecordFormat::Alpaca: return "alpaca";
    case RecordFormat::Pretokenized: return "pretokenized";
  }
  return "?";
}

std::vector<Example> load_jsonl_dataset(const std::string& path, const Tokenizer& tokenizer,
                                        int64_t max_seq_len, DatasetStats* stats) {
  DatasetOptions o;
  o.max_seq_len = max_seq_len;
  o.chat_template = ChatTemplate::Llama3;
  return load_jsonl_dataset(path, tokenizer, o, stats);
}

std::vector<Example> load_jsonl_dataset(const std::string& path, const Tokenizer& tokenizer,
                                        const DatasetOptions& o, DatasetStats* stats_out) {
  const int64_t max_seq_len = o.max_seq_len;
  if (max_seq_len < 2)
    throw engine::InputError(path + ": max_seq_len must be at least 2 (one input and one target), " +
                             "got " + std::to_string(max_seq_len));
  // 1. The non-blank lines, with their numbers.
  JsonlLineReader reader(path, o.max_line_bytes);
  std::vector<std::string> lines;
  std::vector<int64_t> numbers;
  std::string text;
  for (int64_t line = 0; reader.next(&text, &line);) {
    lines.push_back(std::move(text));
    numbers.push_back(line);
  }

  // 2. Parsed and tokenized on all cores; the first failing line (in file order) reports.
  std::vector<Record> records(lines.size());
  std::vector<std::exception_ptr> errors(lines.size());
  int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = static_cast<int>(std::min<size_t>(threads, std::max<size_t>(1, lines.size() / 64)));
  auto work = [&](size_t t) {
    for (size_t i = t; i < lines.size(); i += threads) {
      if (threads == 1 && i > 0 && errors[i - 1]) break;  // one thread: stop at the first
      try {
        records[i] = read_record(lines[i], path, numbers[i], tokenizer, o);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  if (threads <= 1) {
    work(0);
  } else {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back(work, static_cast<size_t>(t));
    for (std::thread& th : pool) th.join();
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  lines.clear();

  // 3. Counted in file order: formats, lengths, duplicates, truncation, trained tokens.
  DatasetStats stats;
  stats.records = static_cast<int64_t>(records.size());
  stats.duplicates = count_duplicates(records);
  std::vector<Example> examples;
  for (Record& r : records) {
    Example& e = r.example;
    ++stats.per_format[static_cast<int>(r.format)];
    stats.empty_responses += r.empty_response;
    stats.lengths.push_back(static_cast<int64_t>(e.input_ids.size()));
    if (static_cast<int64_t>(e.input_ids.size()) > max_seq_len) {
      if (o.truncation == Truncation::Drop) {
        ++stats.dropped;
        continue;
      }
      e.input_ids.resize(static_cast<size_t>(max_seq_len));
      e.labels.resize(static_cast<size_t>(max_seq_len));
      ++stats.truncated;
    }
    if (!has_target(e.labels)) {
      ++stats.skipped;
      continue;
    }
    stats.tokens += static_cast<int64_t>(e.input_ids.size());
    stats.target_tokens += count_targets(e.labels);
    examples.push_back(std::move(e));
  }
  stats.examples = static_cast<int64_t>(examples.size());
  if (stats_out) *stats_out = stats;

  if (examples.empty()) {
    if (stats.records == 0)
      throw engine::InputError(path + ": no examples (the file has no records)");
    if (stats.dropped == stats.records)
      throw engine::InputError(path + ": no usable examples: every record (" +
                               std::to_string(stats.dropped) + ") is longer than max_seq_len " +
                               std::to_string(max_seq_len) + " and was dropped (--truncation drop)");
    throw engine::InputError(
        path + ": no usable examples, no trained tokens: none of the " +
        std::to_string(stats.records) + " records has a trained label after truncation to " +
        "max_seq_len " + std::to_string(max_seq_len) +
        (o.train_on_inputs ? "" : " (only assistant turns and completions are trained; --train-on-inputs trains prompts too)"));
  }
  return examples;
}

DatasetSplit split_train_eval(std::vector<Example> examples, double eval_fraction, uint64_t seed) {
  ENGINE_CHECK(std::isfinite(eval_fraction) && eval_fraction >= 0.0 && eval_fraction < 1.0,
               "split_train_eval: eval_fraction must be in [0, 1), got ", eval_fraction);
  const size_t n = examples.size();
  size_t n_eval = 0;
  if (eval_fraction > 0.0) {
    ENGINE_CHECK(n >= 2,
                 "split_train_eval: holding out an eval set needs at least 2 examples, have ", n);
    n_eval = static_cast<size_t>(std::llround(eval_fraction * static_cast<double>(n)));
    n_eval = std::clamp<size_t>(n_eval, 1, n - 1);
  }

  // Fisher-Yates: step i swaps position i with j uniform in [0, i], drawn from counter i.
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  engine::Generator gen(seed);
  const uint64_t base = gen.advance(n);
  for (size_t i = n; i-- > 1;) {
    kmath::Philox4 r = kmath::philox4x32_10(gen.seed(), base + i);
    uint64_t bits = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
    std::swap(order[i], order[bits % (i + 1)]);  // modulo bias <= n / 2^64
  }
  std::vector<bool> is_eval(n, false);
  for (size_t i = 0; i < n_eval; ++i) is_eval[order[i]] = true;

  DatasetSplit split;
  split.eval.reserve(n_eval);
  split.train.reserve(n - n_eval);
  for (size_t i = 0; i < n; ++i)
    (is_eval[i] ? split.eval : split.train).push_back(std::move(examples[i]));
  return split;
}

Batch make_batch(const std::vector<Example>& examples, const std::vector<int64_t>& indices,
                 int64_t pad_id) {
  ENGINE_CHECK(!indices.empty(), "make_batch: no indices");
  ENGINE_CHECK(pad_id >= 0 && pad_id <= std::numeric_limits<int32_t>::max(), "make_batch: pad_id ",
               pad_id, " is not a token id");
  size_t longest = 0;
  for (int64_t i : indices) {
    ENGINE_CHECK(i >= 0 && static_cast<size_t>(i) < examples.size(), "make_batch: index ", i,
                 " outside [0, ", examples.size(), ")");
    const Example& e = examples[static_cast<size_t>(i)];
    ENGINE_CHECK(!e.input_ids.empty() && e.labels.size() == e.input_ids.size(),
                 "make_batch: example ", i, " has ", e.input_ids.size(), " ids and ",
                 e.labels.size(), " labels");
    longest = std::max(longest, e.input_ids.size());
  }
  const size_t rows = indices.size();
  std::vector<int32_t> ids(rows * longest, static_cast<int32_t>(pad_id));
  std::vector<int32_t> labels(rows * longest, kIgnoreLabel);
  Batch batch;
  for (size_t r = 0; r < rows; ++r) {
    const Example& e = examples[static_cast<size_t>(indices[r])];
    std::copy(e.input_ids.begin(), e.input_ids.end(),
              ids.begin() + static_cast<ptrdiff_t>(r * longest));
    std::copy(e.labels.begin(), e.labels.end(),
              labels.begin() + static_cast<ptrdiff_t>(r * longest));
    batch.target_tokens += count_targets(e.labels);
  }
  const engine::Shape shape{static_cast<int64_t>(rows), static_cast<int64_t>(longest)};
  batch.ids = engine::Tensor::from_ints(ids, shape);
  batch.labels = engine::Tensor::from_ints(labels, shape);
  return batch;
}

}  // namespace models
