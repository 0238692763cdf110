#include "tests/support/fuzz_entries.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>

#include "engine/error.h"
#include "engine/io/safetensors.h"
#include "engine/optim/adamw.h"
#include "models/chat_template.h"
#include "models/dataset.h"
#include "models/hf_config.h"
#include "models/tokenizer.h"
#include "tools/train/checkpoint.h"

namespace testing_support::fuzz {
namespace {

namespace fs = std::filesystem;

// A scratch directory of this process (fuzzers run one input at a time per process),
// removed at exit.
const fs::path& scratch() {
  static const struct Dir {
    fs::path path = fs::temp_directory_path() / ("engine_fuzz_" + std::to_string(::getpid()));
    Dir() { fs::create_directories(path); }
    ~Dir() {
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  } dir;
  return dir.path;
}

void write_bytes(const fs::path& path, const void* data, size_t size) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
}

std::string put(const char* name, const uint8_t* data, size_t size) {
  const fs::path p = scratch() / name;
  write_bytes(p, data, size);
  return p.string();
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs `fn`; an engine::Error is the reader saying no, which is fine.
template <typename Fn>
void expect_clean(Fn fn) {
  try {
    fn();
  } catch (const engine::Error&) {
  }
}

// A tiny model with LoRA on two targets, its AdamW, and a valid checkpoint of both
// (written once per process by save_checkpoint, as a run does).
struct CheckpointFixture {
  static models::LlamaConfig config() {
    models::LlamaConfig c = models::preset("tiny");
    c.hidden = 16, c.layers = 1, c.heads = 2, c.kv_heads = 1, c.head_dim = 8, c.intermediate = 16, c.vocab = 12;
    return c;
  }

  CheckpointFixture() : model(config(), 5) {
    model.freeze_base(models::BaseFormat::F32);
    models::LoraConfig lora;
    lora.r = 2;
    lora.targets = {"q_proj", "v_proj"};
    model.add_lora(lora, 7);
    optimizer = std::make_unique<engine::optim::AdamW>(model.trainable_parameters(), engine::optim::AdamWConfig{});
    const std::vector<models::Example> train_split = {{{1, 2, 3}, {1, 2, 3}}, {{4, 5}, {-100, 5}}, {{6, 7}, {6, 7}}};
    const nlohmann::json options = {{"lr", 0.001}, {"seed", 1}};
    identity = train::run_identity("tiny", model, optimizer->kind(), train_split, {}, options);
    train::CheckpointData data;
    data.progress.step = 2;
    data.progress.shuffle_offset = 3;
    data.progress.order = {2, 0, 1};
    data.progress.cursor = 2;
    data.progress.tokens_seen = 5;
    data.progress.train_seconds = 0.5;
    data.progress.before = {2.5, 0.25, 3};
    data.identity = identity;
    data.run_config = options;
    data.optimizer = optimizer->state();
    const fs::path run = scratch() / "run", metrics = scratch() / "metrics.jsonl";
    fs::remove_all(run);
    const std::string line = R"({"event": "train", "step": 1, "loss": 2.5})" "\n";
    write_bytes(metrics, line.data(), line.size());
    dir = train::save_checkpoint(run, data, model, lora, "tiny", metrics, 1);
    for (const std::string& name : checkpoint_files()) valid.push_back(read_bytes(dir / name));
  }

  models::LlamaModel model;
  std::unique_ptr<engine::optim::AdamW> optimizer;
  nlohmann::json identity;
  fs::path dir;
  std::vector<std::string> valid;  // checkpoint_files()' bytes
};

CheckpointFixture& checkpoint_fixture() {
  static CheckpointFixture fixture;
  return fixture;
}

// What the training loop indexes with after a resume (tools/train/trainer.cpp takes
// order[cursor] and the units it names): a load that returns must make that safe.
void require_resumable(const train::TrainProgress& p) {
  const int64_t n = static_cast<int64_t>(p.order.size());
  bool ok = p.step >= 0 && p.cursor >= 0 && p.cursor <= n;
  std::vector<bool> seen(p.order.size());
  for (int64_t unit : p.order) {
    ok = ok && unit >= 0 && unit < n && !seen[static_cast<size_t>(unit)];
    if (ok) seen[static_cast<size_t>(unit)] = true;
  }
  if (!ok) {
    std::fprintf(stderr, "load_checkpoint accepted step %lld, cursor %lld in an order of %lld that is no permutation\n",
                 static_cast<long long>(p.step), static_cast<long long>(p.cursor), static_cast<long long>(n));
    std::abort();
  }
}

}  // namespace

const std::vector<std::string>& checkpoint_files() {
  static const std::vector<std::string> files = {"trainer_state.json", "optimizer.safetensors",
                                                 "adapter_config.json", "adapter_model.safetensors",
                                                 "run_config.json", "metrics.jsonl"};
  return files;
}

std::vector<std::string> valid_checkpoint_files() { return checkpoint_fixture().valid; }

void checkpoint(const uint8_t* data, size_t size) {
  if (size == 0) return;
  CheckpointFixture& f = checkpoint_fixture();
  const size_t which = data[0] % checkpoint_files().size();
  const fs::path file = f.dir / checkpoint_files()[which];
  struct Restore {  // the next input starts from the valid checkpoint again
    const fs::path& file;
    const std::string& bytes;
    ~Restore() { write_bytes(file, bytes.data(), bytes.size()); }
  } restore{file, f.valid[which]};
  write_bytes(file, data + 1, size - 1);
  expect_clean([&] {
    std::string metrics;
    const train::CheckpointData d = train::load_checkpoint(f.dir, f.identity, f.model, &metrics);
    f.optimizer->load_state(d.optimizer);
    require_resumable(d.progress);
  });
}

void safetensors(const uint8_t* data, size_t size) {
  const std::string path = put("fuzz.safetensors", data, size);
  expect_clean([&] {
    engine::io::SafetensorsFile f(path);
    for (const std::string& name : f.names()) {
      const engine::io::TensorInfo& info = f.info(name);
      if (info.nbytes() > (1u << 20)) continue;  // the header was checked against the file size
      std::vector<uint8_t> bytes(info.nbytes());
      f.read(name, bytes);
      if (info.dtype && info.shape.size() <= 4) (void)f.load(name);
    }
  });
}

void hf_config(const uint8_t* data, size_t size) {
  const std::string path = put("config.json", data, size);
  expect_clean([&] { (void)models::load_hf_config(path); });
}

void jsonl_dataset(const uint8_t* data, size_t size) {
  const std::string path = put("data.jsonl", data, size);
  static const models::ByteTokenizer tokenizer;
  models::DatasetOptions o;
  o.max_seq_len = 64;
  o.threads = 1;
  o.date = "26 Jul 2024";
  o.chat_template = models::ChatTemplate::Llama3;
  expect_clean([&] { (void)models::load_jsonl_dataset(path, tokenizer, o); });
}

void tokenizer_json(const uint8_t* data, size_t size) {
  const fs::path dir = scratch() / "tokenizer";
  fs::create_directories(dir);
  const std::string path = (dir / "tokenizer.json").string();
  write_bytes(path, data, size);
  expect_clean([&] {
    const auto tok = models::load_tokenizer(dir.string());
    const std::vector<int32_t> ids = tok->encode("Hello, world! 123 <|eot_id|> \xc3\xa9t\xc3\xa9\n");
    (void)tok->decode(ids);
    (void)tok->encode_hf("<|begin_of_text|>hi", true);
  });
}

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {{"safetensors", safetensors},
                                          {"hf_config", hf_config},
                                          {"jsonl_dataset", jsonl_dataset},
                                          {"tokenizer_json", tokenizer_json},
                                          {"checkpoint", checkpoint}};
  return all;
}

}  // namespace testing_support::fuzz
