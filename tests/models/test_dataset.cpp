// Tests for models/tokenizer (ByteTokenizer) and models/dataset: each JSONL format with
// its label masking, truncation and skipping, one-line `path:line:` errors for malformed
// lines, the seeded train/eval split, and right-padded batches.
#include "models/dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "models/llama_config.h"
#include "models/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using models::ByteTokenizer;
using models::DatasetStats;
using models::Example;
using models::load_jsonl_dataset;

constexpr int32_t kBos = ByteTokenizer::kBos;
constexpr int32_t kEos = ByteTokenizer::kEos;
constexpr int32_t kIgn = models::kIgnoreLabel;

std::vector<int32_t> bytes(const std::string& s) {
  std::vector<int32_t> v;
  for (unsigned char c : s) v.push_back(c);
  return v;
}

std::vector<int32_t> cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> v;
  for (const auto& p : parts) v.insert(v.end(), p.begin(), p.end());
  return v;
}

std::vector<int32_t> ignored(size_t n) { return std::vector<int32_t>(n, kIgn); }

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("dataset_test_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(counter++) + "_" + test->name());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string write(const std::string& text, const std::string& name = "train.jsonl") {
    std::string p = (dir_ / name).string();
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << text;
    EXPECT_TRUE(f.good()) << p;
    return p;
  }

  std::vector<Example> load(const std::string& text, int64_t max_seq_len = 1024,
                            DatasetStats* stats = nullptr) {
    return load_jsonl_dataset(write(text), tok_, max_seq_len, stats);
  }

  // Loading `text` must fail with one line starting with `<path><where>: ` (where is
  // ":N" for a line, empty for the whole file) and containing `needle`.
  void expect_error(const std::string& text, const std::string& where, const std::string& needle,
                    int64_t max_seq_len = 1024) {
    std::string path = write(text, "bad.jsonl");
    try {
      load_jsonl_dataset(path, tok_, max_seq_len);
      ADD_FAILURE() << "no error (expected: " << needle << ")";
    } catch (const engine::Error& e) {
      std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + where + ": ", 0), 0u) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }

  ByteTokenizer tok_;
  fs::path dir_;
};

TEST(ByteTokenizer, RoundTripAndSpecials) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.vocab_size(), models::preset("tiny").vocab);
  EXPECT_EQ(tok.bos_id(), 256);
  EXPECT_EQ(tok.eos_id(), 257);
  std::string text = "h\xc3\xa9llo\n\x01\xff";
  std::vector<int32_t> ids = tok.encode(text);
  EXPECT_EQ(ids, bytes(text));
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(tok.decode({256, 'a', 257}), "<|begin_of_text|>a<|end_of_text|>");
  EXPECT_EQ(tok.encode("<|end_of_text|>").size(), 15u);  // plain text, not the special id
  EXPECT_EQ(tok.special_token_id("<|begin_of_text|>"), 256);
  EXPECT_EQ(tok.special_token_id("<|end_of_text|>"), 257);
  EXPECT_FALSE(tok.special_token_id("<|eot_id|>").has_value());
  EXPECT_THROW(tok.decode({258}), engine::Error);
  EXPECT_THROW(tok.decode({-1}), engine::Error);
}

TEST_F(DatasetTest, Text) {
  auto ex = load(R"({"text": "hi"})" "\n" R"({"text": "", "id": 7})" "\n");
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].input_ids, cat({{kBos}, bytes("hi"), {kEos}}));
  EXPECT_EQ(ex[0].labels, ex[0].input_ids);
  EXPECT_EQ(ex[1].input_ids, (std::vector<int32_t>{kBos, kEos}));
}

TEST_F(DatasetTest, PromptCompletionMasksPrompt) {
  auto ex = load(R"({"prompt": "Q: 2+2?", "completion": " 4"})");
  ASSERT_EQ(ex.size(), 1u);
  EXPECT_EQ(ex[0].input_ids, cat({{kBos}, bytes("Q: 2+2?"), bytes(" 4"), {kEos}}));
  EXPECT_EQ(ex[0].labels, cat({ignored(1 + 7), bytes(" 4"), {kEos}}));
}

TEST_F(DatasetTest, PreTokenized) {
  DatasetStats stats;
  auto ex = load(R"({"input_ids": [1, 2, 3]})" "\n"
                 R"({"input_ids": [4, 5, 6, 257], "labels": [-100, -100, 6, 257]})" "\n"
                 R"({"input_ids": [7, 8], "labels": null})" "\n",
                 1024, &stats);
  ASSERT_EQ(ex.size(), 3u);
  EXPECT_EQ(ex[0].input_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(ex[0].labels, ex[0].input_ids);
  EXPECT_EQ(ex[1].labels, (std::vector<int32_t>{kIgn, kIgn, 6, 257}));
  EXPECT_EQ(ex[2].labels, (std::vector<int32_t>{7, 8}));
  EXPECT_EQ(stats.records, 3);
  EXPECT_EQ(stats.examples, 3);
  EXPECT_EQ(stats.tokens, 9);
  EXPECT_EQ(stats.target_tokens, 2 + 2 + 1);  // labels[0] is never a target
}

TEST_F(DatasetTest, ChatMessagesTrainOnlyAssistantTurns) {
  auto ex = load(R"({"messages": [{"role": "user", "content": "hi"},)"
                 R"( {"role": "assistant", "content": "yo"}]})");
  ASSERT_EQ(ex.size(), 1u);
  // The byte tokenizer has no header/eot tokens: they are spelled as text.
  auto header = [](const std::string& role) {
    return bytes("<|start_header_id|>" + role + "<|end_header_id|>\n\n");
  };
  EXPECT_EQ(ex[0].input_ids, cat({{kBos}, header("user"), bytes("hi<|eot_id|>"),
                                   header("assistant"), bytes("yo<|eot_id|>")}));
  const size_t masked = 1 + header("user").size() + bytes("hi<|eot_id|>").size() +
                        header("assistant").size();
  EXPECT_EQ(ex[0].labels, cat({ignored(masked), bytes("yo<|eot_id|>")}));
}

TEST_F(DatasetTest, ChatWithoutAssistantTurnIsSkipped) {
  DatasetStats stats;
  auto ex = load(R"({"messages": [{"role": "user", "content": "hi"}]})" "\n"
                 R"({"text": "x"})" "\n",
                 1024, &stats);
  EXPECT_EQ(ex.size(), 1u);
  EXPECT_EQ(stats.skipped, 1);
}

TEST_F(DatasetTest, BlankLinesAndCrlfAreSkipped) {
  auto ex = load("\n   \n{\"text\": \"a\"}\r\n\r\n\t\n{\"text\": \"b\"}");
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[1].input_ids, (std::vector<int32_t>{kBos, 'b', kEos}));
}

TEST_F(DatasetTest, TruncationAndSkipping) {
  DatasetStats stats;
  // Prompt "abcdef" fills the first 7 tokens: truncated to 6 nothing is trained -> skipped.
  // "abcdefgh" text truncated to 6 keeps bos + "abcde". The last fits exactly.
  auto ex = load(R"({"prompt": "abcdef", "completion": "xyz"})" "\n"
                 R"({"text": "abcdefgh"})" "\n"
                 R"({"text": "abcd"})" "\n",
                 6, &stats);
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].input_ids, cat({{kBos}, bytes("abcde")}));
  EXPECT_EQ(ex[0].labels, ex[0].input_ids);
  EXPECT_EQ(ex[1].input_ids, cat({{kBos}, bytes("abcd"), {kEos}}));
  EXPECT_EQ(stats.records, 3);
  EXPECT_EQ(stats.truncated, 2);
  EXPECT_EQ(stats.skipped, 1);
  EXPECT_EQ(stats.examples, 2);

  // Truncated into the completion: the kept part of the completion is trained.
  auto kept = load(R"({"prompt": "ab", "completion": "xyz"})", 5);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0].labels, cat({ignored(3), bytes("xy")}));
}

TEST_F(DatasetTest, SingleTokenExampleHasNoTarget) {
  DatasetStats stats;
  auto ex = load(R"({"input_ids": [5]})" "\n" R"({"input_ids": [5, 6]})", 1024, &stats);
  EXPECT_EQ(ex.size(), 1u);
  EXPECT_EQ(stats.skipped, 1);
}

TEST_F(DatasetTest, ErrorsNamePathAndLine) {
  expect_error("{\"text\": \"ok\"}\n{\"text\": \"x\",}\n", ":2", "invalid JSON");
  expect_error("\n\n{\"text\": 5}\n", ":3", "field \"text\" must be a string, got number");
  expect_error(R"({"prompt": "p"})", ":1", "missing field \"completion\"");
  expect_error(R"({"prompt": "p", "completion": null})", ":1",
               "field \"completion\" must be a string");
  expect_error(R"(["text"])", ":1", "expected a JSON object, got array");
  expect_error(R"({"txt": "a"})", ":1", "expected one of the fields");
  expect_error(R"({"text": "a", "input_ids": [1]})", ":1", "ambiguous example");
  expect_error(R"({"text": "a", "labels": [1]})", ":1", "\"labels\" is only read together");
  expect_error(R"({"input_ids": "1 2 3"})", ":1", "field \"input_ids\" must be an array");
  expect_error(R"({"input_ids": []})", ":1", "field \"input_ids\" is empty");
  expect_error(R"({"input_ids": [1, 2.5]})", ":1", "field \"input_ids\"[1] must be an integer");
  expect_error(R"({"input_ids": [1, 2, 3], "labels": [1, 2]})", ":1",
               "field \"labels\" has 2 entries but \"input_ids\" has 3");
  expect_error(R"({"input_ids": [1, 258]})", ":1",
               "\"input_ids\"[1] = 258 is outside the vocabulary [0, 258)");
  expect_error(R"({"input_ids": [-100, 1]})", ":1", "\"input_ids\"[0] = -100 is outside");
  expect_error(R"({"input_ids": [1, 18446744073709551615]})", ":1", "is outside the vocabulary");
  expect_error(R"({"input_ids": [1, 2], "labels": [-1, 2]})", ":1",
               "\"labels\"[0] = -1 is outside the vocabulary [0, 258) and is not -100");
  expect_error(R"({"messages": [{"role": "user"}]})", ":1",
               "missing field \"messages\"[0].content");
  expect_error(R"({"messages": [{"role": "user", "content": ["a"]}]})", ":1",
               "\"messages\"[0].content must be a string");
  expect_error(R"({"messages": {}})", ":1", "field \"messages\" must be an array");
}

// A line over --max-line-size is refused before more than the limit is held (the
// reader stops at limit + 1 bytes); one at the limit is read; CRLF and EOF without a
// newline count the same.
TEST_F(DatasetTest, LinesAreBoundedByMaxLineBytes) {
  models::DatasetOptions o;
  o.chat_template = models::ChatTemplate::Llama3;
  const std::string at_limit = R"({"text": ")" + std::string(40, 'a') + R"("})";  // 52 bytes
  o.max_line_bytes = static_cast<int64_t>(at_limit.size());
  EXPECT_EQ(load_jsonl_dataset(write(at_limit + "\r\n" + at_limit), tok_, o).size(), 2u);
  const std::string over = R"({"text": ")" + std::string(41, 'a') + R"("})";
  for (const std::string& text : {at_limit + "\n" + over + "\n", at_limit + "\n" + over}) {
    const std::string path = write(text, "long.jsonl");
    try {
      load_jsonl_dataset(path, tok_, o);
      ADD_FAILURE() << "no error for a line over the limit";
    } catch (const engine::InputError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + ":2: line longer than 52 bytes (--max-line-size", 0), 0u) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
}

TEST_F(DatasetTest, InvalidJsonReportsColumnOnOneLine) {
  expect_error("{\"text\": \"a\"}\n{\"text\": \x01}\n", ":2", "invalid JSON at column 10");
}

// A number beyond a double (the parser's out_of_range, not a parse_error) is one line with
// the file and line like any other bad record.
TEST_F(DatasetTest, OutOfRangeNumberIsALineError) {
  expect_error("{\"text\": \"a\"}\n{\"text\": \"b\", \"score\": 1e400}\n", ":2",
               "invalid JSON: number overflow parsing '1e400'");
}

TEST_F(DatasetTest, EmptyAndUnusableFiles) {
  expect_error("", "", "no examples");
  expect_error("\n  \n", "", "no examples");
  expect_error(R"({"prompt": "long prompt", "completion": "c"})", "", "no usable examples", 4);
}

TEST_F(DatasetTest, MissingFileAndBadMaxSeqLen) {
  std::string absent = (dir_ / "absent.jsonl").string();
  try {
    load_jsonl_dataset(absent, tok_, 16);
    ADD_FAILURE() << "no error";
  } catch (const engine::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(absent + ": cannot open", 0), 0u) << e.what();
  }
  expect_error(R"({"text": "a"})", "", "max_seq_len must be at least 2", 1);
}

std::vector<Example> numbered(int n) {
  std::vector<Example> v;
  for (int i = 0; i < n; ++i) v.push_back({{i, i}, {i, i}});
  return v;
}

std::vector<int32_t> firsts(const std::vector<Example>& v) {
  std::vector<int32_t> out;
  for (const Example& e : v) out.push_back(e.input_ids[0]);
  return out;
}

TEST(DatasetSplit, DeterministicSizedAndOrdered) {
  auto a = models::split_train_eval(numbered(100), 0.1, 42);
  auto b = models::split_train_eval(numbered(100), 0.1, 42);
  auto c = models::split_train_eval(numbered(100), 0.1, 43);
  EXPECT_EQ(a.eval.size(), 10u);
  EXPECT_EQ(a.train.size(), 90u);
  EXPECT_EQ(firsts(a.eval), firsts(b.eval));
  EXPECT_EQ(firsts(a.train), firsts(b.train));
  EXPECT_NE(firsts(a.eval), firsts(c.eval));
  // Both halves keep file order, and together hold every example once.
  const std::vector<int32_t> train = firsts(a.train), eval = firsts(a.eval);
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end()));
  EXPECT_TRUE(std::is_sorted(eval.begin(), eval.end()));
  std::vector<int32_t> all = train;
  all.insert(all.end(), eval.begin(), eval.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, firsts(numbered(100)));
  // The eval set is not simply a prefix or suffix.
  EXPECT_NE(eval, firsts(numbered(10)));
}

TEST(DatasetSplit, EdgeSizes) {
  auto none = models::split_train_eval(numbered(5), 0.0, 1);
  EXPECT_EQ(none.train.size(), 5u);
  EXPECT_TRUE(none.eval.empty());
  auto tiny = models::split_train_eval(numbered(3), 0.01, 1);  // at least one held out
  EXPECT_EQ(tiny.eval.size(), 1u);
  auto most = models::split_train_eval(numbered(3), 0.99, 1);  // at least one kept
  EXPECT_EQ(most.train.size(), 1u);
  EXPECT_THROW(models::split_train_eval(numbered(1), 0.5, 1), engine::Error);
  EXPECT_THROW(models::split_train_eval(numbered(5), 1.0, 1), engine::Error);
  EXPECT_THROW(models::split_train_eval(numbered(5), -0.1, 1), engine::Error);
}

TEST(DatasetBatch, PadsToLongestRow) {
  std::vector<Example> ex = {
      {{256, 1, 2}, {256, 1, 2}},
      {{256, 3, 4, 5, 257}, {kIgn, kIgn, 4, 5, 257}},
      {{256, 6}, {256, 6}},
  };
  models::Batch batch = models::make_batch(ex, {2, 1, 0}, 257);
  ASSERT_EQ(batch.ids.shape(), engine::Shape({3, 5}));
  EXPECT_EQ(batch.ids.dtype(), engine::DType::I32);
  EXPECT_EQ(batch.labels.dtype(), engine::DType::I32);
  EXPECT_EQ(batch.ids.to_ints(), (std::vector<int32_t>{256, 6, 257, 257, 257,  //
                                                       256, 3, 4, 5, 257,      //
                                                       256, 1, 2, 257, 257}));
  EXPECT_EQ(batch.labels.to_ints(), (std::vector<int32_t>{256, 6, kIgn, kIgn, kIgn,  //
                                                          kIgn, kIgn, 4, 5, 257,     //
                                                          256, 1, 2, kIgn, kIgn}));
  EXPECT_EQ(batch.target_tokens, 1 + 3 + 2);

  models::Batch one = models::make_batch(ex, {1}, 0);
  EXPECT_EQ(one.ids.shape(), engine::Shape({1, 5}));
  EXPECT_THROW(models::make_batch(ex, {}, 0), engine::Error);
  EXPECT_THROW(models::make_batch(ex, {3}, 0), engine::Error);
  EXPECT_THROW(models::make_batch(ex, {0}, -1), engine::Error);
}

}  // namespace
