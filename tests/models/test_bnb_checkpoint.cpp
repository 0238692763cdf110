// Pre-quantized bitsandbytes 4-bit checkpoints (models/bnb_checkpoint.h):
//   - tests/data/bnb_reference (tests/data/make_bnb_reference.py: transformers + bitsandbytes on
//     the CPU, with and without double quantization) loads as stored: every dequantized weight
//     is bitwise bitsandbytes' own dequantization, and the loss is the one PyTorch computes
//     from it, within a derived f32 bound;
//   - train70b quantize -> load is bitwise (NF4 fields and loss), sharded and atomic;
//   - every validation case is one line naming the file and the tensor or key.
//
// Loss bound (derived as in test_hf_reference.cpp): both sides evaluate the same f32 function
// from bitwise equal weights and differ only in the order of roundings; a chain of K
// roundings moves the result by at most 2 K u (|ref| + rms ref) on top of u |ref|, u = 2^-24,
// with K the sum of reduction lengths on the path (no LoRA here, r = 0).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/io/safetensors.h"
#include "models/bnb_checkpoint.h"
#include "models/hf_config.h"
#include "models/weight_loader.h"
#include "tests/support/compare.h"
#include "tests/support/errors.h"

namespace {

namespace fs = std::filesystem;
using engine::DType;
using engine::Tensor;
using json = nlohmann::json;
using testing_support::expect_one_line_error;
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

const std::string kRef = std::string(ENGINE_SOURCE_DIR) + "/tests/data/bnb_reference";
const std::string kDense = std::string(ENGINE_SOURCE_DIR) + "/tests/data/hf_reference";
constexpr double kU = 0x1p-24;

std::string fnv1a64(const Tensor& t) {
  uint64_t h = 0xcbf29ce484222325ull;
  const auto* p = static_cast<const uint8_t*>(t.raw_data());
  for (size_t i = 0; i < t.nbytes(); ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

json read_json(const std::string& path) {
  std::ifstream f(path);
  return json::parse(f);
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("bnb_test_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string str(const std::string& sub = "") const { return (path / sub).string(); }
};

NamedTensors load_all(const std::string& file) {
  engine::io::SafetensorsFile f(file);
  NamedTensors out;
  for (const std::string& n : f.names()) out.emplace_back(n, f.load(n));
  return out;
}

Tensor& find(NamedTensors& ts, const std::string& name) {
  for (auto& [n, t] : ts)
    if (n == name) return t;
  throw std::runtime_error("test: no tensor " + name);
}

Tensor ids_of(const json& ref) {
  std::vector<int32_t> v;
  for (const json& row : ref["ids"])
    for (const json& x : row) v.push_back(x.get<int32_t>());
  return Tensor::from_ints(v, {static_cast<int64_t>(ref["ids"].size()),
                               static_cast<int64_t>(ref["ids"][0].size())});
}

int64_t loss_chain(const models::LlamaConfig& c, int64_t seq, int64_t tokens) {
  const int64_t attn = std::max(c.hidden, c.q_dim()), mlp = std::max(c.hidden, c.intermediate);
  const int64_t layer = c.hidden + attn + c.head_dim + 2 * seq + attn + c.hidden + 2 * mlp;
  return c.layers * layer + 2 * c.hidden + c.vocab + tokens;
}

// ---- The checkpoint bitsandbytes wrote.

void check_reference(const std::string& variant, bool double_quant) {
  const json ref = read_json(kRef + "/reference.json");
  const std::string dir = kRef + "/" + variant;
  const auto q = models::read_bnb_quantization(dir + "/config.json");
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->double_quant, double_quant);
  const models::LlamaConfig config = models::load_hf_config(dir + "/config.json");
  const auto model = models::load_llama(config, dir, {});
  // Bitwise: the engine's dequantization of each stored weight is bitsandbytes'.
  const json& hashes = ref[variant]["dequantized_fnv1a64"];
  ASSERT_EQ(hashes.size(), size_t(7 * config.layers));
  const std::vector<std::string>& names = models::all_linear_names();
  for (size_t l = 0; l < model->layers().size(); ++l) {
    const auto linears = model->layers()[l].linears();
    for (size_t j = 0; j < linears.size(); ++j) {
      const std::string module = names[j] == "q_proj" || names[j] == "k_proj" || names[j] == "v_proj" ||
                                         names[j] == "o_proj" ? "self_attn." : "mlp.";
      const std::string name = "model.layers." + std::to_string(l) + "." + module + names[j] + ".weight";
      EXPECT_STREQ(linears[j]->frozen->format(), "nf4");
      EXPECT_EQ(fnv1a64(linears[j]->frozen->dequantize(DType::F32, engine::Device::cpu())),
                hashes[name].get<std::string>())
          << variant << " " << name;
    }
  }
  // The loss PyTorch computed from bitsandbytes' dequantization.
  const Tensor ids = ids_of(ref);
  const float got = model->loss(ids, ids).item();
  const float want = ref[variant]["loss"].get<float>();
  const int64_t k = loss_chain(config, ids.dim(1), ids.numel());
  const std::vector<double> tol = testing_support::relative_tolerance({want}, kU, 2.0 * double(k) * kU);
  EXPECT_NEAR(got, want, tol[0]) << variant;
  std::printf("[ measured ] %s: engine %.9g, PyTorch %.9g, |diff| / bound %.3g (chain %lld)\n",
              variant.c_str(), got, want, std::fabs(double(got) - want) / tol[0], (long long)k);
}

TEST(BnbCheckpoint, ReferenceDoubleQuantLoadsAsStored) { check_reference("dq", true); }
TEST(BnbCheckpoint, ReferenceWithoutDoubleQuantLoadsAsStored) { check_reference("no_dq", false); }

TEST(BnbCheckpoint, ReferenceReadBitwise) {
  // The fields as stored, against the safetensors bytes.
  const engine::io::SafetensorsIndex index(kRef + "/dq");
  const std::string name = "model.layers.1.mlp.up_proj.weight";
  const auto w = models::read_bnb_nf4(index, name, {320, 64});
  EXPECT_TRUE(w.double_quant);
  EXPECT_EQ(w.num_blocks(), 320);
  EXPECT_EQ(w.nested_absmax.numel(), 2) << "one full nested block and a partial one";
  EXPECT_EQ(w.packed.numel(), 320 * 64 / 2);
  const Tensor packed = index.load(name), codes = index.load(name + ".absmax");
  EXPECT_EQ(std::memcmp(packed.raw_data(), w.packed.raw_data(), packed.nbytes()), 0);
  EXPECT_EQ(std::memcmp(codes.raw_data(), w.absmax_q.raw_data(), codes.nbytes()), 0);
}

// ---- train70b quantize -> load.

// A sharded BF16 copy of tests/data/hf_reference with a tokenizer file.
void write_dense_bf16(const TempDir& d) {
  NamedTensors ts = load_all(kDense + "/model.safetensors");
  for (auto& [n, t] : ts) t = t.to_dtype(DType::BF16);
  const size_t half = ts.size() / 2;
  json map;
  NamedTensors a(ts.begin(), ts.begin() + half), b(ts.begin() + half, ts.end());
  engine::io::write_safetensors(d.str("model-00001-of-00002.safetensors"), a);
  engine::io::write_safetensors(d.str("model-00002-of-00002.safetensors"), b);
  for (auto& [n, t] : a) map[n] = "model-00001-of-00002.safetensors";
  for (auto& [n, t] : b) map[n] = "model-00002-of-00002.safetensors";
  std::ofstream(d.str("model.safetensors.index.json")) << json{{"weight_map", map}}.dump();
  fs::copy_file(kDense + "/config.json", d.str("config.json"));
  std::ofstream(d.str("tokenizer.json")) << "{\"tokenizer\": \"copied as it is\"}";
}

TEST(BnbQuantize, RoundTripIsBitwise) {
  TempDir dense("dense"), out("out");
  write_dense_bf16(dense);
  fs::remove(out.path);
  models::QuantizeOptions o;
  o.max_shard_bytes = 20000;  // several shards
  models::write_bnb_checkpoint(dense.str(), out.str(), o);

  const json cfg = read_json(out.str("config.json"));
  const json& qc = cfg["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "bitsandbytes");
  EXPECT_EQ(qc["bnb_4bit_quant_type"], "nf4");
  EXPECT_EQ(qc["load_in_4bit"], true);
  EXPECT_EQ(qc["bnb_4bit_compute_dtype"], "bfloat16");
  EXPECT_TRUE(fs::exists(out.str("tokenizer.json")));
  const json idx = read_json(out.str("model.safetensors.index.json"));
  std::set<std::string> files;
  for (const auto& [n, f] : idx["weight_map"].items()) files.insert(f.get<std::string>());
  EXPECT_GT(files.size(), size_t(2));
  for (const std::string& f : files) EXPECT_TRUE(fs::exists(out.str(f))) << f;
  EXPECT_GT(idx["metadata"]["total_size"].get<uint64_t>(), 0u);

  // Every NF4 field equals the engine's quantization of the dense weight.
  const models::LlamaConfig config = models::load_hf_config(dense.str("config.json"));
  const engine::io::SafetensorsIndex in(dense.str()), q(out.str());
  int linears = 0;
  for (const models::WeightSpec& s : models::llama_weight_specs(config)) {
    if (!s.linear) {
      const Tensor a = in.load(s.name), b = q.load(s.name);
      ASSERT_EQ(a.nbytes(), b.nbytes());
      EXPECT_EQ(std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()), 0) << s.name << " copied";
      continue;
    }
    ++linears;
    const auto want = engine::quant::quantize_nf4(in.load(s.name));
    const auto got = models::read_bnb_nf4(q, s.name, s.shape);
    ASSERT_TRUE(got.double_quant);
    EXPECT_EQ(std::memcmp(got.packed.raw_data(), want.packed.raw_data(), want.packed.nbytes()), 0);
    EXPECT_EQ(std::memcmp(got.absmax_q.raw_data(), want.absmax_q.raw_data(), want.absmax_q.nbytes()), 0);
    EXPECT_EQ(std::memcmp(got.nested_absmax.raw_data(), want.nested_absmax.raw_data(),
                          want.nested_absmax.nbytes()), 0);
    EXPECT_EQ(std::memcmp(&got.offset, &want.offset, sizeof(float)), 0) << s.name;
  }
  EXPECT_EQ(linears, 7 * config.layers);

  // And the models give the same loss, to the bit.
  const auto a = models::load_llama(config, dense.str(), {});
  const auto b = models::load_llama(config, out.str(), {});
  const Tensor ids = Tensor::from_ints({5, 17, 99, 3, 42, 8, 0, 61}, {2, 4});
  const float la = a->loss(ids, ids).item(), lb = b->loss(ids, ids).item();
  EXPECT_EQ(std::memcmp(&la, &lb, sizeof(float)), 0) << la << " vs " << lb;
}

TEST(BnbQuantize, OneFileWhenItFits) {
  TempDir out("one");
  fs::remove(out.path);
  models::write_bnb_checkpoint(kDense, out.str(), {});
  EXPECT_TRUE(fs::exists(out.str("model.safetensors")));
  EXPECT_FALSE(fs::exists(out.str("model.safetensors.index.json")));
  EXPECT_FALSE(fs::exists(out.str("adapter_config.json"))) << "only tokenizer and generation files";
  EXPECT_EQ(read_json(out.str("config.json"))["quantization_config"]["bnb_4bit_compute_dtype"], "float32");
}

TEST(BnbQuantize, ShardSizes) {
  EXPECT_EQ(models::parse_shard_size("5GB"), 5'000'000'000u);
  EXPECT_EQ(models::parse_shard_size("500MB"), 500'000'000u);
  EXPECT_EQ(models::parse_shard_size("2GiB"), 2147483648u);
  EXPECT_EQ(models::parse_shard_size("1.5gb"), 1'500'000'000u);
  expect_one_line_error([] { models::parse_shard_size("5 apples"); }, {"--max-shard-size", "5 apples"});
  expect_one_line_error([] { models::parse_shard_size("10KB"); }, {"--max-shard-size", "1MB"});
}

TEST(BnbQuantize, ErrorsLeaveNothingBehind) {
  TempDir dense("bad"), parent("parent");
  write_dense_bf16(dense);
  // A NaN in the second shard: the first shard's work is discarded with the temporary dir.
  NamedTensors b = load_all(dense.str("model-00002-of-00002.safetensors"));
  Tensor& w = b.back().second;
  Tensor f = w.to_dtype(DType::F32);
  f.data<float>()[3] = NAN;
  const std::string bad_name = b.back().first;
  w = f.to_dtype(DType::BF16);
  engine::io::write_safetensors(dense.str("model-00002-of-00002.safetensors"), b);
  const std::string out = parent.str("q");
  models::QuantizeOptions o;
  o.max_shard_bytes = 20000;
  if (bad_name.find("_proj") != std::string::npos)
    expect_one_line_error([&] { models::write_bnb_checkpoint(dense.str(), out, o); },
                          {"model-00002-of-00002.safetensors", bad_name, "non-finite"});
  EXPECT_TRUE(fs::is_empty(parent.path)) << "no output, no temporary directory";

  expect_one_line_error([&] { models::write_bnb_checkpoint(kDense, kRef, {}); },
                        {"--output", kRef, "already exists"});
  TempDir out2("already");
  fs::remove(out2.path);
  expect_one_line_error([&] { models::write_bnb_checkpoint(kRef + "/dq", out2.str(), {}); },
                        {"config.json", "already a bitsandbytes"});
  EXPECT_FALSE(fs::exists(out2.path));
}

// ---- Validation: one line each, naming the file and the tensor or key.

struct Broken {
  TempDir dir{"broken"};
  NamedTensors tensors = load_all(kRef + "/dq/model.safetensors");
  const std::string w = "model.layers.0.mlp.down_proj.weight";
  const engine::Shape shape{64, 320};
  void write() { engine::io::write_safetensors(dir.str("model.safetensors"), tensors); }
  void drop(const std::string& name) {
    std::erase_if(tensors, [&](const auto& p) { return p.first == name; });
  }
  void set_state(const std::string& from, const std::string& to) {
    Tensor& t = find(tensors, w + ".quant_state.bitsandbytes__nf4");
    std::string s(static_cast<const char*>(t.raw_data()), t.nbytes());
    const size_t at = s.find(from);
    ASSERT_NE(at, std::string::npos) << s;
    s.replace(at, from.size(), to);
    t = Tensor::empty({static_cast<int64_t>(s.size())}, DType::U8);
    std::memcpy(t.raw_data(), s.data(), s.size());
  }
  void expect_error(std::initializer_list<std::string> parts) {
    write();
    const engine::io::SafetensorsIndex index(dir.str());
    std::vector<std::string> all(parts);
    all.push_back(dir.str("model.safetensors"));
    expect_one_line_error([&] { models::read_bnb_nf4(index, w, shape); }, {});
    try {
      models::read_bnb_nf4(index, w, shape);
    } catch (const engine::InputError& e) {
      for (const std::string& p : all) EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "'" << p << "' not in: " << e.what();
    }
  }
};

TEST(BnbValidation, StoredAsIsLoads) {
  Broken b;
  b.write();
  const auto w = models::read_bnb_nf4(engine::io::SafetensorsIndex(b.dir.str()), b.w, b.shape);
  EXPECT_TRUE(w.double_quant);
}
TEST(BnbValidation, Fp4QuantType) {
  Broken b;
  b.set_state("\"nf4\"", "\"fp4\"");
  b.expect_error({b.w, "quant_type", "fp4"});
}
TEST(BnbValidation, Fp4StateName) {
  Broken b;
  Tensor s = find(b.tensors, b.w + ".quant_state.bitsandbytes__nf4");
  b.drop(b.w + ".quant_state.bitsandbytes__nf4");
  b.tensors.emplace_back(b.w + ".quant_state.bitsandbytes__fp4", s);
  b.expect_error({b.w, "fp4"});
}
TEST(BnbValidation, AnotherBlocksize) {
  Broken b;
  b.set_state("\"blocksize\": 64", "\"blocksize\": 128");
  b.expect_error({b.w, "blocksize is 128"});
}
TEST(BnbValidation, AnotherNestedBlocksize) {
  Broken b;
  b.set_state("\"nested_blocksize\": 256", "\"nested_blocksize\": 128");
  b.expect_error({b.w, "nested_blocksize is 128"});
}
TEST(BnbValidation, MissingAbsmax) {
  Broken b;
  b.drop(b.w + ".absmax");
  b.expect_error({b.w + ".absmax", "missing"});
}
TEST(BnbValidation, MissingNestedAbsmax) {
  Broken b;
  b.drop(b.w + ".nested_absmax");
  b.expect_error({b.w + ".nested_absmax", "missing"});
}
TEST(BnbValidation, MissingQuantState) {
  Broken b;
  b.drop(b.w + ".quant_state.bitsandbytes__nf4");
  b.expect_error({b.w + ".quant_state.bitsandbytes__nf4", "missing"});
}
TEST(BnbValidation, ShapeNotTheConfigs) {
  Broken b;
  b.set_state("[64, 320]", "[320, 64]");
  b.expect_error({b.w, "shape [320, 64]", "[64, 320]"});
}
TEST(BnbValidation, QuantMapWrongLength) {
  Broken b;
  find(b.tensors, b.w + ".quant_map") = Tensor::zeros({15});
  b.expect_error({b.w + ".quant_map", "15 elements", "16"});
}
TEST(BnbValidation, NestedMapWrongLength) {
  Broken b;
  find(b.tensors, b.w + ".nested_quant_map") = Tensor::zeros({255});
  b.expect_error({b.w + ".nested_quant_map", "255 elements", "256"});
}
TEST(BnbValidation, QuantMapNotNf4) {
  Broken b;
  Tensor& m = find(b.tensors, b.w + ".quant_map");
  m.data<float>()[8] = 0.08f;
  b.expect_error({b.w + ".quant_map", "entry 8"});
}
TEST(BnbValidation, PackedWrongSize) {
  Broken b;
  find(b.tensors, b.w) = Tensor::zeros({100, 1}, DType::U8);
  b.expect_error({b.w, "100 elements", "10240"});
}
TEST(BnbValidation, NonFiniteNestedAbsmax) {
  Broken b;
  find(b.tensors, b.w + ".nested_absmax").data<float>()[0] = INFINITY;
  b.expect_error({b.w + ".nested_absmax", "non-finite"});
}

// A nested map other than the builtin one is honoured: the absmax it gives, as fp32.
TEST(BnbValidation, ForeignNestedMapIsApplied) {
  Broken b;
  Tensor& m = find(b.tensors, b.w + ".nested_quant_map");
  for (int i = 0; i < 256; ++i) m.data<float>()[i] *= 0.5f;
  b.write();
  const engine::io::SafetensorsIndex index(b.dir.str());
  const auto w = models::read_bnb_nf4(index, b.w, b.shape);
  ASSERT_FALSE(w.double_quant);
  const auto stored = models::read_bnb_nf4(engine::io::SafetensorsIndex(kRef + "/dq"), b.w, b.shape);
  const std::vector<float> builtin = engine::quant::dequantized_absmax(stored).to_floats();
  const std::vector<float> got = w.absmax.to_floats();
  const Tensor codes = index.load(b.w + ".absmax"), nested = index.load(b.w + ".nested_absmax");
  for (size_t i = 0; i < got.size(); ++i) {
    const float q = m.data<float>()[codes.data<uint8_t>()[i]];
    const float want = q * nested.data<float>()[i / 256] + stored.offset;
    ASSERT_EQ(got[i], want) << i;
  }
  EXPECT_NE(got, builtin);
}

void expect_config_error(const std::string& quantization_config, std::initializer_list<std::string> parts) {
  TempDir d("config");
  json cfg = read_json(kRef + "/dq/config.json");
  cfg["quantization_config"] = json::parse(quantization_config);
  std::ofstream(d.str("config.json")) << cfg.dump();
  std::vector<std::string> all(parts);
  expect_one_line_error([&] { models::read_bnb_quantization(d.str("config.json")); }, {});
  try {
    models::read_bnb_quantization(d.str("config.json"));
  } catch (const engine::InputError& e) {
    all.push_back(d.str("config.json"));
    for (const std::string& p : all) EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
        << "'" << p << "' not in: " << e.what();
  }
}

TEST(BnbConfig, Errors) {
  expect_config_error(R"({"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "fp4"})",
                      {"bnb_4bit_quant_type", "fp4"});
  expect_config_error(R"({"quant_method": "bitsandbytes", "load_in_4bit": true})",
                      {"bnb_4bit_quant_type", "fp4"});
  expect_config_error(R"({"quant_method": "bitsandbytes", "load_in_8bit": true})", {"load_in_8bit"});
  expect_config_error(R"({"quant_method": "gptq", "bits": 4})", {"quant_method", "gptq"});
  expect_config_error(R"({"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "nf4",
                          "bnb_4bit_quant_storage": "bfloat16"})", {"bnb_4bit_quant_storage"});
  expect_config_error(R"("nf4")", {"quantization_config", "not an object"});
}

TEST(BnbConfig, DenseHasNone) {
  EXPECT_FALSE(models::read_bnb_quantization(kDense + "/config.json").has_value());
}

}  // namespace
