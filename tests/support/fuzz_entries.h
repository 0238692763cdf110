// The entry points of the fuzz targets (tests/fuzz/): each takes arbitrary bytes, writes them
// where the reader expects a user's file, and runs the reader the way train70b does. A
// rejection (engine::Error, one line) is the expected outcome for bad bytes; anything else
// (another exception, a sanitizer report, a crash) is a bug. The libFuzzer targets call
// these under ASan + UBSan; tests/models/test_fuzz_regressions.cpp replays every kept input
// (tests/fuzz/regressions/<target>/) through them in the ordinary build.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace testing_support::fuzz {

void safetensors(const uint8_t* data, size_t size);    // engine::io::SafetensorsFile
void hf_config(const uint8_t* data, size_t size);      // models::load_hf_config
void jsonl_dataset(const uint8_t* data, size_t size);  // models::load_jsonl_dataset
void tokenizer_json(const uint8_t* data, size_t size); // models::load_tokenizer
// train::load_checkpoint + AdamW::load_state, as --resume runs them, on a checkpoint of a
// tiny LoRA model written once per process: the first byte picks which of its files
// (checkpoint_files()) the rest of the input replaces. A load that succeeds must hand the
// training loop a position it can use (cursor within a permutation), else it aborts.
void checkpoint(const uint8_t* data, size_t size);
const std::vector<std::string>& checkpoint_files();
std::vector<std::string> valid_checkpoint_files();  // their bytes (the seed corpus's source)

struct Target {
  const char* name;  // the directory name under tests/fuzz/corpus and regressions
  void (*run)(const uint8_t*, size_t);
};
const std::vector<Target>& targets();

}  // namespace testing_support::fuzz
