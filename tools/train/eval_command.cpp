// `train70b eval` (eval_command.h): the model as a training run sets it up (model_setup.h),
// the adapter's factors copied in, then evaluate() over the whole dataset.
#include "tools/train/eval_command.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/io/atomic_file.h"
#include "models/adapter.h"
#include "models/chat_template.h"
#include "tools/train/cli.h"
#include "tools/train/evaluate.h"
#include "tools/train/memory_mechanisms.h"
#include "tools/train/model_setup.h"

namespace train {

namespace fs = std::filesystem;

namespace {

struct EvalOptions {
  TrainOptions model;  // the fields model_setup.h reads: model, dataset, sizes, device, seed
  std::string adapter, output;
};

// Positions the loss counts (labels != -100 at t >= 1), as models::make_batch counts them.
int64_t trained_tokens(const std::vector<models::Example>& examples) {
  int64_t n = 0;
  for (const models::Example& e : examples)
    for (size_t t = 1; t < e.labels.size(); ++t) n += e.labels[t] != models::kIgnoreLabel;
  return n;
}

EvalResult run_eval(const EvalOptions& e) {
  const TrainOptions& o = e.model;
  ENGINE_INPUT_CHECK(o.batch_size > 0 && o.batch_size <= kMaxBatch, "--batch-size must be in [1, ",
                     kMaxBatch, "], got ", o.batch_size);
  ENGINE_INPUT_CHECK(o.max_seq_len > 0 && o.max_seq_len <= kMaxSeqLen, "--max-seq-len must be in [1, ",
                     kMaxSeqLen, "], got ", o.max_seq_len);
  ENGINE_INPUT_CHECK(o.base_format == "nf4" || o.base_format == "f32",
                     "--base-format must be nf4 or f32, got '", o.base_format, "'");
  ENGINE_INPUT_CHECK(o.device == "auto" || o.device == "cpu" || o.device == "cuda",
                     "--device must be auto, cpu or cuda, got '", o.device, "'");
  // Everything small is read and checked before the weights load (minutes for 70B).
  const ModelSource source = resolve_model(o);
  std::optional<models::PeftAdapter> adapter;
  const std::string adapter_config = (fs::path(e.adapter) / "adapter_config.json").string();
  if (!e.adapter.empty()) {
    ENGINE_INPUT_CHECK(fs::is_directory(e.adapter), "--adapter ", e.adapter, ": no such directory");
    adapter = models::read_peft_adapter(e.adapter);
    TrainOptions rank = o;
    rank.lora_r = adapter->lora.r;
    try {
      check_lora_rank(rank, source.config);
    } catch (const engine::InputError& err) {  // names --lora-r: say where r came from
      throw engine::InputError(adapter_config + ": r " + std::to_string(adapter->lora.r) +
                               " does not fit this model: " + err.what());
    }
  }
  const std::unique_ptr<models::Tokenizer> tokenizer = make_tokenizer(source);
  const std::vector<models::Example> examples =
      models::load_jsonl_dataset(o.dataset, *tokenizer, dataset_options(o, source));
  ENGINE_INPUT_CHECK(trained_tokens(examples) > 0, o.dataset,
                     ": no example has a trained token (labels other than -100 after the first position)");

  std::string no_gpu;
  const bool gpu_usable = engine::cuda_available(&no_gpu);
  ENGINE_INPUT_CHECK(o.device != "cuda" || gpu_usable, "--device cuda: ", no_gpu);
  const bool on_gpu = o.device == "cuda" || (o.device == "auto" && gpu_usable);
  // Loading progress on a terminal's stderr only: stdout carries the JSON.
  std::ostringstream quiet;
  std::ostream& log = ::isatty(STDERR_FILENO) ? std::cerr : quiet;
  Loaded loaded = load_model(o, source, on_gpu ? engine::Device::cuda() : engine::Device::cpu(), log);
  models::LlamaModel& model = *loaded.model;
  if (!model.base_frozen())
    model.freeze_base(o.base_format == "nf4" ? models::BaseFormat::NF4 : models::BaseFormat::F32);
  if (adapter) {
    model.add_lora(adapter->lora, o.seed + 1);
    models::load_adapter_weights(model, *adapter,
                                 (fs::path(e.adapter) / "adapter_model.safetensors").string());
  }
  if (on_gpu) model.to(engine::Device::cuda(), engine::DType::BF16);
  // The MLP tile of a training run with these flags: the same numbers as its evaluations.
  return evaluate(model, examples, o.batch_size, resolve_memory_mechanisms(o, model.config()).tile_tokens);
}

}  // namespace

std::string eval_result_json(const EvalResult& r) {
  return nlohmann::json{{"loss", r.loss}, {"perplexity", std::exp(r.loss)}, {"accuracy", r.accuracy},
                        {"tokens", r.tokens}}
      .dump(2);
}

int eval_main(int argc, char** argv) {
  EvalOptions e;
  TrainOptions& o = e.model;
  CLI::App app{"train70b eval: loss, perplexity, greedy next-token accuracy and token count of a\n"
               "model (with a PEFT adapter, if given) over every example of a dataset, as JSON.",
               "train70b eval"};
  app.get_formatter()->column_width(34);
  app.add_option("--model", o.model, "Hugging Face model directory, model id in the local HF cache,\nor preset (as train70b --model)")
      ->required();
  app.add_option("--adapter", e.adapter, "PEFT adapter directory (adapter_config.json,\nadapter_model.safetensors), e.g. a train70b --output");
  app.add_option("--dataset", o.dataset, "JSONL dataset (the formats train70b reads)")->required();
  app.add_option("--max-seq-len", o.max_seq_len, "Longer examples are truncated (or dropped: --truncation drop)")
      ->capture_default_str();
  app.add_option("--batch-size", o.batch_size, "Sequences per evaluation batch")->capture_default_str();
  app.add_option("--device", o.device, "cpu, cuda, or auto")->capture_default_str();
  app.add_option("--base-format", o.base_format, "Frozen base weights: nf4 or f32 (as in training)")
      ->capture_default_str();
  app.add_option("--chat-template", o.chat_template, "As train70b --chat-template");
  app.add_flag("--train-on-inputs", o.train_on_inputs, "Count prompts and user turns too (as in training)");
  app.add_option("--truncation", o.truncation, "right or drop")->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of a preset's random weights (as in training)")->capture_default_str();
  app.add_option("--output", e.output, "Write the JSON to this file (atomically) instead of stdout");
  if (const std::optional<int> end = parse_command_line(app, argc, argv, "train70b eval")) return *end;
  try {
    ENGINE_INPUT_CHECK(o.truncation == "right" || o.truncation == "drop",
                       "--truncation must be right or drop, got '", o.truncation, "'");
    ENGINE_INPUT_CHECK(o.chat_template.empty() || models::parse_chat_template_name(o.chat_template),
                       "--chat-template '", o.chat_template, "' is not known; ", models::kChooseChatTemplate);
    if (!e.output.empty()) {
      const fs::path parent = fs::absolute(e.output).parent_path();
      ENGINE_INPUT_CHECK(fs::is_directory(parent), "--output ", e.output, ": ", parent.string(),
                         " is not a directory");
    }
    const std::string json = eval_result_json(run_eval(e)) + "\n";
    if (e.output.empty()) std::cout << json << std::flush;
    else engine::io::write_file_atomic(e.output, json);
    return 0;
  } catch (const std::exception& err) {
    std::fprintf(stderr, "train70b eval: %s\n", err.what());
    return 1;
  }
}

}  // namespace train
