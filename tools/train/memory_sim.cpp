// The replay of a run's device allocations (memory_sim.h): the model's pieces (load, the
// linears, the MLP, a layer forward and backward); the run around them is in
// memory_sim_step.cpp. Names follow the code they mirror; b = 2 bytes (bf16 activations),
// T = tokens of the micro-batch (or of a tile).
#include "tools/train/memory_sim.h"

#include <algorithm>

#include "engine/error.h"
#include "engine/optim/paged_adamw.h"
#include "tools/train/memory_replay.h"

namespace train {

const char* owner_name(Owner owner) {
  switch (owner) {
    case Owner::Weights: return "weights";
    case Owner::Lora: return "lora";
    case Owner::LoraGrads: return "lora_gradients";
    case Owner::Optimizer: return "optimizer";
    case Owner::Checkpoints: return "checkpoints";
    case Owner::Activations: return "activations";
    case Owner::Gradients: return "activation_gradients";
    case Owner::DequantWeight: return "dequantized_weight";
    case Owner::Workspace: return "workspace";
    case Owner::Count: break;
  }
  return "?";
}

int64_t nf4_weight_bytes(int64_t out, int64_t in) {
  const int64_t n = out * in, blocks = (n + 63) / 64;
  return (n + 1) / 2 + blocks + 4 * ((blocks + 255) / 256);
}

namespace replay {

void Replay::load() {
  const int64_t h = c_.hidden, v = c_.vocab;
  // models/synthetic.cpp and the streaming loader, llama_weight_specs order: the embedding,
  // per layer the norms and the seven NF4 linears (each staged dense in bf16 with an fp32
  // absmax and the offset scalar while it is quantized), the final norm, lm_head.
  Buf embed = tl_.alloc(Owner::Weights, v * h * kB);
  if (in_.embedding_on_host) {
    tl_.free(embed);
    tl_.result().host += v * h * kB;
  }
  for (int64_t l = 0; l < c_.layers; ++l) {
    tl_.alloc(Owner::Weights, h * kB);
    tl_.alloc(Owner::Weights, h * kB);
    for (const LinearShape& s : shapes_) {
      const int64_t n = s.in * s.out, blocks = (n + 63) / 64;
      Buf dense = tl_.alloc(Owner::Workspace, n * kB);
      tl_.alloc(Owner::Weights, (n + 1) / 2);
      Buf absmax = tl_.alloc(Owner::Workspace, blocks * 4);
      Buf offset = tl_.alloc(Owner::Workspace, 4);
      tl_.alloc(Owner::Weights, blocks);
      tl_.alloc(Owner::Weights, 4 * ((blocks + 255) / 256));
      tl_.free(offset);
      tl_.free(absmax);
      tl_.free(dense);
    }
  }
  tl_.alloc(Owner::Weights, h * kB);
  if (!c_.tie_embeddings) tl_.alloc(Owner::Weights, v * h * kB);
  // LoRA factors: made on the host, moved by LlamaModel::to (fp32 masters).
  for (int64_t l = 0; l < c_.layers; ++l)
    for (int j = 0; j < 7; ++j)
      if (in_.adapted[j]) {
        tl_.alloc(Owner::Lora, in_.lora_r * shapes_[j].in * 4);
        tl_.alloc(Owner::Lora, shapes_[j].out * in_.lora_r * 4);
      }
  // Optimizer states (engine/optim/adamw.cpp: m and v zeros per parameter at construction).
  if (in_.optim == "adamw") {
    for (int64_t l = 0; l < c_.layers; ++l)
      for (int j = 0; j < 7; ++j)
        if (in_.adapted[j])
          for (int k = 0; k < 2; ++k) {
            tl_.alloc(Owner::Optimizer, in_.lora_r * shapes_[j].in * 4);
            tl_.alloc(Owner::Optimizer, shapes_[j].out * in_.lora_r * 4);
          }
  } else {  // engine/optim/paged_adamw.cpp: the states on the host, min(chunks, 2) device pages
    std::vector<int64_t> numels;  // in LlamaModel::lora_parameters' order
    for (int64_t l = 0; l < c_.layers; ++l)
      for (int j = 0; j < 7; ++j)
        if (in_.adapted[j]) {
          numels.push_back(in_.lora_r * shapes_[j].in);
          numels.push_back(shapes_[j].out * in_.lora_r);
        }
    const auto chunks = engine::optim::plan_state_chunks(numels, in_.optim == "paged_adamw_8bit");
    size_t largest = 0;
    for (const auto& chunk : chunks) largest = std::max(largest, chunk.bytes);
    for (size_t k = 0; k < std::min<size_t>(chunks.size(), engine::optim::kOptimizerPages); ++k)
      tl_.alloc(Owner::Optimizer, static_cast<int64_t>(largest));
  }
  for (auto& per_linear : lora_grad_) per_linear.assign(static_cast<size_t>(c_.layers), {-1, -1});
}

// Linear::forward: lora_linear (engine/cuda/lora_linear.cpp) or, unadapted, a matmul with
// the weight dequantized by the caller (kept by the matmul node when recording).
Replay::Linear Replay::linear_forward(int j, int64_t t, bool record) {
  const auto [in, out] = shapes_[j];
  const int64_t r = in_.lora_r;
  Linear res;
  if (!in_.adapted[j] || lora_off_) {
    Buf w = tl_.alloc(Owner::DequantWeight, out * in * kB);
    res.y = tl_.alloc(Owner::Activations, t * out * kB);
    if (record) res.saved_weight = w;
    else tl_.free(w);
    return res;
  }
  Buf ac = tl_.alloc(Owner::Workspace, r * in * kB);    // A in bf16
  Buf bc = tl_.alloc(Owner::Workspace, out * r * kB);   // B in bf16
  Buf tt = tl_.alloc(Owner::Workspace, t * r * kB);     // t = q m(x) A^T
  if (in_.dropout && !no_grad_pass_) {  // no dropout outside training
    Buf xm = tl_.alloc(Owner::Workspace, t * in * kB);  // m(x), freed after its GEMM
    tl_.free(xm);
  }
  res.y = tl_.alloc(Owner::Activations, t * out * kB);
  if (t > 64) {  // few tokens read the 4-bit weight directly (matmul_direct)
    Buf w = tl_.alloc(Owner::DequantWeight, out * in * kB);
    tl_.free(w);
  }
  tl_.free(tt);
  tl_.free(bc);
  tl_.free(ac);
  return res;
}

// lora_linear_backward: dx (when the input needs it), dA, dB; the caller does the autograd
// part (saved inputs freed, gradients cloned into slots, outputs freed).
Replay::Grads Replay::linear_backward(int j, int64_t t, bool want_dx) {
  const auto [in, out] = shapes_[j];
  const int64_t r = in_.lora_r;
  Grads g;
  if (!in_.adapted[j]) {  // matmul backward: da only (the weight is frozen)
    if (want_dx) g.dx = tl_.alloc(Owner::Gradients, t * in * kB);
    return g;
  }
  Buf ac = tl_.alloc(Owner::Workspace, r * in * kB);
  Buf bc = tl_.alloc(Owner::Workspace, out * r * kB);
  Buf gb = tl_.alloc(Owner::Workspace, t * r * kB);  // g_b = dy B
  if (want_dx) {
    g.dx = tl_.alloc(Owner::Gradients, t * in * kB);
    Buf w = tl_.alloc(Owner::DequantWeight, out * in * kB);
    tl_.free(w);
  }
  Buf xm = in_.dropout ? tl_.alloc(Owner::Workspace, t * in * kB) : -1;
  g.da = tl_.alloc(Owner::LoraGrads, r * in * 4);
  Buf tt = tl_.alloc(Owner::Workspace, t * r * kB);
  g.db = tl_.alloc(Owner::LoraGrads, out * r * 4);
  tl_.free(tt);
  tl_.free(xm);
  tl_.free(gb);
  tl_.free(bc);
  tl_.free(ac);
  return g;
}

// dA, dB into .grad (a clone on the first micro-batch's first arrival), then freed.
void Replay::lora_grads(int j, Grads& g) {
  if (!in_.adapted[j]) return;
  auto& [ga, gb] = lora_grad_[j][static_cast<size_t>(layer_)];
  const auto [in, out] = shapes_[j];
  if (ga < 0) ga = tl_.alloc(Owner::LoraGrads, in_.lora_r * in * 4);
  if (gb < 0) gb = tl_.alloc(Owner::LoraGrads, out * in_.lora_r * 4);
  tl_.free(g.da);
  tl_.free(g.db);
}

// down(swiglu(gate(x), up(x))) on t rows; recording fills the tape's g, u, a.
Buf Replay::mlp_forward(Buf x, int64_t t, bool record, Tape* tape) {
  (void)x;
  const int64_t i = c_.intermediate;
  Linear up = linear_forward(5, t, record);  // arguments: right to left (GCC)
  Linear gate = linear_forward(4, t, record);
  Buf a = tl_.alloc(Owner::Activations, t * i * kB);
  if (record) {
    tape->g = gate.y, tape->u = up.y, tape->a = a;
    tape->w[4] = gate.saved_weight, tape->w[5] = up.saved_weight;
  } else {
    tl_.free(gate.y);
    tl_.free(up.y);
  }
  Linear down = linear_forward(6, t, record);
  if (record) tape->w[6] = down.saved_weight;
  else tl_.free(a);
  return down.y;
}

// The MLP's backward from dy (the add's gradient slot) to dx; frees what its nodes kept.
// x_saved: the MLP input, whose last references are the gate and up nodes (untiled).
Buf Replay::mlp_backward(Buf& dy, int64_t t, Tape& tape, bool want_dx, Buf* x_saved) {
  const int64_t h = c_.hidden, i = c_.intermediate;
  Grads down = linear_backward(6, t, true);
  tl_.free(tape.a);
  tl_.free(tape.w[6]);
  Buf slot_sw = -1;
  accumulate(slot_sw, t * i * kB);
  lora_grads(6, down);
  tl_.free(down.dx);
  tl_.free(dy);
  Buf dgate = tl_.alloc(Owner::Gradients, t * i * kB), dup = tl_.alloc(Owner::Gradients, t * i * kB);
  tl_.free(tape.g);
  tl_.free(tape.u);
  Buf slot_gate = -1, slot_up = -1;
  accumulate(slot_gate, t * i * kB);
  accumulate(slot_up, t * i * kB);
  tl_.free(dgate);
  tl_.free(dup);
  tl_.free(slot_sw);
  Buf slot_x = -1;
  Grads up = linear_backward(5, t, want_dx);
  tl_.free(tape.w[5]);
  if (want_dx) accumulate(slot_x, t * h * kB);
  lora_grads(5, up);
  tl_.free(up.dx);
  tl_.free(slot_up);
  Grads gate = linear_backward(4, t, want_dx);
  tl_.free(tape.w[4]);
  if (x_saved) tl_.free(*x_saved);
  if (want_dx) accumulate(slot_x, t * h * kB);
  lora_grads(4, gate);
  tl_.free(gate.dx);
  tl_.free(slot_gate);
  return slot_x;
}

// LlamaModel::layer_forward on T tokens. Recording keeps the tape (recompute); without it
// every intermediate dies with its last reference. input_grad: h requires a gradient.
Buf Replay::layer_forward(Buf h, bool record, Tape* tape, bool input_grad) {
  (void)h;
  const int64_t t = tokens_, hd = c_.hidden, q = c_.q_dim(), kv = c_.kv_dim();
  Tape local;
  Tape& tp = tape ? *tape : local;
  tp.n = tl_.alloc(Owner::Activations, t * hd * kB);
  tp.rstd1 = tl_.alloc(Owner::Workspace, t * 4);
  if (!(record && input_grad)) tl_.free(tp.rstd1);  // rms_norm records only if h needs a gradient
  Linear lq = linear_forward(0, t, record), lk = linear_forward(1, t, record),
         lv = linear_forward(2, t, record);
  tp.w[0] = lq.saved_weight, tp.w[1] = lk.saved_weight, tp.w[2] = lv.saved_weight;
  tp.v = lv.y;
  tp.kr = tl_.alloc(Owner::Activations, t * kv * kB);  // rope(k), rope(q): arguments right to left
  tp.qr = tl_.alloc(Owner::Activations, t * q * kB);
  tp.att = tl_.alloc(Owner::Activations, t * q * kB);
  tp.lse = tl_.alloc(Owner::Activations, c_.heads * t * 4);
  if (!record) {
    tl_.free(tp.lse);
    tl_.free(tp.qr);
    tl_.free(tp.kr);
  }
  Linear lo = linear_forward(3, t, record);
  tp.w[3] = lo.saved_weight;
  tp.h1 = tl_.alloc(Owner::Activations, t * hd * kB);
  tl_.free(lo.y);
  tp.m = tl_.alloc(Owner::Activations, t * hd * kB);
  tp.rstd2 = tl_.alloc(Owner::Workspace, t * 4);
  if (!record) tl_.free(tp.rstd2);
  const int64_t tile = (in_.tile_tokens + 3) / 4 * 4;
  Buf y;
  if (tile <= 0 || tile >= t) {
    y = mlp_forward(tp.m, t, record, &tp);
  } else {  // engine/tiling.cpp: no-grad tiles into y; the node keeps only m
    y = -1;
    for (int64_t first = 0; first < t; first += tile) {
      const int64_t rows = std::min(tile, t - first);
      Buf x_tile = tl_.alloc(Owner::Activations, rows * hd * kB);
      Buf y_tile = mlp_forward(x_tile, rows, false, nullptr);
      tl_.free(x_tile);
      if (y < 0) y = tl_.alloc(Owner::Activations, t * hd * kB);
      tl_.free(y_tile);
    }
  }
  tp.out = tl_.alloc(Owner::Activations, t * hd * kB);
  tl_.free(y);
  // Return: the locals die; the tape keeps what its nodes saved.
  tl_.free(lq.y);
  tl_.free(lk.y);
  if (!record) {
    tl_.free(tp.n);
    tl_.free(tp.v);
    tl_.free(tp.att);
    tl_.free(tp.h1);
    tl_.free(tp.m);
    if (tp.g >= 0) {
      tl_.free(tp.g);
      tl_.free(tp.u);
      tl_.free(tp.a);
    }
  }
  return tp.out;
}

// CheckpointNode::backward of layer `layer`: recompute with recording, then the tape in
// reverse. g_out: the layer output's gradient (held by the caller until we return);
// g_in_slot: where the gradient of the layer's input accumulates (the previous node's slot).
void Replay::layer_backward(int layer, Tape& tp, Buf& g_out, Buf& g_in_slot) {
  layer_ = layer;
  const std::string where = "backward, layer " + std::to_string(layer) + ": ";
  const int64_t t = tokens_, hd = c_.hidden, q = c_.q_dim(), kv = c_.kv_dim();
  const bool input_grad = layer > 0;  // layer 0's input is the frozen embedding's output
  if (in_.checkpoint_layers) {  // CheckpointNode: recompute with recording
    if (in_.offload_checkpoints) {  // engine/offload.cpp: prefetch this input and the previous, take
      Buf& mine = returned_[static_cast<size_t>(layer)];
      if (mine < 0) mine = tl_.alloc(Owner::Checkpoints, t * hd * kB);
      if (layer > 0) returned_[static_cast<size_t>(layer - 1)] = tl_.alloc(Owner::Checkpoints, t * hd * kB);
      tl_.free(in_flight_);  // take() drains the last offload
    }
    tl_.phase(where + "recompute");
    layer_forward(-1, true, &tp, input_grad);
  }
  const int64_t tile = (in_.tile_tokens + 3) / 4 * 4;
  const bool tiled = tile > 0 && tile < t;
  tl_.phase(where + "mlp");
  Buf slot_add2 = -1;
  accumulate(slot_add2, t * hd * kB);            // the seed, cloned
  Buf slot_add1 = -1, slot_mlp = -1;
  accumulate(slot_add1, t * hd * kB);
  accumulate(slot_mlp, t * hd * kB);
  tl_.free(slot_add2);
  Buf slot_rms2;
  if (!tiled) {
    slot_rms2 = mlp_backward(slot_mlp, t, tp, true, &tp.m);
  } else {  // TiledNode::backward: per tile, recompute with recording and back-propagate
    Buf dx = tl_.alloc(Owner::Gradients, t * hd * kB);
    for (int64_t first = 0; first < t; first += tile) {
      const int64_t rows = std::min(tile, t - first);
      Buf x_tile = tl_.alloc(Owner::Activations, rows * hd * kB);
      Tape tile_tape;
      Buf y_tile = mlp_forward(x_tile, rows, true, &tile_tape);
      Buf dy_tile = tl_.alloc(Owner::Gradients, rows * hd * kB);
      Buf seed = -1;
      accumulate(seed, rows * hd * kB);
      Buf x_grad = mlp_backward(seed, rows, tile_tape, true, nullptr);
      tl_.free(dy_tile);
      tl_.free(y_tile);
      tl_.free(x_grad);
      tl_.free(x_tile);
    }
    slot_rms2 = -1;
    accumulate(slot_rms2, t * hd * kB);
    tl_.free(dx);
    tl_.free(slot_mlp);
  }
  tl_.phase(where + "attention");
  Buf dx2 = tl_.alloc(Owner::Gradients, t * hd * kB);  // rms_norm 2
  tl_.free(tp.h1);
  tl_.free(tp.rstd2);
  tl_.free(dx2);
  tl_.free(slot_rms2);
  Buf leaf_grad = -1, slot_o = -1;  // add 1: {g, g}
  if (input_grad) accumulate(leaf_grad, t * hd * kB);
  accumulate(slot_o, t * hd * kB);
  tl_.free(slot_add1);
  Grads go = linear_backward(3, t, true);
  tl_.free(tp.w[3]);
  Buf slot_att = -1;
  accumulate(slot_att, t * q * kB);
  lora_grads(3, go);
  tl_.free(go.dx);
  tl_.free(slot_o);
  {  // attention backward (engine/cuda/attention.cpp)
    Buf ws = tl_.alloc(Owner::Workspace, attention_workspace());
    Buf dq = tl_.alloc(Owner::Gradients, t * q * kB), dk = tl_.alloc(Owner::Gradients, t * kv * kB),
        dv = tl_.alloc(Owner::Gradients, t * kv * kB);
    tl_.free(ws);
    for (Buf* b : {&tp.qr, &tp.kr, &tp.v, &tp.att, &tp.lse}) tl_.free(*b);
    Buf slot_rq = -1, slot_rk = -1, slot_v = -1;
    accumulate(slot_rq, t * q * kB);
    accumulate(slot_rk, t * kv * kB);
    accumulate(slot_v, t * kv * kB);
    tl_.free(dq);
    tl_.free(dk);
    tl_.free(dv);
    tl_.free(slot_att);
    tl_.phase(where + "q, k, v");
    Buf slot_rms1 = -1;
    Grads gv = linear_backward(2, t, input_grad);
    tl_.free(tp.w[2]);
    if (input_grad) accumulate(slot_rms1, t * hd * kB);
    lora_grads(2, gv);
    tl_.free(gv.dx);
    tl_.free(slot_v);
    Buf rk = tl_.alloc(Owner::Gradients, t * kv * kB), slot_k = -1;  // rope backward
    accumulate(slot_k, t * kv * kB);
    tl_.free(rk);
    tl_.free(slot_rk);
    Grads gk = linear_backward(1, t, input_grad);
    tl_.free(tp.w[1]);
    if (input_grad) accumulate(slot_rms1, t * hd * kB);
    lora_grads(1, gk);
    tl_.free(gk.dx);
    tl_.free(slot_k);
    Buf rq = tl_.alloc(Owner::Gradients, t * q * kB), slot_q = -1;
    accumulate(slot_q, t * q * kB);
    tl_.free(rq);
    tl_.free(slot_rq);
    Grads gq = linear_backward(0, t, input_grad);
    tl_.free(tp.w[0]);
    tl_.free(tp.n);
    if (input_grad) accumulate(slot_rms1, t * hd * kB);
    lora_grads(0, gq);
    tl_.free(gq.dx);
    tl_.free(slot_q);
    if (input_grad) {  // rms_norm 1 into the leaf's gradient
      Buf dx1 = tl_.alloc(Owner::Gradients, t * hd * kB);
      tl_.free(tp.rstd1);
      tl_.free(dx1);
      tl_.free(slot_rms1);
    }
  }
  // CheckpointNode returns: the recompute's output and the tiled node's input die; the
  // caller clones the input gradient into the previous node's slot, then drops its own.
  tl_.free(tp.out);
  tl_.free(tp.m);
  if (in_.checkpoint_layers) {  // and the input it saved (engine/autograd.cpp: CheckpointNode)
    tl_.free(returned_[static_cast<size_t>(layer)]);
    tl_.free(saved_inputs_[static_cast<size_t>(layer)]);
  }
  if (input_grad) accumulate(g_in_slot, t * hd * kB);
  tl_.free(leaf_grad);
  tl_.free(g_out);
}

// kernels/attention_backward.cu: fp32 row statistics, plus fp32 partial dK, dV per split
// of the GQA group on the fast path (bf16, head_dim 64 or 128; choose_splits: the least
// divisor of the group giving 4 blocks of 128 keys per SM, partials under 2 GiB).
int64_t Replay::attention_workspace() const {
  const int64_t b = in_.batch, s = in_.seq, hq = c_.heads, hkv = c_.kv_heads, d = c_.head_dim;
  const int64_t delta = (b * hq * s * 4 + 15) / 16 * 16;
  int64_t bytes = delta;
  if (d == 64 || d == 128) {
    const int64_t group = hq / hkv, blocks = (s + 127) / 128 * b * hkv;
    const int64_t per_split = 2 * b * s * hkv * d * 4;
    int64_t splits = 1;
    for (int64_t k = 1; k <= group; ++k) {
      if (group % k || (k > 1 && k * per_split > (int64_t(2) << 30))) continue;
      splits = k;
      if (blocks * k >= 4 * int64_t(in_.sm_count)) break;
    }
    if (splits > 1) bytes += 2 * splits * b * s * hkv * d * 4;
  }
  return (bytes + 3) / 4 * 4;  // allocated as fp32 elements
}

}  // namespace replay

SimResult simulate_run(const SimInput& in) {
  ENGINE_CHECK(in.seq > 0 && in.batch > 0, "memory plan: empty micro-batch");
  replay::Replay replay(in);
  return replay.run();
}

}  // namespace train
