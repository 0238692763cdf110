// The replay behind the memory planner (memory_sim.h), shared by its two source files:
// memory_sim.cpp replays the model's pieces (load, the linears, the MLP, a layer forward
// and backward), memory_sim_step.cpp the run around them (embedding, the loss heads, a
// micro-batch, evaluation, DPO's log-prob passes). Internal to the planner.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/cuda/caching_allocator.h"
#include "tools/train/memory_sim.h"

namespace train::replay {

constexpr int64_t kB = 2;  // bf16

// Live buffers, the in-use peak and the live set by owner at that peak.
class Timeline {
 public:
  using Buf = int;
  Buf alloc(Owner owner, int64_t bytes) {
    if (bytes <= 0) return -1;  // Allocator::allocate(0) takes nothing
    bufs_.push_back({bytes, owner, true});
    current_ += bytes;
    rounded_ += static_cast<int64_t>(engine::cuda::caching_size_class(static_cast<size_t>(bytes)));
    by_owner_[static_cast<size_t>(owner)] += bytes;
    if (current_ > result_.peak) {
      result_.peak = current_;
      result_.at_peak = by_owner_;
      result_.peak_phase = phase_;
    }
    result_.peak_rounded = std::max(result_.peak_rounded, rounded_);
    return static_cast<Buf>(bufs_.size() - 1);
  }
  void free(Buf& b) {
    if (b < 0) return;
    Entry& e = bufs_[static_cast<size_t>(b)];
    ENGINE_CHECK(e.live, "memory plan: buffer freed twice");
    e.live = false;
    current_ -= e.bytes;
    rounded_ -= static_cast<int64_t>(engine::cuda::caching_size_class(static_cast<size_t>(e.bytes)));
    by_owner_[static_cast<size_t>(e.owner)] -= e.bytes;
    b = -1;
  }
  void relabel(Buf b, Owner owner) {  // a buffer changes hands (a layer input kept as checkpoint)
    if (b < 0) return;
    Entry& e = bufs_[static_cast<size_t>(b)];
    by_owner_[static_cast<size_t>(e.owner)] -= e.bytes;
    by_owner_[static_cast<size_t>(owner)] += e.bytes;
    e.owner = owner;
  }
  void phase(std::string p) { phase_ = std::move(p); }
  SimResult& result() { return result_; }

 private:
  struct Entry {
    int64_t bytes;
    Owner owner;
    bool live;
  };
  std::vector<Entry> bufs_;
  int64_t current_ = 0, rounded_ = 0;
  std::array<int64_t, static_cast<size_t>(Owner::Count)> by_owner_{};
  std::string phase_ = "load";
  SimResult result_;
};

using Buf = Timeline::Buf;

// [in, out] of the seven linears, all_linear_names() order.
struct LinearShape {
  int64_t in, out;
};

class Replay {
 public:
  explicit Replay(const SimInput& in) : in_(in), c_(in.config) {
    const int64_t h = c_.hidden, q = c_.q_dim(), kv = c_.kv_dim(), i = c_.intermediate;
    shapes_ = {{{h, q}, {h, kv}, {h, kv}, {q, h}, {h, i}, {h, i}, {i, h}}};
  }

  SimResult run();

 private:
  struct Linear {  // a linear's forward result and what its node keeps
    Buf y = -1, saved_weight = -1;
  };
  struct Grads {  // a linear's backward outputs
    Buf dx = -1, da = -1, db = -1;
  };
  struct Tape {  // the recorded layer (recompute), what each node saved
    Buf n = -1, rstd1 = -1, v = -1, qr = -1, kr = -1, att = -1, lse = -1, h1 = -1, m = -1,
        rstd2 = -1, g = -1, u = -1, a = -1, out = -1;
    std::array<Buf, 7> w{-1, -1, -1, -1, -1, -1, -1};  // dequantized weights of unadapted linears
  };

  void load();
  Linear linear_forward(int j, int64_t t, bool record);
  Grads linear_backward(int j, int64_t t, bool want_dx);
  void accumulate(Buf& slot, int64_t bytes) {  // autograd accumulate_into: clone on first arrival
    if (slot < 0) slot = tl_.alloc(Owner::Gradients, bytes);
  }
  void lora_grads(int j, Grads& g);
  Buf mlp_forward(Buf x, int64_t t, bool record, Tape* tape);
  Buf mlp_backward(Buf& dy, int64_t t, Tape& tape, bool want_dx, Buf* x_saved);
  int64_t attention_workspace() const;
  Buf layer_forward(Buf h, bool record, Tape* tape, bool input_grad);
  void layer_backward(int layer, Tape& tp, Buf& g_out, Buf& g_in_slot);
  void train_micro_batch();
  void evaluate();
  Buf lm_head_forward(int64_t t, bool record, Buf* lse);
  Buf lm_head_backward(int64_t t, bool bf16_grad);
  Buf embed(int64_t t);
  Buf no_grad_hidden(int64_t t);
  void logprobs_pass(int64_t t, int64_t rows, bool lora_on);
  Buf logprobs_forward(int64_t t, int64_t rows, bool record, std::pair<Buf, Buf>* saved);

  const SimInput& in_;
  const models::LlamaConfig& c_;
  std::array<LinearShape, 7> shapes_;
  Timeline tl_;
  int64_t tokens_ = 0;
  std::vector<Buf> returned_;  // offloaded checkpoints back on the device (kept by their node)
  std::vector<Buf> saved_inputs_;  // each layer's input, saved by its checkpoint node
  Buf in_flight_ = -1;         // the last offloaded tensor, dropped at the next offload or take
  std::array<std::vector<std::pair<Buf, Buf>>, 7> lora_grad_;  // per linear, per layer
  int layer_ = 0;
  bool lora_off_ = false;      // DPO's reference pass: every adapter disabled
  bool no_grad_pass_ = false;  // evaluation-like forward (train = false: no dropout)
};

}  // namespace train::replay
