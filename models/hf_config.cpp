// Hugging Face config.json -> LlamaConfig (see hf_config.h for the accepted keys).
#include "models/hf_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <vector>

#include "engine/error.h"
#include "engine/io/file_read.h"

namespace models {

namespace {

using json = nlohmann::json;
using engine::one_line;

constexpr uint64_t kMaxConfigBytes = 16 << 20;  // real ones are a few KB


// Reads and checks the fields of one config.json; every error names the file first.
class ConfigReader {
 public:
  ConfigReader(std::string path, const json& root) : path_(std::move(path)), root_(root) {}

  [[noreturn]] void fail(const std::string& problem) const {
    throw engine::InputError(path_ + ": " + one_line(problem, true));
  }

  // The value at `key` in `obj` (named `where` in messages), or nullptr when absent or null.
  const json* find(const json& obj, const std::string& key) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
  }

  const json& require(const json& obj, const std::string& key, const std::string& where) const {
    const json* v = find(obj, key);
    if (!v) fail("missing field \"" + where + "\"");
    return *v;
  }

  [[noreturn]] void wrong_type(const std::string& where, const char* expected,
                               const json& v) const {
    fail("field \"" + where + "\" must be " + expected + ", got " + v.type_name() + " " +
         excerpt(v));
  }

  // The value as JSON text, shortened for a message.
  static std::string excerpt(const json& v) {
    std::string s = v.dump();
    return s.size() <= 40 ? s : s.substr(0, 37) + "...";
  }

  int64_t integer(const json& v, const std::string& where) const {
    if (!v.is_number_integer()) wrong_type(where, "an integer", v);
    if (v.is_number_unsigned() &&
        v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail("field \"" + where + "\" is out of range: " + excerpt(v));
    return v.get<int64_t>();
  }

  double number(const json& v, const std::string& where) const {
    if (!v.is_number()) wrong_type(where, "a number", v);
    return v.get<double>();
  }

  std::string string(const json& v, const std::string& where) const {
    if (!v.is_string()) wrong_type(where, "a string", v);
    return v.get<std::string>();
  }

  bool boolean(const json& v, const std::string& where) const {
    if (!v.is_boolean()) wrong_type(where, "a boolean", v);
    return v.get<bool>();
  }

  int64_t positive_int(const std::string& key) const {
    int64_t n = integer(require(root_, key, key), key);
    if (n <= 0) fail("field \"" + key + "\" must be positive, got " + std::to_string(n));
    return n;
  }

  std::optional<int64_t> optional_positive_int(const std::string& key) const {
    const json* v = find(root_, key);
    if (!v) return std::nullopt;
    int64_t n = integer(*v, key);
    if (n <= 0) fail("field \"" + key + "\" must be positive, got " + std::to_string(n));
    return n;
  }

  // A positive float (rms_norm_eps, rope_theta, rope factors).
  float positive_float(const json& v, const std::string& where) const {
    double x = number(v, where);
    if (!(x > 0) || !std::isfinite(static_cast<float>(x)))
      fail("field \"" + where + "\" must be a positive number, got " + excerpt(v));
    return static_cast<float>(x);
  }

  void check_architecture() const {
    const json* model_type = find(root_, "model_type");
    const json* architectures = find(root_, "architectures");
    if (!model_type && !architectures) fail("missing field \"model_type\"");
    if (model_type) {
      std::string t = string(*model_type, "model_type");
      if (t != "llama")
        fail("unsupported architecture: model_type \"" + t +
             "\" (supported: Llama 2 and 3.x, model_type \"llama\")");
    }
    if (architectures) {
      if (!architectures->is_array()) wrong_type("architectures", "an array", *architectures);
      for (size_t i = 0; i < architectures->size(); ++i) {
        std::string a = string((*architectures)[i], "architectures[" + std::to_string(i) + "]");
        if (a != "LlamaForCausalLM")
          fail("unsupported architecture \"" + a + "\" (supported: LlamaForCausalLM)");
      }
    }
  }

  // Features of LlamaConfig that the engine's model does not implement.
  void check_unsupported_features() const {
    for (const char* key : {"attention_bias", "mlp_bias"})
      if (const json* v = find(root_, key); v && boolean(*v, key))
        fail(std::string("field \"") + key + "\" is true: biases are not supported");
    if (const json* v = find(root_, "hidden_act")) {
      std::string act = string(*v, "hidden_act");
      if (act != "silu") fail("unsupported hidden_act \"" + act + "\" (supported: silu)");
    }
  }

  // rope_theta and the optional llama3 scaling, from rope_parameters (newer spelling, may
  // hold rope_theta) or rope_scaling.
  engine::RopeConfig rope() const {
    engine::RopeConfig r;
    std::string where = "rope_parameters";
    const json* scaling = find(root_, where);
    if (!scaling) {
      where = "rope_scaling";
      scaling = find(root_, where);
    }
    if (scaling && !scaling->is_object()) wrong_type(where, "an object", *scaling);

    if (scaling && find(*scaling, "rope_theta"))
      r.theta = positive_float(*find(*scaling, "rope_theta"), where + ".rope_theta");
    else if (const json* theta = find(root_, "rope_theta"))
      r.theta = positive_float(*theta, "rope_theta");
    if (!scaling) return r;

    const json* type = find(*scaling, "rope_type");
    std::string type_key = where + ".rope_type";
    if (!type) {
      type = find(*scaling, "type");
      type_key = where + ".type";
    }
    if (!type) fail("missing field \"" + where + ".rope_type\"");
    std::string rope_type = string(*type, type_key);
    if (rope_type == "default") return r;
    if (rope_type != "llama3")
      fail("unsupported rope_type \"" + rope_type + "\" in \"" + where +
           "\" (supported: default, llama3)");

    auto field = [&](const char* key) {
      return positive_float(require(*scaling, key, where + "." + key), where + "." + key);
    };
    r.scaling_factor = field("factor");
    r.low_freq_factor = field("low_freq_factor");
    r.high_freq_factor = field("high_freq_factor");
    r.original_max_position = field("original_max_position_embeddings");
    if (r.scaling_factor < 1.0f)
      fail("field \"" + where + ".factor\" must be >= 1, got " + std::to_string(r.scaling_factor));
    if (r.high_freq_factor <= r.low_freq_factor)
      fail("field \"" + where + ".high_freq_factor\" must be greater than low_freq_factor");
    return r;
  }

  LlamaConfig read() const {
    if (!root_.is_object())
      fail(std::string("expected a JSON object at the top level, got ") + root_.type_name());
    check_architecture();
    check_unsupported_features();

    LlamaConfig c;
    c.hidden = positive_int("hidden_size");
    c.layers = positive_int("num_hidden_layers");
    c.heads = positive_int("num_attention_heads");
    c.intermediate = positive_int("intermediate_size");
    c.vocab = positive_int("vocab_size");
    c.rms_norm_eps = positive_float(require(root_, "rms_norm_eps", "rms_norm_eps"), "rms_norm_eps");
    c.kv_heads = optional_positive_int("num_key_value_heads").value_or(c.heads);
    if (auto head_dim = optional_positive_int("head_dim")) {
      c.head_dim = *head_dim;
    } else {
      if (c.hidden % c.heads != 0)
        fail("hidden_size " + std::to_string(c.hidden) + " is not a multiple of " +
             "num_attention_heads " + std::to_string(c.heads) + " and head_dim is absent");
      c.head_dim = c.hidden / c.heads;
    }
    if (c.heads % c.kv_heads != 0)
      fail("num_attention_heads " + std::to_string(c.heads) + " is not a multiple of " +
           "num_key_value_heads " + std::to_string(c.kv_heads));
    if (c.head_dim % 2 != 0)
      fail("head_dim " + std::to_string(c.head_dim) + " must be even for RoPE");
    c.rope = rope();
    if (const json* tie = find(root_, "tie_word_embeddings"))
      c.tie_embeddings = boolean(*tie, "tie_word_embeddings");
    for (const char* key : {"torch_dtype", "dtype"})  // the newer spelling wins
      if (const json* v = find(root_, key)) c.torch_dtype = string(*v, key);
    c.max_position = optional_positive_int("max_position_embeddings").value_or(0);

    try {
      c.validate();
    } catch (const engine::InputError& e) {  // it does not know the file: name it
      fail(e.what());
    }
    return c;
  }

 private:
  std::string path_;
  const json& root_;
};

// Parses config.json strictly: a duplicate key (which nlohmann would resolve silently to
// its last value) and anything the parser throws besides a syntax error (a number such as
// 1e400 overflows a double: out_of_range.406) become one line naming the file and the key.
json parse_config(const std::string& path, const std::string& text) {
  struct Frame {
    bool object;
    std::set<std::string> keys;
    std::string key;  // the latest key of this object
  };
  std::vector<Frame> stack;
  auto where = [&] {  // "rope_scaling.factor": the keys leading to the value being read
    std::string w;
    for (const Frame& f : stack)
      if (f.object && !f.key.empty()) w += (w.empty() ? "" : ".") + f.key;
    return w;
  };
  auto callback = [&](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start: stack.push_back({true, {}, {}}); break;
      case json::parse_event_t::array_start: stack.push_back({false, {}, {}}); break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case json::parse_event_t::key: {
        Frame& f = stack.back();
        f.key = parsed.get<std::string>();
        if (!f.keys.insert(f.key).second)
          throw engine::InputError(path + ": " +
                                   one_line("duplicate key \"" + where() + "\"", true));
        break;
      }
      case json::parse_event_t::value: break;
    }
    return true;
  };
  try {
    return json::parse(text, callback);
  } catch (const json::parse_error& e) {
    // Report line and column of the byte where parsing stopped (e.byte counts from 1).
    size_t end = std::min(e.byte > 0 ? e.byte - 1 : 0, text.size());
    size_t line = 1, column = 1;
    for (size_t i = 0; i < end; ++i) {
      if (text[i] == '\n')
        ++line, column = 1;
      else
        ++column;
    }
    std::string reason = e.what();
    if (size_t p = reason.find(": "); p != std::string::npos) reason = reason.substr(p + 2);
    throw engine::InputError(path + ": invalid JSON at line " + std::to_string(line) +
                             ", column " + std::to_string(column) + ": " + one_line(reason, true));
  } catch (const json::exception& e) {
    std::string reason = e.what();
    if (size_t p = reason.find("] "); p != std::string::npos) reason = reason.substr(p + 2);
    const std::string w = where();
    throw engine::InputError(path + ": invalid JSON" + (w.empty() ? "" : " in field \"" + w + "\"") +
                             ": " + one_line(reason, true));
  }
}

}  // namespace

LlamaConfig load_hf_config(const std::string& path) {
  // A FIFO or device named config.json is refused rather than read (or waited on) forever.
  const std::string text = engine::io::read_small_file(path, kMaxConfigBytes);
  return ConfigReader(path, parse_config(path, text)).read();
}

void copy_model_side_files(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  static constexpr const char* kSideFiles[] = {
      "tokenizer.json",    "tokenizer_config.json",  "special_tokens_map.json", "tokenizer.model",
      "added_tokens.json", "vocab.json",             "merges.txt",              "generation_config.json",
      "chat_template.jinja", "chat_template.json"};
  for (const char* f : kSideFiles) {
    const fs::path src = fs::path(from) / f;
    if (fs::is_regular_file(src)) fs::copy_file(src, fs::path(to) / f);
  }
}

}  // namespace models
