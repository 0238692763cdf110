// Tests for the dataset formats of models/dataset_formats (ShareGPT, Alpaca, chat
// messages through each template, --train-on-inputs), --truncation right|drop, the counts
// behind the data report (formats, lengths, duplicates, empty responses, no trained
// tokens), tokenization on several threads, and models/data_report.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/error.h"
#include "models/chat_template.h"
#include "models/data_report.h"
#include "models/dataset.h"
#include "models/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using models::ChatTemplate;
using models::DatasetOptions;
using models::DatasetStats;
using models::Example;
using models::RecordFormat;

class DatasetFormats : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dataset_formats_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    o_.max_seq_len = 4096;
    o_.chat_template = ChatTemplate::Llama3;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& text) {
    const std::string p = (dir_ / "data.jsonl").string();
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  std::vector<Example> load(const std::string& text, DatasetStats* stats = nullptr) {
    return models::load_jsonl_dataset(write(text), tok_, o_, stats);
  }
  std::string error(const std::string& text) {
    try {
      load(text);
    } catch (const engine::InputError& e) {
      return e.what();
    }
    return "no error";
  }
  // The example a messages record gives: what ShareGPT and Alpaca must equal.
  Example chat(const std::vector<models::ChatMessage>& m) {
    models::ChatOptions co;
    co.train_on_inputs = o_.train_on_inputs;
    auto t = models::tokenize_chat(models::render_chat(*o_.chat_template, m, co), tok_);
    return {t.ids, t.labels};
  }

  fs::path dir_;
  models::ByteTokenizer tok_;
  DatasetOptions o_;
};

void expect_same(const Example& a, const Example& b) {
  EXPECT_EQ(a.input_ids, b.input_ids);
  EXPECT_EQ(a.labels, b.labels);
}

TEST_F(DatasetFormats, ShareGPTIsMessages) {
  const auto e = load(
      R"({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})"
      "\n"
      R"({"conversations": [{"from": "user", "value": "q"}, {"from": "assistant", "value": "a"}]})");
  ASSERT_EQ(e.size(), 2u);
  expect_same(e[0], chat({{"system", "s"}, {"user", "q"}, {"assistant", "a"}}));
  expect_same(e[1], chat({{"user", "q"}, {"assistant", "a"}}));
  EXPECT_NE(error(R"({"conversations": [{"from": "bot", "value": "q"}]})")
                .find(":1: field \"conversations\"[0].from is \"bot\""),
            std::string::npos);
  EXPECT_NE(error(R"({"conversations": [{"from": "human"}]})").find("missing field \"conversations\"[0].value"),
            std::string::npos);
}

TEST_F(DatasetFormats, AlpacaIsOneUserAndOneAssistantTurn) {
  const auto e = load(R"({"instruction": "Add", "input": "1 2", "output": "3"})" "\n"
                      R"({"instruction": "Say hi", "input": "", "output": "hi"})" "\n"
                      R"({"instruction": "Say hi", "output": "hi"})");
  ASSERT_EQ(e.size(), 3u);
  expect_same(e[0], chat({{"user", "Add\n\n1 2"}, {"assistant", "3"}}));
  expect_same(e[1], chat({{"user", "Say hi"}, {"assistant", "hi"}}));
  expect_same(e[2], e[1]);
  EXPECT_NE(error(R"({"instruction": "x"})").find("missing field \"output\""), std::string::npos);
  EXPECT_NE(error(R"({"instruction": "x", "output": "y", "text": "z"})").find("ambiguous"), std::string::npos);
}

TEST_F(DatasetFormats, MessagesFollowTheChosenTemplate) {
  const std::string line = R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})";
  for (ChatTemplate t : {ChatTemplate::Llama3, ChatTemplate::Llama31, ChatTemplate::Llama2}) {
    o_.chat_template = t;
    const auto e = load(line);
    ASSERT_EQ(e.size(), 1u);
    expect_same(e[0], chat({{"user", "q"}, {"assistant", "a"}}));
  }
  // Roles the template refuses name the line and the template.
  o_.chat_template = ChatTemplate::Llama2;
  EXPECT_NE(error(R"({"messages": [{"role": "assistant", "content": "a"}]})").find(":1: llama2 chat template: "),
            std::string::npos);
}

TEST_F(DatasetFormats, WithoutATemplateChatRecordsSayHowToChooseOne) {
  o_.chat_template.reset();
  o_.chat_template_problem = "model/tokenizer_config.json: the chat_template is not one train70b knows";
  const std::string msg = error(R"({"text": "fine"})" "\n" R"({"messages": [{"role": "user", "content": "q"}]})");
  EXPECT_NE(msg.find(":2: this record needs a chat template: model/tokenizer_config.json: the chat_template "
                     "is not one train70b knows; choose one with --chat-template llama3|llama3.1|"),
            std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);
  EXPECT_EQ(load(R"({"text": "no chat needed"})").size(), 1u);
}

TEST_F(DatasetFormats, TrainOnInputsTrainsPromptsToo) {
  const std::string data = R"({"prompt": "p", "completion": "c"})" "\n"
                           R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})";
  DatasetStats only, all;
  const auto e = load(data, &only);
  o_.train_on_inputs = true;
  const auto f = load(data, &all);
  ASSERT_EQ(f.size(), 2u);
  for (const Example& x : f) EXPECT_EQ(x.labels, x.input_ids);
  EXPECT_EQ(e[0].input_ids, f[0].input_ids);
  EXPECT_EQ(e[1].input_ids, f[1].input_ids);
  EXPECT_LT(only.target_tokens, all.target_tokens);
  EXPECT_EQ(all.target_tokens, all.tokens - 2);  // every position but each first
}

TEST_F(DatasetFormats, TruncationRightOrDrop) {
  const std::string data = R"({"text": "0123456789"})" "\n" R"({"text": "ab"})";
  o_.max_seq_len = 6;
  DatasetStats right, drop;
  const auto r = load(data, &right);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].input_ids.size(), 6u);
  EXPECT_EQ(right.truncated, 1);
  EXPECT_EQ(right.dropped, 0);
  o_.truncation = models::Truncation::Drop;
  const auto d = load(data, &drop);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].input_ids.size(), 4u);
  EXPECT_EQ(drop.truncated, 0);
  EXPECT_EQ(drop.dropped, 1);
  EXPECT_EQ(drop.lengths, (std::vector<int64_t>{12, 4}));  // before truncation, all records
  EXPECT_NE(error(R"({"text": "0123456789"})").find("was dropped (--truncation drop)"), std::string::npos);
}

TEST_F(DatasetFormats, CountsWhatTheReportShows) {
  const std::string data =
      R"({"text": "same"})" "\n"
      R"({"text": "same"})" "\n"
      R"({"prompt": "p", "completion": "  "})" "\n"
      R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]})" "\n"
      R"({"messages": [{"role": "user", "content": "only a question"}]})" "\n"
      R"({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})" "\n"
      R"({"instruction": "i", "output": "o"})" "\n"
      R"({"input_ids": [1, 2, 3], "labels": [-100, -100, -100]})";
  DatasetStats s;
  const auto e = load(data, &s);
  EXPECT_EQ(s.records, 8);
  EXPECT_EQ(s.per_format[int(RecordFormat::Text)], 2);
  EXPECT_EQ(s.per_format[int(RecordFormat::PromptCompletion)], 1);
  EXPECT_EQ(s.per_format[int(RecordFormat::Messages)], 2);
  EXPECT_EQ(s.per_format[int(RecordFormat::ShareGPT)], 1);
  EXPECT_EQ(s.per_format[int(RecordFormat::Alpaca)], 1);
  EXPECT_EQ(s.per_format[int(RecordFormat::Pretokenized)], 1);
  EXPECT_EQ(s.duplicates, 1);
  EXPECT_EQ(s.empty_responses, 2);  // the blank completion and the empty assistant turn
  EXPECT_EQ(s.skipped, 2);          // the question without an answer, the all -100 labels
  EXPECT_EQ(s.examples, 6);
  EXPECT_EQ(e.size(), 6u);
  EXPECT_EQ(s.lengths.size(), 8u);

  const nlohmann::json j = nlohmann::json::parse(models::data_report_json(s, "data.jsonl", o_));
  EXPECT_EQ(j["records"], 8);
  EXPECT_EQ(j["formats"]["sharegpt"], 1);
  EXPECT_EQ(j["formats"]["pretokenized"], 1);
  EXPECT_EQ(j["exact_duplicates"], 1);
  EXPECT_EQ(j["empty_responses"], 2);
  EXPECT_EQ(j["no_trained_tokens"], 2);
  EXPECT_EQ(j["chat_template"], "llama3");
  EXPECT_EQ(j["trained_tokens"], s.target_tokens);
  EXPECT_DOUBLE_EQ(j["trained_share"].get<double>(), double(s.target_tokens) / double(s.tokens));
  EXPECT_EQ(j["token_lengths"]["max"], *std::max_element(s.lengths.begin(), s.lengths.end()));
  const std::string text = models::data_report_text(s, o_);
  EXPECT_NE(text.find("8 records (2 text, 1 prompt_completion, 2 messages, 1 sharegpt, 1 alpaca, 1 pretokenized)"),
            std::string::npos) << text;
}

TEST_F(DatasetFormats, NoTrainedTokensAtAllIsRefusedInOneLine) {
  const std::string msg = error(R"({"messages": [{"role": "user", "content": "q"}]})" "\n"
                                R"({"input_ids": [1, 2], "labels": [-100, -100]})");
  EXPECT_NE(msg.find("no trained tokens"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--train-on-inputs"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);
}

TEST_F(DatasetFormats, ThreadsDoNotChangeTheResultOrTheFirstError) {
  std::string data;
  for (int i = 0; i < 500; ++i)
    data += R"({"messages": [{"role": "user", "content": "q)" + std::to_string(i) +
            R"("}, {"role": "assistant", "content": "a)" + std::to_string(i * 7) + "\"}]}\n";
  o_.threads = 1;
  DatasetStats s1, s4;
  const auto one = load(data, &s1);
  o_.threads = 4;
  const auto four = load(data, &s4);
  ASSERT_EQ(one.size(), four.size());
  for (size_t i = 0; i < one.size(); ++i) expect_same(one[i], four[i]);
  EXPECT_EQ(s1.lengths, s4.lengths);
  // Two bad lines: the first in the file is the one reported, whichever thread ran it.
  std::string bad = data + "{\"text\": 1}\n" + data + "not json\n";
  EXPECT_NE(error(bad).find(":501: field \"text\" must be a string"), std::string::npos) << error(bad);
}

TEST(DataReport, NearestRankPercentiles) {
  const std::vector<int64_t> v{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(models::nearest_rank_percentile(v, 50), 5);
  EXPECT_EQ(models::nearest_rank_percentile(v, 90), 9);
  EXPECT_EQ(models::nearest_rank_percentile(v, 99), 10);
  EXPECT_EQ(models::nearest_rank_percentile(v, 0), 1);
  EXPECT_EQ(models::nearest_rank_percentile({}, 50), 0);
  EXPECT_EQ(models::nearest_rank_percentile({7}, 99), 7);
}

}  // namespace
