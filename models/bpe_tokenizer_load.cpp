// Reading tokenizer.json (and tokenizer_config.json for bos/eos) into BpeTokenizer's
// tables. What the engine does not implement is refused with one line naming the file.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/error.h"
#include "models/bpe_tokenizer.h"
#include "models/bpe_tokenizer_impl.h"

namespace models {

namespace {

using json = nlohmann::json;
using bpe_detail::AddedToken;
using bpe_detail::Regex;
using bpe_detail::Stage;

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 to
// U+0100 and up, in byte order.
std::array<uint32_t, 256> byte_to_char() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    map[b] = printable ? b : next++;
  }
  return map;
}

// The code points of valid UTF-8 `s`.
std::vector<uint32_t> code_points(std::string_view s) {
  std::vector<uint32_t> cps;
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    const int n = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    uint32_t cp = n == 1 ? b : b & (0x7F >> n);
    for (int k = 1; k < n && i + k < s.size(); ++k) cp = (cp << 6) | (s[i + k] & 0x3F);
    cps.push_back(cp);
    i += n;
  }
  return cps;
}

// The bytes a token's characters stand for, or nullopt when one is outside the map.
std::optional<std::string> token_bytes(std::string_view token,
                                       const std::unordered_map<uint32_t, char>& char_to_byte) {
  std::string bytes;
  for (uint32_t cp : code_points(token)) {
    const auto it = char_to_byte.find(cp);
    if (it == char_to_byte.end()) return std::nullopt;
    bytes += it->second;
  }
  return bytes;
}

class Loader {
 public:
  Loader(std::string path, BpeTokenizer::Impl& m) : path_(std::move(path)), m_(m) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw engine::InputError(path_ + ": " + what);
  }

  std::shared_ptr<Regex> compile(const json& pattern, const std::string& where) {
    std::string text;
    uint32_t options = PCRE2_UTF | PCRE2_UCP;
    if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
      text = pattern["Regex"].get<std::string>();
    } else if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
      text = pattern["String"].get<std::string>();
      options |= PCRE2_LITERAL;
    } else {
      fail(where + ": pattern must be {\"Regex\": ...} or {\"String\": ...}");
    }
    auto re = std::make_shared<Regex>();
    int err = 0;
    PCRE2_SIZE offset = 0;
    re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), options, &err,
                             &offset, nullptr);
    if (!re->code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      fail(where + ": pattern does not compile at offset " + std::to_string(offset) + ": " +
           reinterpret_cast<const char*>(msg));
    }
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    return re;
  }

  // Pre-tokenizers: Split and ByteLevel, alone or in a Sequence. False when there is no
  // ByteLevel (not a byte-level BPE).
  bool pre_tokenizer(const json& p) {
    if (!p.is_object()) fail("pre_tokenizer: missing; byte-level BPE needs ByteLevel");
    std::vector<const json*> list;
    const std::string type = p.value("type", "");
    if (type == "Sequence") {
      for (const json& q : p.at("pretokenizers")) list.push_back(&q);
    } else {
      list.push_back(&p);
    }
    bool byte_level = false;
    for (const json* q : list) {
      const std::string t = q->value("type", "");
      Stage st;
      if (t == "Split") {
        const std::string behavior = q->value("behavior", "Isolated");
        if (behavior != "Isolated" && behavior != "Removed")
          fail("pre_tokenizer Split behavior " + behavior + " is not supported (Isolated, Removed)");
        if (q->value("invert", false)) fail("pre_tokenizer Split with invert is not supported");
        st.kind = Stage::kSplit;
        st.remove_matches = behavior == "Removed";
        st.regex = compile(q->at("pattern"), "pre_tokenizer Split");
      } else if (t == "ByteLevel") {
        st.kind = Stage::kByteLevel;
        st.add_prefix_space = q->value("add_prefix_space", false);
        if (q->value("use_regex", true)) {
          static const char* kGpt2 =
              R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
          st.regex = compile(json{{"Regex", kGpt2}}, "pre_tokenizer ByteLevel");
        }
        byte_level = true;
      } else {
        if (!byte_level) return false;  // let the caller try tokenizer.model
        fail("pre_tokenizer " + t + " is not supported (Split, ByteLevel)");
      }
      m_.stages.push_back(st);
    }
    return byte_level;
  }

  void model(const json& mo, const std::unordered_map<uint32_t, char>& char_to_byte) {
    if (mo.value("type", "BPE") != "BPE") fail("model type " + mo.value("type", "") + " is not BPE");
    if (mo.contains("dropout") && !mo["dropout"].is_null()) fail("BPE dropout is not supported");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (mo.contains(k) && mo[k].is_string() && !mo[k].get<std::string>().empty())
        fail(std::string("BPE ") + k + " is not supported");
    m_.ignore_merges = mo.value("ignore_merges", false);
    m_.byte_id.fill(-1);
    const json& vocab = mo.at("vocab");
    if (!vocab.is_object()) fail("model.vocab is not an object");
    for (const auto& [token, idj] : vocab.items()) {
      if (!idj.is_number_integer() || idj.get<int64_t>() < 0 || idj.get<int64_t>() > INT32_MAX)
        fail("model.vocab: bad id for token " + engine::one_line(token, true));
      const auto id = idj.get<int32_t>();
      grow(id);
      const std::optional<std::string> bytes = token_bytes(token, char_to_byte);
      // A token outside the byte map is never produced by BPE; it decodes as its text.
      m_.id_bytes[static_cast<size_t>(id)] = bytes ? *bytes : token;
      if (!bytes) continue;
      m_.vocab.emplace(m_.key_storage.emplace_back(*bytes), id);
      if (bytes->size() == 1) m_.byte_id[static_cast<unsigned char>((*bytes)[0])] = id;
    }
    if (mo.contains("unk_token") && mo["unk_token"].is_string()) {
      const auto it = vocab.find(mo["unk_token"].get<std::string>());
      if (it != vocab.end()) m_.unk_id = it->get<int32_t>();
    }
    const json& merges = mo.at("merges");
    if (!merges.is_array()) fail("model.merges is not an array");
    m_.merges.reserve(merges.size());
    int32_t rank = 0;
    for (const json& mj : merges) {
      std::string a, b;
      if (mj.is_string()) {  // "a b"
        const std::string s = mj.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          fail("merge " + std::to_string(rank) + " is not two tokens: " + engine::one_line(s, true));
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (mj.is_array() && mj.size() == 2 && mj[0].is_string() && mj[1].is_string()) {
        a = mj[0].get<std::string>();
        b = mj[1].get<std::string>();
      } else {
        fail("merge " + std::to_string(rank) + " is neither \"a b\" nor [\"a\", \"b\"]");
      }
      const auto ia = vocab.find(a), ib = vocab.find(b), iab = vocab.find(a + b);
      if (ia == vocab.end() || ib == vocab.end() || iab == vocab.end())
        fail("merge " + std::to_string(rank) + " names a token missing from the vocab");
      m_.merges.emplace(bpe_detail::pair_key(ia->get<int32_t>(), ib->get<int32_t>()),
                        bpe_detail::Merge{rank, iab->get<int32_t>()});
      ++rank;
    }
  }

  void added_tokens(const json& list, const std::unordered_map<uint32_t, char>& char_to_byte) {
    if (list.is_null()) return;
    if (!list.is_array()) fail("added_tokens is not an array");
    for (const json& t : list) {
      AddedToken a;
      a.content = t.at("content").get<std::string>();
      a.id = t.at("id").get<int32_t>();
      if (a.id < 0) fail("added token " + engine::one_line(a.content, true) + " has a negative id");
      a.special = t.value("special", false);
      a.normalized = t.value("normalized", !a.special);
      a.lstrip = t.value("lstrip", false);
      a.rstrip = t.value("rstrip", false);
      a.single_word = t.value("single_word", false);
      grow(a.id);
      // Decoded through ByteLevel: its characters mapped back to bytes, or its UTF-8
      // when one is outside the map (the package's ByteLevel decoder).
      const std::optional<std::string> bytes = token_bytes(a.content, char_to_byte);
      m_.id_bytes[static_cast<size_t>(a.id)] = bytes ? *bytes : a.content;
      m_.added_by_content[a.content] = a.id;
      const AddedToken* p = &m_.added.emplace_back(std::move(a));
      (p->normalized ? m_.norm : m_.raw).add(p);
    }
  }

  // TemplateProcessing's "single" (alone or in a Sequence): the ids before and after $A.
  void post_processor(const json& p) {
    if (p.is_null()) return;
    const std::string type = p.value("type", "");
    if (type == "Sequence") {
      for (const json& q : p.at("processors")) post_processor(q);
    } else if (type == "TemplateProcessing") {
      bool after = false;
      for (const json& piece : p.at("single")) {
        if (piece.contains("Sequence")) {
          if (piece["Sequence"].value("id", "A") != "A") fail("post_processor: single uses $B");
          after = true;
        } else if (piece.contains("SpecialToken")) {
          const std::string name = piece["SpecialToken"].at("id").get<std::string>();
          const json& specials = p.at("special_tokens");
          if (!specials.contains(name)) fail("post_processor: " + name + " is not in special_tokens");
          for (const json& id : specials[name].at("ids"))
            (after ? m_.template_suffix : m_.template_prefix).push_back(id.get<int32_t>());
        }
      }
    } else if (type != "ByteLevel") {
      fail("post_processor " + type + " is not supported (TemplateProcessing, ByteLevel)");
    }
  }

  void decoder(const json& d) {
    const std::string type = d.is_object() ? d.value("type", "") : "";
    if (type == "ByteLevel") return;
    if (type == "Sequence" && d.at("decoders").size() == 1) return decoder(d["decoders"][0]);
    fail("decoder " + (type.empty() ? std::string("null") : type) + " is not supported (ByteLevel)");
  }

 private:
  void grow(int32_t id) {
    if (static_cast<size_t>(id) >= m_.id_bytes.size()) m_.id_bytes.resize(static_cast<size_t>(id) + 1);
  }
  std::string path_;
  BpeTokenizer::Impl& m_;
};

json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ENGINE_INPUT_CHECK(in, path, ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw engine::InputError(path + ": not valid JSON (" + engine::one_line(e.what()) + ")");
  }
}

// A token named by tokenizer_config.json ("bos_token": "<s>" or {"content": "<s>", ...}).
std::optional<std::string> config_token(const json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

std::unique_ptr<BpeTokenizer> BpeTokenizer::load_if_byte_level(const std::string& json_path,
                                                               const std::string& config_path) {
  const json j = read_json(json_path);
  auto impl = std::make_unique<Impl>();
  Loader load(json_path, *impl);
  try {
    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
      if (!j.contains("pre_tokenizer") || !j["pre_tokenizer"].is_object()) return nullptr;
      load.fail("normalizer " + j["normalizer"].value("type", std::string("?")) + " is not supported");
    }
    if (!j.contains("pre_tokenizer") || !load.pre_tokenizer(j["pre_tokenizer"])) return nullptr;
    std::unordered_map<uint32_t, char> char_to_byte;
    const std::array<uint32_t, 256> b2c = byte_to_char();
    for (int b = 0; b < 256; ++b) char_to_byte[b2c[b]] = static_cast<char>(b);
    load.model(j.at("model"), char_to_byte);
    load.added_tokens(j.value("added_tokens", json()), char_to_byte);
    load.post_processor(j.value("post_processor", json()));
    load.decoder(j.value("decoder", json()));
  } catch (const json::exception& e) {
    load.fail(std::string("unexpected structure (") + engine::one_line(e.what()) + ")");
  }

  // bos: the template's first token, else tokenizer_config.json's; eos from the config.
  // Without a config, the usual names.
  const json config = std::filesystem::exists(config_path) ? read_json(config_path) : json();
  auto id_of = [&](const std::string& name) -> int32_t {
    const auto it = impl->added_by_content.find(name);
    if (it != impl->added_by_content.end()) return it->second;
    const auto v = impl->vocab.find(name);
    return v != impl->vocab.end() ? v->second : -1;
  };
  auto pick = [&](const char* key, std::initializer_list<const char*> names) -> int32_t {
    if (const auto name = config_token(config, key)) {
      const int32_t id = id_of(*name);
      ENGINE_INPUT_CHECK(id >= 0, config_path, ": ", key, " ", engine::one_line(*name, true),
                         " is not a token of ", json_path);
      return id;
    }
    for (const char* n : names)
      if (const int32_t id = id_of(n); id >= 0) return id;
    throw engine::InputError(json_path + ": no " + key + " (name it in tokenizer_config.json)");
  };
  impl->bos = !impl->template_prefix.empty()
                  ? impl->template_prefix.front()
                  : pick("bos_token", {"<|begin_of_text|>", "<s>", "<|endoftext|>"});
  impl->eos = pick("eos_token", {"<|end_of_text|>", "</s>", "<|endoftext|>"});
  for (int32_t id : impl->template_prefix)
    ENGINE_INPUT_CHECK(id >= 0 && static_cast<size_t>(id) < impl->id_bytes.size(), json_path,
                       ": post_processor id ", id, " is outside the vocab");
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(impl)));
}

BpeTokenizer::BpeTokenizer(const std::string& json_path, const std::string& config_path) {
  std::unique_ptr<BpeTokenizer> t = load_if_byte_level(json_path, config_path);
  ENGINE_INPUT_CHECK(t, json_path, ": not a byte-level BPE (no ByteLevel pre-tokenizer)");
  impl_ = std::move(t->impl_);
}

}  // namespace models
