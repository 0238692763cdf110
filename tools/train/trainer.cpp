#include "tools/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
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
#include "engine/optim/make_optimizer.h"
#include "engine/optim/lr_schedule.h"
#include "models/adapter.h"
#include "models/data_report.h"
#include "models/hf_config.h"
#include "models/hf_hub.h"
#include "models/packing.h"
#include "models/synthetic.h"
#include "models/weight_loader.h"
#include "tools/train/demo_task.h"
#include "tools/train/dpo_trainer.h"
#include "tools/train/dry_run.h"
#include "tools/train/evaluate.h"
#include "tools/train/memory_plan.h"
#include "tools/train/memory_mechanisms.h"
#include "tools/train/memory_report.h"
#include "tools/train/model_setup.h"
#include "tools/train/progress.h"
#include "tools/train/checkpoint.h"
#include "tools/train/run_config.h"
#include "tools/train/run_metrics.h"
#include "tools/train/run_output.h"
#include "tools/train/run_state.h"
#include "tools/train/stop_signal.h"

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

RunSummary run_training(const TrainOptions& given, std::ostream& log) {
  if (given.method == "dpo") return run_dpo_training(given, log);  // tools/train/dpo_trainer.h
  validate(given);
  // The memory plan before anything is read or loaded: refuses a run that cannot fit
  // --max-gpu-mem; --auto-fit and `auto` choices replace the flags from here on.
  const TrainOptions o = apply_memory_plan(given, log);  // tools/train/memory_plan.h
  const auto run_start = std::chrono::steady_clock::now();
  validate(o);
  // 1. Everything the user gave is read and checked before any output exists; the flags,
  // the output directory, the config and the data before the weights load (minutes for 70B).
  const fs::path resume_dir = prepare_output(o, log);  // checkpoints/checkpoint-N, or empty
  const ModelSource source = resolve_model(o);
  check_lora_rank(o, source.config);
  const std::unique_ptr<models::Tokenizer> tokenizer = make_tokenizer(source);
  std::vector<models::Example> examples;
  models::DatasetStats stats;
  const models::DatasetOptions data_options = dataset_options(o, source);
  models::DatasetSplit demo_split;  // held out: whole progressions (tools/train/demo_task.h)
  if (o.demo) {
    demo_split = make_demo_split(*tokenizer, 1200, o.eval_fraction, o.seed);
    examples = demo_split.train;  // for the preview
  } else if (o.dry_run && o.dataset.empty()) {  // full-length batches (tools/train/dry_run.h)
    examples = dry_run_examples(o, source.config, o.batch_size * o.grad_accum + o.batch_size);
    log << "dry run: " << examples.size() << " generated sequences of " << o.max_seq_len << " tokens\n";
  } else {
    examples = models::load_jsonl_dataset(o.dataset, *tokenizer, data_options, &stats);
    log << models::data_report_text(stats, data_options);
    ENGINE_INPUT_CHECK(o.eval_fraction == 0 || examples.size() >= 2, o.dataset,
                       ": holding out --eval-fraction ", o.eval_fraction,
                       " needs at least 2 usable examples, the file has ", examples.size());
  }
  std::vector<models::Example> general;  // --general-eval: the forgetting check
  if (!o.general_eval.empty()) general = models::load_jsonl_dataset(o.general_eval, *tokenizer, data_options);
  for (int64_t i = 0; i < std::min<int64_t>(o.preview, static_cast<int64_t>(examples.size())); ++i)
    log << "preview " << i + 1 << " (" << examples[i].input_ids.size()
        << " tokens, trained spans in \u27e6 \u27e7):\n"
        << models::preview_example(examples[i], *tokenizer) << "\n";
  warn_long_sequences(examples, source.config, log);
  models::DatasetSplit split =
      o.demo ? std::move(demo_split) : models::split_train_eval(std::move(examples), o.eval_fraction, o.seed);
  ENGINE_CHECK(!split.train.empty(), "no training examples left after the held-out split");
  // Held-out and training examples never share an index; identical records (duplicates in
  // the data, or the demo's closed task) are reported, not dropped.
  if (const size_t seen = count_examples_seen_in_training(split.eval, split.train); seen > 0)
    log << "note: " << seen << " held-out examples have an identical copy in the training split\n";
  if (split.eval.empty())
    log << "no held-out evaluation: "
        << (o.eval_fraction == 0 ? "--eval-fraction 0" : "every held-out example is also a training example")
        << "\n";
  // --packing: the training units are packed rows of examples (models/packing.h).
  std::vector<std::vector<int64_t>> packed_rows;
  if (o.packing) packed_rows = models::pack_examples(split.train, o.max_seq_len, o.seed + 3);
  const int64_t train_units =
      static_cast<int64_t>(o.packing ? packed_rows.size() : split.train.size());
  const StepPlan plan = plan_steps(o, train_units);
  const bool on_gpu = train_on_gpu(o);
  if (on_gpu) start_memory_report();  // owners of device memory from here on
  if (o.dry_run)
    log << "dry run on " << dry_run_gpu(o).name << ": nothing is executed and device memory is "
        << "virtual; losses, gradient norms and evaluations below are placeholders (0)\n";
  TrainableModel trainable_model = setup_trainable_model(o, source, on_gpu, std::nullopt, log);
  const Loaded& loaded = trainable_model.loaded;
  models::LlamaModel& model = *loaded.model;
  const models::LoraConfig& lora = trainable_model.lora;
  const MemoryMechanisms& mechanisms = trainable_model.mechanisms;
  std::vector<Tensor>& params = trainable_model.params;
  int64_t trainable = 0;
  for (const Tensor& p : params) trainable += p.numel();

  const int64_t per_step = plan.per_step, total_steps = plan.total_steps;
  engine::optim::LrSchedule schedule{engine::optim::parse_schedule_kind(o.schedule), o.lr,
                                     static_cast<int64_t>(std::ceil(o.warmup_ratio * total_steps)),
                                     total_steps};
  const std::unique_ptr<engine::optim::Optimizer> optimizer =
      engine::optim::make_optimizer(o.optim, params, {.lr = o.lr, .weight_decay = o.weight_decay});

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

  // 2. Output: written into a staging directory beside the output and swapped in whole at
  // the end (tools/train/run_output.h); checkpoints go to OUTPUT/checkpoints meanwhile.
  StagedOutput staged(o.output);
  if (!o.demo)
    engine::io::write_file_atomic((staged.dir() / "data_report.json").string(),
                                  models::data_report_json(stats, o.dataset, data_options));
  const std::string optimizer_kind = optimizer->kind();
  const nlohmann::json options_json = options_to_json(o);
  const nlohmann::json identity =
      run_identity(loaded.base_name, model, optimizer_kind, split.train, split.eval, options_json);
  nlohmann::json run_config = options_json;
  run_config["resolved"] = {{"model", identity["model"]},           {"device", on_gpu ? "cuda" : "cpu"},
                            {"optimizer", optimizer_kind},          {"train_examples", split.train.size()},
                            {"eval_examples", split.eval.size()},   {"train_data", identity["train_data"]},
                            {"eval_data", identity["eval_data"]},   {"total_steps", total_steps},
                            {"trainable_parameters", trainable}};
  if (!general.empty()) run_config["resolved"]["general_eval_data"] = dataset_fingerprint(general);
  engine::io::write_file_atomic((staged.dir() / "run_config.json").string(), run_config.dump(2) + "\n");
  RunMetrics metrics(staged, o.output);
  // Progress on the console (tools/train/progress.h): a live line on a terminal, else plain lines.
  Progress console(log, choose_progress_mode(log, false), o.log_every);
  const engine::Device device = on_gpu ? engine::Device::cuda() : engine::Device::cpu();
  RunSummary summary;
  auto write_eval = [&](const char* when, int64_t step, const EvalResult& r, const char* split_name = "held-out") {
    console.print(eval_line(when, r, split_name));
    if (std::string(split_name) == "held-out") note_eval(summary.report, when, step, r.loss, r.accuracy);
    write_eval_event(metrics, when, step, r, split_name);
  };

  TrainProgress progress;
  if (!resume_dir.empty()) {
    progress = resume_from(resume_dir, identity, model, *optimizer, train_units, total_steps, metrics, log);
    summary.resumed_from = progress.step;
  } else {
    if (o.packing)
      metrics.write({{"event", "packing"}, {"examples", split.train.size()}, {"sequences", packed_rows.size()},
                     {"max_seq_len", o.max_seq_len}, {"efficiency", packing_efficiency}});
    if (!split.eval.empty()) {
      progress.before = evaluate(model, split.eval, o.batch_size, mechanisms.tile_tokens);
      write_eval("before training", 0, progress.before);
    }
    if (!general.empty()) {
      progress.general_before = evaluate(model, general, o.batch_size, mechanisms.tile_tokens);
      write_eval("before training", 0, progress.general_before, "general");
    }
  }
  summary.before = progress.before;
  summary.general_before = progress.general_before;
  summary.nonfinite_steps = progress.nonfinite_steps;

  // The data order, the clock and the checkpoints, resumed where progress says
  // (tools/train/run_state.h).
  ResumableRun run(o, progress, train_units, total_steps);
  auto next_indices = [&](int64_t n) { return run.next_indices(n); };
  int64_t& tokens_seen = progress.tokens_seen;
  int64_t& nonfinite_in_a_row = progress.nonfinite_in_a_row;
  LossEma loss_ema;  // the smoothed loss the progress line shows
  // After each step: evaluation every --eval-every steps, then a checkpoint when due.
  auto after_step = [&](int64_t done) {
    progress.step = done;
    progress.nonfinite_steps = summary.nonfinite_steps;
    if (o.eval_every > 0 && done % o.eval_every == 0 && done != total_steps && !split.eval.empty())
      write_eval(("after step " + std::to_string(done)).c_str(), done,
                 evaluate(model, split.eval, o.batch_size, mechanisms.tile_tokens));
    run.save_if_due(done, {identity, run_config, *optimizer, model, lora, loaded.base_name}, metrics,
                    [&](const std::string& line) { console.print(line); });
  };
  for (int64_t step = progress.step; step < total_steps; ++step) {
    engine::NvtxRange step_range("step");
    // This step's own throughput (the plots' per-step tokens/s: evaluations and saves excluded).
    const auto step_begin = std::chrono::steady_clock::now();
    const int64_t tokens_before_step = tokens_seen;
    const float lr = schedule.at(step);
    optimizer->set_lr(lr);
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
      apply_to(mechanisms, fo);
      if (o.packing) {
        fo.positions = layouts[m].positions;
        fo.doc_start = layouts[m].doc_start;
      }
      engine::MemoryOwnerScope activations("activations");  // by phase, layer and op inside
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
      engine::MemoryOwnerScope optimizer_owner("optimizer");
      grad_norm = engine::optim::clip_grad_norm(params, o.max_grad_norm);
      // NaN/Inf guard: one such update would make every LoRA factor NaN for good.
      finite = std::isfinite(step_loss) && std::isfinite(grad_norm);
      if (finite) optimizer->step();
      optimizer->zero_grad();
    }
    nonfinite_in_a_row = finite ? 0 : nonfinite_in_a_row + 1;
    summary.nonfinite_steps += !finite;
    const double seconds = run.seconds();
    const MemorySample memory = sample_memory(device);
    // nlohmann writes a NaN or Inf as null.
    nlohmann::json train_line{{"event", "train"}, {"step", step + 1}, {"loss", step_loss}, {"lr", lr},
                              {"grad_norm", grad_norm}, {"tokens_per_second", tokens_seen / seconds},
                              {"step_tokens_per_second",
                               (tokens_seen - tokens_before_step) /
                                   std::chrono::duration<double>(std::chrono::steady_clock::now() - step_begin).count()},
                              {"skipped", !finite}, {"nonfinite_steps", summary.nonfinite_steps},
                              {"host_memory_bytes", memory.host_rss}};
    if (o.dry_run) train_line["placeholders"] = {"loss", "grad_norm"};  // nothing computed
    add_device_memory(train_line, memory);
    metrics.write(train_line);
    loss_ema.add(step_loss);
    console.step({.step = step + 1, .total_steps = total_steps,
                  .epoch = double(step + 1) * per_step / train_units,
                  .total_epochs = double(total_steps) * per_step / train_units, .loss = step_loss,
                  .loss_ema = loss_ema.value(), .lr = lr, .grad_norm = grad_norm,
                  .tokens_per_second = tokens_seen / seconds, .elapsed_seconds = seconds, .memory = memory});
    if (!finite) {
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "step %5lld/%lld  loss %g  grad-norm %g: not finite, update skipped (%lld in a row)",
                    static_cast<long long>(step + 1), static_cast<long long>(total_steps), step_loss,
                    grad_norm, static_cast<long long>(nonfinite_in_a_row));
      console.print(buf);
      if (nonfinite_in_a_row >= o.max_nonfinite_steps) {
        const std::string reason =
            "training diverged: " + std::to_string(nonfinite_in_a_row) + " steps in a row (to step " +
            std::to_string(step + 1) + ") had a non-finite loss or gradient norm (--max-nonfinite-steps " +
            std::to_string(o.max_nonfinite_steps) + "); no adapter written; lower --lr or --lora-alpha";
        const fs::path good = latest_checkpoint(o.output);
        stop_run(staged, metrics, step + 1, reason, good.empty() ? "" : "; last good checkpoint " + good.string());
      }
      after_step(step + 1);
      continue;
    }
    after_step(step + 1);
  }
  console.finish();
  summary.steps = total_steps;
  if (summary.nonfinite_steps > 0)
    log << summary.nonfinite_steps << " of " << total_steps
        << " steps were skipped for a non-finite loss or gradient norm\n";
  if (!split.eval.empty()) {
    summary.after = evaluate(model, split.eval, o.batch_size, mechanisms.tile_tokens);
    write_eval("after training", total_steps, summary.after);
  }
  if (!general.empty()) {
    summary.general_after = evaluate(model, general, o.batch_size, mechanisms.tile_tokens);
    write_eval("after training", total_steps, summary.general_after, "general");
    const std::string verdict = write_forgetting(metrics, summary.general_before, summary.general_after,
                                                 o.forgetting_threshold, &summary.forgetting);
    log << verdict << "\n";
    summary.report.forgetting = verdict;  // also in the summary table, which --quiet keeps
  }

  if (on_gpu) {  // before the adapter is copied out: the training run's memory
    const nlohmann::json memory = memory_report(o, model.config());
    write_memory_report(o, memory, staged.dir(), log);
    summary.memory_fits = memory["fits"].get<bool>();
  }

  // 3. The new output, complete, replaces the old one whole (a dry run has no adapter:
  // its values were never computed).
  if (!o.dry_run) models::write_peft_adapter(staged.dir().string(), model, lora, loaded.base_name);
  RunReport& report = summary.report;
  report.plots_dir = publish_run(staged, metrics, !o.dry_run, log);
  report.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  report.steps = report.total_steps = total_steps;
  report.tokens = tokens_seen;
  report.peak_memory = sample_memory(device);
  report.adapter_dir = o.output;
  report.metrics_file = metrics.final_path().string();
  report.run_config = (fs::path(o.output) / "run_config.json").string();
  return summary;
}

}  // namespace train
