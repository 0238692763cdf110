// One JSONL record to one Example, for each format of dataset.h: parsing, checking (every
// error names path:line) and tokenizing, with chat records through chat_template.h.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "models/dataset.h"

namespace models {

struct Record {
  Example example;
  RecordFormat format = RecordFormat::Text;
  bool empty_response = false;  // an assistant turn, completion or output that is blank
};

// `line` is the record's text (one JSON object); `path` and `line_number` name it in
// errors (engine::InputError, one line). Thread-safe.
Record read_record(std::string_view line, const std::string& path, int64_t line_number,
                   const Tokenizer& tokenizer, const DatasetOptions& options);

}  // namespace models
