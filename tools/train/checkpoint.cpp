// Saving, finding and loading checkpoints (see checkpoint.h).
#include "tools/train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "engine/error.h"
#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"
#include "models/adapter.h"
#include "tools/train/run_output.h"

namespace train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kPrefix = "checkpoint-";

// Options that do not change what is trained: a resumed run may set them differently.
// (max-line-size bounds how the data is read; the data fingerprint holds what was read.)
constexpr const char* kFreeOnResume[] = {"output",       "log-every",           "eval-every",
                                         "save-every",   "save-total-limit",    "preview",
                                         "general-eval", "forgetting-threshold", "max-line-size"};

json eval_json(const EvalResult& r) { return {{"loss", r.loss}, {"accuracy", r.accuracy}, {"tokens", r.tokens}}; }
EvalResult eval_from(const json& j) {
  return {j.at("loss").get<double>(), j.at("accuracy").get<double>(), j.at("tokens").get<int64_t>()};
}

// The step of a complete checkpoint directory's name, or -1.
int64_t checkpoint_step(const fs::path& dir) {
  const std::string name = dir.filename().string();
  if (name.rfind(kPrefix, 0) != 0) return -1;
  const std::string digits = name.substr(std::char_traits<char>::length(kPrefix));
  if (digits.empty() || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos)
    return -1;
  return std::stoll(digits);
}

std::vector<std::pair<int64_t, fs::path>> checkpoints_in(const fs::path& output) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(output / "checkpoints", ec)) {
    const int64_t step = checkpoint_step(e.path());
    if (step >= 0 && fs::exists(e.path() / kStateFile, ec)) found.emplace_back(step, e.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::string short_dump(const json& j) {
  std::string s = j.dump();
  return s.size() > 120 ? s.substr(0, 117) + "..." : s;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  ENGINE_INPUT_CHECK(in.good(), path.string(), ": cannot open");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// TRAIN70B_TEST_SAVE_PAUSE=STEP:MS, a test hook: the save after step STEP waits MS
// milliseconds half-written (adapter done, optimizer state not yet), so that the kill -9
// test can kill the process there (tests/tools/test_train70b_resume.cpp).
void test_pause_mid_save(int64_t step) {
  const char* hook = std::getenv("TRAIN70B_TEST_SAVE_PAUSE");
  long long at = 0, ms = 0;
  if (hook != nullptr && std::sscanf(hook, "%lld:%lld", &at, &ms) == 2 && at == step)
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// A position the training loop can continue from as it is: counts not negative, `order` a
// permutation of 0..n-1 and the cursor inside it.
void check_position(const TrainProgress& p, const fs::path& state_path) {
  const std::string where = state_path.string() + ": ";
  ENGINE_INPUT_CHECK(p.step >= 0 && p.tokens_seen >= 0 && p.nonfinite_in_a_row >= 0 &&
                         p.nonfinite_steps >= p.nonfinite_in_a_row,
                     where, "negative or inconsistent counts (step ", p.step, ", nonfinite_steps ",
                     p.nonfinite_steps, ", nonfinite_in_a_row ", p.nonfinite_in_a_row, ")");
  const auto n = static_cast<int64_t>(p.order.size());
  ENGINE_INPUT_CHECK(p.cursor >= 0 && p.cursor <= n, where, "cursor ", p.cursor, " is outside the order of ",
                     n, " training units");
  std::vector<bool> seen(p.order.size(), false);
  for (const int64_t i : p.order) {
    ENGINE_INPUT_CHECK(i >= 0 && i < n && !seen[static_cast<size_t>(i)], where,
                       "order is not a permutation of the ", n, " training units (", i, ")");
    seen[static_cast<size_t>(i)] = true;
  }
}

}  // namespace

void check_resume_position(const TrainProgress& p, int64_t train_units, int64_t total_steps,
                           const fs::path& dir) {
  const std::string where = (dir / kStateFile).string() + ": ";
  ENGINE_INPUT_CHECK(p.order.empty() || static_cast<int64_t>(p.order.size()) == train_units, where,
                     "the data order has ", p.order.size(), " training units, this run has ", train_units);
  ENGINE_INPUT_CHECK(p.step <= total_steps, where, "step ", p.step, " is past this run's ", total_steps,
                     " steps");
}

std::string dataset_fingerprint(const std::vector<models::Example>& examples) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](int64_t v) {
    for (int i = 0; i < 8; ++i) h = (h ^ ((static_cast<uint64_t>(v) >> (8 * i)) & 0xff)) * 1099511628211ull;
  };
  mix(static_cast<int64_t>(examples.size()));
  for (const models::Example& e : examples) {
    mix(static_cast<int64_t>(e.input_ids.size()));
    for (int32_t t : e.input_ids) mix(t);
    for (int32_t t : e.labels) mix(t);
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

json run_identity(const std::string& model_name, const models::LlamaModel& model,
                  const std::string& optimizer_kind, const std::vector<models::Example>& train,
                  const std::vector<models::Example>& eval, const json& options) {
  const models::LlamaConfig& c = model.config();
  json lora = json::array();
  for (const auto& [name, t] : model.lora_parameters()) lora.push_back({name, t.shape().str()});
  json trajectory = options;
  for (const char* key : kFreeOnResume) trajectory.erase(key);
  return {{"model", {{"name", model_name}, {"layers", c.layers}, {"hidden", c.hidden}, {"heads", c.heads},
                     {"kv_heads", c.kv_heads}, {"intermediate", c.intermediate}, {"vocab", c.vocab}}},
          {"lora", lora},
          {"optimizer", optimizer_kind},
          {"train_data", dataset_fingerprint(train)},
          {"eval_data", dataset_fingerprint(eval)},
          {"options", trajectory}};
}

fs::path save_checkpoint(const fs::path& output, const CheckpointData& data, const models::LlamaModel& model,
                         const models::LoraConfig& lora, const std::string& base_model_name,
                         const fs::path& metrics_file, int64_t keep_last) {
  ensure_output_dir(output);
  const fs::path dir = output / "checkpoints";
  fs::create_directories(dir);
  const fs::path target = dir / (kPrefix + std::to_string(data.progress.step));
  if (fs::exists(target / kStateFile)) return target;  // no step since it was written
  const fs::path tmp = dir / (".tmp-checkpoint." + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directory(tmp);
  models::write_peft_adapter(tmp.string(), model, lora, base_model_name);
  test_pause_mid_save(data.progress.step);
  engine::io::write_safetensors((tmp / kOptimizerFile).string(), data.optimizer, {{"format", "train70b"}});
  const TrainProgress& p = data.progress;
  json entries = json::array();
  for (const auto& [name, t] : data.optimizer) entries.push_back(name);
  const json state = {{"step", p.step},
                      {"shuffle_offset", p.shuffle_offset},
                      {"order", p.order},
                      {"cursor", p.cursor},
                      {"tokens_seen", p.tokens_seen},
                      {"train_seconds", p.train_seconds},
                      {"nonfinite_in_a_row", p.nonfinite_in_a_row},
                      {"nonfinite_steps", p.nonfinite_steps},
                      {"before", eval_json(p.before)},
                      {"general_before", eval_json(p.general_before)},
                      {"optimizer_entries", entries},
                      {"identity", data.identity}};
  engine::io::write_file_atomic((tmp / kStateFile).string(), state.dump(1) + "\n");
  engine::io::write_file_atomic((tmp / "run_config.json").string(), data.run_config.dump(2) + "\n");
  engine::io::write_file_atomic((tmp / "metrics.jsonl").string(), read_text(metrics_file));
  fsync_tree(tmp);
  fs::remove_all(target);  // an incomplete one of the same step (no state file)
  fs::rename(tmp, target);
  fsync_directory(dir);
  // Older checkpoints go out of sight by one rename before they are deleted: a kill during
  // the deletion leaves a temporary (removed at the next start), never a half-deleted
  // checkpoint-<step> that is neither complete nor counted.
  const auto all = checkpoints_in(output);
  for (size_t i = 0; i + keep_last < all.size(); ++i) {
    if (all[i].second == target) continue;
    fs::rename(all[i].second, tmp);
    fs::remove_all(tmp);
  }
  fsync_directory(dir);
  return target;
}

fs::path resume_point(const std::string& resume, const fs::path& output) {
  if (!resume.empty()) return resolve_resume(resume, output);
  const fs::path earlier = latest_checkpoint(output);
  ENGINE_INPUT_CHECK(earlier.empty(), "--output ", output.string(), " holds checkpoints of an earlier run (newest ",
                     earlier.string(), "): continue it with --resume latest, or remove ",
                     (output / "checkpoints").string(), " to start over");
  return {};
}

fs::path latest_checkpoint(const fs::path& output) {
  const auto all = checkpoints_in(output);
  return all.empty() ? fs::path() : all.back().second;
}

fs::path resolve_resume(const std::string& resume, const fs::path& output) {
  if (resume == "latest") {
    const fs::path latest = latest_checkpoint(output);
    ENGINE_INPUT_CHECK(!latest.empty(), "--resume latest: no complete checkpoint in ",
                       (output / "checkpoints").string());
    return latest;
  }
  ENGINE_INPUT_CHECK(fs::exists(fs::path(resume) / kStateFile), "--resume ", resume,
                     ": not a complete checkpoint directory (no ", kStateFile, ")");
  return resume;
}

CheckpointData load_checkpoint(const fs::path& dir, const json& expected, models::LlamaModel& model,
                               std::string* metrics) {
  const fs::path state_path = dir / kStateFile;
  json state;
  try {
    state = json::parse(read_text(state_path));
  } catch (const json::exception& e) {
    throw engine::InputError(engine::one_line(state_path.string() + ": " + e.what()));
  }
  CheckpointData d;
  try {
    d.identity = state.at("identity");
    const char* what[][2] = {{"model", "model"}, {"lora", "LoRA factors"}, {"optimizer", "--optim"},
                             {"train_data", "training data"}, {"eval_data", "held-out data"}};
    for (const auto& [key, name] : what)
      ENGINE_INPUT_CHECK(d.identity.at(key) == expected.at(key), "--resume ", dir.string(), ": the checkpoint's ",
                         name, " ", short_dump(d.identity.at(key)), " differs from this run's ",
                         short_dump(expected.at(key)));
    const json& saved = d.identity.at("options");
    for (const auto& [key, value] : expected.at("options").items())
      ENGINE_INPUT_CHECK(saved.contains(key) && saved.at(key) == value, "--resume ", dir.string(),
                         ": the checkpoint was made with --", key, " ",
                         saved.contains(key) ? saved.at(key).dump() : "(unset)", ", this run has --", key, " ",
                         value.dump());
    TrainProgress& p = d.progress;
    p.step = state.at("step");
    p.shuffle_offset = state.at("shuffle_offset");
    p.order = state.at("order").get<std::vector<int64_t>>();
    p.cursor = state.at("cursor");
    p.tokens_seen = state.at("tokens_seen");
    p.train_seconds = state.at("train_seconds");
    p.nonfinite_in_a_row = state.at("nonfinite_in_a_row");
    p.nonfinite_steps = state.at("nonfinite_steps");
    check_position(p, state_path);
    p.before = eval_from(state.at("before"));
    p.general_before = eval_from(state.at("general_before"));
    const engine::io::SafetensorsFile opt((dir / kOptimizerFile).string());
    for (const json& name : state.at("optimizer_entries"))
      d.optimizer.emplace_back(name.get<std::string>(), opt.load(name.get<std::string>()));
    d.run_config = json::parse(read_text(dir / "run_config.json"));
  } catch (const json::exception& e) {
    throw engine::InputError(engine::one_line(state_path.string() + ": " + e.what()));
  }
  models::load_adapter_weights(model, models::read_peft_adapter(dir.string()), dir.string());
  *metrics = read_text(dir / "metrics.jsonl");
  return d;
}

}  // namespace train
