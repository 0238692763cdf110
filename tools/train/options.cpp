#include "tools/train/options.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>

#include "engine/error.h"
#include "engine/optim/lr_schedule.h"
#include "models/chat_template.h"
#include "models/lora.h"
#include "tools/train/cli.h"

namespace train {

std::optional<TrainOptions> parse_options(int argc, char** argv, int* exit_code) {
  TrainOptions o;
  CLI::App app{"train70b: 4-bit QLoRA fine-tuning of Llama models; writes a PEFT adapter.\n"
               "Run with --demo for the built-in tiny model and task.\n"
               "Subcommands: train70b quantize --help, train70b tokenize --help.",
               "train70b"};
  app.get_formatter()->column_width(34);
  app.add_flag("--demo", o.demo, "Train the built-in tiny model on a generated task\n(defaults then: lr 2e-3, batch 8, 2 epochs)");
  app.add_option("--model", o.model, "Hugging Face model directory, model id in the local HF cache (org/name),\npreset (tiny, llama3-8b, llama3-70b), or synthetic:<preset> (random NF4 on the device)")
      ->capture_default_str();
  app.add_option("--dataset", o.dataset, "JSONL dataset: text, prompt+completion, messages, ShareGPT\nconversations, Alpaca, or input_ids(+labels)");
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
  app.add_option("--max-seq-len", o.max_seq_len, "Longer examples are truncated (or dropped:\n--truncation drop)")->capture_default_str();
  app.add_flag("--packing", o.packing,
               "Pack several examples into each sequence of --max-seq-len tokens\n(positions restart and attention stops at each example)");
  app.add_option("--chat-template", o.chat_template,
                 "llama3, llama3.1 (also 3.3), llama3.2 or llama2; default: the\nmodel's tokenizer_config.json (llama3 for presets)");
  app.add_flag("--train-on-inputs", o.train_on_inputs,
               "Train on prompts and user turns too (default: only\nassistant turns and completions)");
  app.add_option("--truncation", o.truncation, "Examples over --max-seq-len: right (cut) or drop")
      ->capture_default_str();
  app.add_option("--preview", o.preview, "Print the first N examples as text, trained spans\nmarked, before training")
      ->capture_default_str();
  app.add_option("--schedule", o.schedule, "constant, linear or cosine (after warmup)")->capture_default_str();
  app.add_option("--warmup-ratio", o.warmup_ratio, "Fraction of steps with linear warmup")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  app.add_option("--max-grad-norm", o.max_grad_norm, "Global gradient-norm clip (0: off)")->capture_default_str();
  app.add_option("--checkpoint-layers", o.checkpoint_layers, "Recompute each layer in backward")
      ->capture_default_str();
  app.add_option("--max-nonfinite-steps", o.max_nonfinite_steps,
                 "Stop after this many steps in a row with a NaN/Inf loss or\ngradient norm (each is skipped, not applied)")
      ->capture_default_str();
  app.add_option("--eval-fraction", o.eval_fraction, "Held-out fraction of the dataset")->capture_default_str();
  app.add_option("--log-every", o.log_every, "Print progress every N steps")->capture_default_str();
  app.add_option("--seed", o.seed, "Seed for initialisation, shuffling and dropout")->capture_default_str();
  if (const std::optional<int> end = parse_command_line(app, argc, argv, "train70b")) {
    *exit_code = *end;
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
  auto size = [](int64_t v, const char* flag, int64_t max) {
    ENGINE_INPUT_CHECK(v > 0, flag, " must be positive, got ", v);
    ENGINE_INPUT_CHECK(v <= max, flag, " ", v, " is above the limit of ", max);
  };
  size(o.lora_r, "--lora-r", kMaxLoraRank);
  size(o.epochs, "--epochs", kMaxEpochs);
  size(o.batch_size, "--batch-size", kMaxBatch);
  size(o.grad_accum, "--grad-accum", kMaxBatch);
  size(o.max_seq_len, "--max-seq-len", kMaxSeqLen);
  size(o.log_every, "--log-every", std::numeric_limits<int64_t>::max());
  size(o.max_nonfinite_steps, "--max-nonfinite-steps", std::numeric_limits<int64_t>::max());
  ENGINE_INPUT_CHECK(o.max_steps >= 0, "--max-steps must not be negative, got ", o.max_steps);
  ENGINE_INPUT_CHECK(o.max_steps <= kMaxSteps, "--max-steps ", o.max_steps,
                     " is above the limit of ", kMaxSteps);
  // Written so that NaN fails every check (each comparison with NaN is false).
  ENGINE_INPUT_CHECK(o.lr > 0 && o.lr < 1, "--lr must be in (0, 1), got ", o.lr);
  ENGINE_INPUT_CHECK(o.lora_alpha > 0 && std::isfinite(o.lora_alpha),
                     "--lora-alpha must be a finite positive number, got ", o.lora_alpha);
  ENGINE_INPUT_CHECK(o.lora_dropout >= 0 && o.lora_dropout < 1,
                     "--lora-dropout must be in [0, 1), got ", o.lora_dropout);
  ENGINE_INPUT_CHECK(o.warmup_ratio >= 0 && o.warmup_ratio < 1,
                     "--warmup-ratio must be in [0, 1), got ", o.warmup_ratio);
  ENGINE_INPUT_CHECK(o.weight_decay >= 0 && std::isfinite(o.weight_decay),
                     "--weight-decay must be a finite number >= 0, got ", o.weight_decay);
  // AdamW multiplies every weight by 1 - lr * weight_decay each step.
  ENGINE_INPUT_CHECK(double(o.lr) * o.weight_decay < 1, "--weight-decay ", o.weight_decay,
                     " with --lr ", o.lr, " would scale the weights by 1 - lr x weight-decay = ",
                     1 - double(o.lr) * o.weight_decay, " each step; lr x weight-decay must be below 1");
  ENGINE_INPUT_CHECK(o.max_grad_norm >= 0 && std::isfinite(o.max_grad_norm),
                     "--max-grad-norm must be a finite number >= 0 (0: off), got ",
                     o.max_grad_norm);
  ENGINE_INPUT_CHECK(o.eval_fraction >= 0 && o.eval_fraction < 1,
                     "--eval-fraction must be in [0, 1), got ", o.eval_fraction);
  ENGINE_INPUT_CHECK(o.base_format == "nf4" || o.base_format == "f32",
                     "--base-format must be nf4 or f32, got '", o.base_format, "'");
  ENGINE_INPUT_CHECK(o.truncation == "right" || o.truncation == "drop",
                     "--truncation must be right or drop, got '", o.truncation, "'");
  ENGINE_INPUT_CHECK(o.chat_template.empty() || models::parse_chat_template_name(o.chat_template),
                     "--chat-template '", o.chat_template, "' is not known; ", models::kChooseChatTemplate);
  ENGINE_INPUT_CHECK(o.preview >= 0, "--preview must not be negative, got ", o.preview);
  ENGINE_INPUT_CHECK(o.device == "auto" || o.device == "cpu" || o.device == "cuda",
                     "--device must be auto, cpu or cuda, got '", o.device, "'");
  // These parsers see the value, not the flag it came from: the message adds it.
  auto with_flag = [](const char* flag, auto&& parse) {
    try {
      parse();
    } catch (const engine::InputError& e) {
      throw engine::InputError(std::string(flag) + ": " + e.what());
    }
  };
  with_flag("--schedule", [&] { engine::optim::parse_schedule_kind(o.schedule); });
  with_flag("--lora-targets", [&] { models::parse_lora_targets(o.lora_targets); });
  ENGINE_INPUT_CHECK(o.demo || !o.dataset.empty(), "--dataset is required (or --demo)");
  ENGINE_INPUT_CHECK(!o.output.empty(), "--output must not be empty");
}

void check_output_writable(const std::string& output) {
  namespace fs = std::filesystem;
  // The deepest part of the path that exists must be a directory we can create files in;
  // the rest is created later. A probe file says more than access(2), which root passes.
  std::error_code ec;
  fs::path existing = fs::absolute(output, ec);
  ENGINE_INPUT_CHECK(!ec, "--output ", output, ": ", ec.message());
  while (!fs::exists(fs::symlink_status(existing, ec)) && existing.has_relative_path())
    existing = existing.parent_path();
  ENGINE_INPUT_CHECK(fs::is_directory(existing, ec), "--output ", output, ": ",
                     existing.string(), " is not a directory");
  const fs::path probe = existing / (".train70b-write-test." + std::to_string(::getpid()));
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ENGINE_INPUT_CHECK(fd >= 0, "--output ", output, ": cannot create files in ", existing.string(),
                     ": ", std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

}  // namespace train
