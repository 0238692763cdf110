// `train70b merge` (tools/train/merge.cpp) against PEFT's merge_and_unload() on the tiny
// model and nonzero adapter of tests/data/hf_reference/ (reference written by
// tests/data/make_merge_reference.py): the merged weights, the logits of the merged model
// loaded back by the engine as a plain model, and the file layout transformers writes.
//
// Bounds (derived):
//  - weights: both sides compute W + s (B A) in fp32 and round to bf16 once; they may differ
//    only in how the r = 3 products are summed (torch's matmul may fuse multiply-adds), a few
//    fp32 ulps, which can move a value across a bf16 rounding boundary: at most 1 bf16 ulp,
//    and only rarely (the share is checked: under 1 in 1000).
//  - logits vs the bf16-weight reference (the same bf16 weights run in f32 by torch): the f32
//    chain bound of tests/models/test_hf_reference.cpp, 2 K u (|ref| + rms ref) + u |ref|, with
//    K the longest chain of rounded operations (no LoRA term: the model is plain).
//  - logits vs PEFT's f32 merged model: the bf16 rounding of the weights is the only
//    difference beyond f32 roundoff, so the error is that of the bf16-weight reference
//    (measured by torch, the same-precision baseline) plus the f32 bound above.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/quant/nf4.h"
#include "kernels/math/bf16.h"
#include "models/bnb_checkpoint.h"
#include "models/hf_config.h"
#include "models/llama.h"
#include "tests/support/compare.h"
#include "tests/support/process.h"
#include "tools/train/merge.h"

namespace {

namespace fs = std::filesystem;
using engine::Tensor;
using engine::io::SafetensorsFile;
using engine::io::SafetensorsIndex;

const std::string kHf = std::string(ENGINE_SOURCE_DIR) + "/tests/data/hf_reference";
const std::string kRef = std::string(ENGINE_SOURCE_DIR) + "/tests/data/merge_reference/reference.safetensors";

fs::path temp_dir(const std::string& stem) {
  const fs::path p = fs::temp_directory_path() / (stem + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

std::vector<uint16_t> bf16_bits(const Tensor& t) {
  const uint16_t* p = static_cast<const uint16_t*>(t.raw_data());
  return std::vector<uint16_t>(p, p + t.numel());
}

// Distance in bf16 ulps between two finite bf16 values (same sign expected).
int ulps(uint16_t a, uint16_t b) {
  auto key = [](uint16_t x) { return (x & 0x8000) ? -int(x & 0x7fff) : int(x); };
  return std::abs(key(a) - key(b));
}

std::vector<float> engine_logits(const fs::path& dir, const Tensor& ids) {
  const models::LlamaConfig config = models::load_hf_config((dir / "config.json").string());
  SafetensorsIndex index(dir.string());
  models::NamedTensors weights;
  for (const std::string& n : index.names()) weights.push_back({n, index.load(n).to_dtype(engine::DType::F32)});
  models::LlamaModel model(config, weights, dir.string());
  model.freeze_base(models::BaseFormat::F32);
  engine::NoGradGuard no_grad;
  return model.logits(ids).to_floats();
}

// Values at the real (not padded) positions; row 1 of the batch holds 5 tokens.
std::vector<float> real(const std::vector<float>& logits, const Tensor& ids, int64_t vocab) {
  const int64_t seq = ids.dim(1);
  const int64_t lengths[2] = {seq, 5};
  std::vector<float> out;
  for (int64_t row = 0; row < 2; ++row)
    out.insert(out.end(), logits.begin() + row * seq * vocab,
               logits.begin() + (row * seq + lengths[row]) * vocab);
  return out;
}

TEST(Train70bMerge, MatchesPeftMergeAndUnload) {
  const fs::path out = temp_dir("merge_peft");
  train::MergeOptions o;
  o.model_dir = kHf;
  o.adapter_dir = kHf;
  o.output_dir = out.string();
  o.max_shard_bytes = 100'000;  // several shards (the CLI's minimum is 1MB)
  train::merge_adapter(o);

  SafetensorsFile ref(kRef);
  const auto names = nlohmann::json::parse(ref.metadata().at("names")).get<std::vector<std::string>>();

  // Layout: transformers' shard names and index, every tensor HF's name, BF16, format pt.
  std::ifstream idx_file(out / "model.safetensors.index.json");
  ASSERT_TRUE(idx_file.good());
  const nlohmann::json idx = nlohmann::json::parse(idx_file);
  std::set<std::string> mapped, shard_files;
  uint64_t total = 0;
  for (const auto& [name, file] : idx.at("weight_map").items()) {
    mapped.insert(name);
    shard_files.insert(file.get<std::string>());
  }
  EXPECT_EQ(mapped, std::set<std::string>(names.begin(), names.end()));
  ASSERT_GT(shard_files.size(), 1u);
  const size_t n = shard_files.size();
  size_t k = 1;
  for (const std::string& f : shard_files) {
    char want[64];
    std::snprintf(want, sizeof want, "model-%05zu-of-%05zu.safetensors", k++, n);
    EXPECT_EQ(f, want);
    SafetensorsFile shard((out / f).string());
    EXPECT_EQ(shard.metadata().at("format"), "pt");
    for (const std::string& t : shard.names()) {
      EXPECT_EQ(shard.info(t).dtype_name, "BF16") << t;
      EXPECT_EQ(idx["weight_map"][t], f) << t;
      total += shard.info(t).nbytes();
    }
  }
  EXPECT_EQ(idx["metadata"]["total_size"].get<uint64_t>(), total);
  const nlohmann::json cfg = nlohmann::json::parse(std::ifstream(out / "config.json"));
  EXPECT_EQ(cfg.at("dtype"), "bfloat16");
  EXPECT_FALSE(cfg.contains("quantization_config"));

  // Weights: within 1 bf16 ulp of PEFT's, almost all bitwise equal.
  SafetensorsIndex merged(out.string());
  int64_t values = 0, differ = 0;
  for (const std::string& name : names) {
    const std::vector<uint16_t> got = bf16_bits(merged.load(name)), want = bf16_bits(ref.load("merged." + name));
    ASSERT_EQ(got.size(), want.size()) << name;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_LE(ulps(got[i], want[i]), 1) << name << " [" << i << "]";
      differ += got[i] != want[i];
    }
    values += static_cast<int64_t>(got.size());
  }
  std::printf("[ measured ] %lld of %lld merged weights differ from PEFT's by 1 bf16 ulp\n",
              (long long)differ, (long long)values);
  EXPECT_LT(differ * 1000, values);

  // Logits of the merged model, loaded by the engine as a plain model.
  const Tensor ids = ref.load("input_ids");
  const models::LlamaConfig c = models::load_hf_config((out / "config.json").string());
  const std::vector<float> got = real(engine_logits(out, ids), ids, c.vocab);
  const std::vector<float> bf16w = real(ref.load("bf16w.logits").to_floats(), ids, c.vocab);
  const std::vector<float> f32 = real(ref.load("logits").to_floats(), ids, c.vocab);
  const int64_t seq = ids.dim(1);
  const int64_t attn = std::max(c.hidden, c.q_dim()), mlp = std::max(c.hidden, c.intermediate);
  const int64_t chain = c.layers * (c.hidden + attn + c.head_dim + 2 * seq + attn + c.hidden + 2 * mlp) +
                        2 * c.hidden;
  constexpr double u = testing_support::kUnitRoundoffF32;
  const std::vector<double> tol = testing_support::relative_tolerance(bf16w, u, 2.0 * double(chain) * u);
  testing_support::expect_within(got, bf16w, tol, "logits vs bf16-weight reference");
  double baseline = 0, error = 0, tol_max = 0;
  for (size_t i = 0; i < f32.size(); ++i) {
    baseline = std::max(baseline, std::fabs(double(bf16w[i]) - f32[i]));
    error = std::max(error, std::fabs(double(got[i]) - f32[i]));
    tol_max = std::max(tol_max, tol[i]);
  }
  std::printf("[ measured ] logits: max |engine - PEFT f32| %.3g, bf16 baseline %.3g, f32 bound %.3g\n",
              error, baseline, tol_max);
  EXPECT_LE(error, baseline + tol_max);
  fs::remove_all(out);
}

// A bitsandbytes 4-bit base is dequantized, then merged; --base-as nf4 on the dense base
// merges into the same NF4 weights (write_bnb_checkpoint is the engine's quantization), so
// the two outputs are bitwise equal. Each merged linear is checked against a double-precision
// W + s B A rounded to bf16: within 1 bf16 ulp.
TEST(Train70bMerge, BnbBaseIsDequantizedAndEqualsNf4Base) {
  const fs::path bnb = temp_dir("merge_bnb_base"), a = temp_dir("merge_bnb_out"), b = temp_dir("merge_nf4_out");
  models::write_bnb_checkpoint(kHf, bnb.string(), {});
  train::MergeOptions o;
  o.model_dir = bnb.string();
  o.adapter_dir = kHf;
  o.output_dir = a.string();
  train::merge_adapter(o);
  o.model_dir = kHf;
  o.output_dir = b.string();
  o.base_as_nf4 = true;
  train::merge_adapter(o);
  SafetensorsFile fa((a / "model.safetensors").string()), fb((b / "model.safetensors").string());
  ASSERT_EQ(fa.names(), fb.names());
  for (const std::string& name : fa.names())
    EXPECT_EQ(bf16_bits(fa.load(name)), bf16_bits(fb.load(name))) << name;

  SafetensorsIndex base(bnb.string());
  SafetensorsFile adapter(kHf + "/adapter_model.safetensors");
  const std::string name = "model.layers.1.mlp.down_proj.weight";
  const std::vector<int64_t>& dims = fa.info(name).shape;
  const Tensor w = engine::quant::dequantize_nf4(models::read_bnb_nf4(base, name, {dims[0], dims[1]}));
  const std::vector<float> wv = w.to_floats();
  const std::vector<float> av = adapter.load("base_model.model." + name.substr(0, name.size() - 7) + ".lora_A.weight").to_floats();
  const std::vector<float> bv = adapter.load("base_model.model." + name.substr(0, name.size() - 7) + ".lora_B.weight").to_floats();
  const int64_t out = w.dim(0), in = w.dim(1), r = 3;
  const std::vector<uint16_t> got = bf16_bits(fa.load(name));
  for (int64_t i = 0; i < out; ++i)
    for (int64_t j = 0; j < in; ++j) {
      double d = 0;
      for (int64_t q = 0; q < r; ++q) d += double(bv[i * r + q]) * av[q * in + j];
      const float want = static_cast<float>(wv[i * in + j] + 2.0 * d);  // alpha 6 / r 3
      ASSERT_LE(ulps(got[i * in + j], kmath::float_to_bf16_bits(want)), 1) << i << ", " << j;
    }
  for (const fs::path& p : {bnb, a, b}) fs::remove_all(p);
}

TEST(Train70bMerge, CommandLineAndErrors) {
  const fs::path root = temp_dir("merge_cli");
  fs::create_directories(root);
  const std::string exe = TRAIN70B_PATH;
  auto r = testing_support::run_command(exe + " merge --model " + kHf + " --adapter " + kHf + " --output " +
                                        (root / "out").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::is_regular_file(root / "out" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(root / "out" / "model.safetensors.index.json"));  // one shard: no index

  // Output not empty: refused, the earlier output untouched.
  r = testing_support::run_command(exe + " merge --model " + kHf + " --adapter " + kHf + " --output " +
                                   (root / "out").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;

  // An adapter whose rank does not match its tensors: one line naming the file and tensor,
  // nothing written (neither the output nor a temporary directory).
  const fs::path bad = root / "bad_adapter";
  fs::create_directories(bad);
  fs::copy_file(kHf + "/adapter_model.safetensors", bad / "adapter_model.safetensors");
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(kHf + "/adapter_config.json"));
  cfg["r"] = 4;
  std::ofstream(bad / "adapter_config.json") << cfg.dump();
  r = testing_support::run_command(exe + " merge --model " + kHf + " --adapter " + bad.string() +
                                   " --output " + (root / "out2").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("adapter_model.safetensors: tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has shape [3, 48], expected [4, 48]"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  // DoRA is refused rather than merged wrongly.
  cfg["r"] = 3;
  cfg["use_dora"] = true;
  std::ofstream(bad / "adapter_config.json") << cfg.dump();
  r = testing_support::run_command(exe + " merge --model " + kHf + " --adapter " + bad.string() +
                                   " --output " + (root / "out2").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("use_dora"), std::string::npos) << r.err;
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(root)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"bad_adapter", "out"}));
  fs::remove_all(root);
}

}  // namespace
