// train70b --packing end to end on the demo task: the run packs the examples into full
// sequences, reports the packing efficiency (a log line and a "packing" event in
// metrics.jsonl; its value is checked in tests/models/test_packing.cpp), trains (the
// held-out loss falls) and writes the adapter.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tools/train/trainer.h"

namespace fs = std::filesystem;

TEST(Train70bPacking, DemoTrainsOnPackedSequencesAndReportsEfficiency) {
  const fs::path dir = fs::temp_directory_path() / ("train70b_packing_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  train::TrainOptions o;
  o.demo = true;
  o.packing = true;
  o.max_seq_len = 128;
  o.batch_size = 2;
  o.max_steps = 30;
  o.lr = 2e-3f;
  o.output = (dir / "out").string();
  std::ostringstream log;
  const train::RunSummary s = train::run_training(o, log);
  EXPECT_LT(s.after.loss, s.before.loss) << log.str();
  EXPECT_NE(log.str().find("packing: "), std::string::npos) << log.str();
  EXPECT_TRUE(fs::exists(dir / "out" / "adapter_model.safetensors"));

  std::ifstream metrics(dir / "out" / "metrics.jsonl");
  int packing_events = 0;
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j["event"] != "packing") continue;
    ++packing_events;
    const double efficiency = j["efficiency"];
    const int64_t sequences = j["sequences"], examples = j["examples"];
    EXPECT_EQ(j["max_seq_len"], 128);
    EXPECT_GT(efficiency, 0.5);  // the demo's examples are short: packing fills rows
    EXPECT_LE(efficiency, 1.0);
    EXPECT_LT(sequences, examples);
  }
  EXPECT_EQ(packing_events, 1);
  fs::remove_all(dir);
}
