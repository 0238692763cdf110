// The Hugging Face tokenizers against the Python packages: tests/data/tokenizer_reference
// (written by tests/data/make_tokenizer_reference.py with tokenizers and sentencepiece)
// holds a byte-level BPE shaped as Llama 3's, a SentencePiece BPE shaped as Llama 2's, and
// the packages' ids and decodes of a multilingual corpus (emoji, CJK, digits, whitespace
// runs, contractions, special-token text, invalid UTF-8).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "models/bpe_tokenizer.h"
#include "models/sentencepiece_tokenizer.h"
#include "models/tokenizer.h"

namespace {

using json = nlohmann::json;
const std::string kDir = std::string(ENGINE_SOURCE_DIR) + "/tests/data/tokenizer_reference";

const json& reference() {
  static const json j = [] {
    std::ifstream in(kDir + "/cases.json");
    return json::parse(in);
  }();
  return j;
}

std::string unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

TEST(Utf8, ReplacesMaximalSubparts) {
  // One U+FFFD per maximal subpart of an ill-formed sequence (Unicode 3.9, Python, Rust).
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(models::utf8_replace_invalid("a\xF0\x9F\x98" "b"), "a" + r + "b");
  EXPECT_EQ(models::utf8_replace_invalid("\xC0\x80"), r + r);
  EXPECT_EQ(models::utf8_replace_invalid("\xED\xA0\x80"), r + r + r);
  EXPECT_EQ(models::utf8_replace_invalid("\xE4\xBD"), r);
  EXPECT_EQ(models::utf8_replace_invalid("\xF4\x90\x80\x80"), r + r + r + r);
  EXPECT_EQ(models::utf8_replace_invalid("ok \xF0\x9F\x98\x80"), "ok \xF0\x9F\x98\x80");
  EXPECT_TRUE(models::utf8_valid("\xE4\xBD\xA0"));
  EXPECT_FALSE(models::utf8_valid("\xE4\xBD"));
}

void check_bpe_cases(const models::Tokenizer& tok) {
  int n = 0;
  for (const json& c : reference()["cases"]) {
    const std::string text = unhex(c["hex"].get<std::string>());
    SCOPED_TRACE("text hex " + c["hex"].get<std::string>());
    EXPECT_EQ(tok.encode(text), ids_of(c["bpe_plain"]));
    EXPECT_EQ(tok.encode_hf(text, false), ids_of(c["bpe_hf"]));
    const std::vector<int32_t> with_bos = tok.encode_hf(text, true);
    EXPECT_EQ(with_bos, ids_of(c["bpe_hf_bos"]));
    EXPECT_EQ(tok.decode(with_bos), c["bpe_decode"].get<std::string>());
    ++n;
  }
  EXPECT_GE(n, 25);
}

TEST(BpeTokenizer, MatchesTokenizersPackage) {
  const auto tok = models::load_tokenizer(kDir + "/bpe");
  ASSERT_NE(dynamic_cast<const models::BpeTokenizer*>(tok.get()), nullptr);
  EXPECT_EQ(tok->vocab_size(), reference()["meta"]["bpe_vocab"].get<int64_t>());
  check_bpe_cases(*tok);
}

TEST(BpeTokenizer, MergesAsStringsMatchPairs) {
  // The same tokenizer with merges written "a b" (no tokenizer_config.json beside it:
  // eos by its usual name).
  models::BpeTokenizer tok(kDir + "/bpe_string_merges/tokenizer.json", kDir + "/none.json");
  check_bpe_cases(tok);
}

TEST(BpeTokenizer, Gpt2StyleMatchesTokenizersPackage) {
  // ByteLevel with its regex and add_prefix_space after a Split, merges not ignored, no
  // template, added tokens with lstrip/rstrip/single_word; bos = eos = <|endoftext|>.
  const auto tok = models::load_tokenizer(kDir + "/gpt2");
  const int32_t eot = *tok->special_token_id("<|endoftext|>");
  EXPECT_EQ(tok->bos_id(), eot);
  EXPECT_EQ(tok->eos_id(), eot);
  int n = 0;
  for (const json& c : reference()["cases"]) {
    const std::string text = unhex(c["hex"].get<std::string>());
    SCOPED_TRACE("text hex " + c["hex"].get<std::string>());
    EXPECT_EQ(tok->encode(text), ids_of(c["gpt2_plain"]));
    const std::vector<int32_t> ids = tok->encode_hf(text, true);
    EXPECT_EQ(ids, ids_of(c["gpt2_hf"]));
    EXPECT_EQ(tok->decode(ids), c["gpt2_decode"].get<std::string>());
    ++n;
  }
  EXPECT_GE(n, 30);
}

TEST(BpeTokenizer, DecodesAsThePackage) {
  const auto tok = models::load_tokenizer(kDir + "/bpe");
  for (const json& c : reference()["decode"]["bpe"])
    EXPECT_EQ(tok->decode(ids_of(c["ids"])), c["text"].get<std::string>()) << c.dump();
  EXPECT_THROW(tok->decode({static_cast<int32_t>(tok->vocab_size())}), engine::Error);
  EXPECT_THROW(tok->decode({-1}), engine::Error);
}

TEST(BpeTokenizer, SpecialTokensAndBosEos) {
  const auto tok = models::load_tokenizer(kDir + "/bpe");
  const auto bot = tok->special_token_id("<|begin_of_text|>");
  const auto eot = tok->special_token_id("<|eot_id|>");
  ASSERT_TRUE(bot && eot);
  EXPECT_EQ(tok->bos_id(), *bot);
  EXPECT_EQ(tok->eos_id(), *tok->special_token_id("<|end_of_text|>"));
  EXPECT_FALSE(tok->special_token_id("<|nope|>"));
  EXPECT_EQ(tok->encode_hf("<|eot_id|>", false), std::vector<int32_t>{*eot});
  EXPECT_NE(tok->encode("<|eot_id|>"), std::vector<int32_t>{*eot});
  EXPECT_EQ(tok->decode({*eot}), "<|eot_id|>");
}

TEST(BpeTokenizer, BatchEncodeMatchesOneByOne) {
  const auto tok = models::load_tokenizer(kDir + "/bpe");
  std::vector<std::string> texts;
  for (int rep = 0; rep < 40; ++rep)
    for (const json& c : reference()["cases"]) texts.push_back(unhex(c["hex"].get<std::string>()));
  for (bool hf : {false, true}) {
    const auto batch = models::encode_batch(*tok, texts, hf, true, 4);
    ASSERT_EQ(batch.size(), texts.size());
    for (size_t i = 0; i < texts.size(); ++i)
      ASSERT_EQ(batch[i], hf ? tok->encode_hf(texts[i], true) : tok->encode(texts[i])) << i;
  }
}

TEST(BpeTokenizer, RefusesWhatItDoesNotImplement) {
  const std::string dir = testing::TempDir() + "/bpe_bad";
  std::filesystem::create_directories(dir);
  std::ifstream in(kDir + "/bpe/tokenizer.json");
  json j = json::parse(in);
  j["post_processor"] = json{{"type", "BertProcessing"}};
  std::ofstream(dir + "/tokenizer.json") << j.dump();
  try {
    models::load_tokenizer(dir);
    FAIL() << "loaded an unsupported post-processor";
  } catch (const engine::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json: post_processor BertProcessing"),
              std::string::npos)
        << e.what();
  }
  std::filesystem::remove(dir + "/tokenizer.json");
  EXPECT_THROW(models::load_tokenizer(dir), engine::InputError);  // neither file
}

TEST(SentencePieceTokenizer, MatchesSentencepiecePackage) {
  const auto tok = models::load_tokenizer(kDir + "/sp");
  ASSERT_NE(dynamic_cast<const models::SentencePieceTokenizer*>(tok.get()), nullptr);
  EXPECT_EQ(tok->vocab_size(), reference()["meta"]["sp_vocab"].get<int64_t>());
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  int n = 0;
  for (const json& c : reference()["cases"]) {
    const std::string text = unhex(c["hex"].get<std::string>());
    SCOPED_TRACE("text hex " + c["hex"].get<std::string>());
    const std::vector<int32_t> ids = tok->encode(text);
    EXPECT_EQ(ids, ids_of(c["sp"]));
    EXPECT_EQ(tok->decode(ids), c["sp_decode"].get<std::string>());
    ++n;
  }
  EXPECT_GE(n, 25);
  for (const json& c : reference()["decode"]["sp"])
    EXPECT_EQ(tok->decode(ids_of(c["ids"])), c["text"].get<std::string>()) << c.dump();
}

TEST(SentencePieceTokenizer, HfSemantics) {
  const auto tok = models::load_tokenizer(kDir + "/sp");
  EXPECT_EQ(*tok->special_token_id("<s>"), 1);
  EXPECT_EQ(*tok->special_token_id("</s>"), 2);
  std::vector<int32_t> want{1};
  for (int32_t id : tok->encode("hi")) want.push_back(id);
  want.push_back(2);
  for (int32_t id : tok->encode(" there")) want.push_back(id);
  EXPECT_EQ(tok->encode_hf("hi</s> there", true), want);
  EXPECT_EQ(tok->encode_hf("", true), std::vector<int32_t>{1});
}

}  // namespace
