// Inputs for short train70b runs in the tool tests: a tiny Hugging Face model directory
// and a pre-tokenized dataset over its 40-token vocabulary.
#pragma once
#include <string>

namespace testing_support {

// `dir`/config.json + model.safetensors (BF16, as HF ships them) of a random Llama with
// hidden 32, 2 layers, 4 heads (2 KV), intermediate `intermediate`, vocab 40.
std::string write_tiny_hf_model(const std::string& dir, int intermediate = 48);

// `count` (at most 120, all distinct) counting sequences of `length` tokens as
// {"input_ids": [...]} lines.
std::string write_counting_dataset(const std::string& path, int count = 120, int length = 12);

}  // namespace testing_support
