// Writes the seed corpus, tests/fuzz/corpus/<target>/: small valid and near-valid inputs
// per fuzz target (tests/fuzz/run.sh corpus builds and runs this). Seeds are where the
// fuzzer starts mutating; the near-valid ones put it past the first checks at once.
// Usage: fuzz_make_corpus SOURCE_DIR (the repository root; reads tests/data, writes tests/fuzz/corpus).
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/io/safetensors.h"
#include "engine/tensor.h"
#include "tests/support/fuzz_entries.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path corpus;

void seed(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = corpus / target;
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary | std::ios::trunc) << bytes;
}

std::string read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot open");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string little_endian_u64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file whose header is `header` as written (no checks), then `data`.
std::string raw_safetensors(const std::string& header, const std::string& data) {
  return little_endian_u64(header.size()) + header + data;
}

void safetensors_seeds() {
  using engine::DType;
  using engine::Tensor;
  const fs::path tmp = fs::temp_directory_path() / ("fuzz_make_corpus_" + std::to_string(::getpid()));
  engine::io::write_safetensors(tmp.string(),
                                {{"f32", Tensor::from_floats({1, -2, 3.5f, 0, 1e-30f, 7}, {2, 3})},
                                 {"bf16", Tensor::from_floats({1, 2, 3, 4}, {4}).to_dtype(DType::BF16)},
                                 {"f16", Tensor::from_floats({0.5f, -1, 65504, 6e-8f}, {2, 2}).to_dtype(DType::F16)},
                                 {"i32", Tensor::from_ints({1, -1, 2147483647}, {3})},
                                 {"u8", Tensor::zeros({5}, DType::U8)},
                                 {"scalar", Tensor::from_floats({42}, {})},
                                 {"empty", Tensor::zeros({0, 3})}},
                                {{"format", "pt"}});
  const std::string mixed = read(tmp);
  fs::remove(tmp);
  seed("safetensors", "mixed.safetensors", mixed);
  seed("safetensors", "truncated.safetensors", mixed.substr(0, mixed.size() - 3));
  seed("safetensors", "no_tensors.safetensors", raw_safetensors(R"({"__metadata__":{"format":"pt"}})", ""));
  seed("safetensors", "overlapping.safetensors",
       raw_safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                       std::string(12, '\1')));
  seed("safetensors", "huge_shape.safetensors",
       raw_safetensors(R"({"a":{"dtype":"BF16","shape":[4294967296,4294967296],"data_offsets":[0,2]}})", "xx"));
  seed("safetensors", "header_too_long.safetensors", little_endian_u64(uint64_t{1} << 62) + "{}");
}

void hf_config_seeds(const fs::path& source) {
  seed("hf_config", "hf_reference.json", read(source / "tests/data/hf_reference/config.json"));
  json tiny = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", 32},
               {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
               {"intermediate_size", 48}, {"vocab_size", 40}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
               {"tie_word_embeddings", false}, {"torch_dtype", "bfloat16"}};
  seed("hf_config", "tiny.json", tiny.dump(1));
  json scaled = tiny;
  scaled["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  scaled["max_position_embeddings"] = 131072;
  scaled["head_dim"] = 8;
  seed("hf_config", "rope_scaling.json", scaled.dump(1));
  json bad = tiny;
  bad["hidden_size"] = 1e30;
  bad["num_key_value_heads"] = -2;
  seed("hf_config", "bad_numbers.json", bad.dump());
  seed("hf_config", "truncated.json", tiny.dump().substr(0, 60));
}

void jsonl_seeds() {
  seed("jsonl_dataset", "formats.jsonl",
       R"({"text": "Hello world"})" "\n"
       R"({"prompt": "2+2=", "completion": "4"})" "\n"
       R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})" "\n"
       R"({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo \u00e9"}]})" "\n"
       R"({"instruction": "Add", "input": "1 1", "output": "2"})" "\n");
  seed("jsonl_dataset", "pretokenized.jsonl",
       R"({"input_ids": [1, 2, 3, 4], "labels": [-100, 2, 3, 4]})" "\n" R"({"input_ids": [5, 6, 7]})" "\n");
  seed("jsonl_dataset", "near_valid.jsonl",
       "\n" R"({"text": "a"})" "\r\n" R"({"messages": [{"role": "tool", "content": 3}]})" "\n"
       R"({"input_ids": [1, 2], "labels": [1]})" "\n" R"({"text": "unterminated)");
}

// tokenizer.json seeds: the test tokenizers of tests/data cut to their first merges (and
// the vocabulary those need), so each stays a few KB.
void tokenizer_seeds(const fs::path& source) {
  for (const char* name : {"bpe", "bpe_string_merges", "gpt2"}) {
    json t = json::parse(read(source / "tests/data/tokenizer_reference" / name / "tokenizer.json"));
    json& model = t["model"];
    json vocab = json::object();
    for (const auto& [token, id] : model["vocab"].items())
      if (id.get<int64_t>() < 300) vocab[token] = id;
    json merges = json::array();
    for (const json& m : model["merges"]) {
      const std::string joined = m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>();
      const std::string a = joined.substr(0, joined.find(' ')), b = joined.substr(joined.find(' ') + 1);
      if (merges.size() < 40 && vocab.contains(a) && vocab.contains(b) && vocab.contains(a + b)) merges.push_back(m);
    }
    model["vocab"] = vocab;
    model["merges"] = merges;
    json added = json::array();
    int64_t id = 300;
    for (json token : t["added_tokens"]) {
      if (added.size() == 6) break;
      token["id"] = id++;
      added.push_back(token);
    }
    t["added_tokens"] = added;
    seed("tokenizer_json", std::string(name) + ".json", t.dump());
  }
  seed("tokenizer_json", "minimal.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})");
}

// A checkpoint input is a file selector byte and that file's bytes (fuzz_entries.h).
void checkpoint_seeds() {
  const std::vector<std::string>& files = testing_support::fuzz::checkpoint_files();
  const std::vector<std::string> valid = testing_support::fuzz::valid_checkpoint_files();
  for (size_t i = 0; i < files.size(); ++i)
    seed("checkpoint", std::to_string(i) + "-" + files[i], std::string(1, static_cast<char>(i)) + valid[i]);
  json state = json::parse(valid[0]);
  state["cursor"] = 7;  // past the order: must be refused
  seed("checkpoint", "0-cursor_past_order.json", std::string(1, '\0') + state.dump());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_corpus SOURCE_DIR\n");
    return 2;
  }
  const fs::path source = argv[1];
  corpus = source / "tests/fuzz/corpus";
  fs::remove_all(corpus);
  safetensors_seeds();
  hf_config_seeds(source);
  jsonl_seeds();
  tokenizer_seeds(source);
  checkpoint_seeds();
  for (const auto& e : fs::directory_iterator(corpus)) {
    const auto n = std::distance(fs::directory_iterator(e.path()), fs::directory_iterator());
    std::printf("%s: %ld seeds\n", e.path().filename().c_str(), static_cast<long>(n));
  }
  return 0;
}
