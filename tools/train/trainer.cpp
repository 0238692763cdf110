#include "tools/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <utility>

#include <unistd.h>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"
#include "engine/nvtx.h"
#include "engine/ops.h"
#include "engine/optim/adamw.h"
#include "engine/optim/lr_schedule.h"
#include "models/adapter.h"
#include "models/data_report.h"
#include "models/hf_config.h"
#include "models/hf_hub.h"
#include "models/packing.h"
#include "models/synthetic.h"
#include "models/weight_loader.h"
#include "tools/train/demo_task.h"
#include "tools/train/evaluate.h"
#include "tools/train/model_setup.h"

namespace train {

namespace fs = std::filesystem;
using engine::Tensor;

namespace {

// Sequences per optimizer step and the number of steps, from sizes validate() bounded:
// every product here fits in int64.
struct StepPlan {
  int64_t per_step = 0, total_steps = 0;
};

StepPlan plan_steps(const TrainOptions& o, int64_t train_examples) {
  ENGINE_INPUT_CHECK(o.batch_size <= train_examples, "--batch-size ", o.batch_size,
                     " is more than the ", train_examples,
                     " training examples: a micro-batch would repeat examples");
  StepPlan p;
  p.per_step = o.batch_size * o.grad_accum;  // both <= 2^20
  ENGINE_INPUT_CHECK(p.per_step <= train_examples, "--batch-size ", o.batch_size,
                     " x --grad-accum ", o.grad_accum, " = ", p.per_step,
                     " sequences per step is more than the ", train_examples,
                     " training examples: one step would see examples twice");
  if (o.max_steps > 0) {
    p.total_steps = o.max_steps;
    return p;
  }
  const int64_t steps_per_epoch = (train_examples + p.per_step - 1) / p.per_step;
  p.total_steps = steps_per_epoch * o.epochs;  // <= dataset size x 10^6
  ENGINE_INPUT_CHECK(p.total_steps <= kMaxSteps, "--epochs ", o.epochs, " gives ", p.total_steps,
                     " steps, above the limit of ", kMaxSteps, " (use --max-steps)");
  return p;
}

}  // namespace

RunSummary run_training(const TrainOptions& o, std::ostream& log) {
  validate(o);
  // 1. Everything the user gave is read and checked before any output exists; the flags,
  // the output directory, the config and the data before the weights load (minutes for 70B).
  check_output_writable(o.output);
  const ModelSource source = resolve_model(o);
  check_lora_rank(o, source.config);
  const std::unique_ptr<models::Tokenizer> tokenizer = make_tokenizer(source);
  std::vector<models::Example> examples;
  models::DatasetStats stats;
  const models::DatasetOptions data_options = dataset_options(o, source);
  if (o.demo) {
    examples = make_demo_examples(*tokenizer, 1200, o.seed);
  } else {
    examples = models::load_jsonl_dataset(o.dataset, *tokenizer, data_options, &stats);
    log << models::data_report_text(stats, data_options);
    ENGINE_INPUT_CHECK(o.eval_fraction == 0 || examples.size() >= 2, o.dataset,
                       ": holding out --eval-fraction ", o.eval_fraction,
                       " needs at least 2 usable examples, the file has ", examples.size());
  }
  for (int64_t i = 0; i < std::min<int64_t>(o.preview, static_cast<int64_t>(examples.size())); ++i)
    log << "preview " << i + 1 << " (" << examples[i].input_ids.size()
        << " tokens, trained spans in \u27e6 \u27e7):\n"
        << models::preview_example(examples[i], *tokenizer) << "\n";
  warn_long_sequences(examples, source.config, log);
  models::DatasetSplit split = models::split_train_eval(std::move(examples), o.eval_fraction, o.seed);
  ENGINE_CHECK(!split.train.empty(), "no training examples left after the held-out split");
  if (split.eval.empty()) split.eval = {split.train.begin(), split.train.begin() + 1};
  // --packing: the training units are packed rows of examples (models/packing.h).
  std::vector<std::vector<int64_t>> packed_rows;
  if (o.packing) packed_rows = models::pack_examples(split.train, o.max_seq_len, o.seed + 3);
  const int64_t train_units =
      static_cast<int64_t>(o.packing ? packed_rows.size() : split.train.size());
  const StepPlan plan = plan_steps(o, train_units);
  std::string no_gpu;
  const bool gpu_usable = engine::cuda_available(&no_gpu);
  ENGINE_INPUT_CHECK(o.device != "cuda" || gpu_usable, "--device cuda: ", no_gpu);
  const bool on_gpu = o.device == "cuda" || (o.device == "auto" && gpu_usable);
  Loaded loaded = load_model(o, source, on_gpu ? engine::Device::cuda() : engine::Device::cpu(), log);
  models::LlamaModel& model = *loaded.model;

  models::LoraConfig lora;
  lora.r = o.lora_r;
  lora.alpha = o.lora_alpha;
  lora.dropout = o.lora_dropout;
  lora.use_rslora = o.rslora;
  lora.targets = models::parse_lora_targets(o.lora_targets);
  if (!model.base_frozen())
    model.freeze_base(o.base_format == "nf4" ? models::BaseFormat::NF4 : models::BaseFormat::F32);
  model.add_lora(lora, o.seed + 1);
  if (on_gpu) model.to(engine::Device::cuda(), engine::DType::BF16);
  std::vector<Tensor> params = model.trainable_parameters();
  int64_t trainable = 0;
  for (const Tensor& p : params) trainable += p.numel();

  const int64_t per_step = plan.per_step, total_steps = plan.total_steps;
  engine::optim::LrSchedule schedule{engine::optim::parse_schedule_kind(o.schedule), o.lr,
                                     static_cast<int64_t>(std::ceil(o.warmup_ratio * total_steps)),
                                     total_steps};
  engine::optim::AdamW optimizer(params, {.lr = o.lr, .weight_decay = o.weight_decay});

  log << "model " << loaded.base_name << ": " << model.config().layers << " layers, hidden "
      << model.config().hidden << ", base " << o.base_format << " (" << model.frozen_bytes()
      << " bytes of decoder weights), LoRA r " << lora.r << " alpha " << lora.alpha << " on "
      << lora.targets.size() << " modules: " << trainable << " trainable parameters; on "
      << (on_gpu ? "cuda (bf16 activations)" : "cpu (fp32 reference)") << "\n";
  log << "data: " << split.train.size() << " training / " << split.eval.size() << " held-out examples; "
      << total_steps << " steps of " << per_step << " sequences\n";
  double packing_efficiency = 0;
  if (o.packing) {
    packing_efficiency = models::packing_efficiency(split.train, packed_rows, o.max_seq_len);
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "packing: %zu examples in %zu sequences of %lld tokens, %.1f%% of them not padding\n",
                  split.train.size(), packed_rows.size(), static_cast<long long>(o.max_seq_len),
                  100.0 * packing_efficiency);
    log << buf;
  }

  // 2. Output directory: metrics stream to a partial file, renamed at the end.
  fs::create_directories(o.output);
  if (!o.demo)
    engine::io::write_file_atomic((fs::path(o.output) / "data_report.json").string(),
                                  models::data_report_json(stats, o.dataset, data_options));
  const fs::path metrics_path = fs::path(o.output) / "metrics.jsonl";
  const fs::path partial_path = fs::path(o.output) / "metrics.jsonl.partial";
  std::ofstream metrics(partial_path);
  ENGINE_INPUT_CHECK(metrics.good(), partial_path.string(), ": cannot open for writing");
  auto write_eval = [&](const char* when, int64_t step, const EvalResult& r) {
    log << eval_line(when, r) << "\n" << std::flush;
    metrics << nlohmann::json{{"event", "eval"}, {"when", when}, {"step", step}, {"loss", r.loss},
                              {"accuracy", r.accuracy}, {"tokens", r.tokens}}.dump()
            << "\n" << std::flush;
  };

  if (o.packing)
    metrics << nlohmann::json{{"event", "packing"}, {"examples", split.train.size()},
                              {"sequences", packed_rows.size()}, {"max_seq_len", o.max_seq_len},
                              {"efficiency", packing_efficiency}}.dump()
            << "\n";
  RunSummary summary;
  summary.before = evaluate(model, split.eval, o.batch_size);
  write_eval("before training", 0, summary.before);

  engine::Generator shuffle_gen(o.seed + 2);
  std::vector<int64_t> order;
  size_t cursor = 0;
  auto next_indices = [&](int64_t n) {
    std::vector<int64_t> idx;
    while (static_cast<int64_t>(idx.size()) < n) {
      if (cursor == order.size()) {  // new epoch: a fresh permutation
        std::vector<float> keys = engine::uniform({train_units}, 0, 1, shuffle_gen).to_floats();
        order.resize(static_cast<size_t>(train_units));
        for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
        std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
        cursor = 0;
      }
      idx.push_back(order[cursor++]);
    }
    return idx;
  };

  auto t0 = std::chrono::steady_clock::now();
  int64_t tokens_seen = 0;
  int64_t nonfinite_in_a_row = 0;
  for (int64_t step = 0; step < total_steps; ++step) {
    engine::NvtxRange step_range("step");
    const float lr = schedule.at(step);
    optimizer.set_lr(lr);
    std::vector<models::Batch> micro;
    std::vector<models::PackedBatch> layouts;  // --packing: positions and documents per batch
    int64_t step_targets = 0;
    {
      engine::NvtxRange range("data");
      for (int64_t m = 0; m < o.grad_accum; ++m) {
        if (o.packing) {
          layouts.push_back(models::make_packed_batch(split.train, packed_rows,
                                                      next_indices(o.batch_size), o.max_seq_len, 0));
          micro.push_back(layouts.back().batch);
        } else {
          micro.push_back(models::make_batch(split.train, next_indices(o.batch_size), 0));
        }
        step_targets += micro.back().target_tokens;
      }
    }
    // The loss is the mean over all counted tokens of the step: each micro-batch's
    // mean is weighted by its share of those tokens.
    double step_loss = 0;
    for (size_t m = 0; m < micro.size(); ++m) {
      if (micro[m].target_tokens == 0) continue;
      const float weight = static_cast<float>(micro[m].target_tokens) / static_cast<float>(step_targets);
      models::ForwardOptions fo{o.checkpoint_layers, true, o.seed * 7919 + step * 131 + m};
      if (o.packing) {
        fo.positions = layouts[m].positions;
        fo.doc_start = layouts[m].doc_start;
      }
      Tensor loss;
      {
        engine::NvtxRange range("forward");
        loss = engine::ops::scale(model.loss(micro[m].ids, micro[m].labels, fo), weight);
      }
      engine::backward(loss);
      step_loss += loss.item();
      tokens_seen += micro[m].ids.numel();
    }
    float grad_norm;
    bool finite;
    {
      engine::NvtxRange range("optimizer");
      grad_norm = engine::optim::clip_grad_norm(params, o.max_grad_norm);
      // NaN/Inf guard: one such update would make every LoRA factor NaN for good.
      finite = std::isfinite(step_loss) && std::isfinite(grad_norm);
      if (finite) optimizer.step();
      optimizer.zero_grad();
    }
    nonfinite_in_a_row = finite ? 0 : nonfinite_in_a_row + 1;
    summary.nonfinite_steps += !finite;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // nlohmann writes a NaN or Inf as null.
    metrics << nlohmann::json{{"event", "train"}, {"step", step + 1}, {"loss", step_loss}, {"lr", lr},
                              {"grad_norm", grad_norm}, {"tokens_per_second", tokens_seen / seconds},
                              {"skipped", !finite}, {"nonfinite_steps", summary.nonfinite_steps}}.dump()
            << "\n" << std::flush;
    if (!finite) {
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "step %5lld/%lld  loss %g  grad-norm %g: not finite, update skipped (%lld in a row)",
                    static_cast<long long>(step + 1), static_cast<long long>(total_steps), step_loss,
                    grad_norm, static_cast<long long>(nonfinite_in_a_row));
      log << buf << "\n" << std::flush;
      if (nonfinite_in_a_row >= o.max_nonfinite_steps) {
        const std::string reason =
            "training diverged: " + std::to_string(nonfinite_in_a_row) + " steps in a row (to step " +
            std::to_string(step + 1) + ") had a non-finite loss or gradient norm (--max-nonfinite-steps " +
            std::to_string(o.max_nonfinite_steps) + "); no adapter written; lower --lr or --lora-alpha";
        metrics << nlohmann::json{{"event", "stopped"}, {"step", step + 1}, {"reason", reason}}.dump()
                << "\n";
        metrics.close();
        fs::rename(partial_path, metrics_path);  // the record of why, complete
        throw engine::Error(reason + "; metrics in " + metrics_path.string());
      }
      continue;
    }
    if ((step + 1) % o.log_every == 0 || step == 0 || step + 1 == total_steps) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "step %5lld/%lld  loss %.4f  lr %.2e  grad-norm %.3f  %.0f tokens/s",
                    static_cast<long long>(step + 1), static_cast<long long>(total_steps), step_loss, lr,
                    grad_norm, tokens_seen / seconds);
      log << buf << "\n" << std::flush;
    }
  }
  summary.steps = total_steps;
  if (summary.nonfinite_steps > 0)
    log << summary.nonfinite_steps << " of " << total_steps
        << " steps were skipped for a non-finite loss or gradient norm\n";
  summary.after = evaluate(model, split.eval, o.batch_size);
  write_eval("after training", total_steps, summary.after);

  models::write_peft_adapter(o.output, model, lora, loaded.base_name);
  metrics.close();
  fs::rename(partial_path, metrics_path);
  log << "adapter written to " << o.output << " (adapter_config.json, adapter_model.safetensors), metrics in "
      << metrics_path.string() << "\n";
  return summary;
}

}  // namespace train
