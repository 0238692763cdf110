// The data-quality report train70b prints before training and writes to
// OUTPUT/data_report.json: records per format, token-length percentiles (before
// truncation), truncated and dropped examples, exact duplicates, empty responses,
// examples with no trained tokens, and the share of tokens trained.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/dataset.h"

namespace models {

// Nearest-rank percentile (p in [0, 100]) of `sorted` (ascending); 0 when empty.
int64_t nearest_rank_percentile(const std::vector<int64_t>& sorted, double p);

// The report as a JSON object (pretty-printed, ends with a newline).
std::string data_report_json(const DatasetStats& stats, const std::string& dataset,
                             const DatasetOptions& options);
// The same for people: a few lines, each ending with a newline.
std::string data_report_text(const DatasetStats& stats, const DatasetOptions& options);

// An example as text for --preview: the trained tokens (labels[t] != -100, t >= 1) between
// "⟦" and "⟧", the rest plain; ids the tokenizer cannot decode appear as <id>.
std::string preview_example(const Example& example, const Tokenizer& tokenizer);

}  // namespace models
