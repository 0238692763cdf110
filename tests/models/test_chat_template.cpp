// Tests for models/chat_template: every Llama template rendered as transformers renders
// its chat_template (tests/data/chat_template_reference.json, written by
// tests/data/make_chat_template_reference.py), recognition of the template texts, the
// trained spans at the token level (ByteTokenizer and tokenizers that merge across a
// span boundary), Python's strip, and the refusals.
#include "models/chat_template.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "engine/error.h"

namespace {

namespace fs = std::filesystem;
using models::ChatMessage;
using models::ChatOptions;
using models::ChatTemplate;

const fs::path kData = fs::path(ENGINE_SOURCE_DIR) / "tests" / "data";

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  EXPECT_TRUE(in.good()) << p;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const nlohmann::json& reference() {
  static const nlohmann::json j = nlohmann::json::parse(read(kData / "chat_template_reference.json"));
  return j;
}

std::vector<ChatMessage> messages_of(const nlohmann::json& c) {
  std::vector<ChatMessage> m;
  for (const auto& e : c["messages"]) m.push_back({e["role"], e["content"]});
  return m;
}

ChatTemplate kind_of(const std::string& name) { return *models::parse_chat_template_name(name); }

TEST(ChatTemplate, RendersAsTransformersDoes) {
  int cases = 0;
  for (const auto& [name, t] : reference()["templates"].items()) {
    for (const auto& c : t["cases"]) {
      ChatOptions o;
      o.add_generation_prompt = c["add_generation_prompt"];
      o.date = "01 Dec 2026";  // what the reference passed as date_string (llama3.2 only)
      const auto pieces = models::render_chat(kind_of(name), messages_of(c), o);
      EXPECT_EQ(models::chat_text(kind_of(name), pieces), c["text"].get<std::string>())
          << name << " " << c["messages"].dump();
      ++cases;
    }
  }
  EXPECT_EQ(cases, 4 * 14);
}

// Token ids as apply_chat_template(tokenize=True) gives them, with the small tokenizers of
// tests/data/chat_template_tokenizers (a Llama 3 style BPE, a Llama 2 style SentencePiece).
TEST(ChatTemplate, TokenIdsAsTransformersGivesThem) {
  const auto bpe = models::load_tokenizer((kData / "chat_template_tokenizers" / "bpe").string());
  const auto sp = models::load_tokenizer((kData / "chat_template_tokenizers" / "sp").string());
  int cases = 0;
  for (const auto& [name, t] : reference()["templates"].items()) {
    const models::Tokenizer& tok = name == "llama2" ? *sp : *bpe;
    for (const auto& c : t["cases"]) {
      ChatOptions o;
      o.add_generation_prompt = c["add_generation_prompt"];
      o.date = "01 Dec 2026";
      const auto tokens = models::tokenize_chat(models::render_chat(kind_of(name), messages_of(c), o), tok);
      EXPECT_EQ(tokens.ids, c["ids"].get<std::vector<int32_t>>()) << name << " " << c["messages"].dump();
      // Every assistant turn is trained: its last token (eot or eos) is labelled.
      int64_t trained_closers = 0, assistants = 0;
      for (size_t i = 0; i < tokens.ids.size(); ++i)
        trained_closers += tokens.labels[i] != -100 &&
                           (tokens.ids[i] == (name == "llama2" ? tok.eos_id() : *tok.special_token_id("<|eot_id|>")));
      for (const auto& m : c["messages"]) assistants += m["role"] == "assistant";
      EXPECT_EQ(trained_closers, assistants) << name << " " << c["messages"].dump();
      ++cases;
    }
  }
  EXPECT_EQ(cases, 4 * 14);
}

TEST(ChatTemplate, RecognisesEachTemplateText) {
  for (const char* name : {"llama3", "llama3.1", "llama3.2", "llama2"}) {
    const std::string text = read(kData / "chat_templates" / (std::string(name) + ".jinja"));
    const auto kind = models::recognise_chat_template(text);
    ASSERT_TRUE(kind.has_value()) << name;
    EXPECT_STREQ(models::chat_template_name(*kind), name);
    // The same template with its per-message rendering changed is not recognised.
    std::string changed = text;
    const size_t at = changed.find("trim");
    const size_t at2 = changed.find("strip");
    ASSERT_TRUE(at != std::string::npos || at2 != std::string::npos);
    if (at != std::string::npos) changed.replace(at, 4, "upper");
    else changed.replace(at2, 5, "upper");
    EXPECT_FALSE(models::recognise_chat_template(changed).has_value()) << name;
  }
  EXPECT_FALSE(models::recognise_chat_template("{{ messages }}").has_value());
  EXPECT_EQ(models::parse_chat_template_name("llama3.3"), ChatTemplate::Llama31);
  EXPECT_FALSE(models::parse_chat_template_name("chatml").has_value());
}

class ChatTemplateDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("chat_template_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
  }
  fs::path dir_;
};

TEST_F(ChatTemplateDir, FindsTheTemplateOfAModelDirectory) {
  const std::string llama31 = read(kData / "chat_templates" / "llama3.1.jinja");
  EXPECT_FALSE(models::find_chat_template(dir_.string()).kind.has_value());
  EXPECT_NE(models::find_chat_template(dir_.string()).problem.find("no chat_template"), std::string::npos);

  write("tokenizer_config.json", nlohmann::json{{"chat_template", llama31}}.dump());
  EXPECT_EQ(models::find_chat_template(dir_.string()).kind, ChatTemplate::Llama31);

  nlohmann::json list = nlohmann::json::array(
      {{{"name", "tool_use"}, {"template", "x"}}, {{"name", "default"}, {"template", llama31}}});
  write("tokenizer_config.json", nlohmann::json{{"chat_template", list}}.dump());
  EXPECT_EQ(models::find_chat_template(dir_.string()).kind, ChatTemplate::Llama31);

  write("tokenizer_config.json", nlohmann::json{{"chat_template", "{{ messages }}"}}.dump());
  const auto unknown = models::find_chat_template(dir_.string());
  EXPECT_FALSE(unknown.kind.has_value());
  EXPECT_NE(unknown.problem.find("tokenizer_config.json: the chat_template is not one train70b knows"),
            std::string::npos) << unknown.problem;

  write("tokenizer_config.json", "{}");
  write("chat_template.jinja", read(kData / "chat_templates" / "llama2.jinja"));
  EXPECT_EQ(models::find_chat_template(dir_.string()).kind, ChatTemplate::Llama2);
}

// The trained tokens, as the texts of the maximal trained runs.
std::vector<std::string> trained_runs(const models::ChatTokens& t, const models::Tokenizer& tok) {
  std::vector<std::string> runs;
  std::vector<int32_t> run;
  for (size_t i = 0; i <= t.ids.size(); ++i) {
    if (i < t.ids.size() && t.labels[i] != -100) {
      EXPECT_EQ(t.labels[i], t.ids[i]);
      run.push_back(t.ids[i]);
    } else if (!run.empty()) {
      runs.push_back(tok.decode(run));
      run.clear();
    }
  }
  return runs;
}

TEST(ChatTemplate, TrainsAssistantTurnsAtTheTokenLevel) {
  models::ByteTokenizer tok;
  const std::vector<ChatMessage> chat = {{"system", " sys "}, {"user", "q1"}, {"assistant", " a1 "},
                                         {"user", "q2"}, {"assistant", "a2\n"}};
  ChatOptions o;
  o.date = "01 Dec 2026";
  for (ChatTemplate t : {ChatTemplate::Llama3, ChatTemplate::Llama31, ChatTemplate::Llama32}) {
    const auto pieces = models::render_chat(t, chat, o);
    const models::ChatTokens tokens = models::tokenize_chat(pieces, tok);
    // Ids: the rendered text's bytes, its one BOS as the tokenizer's bos (first, once).
    std::string text = models::chat_text(t, pieces);
    ASSERT_EQ(text.rfind("<|begin_of_text|>", 0), 0u);
    EXPECT_EQ(tokens.ids[0], tok.bos_id());
    EXPECT_EQ(std::count(tokens.ids.begin(), tokens.ids.end(), tok.bos_id()), 1);
    EXPECT_EQ(tok.decode(tokens.ids), text);
    EXPECT_EQ(trained_runs(tokens, tok),
              (std::vector<std::string>{"a1<|eot_id|>", "a2<|eot_id|>"})) << models::chat_template_name(t);
  }
  const auto llama2 = models::tokenize_chat(models::render_chat(ChatTemplate::Llama2, chat, o), tok);
  EXPECT_EQ(std::count(llama2.ids.begin(), llama2.ids.end(), tok.bos_id()), 2);  // per user turn
  EXPECT_EQ(trained_runs(llama2, tok),
            (std::vector<std::string>{" a1 <|end_of_text|>", " a2 <|end_of_text|>"}));

  o.train_on_inputs = true;
  const auto all = models::tokenize_chat(models::render_chat(ChatTemplate::Llama31, chat, o), tok);
  EXPECT_EQ(all.labels, all.ids);
}

// A tokenizer with a dummy prefix (as SentencePiece: every encode starts with id 500) and
// one token for "ab" (a merge that can straddle a span boundary).
class PrefixPairTokenizer final : public models::Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids{500};
    for (size_t i = 0; i < text.size(); ++i) {
      if (text.substr(i, 2) == "ab") {
        ids.push_back(501);
        ++i;
      } else {
        ids.push_back(static_cast<unsigned char>(text[i]));
      }
    }
    return ids;
  }
  std::vector<int32_t> encode_hf(std::string_view text, bool) const override { return encode(text); }
  std::string decode(const std::vector<int32_t>&) const override { return {}; }
  int64_t vocab_size() const override { return 502; }
  int32_t bos_id() const override { return 256; }
  int32_t eos_id() const override { return 257; }
};

TEST(ChatTemplate, SpanBoundariesFollowTheWholeRunsTokens) {
  PrefixPairTokenizer tok;
  // llama2: "[INST] xa [/INST]" then " b c " trained; the run is encoded once, with one
  // dummy prefix, and the boundary is where the prefix's encoding stops matching.
  const auto pieces = models::render_chat(ChatTemplate::Llama2, {{"user", "xa"}, {"assistant", "b c"}}, {});
  const auto t = models::tokenize_chat(pieces, tok);
  std::vector<int32_t> expect_ids{256};
  const std::vector<int32_t> run = tok.encode("[INST] xa [/INST] b c ");
  expect_ids.insert(expect_ids.end(), run.begin(), run.end());
  expect_ids.push_back(257);
  EXPECT_EQ(t.ids, expect_ids);
  const size_t untrained = 1 + tok.encode("[INST] xa [/INST]").size();
  for (size_t i = 0; i < t.ids.size(); ++i) EXPECT_EQ(t.labels[i] != -100, i >= untrained) << i;

  // "a" | "b..." as one "ab" token: it straddles the boundary and goes with the later,
  // trained piece.
  models::ChatPiece p1{models::ChatPiece::Text, "xa", false}, p2{models::ChatPiece::Text, "bc", true};
  const auto s = models::tokenize_chat({p1, p2}, tok);
  EXPECT_EQ(s.ids, (std::vector<int32_t>{500, 'x', 501, 'c'}));
  EXPECT_EQ(s.labels, (std::vector<int32_t>{-100, -100, 501, 'c'}));
}

TEST(ChatTemplate, RefusesWhatTheTemplatesRefuse) {
  auto message = [](ChatTemplate t, std::vector<ChatMessage> m) {
    try {
      models::render_chat(t, m, {});
    } catch (const engine::InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(ChatTemplate::Llama3, {}).find("no messages"), std::string::npos);
  EXPECT_NE(message(ChatTemplate::Llama3, {{"tool", "x"}}).find("role \"tool\""), std::string::npos);
  EXPECT_NE(message(ChatTemplate::Llama2, {{"assistant", "x"}}).find("alternate"), std::string::npos);
  EXPECT_NE(message(ChatTemplate::Llama2, {{"user", "x"}, {"user", "y"}}).find("alternate"),
            std::string::npos);
  EXPECT_NE(message(ChatTemplate::Llama2, {{"user", "x"}, {"system", "y"}}).find("alternate"),
            std::string::npos);
  EXPECT_EQ(message(ChatTemplate::Llama2, {{"system", "s"}, {"user", "x"}}), "no error");
}

TEST(ChatTemplate, StripsPythonWhitespace) {
  EXPECT_EQ(models::py_strip(" \t\n\v\f\r\x1c\x1d\x1e\x1f" "a b" " \n"), "a b");
  EXPECT_EQ(models::py_strip("\xc2\xa0\xe3\x80\x80x\xe2\x80\xa8\xc2\x85"), "x");  // nbsp, U+3000, U+2028, U+0085
  EXPECT_EQ(models::py_strip("\xe2\x80\x8bx"), "\xe2\x80\x8bx");  // U+200B is not whitespace
  EXPECT_EQ(models::py_strip("   "), "");
  EXPECT_EQ(models::py_strip(""), "");
}

TEST(ChatTemplate, Llama32DatesToday) {
  const std::string today = models::today_date_string();
  EXPECT_TRUE(std::regex_match(today, std::regex("[0-3][0-9] (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) 2[0-9]{3}")))
      << today;
  const auto pieces = models::render_chat(ChatTemplate::Llama32, {{"user", "hi"}}, {});
  const std::string text = models::chat_text(ChatTemplate::Llama32, pieces);
  const std::string after = models::today_date_string();  // the date may turn at midnight
  EXPECT_TRUE(text.find("Today Date: " + today + "\n\n") != std::string::npos ||
              text.find("Today Date: " + after + "\n\n") != std::string::npos)
      << text;
  // 3.1/3.3 keep their fixed date whatever is asked.
  ChatOptions o;
  o.date = "01 Dec 2026";
  const auto p31 = models::render_chat(ChatTemplate::Llama31, {{"user", "hi"}}, o);
  EXPECT_NE(models::chat_text(ChatTemplate::Llama31, p31).find("Today Date: 26 Jul 2024\n\n"),
            std::string::npos);
}

}  // namespace
