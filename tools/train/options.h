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
  std::string schedule = "constant";
  float warmup_ratio = 0.03f;
  float weight_decay = 0.0f;
  float max_grad_norm = 0.3f;
  bool checkpoint_layers = true;
  // Steps whose loss or gradient norm is NaN/Inf are skipped; this many in a row stop the run.
  int64_t max_nonfinite_steps = 5;
  // Evaluation and logging.
  float eval_fraction = 0.1f;
  int64_t log_every = 10;
  uint64_t seed = 42;
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
