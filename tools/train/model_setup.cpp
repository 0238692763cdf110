#include "tools/train/model_setup.h"

#include <algorithm>
#include <filesystem>
#include <iostream>

#include <unistd.h>

#include "engine/allocator.h"
#include "engine/backend.h"
#include "models/adapter.h"
#include "models/hf_config.h"
#include "models/hf_hub.h"
#include "models/synthetic.h"
#include "models/weight_loader.h"
#include "tools/train/memory_mechanisms.h"
#include "tools/train/memory_plan.h"

namespace train {

namespace fs = std::filesystem;

namespace {


// Hugging Face tokenizers arrive later; until then HF models take pre-tokenized data.
class PretokenizedOnly final : public models::Tokenizer {
 public:
  explicit PretokenizedOnly(int64_t vocab) : vocab_(vocab) {}
  std::vector<int32_t> encode(std::string_view) const override {
    throw engine::InputError("this model's tokenizer is not supported yet: give input_ids (pre-tokenized JSONL)");
  }
  std::string decode(const std::vector<int32_t>&) const override { return {}; }
  int64_t vocab_size() const override { return vocab_; }
  int32_t bos_id() const override { return 0; }
  int32_t eos_id() const override { return 0; }

 private:
  int64_t vocab_;
};

}  // namespace

ModelSource resolve_model(const TrainOptions& o) {
  ModelSource src;
  src.name = o.demo ? "tiny" : o.model;
  const std::string synthetic = models::synthetic_preset(src.name);
  if (!synthetic.empty() || !fs::is_directory(src.name)) {
    if (synthetic.empty() && src.name.find('/') != std::string::npos) {
      // Not a directory: a Hugging Face model id, from the local cache only.
      ENGINE_INPUT_CHECK(models::is_hf_model_id(src.name), "--model ", src.name, ": no such directory");
      src.dir = models::resolve_hf_model(src.name);
      src.config = models::load_hf_config((fs::path(src.dir) / "config.json").string());
      return src;
    }
    src.synthetic = !synthetic.empty();
    try {
      src.config = models::preset(src.synthetic ? synthetic : src.name);
    } catch (const engine::InputError& e) {
      throw engine::InputError(std::string("--model: ") + e.what());
    }
  } else {
    src.dir = src.name;
    src.config = models::load_hf_config((fs::path(src.dir) / "config.json").string());
  }
  return src;
}

// A checkpoint streams tensor by tensor into its final form on `device` (models/weight_loader.h)
// and a synthetic model is drawn there; a preset is a random f32 model frozen by the caller.
Loaded load_model(const TrainOptions& o, const ModelSource& src, engine::Device device,
                  std::ostream& log) {
  Loaded l;
  const models::BaseFormat format =
      o.base_format == "nf4" ? models::BaseFormat::NF4 : models::BaseFormat::F32;
  // Straight to the host, never through the device: the room it would take at load is
  // the room the plan freed by keeping it there.
  const bool embedding_on_host = !device.is_cpu() && resolve_memory_mechanisms(o, src.config).embedding_on_host;
  if (src.synthetic) {
    ENGINE_INPUT_CHECK(format == models::BaseFormat::NF4, "--model ", src.name,
                       ": synthetic models are NF4 (drop --base-format f32)");
    l.model = models::synthetic_llama(src.config, o.seed, device, 0, embedding_on_host);
    l.base_name = src.name;
  } else if (src.dir.empty()) {
    l.model = std::make_unique<models::LlamaModel>(src.config, o.seed);
    l.base_name = "preset:" + src.name;
  } else {
    models::LoadOptions lo;
    lo.device = device;
    lo.format = format;
    lo.embedding_on_host = embedding_on_host;
    lo.log = &log;
    lo.live_progress = &log == &std::cout && ::isatty(STDOUT_FILENO);
    l.model = models::load_llama(src.config, src.dir, lo);
    l.base_name = src.name == src.dir ? src.dir : src.name + " (" + src.dir + ")";
  }
  return l;
}

std::unique_ptr<models::Tokenizer> make_tokenizer(const ModelSource& src) {
  if (src.config.vocab >= 258 && src.dir.empty()) return std::make_unique<models::ByteTokenizer>(src.config.vocab);
  // The model directory's own tokenizer (tokenizer.json or tokenizer.model), when it has one.
  if (!src.dir.empty() && (fs::exists(fs::path(src.dir) / "tokenizer.json") ||
                           fs::exists(fs::path(src.dir) / "tokenizer.model"))) {
    std::unique_ptr<models::Tokenizer> tok = models::load_tokenizer(src.dir);
    ENGINE_INPUT_CHECK(tok->vocab_size() <= src.config.vocab, src.dir, ": the tokenizer has ",
                       tok->vocab_size(), " tokens, more than config.json's vocab_size ",
                       src.config.vocab);
    return tok;
  }
  return std::make_unique<PretokenizedOnly>(src.config.vocab);
}

// The dataset flags, and the chat template: --chat-template, else the model directory's
// (a missing or unknown one is an error only when a record needs it), else llama3 for the
// presets, whose byte tokenizer spells its header tokens.
models::DatasetOptions dataset_options(const TrainOptions& o, const ModelSource& src) {
  models::DatasetOptions d;
  d.max_seq_len = o.max_seq_len;
  d.truncation = o.truncation == "drop" ? models::Truncation::Drop : models::Truncation::Right;
  d.train_on_inputs = o.train_on_inputs;
  d.max_line_bytes = parse_memory_size(o.max_line_size, "--max-line-size");
  if (!o.chat_template.empty()) {
    d.chat_template = models::parse_chat_template_name(o.chat_template);
  } else if (src.dir.empty()) {
    d.chat_template = models::ChatTemplate::Llama3;
  } else {
    const models::ChatTemplateLookup found = models::find_chat_template(src.dir);
    d.chat_template = found.kind;
    d.chat_template_problem = found.problem;
  }
  return d;
}

// A rank above min(in, out) of a targeted linear adds parameters and memory, but no
// expressiveness (A B has rank <= min(in, out) anyway): refused before LoRA allocates it.
void check_lora_rank(const TrainOptions& o, const models::LlamaConfig& c) {
  const int64_t q = c.q_dim(), kv = c.kv_dim();
  const std::pair<int64_t, int64_t> in_out[] = {{c.hidden, q},  {c.hidden, kv},
                                                {c.hidden, kv}, {q, c.hidden},
                                                {c.hidden, c.intermediate},
                                                {c.hidden, c.intermediate},
                                                {c.intermediate, c.hidden}};
  const std::vector<std::string>& names = models::all_linear_names();
  for (const std::string& t : models::parse_lora_targets(o.lora_targets)) {
    const size_t j = static_cast<size_t>(std::find(names.begin(), names.end(), t) - names.begin());
    if (j >= names.size()) continue;
    const auto [in, out] = in_out[j];
    ENGINE_INPUT_CHECK(o.lora_r <= std::min(in, out), "--lora-r ", o.lora_r, " is above the rank ",
                       std::min(in, out), " of ", t, " [", out, " x ", in,
                       "] in this model: a larger rank adds memory, not expressiveness");
  }
}

// Positions past max_position_embeddings were never seen in pre-training: RoPE runs on,
// so training works, but the model's quality there is unknown. Long-context fine-tuning
// does this on purpose, so it is a warning, not an error.
void warn_long_sequences(const std::vector<models::Example>& examples,
                         const models::LlamaConfig& c, std::ostream& log) {
  if (c.max_position <= 0) return;
  int64_t longer = 0, longest = 0;
  for (const models::Example& e : examples) {
    const auto n = static_cast<int64_t>(e.input_ids.size());
    longer += n > c.max_position;
    longest = std::max(longest, n);
  }
  if (longer > 0)
    log << "warning: " << longer << " examples are longer than the model's max_position_embeddings "
        << c.max_position << " (the longest has " << longest
        << " tokens); positions past it were not pre-trained. --max-seq-len " << c.max_position
        << " truncates them\n";
}

bool train_on_gpu(const TrainOptions& o) {
  std::string no_gpu;
  const bool gpu_usable = engine::cuda_available(&no_gpu);
  ENGINE_INPUT_CHECK(o.device != "cuda" || gpu_usable, "--device cuda: ", no_gpu);
  return o.device == "cuda" || (o.device == "auto" && gpu_usable);
}

TrainableModel setup_trainable_model(const TrainOptions& o, const ModelSource& source, bool on_gpu,
                                     const std::optional<models::PeftAdapter>& adapter, std::ostream& log) {
  std::optional<engine::MemoryOwnerScope> weights_owner(std::in_place, "weights");
  TrainableModel t{load_model(o, source, on_gpu ? engine::Device::cuda() : engine::Device::cpu(), log), {}, {}, {}};
  models::LlamaModel& model = *t.loaded.model;
  if (adapter) {
    t.lora = adapter->lora;  // the adapter's own shape; --lora-* do not apply
  } else {
    t.lora.r = o.lora_r;
    t.lora.alpha = o.lora_alpha;
    t.lora.dropout = o.lora_dropout;
    t.lora.use_rslora = o.rslora;
    t.lora.targets = models::parse_lora_targets(o.lora_targets);
  }
  if (!model.base_frozen())
    model.freeze_base(o.base_format == "nf4" ? models::BaseFormat::NF4 : models::BaseFormat::F32);
  model.add_lora(t.lora, o.seed + 1);
  if (adapter)
    models::load_adapter_weights(model, *adapter, (fs::path(o.adapter) / "adapter_model.safetensors").string());
  if (on_gpu) model.to(engine::Device::cuda(), engine::DType::BF16);
  t.mechanisms = resolve_memory_mechanisms(o, model.config());
  if (t.mechanisms.embedding_on_host && on_gpu) model.keep_embedding_on_host();
  t.params = model.trainable_parameters();
  weights_owner.reset();
  for (const engine::Tensor& p : t.params) engine::set_memory_owner(p, "lora");
  return t;
}

}  // namespace train
