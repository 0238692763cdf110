// Data-quality report (see data_report.h).
#include "models/data_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <nlohmann/json.hpp>

namespace models {

namespace {

struct Lengths {
  int64_t min = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
  double mean = 0;
};

Lengths lengths(const DatasetStats& s) {
  std::vector<int64_t> v = s.lengths;
  std::sort(v.begin(), v.end());
  Lengths l;
  if (v.empty()) return l;
  l.min = v.front();
  l.max = v.back();
  l.p50 = nearest_rank_percentile(v, 50);
  l.p90 = nearest_rank_percentile(v, 90);
  l.p99 = nearest_rank_percentile(v, 99);
  double sum = 0;
  for (int64_t x : v) sum += static_cast<double>(x);
  l.mean = sum / static_cast<double>(v.size());
  return l;
}

double trained_share(const DatasetStats& s) {
  return s.tokens > 0 ? static_cast<double>(s.target_tokens) / static_cast<double>(s.tokens) : 0.0;
}

}  // namespace

int64_t nearest_rank_percentile(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto n = static_cast<double>(sorted.size());
  const auto rank = static_cast<size_t>(std::max(1.0, std::ceil(p / 100.0 * n)));
  return sorted[std::min(rank, sorted.size()) - 1];
}

std::string data_report_json(const DatasetStats& s, const std::string& dataset,
                             const DatasetOptions& o) {
  nlohmann::ordered_json formats = nlohmann::ordered_json::object();
  for (int f = 0; f < kRecordFormats; ++f)
    if (s.per_format[f] > 0) formats[record_format_name(static_cast<RecordFormat>(f))] = s.per_format[f];
  const Lengths l = lengths(s);
  nlohmann::ordered_json j = {
      {"dataset", dataset},
      {"records", s.records},
      {"examples", s.examples},
      {"formats", formats},
      {"chat_template", o.chat_template ? nlohmann::ordered_json(chat_template_name(*o.chat_template))
                                        : nlohmann::ordered_json(nullptr)},
      {"train_on_inputs", o.train_on_inputs},
      {"token_lengths",
       {{"min", l.min}, {"p50", l.p50}, {"p90", l.p90}, {"p99", l.p99}, {"max", l.max}, {"mean", l.mean}}},
      {"max_seq_len", o.max_seq_len},
      {"truncation", o.truncation == Truncation::Drop ? "drop" : "right"},
      {"truncated", s.truncated},
      {"dropped", s.dropped},
      {"exact_duplicates", s.duplicates},
      {"empty_responses", s.empty_responses},
      {"no_trained_tokens", s.skipped},
      {"tokens", s.tokens},
      {"trained_tokens", s.target_tokens},
      {"trained_share", trained_share(s)}};
  return j.dump(2) + "\n";
}

std::string data_report_text(const DatasetStats& s, const DatasetOptions& o) {
  std::string formats;
  for (int f = 0; f < kRecordFormats; ++f)
    if (s.per_format[f] > 0)
      formats += (formats.empty() ? "" : ", ") + std::to_string(s.per_format[f]) + " " +
                 record_format_name(static_cast<RecordFormat>(f));
  const Lengths l = lengths(s);
  char buf[512];
  std::string out = "data report: " + std::to_string(s.records) + " records (" + formats + ")";
  if (o.chat_template) out += std::string(", chat template ") + chat_template_name(*o.chat_template);
  out += "\n";
  std::snprintf(buf, sizeof buf,
                "  tokens per record: min %lld  p50 %lld  p90 %lld  p99 %lld  max %lld  mean %.1f\n",
                static_cast<long long>(l.min), static_cast<long long>(l.p50),
                static_cast<long long>(l.p90), static_cast<long long>(l.p99),
                static_cast<long long>(l.max), l.mean);
  out += buf;
  std::snprintf(buf, sizeof buf,
                "  over --max-seq-len %lld: %lld truncated, %lld dropped; %lld exact duplicates; "
                "%lld empty responses; %lld with no trained tokens (skipped)\n",
                static_cast<long long>(o.max_seq_len), static_cast<long long>(s.truncated),
                static_cast<long long>(s.dropped), static_cast<long long>(s.duplicates),
                static_cast<long long>(s.empty_responses), static_cast<long long>(s.skipped));
  out += buf;
  std::snprintf(buf, sizeof buf, "  %lld examples, %lld tokens, %lld trained (%.1f%%)%s\n",
                static_cast<long long>(s.examples), static_cast<long long>(s.tokens),
                static_cast<long long>(s.target_tokens), 100 * trained_share(s),
                o.train_on_inputs ? " with --train-on-inputs" : "");
  out += buf;
  return out;
}

std::string preview_example(const Example& e, const Tokenizer& tok) {
  auto text = [&](const std::vector<int32_t>& ids) {
    try {
      return tok.decode(ids);
    } catch (const std::exception&) {
      std::string s;
      for (int32_t id : ids) s += "<" + std::to_string(id) + ">";
      return s;
    }
  };
  std::string out;
  std::vector<int32_t> run;
  bool trained = false;
  for (size_t t = 0; t <= e.input_ids.size(); ++t) {
    const bool end = t == e.input_ids.size();
    const bool now = !end && t >= 1 && e.labels[t] != kIgnoreLabel;
    if (end || now != trained) {
      if (!run.empty()) out += trained ? "\u27e6" + text(run) + "\u27e7" : text(run);
      run.clear();
      trained = now;
    }
    if (!end) run.push_back(e.input_ids[t]);
  }
  return out;
}

}  // namespace models
