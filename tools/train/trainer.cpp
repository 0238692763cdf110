#include "tools/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/io/safetensors.h"
#include "engine/nvtx.h"
#include "engine/ops.h"
#include "engine/optim/adamw.h"
#include "engine/optim/lr_schedule.h"
#include "models/adapter.h"
#include "models/hf_config.h"
#include "tools/train/demo_task.h"

namespace train {

namespace fs = std::filesystem;
using engine::Tensor;

namespace {

// Hugging Face tokenizers arrive later; until then HF models take pre-tokenized data.
class PretokenizedOnly final : public models::Tokenizer {
 public:
  explicit PretokenizedOnly(int64_t vocab) : vocab_(vocab) {}
  std::vector<int32_t> encode(std::string_view) const override {
    throw engine::Error("this model's tokenizer is not supported yet: give input_ids (pre-tokenized JSONL)");
  }
  std::string decode(const std::vector<int32_t>&) const override { return {}; }
  int64_t vocab_size() const override { return vocab_; }
  int32_t bos_id() const override { return 0; }
  int32_t eos_id() const override { return 0; }

 private:
  int64_t vocab_;
};

struct Loaded {
  std::unique_ptr<models::LlamaModel> model;
  std::unique_ptr<models::Tokenizer> tokenizer;
  std::string base_name;
};

Loaded load_model(const TrainOptions& o) {
  Loaded l;
  const std::string name = o.demo ? "tiny" : o.model;
  if (!fs::is_directory(name)) {
    l.model = std::make_unique<models::LlamaModel>(models::preset(name), o.seed);
    l.base_name = "preset:" + name;
  } else {
    models::LlamaConfig config = models::load_hf_config((fs::path(name) / "config.json").string());
    engine::io::SafetensorsIndex index(name);
    models::NamedTensors weights;
    for (const std::string& n : index.names()) weights.push_back({n, index.load(n)});
    l.model = std::make_unique<models::LlamaModel>(config, weights, name);
    l.base_name = name;
  }
  if (l.model->config().vocab >= 258 && !fs::is_directory(name))
    l.tokenizer = std::make_unique<models::ByteTokenizer>();
  else
    l.tokenizer = std::make_unique<PretokenizedOnly>(l.model->config().vocab);
  return l;
}

// Token-weighted loss and greedy accuracy over `examples`, in batches.
EvalResult evaluate(const models::LlamaModel& model, const std::vector<models::Example>& examples,
                    int64_t batch_size) {
  engine::NvtxRange range("evaluate");
  engine::NoGradGuard no_grad;
  EvalResult r;
  double loss_sum = 0;
  int64_t right = 0;
  for (size_t first = 0; first < examples.size(); first += batch_size) {
    std::vector<int64_t> idx;
    for (size_t i = first; i < std::min(examples.size(), first + batch_size); ++i) idx.push_back(i);
    models::Batch b = models::make_batch(examples, idx, 0);
    if (b.target_tokens == 0) continue;
    Tensor logits = model.logits(b.ids);
    const int64_t rows = b.ids.dim(0), seq = b.ids.dim(1), vocab = model.config().vocab;
    std::vector<int32_t> lab = b.labels.to_ints();
    const std::vector<float> logit_values = logits.to_floats();
    const float* l = logit_values.data();
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t t = 0; t + 1 < seq; ++t) {
        const int32_t target = lab[row * seq + t + 1];
        if (target == models::kIgnoreLabel) continue;
        const float* z = l + (row * seq + t) * vocab;
        double mx = z[0];
        int64_t best = 0;
        for (int64_t v = 1; v < vocab; ++v)
          if (z[v] > z[best]) best = v;
        mx = z[best];
        double s = 0;
        for (int64_t v = 0; v < vocab; ++v) s += std::exp(double(z[v]) - mx);
        loss_sum += std::log(s) + mx - z[target];
        right += best == target;
        ++r.tokens;
      }
  }
  ENGINE_CHECK(r.tokens > 0, "the evaluation split has no trained tokens");
  r.loss = loss_sum / r.tokens;
  r.accuracy = double(right) / r.tokens;
  return r;
}

std::string eval_line(const char* when, const EvalResult& r) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "held-out %s: loss %.4f  accuracy %.1f%%  (%lld tokens)", when, r.loss,
                100 * r.accuracy, static_cast<long long>(r.tokens));
  return buf;
}

}  // namespace

RunSummary run_training(const TrainOptions& o, std::ostream& log) {
  validate(o);
  // 1. Everything the user gave is read and checked before any output exists.
  Loaded loaded = load_model(o);
  models::LlamaModel& model = *loaded.model;
  std::vector<models::Example> examples;
  models::DatasetStats stats;
  if (o.demo) {
    examples = make_demo_examples(*loaded.tokenizer, 1200, o.seed);
  } else {
    examples = models::load_jsonl_dataset(o.dataset, *loaded.tokenizer, o.max_seq_len, &stats);
  }
  models::DatasetSplit split = models::split_train_eval(std::move(examples), o.eval_fraction, o.seed);
  ENGINE_CHECK(!split.train.empty(), "no training examples left after the held-out split");
  if (split.eval.empty()) split.eval = {split.train.begin(), split.train.begin() + 1};

  models::LoraConfig lora;
  lora.r = o.lora_r;
  lora.alpha = o.lora_alpha;
  lora.dropout = o.lora_dropout;
  lora.use_rslora = o.rslora;
  lora.targets = models::parse_lora_targets(o.lora_targets);
  model.freeze_base(o.base_format == "nf4" ? models::BaseFormat::NF4 : models::BaseFormat::F32);
  model.add_lora(lora, o.seed + 1);
  std::string no_gpu;
  const bool gpu_usable = engine::cuda_available(&no_gpu);
  ENGINE_CHECK(o.device != "cuda" || gpu_usable, "--device cuda: ", no_gpu);
  const bool on_gpu = o.device == "cuda" || (o.device == "auto" && gpu_usable);
  if (on_gpu) model.to(engine::Device::cuda(), engine::DType::BF16);
  std::vector<Tensor> params = model.trainable_parameters();
  int64_t trainable = 0;
  for (const Tensor& p : params) trainable += p.numel();

  const int64_t per_step = o.batch_size * o.grad_accum;
  const int64_t steps_per_epoch = (static_cast<int64_t>(split.train.size()) + per_step - 1) / per_step;
  const int64_t total_steps = o.max_steps > 0 ? o.max_steps : steps_per_epoch * o.epochs;
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

  // 2. Output directory: metrics stream to a partial file, renamed at the end.
  fs::create_directories(o.output);
  const fs::path metrics_path = fs::path(o.output) / "metrics.jsonl";
  const fs::path partial_path = fs::path(o.output) / "metrics.jsonl.partial";
  std::ofstream metrics(partial_path);
  ENGINE_CHECK(metrics.good(), partial_path.string(), ": cannot open for writing");
  auto write_eval = [&](const char* when, int64_t step, const EvalResult& r) {
    log << eval_line(when, r) << "\n" << std::flush;
    metrics << nlohmann::json{{"event", "eval"}, {"when", when}, {"step", step}, {"loss", r.loss},
                              {"accuracy", r.accuracy}, {"tokens", r.tokens}}.dump()
            << "\n" << std::flush;
  };

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
        std::vector<float> keys = engine::uniform({static_cast<int64_t>(split.train.size())}, 0, 1, shuffle_gen).to_floats();
        order.resize(split.train.size());
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
  for (int64_t step = 0; step < total_steps; ++step) {
    engine::NvtxRange step_range("step");
    const float lr = schedule.at(step);
    optimizer.set_lr(lr);
    std::vector<models::Batch> micro;
    int64_t step_targets = 0;
    {
      engine::NvtxRange range("data");
      for (int64_t m = 0; m < o.grad_accum; ++m) {
        micro.push_back(models::make_batch(split.train, next_indices(o.batch_size), 0));
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
    {
      engine::NvtxRange range("optimizer");
      grad_norm = engine::optim::clip_grad_norm(params, o.max_grad_norm);
      optimizer.step();
      optimizer.zero_grad();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    metrics << nlohmann::json{{"event", "train"}, {"step", step + 1}, {"loss", step_loss}, {"lr", lr},
                              {"grad_norm", grad_norm}, {"tokens_per_second", tokens_seen / seconds}}.dump()
            << "\n";
    if ((step + 1) % o.log_every == 0 || step == 0 || step + 1 == total_steps) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "step %5lld/%lld  loss %.4f  lr %.2e  grad-norm %.3f  %.0f tokens/s",
                    static_cast<long long>(step + 1), static_cast<long long>(total_steps), step_loss, lr,
                    grad_norm, tokens_seen / seconds);
      log << buf << "\n" << std::flush;
    }
  }
  summary.steps = total_steps;
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
