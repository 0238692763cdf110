#include "tools/train/dpo_trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>

#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/io/atomic_file.h"
#include "engine/nvtx.h"
#include "engine/optim/adamw.h"
#include "engine/optim/lr_schedule.h"
#include "engine/optim/make_optimizer.h"
#include "engine/rng.h"
#include "models/adapter.h"
#include "models/dpo_loss.h"
#include "models/dpo_step.h"
#include "models/lora_scope.h"
#include "models/preference_data.h"
#include "tools/train/checkpoint.h"
#include "tools/train/demo_task.h"
#include "tools/train/dpo_demo.h"
#include "tools/train/dry_run.h"
#include "tools/train/evaluate.h"
#include "tools/train/memory_mechanisms.h"
#include "tools/train/memory_plan.h"
#include "tools/train/memory_report.h"
#include "tools/train/model_setup.h"
#include "tools/train/progress.h"
#include "tools/train/run_config.h"
#include "tools/train/run_metrics.h"
#include "tools/train/run_output.h"
#include "tools/train/run_state.h"

namespace train {

namespace fs = std::filesystem;
using engine::Tensor;
using models::PreferencePair;

namespace {

// Policy or reference log-probs of a set of pairs: [i] chosen, [i + n] rejected.
struct PairLogprobs {
  std::vector<double> chosen, rejected;
};

// round(fraction * n) pairs held out (at least 1 when fraction > 0, at least 1 left),
// chosen by a permutation drawn from `seed`; both halves keep the file order.
void split_pairs(std::vector<PreferencePair> all, double fraction, uint64_t seed,
                 std::vector<PreferencePair>& train, std::vector<PreferencePair>& eval) {
  const int64_t n = static_cast<int64_t>(all.size());
  int64_t held = fraction > 0 ? std::max<int64_t>(1, std::llround(fraction * n)) : 0;
  held = std::min(held, n - 1);
  engine::Generator gen(seed);
  const std::vector<float> keys = engine::uniform({n}, 0, 1, gen).to_floats();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
  std::vector<bool> is_eval(static_cast<size_t>(n), false);
  for (int64_t i = 0; i < held; ++i) is_eval[order[i]] = true;
  for (int64_t i = 0; i < n; ++i) (is_eval[i] ? eval : train).push_back(std::move(all[i]));
}

// 2B rows: the chosen side of each pair, then the rejected side, padded with id 0.
models::Batch pair_batch(const std::vector<PreferencePair>& pairs, const std::vector<int64_t>& idx) {
  std::vector<models::Example> rows;
  for (int64_t i : idx) rows.push_back(pairs[i].chosen);
  for (int64_t i : idx) rows.push_back(pairs[i].rejected);
  std::vector<int64_t> all(rows.size());
  std::iota(all.begin(), all.end(), 0);
  return models::make_batch(rows, all, 0);
}

// Log-probs of a batch's rows without gradients; adapters off for the reference. Like
// evaluate(): no checkpoints, no dropout, the MLP in the run's token tiles.
std::vector<float> logprobs_no_grad(models::LlamaModel& model, const models::Batch& b, bool average,
                                    bool reference, int64_t tile_tokens) {
  engine::NoGradGuard no_grad;
  std::optional<models::LoraDisabledScope> off;
  if (reference) off.emplace(model);
  models::ForwardOptions options;
  options.tile_tokens = tile_tokens;
  return model.sequence_logprobs(b.ids, b.labels, options, average).to_floats();
}

PairLogprobs all_logprobs(models::LlamaModel& model, const std::vector<PreferencePair>& pairs,
                          int64_t batch_size, bool average, bool reference, int64_t tile_tokens) {
  engine::NvtxRange range(reference ? "reference log-probs" : "policy log-probs");
  engine::MemoryOwnerScope owner("evaluation");
  PairLogprobs out;
  for (size_t first = 0; first < pairs.size(); first += batch_size) {
    std::vector<int64_t> idx;
    for (size_t i = first; i < std::min(pairs.size(), first + batch_size); ++i) idx.push_back(i);
    const std::vector<float> lp =
        logprobs_no_grad(model, pair_batch(pairs, idx), average, reference, tile_tokens);
    const size_t b = idx.size();
    for (size_t j = 0; j < b; ++j) {
      out.chosen.push_back(lp[j]);
      out.rejected.push_back(lp[b + j]);
    }
  }
  return out;
}

// The pairs' chosen and rejected sides, in order: what the checkpoint identity fingerprints.
std::vector<models::Example> pair_sides(const std::vector<PreferencePair>& pairs) {
  std::vector<models::Example> sides;
  for (const PreferencePair& p : pairs) {
    sides.push_back(p.chosen);
    sides.push_back(p.rejected);
  }
  return sides;
}

int64_t response_tokens(const std::vector<PreferencePair>& pairs) {
  int64_t n = 0;
  for (const PreferencePair& p : pairs)
    for (const models::Example* e : {&p.chosen, &p.rejected})
      for (size_t t = 1; t < e->labels.size(); ++t) n += e->labels[t] != models::kIgnoreLabel;
  return n;
}

models::DpoMetrics evaluate_pairs(models::LlamaModel& model, const std::vector<PreferencePair>& pairs,
                                  const PairLogprobs& ref, const models::DpoConfig& cfg,
                                  int64_t batch_size, int64_t tile_tokens) {
  engine::NvtxRange range("evaluate");
  const PairLogprobs pol = all_logprobs(model, pairs, batch_size, cfg.average_logprobs(), false, tile_tokens);
  models::DpoMetrics m;
  for (size_t i = 0; i < pairs.size(); ++i)
    m.add(models::dpo_pair(cfg, pol.chosen[i], pol.rejected[i], ref.chosen[i], ref.rejected[i]),
          pol.chosen[i], pol.rejected[i]);
  return m.mean();
}

// A dry run without --dataset: `count` pairs whose both sides are --max-seq-len tokens
// (a one-token prompt, the rest response), so every batch is full length.
std::vector<PreferencePair> dry_run_pairs(const TrainOptions& o, const models::LlamaConfig& c, int64_t count) {
  const std::vector<models::Example> rows = dry_run_examples(o, c, 2 * count);
  std::vector<PreferencePair> pairs(static_cast<size_t>(count));
  for (size_t i = 0; i < pairs.size(); ++i) {
    pairs[i].chosen = rows[2 * i];
    pairs[i].rejected = rows[2 * i + 1];
    for (models::Example* e : {&pairs[i].chosen, &pairs[i].rejected}) e->labels[0] = models::kIgnoreLabel;
  }
  return pairs;
}

nlohmann::json metrics_json(const models::DpoMetrics& m) {
  return {{"loss", m.loss},
          {"rewards/chosen", m.reward_chosen},
          {"rewards/rejected", m.reward_rejected},
          {"rewards/accuracies", m.accuracy},
          {"rewards/margins", m.margin},
          {"logps/chosen", m.logp_chosen},
          {"logps/rejected", m.logp_rejected}};
}

std::string metrics_text(const models::DpoMetrics& m) {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "loss %.4f  rewards/accuracies %.3f  rewards/margins %.4f  rewards/chosen %.4f  "
                "rewards/rejected %.4f  logps/chosen %.3f  logps/rejected %.3f",
                m.loss, m.accuracy, m.margin, m.reward_chosen, m.reward_rejected, m.logp_chosen,
                m.logp_rejected);
  return buf;
}

}  // namespace

RunSummary run_dpo_training(const TrainOptions& given, std::ostream& log) {
  validate(given);
  ENGINE_INPUT_CHECK(!given.packing, "--packing is not available with --method dpo (one pair side per row)");
  ENGINE_INPUT_CHECK(!given.train_on_inputs, "--train-on-inputs does not apply to --method dpo: only response ",
                     "tokens count in a pair's log-probability");
  // The memory plan of DPO (two rows per pair, the reference pass) before anything loads.
  const TrainOptions o = apply_memory_plan(given, log);  // tools/train/memory_plan.h
  validate(o);
  // 1. Everything the user gave is read and checked before any output exists.
  const fs::path resume_dir = prepare_output(o, log);  // checkpoints/checkpoint-N, or empty
  const ModelSource source = resolve_model(o);
  std::optional<models::PeftAdapter> adapter;
  if (!o.adapter.empty()) {
    ENGINE_INPUT_CHECK(fs::is_directory(o.adapter), "--adapter ", o.adapter, ": no such directory");
    adapter = models::read_peft_adapter(o.adapter);
  }
  TrainOptions rank = o;
  if (adapter) rank.lora_r = adapter->lora.r;
  check_lora_rank(rank, source.config);
  const std::unique_ptr<models::Tokenizer> tokenizer = make_tokenizer(source);
  models::DpoConfig cfg{models::parse_dpo_loss(o.dpo_loss), o.beta, o.label_smoothing};
  std::vector<PreferencePair> pairs;
  models::PreferenceStats stats;
  std::vector<models::Example> general;  // --general-eval: the forgetting check, as SFT's
  if (!o.general_eval.empty())
    general = models::load_jsonl_dataset(o.general_eval, *tokenizer, dataset_options(o, source));
  std::vector<PreferencePair> train_pairs, eval_pairs;
  if (o.demo) {  // held out: whole progressions (tools/train/demo_task.h)
    const int64_t held = demo_held_out_count(600, o.eval_fraction);
    train_pairs = make_demo_pairs(*tokenizer, 600 - held, o.seed, false);
    eval_pairs = make_demo_pairs(*tokenizer, held, o.seed + 1, true);
  } else if (o.dry_run && o.dataset.empty()) {  // full-length pairs (tools/train/dry_run.h)
    pairs = dry_run_pairs(o, source.config, o.batch_size * o.grad_accum + o.batch_size);
    log << "dry run: " << pairs.size() << " generated pairs of 2 x " << o.max_seq_len << " tokens\n";
  } else {
    pairs = models::load_preference_dataset(o.dataset, *tokenizer, dataset_options(o, source), &stats);
    log << "preference data " << o.dataset << ": " << stats.records << " records, " << stats.pairs
        << " pairs (" << stats.conversational << " conversational), " << stats.truncated
        << " cut to --max-seq-len " << o.max_seq_len << ", " << stats.dropped << " dropped (--truncation drop), "
        << stats.skipped
        << " skipped without a response token\n";
    ENGINE_INPUT_CHECK(o.eval_fraction == 0 || pairs.size() >= 2, o.dataset, ": holding out --eval-fraction ",
                       o.eval_fraction, " needs at least 2 pairs, the file has ", pairs.size());
  }
  if (o.dry_run && o.dataset.empty() && !o.demo) {  // one full held-out batch, as the planner plans it
    const size_t held = o.eval_fraction > 0 ? static_cast<size_t>(o.batch_size) : 0;
    eval_pairs.assign(pairs.begin(), pairs.begin() + held);
    train_pairs.assign(pairs.begin() + held, pairs.end());
  } else if (!o.demo) {
    split_pairs(std::move(pairs), o.eval_fraction, o.seed, train_pairs, eval_pairs);
  }
  if (eval_pairs.empty()) log << "no held-out evaluation: --eval-fraction 0\n";
  const int64_t n_train = static_cast<int64_t>(train_pairs.size());
  ENGINE_INPUT_CHECK(o.batch_size <= n_train, "--batch-size ", o.batch_size, " is more than the ",
                     n_train, " training pairs");
  const int64_t per_step = o.batch_size * o.grad_accum;
  ENGINE_INPUT_CHECK(per_step <= n_train, "--batch-size x --grad-accum = ", per_step,
                     " pairs per step is more than the ", n_train, " training pairs");
  const int64_t total_steps = o.max_steps > 0 ? o.max_steps : (n_train + per_step - 1) / per_step * o.epochs;
  ENGINE_INPUT_CHECK(total_steps <= kMaxSteps, "--epochs ", o.epochs, " gives ", total_steps,
                     " steps, above the limit of ", kMaxSteps, " (use --max-steps)");

  const bool on_gpu = train_on_gpu(o);
  if (on_gpu) start_memory_report();  // owners of device memory from here on
  if (o.dry_run)
    log << "dry run on " << dry_run_gpu(o).name << ": nothing is executed and device memory is "
        << "virtual; log-probs, losses, rewards and gradient norms below are placeholders (0)\n";
  const engine::Device device = on_gpu ? engine::Device::cuda() : engine::Device::cpu();
  TrainableModel trainable_model = setup_trainable_model(o, source, on_gpu, adapter, log);
  const Loaded& loaded = trainable_model.loaded;
  models::LlamaModel& model = *loaded.model;
  const models::LoraConfig& lora = trainable_model.lora;
  const MemoryMechanisms& mechanisms = trainable_model.mechanisms;
  std::vector<Tensor>& params = trainable_model.params;
  engine::optim::LrSchedule schedule{engine::optim::parse_schedule_kind(o.schedule), o.lr,
                                     static_cast<int64_t>(std::ceil(o.warmup_ratio * total_steps)),
                                     total_steps};
  const std::unique_ptr<engine::optim::Optimizer> optimizer =
      engine::optim::make_optimizer(o.optim, params, {.lr = o.lr, .weight_decay = o.weight_decay});
  log << "DPO (" << o.dpo_loss << ", beta " << o.beta << ", label smoothing " << o.label_smoothing
      << ") on " << loaded.base_name << ": LoRA r " << lora.r << " alpha " << lora.alpha
      << (adapter ? " from " + o.adapter : std::string()) << "; reference = the adapter-off model, "
      << (o.precompute_ref ? "precomputed" : "each step") << "; " << optimizer->kind() << "; on "
      << (on_gpu ? "cuda" : "cpu") << "\n"
      << "data: " << n_train << " training / " << eval_pairs.size() << " held-out pairs; " << total_steps
      << " steps of " << per_step << " pairs (" << 2 * per_step << " sequences)\n";

  // 2. Reference log-probs: the held-out pairs' always once; the training pairs' too
  // with --precompute-ref.
  const bool average = cfg.average_logprobs();
  const int64_t tile = mechanisms.tile_tokens;
  const PairLogprobs eval_ref = all_logprobs(model, eval_pairs, o.batch_size, average, true, tile);
  PairLogprobs train_ref;
  if (o.precompute_ref) train_ref = all_logprobs(model, train_pairs, o.batch_size, average, true, tile);

  // 3. Output: staged beside --output and swapped in whole at the end (tools/train/run_output.h).
  StagedOutput staged(o.output);
  const nlohmann::json run_config = options_to_json(o);
  // What a checkpoint must match to be resumed: the pairs' sides stand in as examples.
  const nlohmann::json identity = run_identity(loaded.base_name, model, optimizer->kind(), pair_sides(train_pairs),
                                               pair_sides(eval_pairs), run_config);
  engine::io::write_file_atomic((staged.dir() / "run_config.json").string(), run_config.dump(2) + "\n");
  RunMetrics metrics(staged, o.output);
  const int64_t eval_tokens = response_tokens(eval_pairs);
  RunSummary summary;
  auto write_eval = [&](const char* when, int64_t step) {
    if (eval_pairs.empty()) return EvalResult{};
    const models::DpoMetrics m = evaluate_pairs(model, eval_pairs, eval_ref, cfg, o.batch_size, tile);
    log << "held-out " << when << ": " << metrics_text(m) << "  (" << m.pairs << " pairs)\n" << std::flush;
    nlohmann::json j = metrics_json(m);
    j["event"] = "eval";
    j["split"] = "held-out";
    j["when"] = when;
    j["step"] = step;
    j["pairs"] = m.pairs;
    if (o.dry_run) j["placeholders"] = true;
    metrics.write(j);
    return EvalResult{m.loss, m.accuracy, eval_tokens};
  };
  TrainProgress progress;  // where the run stands: saved in checkpoints (tools/train/checkpoint.h)
  if (!resume_dir.empty()) {
    progress = resume_from(resume_dir, identity, model, *optimizer, n_train, total_steps, metrics, log);
  } else {
    progress.before = write_eval("before training", 0);
    if (!general.empty()) {
      progress.general_before = evaluate(model, general, o.batch_size, tile);
      log << eval_line("before training", progress.general_before, "general") << "\n";
      write_eval_event(metrics, "before training", 0, progress.general_before, "general");
    }
  }
  summary.before = progress.before;
  summary.general_before = progress.general_before;
  summary.nonfinite_steps = progress.nonfinite_steps;

  // The data order, the clock and the checkpoints, resumed where progress says
  // (tools/train/run_state.h).
  ResumableRun run(o, progress, n_train, total_steps);
  int64_t& nonfinite_in_a_row = progress.nonfinite_in_a_row;
  int64_t& tokens_seen = progress.tokens_seen;
  // After each step: held-out evaluation every --eval-every steps, then a checkpoint when due.
  auto after_step = [&](int64_t done) {
    progress.step = done;
    progress.nonfinite_steps = summary.nonfinite_steps;
    if (o.eval_every > 0 && done % o.eval_every == 0 && done != total_steps)
      write_eval(("after step " + std::to_string(done)).c_str(), done);
    run.save_if_due(done, {identity, run_config, *optimizer, model, lora, loaded.base_name}, metrics,
                    [&](const std::string& line) { log << line << "\n" << std::flush; });
  };
  for (int64_t step = progress.step; step < total_steps; ++step) {
    engine::NvtxRange step_range("step");
    const float lr = schedule.at(step);
    optimizer->set_lr(lr);
    models::DpoMetrics step_metrics;
    for (int64_t m = 0; m < o.grad_accum; ++m) {
      const std::vector<int64_t> idx = run.next_indices(o.batch_size);
      const int64_t b = static_cast<int64_t>(idx.size());
      models::Batch batch;
      {
        engine::NvtxRange range("data");
        batch = pair_batch(train_pairs, idx);
      }
      std::vector<double> ref(static_cast<size_t>(2 * b));
      if (o.precompute_ref) {
        for (int64_t j = 0; j < b; ++j) {
          ref[j] = train_ref.chosen[idx[j]];
          ref[b + j] = train_ref.rejected[idx[j]];
        }
      } else {  // before the policy pass: its backward must not run inside the scope
        engine::NvtxRange range("reference");
        engine::MemoryOwnerScope owner("reference");
        const std::vector<float> r = logprobs_no_grad(model, batch, average, true, tile);
        std::copy(r.begin(), r.end(), ref.begin());
      }
      models::ForwardOptions fo{o.checkpoint_layers, true, o.seed * 7919 + step * 131 + m};
      apply_to(mechanisms, fo);
      engine::MemoryOwnerScope activations("activations");
      // The step's loss is the mean over its pairs: each pair weighs 1 / per_step.
      const models::DpoMetrics sums =
          models::dpo_backward(model, batch, ref, cfg, fo, 1.0 / static_cast<double>(per_step));
      step_metrics.merge(sums);
      tokens_seen += batch.ids.numel();
    }
    const models::DpoMetrics sm = step_metrics.mean();
    float grad_norm;
    bool finite;
    {
      engine::NvtxRange range("optimizer");
      engine::MemoryOwnerScope optimizer_owner("optimizer");
      grad_norm = engine::optim::clip_grad_norm(params, o.max_grad_norm);
      finite = std::isfinite(sm.loss) && std::isfinite(grad_norm);  // NaN/Inf guard, as SFT
      if (finite) optimizer->step();
      optimizer->zero_grad();
    }
    nonfinite_in_a_row = finite ? 0 : nonfinite_in_a_row + 1;
    summary.nonfinite_steps += !finite;
    const double seconds = run.seconds();
    const MemorySample memory = sample_memory(device);
    nlohmann::json j = metrics_json(sm);
    j["event"] = "train";
    j["step"] = step + 1;
    j["lr"] = lr;
    j["grad_norm"] = grad_norm;
    j["pairs_per_second"] = double(per_step) * (step + 1) / seconds;
    j["tokens_per_second"] = tokens_seen / seconds;
    j["host_memory_bytes"] = memory.host_rss;
    add_device_memory(j, memory);
    j["skipped"] = !finite;
    if (o.dry_run) j["placeholders"] = {"loss", "grad_norm", "rewards", "logps"};
    metrics.write(j);
    if (!finite && nonfinite_in_a_row >= o.max_nonfinite_steps) {
      const std::string reason = "training diverged: " + std::to_string(nonfinite_in_a_row) +
                                 " steps in a row had a non-finite DPO loss or gradient norm; no adapter "
                                 "written; lower --lr or --beta";
      const fs::path good = latest_checkpoint(o.output);
      stop_run(staged, metrics, step + 1, reason, good.empty() ? "" : "; last good checkpoint " + good.string());
    }
    if (!finite || (step + 1) % o.log_every == 0 || step == 0 || step + 1 == total_steps) {
      char head[80];
      std::snprintf(head, sizeof head, "step %5lld/%lld  ", static_cast<long long>(step + 1),
                    static_cast<long long>(total_steps));
      char tail[120];
      std::snprintf(tail, sizeof tail, "  lr %.2e  grad-norm %.3f%s", lr, grad_norm,
                    finite ? "" : "  not finite, update skipped");
      log << head << metrics_text(sm) << tail << "\n" << std::flush;
    }
    after_step(step + 1);
  }
  summary.steps = total_steps;
  summary.after = write_eval("after training", total_steps);
  if (!general.empty()) {
    summary.general_after = evaluate(model, general, o.batch_size, tile);
    log << eval_line("after training", summary.general_after, "general") << "\n";
    write_eval_event(metrics, "after training", total_steps, summary.general_after, "general");
    log << write_forgetting(metrics, summary.general_before, summary.general_after, o.forgetting_threshold,
                            &summary.forgetting)
        << "\n";
  }
  if (on_gpu) {  // the training run's memory, planned and measured (memory.json)
    const nlohmann::json memory = memory_report(o, model.config());
    write_memory_report(o, memory, staged.dir(), log);
    summary.memory_fits = memory["fits"].get<bool>();
  }
  // 4. The new output replaces the old one whole (a dry run has no adapter: its values
  // were never computed).
  if (!o.dry_run) models::write_peft_adapter(staged.dir().string(), model, lora, loaded.base_name);
  publish_run(staged, metrics, !o.dry_run, log);
  return summary;
}

}  // namespace train
