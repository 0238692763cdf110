// The run around the replayed model pieces (tools/train/memory_replay.h): the embedding,
// the loss heads, one micro-batch of training, evaluation, DPO's log-prob passes.
#include <algorithm>

#include "kernels/cross_entropy_tiling.h"
#include "tools/train/memory_replay.h"

namespace train::replay {

// The fused lm_head cross-entropy (engine/cuda/lm_head_loss.cpp) on t rows, its scratch
// planned by kernels::plan_lm_head_tiling (the same call as the op's). Forward returns the
// loss scalar and leaves lse [t] fp32 for backward; backward (dh only: lm_head is frozen)
// returns dh [t, H].
Buf Replay::lm_head_forward(int64_t t, bool record, Buf* lse) {
  const int64_t h = c_.hidden;
  const kernels::LmHeadTiling tile =
      kernels::plan_lm_head_tiling(t, c_.vocab, h, kB, record, record, in_.loss_chunk_rows);
  Buf loss = tl_.alloc(Owner::Activations, kB);
  *lse = tl_.alloc(Owner::Activations, t * 4);
  Buf row_loss = tl_.alloc(Owner::Workspace, t * 4);
  Buf state = tl_.alloc(Owner::Workspace, 3 * t * 4);
  Buf logits = tl_.alloc(Owner::Workspace, tile.rows * tile.vocab_block * 4);
  tl_.free(logits);
  tl_.free(state);
  tl_.free(row_loss);
  if (!record) tl_.free(*lse);
  return loss;
}

Buf Replay::lm_head_backward(int64_t t, bool bf16_grad) {
  const int64_t h = c_.hidden;
  const kernels::LmHeadTiling tile =
      kernels::plan_lm_head_tiling(t, c_.vocab, h, kB, true, true, in_.loss_chunk_rows);
  const int64_t elements = tile.rows * tile.vocab_block;
  Buf dh = tl_.alloc(Owner::Gradients, t * h * kB);
  Buf g32 = bf16_grad ? tl_.alloc(Owner::Workspace, 4) : -1;  // the scalar loss's gradient in fp32
  Buf logits = tl_.alloc(Owner::Workspace, elements * 4);
  Buf parts = tl_.alloc(Owner::Workspace, ((elements + 127) / 128 * 128 + elements) * kB);
  Buf dh_acc = tl_.alloc(Owner::Workspace, tile.rows * h * 4);
  tl_.free(dh_acc);
  tl_.free(parts);
  tl_.free(logits);
  tl_.free(g32);
  return dh;
}

// The embedding's output [t, H]: rows gathered on the host and uploaded, or gathered on
// the device from uploaded ids (with the kernel's status word).
Buf Replay::embed(int64_t t) {
  if (in_.embedding_on_host) return tl_.alloc(Owner::Activations, t * c_.hidden * kB);
  Buf ids = tl_.alloc(Owner::Activations, t * 4);
  Buf h = tl_.alloc(Owner::Activations, t * c_.hidden * kB);
  Buf status = tl_.alloc(Owner::Workspace, 8);
  tl_.free(status);
  tl_.free(ids);
  return h;
}

// One micro-batch of run_training: forward under checkpoints, the loss, backward.
void Replay::train_micro_batch() {
  const int64_t t = tokens_, hd = c_.hidden;
  const int layers = static_cast<int>(c_.layers);
  if (in_.dpo && in_.dpo_reference_each_step) {  // before the policy pass (dpo_trainer.cpp)
    tl_.phase("reference");
    logprobs_pass(t, 2 * in_.batch, false);
  }
  tl_.phase("forward");
  Buf h = embed(t);
  std::vector<Tape> tapes(static_cast<size_t>(layers));
  returned_.assign(static_cast<size_t>(layers), -1);
  int64_t pinned = 0;  // pooled pinned buffers: reused by the next micro-batch
  std::vector<Buf>& inputs = saved_inputs_;  // each layer's input: the checkpoints
  inputs.clear();
  for (int l = 0; l < layers; ++l) {
    tl_.phase("forward, layer " + std::to_string(l));
    inputs.push_back(h);
    if (in_.checkpoint_layers) tl_.relabel(h, Owner::Checkpoints);
    h = layer_forward(h, !in_.checkpoint_layers, &tapes[static_cast<size_t>(l)], l > 0);
    if (!in_.checkpoint_layers && l == 0) tl_.free(inputs.back());  // nothing saved it
    if (in_.checkpoint_layers && in_.offload_checkpoints) {  // the saved input waits on the host
      tl_.free(in_flight_);
      pinned += t * hd * kB;
      in_flight_ = inputs.back();
      inputs.back() = -1;
    }
  }
  tl_.phase("loss");
  Buf hn = tl_.alloc(Owner::Activations, t * hd * kB), rstd = tl_.alloc(Owner::Workspace, t * 4);
  Buf targets = tl_.alloc(Owner::Activations, t * 4);
  Buf seed = -1, slot_lm = -1, dh = -1;
  Buf result = -1;  // what the trainer holds until backward is done: the scaled loss, DPO's log-probs
  if (!in_.dpo) {
    Buf lse = -1;
    Buf loss = lm_head_forward(t, true, &lse);
    result = tl_.alloc(Owner::Activations, kB);  // scaled by the micro-batch's weight
    tl_.free(loss);
    tl_.phase("loss backward");
    seed = tl_.alloc(Owner::Gradients, kB);
    Buf slot_scale = -1;
    accumulate(slot_scale, kB);
    Buf scale_out = tl_.alloc(Owner::Gradients, kB);
    accumulate(slot_lm, kB);
    tl_.free(scale_out);
    tl_.free(slot_scale);
    dh = lm_head_backward(t, true);
    tl_.free(hn);
    tl_.free(targets);
    tl_.free(lse);
  } else {  // models/dpo_step.cpp: log-probs, the loss on the host, dloss/dlogp uploaded
    const int64_t rows = 2 * in_.batch;
    std::pair<Buf, Buf> saved;
    result = logprobs_forward(t, rows, true, &saved);
    tl_.phase("loss backward");
    seed = tl_.alloc(Owner::Gradients, rows * 4);
    accumulate(slot_lm, rows * 4);
    dh = lm_head_backward(t, false);
    tl_.free(hn);
    tl_.free(targets);
    tl_.free(saved.first);
    tl_.free(saved.second);
  }
  Buf slot_norm = -1;
  accumulate(slot_norm, t * hd * kB);
  tl_.free(dh);
  tl_.free(slot_lm);
  Buf dx = tl_.alloc(Owner::Gradients, t * hd * kB);  // final rms_norm
  tl_.free(h);
  tl_.free(rstd);
  std::vector<Buf> slots(static_cast<size_t>(layers), -1);
  accumulate(slots.back(), t * hd * kB);
  tl_.free(dx);
  tl_.free(slot_norm);
  for (int l = layers - 1; l >= 0; --l) {
    Buf ignored = -1;
    layer_backward(l, tapes[static_cast<size_t>(l)], slots[static_cast<size_t>(l)],
                   l > 0 ? slots[static_cast<size_t>(l - 1)] : ignored);
    if (!in_.checkpoint_layers && l > 0) tl_.free(inputs[static_cast<size_t>(l)]);
  }
  tl_.free(seed);
  // The loss tensor dies: the checkpoint nodes, and the inputs they kept, with it.
  tl_.free(result);
  for (Buf& b : inputs) tl_.free(b);
  for (Buf& b : returned_) tl_.free(b);
  tl_.result().host_pinned = std::max(tl_.result().host_pinned, pinned);
}

// A no-grad forward without checkpoints (the MLP tiled as in training) of t tokens, up to
// the final norm's output [t, H]: one layer's intermediates at a time.
Buf Replay::no_grad_hidden(int64_t t) {
  const int64_t hd = c_.hidden;
  Buf h = embed(t);
  for (int64_t l = 0; l < c_.layers; ++l) {
    Buf next = layer_forward(h, false, nullptr, false);
    tl_.free(h);
    h = next;
  }
  Buf hn = tl_.alloc(Owner::Activations, t * hd * kB);
  Buf rstd = tl_.alloc(Owner::Workspace, t * 4);
  tl_.free(rstd);
  tl_.free(h);
  return hn;
}

// evaluate() (tools/train/evaluate.cpp): LlamaModel::eval_stats, a no-grad forward, the
// targets uploaded, and engine::lm_head_eval (engine/cuda/lm_head_eval.cpp): outputs loss
// f32 [T] and argmax i32 [T], the per-row state [5, T] fp32 and one fp32 logits tile; only
// the [T] outputs go to the host. DPO evaluates the held-out pairs' log-probs instead.
void Replay::evaluate() {
  if (in_.eval_batch <= 0 || in_.eval_seq <= 0) return;
  tl_.phase("evaluation");
  const int64_t rows = (in_.dpo ? 2 : 1) * in_.eval_batch, t = rows * in_.eval_seq, hd = c_.hidden;
  if (in_.dpo) {
    logprobs_pass(t, rows, true);
    return;
  }
  const int64_t saved_tokens = tokens_;
  tokens_ = t;
  no_grad_pass_ = true;
  Buf hn = no_grad_hidden(t);
  Buf targets = tl_.alloc(Owner::Activations, t * 4);
  const kernels::LmHeadTiling tile = kernels::plan_lm_head_tiling(t, c_.vocab, hd, kB, false, false, 0);
  Buf loss = tl_.alloc(Owner::Activations, t * 4), argmax = tl_.alloc(Owner::Activations, t * 4);
  Buf state = tl_.alloc(Owner::Workspace, 5 * t * 4);
  Buf logits = tl_.alloc(Owner::Workspace, tile.rows * tile.vocab_block * 4);
  tl_.free(logits);
  tl_.free(state);
  tl_.free(targets);
  tl_.free(hn);
  tl_.free(loss);
  tl_.free(argmax);
  no_grad_pass_ = false;
  tokens_ = saved_tokens;
}

// LlamaModel::sequence_logprobs without gradients (tools/train/dpo_trainer.cpp): the
// reference pass (every adapter off) or the held-out policy pass, `rows` sequences of t
// tokens in all. engine/cuda/lm_head_logprobs.cpp's forward with no gradient wanted: the
// per-sequence outputs and counts [rows], lse and row losses [t], the state [3, t], one
// logits tile; nothing is saved, everything dies once the [rows] log-probs are on the host.
void Replay::logprobs_pass(int64_t t, int64_t rows, bool lora_on) {
  const int64_t saved_tokens = tokens_;
  tokens_ = t;
  no_grad_pass_ = true;
  lora_off_ = !lora_on;
  Buf hn = no_grad_hidden(t);
  Buf targets = tl_.alloc(Owner::Activations, t * 4);
  Buf out = logprobs_forward(t, rows, false, nullptr);
  tl_.free(out);
  tl_.free(targets);
  tl_.free(hn);
  lora_off_ = false;
  no_grad_pass_ = false;
  tokens_ = saved_tokens;
}

// lm_head_logprobs' forward: returns the [rows] log-probs; recording, lse [t] and the
// counts [rows] stay for backward (*saved_lse, *saved_counts), else they die here.
Buf Replay::logprobs_forward(int64_t t, int64_t rows, bool record, std::pair<Buf, Buf>* saved) {
  const kernels::LmHeadTiling tile = kernels::plan_lm_head_tiling(t, c_.vocab, c_.hidden, kB, record, record, 0);
  Buf out = tl_.alloc(Owner::Activations, rows * 4);
  Buf counts = tl_.alloc(Owner::Activations, rows * 4);
  Buf lse = tl_.alloc(Owner::Activations, t * 4);
  Buf row_loss = tl_.alloc(Owner::Workspace, t * 4);
  Buf state = tl_.alloc(Owner::Workspace, 3 * t * 4);
  Buf logits = tl_.alloc(Owner::Workspace, tile.rows * tile.vocab_block * 4);
  tl_.free(logits);
  tl_.free(state);
  tl_.free(row_loss);
  if (record) {
    *saved = {lse, counts};
  } else {
    tl_.free(lse);
    tl_.free(counts);
  }
  return out;
}

SimResult Replay::run() {
  tokens_ = (in_.dpo ? 2 : 1) * in_.batch * in_.seq;  // DPO: the chosen and the rejected rows
  load();
  tl_.alloc(Owner::Workspace, 32ll << 20);  // cuBLASLt workspace (kCublasWorkspaceBytes), at the first GEMM
  evaluate();
  for (int64_t m = 0; m < in_.grad_accum; ++m) train_micro_batch();
  tl_.phase("optimizer");
  for (auto& per_linear : lora_grad_)  // zero_grad
    for (auto& [a, b] : per_linear) {
      tl_.free(a);
      tl_.free(b);
    }
  return tl_.result();
}

}  // namespace train::replay
