// train70b's data handling as users meet it: a chat dataset (messages, ShareGPT, Alpaca)
// trains, the data report is printed and written to OUTPUT/data_report.json, --preview
// shows the trained spans; a dataset with no trained tokens, an unknown chat template and
// bad data flags end with one line on stderr and no output directory.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>
#include "tests/support/process.h"

namespace fs = std::filesystem;

namespace {

using testing_support::RunResult;

RunResult run(const std::string& args) {
  return testing_support::run_command(std::string(TRAIN70B_PATH) + " " + args);
}

class Train70bData : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("train70b_data_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(dir_ / name) << text;
    return path(name);
  }
  static void expect_one_line_error(const RunResult& r, const std::string& needle) {
    EXPECT_NE(r.exit_code, 0) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << needle << "\n" << r.err;
  }
  fs::path dir_;
};

std::string chat_dataset() {
  std::string s;
  for (int i = 0; i < 12; ++i) {
    const std::string q = "add " + std::to_string(i) + " and 1", a = std::to_string(i + 1);
    s += nlohmann::json{{"messages", {{{"role", "user"}, {"content", q}}, {{"role", "assistant"}, {"content", a}}}}}.dump() + "\n";
    s += nlohmann::json{{"conversations", {{{"from", "human"}, {"value", q}}, {{"from", "gpt"}, {"value", a}}}}}.dump() + "\n";
    s += nlohmann::json{{"instruction", "add"}, {"input", std::to_string(i) + " 1"}, {"output", a}}.dump() + "\n";
  }
  return s + R"({"messages": [{"role": "user", "content": "a question, no answer"}]})" "\n";
}

}  // namespace

TEST_F(Train70bData, ChatDatasetTrainsWithReportAndPreview) {
  const std::string data = write("chat.jsonl", chat_dataset());
  RunResult r = run("--model tiny --dataset " + data + " --output " + path("out") +
                    " --max-steps 2 --batch-size 2 --eval-fraction 0.1 --preview 2 --max-seq-len 256");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("data report: 37 records (13 messages, 12 sharegpt, 12 alpaca), chat template llama3"),
            std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 with no trained tokens (skipped)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("12 exact duplicates"), std::string::npos) << r.out;  // ShareGPT == messages, Alpaca differs
  // The first example, with its assistant reply and <|eot_id|> marked as trained.
  EXPECT_NE(r.out.find("preview 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("<|start_header_id|>assistant<|end_header_id|>\n\n\u27e61<|eot_id|>\u27e7"),
            std::string::npos) << r.out;
  EXPECT_NE(r.out.find("preview 2"), std::string::npos);
  EXPECT_EQ(r.out.find("preview 3"), std::string::npos);
  std::ifstream in(dir_ / "out" / "data_report.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["records"], 37);
  EXPECT_EQ(j["examples"], 36);
  EXPECT_EQ(j["formats"]["alpaca"], 12);
  EXPECT_EQ(j["no_trained_tokens"], 1);
  EXPECT_EQ(j["exact_duplicates"], 12);
  EXPECT_GT(j["trained_share"].get<double>(), 0.0);
  EXPECT_LT(j["trained_share"].get<double>(), 0.2);
  EXPECT_TRUE(fs::exists(dir_ / "out" / "adapter_model.safetensors"));
}

TEST_F(Train70bData, TrainOnInputsAndTruncationDrop) {
  const std::string data = write("chat.jsonl", chat_dataset() + nlohmann::json{{"text", std::string(400, 'x')}}.dump() + "\n");
  RunResult r = run("--model tiny --dataset " + data + " --output " + path("out") +
                    " --max-steps 1 --batch-size 2 --train-on-inputs --truncation drop --max-seq-len 128");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("0 truncated, 1 dropped"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0 with no trained tokens"), std::string::npos) << r.out;  // the question is trained
  const nlohmann::json j = nlohmann::json::parse(std::ifstream(dir_ / "out" / "data_report.json"));
  EXPECT_EQ(j["truncation"], "drop");
  EXPECT_EQ(j["dropped"], 1);
  EXPECT_EQ(j["train_on_inputs"], true);
}

TEST_F(Train70bData, NoTrainedTokensIsRefusedInOneLine) {
  const std::string data = write("q.jsonl", R"({"messages": [{"role": "user", "content": "q"}]})" "\n"
                                            R"({"prompt": "p", "completion": "c"})" "\n");
  // --max-seq-len 2 leaves bos and "p" of the prompt: nothing trained.
  RunResult r = run("--model tiny --dataset " + data + " --output " + path("out") + " --max-seq-len 2");
  expect_one_line_error(r, "q.jsonl: no usable examples, no trained tokens");
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

TEST_F(Train70bData, UnknownChatTemplateNamesTheFlag) {
  const fs::path model = dir_ / "model";
  fs::create_directories(model);
  std::ofstream(model / "config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "intermediate_size": 48, "vocab_size": 300, "rms_norm_eps": 1e-5, "rope_theta": 10000.0})";
  std::ofstream(model / "tokenizer_config.json") << R"({"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"})";
  const std::string data = write("chat.jsonl", chat_dataset());
  RunResult r = run("--model " + model.string() + " --dataset " + data + " --output " + path("out"));
  expect_one_line_error(r, "tokenizer_config.json: the chat_template is not one train70b knows; choose one with "
                           "--chat-template llama3|llama3.1|llama3.2|llama2");
  EXPECT_NE(r.err.find("chat.jsonl:1: "), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "out"));

  expect_one_line_error(run("--model tiny --dataset " + data + " --chat-template chatml --output " + path("o2")),
                        "--chat-template 'chatml' is not known; choose one with --chat-template llama3|");
  expect_one_line_error(run("--model tiny --dataset " + data + " --truncation left --output " + path("o3")),
                        "--truncation must be right or drop, got 'left'");
}

// `train70b tokenize --chat`: the ids of transformers' apply_chat_template (the reference
// of tests/data/chat_template_reference.json, with the small Llama 3 style tokenizer of
// tests/data/chat_template_tokenizers) and labels
// that train exactly the assistant turns.
TEST_F(Train70bData, TokenizeChatPrintsIdsAndLabels) {
  const fs::path data = fs::path(ENGINE_SOURCE_DIR) / "tests" / "data";
  std::ifstream ref_in(data / "chat_template_reference.json");
  const nlohmann::json ref = nlohmann::json::parse(ref_in)["templates"]["llama3.1"]["cases"];
  std::string input;
  for (int i = 0; i < 3; ++i) input += nlohmann::json{{"messages", ref[i]["messages"]}}.dump() + "\n";
  const std::string file = write("chats.jsonl", input);
  const std::string model = (data / "chat_template_tokenizers" / "bpe").string();
  RunResult r = run("tokenize --model " + model + " --chat --chat-template llama3.1 " + file);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(std::getline(lines, line));
    const nlohmann::json j = nlohmann::json::parse(line);
    const auto ids = j["ids"].get<std::vector<int32_t>>();
    const auto labels = j["labels"].get<std::vector<int32_t>>();
    EXPECT_EQ(ids, ref[i]["ids"].get<std::vector<int32_t>>()) << i;
    ASSERT_EQ(labels.size(), ids.size());
    int64_t trained = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
      EXPECT_TRUE(labels[t] == -100 || labels[t] == ids[t]);
      trained += labels[t] != -100;
    }
    EXPECT_GT(trained, 0) << i;
    EXPECT_EQ(labels[0], -100);  // the BOS
  }
  EXPECT_FALSE(std::getline(lines, line));
  // Without a template in the directory and without --chat-template: one line naming the flag.
  RunResult none = run("tokenize --model " + model + " --chat " + file);
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("chats.jsonl:1: this record needs a chat template"), std::string::npos) << none.err;
  EXPECT_NE(none.err.find("--chat-template llama3|llama3.1|llama3.2|llama2"), std::string::npos) << none.err;
}
