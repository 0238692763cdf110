// Pre-quantized bitsandbytes 4-bit checkpoints: reading them as stored, writing them
// (train70b quantize). The serialized form (../shared/facts.md "Serialized form"), for a
// weight P of shape [out, in] with n = out * in values and nb = ceil(n / 64) blocks:
//   P                                   U8 [ceil(n/2), 1]  packed nibbles (2j high)
//   P.absmax                            U8 [nb] (nested) or F32 [nb]
//   P.quant_map                         F32 [16]           the NF4 code table
//   P.nested_absmax                     F32 [ceil(nb/256)] (nested only)
//   P.nested_quant_map                  F32 [256]          (nested only)
//   P.quant_state.bitsandbytes__nf4     U8 JSON: quant_type, blocksize, dtype, shape and,
//                                       nested, nested_blocksize, nested_dtype, nested_offset
// This is QuantState.as_dict(packed=True) of bitsandbytes, which transformers saves as it is.
#include "models/bnb_checkpoint.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/error.h"
#include "engine/io/atomic_file.h"
#include "kernels/math/nf4.h"
#include "models/hf_config.h"
#include "models/weight_loader.h"

namespace models {
namespace {

namespace fs = std::filesystem;
using engine::DType;
using engine::InputError;
using engine::Shape;
using engine::Tensor;
using engine::io::SafetensorsIndex;
using engine::io::TensorInfo;
using json = nlohmann::json;

constexpr const char* kNf4State = ".quant_state.bitsandbytes__nf4";
constexpr const char* kFp4State = ".quant_state.bitsandbytes__fp4";

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  ENGINE_INPUT_CHECK(f.good(), path, ": cannot open for reading");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

json parse_json(const std::string& text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    std::string reason = e.what();
    if (size_t p = reason.find("] "); p != std::string::npos) reason = reason.substr(p + 2);
    throw InputError(where + ": invalid JSON: " + engine::one_line(reason, true));
  }
}

// The file holding `name` when it is there, else the index (for "missing" errors).
std::string file_of(const SafetensorsIndex& index, const std::string& name) {
  return index.has(name) ? index.file(name).path() : index.path();
}

// Tensor `name` of `dtype` and exactly `numel` elements (any shape), read into a 1-D tensor.
Tensor read_exact(const SafetensorsIndex& index, const std::string& weight,
                  const std::string& suffix, DType dtype, int64_t numel, const char* what) {
  const std::string name = weight + suffix;
  ENGINE_INPUT_CHECK(index.has(name), index.path(), ": tensor '", name,
                     "' is missing (a bitsandbytes 4-bit weight stores its ", what, " there)");
  const TensorInfo& info = index.info(name);
  const std::string file = index.file(name).path();
  ENGINE_INPUT_CHECK(info.dtype == dtype, file, ": tensor '", name, "' has dtype ",
                     info.dtype_name, ", expected ", engine::io::safetensors_dtype_name(dtype));
  ENGINE_INPUT_CHECK(info.numel == numel, file, ": tensor '", name, "' has ", info.numel,
                     " elements, expected ", numel, " (", what, ")");
  Tensor t = Tensor::empty({numel}, dtype);
  index.read(name, {static_cast<uint8_t*>(t.raw_data()), info.nbytes()});
  return t;
}

void check_finite(const Tensor& t, const std::string& file, const std::string& name) {
  const float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    ENGINE_INPUT_CHECK(std::isfinite(p[i]), file, ": tensor '", name, "' has a non-finite value at ",
                       i);
}

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// Python's repr of a float32 widened to double: the shortest round-trip decimal.
std::string float_repr(float v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, static_cast<double>(v));
  std::string s(buf, r.ptr);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

Tensor u8_bytes(const std::string& s) {
  Tensor t = Tensor::empty({static_cast<int64_t>(s.size())}, DType::U8);
  std::memcpy(t.raw_data(), s.data(), s.size());
  return t;
}

const char* torch_dtype_name(DType d) {
  switch (d) {
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    default: return "float32";
  }
}

}  // namespace

std::optional<BnbQuantization> read_bnb_quantization(const std::string& path) {
  const json config = parse_json(read_text(path), path);
  ENGINE_INPUT_CHECK(config.is_object(), path, ": expected a JSON object");
  auto it = config.find("quantization_config");
  if (it == config.end() || it->is_null()) return std::nullopt;
  const json& q = *it;
  const std::string where = path + ": quantization_config";
  ENGINE_INPUT_CHECK(q.is_object(), where, " is not an object");
  auto flag = [&](const char* key) {
    auto k = q.find(key);
    if (k == q.end() || k->is_null()) return false;
    ENGINE_INPUT_CHECK(k->is_boolean(), where, ".", key, " is not true or false");
    return k->get<bool>();
  };
  auto text = [&](const char* key, const std::string& fallback) {
    auto k = q.find(key);
    if (k == q.end() || k->is_null()) return fallback;
    ENGINE_INPUT_CHECK(k->is_string(), where, ".", key, " is not a string");
    return k->get<std::string>();
  };
  const std::string method = text("quant_method", "bitsandbytes");
  ENGINE_INPUT_CHECK(method == "bitsandbytes", where, ".quant_method \"", engine::one_line(method, true),
                     "\" is not supported: train70b loads bitsandbytes 4-bit (nf4) checkpoints, or "
                     "the dense model (and quantizes it itself)");
  ENGINE_INPUT_CHECK(!flag("load_in_8bit") && !flag("_load_in_8bit"), where,
                     ".load_in_8bit: 8-bit checkpoints are not supported (only 4-bit nf4)");
  ENGINE_INPUT_CHECK(flag("load_in_4bit") || flag("_load_in_4bit"), where,
                     ": load_in_4bit is not true (only bitsandbytes 4-bit nf4 checkpoints load)");
  // transformers' BitsAndBytesConfig defaults bnb_4bit_quant_type to "fp4".
  const std::string type = text("bnb_4bit_quant_type", "fp4");
  ENGINE_INPUT_CHECK(type == "nf4", where, ".bnb_4bit_quant_type is \"", engine::one_line(type, true),
                     "\": only \"nf4\" is supported");
  const std::string storage = text("bnb_4bit_quant_storage", "uint8");
  ENGINE_INPUT_CHECK(storage == "uint8", where, ".bnb_4bit_quant_storage is \"",
                     engine::one_line(storage, true), "\": only \"uint8\" is supported");
  BnbQuantization b;
  b.double_quant = flag("bnb_4bit_use_double_quant");
  b.compute_dtype = text("bnb_4bit_compute_dtype", "float32");
  return b;
}

engine::quant::Nf4Weight read_bnb_nf4(const SafetensorsIndex& index, const std::string& name,
                                      const Shape& expected) {
  ENGINE_INPUT_CHECK(!index.has(name + kFp4State), file_of(index, name + kFp4State), ": weight '",
                     name, "' is quantized as fp4: only nf4 is supported");
  // 1. The quant state: what the other tensors must look like.
  const std::string state_name = name + kNf4State;
  ENGINE_INPUT_CHECK(index.has(state_name), index.path(), ": tensor '", state_name,
                     "' is missing (the quant state of the bitsandbytes 4-bit weight '", name, "')");
  const std::string state_file = index.file(state_name).path();
  const std::string where = state_file + ": tensor '" + state_name + "'";
  const TensorInfo& si = index.info(state_name);
  ENGINE_INPUT_CHECK(si.dtype == DType::U8, where, " has dtype ", si.dtype_name, ", expected U8");
  std::string bytes(si.nbytes(), '\0');
  index.read(state_name, {reinterpret_cast<uint8_t*>(bytes.data()), bytes.size()});
  const json st = parse_json(bytes, where);
  ENGINE_INPUT_CHECK(st.is_object(), where, ": expected a JSON object");
  auto field = [&](const char* key) -> const json& {
    auto k = st.find(key);
    ENGINE_INPUT_CHECK(k != st.end(), where, ": missing field \"", key, "\"");
    return *k;
  };
  const json& type = field("quant_type");
  ENGINE_INPUT_CHECK(type == "nf4", where, ": quant_type is ", engine::one_line(type.dump(), true),
                     ", only \"nf4\" is supported");
  const json& block = field("blocksize");
  ENGINE_INPUT_CHECK(block == engine::quant::kNf4Block, where, ": blocksize is ",
                     engine::one_line(block.dump(), true), ", only ", engine::quant::kNf4Block,
                     " is supported");
  const json& shape = field("shape");
  std::vector<int64_t> want;
  for (int i = 0; i < expected.rank(); ++i) want.push_back(expected[i]);
  bool shape_ok = shape.is_array() && shape.size() == want.size();
  for (size_t i = 0; shape_ok && i < want.size(); ++i)
    shape_ok = shape[i].is_number_integer() && shape[i].get<int64_t>() == want[i];
  if (!shape_ok) {
    std::vector<int64_t> got;
    bool ints = shape.is_array();
    for (size_t i = 0; ints && i < shape.size(); ++i)
      if ((ints = shape[i].is_number_integer())) got.push_back(shape[i].get<int64_t>());
    ENGINE_INPUT_CHECK(false, where, ": shape ",
                       ints ? shape_text(got) : engine::one_line(shape.dump(), true),
                       " does not match the config, which gives ", shape_text(want));
  }
  const bool nested = st.contains("nested_blocksize");

  // 2. The packed nibbles and the code table.
  engine::quant::Nf4Weight w;
  w.shape = expected;
  const int64_t n = expected.numel(), nb = w.num_blocks();
  w.packed = read_exact(index, name, "", DType::U8, (n + 1) / 2, "packed 4-bit values");
  const Tensor code = read_exact(index, name, ".quant_map", DType::F32, kmath::kNf4Codes,
                                 "NF4 code table");
  for (int i = 0; i < kmath::kNf4Codes; ++i)
    ENGINE_INPUT_CHECK(code.data<float>()[i] == kmath::nf4_code(i), index.file(name + ".quant_map").path(),
                       ": tensor '", name, ".quant_map' entry ", i, " is ", code.data<float>()[i],
                       ", not the NF4 code ", kmath::nf4_code(i));

  // 3. The block scales, as stored.
  if (!nested) {
    w.double_quant = false;
    w.absmax = read_exact(index, name, ".absmax", DType::F32, nb, "per-block absmax");
    check_finite(w.absmax, index.file(name + ".absmax").path(), name + ".absmax");
    return w;
  }
  const json& nblock = field("nested_blocksize");
  ENGINE_INPUT_CHECK(nblock == engine::quant::kNestedBlock, where, ": nested_blocksize is ",
                     engine::one_line(nblock.dump(), true), ", only ", engine::quant::kNestedBlock,
                     " is supported");
  const json& off = field("nested_offset");
  ENGINE_INPUT_CHECK(off.is_number() && std::isfinite(off.get<double>()), where,
                     ": nested_offset is not a finite number");
  w.double_quant = true;
  w.offset = static_cast<float>(off.get<double>());
  w.absmax_q = read_exact(index, name, ".absmax", DType::U8, nb, "8-bit absmax codes");
  w.nested_absmax = read_exact(index, name, ".nested_absmax", DType::F32,
                               (nb + engine::quant::kNestedBlock - 1) / engine::quant::kNestedBlock,
                               "nested absmax");
  check_finite(w.nested_absmax, index.file(name + ".nested_absmax").path(), name + ".nested_absmax");
  const Tensor map = read_exact(index, name, ".nested_quant_map", DType::F32, kmath::kDynamicMapSize,
                                "8-bit absmax map");
  check_finite(map, index.file(name + ".nested_quant_map").path(), name + ".nested_quant_map");
  bool builtin = true;
  for (int i = 0; i < kmath::kDynamicMapSize && builtin; ++i)
  {
    const float v = kmath::dynamic_map_value(i);
    builtin = std::memcmp(&map.data<float>()[i], &v, sizeof(float)) == 0;
  }
  if (builtin) return w;
  // A map the kernels do not carry (e.g. written by a torch without SIMD): apply it here,
  // exactly as bitsandbytes does, and keep the fp32 absmax it gives.
  Tensor absmax = Tensor::empty({nb}, DType::F32);
  engine::quant::dequantize_absmax_nested(w.absmax_q.data<uint8_t>(), w.nested_absmax.data<float>(),
                                          nb, w.offset, absmax.data<float>(), map.data<float>());
  w.double_quant = false;
  w.absmax = absmax;
  w.absmax_q = Tensor();
  w.nested_absmax = Tensor();
  w.offset = 0.0f;
  return w;
}

std::vector<std::pair<std::string, Tensor>> bnb_nf4_tensors(const std::string& name,
                                                            const engine::quant::Nf4Weight& w,
                                                            const std::string& compute_dtype) {
  std::vector<std::pair<std::string, Tensor>> out;
  const int64_t packed = w.packed.numel();
  out.emplace_back(name, w.packed.view({packed, 1}));
  out.emplace_back(name + ".absmax", w.double_quant ? w.absmax_q : w.absmax);
  std::vector<float> code(kmath::kNf4Codes);
  for (int i = 0; i < kmath::kNf4Codes; ++i) code[i] = kmath::nf4_code(i);
  out.emplace_back(name + ".quant_map", Tensor::from_floats(code, {kmath::kNf4Codes}));
  std::string state = "{\"quant_type\": \"nf4\", \"blocksize\": " +
                      std::to_string(engine::quant::kNf4Block) + ", \"dtype\": \"" + compute_dtype +
                      "\", \"shape\": " + shape_text([&] {
                        std::vector<int64_t> d;
                        for (int i = 0; i < w.shape.rank(); ++i) d.push_back(w.shape[i]);
                        return d;
                      }());
  if (w.double_quant) {
    out.emplace_back(name + ".nested_absmax", w.nested_absmax);
    std::vector<float> map(kmath::kDynamicMapSize);
    for (int i = 0; i < kmath::kDynamicMapSize; ++i) map[i] = kmath::dynamic_map_value(i);
    out.emplace_back(name + ".nested_quant_map", Tensor::from_floats(map, {kmath::kDynamicMapSize}));
    state += ", \"nested_blocksize\": " + std::to_string(engine::quant::kNestedBlock) +
             ", \"nested_dtype\": \"float32\", \"nested_offset\": " + float_repr(w.offset);
  }
  out.emplace_back(name + kNf4State, u8_bytes(state + "}"));
  return out;
}

uint64_t parse_shard_size(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  std::string unit = text.substr(i);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::pair<const char*, double> units[] = {{"", 1},       {"B", 1},     {"KB", 1e3},
                                                  {"MB", 1e6},   {"GB", 1e9},  {"TB", 1e12},
                                                  {"KIB", 1024.0}, {"MIB", 1048576.0},
                                                  {"GIB", 1073741824.0}};
  double scale = 0;
  for (const auto& [u, s] : units)
    if (unit == u) scale = s;
  double value = 0;
  bool number = i > 0;
  if (number) {
    auto r = std::from_chars(text.data(), text.data() + i, value);
    number = r.ec == std::errc() && r.ptr == text.data() + i;
  }
  ENGINE_INPUT_CHECK(number && scale > 0 && value * scale >= 1e6 && value * scale <= 1e15,
                     "--max-shard-size ", engine::one_line(text, true),
                     ": expected a size such as 5GB, 500MB or 2GiB, between 1MB and 1000TB");
  return static_cast<uint64_t>(value * scale);
}

namespace {

// Bytes one weight takes in the output.
uint64_t output_bytes(const TensorInfo& info, bool linear) {
  if (!linear) return info.nbytes();
  const uint64_t n = static_cast<uint64_t>(info.numel), nb = (n + 63) / 64;
  // packed, code table, quant state, absmax codes, nested absmax, nested map
  return (n + 1) / 2 + 64 + 256 + nb + 4 * ((nb + 255) / 256) + 1024;
}

// transformers' BitsAndBytesConfig.to_dict() for load_in_4bit nf4, keys in its order.
nlohmann::ordered_json quantization_config(bool double_quant, const std::string& compute_dtype) {
  nlohmann::ordered_json q;
  q["_load_in_4bit"] = true;
  q["_load_in_8bit"] = false;
  q["bnb_4bit_compute_dtype"] = compute_dtype;
  q["bnb_4bit_quant_storage"] = "uint8";
  q["bnb_4bit_quant_type"] = "nf4";
  q["bnb_4bit_use_double_quant"] = double_quant;
  q["llm_int8_enable_fp32_cpu_offload"] = false;
  q["llm_int8_has_fp16_weight"] = false;
  q["llm_int8_skip_modules"] = nullptr;
  q["llm_int8_threshold"] = 6.0;
  q["load_in_4bit"] = true;
  q["load_in_8bit"] = false;
  q["quant_method"] = "bitsandbytes";
  return q;
}



void write_into(const std::string& model_dir, const fs::path& tmp, const QuantizeOptions& o) {
  const std::string config_path = (fs::path(model_dir) / "config.json").string();
  ENGINE_INPUT_CHECK(fs::is_regular_file(config_path), model_dir, ": no config.json");
  const LlamaConfig config = load_hf_config(config_path);
  ENGINE_INPUT_CHECK(!read_bnb_quantization(config_path), config_path,
                     ": already a bitsandbytes 4-bit checkpoint (quantization_config)");
  const SafetensorsIndex index(model_dir);
  const std::vector<WeightSpec> specs = llama_weight_specs(config);

  // 1. Check every header and plan the shards before writing a byte.
  std::map<std::string, const WeightSpec*> by_name;
  for (const WeightSpec& s : specs) by_name[s.name] = &s;
  std::vector<std::string> order;  // the index's order, so the shards follow the input's
  for (const WeightSpec& s : specs)
    ENGINE_INPUT_CHECK(index.has(s.name), index.path(), ": missing weight '", s.name, "'");
  DType weight_dtype = DType::F32;
  for (const std::string& name : index.names()) {
    const std::string file = index.file(name).path();
    auto it = by_name.find(name);
    ENGINE_INPUT_CHECK(it != by_name.end() || (config.tie_embeddings && name == "lm_head.weight"),
                       file, ": unexpected weight '", name, "' (not part of this Llama architecture)");
    const TensorInfo& info = index.info(name);
    const bool floating = info.dtype && (*info.dtype == DType::BF16 || *info.dtype == DType::F16 ||
                                         *info.dtype == DType::F32);
    ENGINE_INPUT_CHECK(floating, file, ": weight '", name, "' has dtype ", info.dtype_name,
                       ", expected BF16, F16 or F32");
    if (it != by_name.end()) {
      std::vector<int64_t> want;
      for (int i = 0; i < it->second->shape.rank(); ++i) want.push_back(it->second->shape[i]);
      ENGINE_INPUT_CHECK(info.shape == want, file, ": weight '", name, "' has shape ",
                         shape_text(info.shape), ", expected ", shape_text(want));
      if (it->second->linear) weight_dtype = *info.dtype;
    }
    order.push_back(name);
  }
  std::vector<std::vector<std::string>> shards(1);
  uint64_t in_shard = 0;
  for (const std::string& name : order) {
    const bool linear = by_name.count(name) && by_name[name]->linear;
    const uint64_t b = output_bytes(index.info(name), linear);
    if (in_shard > 0 && in_shard + b > o.max_shard_bytes) shards.emplace_back(), in_shard = 0;
    shards.back().push_back(name);
    in_shard += b;
  }

  // 2. Shard by shard: one shard's tensors in memory, one staging weight at a time.
  const std::string dtype_name = torch_dtype_name(weight_dtype);
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  uint64_t total = 0;
  char fname[64];
  for (size_t s = 0; s < shards.size(); ++s) {
    if (shards.size() == 1)
      std::snprintf(fname, sizeof fname, "model.safetensors");
    else
      std::snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const std::string& name : shards[s]) {
      const TensorInfo& info = index.info(name);
      Tensor raw = Tensor::empty(Shape{info.numel}, *info.dtype);
      index.read(name, {static_cast<uint8_t*>(raw.raw_data()), info.nbytes()});
      auto it = by_name.find(name);
      if (it != by_name.end() && it->second->linear) {
        const std::string where = index.file(name).path() + ": weight '" + name + "'";
        const engine::quant::Nf4Weight w =
            quantize_nf4_host(raw.raw_data(), *info.dtype, it->second->shape, o.threads, where);
        for (auto& t : bnb_nf4_tensors(name, w, dtype_name)) tensors.push_back(std::move(t));
      } else {
        const std::vector<int64_t>& d = info.shape;  // [n] norms, [rows, cols] the rest
        tensors.emplace_back(name, raw.view(d.size() == 1 ? Shape{d[0]} : Shape{d[0], d[1]}));
      }
    }
    for (const auto& [name, t] : tensors) {
      weight_map[name] = fname;
      total += t.nbytes();
    }
    engine::io::write_safetensors((tmp / fname).string(), tensors, {{"format", "pt"}});
    if (o.log)
      *o.log << "quantize: wrote " << fname << " (" << shards[s].size() << " weights)\n" << std::flush;
  }
  if (shards.size() > 1) {
    nlohmann::ordered_json idx;
    idx["metadata"] = {{"total_size", total}};
    idx["weight_map"] = weight_map;
    engine::io::write_file_atomic((tmp / "model.safetensors.index.json").string(), idx.dump(2) + "\n");
  }

  // 3. config.json with its quantization_config; the tokenizer and generation files.
  nlohmann::ordered_json cfg;
  try {
    cfg = nlohmann::ordered_json::parse(read_text(config_path));
  } catch (const nlohmann::ordered_json::exception& e) {
    throw InputError(config_path + ": invalid JSON");  // load_hf_config accepted it: unreachable
  }
  cfg["quantization_config"] = quantization_config(true, dtype_name);
  engine::io::write_file_atomic((tmp / "config.json").string(), cfg.dump(2) + "\n");
  models::copy_model_side_files(model_dir, tmp.string());
}

}  // namespace

void write_bnb_checkpoint(const std::string& model_dir, const std::string& output_dir,
                          const QuantizeOptions& o) {
  ENGINE_INPUT_CHECK(fs::is_directory(model_dir), "--model ", model_dir, ": not a directory");
  engine::io::write_new_directory(output_dir, "--output", [&](const fs::path& tmp) { write_into(model_dir, tmp, o); });
}

}  // namespace models
