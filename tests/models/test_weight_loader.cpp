// Tests for the streaming quantizing loader (models/weight_loader.h): a sharded BF16
// checkpoint written here loads to the same model as the old path (every tensor as f32,
// LlamaModel from named tensors, freeze_base NF4), NF4 bytes bitwise; every bad file is one
// line naming the file and tensor; peak RSS of a ~250 MB load, measured in a child process,
// stays within the final host model + the largest tensor + 256 MB.
#include "models/weight_loader.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/io/safetensors.h"
#include "engine/quant/nf4_linear.h"
#include "engine/rng.h"
#include "kernels/math/bf16.h"
#include "models/hf_config.h"
#include "tests/support/errors.h"

namespace {

namespace fs = std::filesystem;
using engine::DType;
using engine::Tensor;
using models::LlamaConfig;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("weight_loader_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

LlamaConfig small_config(int64_t hidden = 128, int64_t layers = 2, int64_t intermediate = 640,
                         int64_t vocab = 96) {
  LlamaConfig c;
  c.hidden = hidden;
  c.layers = layers;
  c.heads = hidden / 32;
  c.kv_heads = std::max<int64_t>(1, hidden / 128);
  c.head_dim = 32;
  c.intermediate = intermediate;
  c.vocab = vocab;
  return c;
}

void write_config(const fs::path& dir, const LlamaConfig& c) {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                      {"hidden_size", c.hidden},           {"num_hidden_layers", c.layers},
                      {"num_attention_heads", c.heads},    {"num_key_value_heads", c.kv_heads},
                      {"head_dim", c.head_dim},            {"intermediate_size", c.intermediate},
                      {"vocab_size", c.vocab},             {"rms_norm_eps", 1e-5},
                      {"tie_word_embeddings", c.tie_embeddings}, {"torch_dtype", "bfloat16"}};
  std::ofstream(dir / "config.json") << j.dump(1);
}

// A BF16 tensor of small pseudo-random values (a cheap LCG: the values do not matter, only
// that they are varied and finite).
Tensor random_bf16(const engine::Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape, DType::BF16);
  uint16_t* p = t.data<uint16_t>();
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (int64_t i = 0; i < shape.numel(); ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const float v = (static_cast<float>((s >> 40) & 0xffff) / 32768.0f - 1.0f) * 0.05f;
    p[i] = kmath::float_to_bf16_bits(v);
  }
  return t;
}

// Writes a sharded checkpoint (model-0000i-of-0000n.safetensors + index); `edit` may change
// the tensors before they are written (drop, reshape, retype, poison).
using Tensors = std::vector<std::pair<std::string, Tensor>>;
void write_checkpoint(const fs::path& dir, const LlamaConfig& c, int shards,
                      const std::function<void(Tensors&)>& edit = {}) {
  write_config(dir, c);
  Tensors all;
  uint64_t seed = 1;
  for (const models::WeightSpec& s : models::llama_weight_specs(c)) {
    Tensor t = s.shape.rank() == 1 ? Tensor::full(s.shape, 1.0f, DType::BF16) : random_bf16(s.shape, seed++);
    all.push_back({s.name, t});
  }
  if (edit) edit(all);
  nlohmann::json map = nlohmann::json::object();
  const size_t per = (all.size() + shards - 1) / shards;
  for (int k = 0; k < shards; ++k) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, shards);
    Tensors part;
    for (size_t i = k * per; i < std::min(all.size(), (k + 1) * per); ++i) {
      part.push_back(all[i]);
      map[all[i].first] = name;
    }
    engine::io::write_safetensors((dir / name).string(), part, {{"format", "pt"}});
  }
  std::ofstream(dir / "model.safetensors.index.json")
      << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump(1);
}

// The old path of tools/train/trainer.cpp: every tensor as f32, then freeze_base.
std::unique_ptr<models::LlamaModel> load_old_path(const LlamaConfig& c, const fs::path& dir) {
  engine::io::SafetensorsIndex index(dir.string());
  models::NamedTensors weights;
  for (const std::string& n : index.names()) weights.push_back({n, index.load(n)});
  auto m = std::make_unique<models::LlamaModel>(c, weights, index.path());
  m->freeze_base(models::BaseFormat::NF4);
  return m;
}

void expect_bytes_equal(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.defined(), b.defined()) << what;
  if (!a.defined()) return;
  ASSERT_EQ(a.nbytes(), b.nbytes()) << what;
  EXPECT_EQ(0, std::memcmp(a.raw_data(), b.raw_data(), a.nbytes())) << what;
}

const engine::quant::Nf4Weight& nf4_of(const models::Linear& l) {
  auto* q = dynamic_cast<const engine::quant::Nf4FrozenLinear*>(l.frozen.get());
  EXPECT_NE(q, nullptr);
  return q->weight();
}

TEST(WeightLoader, ShardedBf16StreamsToTheOldPathsModelBitwise) {
  TempDir tmp;
  // intermediate x hidden = 160k values: three 64k-value chunks over three threads.
  const LlamaConfig c = small_config(256, 2, 640, 96);
  write_checkpoint(tmp.path, c, 3);
  models::LoadOptions o;
  o.threads = 3;
  std::ostringstream log;
  o.log = &log;
  const auto streamed = models::load_llama(c, tmp.path.string(), o);
  const auto old = load_old_path(c, tmp.path);
  EXPECT_TRUE(streamed->base_frozen());
  ASSERT_EQ(streamed->layers().size(), old->layers().size());
  for (size_t i = 0; i < old->layers().size(); ++i) {
    auto a = streamed->layers()[i].linears(), b = old->layers()[i].linears();
    for (size_t j = 0; j < a.size(); ++j) {
      const std::string what = "layer " + std::to_string(i) + " linear " + std::to_string(j);
      const auto &x = nf4_of(*a[j]), &y = nf4_of(*b[j]);
      EXPECT_EQ(x.shape, y.shape) << what;
      expect_bytes_equal(x.packed, y.packed, what + " packed");
      expect_bytes_equal(x.absmax_q, y.absmax_q, what + " absmax codes");
      expect_bytes_equal(x.nested_absmax, y.nested_absmax, what + " nested absmax");
      EXPECT_EQ(x.offset, y.offset) << what;
    }
  }
  const auto pa = streamed->named_parameters(), pb = old->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].first, pb[i].first);
    EXPECT_EQ(pa[i].second.dtype(), DType::F32) << pa[i].first;
    expect_bytes_equal(pa[i].second, pb[i].second, pa[i].first);
  }
  // Not a terminal: a few plain lines, the last one complete.
  EXPECT_NE(log.str().find("loading: " + std::to_string(models::llama_weight_specs(c).size()) + "/"),
            std::string::npos)
      << log.str();
  EXPECT_EQ(log.str().find('\r'), std::string::npos);
}

TEST(WeightLoader, ProgressOnATerminalIsOneLineRewrittenInPlace) {
  TempDir tmp;
  const LlamaConfig c = small_config();
  write_checkpoint(tmp.path, c, 2);
  models::LoadOptions o;
  std::ostringstream log;
  o.log = &log;
  o.live_progress = true;
  models::load_llama(c, tmp.path.string(), o);
  const std::string n = std::to_string(models::llama_weight_specs(c).size());
  // Rewritten with '\r', at most every 0.2 s, always with the final count, one newline.
  const std::string text = log.str();
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.front(), '\r') << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  EXPECT_EQ(text.back(), '\n') << text;
  EXPECT_NE(text.find("loading: " + n + "/" + n + " tensors"), std::string::npos) << text;
  EXPECT_NE(text.find("GB/s"), std::string::npos) << text;
}

TEST(WeightLoader, HostQuantizerEqualsQuantizeNf4ForEveryDtypeAndRaggedSizes) {
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    engine::Generator gen(7);
    // 3 x 100: the last block is partial and the element count is even; 1 x 131073 odd.
    for (engine::Shape shape : {engine::Shape{3, 100}, engine::Shape{1, 131073}}) {
      Tensor w = engine::normal(shape, 0.0f, 1.0f, gen).to_dtype(dtype);
      const auto ref = engine::quant::quantize_nf4(w);
      const auto got = models::quantize_nf4_host(w.raw_data(), dtype, shape, 4, "w");
      expect_bytes_equal(got.packed, ref.packed, "packed");
      expect_bytes_equal(got.absmax_q, ref.absmax_q, "absmax codes");
      expect_bytes_equal(got.nested_absmax, ref.nested_absmax, "nested");
      EXPECT_EQ(got.offset, ref.offset);
    }
  }
}

TEST(WeightLoader, TiedEmbeddingsAndSingleFileLoad) {
  TempDir tmp;
  LlamaConfig c = small_config();
  c.tie_embeddings = true;
  write_checkpoint(tmp.path, c, 1);
  fs::remove(tmp.path / "model.safetensors.index.json");
  fs::rename(tmp.path / "model-00001-of-00001.safetensors", tmp.path / "model.safetensors");
  const auto m = models::load_llama(c, tmp.path.string(), {});
  const auto old = load_old_path(c, tmp.path);
  const auto pa = m->named_parameters(), pb = old->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) expect_bytes_equal(pa[i].second, pb[i].second, pa[i].first);
}

// ---- Errors: one line naming the file and the tensor.

const char* kQ = "model.layers.0.self_attn.q_proj.weight";  // in the first shard

void expect_load_error(const std::function<void(Tensors&)>& edit,
                       std::initializer_list<std::string> parts,
                       const std::function<void(const fs::path&)>& after = {}) {
  TempDir tmp;
  const LlamaConfig c = small_config();
  write_checkpoint(tmp.path, c, 2, edit);
  if (after) after(tmp.path);
  testing_support::expect_one_line_error([&] { models::load_llama(c, tmp.path.string(), {}); },
                                         parts);
}

TEST(WeightLoaderErrors, MissingTensorForTheArchitecture) {
  expect_load_error([](Tensors& t) { std::erase_if(t, [](auto& p) { return p.first == kQ; }); },
                    {"model.safetensors.index.json", "missing weight", kQ});
}

TEST(WeightLoaderErrors, WrongShape) {
  expect_load_error(
      [](Tensors& t) {
        for (auto& [n, v] : t)
          if (n == kQ) v = random_bf16({v.dim(0), v.dim(1) - 1}, 3);
      },
      {"model-00001-of-00002.safetensors", kQ, "shape [128, 127]", "expected [128, 128]"});
}

TEST(WeightLoaderErrors, WrongDtype) {
  expect_load_error(
      [](Tensors& t) {
        for (auto& [n, v] : t)
          if (n == kQ) v = Tensor::zeros(v.shape(), DType::I32);
      },
      {"model-00001-of-00002.safetensors", kQ, "dtype I32"});
}

TEST(WeightLoaderErrors, NonFiniteValue) {
  expect_load_error(
      [](Tensors& t) {
        for (auto& [n, v] : t)
          if (n == kQ) v.data<uint16_t>()[77] = 0x7f80;  // +Inf
      },
      {"model-00001-of-00002.safetensors", kQ, "non-finite", "index 77"});
}

TEST(WeightLoaderErrors, UnexpectedTensor) {
  expect_load_error(
      [](Tensors& t) { t.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", Tensor::zeros({16})}); },
      {"model-00002-of-00002.safetensors", "unexpected weight", "rotary_emb.inv_freq"});
}

TEST(WeightLoaderErrors, MissingShard) {
  expect_load_error({}, {"model-00002-of-00002.safetensors"},
                    [](const fs::path& d) { fs::remove(d / "model-00002-of-00002.safetensors"); });
}

TEST(WeightLoaderErrors, TensorInTheIndexButAbsentFromItsShard) {
  expect_load_error({}, {"model-00001-of-00002.safetensors", "model.norm.weight"}, [](const fs::path& d) {
    nlohmann::json j = nlohmann::json::parse(std::ifstream(d / "model.safetensors.index.json"));
    j["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
    std::ofstream(d / "model.safetensors.index.json") << j.dump();
  });
}

TEST(WeightLoaderErrors, TruncatedShard) {
  expect_load_error({}, {"model-00002-of-00002.safetensors"}, [](const fs::path& d) {
    const fs::path p = d / "model-00002-of-00002.safetensors";
    fs::resize_file(p, fs::file_size(p) - 100);
  });
}

// ---- Peak memory: a ~250 MB BF16 checkpoint loaded in a child process, whose VmHWM
// (and ru_maxrss) must stay within final host model + largest tensor + 256 MB. The old
// path holds every weight as f32 (~490 MB here) and fails this bound.

TEST(WeightLoaderMemory, PeakRssWithinFinalModelPlusLargestTensorPlus256MB) {
  TempDir tmp;
  LlamaConfig c = small_config(1024, 8, 4096, 4096);  // 122M linear parameters, 244 MB BF16
  c.heads = 16;
  c.head_dim = 64;
  c.kv_heads = 4;
  // Written by a child of its own, so that this process (whose RSS the loading child
  // inherits as its starting high-water mark) never holds the checkpoint.
  const pid_t writer = ::fork();
  ASSERT_GE(writer, 0);
  if (writer == 0) {
    try {
      write_checkpoint(tmp.path, c, 4);
    } catch (...) {
      ::_exit(1);
    }
    ::_exit(0);
  }
  int written = -1;
  ASSERT_EQ(writer, ::waitpid(writer, &written, 0));
  ASSERT_TRUE(WIFEXITED(written) && WEXITSTATUS(written) == 0);
  int64_t largest = 0, checkpoint = 0;
  for (const models::WeightSpec& s : models::llama_weight_specs(c)) {
    largest = std::max(largest, 2 * s.shape.numel());
    checkpoint += 2 * s.shape.numel();
  }
  ASSERT_GT(checkpoint, 200'000'000);
  int fds[2];
  ASSERT_EQ(0, ::pipe(fds));
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    long long out[3] = {-1, -1, -1};
    out[2] = static_cast<long long>(models::peak_rss_bytes());  // the start
    try {
      models::LoadOptions o;
      o.threads = 2;
      const auto m = models::load_llama(c, tmp.path.string(), o);
      long long host = static_cast<long long>(m->frozen_bytes());
      for (const auto& [n, t] : m->named_parameters()) host += static_cast<long long>(t.nbytes());
      out[0] = static_cast<long long>(models::peak_rss_bytes());
      out[1] = host;
    } catch (...) {
    }
    (void)!::write(fds[1], out, sizeof out);
    ::_exit(0);
  }
  ::close(fds[1]);
  long long got[3] = {0, 0, 0};
  ASSERT_EQ(static_cast<ssize_t>(sizeof got), ::read(fds[0], got, sizeof got));
  ::close(fds[0]);
  int status = 0;
  struct rusage usage{};
  ASSERT_EQ(pid, ::wait4(pid, &status, 0, &usage));
  ASSERT_GT(got[0], 0) << "the child's load failed";
  const long long bound = got[1] + largest + (256ll << 20);
  const long long maxrss = static_cast<long long>(usage.ru_maxrss) * 1024;
  std::printf("peak RSS %.1f MB (ru_maxrss %.1f MB; %.1f MB at the start), bound %.1f MB = final host model %.1f MB + "
              "largest tensor %.1f MB + 256 MB; checkpoint %.1f MB\n",
              got[0] / 1e6, maxrss / 1e6, got[2] / 1e6, bound / 1e6, got[1] / 1e6, largest / 1e6, checkpoint / 1e6);
  EXPECT_LE(got[0], bound);
  EXPECT_LE(maxrss, bound);
}

}  // namespace
