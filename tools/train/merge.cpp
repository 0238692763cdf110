// train70b merge: see merge.h for the math and the streaming; the shard layout follows
// transformers' save_pretrained (model.safetensors, or model-0000i-of-0000N.safetensors with
// model.safetensors.index.json, weight_map sorted by name, metadata {"format": "pt"}).
#include "tools/train/merge.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "engine/error.h"
#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"
#include "engine/quant/nf4.h"
#include "kernels/math/bf16.h"
#include "models/bnb_checkpoint.h"
#include "models/hf_config.h"
#include "models/hf_hub.h"
#include "models/lora.h"
#include "models/weight_loader.h"
#include "tools/train/cli.h"

namespace train {
namespace {

namespace fs = std::filesystem;
using engine::DType;
using engine::InputError;
using engine::Tensor;
using engine::io::SafetensorsFile;
using engine::io::SafetensorsIndex;
using engine::io::TensorInfo;
using ojson = nlohmann::ordered_json;

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  ENGINE_INPUT_CHECK(f.good(), path, ": cannot open for reading");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

ojson parse_json(const std::string& path) {
  try {
    return ojson::parse(read_text(path));
  } catch (const ojson::exception& e) {
    std::string reason = e.what();
    if (size_t p = reason.find("] "); p != std::string::npos) reason = reason.substr(p + 2);
    throw InputError(path + ": invalid JSON: " + engine::one_line(reason, true));
  }
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// ---- the adapter

// The PEFT name prefix of a decoder linear ("model.layers.3.mlp.up_proj.weight" ->
// "base_model.model.model.layers.3.mlp.up_proj").
std::string peft_prefix(const std::string& weight_name) {
  return "base_model.model." + weight_name.substr(0, weight_name.size() - std::string(".weight").size());
}

// "model.layers.3.mlp.up_proj.weight" -> "up_proj".
std::string module_of(const std::string& weight_name) {
  const std::string stem = weight_name.substr(0, weight_name.size() - std::string(".weight").size());
  return stem.substr(stem.rfind('.') + 1);
}

struct Adapter {
  std::string config_path;
  int64_t r = 0;
  float scaling = 0;  // as PEFT applies it: alpha / r in double, used as fp32
  std::set<std::string> targets;
  std::unique_ptr<SafetensorsFile> file;

  bool adapts(const std::string& weight_name) const { return targets.count(module_of(weight_name)) != 0; }
  // The factor as fp32 [rows, cols], checked finite.
  std::vector<float> factor(const std::string& name) const {
    const Tensor t = file->load(name);
    std::vector<float> v = t.to_floats();
    for (float x : v)
      ENGINE_INPUT_CHECK(std::isfinite(x), file->path(), ": tensor '", name, "' holds a non-finite value");
    return v;
  }
};

// Reads adapter_config.json and checks that merging it is the plain formula of merge.h:
// what would make it something else (DoRA, per-module ranks or alphas, extra trained
// modules, a subset of layers, transposed weights) is refused, not ignored.
Adapter read_adapter(const std::string& dir) {
  Adapter a;
  a.config_path = (fs::path(dir) / "adapter_config.json").string();
  ENGINE_INPUT_CHECK(fs::is_directory(dir), "--adapter ", dir, ": not a directory");
  ENGINE_INPUT_CHECK(fs::is_regular_file(a.config_path), a.config_path, ": no such file");
  const ojson c = parse_json(a.config_path);
  ENGINE_INPUT_CHECK(c.is_object(), a.config_path, ": expected a JSON object");
  auto has = [&](const char* key) { return c.contains(key) && !c.at(key).is_null(); };
  auto need = [&](const char* key) -> const ojson& {
    ENGINE_INPUT_CHECK(has(key), a.config_path, ": missing field \"", key, "\"");
    return c.at(key);
  };
  auto refuse_if = [&](bool cond, const char* key, const char* why) {
    ENGINE_INPUT_CHECK(!cond, a.config_path, ": \"", key, "\" ", why, " (not supported by merge)");
  };
  ENGINE_INPUT_CHECK(need("peft_type") == "LORA", a.config_path, ": peft_type is not \"LORA\"");
  const ojson& r = need("r");
  const ojson& alpha = need("lora_alpha");
  ENGINE_INPUT_CHECK(r.is_number_integer() && r.get<int64_t>() > 0 && r.get<int64_t>() <= 65536,
                     a.config_path, ": \"r\" must be an integer in [1, 65536]");
  ENGINE_INPUT_CHECK(alpha.is_number() && std::isfinite(alpha.get<double>()), a.config_path,
                     ": \"lora_alpha\" must be a finite number");
  a.r = r.get<int64_t>();
  const bool rslora = has("use_rslora") && c.at("use_rslora").is_boolean() && c.at("use_rslora").get<bool>();
  const double s = rslora ? alpha.get<double>() / std::sqrt(double(a.r)) : alpha.get<double>() / double(a.r);
  a.scaling = static_cast<float>(s);
  refuse_if(has("use_dora") && c.at("use_dora") != false, "use_dora", "is set: DoRA");
  refuse_if(has("fan_in_fan_out") && c.at("fan_in_fan_out") != false, "fan_in_fan_out", "is set");
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    refuse_if(has(key) && !c.at(key).empty(), key, "is not empty: per-module ranks or alphas");
  refuse_if(has("modules_to_save") && !c.at("modules_to_save").empty(), "modules_to_save",
            "is not empty: fully trained modules");
  refuse_if(has("layers_to_transform"), "layers_to_transform", "is set: a subset of layers");
  refuse_if(has("bias") && c.at("bias") != "none", "bias", "is not \"none\"");
  const ojson& t = need("target_modules");
  ENGINE_INPUT_CHECK(t.is_array(), a.config_path,
                     ": \"target_modules\" must be a list of module names (q_proj, ..., down_proj)");
  const std::vector<std::string>& known = models::all_linear_names();
  for (const ojson& m : t) {
    ENGINE_INPUT_CHECK(m.is_string() && std::count(known.begin(), known.end(), m.get<std::string>()),
                       a.config_path, ": unknown target module ", engine::one_line(m.dump(), true),
                       " (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
    a.targets.insert(m.get<std::string>());
  }
  ENGINE_INPUT_CHECK(!a.targets.empty(), a.config_path, ": \"target_modules\" is empty");
  a.file = std::make_unique<SafetensorsFile>((fs::path(dir) / "adapter_model.safetensors").string());
  return a;
}

// Every factor the adapter must hold for `linears` has the right shape and a float dtype,
// and it holds nothing else.
void check_adapter_tensors(const Adapter& a, const std::vector<models::WeightSpec>& linears) {
  std::set<std::string> expected;
  for (const models::WeightSpec& s : linears) {
    if (!a.adapts(s.name)) continue;
    const std::string p = peft_prefix(s.name);
    const std::pair<std::string, std::vector<int64_t>> want[2] = {
        {p + ".lora_A.weight", {a.r, s.shape[1]}}, {p + ".lora_B.weight", {s.shape[0], a.r}}};
    for (const auto& [name, shape] : want) {
      expected.insert(name);
      ENGINE_INPUT_CHECK(a.file->has(name), a.file->path(), ": missing tensor '", name, "'");
      const TensorInfo& info = a.file->info(name);
      const bool floating = info.dtype && (*info.dtype == DType::F32 || *info.dtype == DType::BF16 ||
                                           *info.dtype == DType::F16);
      ENGINE_INPUT_CHECK(floating, a.file->path(), ": tensor '", name, "' has dtype ",
                         info.dtype_name, ", expected F32, BF16 or F16");
      ENGINE_INPUT_CHECK(info.shape == shape, a.file->path(), ": tensor '", name, "' has shape ",
                         shape_text(info.shape), ", expected ", shape_text(shape));
    }
  }
  for (const std::string& name : a.file->names())
    ENGINE_INPUT_CHECK(expected.count(name), a.file->path(), ": unexpected tensor '", name,
                       "' (not a LoRA factor of a target module of this model)");
}

// ---- streaming shard writer

// One safetensors file whose header is known up front: the header goes first, then each
// tensor's bytes in header order, through an AtomicFileWriter (temporary name, fsync, rename).
class ShardWriter {
 public:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    uint64_t bytes;  // bf16
  };
  ShardWriter(const std::string& path, const std::vector<Entry>& entries) : out_(path), entries_(entries) {
    ojson header = ojson::object();
    header["__metadata__"] = {{"format", "pt"}};
    uint64_t offset = 0;
    for (const Entry& e : entries) {
      header[e.name] = {{"dtype", "BF16"}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.bytes}}};
      offset += e.bytes;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
    const uint64_t n = text.size();
    out_.write(&n, 8);
    out_.write(text.data(), text.size());
  }
  // The next tensor's values, in header order.
  void write(const std::string& name, const std::vector<uint16_t>& bf16) {
    ENGINE_CHECK(next_ < entries_.size() && entries_[next_].name == name &&
                     entries_[next_].bytes == bf16.size() * 2,
                 "merge: tensor '", name, "' written out of order");
    out_.write(bf16.data(), bf16.size() * 2);
    ++next_;
  }
  void commit() {
    ENGINE_CHECK(next_ == entries_.size(), "merge: shard ", out_.path(), " incomplete");
    out_.commit();
  }

 private:
  engine::io::AtomicFileWriter out_;
  std::vector<Entry> entries_;
  size_t next_ = 0;
};

// ---- the merge

int thread_count(int requested) {
  return requested > 0 ? requested : std::max(1u, std::thread::hardware_concurrency());
}

// w[o, i] += s * sum_k B[o, k] A[k, i], rows split over threads. The sum over k runs in order
// k = 0..r-1 in fp32, then the product with s, then the add: PEFT's (B @ A) * s, W += delta.
void add_delta(std::vector<float>& w, const std::vector<float>& b, const std::vector<float>& a,
               int64_t out, int64_t in, int64_t r, float s, int threads) {
  auto rows = [&](int64_t begin, int64_t end) {
    std::vector<float> delta(static_cast<size_t>(in));
    for (int64_t o = begin; o < end; ++o) {
      std::fill(delta.begin(), delta.end(), 0.0f);
      for (int64_t k = 0; k < r; ++k) {
        const float bk = b[o * r + k];
        const float* ak = a.data() + k * in;
        for (int64_t i = 0; i < in; ++i) delta[i] += bk * ak[i];
      }
      float* wo = w.data() + o * in;
      for (int64_t i = 0; i < in; ++i) wo[i] += delta[i] * s;
    }
  };
  const int workers = static_cast<int>(std::clamp<int64_t>(thread_count(threads), 1, out));
  std::vector<std::thread> pool;
  for (int t = 1; t < workers; ++t) pool.emplace_back(rows, out * t / workers, out * (t + 1) / workers);
  rows(0, out / workers);
  for (std::thread& th : pool) th.join();
}

// The stored tensor as fp32 values.
std::vector<float> read_f32(const SafetensorsIndex& index, const std::string& name) {
  const TensorInfo& info = index.info(name);
  std::vector<uint8_t> raw(info.nbytes());
  index.read(name, raw);
  std::vector<float> out(static_cast<size_t>(info.numel));
  for (int64_t i = 0; i < info.numel; ++i) {
    switch (*info.dtype) {
      case DType::BF16: {
        uint16_t b;
        std::memcpy(&b, raw.data() + 2 * i, 2);
        out[i] = kmath::bf16_bits_to_float(b);
        break;
      }
      case DType::F16: {
        _Float16 h;
        std::memcpy(&h, raw.data() + 2 * i, 2);
        out[i] = static_cast<float>(h);
        break;
      }
      default: std::memcpy(&out[i], raw.data() + 4 * i, 4);
    }
  }
  return out;
}

// Output order: transformers' state_dict order (per layer the seven linears, then the norms).
std::vector<models::WeightSpec> output_order(const models::LlamaConfig& config) {
  std::vector<models::WeightSpec> specs = models::llama_weight_specs(config), out;
  std::vector<models::WeightSpec> norms;
  for (const models::WeightSpec& s : specs) {
    const bool layer_norm = s.name.find("layernorm") != std::string::npos;
    if (layer_norm) {
      norms.push_back(s);
      continue;
    }
    out.push_back(s);
    if (s.name.ends_with("mlp.down_proj.weight")) {  // end of a layer: its norms follow
      out.insert(out.end(), norms.begin(), norms.end());
      norms.clear();
    }
  }
  return out;
}



void merge_into(const MergeOptions& o, const fs::path& tmp) {
  const std::string config_path = (fs::path(o.model_dir) / "config.json").string();
  ENGINE_INPUT_CHECK(fs::is_regular_file(config_path), "--model ", o.model_dir, ": no config.json");
  const models::LlamaConfig config = models::load_hf_config(config_path);
  const bool bnb = models::read_bnb_quantization(config_path).has_value();
  ENGINE_INPUT_CHECK(!(bnb && o.base_as_nf4), "--base-as nf4: ", o.model_dir,
                     " is already a bitsandbytes 4-bit checkpoint (its NF4 weights are used as stored)");
  const SafetensorsIndex index(o.model_dir);
  const Adapter adapter = read_adapter(o.adapter_dir);
  const std::vector<models::WeightSpec> specs = output_order(config);

  // 1. Every header, before a byte is written.
  std::vector<models::WeightSpec> linears;
  for (const models::WeightSpec& s : specs) {
    ENGINE_INPUT_CHECK(index.has(s.name), index.path(), ": missing weight '", s.name, "'");
    if (s.linear) linears.push_back(s);
    if (bnb && s.linear) continue;  // read_bnb_nf4 checks the packed form and its shape
    const TensorInfo& info = index.info(s.name);
    const std::string& file = index.file(s.name).path();
    const bool floating = info.dtype && (*info.dtype == DType::BF16 || *info.dtype == DType::F16 ||
                                         *info.dtype == DType::F32);
    ENGINE_INPUT_CHECK(floating, file, ": weight '", s.name, "' has dtype ", info.dtype_name,
                       ", expected BF16, F16 or F32");
    std::vector<int64_t> want;
    for (int i = 0; i < s.shape.rank(); ++i) want.push_back(s.shape[i]);
    ENGINE_INPUT_CHECK(info.shape == want, file, ": weight '", s.name, "' has shape ",
                       shape_text(info.shape), ", expected ", shape_text(want));
  }
  check_adapter_tensors(adapter, linears);

  // 2. Shards in order, as transformers cuts them: a new shard when the next tensor would
  // push the current one past the limit.
  std::vector<std::vector<ShardWriter::Entry>> shards(1);
  uint64_t in_shard = 0, total = 0;
  for (const models::WeightSpec& s : specs) {
    std::vector<int64_t> shape;
    for (int i = 0; i < s.shape.rank(); ++i) shape.push_back(s.shape[i]);
    const uint64_t bytes = static_cast<uint64_t>(s.shape.numel()) * 2;
    if (in_shard > 0 && in_shard + bytes > o.max_shard_bytes) shards.emplace_back(), in_shard = 0;
    shards.back().push_back({s.name, shape, bytes});
    in_shard += bytes;
    total += bytes;
  }

  // 3. Tensor by tensor.
  std::map<std::string, const models::WeightSpec*> by_name;
  for (const models::WeightSpec& s : specs) by_name[s.name] = &s;
  std::map<std::string, std::string> weight_map;  // sorted, as transformers writes it
  size_t merged = 0;
  for (size_t k = 0; k < shards.size(); ++k) {
    char fname[64];
    if (shards.size() == 1)
      std::snprintf(fname, sizeof fname, "model.safetensors");
    else
      std::snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", k + 1, shards.size());
    ShardWriter shard((tmp / fname).string(), shards[k]);
    for (const ShardWriter::Entry& e : shards[k]) {
      const models::WeightSpec& s = *by_name.at(e.name);
      std::vector<float> w;
      if (bnb && s.linear) {
        const engine::quant::Nf4Weight q = models::read_bnb_nf4(index, s.name, s.shape);
        w = engine::quant::dequantize_nf4(q).to_floats();
      } else {
        w = read_f32(index, s.name);
      }
      const std::string where = index.file(s.name).path() + ": weight '" + s.name + "'";
      if (o.base_as_nf4 && s.linear) {
        const engine::quant::Nf4Weight q =
            models::quantize_nf4_host(w.data(), DType::F32, s.shape, o.threads, where);
        w = engine::quant::dequantize_nf4(q).to_floats();
      }
      if (s.linear && adapter.adapts(s.name)) {
        const std::string p = peft_prefix(s.name);
        add_delta(w, adapter.factor(p + ".lora_B.weight"), adapter.factor(p + ".lora_A.weight"),
                  s.shape[0], s.shape[1], adapter.r, adapter.scaling, o.threads);
        ++merged;
      }
      std::vector<uint16_t> out(w.size());
      for (size_t i = 0; i < w.size(); ++i) {
        ENGINE_INPUT_CHECK(std::isfinite(w[i]), where, ": merged value ", i, " is not finite",
                           s.linear ? " (check the adapter's lora_alpha and factors)" : "");
        out[i] = kmath::float_to_bf16_bits(w[i]);
      }
      shard.write(e.name, out);
      weight_map[e.name] = fname;
    }
    shard.commit();
    if (o.log) *o.log << "merge: wrote " << fname << " (" << shards[k].size() << " tensors)\n" << std::flush;
  }
  if (shards.size() > 1) {
    ojson idx;
    idx["metadata"] = {{"total_size", total}};
    idx["weight_map"] = ojson::object();
    for (const auto& [name, file] : weight_map) idx["weight_map"][name] = file;
    engine::io::write_file_atomic((tmp / "model.safetensors.index.json").string(), idx.dump(2) + "\n");
  }

  // 4. config.json: a plain bf16 model (no quantization_config); the other files as they are.
  ojson cfg = parse_json(config_path);
  cfg.erase("quantization_config");
  if (cfg.contains("torch_dtype")) cfg["torch_dtype"] = "bfloat16";
  if (cfg.contains("dtype") || !cfg.contains("torch_dtype")) cfg["dtype"] = "bfloat16";
  engine::io::write_file_atomic((tmp / "config.json").string(), cfg.dump(2) + "\n");
  models::copy_model_side_files(o.model_dir, tmp.string());
  if (o.log)
    *o.log << "merge: " << merged << " linears merged (scaling " << adapter.scaling << ", r "
           << adapter.r << ")" << (bnb ? ", base dequantized from bitsandbytes 4-bit" : "")
           << (o.base_as_nf4 ? ", base as NF4" : "") << "\n";
}

}  // namespace

void merge_adapter(const MergeOptions& o) {
  ENGINE_INPUT_CHECK(fs::is_directory(o.model_dir), "--model ", o.model_dir, ": not a directory");
  engine::io::write_new_directory(o.output_dir, "--output", [&](const fs::path& tmp) { merge_into(o, tmp); });
}

int merge_main(int argc, char** argv) {
  MergeOptions o;
  std::string shard_size = "5GB", base_as = "stored";
  CLI::App app{"train70b merge: folds a PEFT LoRA adapter into its base model and writes a plain\n"
               "bf16 Llama directory (safetensors shards, config.json, tokenizer files) that\n"
               "transformers loads as LlamaForCausalLM. W' = W + (alpha/r) B A in fp32, rounded\n"
               "to bf16 once; a bitsandbytes 4-bit base is dequantized first.",
               "train70b merge"};
  app.add_option("--model", o.model_dir, "Base model directory or id in the local hub cache")->required();
  app.add_option("--adapter", o.adapter_dir, "PEFT adapter directory (train70b's --output)")->required();
  app.add_option("--output", o.output_dir, "New directory for the merged model (absent or empty)")
      ->required();
  app.add_option("--max-shard-size", shard_size, "Largest safetensors shard: 5GB, 500MB, 2GiB")
      ->capture_default_str();
  app.add_option("--base-as", base_as,
                 "stored: merge into the base as stored (PEFT's merge_and_unload); nf4: into its\n"
                 "NF4 quantization, the weights a QLoRA run trained against")
      ->check(CLI::IsMember({"stored", "nf4"}))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "Threads (0: all cores)")->capture_default_str();
  if (const std::optional<int> end = parse_command_line(app, argc, argv, "train70b merge")) return *end;
  try {
    o.max_shard_bytes = models::parse_shard_size(shard_size);
    o.base_as_nf4 = base_as == "nf4";
    o.log = &std::cout;
    if (!fs::exists(o.model_dir) && models::is_hf_model_id(o.model_dir))
      o.model_dir = models::resolve_hf_model(o.model_dir);
    merge_adapter(o);
    std::cout << "merge: wrote " << o.output_dir << "\n";
    return 0;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "train70b merge: out of host memory while merging into %s\n", o.output_dir.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train70b merge: %s\n", e.what());
    return 1;
  }
}

}  // namespace train
