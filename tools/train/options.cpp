#include "tools/train/options.h"

#include <CLI/CLI.hpp>
#include <cstdio>

#include "engine/error.h"
#include "engine/optim/lr_schedule.h"
#include "models/lora.h"

namespace train {

std::optional<TrainOptions> parse_options(int argc, char** argv, int* exit_code) {
  TrainOptions o;
  CLI::App app{"train70b: 4-bit QLoRA fine-tuning of Llama models; writes a PEFT adapter.\n"
               "Run with --demo for the built-in tiny model and task.",
               "train70b"};
  app.get_formatter()->column_width(34);
  app.add_flag("--demo", o.demo, "Train the built-in tiny model on a generated task\n(defaults then: lr 2e-3, batch 8, 2 epochs)");
  app.add_option("--model", o.model, "Hugging Face model directory, or a preset: tiny, llama3-8b, llama3-70b")
      ->capture_default_str();
  app.add_option("--dataset", o.dataset, "JSONL dataset: text, prompt+completion, input_ids(+labels) or messages");
  app.add_option("--output", o.output, "Directory for the adapter and metrics.jsonl")->capture_default_str();
  app.add_option("--lora-r", o.lora_r, "LoRA rank")->capture_default_str();
  app.add_option("--lora-alpha", o.lora_alpha, "LoRA alpha (scaling = alpha / r)")->capture_default_str();
  app.add_option("--lora-dropout", o.lora_dropout, "Dropout on the input of lora_A")->capture_default_str();
  app.add_option("--lora-targets", o.lora_targets, "all-linear or a list such as q_proj,v_proj")
      ->capture_default_str();
  app.add_flag("--rslora", o.rslora, "rsLoRA scaling alpha / sqrt(r)");
  app.add_option("--base-format", o.base_format, "Frozen base weights: nf4 or f32")->capture_default_str();
  app.add_option("--device", o.device, "cpu, cuda, or auto (the GPU when usable);\nthe CUDA path has not yet run on a GPU")->capture_default_str();
  app.add_option("--lr", o.lr, "Peak learning rate")->capture_default_str();
  app.add_option("--epochs", o.epochs, "Passes over the training split")->capture_default_str();
  app.add_option("--max-steps", o.max_steps, "Stop after this many optimizer steps (0: by epochs)")
      ->capture_default_str();
  app.add_option("--batch-size", o.batch_size, "Sequences per micro-batch")->capture_default_str();
  app.add_option("--grad-accum", o.grad_accum, "Micro-batches per optimizer step")->capture_default_str();
  app.add_option("--max-seq-len", o.max_seq_len, "Longer examples are truncated")->capture_default_str();
  app.add_option("--schedule", o.schedule, "constant, linear or cosine (after warmup)")->capture_default_str();
  app.add_option("--warmup-ratio", o.warmup_ratio, "Fraction of steps with linear warmup")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  app.add_option("--max-grad-norm", o.max_grad_norm, "Global gradient-norm clip (0: off)")->capture_default_str();
  app.add_option("--checkpoint-layers", o.checkpoint_layers, "Recompute each layer in backward")
      ->capture_default_str();
  app.add_option("--eval-fraction", o.eval_fraction, "Held-out fraction of the dataset")->capture_default_str();
  app.add_option("--log-every", o.log_every, "Print progress every N steps")->capture_default_str();
  app.add_option("--seed", o.seed, "Seed for initialisation, shuffling and dropout")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::printf("%s", app.help().c_str());
    *exit_code = 0;
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "train70b: %s (see --help)\n", e.what());
    *exit_code = 2;
    return std::nullopt;
  }
  if (o.demo) {  // the demo's own defaults (a from-scratch tiny base learns faster)
    if (app.count("--lr") == 0) o.lr = 2e-3f;
    if (app.count("--batch-size") == 0) o.batch_size = 8;
    if (app.count("--epochs") == 0) o.epochs = 2;
    if (app.count("--log-every") == 0) o.log_every = 25;
  }
  return o;
}

void validate(const TrainOptions& o) {
  auto positive = [](int64_t v, const char* flag) { ENGINE_CHECK(v > 0, flag, " must be positive, got ", v); };
  positive(o.lora_r, "--lora-r");
  positive(o.epochs, "--epochs");
  positive(o.batch_size, "--batch-size");
  positive(o.grad_accum, "--grad-accum");
  positive(o.max_seq_len, "--max-seq-len");
  positive(o.log_every, "--log-every");
  ENGINE_CHECK(o.max_steps >= 0, "--max-steps must not be negative, got ", o.max_steps);
  ENGINE_CHECK(o.lr > 0 && o.lr < 1, "--lr must be in (0, 1), got ", o.lr);
  ENGINE_CHECK(o.lora_alpha > 0, "--lora-alpha must be positive, got ", o.lora_alpha);
  ENGINE_CHECK(o.lora_dropout >= 0 && o.lora_dropout < 1, "--lora-dropout must be in [0, 1), got ", o.lora_dropout);
  ENGINE_CHECK(o.warmup_ratio >= 0 && o.warmup_ratio < 1, "--warmup-ratio must be in [0, 1), got ", o.warmup_ratio);
  ENGINE_CHECK(o.weight_decay >= 0, "--weight-decay must not be negative, got ", o.weight_decay);
  ENGINE_CHECK(o.max_grad_norm >= 0, "--max-grad-norm must not be negative, got ", o.max_grad_norm);
  ENGINE_CHECK(o.eval_fraction >= 0 && o.eval_fraction < 1, "--eval-fraction must be in [0, 1), got ",
               o.eval_fraction);
  ENGINE_CHECK(o.base_format == "nf4" || o.base_format == "f32", "--base-format must be nf4 or f32, got '",
               o.base_format, "'");
  ENGINE_CHECK(o.device == "auto" || o.device == "cpu" || o.device == "cuda",
               "--device must be auto, cpu or cuda, got '", o.device, "'");
  engine::optim::parse_schedule_kind(o.schedule);
  models::parse_lora_targets(o.lora_targets);
  ENGINE_CHECK(o.demo || !o.dataset.empty(), "--dataset is required (or --demo)");
  ENGINE_CHECK(!o.output.empty(), "--output must not be empty");
}

}  // namespace train
