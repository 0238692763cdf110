// engine_demo: trains the tiny Llama preset from scratch on a task the program
// generates itself, and prints the held-out loss and accuracy before, during and
// after training. The task: sequences counting in steps of k modulo 10, written
// as digits ("3692581470..." for a=3, k=3); the step must be read off the first
// two digits, after which every next digit is predictable.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/optim/adamw.h"
#include "models/llama.h"

namespace {

using engine::Tensor;

constexpr int64_t kSeq = 16;

struct Batch {
  Tensor ids, labels;
};

// Rows of the counting task; labels are -100 on the first two tokens (they carry
// no predictable information), the digit bytes elsewhere.
Batch make_batch(int64_t rows, engine::Generator& gen) {
  Tensor u = engine::uniform({rows, 2}, 0.0f, 1.0f, gen);
  std::vector<int32_t> ids(rows * kSeq), labels(rows * kSeq);
  for (int64_t r = 0; r < rows; ++r) {
    int a = static_cast<int>(u.data<float>()[2 * r] * 10) % 10;
    int k = 1 + static_cast<int>(u.data<float>()[2 * r + 1] * 9) % 9;
    for (int64_t t = 0; t < kSeq; ++t) {
      ids[r * kSeq + t] = '0' + (a + k * t) % 10;
      labels[r * kSeq + t] = t < 2 ? -100 : ids[r * kSeq + t];
    }
  }
  return {Tensor::from_ints(ids, {rows, kSeq}), Tensor::from_ints(labels, {rows, kSeq})};
}

struct Eval {
  float loss, accuracy;
};

Eval evaluate(const models::LlamaModel& model, const Batch& b) {
  engine::NoGradGuard no_grad;
  float loss = model.loss(b.ids, b.labels).item();
  Tensor logits = model.logits(b.ids);
  const int64_t vocab = model.config().vocab;
  std::vector<int32_t> lab = b.labels.to_ints();
  const float* l = logits.data<float>();
  int64_t right = 0, counted = 0;
  for (int64_t i = 0; i < b.ids.numel(); ++i) {
    if ((i + 1) % kSeq == 0 || lab[i + 1] == -100) continue;
    int64_t best = 0;
    for (int64_t v = 1; v < vocab; ++v)
      if (l[i * vocab + v] > l[i * vocab + best]) best = v;
    right += best == lab[i + 1];
    ++counted;
  }
  return {loss, static_cast<float>(right) / counted};
}

int run(int steps) {
  models::LlamaModel model(models::preset("tiny"), /*seed=*/1);
  std::vector<Tensor> params;
  for (auto& [name, p] : model.named_parameters()) params.push_back(p.set_requires_grad(true));
  engine::optim::AdamW opt(params, {.lr = 3e-3f, .weight_decay = 0.0f});
  engine::Generator train_gen(11), eval_gen(12345);
  Batch held_out = make_batch(64, eval_gen);

  Eval before = evaluate(model, held_out);
  std::printf("held-out before training: loss %.4f  accuracy %.1f%%\n", before.loss,
              100 * before.accuracy);
  for (int step = 1; step <= steps; ++step) {
    Batch b = make_batch(16, train_gen);
    Tensor loss = model.loss(b.ids, b.labels, {.checkpoint_layers = true});
    engine::backward(loss);
    engine::optim::clip_grad_norm(params, 1.0f);
    opt.step();
    opt.zero_grad();
    if (step % 25 == 0 || step == 1) std::printf("step %4d  train loss %.4f\n", step, loss.item());
  }
  Eval after = evaluate(model, held_out);
  std::printf("held-out after %d steps: loss %.4f  accuracy %.1f%%\n", steps, after.loss,
              100 * after.accuracy);
  if (!(after.loss < before.loss)) {
    std::fprintf(stderr, "engine_demo: held-out loss did not fall (%.4f -> %.4f)\n", before.loss,
                 after.loss);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    int steps = 300;
    if (argc > 1) {
      char* end = nullptr;
      long v = std::strtol(argv[1], &end, 10);
      if (*end != '\0' || v <= 0 || v > 1000000) {
        std::fprintf(stderr, "engine_demo: steps must be a positive integer, got '%s'\n", argv[1]);
        return 2;
      }
      steps = static_cast<int>(v);
    }
    return run(steps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "engine_demo: %s\n", e.what());
    return 1;
  }
}
