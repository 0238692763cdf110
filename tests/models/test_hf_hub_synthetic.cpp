// Tests for Hugging Face model ids resolved from the local cache (models/hf_hub.h) and for
// synthetic models (models/synthetic.h): small presets are built for real on the CPU; the
// 70B sizes are checked from the config alone (nothing that size is allocated here).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "engine/quant/nf4_linear.h"
#include "models/hf_hub.h"
#include "models/synthetic.h"
#include "models/weight_loader.h"
#include "tests/support/errors.h"

namespace {

namespace fs = std::filesystem;

// Sets an environment variable for one scope, restoring the old value.
struct ScopedEnv {
  std::string name;
  std::optional<std::string> old;
  ScopedEnv(const char* n, const std::optional<std::string>& value) : name(n) {
    if (const char* v = std::getenv(n)) old = v;
    if (value) ::setenv(n, value->c_str(), 1);
    else ::unsetenv(n);
  }
  ~ScopedEnv() {
    if (old) ::setenv(name.c_str(), old->c_str(), 1);
    else ::unsetenv(name.c_str());
  }
};

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("hf_hub_" + std::to_string(::getpid()));
  TempDir() { fs::remove_all(path); fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

fs::path make_snapshot(const fs::path& cache, const std::string& repo, const std::string& rev) {
  const fs::path s = cache / repo / "snapshots" / rev;
  fs::create_directories(s);
  std::ofstream(s / "config.json") << "{}";
  return s;
}

TEST(HfHub, CacheDirectoryFollowsHuggingFaceHubOrder) {
  ScopedEnv a("HF_HUB_CACHE", "/x/hub-cache"), b("HF_HOME", "/y/home"), c("HOME", "/z");
  EXPECT_EQ(models::hf_hub_cache_dir(), "/x/hub-cache");
  ScopedEnv a2("HF_HUB_CACHE", std::nullopt);
  EXPECT_EQ(models::hf_hub_cache_dir(), "/y/home/hub");
  ScopedEnv b2("HF_HOME", std::nullopt);
  EXPECT_EQ(models::hf_hub_cache_dir(), "/z/.cache/huggingface/hub");
}

TEST(HfHub, ModelIds) {
  EXPECT_TRUE(models::is_hf_model_id("meta-llama/Llama-3.3-70B-Instruct"));
  EXPECT_TRUE(models::is_hf_model_id("unsloth/llama-3-8b-bnb-4bit"));
  for (const char* bad : {"llama", "/abs/path", "a/b/c", "../x", "a/..", "a/", "org/na me"})
    EXPECT_FALSE(models::is_hf_model_id(bad)) << bad;
}

TEST(HfHub, RefsMainWinsElseTheNewestSnapshot) {
  TempDir tmp;
  ScopedEnv env("HF_HUB_CACHE", tmp.path.string());
  const std::string repo = "models--meta-llama--Llama-3.3-70B-Instruct";
  const fs::path old_snap = make_snapshot(tmp.path, repo, "aaaa");
  const fs::path new_snap = make_snapshot(tmp.path, repo, "bbbb");
  fs::last_write_time(old_snap, fs::file_time_type::clock::now() - std::chrono::hours(1));
  EXPECT_EQ(models::resolve_hf_model("meta-llama/Llama-3.3-70B-Instruct"), new_snap.string());
  fs::create_directories(tmp.path / repo / "refs");
  std::ofstream(tmp.path / repo / "refs" / "main") << "aaaa";
  EXPECT_EQ(models::resolve_hf_model("meta-llama/Llama-3.3-70B-Instruct"), old_snap.string());
}

TEST(HfHub, AbsentModelSaysHowToDownloadIt) {
  TempDir tmp;
  ScopedEnv env("HF_HUB_CACHE", tmp.path.string());
  testing_support::expect_one_line_error(
      [] { models::resolve_hf_model("meta-llama/Llama-3.3-70B-Instruct"); },
      {tmp.path.string(), "huggingface-cli download meta-llama/Llama-3.3-70B-Instruct"});
  // A snapshot without config.json (an interrupted download) does not count.
  fs::create_directories(tmp.path / "models--org--name" / "snapshots" / "cccc");
  testing_support::expect_one_line_error([] { models::resolve_hf_model("org/name"); },
                                         {"huggingface-cli download org/name"});
}

TEST(Synthetic, PresetNames) {
  EXPECT_EQ(models::synthetic_preset("synthetic:llama3-70b"), "llama3-70b");
  EXPECT_EQ(models::synthetic_preset("llama3-70b"), "");
}

// Llama-3-70B from the published shapes: 68,451,041,280 linear weights, 4.127 bits each.
TEST(Synthetic, Llama3_70bSizesWithoutAllocating) {
  const models::ModelBytes b = models::nf4_model_bytes(models::preset("llama3-70b"), engine::DType::BF16);
  // sum over 80 layers of n/2 + n/64 + 4 n/16384 + 4 (the offset), n per linear shape.
  EXPECT_EQ(b.nf4, 35'311'782'080);
  EXPECT_EQ(b.dense, 2ll * 128256 * 8192 * 2 + 161ll * 8192 * 2);  // embed, lm_head, norms
  EXPECT_EQ(b.largest_linear, 28672ll * 8192);
  EXPECT_LT(b.total(), 40ll << 30);  // fits one 80 GB GPU with room for activations
}

TEST(Synthetic, TinyPresetIsAFrozenNf4ModelOfTheExpectedSize) {
  const models::LlamaConfig c = models::preset("tiny");
  const auto m = models::synthetic_llama(c, 5, engine::Device::cpu(), 2);
  EXPECT_TRUE(m->base_frozen());
  const models::ModelBytes b = models::nf4_model_bytes(c, engine::DType::F32);
  EXPECT_EQ(static_cast<int64_t>(m->frozen_bytes()), b.nf4);
  for (const auto* l : m->layers()[0].linears()) EXPECT_STREQ(l->frozen->format(), "nf4");
  // Same seed, same weights; another seed, others.
  const auto same = models::synthetic_llama(c, 5, engine::Device::cpu(), 1);
  const auto other = models::synthetic_llama(c, 6, engine::Device::cpu(), 1);
  auto packed = [](const models::LlamaModel& x) {
    auto* q = dynamic_cast<const engine::quant::Nf4FrozenLinear*>(x.layers()[1].down_proj.frozen.get());
    return q->weight().packed.to_floats();
  };
  EXPECT_EQ(packed(*m), packed(*same));
  EXPECT_NE(packed(*m), packed(*other));
  // A usable model: a finite loss near log(vocab) for random weights.
  engine::Tensor ids = engine::Tensor::from_ints({1, 2, 3, 4, 5, 6, 7, 8}, {2, 4});
  const float loss = m->loss(ids, ids).to_floats()[0];
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_LT(std::fabs(loss - std::log(static_cast<float>(c.vocab))), 0.5f * std::log(float(c.vocab)));
}

}  // namespace
