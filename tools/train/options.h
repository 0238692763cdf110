// train70b's command line: every flag with its default, parsed with CLI11.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace train {

struct TrainOptions {
  bool demo = false;              // built-in model and task; ignores --model/--dataset
  std::string model = "tiny";     // HF model directory or preset (tiny, llama3-8b, llama3-70b)
  std::string dataset;            // JSONL: models/dataset.h lists the formats
  std::string output = "train70b-out";
  // LoRA (PEFT conventions).
  int64_t lora_r = 16;
  float lora_alpha = 32.0f;
  float lora_dropout = 0.05f;
  std::string lora_targets = "all-linear";
  bool rslora = false;
  std::string base_format = "nf4";  // nf4 | f32
  // cpu | cuda | auto (CUDA when usable). The default stays cpu until the CUDA step
  // has passed its GPU tests (tests/models/test_llama_step_cuda.cpp) on real hardware.
  std::string device = "cpu";
  // Optimisation.
  float lr = 1e-4f;
  int64_t epochs = 3;
  int64_t max_steps = 0;          // 0: epochs decide
  int64_t batch_size = 4;         // sequences per micro-batch
  int64_t grad_accum = 1;         // micro-batches per optimizer step
  int64_t max_seq_len = 512;
  // Several examples per sequence of max_seq_len tokens, each its own document
  // (models/packing.h); batch_size then counts packed sequences.
  bool packing = false;
  // Data (models/dataset.h): the chat template for messages/ShareGPT/Alpaca records
  // (empty: the model's tokenizer_config.json; llama3 for presets), whether prompts are
  // trained too, what happens to examples over max_seq_len, how many to show first.
  std::string chat_template;
  bool train_on_inputs = false;
  std::string truncation = "right";  // right | drop
  int64_t preview = 0;
  std::string max_line_size = "16MiB";  // the longest JSONL line read (models/jsonl_lines.h)
  std::string schedule = "constant";
  float warmup_ratio = 0.03f;
  float weight_decay = 0.0f;
  float max_grad_norm = 0.3f;
  // adamw | paged_adamw_32bit | paged_adamw_8bit (engine/optim/make_optimizer.h)
  std::string optim = "adamw";
  bool checkpoint_layers = true;
  // Memory mechanisms (docs/memory.md, tools/train/memory_mechanisms.h): checkpoints in
  // pinned host memory, the MLP in token tiles (0: auto), the frozen embedding on the host.
  std::string offload_checkpoints = "auto";  // auto | on | off
  int64_t tile_tokens = 0;
  std::string embedding_on_host = "auto";    // auto | on | off
  // Memory (docs/memory.md): the device budget the plan must fit (BYTES, <n>GiB, <n>GB; empty:
  // the device's memory minus the CUDA context reserve), and whether the planner picks the
  // micro-batch, checkpoint offload and tiling itself (tools/train/memory_plan.h).
  std::string max_gpu_mem;
  bool auto_fit = false;
  // --dry-run: the CUDA path on the dry runtime (nothing executed, device memory virtual),
  // as the GPU --gpu names (engine/gpu_spec.h); writes OUTPUT/memory.json (docs/memory.md,
  // "Dry run"). Implies --device cuda; without --dataset, batches of --max-seq-len tokens.
  bool dry_run = false;
  std::string gpu;  // empty: a100-80gb
  // Steps whose loss or gradient norm is NaN/Inf are skipped; this many in a row stop the run.
  int64_t max_nonfinite_steps = 5;
  // Evaluation and logging.
  float eval_fraction = 0.1f;
  int64_t eval_every = 0;            // held-out evaluation every N steps (0: before and after only)
  std::string general_eval;          // JSONL of general text, evaluated before and after (forgetting)
  float forgetting_threshold = 0.1f;  // relative rise of its perplexity that the summary flags
  int64_t log_every = 10;
  bool quiet = false;  // only errors and the final summary table (tools/train/progress.h)
  // Checkpoints (tools/train/checkpoint.h): every N steps and on SIGINT/SIGTERM, the last K
  // kept in OUTPUT/checkpoints/; resume = a checkpoint directory or "latest" (newest there).
  int64_t save_every = 500;
  int64_t save_total_limit = 3;
  std::string resume;
  uint64_t seed = 42;
  // Preference optimisation (tools/train/dpo_trainer.h): sft, or dpo on {prompt, chosen,
  // rejected} pairs with the adapter-off model as the reference.
  std::string method = "sft";
  float beta = 0.1f;               // DPO temperature
  float label_smoothing = 0.0f;    // conservative DPO: assumed share of flipped labels
  std::string dpo_loss = "sigmoid";  // sigmoid | ipo
  bool precompute_ref = true;      // reference log-probs once before training, kept on the host
  std::string adapter;             // start from this PEFT adapter (SFT, then DPO)
};

// Parses argv. Returns nullopt when the program should exit with `exit_code`
// (after --help, or after a one-line error already printed to stderr).
std::optional<TrainOptions> parse_options(int argc, char** argv, int* exit_code);

// Upper bounds of the size flags: far above any real run, low enough that every product of
// them the trainer forms (sequences per step, tokens per batch, steps) fits in int64.
inline constexpr int64_t kMaxLoraRank = 1 << 16;
inline constexpr int64_t kMaxBatch = 1 << 20;       // --batch-size, --grad-accum
inline constexpr int64_t kMaxSeqLen = 1 << 24;      // --max-seq-len
inline constexpr int64_t kMaxEpochs = 1'000'000;
inline constexpr int64_t kMaxSteps = 1'000'000'000;  // --max-steps, and steps from --epochs

// Checks values CLI11 cannot (finite, ranges, known names); throws engine::InputError, one
// line naming the flag.
void validate(const TrainOptions& options);

// Checks, before the model loads (minutes for 70B), that the output directory can be
// created and written, without leaving anything behind; throws engine::InputError naming
// --output and the directory that is in the way.
void check_output_writable(const std::string& output);

}  // namespace train
