#include "tools/train/options.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <utility>
#include <string>

#include "engine/error.h"
#include "engine/gpu_spec.h"
#include "engine/optim/lr_schedule.h"
#include "engine/optim/make_optimizer.h"
#include "models/chat_template.h"
#include "models/lora.h"
#include "tools/train/cli.h"
#include "tools/train/memory_plan.h"
#include "tools/train/run_config.h"

namespace train {

std::optional<TrainOptions> parse_options(int argc, char** argv, int* exit_code) {
  TrainOptions o;
  CLI::App app{"train70b: 4-bit QLoRA fine-tuning of Llama models; writes a PEFT adapter.\n"
               "Run with --demo for the built-in tiny model and task.\n"
               "Subcommands (each with --help): train70b quantize, tokenize, merge, eval, plot.",
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
  app.add_option("--max-line-size", o.max_line_size,
                 "Longest dataset line read, BYTES or <n>MiB/<n>GiB (a line is parsed\nand tokenized whole: about 15 bytes of memory per byte)")
      ->capture_default_str();
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
  app.add_option("--optim", o.optim,
                 "adamw (states on the device), paged_adamw_32bit (states in pinned host\nmemory, "
                 "streamed through the device), paged_adamw_8bit (the same, 8-bit blockwise\nmoments "
                 "as bitsandbytes)")
      ->capture_default_str();
  app.add_option("--max-grad-norm", o.max_grad_norm, "Global gradient-norm clip (0: off)")->capture_default_str();
  app.add_option("--checkpoint-layers", o.checkpoint_layers, "Recompute each layer in backward")
      ->capture_default_str();
  app.add_option("--offload-checkpoints", o.offload_checkpoints,
                 "auto, on or off: each layer's saved input waits in pinned host\nmemory (needs --checkpoint-layers; auto: off unless the plan needs it)")
      ->capture_default_str();
  app.add_option("--tile-tokens", o.tile_tokens,
                 "The MLP runs in tiles of N tokens in forward and recompute (0: auto,\nthe largest power of two whose [N, intermediate] bf16 fits 256 MiB)")
      ->capture_default_str();
  app.add_option("--embedding-on-host", o.embedding_on_host,
                 "auto, on or off: the frozen embedding stays in host memory, rows\ngathered there (not for tied embeddings; auto: off)")
      ->capture_default_str();
  app.add_option("--max-gpu-mem", o.max_gpu_mem,
                 "Device memory the run may use: BYTES, <n>GiB or <n>GB (default: the\ndevice's memory minus a 1 GiB CUDA context reserve); a run whose\nmemory plan exceeds it refuses before loading");
  app.add_flag("--auto-fit", o.auto_fit,
               "Pick the micro-batch, checkpoint offload and MLP tiling that fit\n--max-gpu-mem (docs/memory.md)");
  app.add_flag("--dry-run", o.dry_run,
               "Run the CUDA path with nothing executed and device memory virtual (no\nGPU needed); report the memory peak and write OUTPUT/memory.json");
  app.add_option("--gpu", o.gpu,
                 "The GPU a --dry-run stands in for: a100-80gb (default), h100-80gb,\nh200, or a byte count (an A100 with that much memory)");
  app.add_option("--max-nonfinite-steps", o.max_nonfinite_steps,
                 "Stop after this many steps in a row with a NaN/Inf loss or\ngradient norm (each is skipped, not applied)")
      ->capture_default_str();
  app.add_option("--eval-fraction", o.eval_fraction, "Held-out fraction of the dataset")->capture_default_str();
  app.add_option("--eval-every", o.eval_every, "Held-out evaluation every N steps too (0: only before\nand after training)")
      ->capture_default_str();
  app.add_option("--general-eval", o.general_eval, "JSONL of general text the model should not forget,\nevaluated before and after training");
  app.add_option("--forgetting-threshold", o.forgetting_threshold,
                 "Flag forgetting when --general-eval's perplexity rises\nby more than this fraction")
      ->capture_default_str();
  app.add_option("--save-every", o.save_every, "Checkpoint every N steps into OUTPUT/checkpoints\n(0: only on SIGINT/SIGTERM)")
      ->capture_default_str();
  app.add_option("--save-total-limit", o.save_total_limit, "Keep the newest K checkpoints")->capture_default_str();
  app.add_option("--resume", o.resume, "Continue from a checkpoint directory, or latest\n(the newest in OUTPUT/checkpoints)");
  app.add_option("--method", o.method, "sft, or dpo: --dataset holds {prompt, chosen, rejected}\npairs (docs/train70b.md, DPO)")
      ->capture_default_str();
  app.add_option("--beta", o.beta, "DPO: temperature of the implicit reward")->capture_default_str();
  app.add_option("--label-smoothing", o.label_smoothing, "DPO: conservative DPO's share of flipped\npreference labels, in [0, 0.5)")
      ->capture_default_str();
  app.add_option("--loss", o.dpo_loss, "DPO: sigmoid, or ipo (squared loss on averaged log-probs)")
      ->capture_default_str();
  app.add_option("--precompute-ref", o.precompute_ref, "DPO: reference log-probs computed once before\ntraining (false: each step, one more forward)")
      ->capture_default_str();
  app.add_option("--adapter", o.adapter, "DPO: start from this PEFT adapter directory\n(e.g. an SFT run's --output)");
  std::string config_file;
  app.add_option("--config", config_file, "A run_config.json to repeat; flags given here override it");
  app.add_option("--log-every", o.log_every, "Print a progress line every N steps when stdout is not\na terminal (on a terminal: one live line)")->capture_default_str();
  app.add_flag("--quiet", o.quiet, "Print only errors and the final summary table");
  app.add_option("--seed", o.seed, "Seed for initialisation, shuffling and dropout")->capture_default_str();
  if (const std::optional<int> end = parse_command_line(app, argc, argv, "train70b")) {
    *exit_code = *end;
    return std::nullopt;
  }
  // --config: the file's values for every flag not given on the command line.
  std::set<std::string> from_config;
  if (!config_file.empty()) {
    try {
      from_config = apply_run_config(config_file, o, [&](const std::string& key) {
        return app.count("--" + key) > 0;
      });
    } catch (const std::exception& e) {
      std::fprintf(stderr, "train70b: %s\n", e.what());
      *exit_code = 1;
      return std::nullopt;
    }
  }
  auto unset = [&](const char* key) { return app.count(std::string("--") + key) == 0 && !from_config.count(key); };
  if (o.dry_run && unset("device")) o.device = "cuda";  // the dry run is of the CUDA path
  // Two steps: the second runs with the optimizer's states of the first.
  if (o.dry_run && unset("max-steps")) o.max_steps = 2;
  if (o.demo) {  // the demo's own defaults (a from-scratch tiny base learns faster)
    if (unset("lr")) o.lr = 2e-3f;
    if (unset("batch-size")) o.batch_size = 8;
    if (unset("epochs")) o.epochs = 2;
    if (unset("log-every")) o.log_every = 25;
  }
  // A bad value the file gave is reported with the file, since no flag on the line holds it.
  if (!config_file.empty()) {
    try {
      validate(o);
    } catch (const engine::InputError& e) {
      const std::string what = e.what();
      const size_t flag = what.find("--");
      const size_t end = what.find_first_of(" :", flag);
      const std::string key = flag == std::string::npos ? "" : what.substr(flag + 2, end - flag - 2);
      const bool from_file = from_config.count(key) && app.count("--" + key) == 0;
      std::fprintf(stderr, "train70b: %s%s\n", from_file ? ("--config " + config_file + ": ").c_str() : "",
                   what.c_str());
      *exit_code = 1;
      return std::nullopt;
    }
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
  ENGINE_INPUT_CHECK(o.eval_every >= 0, "--eval-every must not be negative, got ", o.eval_every);
  ENGINE_INPUT_CHECK(o.save_every >= 0, "--save-every must not be negative, got ", o.save_every);
  size(o.save_total_limit, "--save-total-limit", 1'000'000);
  ENGINE_INPUT_CHECK(o.forgetting_threshold >= 0 && std::isfinite(o.forgetting_threshold),
                     "--forgetting-threshold must be a finite number >= 0, got ", o.forgetting_threshold);
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
  for (auto [flag, value] : {std::pair{"--offload-checkpoints", &o.offload_checkpoints},
                             std::pair{"--embedding-on-host", &o.embedding_on_host}})
    ENGINE_INPUT_CHECK(*value == "auto" || *value == "on" || *value == "off", flag,
                       " must be auto, on or off, got '", *value, "'");
  ENGINE_INPUT_CHECK(o.offload_checkpoints != "on" || o.checkpoint_layers,
                     "--offload-checkpoints on needs --checkpoint-layers true (only checkpoints are offloaded)");
  ENGINE_INPUT_CHECK(o.tile_tokens >= 0 && o.tile_tokens <= kMaxSeqLen, "--tile-tokens must be in [0, ",
                     kMaxSeqLen, "] (0: auto), got ", o.tile_tokens);
  // These parsers see the value, not the flag it came from: the message adds it.
  auto with_flag = [](const char* flag, auto&& parse) {
    try {
      parse();
    } catch (const engine::InputError& e) {
      throw engine::InputError(std::string(flag) + ": " + e.what());
    }
  };
  with_flag("--schedule", [&] { engine::optim::parse_schedule_kind(o.schedule); });
  with_flag("--optim", [&] { engine::optim::check_optimizer_kind(o.optim); });
  with_flag("--lora-targets", [&] { models::parse_lora_targets(o.lora_targets); });
  ENGINE_INPUT_CHECK(o.method == "sft" || o.method == "dpo", "--method must be sft or dpo, got '",
                     o.method, "'");
  ENGINE_INPUT_CHECK(o.beta > 0 && std::isfinite(o.beta), "--beta must be a finite positive number, got ",
                     o.beta);
  ENGINE_INPUT_CHECK(o.label_smoothing >= 0 && o.label_smoothing < 0.5f,
                     "--label-smoothing must be in [0, 0.5), got ", o.label_smoothing);
  ENGINE_INPUT_CHECK(o.dpo_loss == "sigmoid" || o.dpo_loss == "ipo",
                     "--loss must be sigmoid or ipo, got '", o.dpo_loss, "'");
  ENGINE_INPUT_CHECK(o.dpo_loss == "sigmoid" || o.label_smoothing == 0,
                     "--label-smoothing applies to --loss sigmoid only");
  ENGINE_INPUT_CHECK(o.method == "dpo" || o.adapter.empty(), "--adapter needs --method dpo");
  ENGINE_INPUT_CHECK(!o.demo || o.dataset.empty(), "--demo trains on its own generated task: drop --dataset ",
                     o.dataset, " (or --demo)");
  if (!o.max_gpu_mem.empty()) parse_memory_size(o.max_gpu_mem, "--max-gpu-mem");
  const int64_t line_bytes = parse_memory_size(o.max_line_size, "--max-line-size");
  ENGINE_INPUT_CHECK(line_bytes > 0 && line_bytes <= (int64_t{4} << 30), "--max-line-size must be between 1 byte and ",
                     "4GiB, got ", o.max_line_size);
  ENGINE_INPUT_CHECK(o.demo || o.dry_run || !o.dataset.empty(), "--dataset is required (or --demo)");
  ENGINE_INPUT_CHECK(!o.output.empty(), "--output must not be empty");
  ENGINE_INPUT_CHECK(o.gpu.empty() || o.dry_run,
                     "--gpu applies to --dry-run only (a run uses the GPU it finds)");
  ENGINE_INPUT_CHECK(!o.dry_run || o.device == "cuda", "--dry-run runs the CUDA path: drop --device ",
                     o.device);
  if (!o.gpu.empty()) with_flag("--gpu", [&] { engine::parse_gpu_spec(o.gpu); });
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
