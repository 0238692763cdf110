// The allocation timeline of one training run on a CUDA device, replayed without a device:
// the planner's engine (tools/train/memory_plan.h). Every allocation the CUDA path makes
// (models/llama.cpp, engine/autograd.cpp, engine/tiling.cpp, engine/cuda/*.cpp) is replayed
// in the code's order with its byte count, and every free where the code drops the last
// reference, so the planned peak is the caching allocator's in-use peak
// (engine/allocator.h), the number the dry run reports, and the live set at that peak
// comes out by owner. No tensor is created: the replay runs in microseconds for any size.
//
// What it follows (per micro-batch of T = batch x seq tokens, bf16 activations, b = 2):
//   load       NF4 linears, bf16 embedding / norms / lm_head, fp32 LoRA, optimizer states
//   evaluate   a no-grad forward (one layer's intermediates at a time) and the loss
//   reference  DPO: the same no-grad forward with the adapters off, and the log-probs
//   forward    embedding, per layer a no-grad pass whose input is kept (the checkpoint)
//   loss       fused lm_head cross-entropy (kernels/cross_entropy_tiling.h scratch)
//   backward   per layer, last first: recompute with recording, then the tape in reverse
//              (the order engine::backward's DFS gives), gradients cloned into slots on
//              first arrival (autograd accumulate_into), LoRA gradients cloned into .grad
//   optimizer  clip_grad_norm and the AdamW step
// When the code changes an allocation, this file changes with it; the dry-run comparison
// (tests/tools/test_memory_plan.cpp) fails otherwise.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "models/llama_config.h"

namespace train {

// Who owns a device byte (the plan's items).
enum class Owner {
  Weights,          // NF4 linears + double-quant statistics, bf16 embedding, norms, lm_head
  Lora,             // fp32 LoRA factors
  LoraGrads,        // their fp32 gradients
  Optimizer,        // AdamW moments (resident) or the paged variants' device pages
  Checkpoints,      // each layer's saved input (on the device when not offloaded)
  Activations,      // the recorded tape of the layer in recompute/backward, forward values
  Gradients,        // activation gradients in flight (slots, clones, op outputs)
  DequantWeight,    // one frozen weight dequantized to bf16 for its GEMM
  Workspace,        // cuBLASLt, attention, lm_head loss scratch, LoRA operand copies
  Count
};
const char* owner_name(Owner owner);

struct SimInput {
  models::LlamaConfig config;
  int64_t batch = 1, seq = 0;   // one micro-batch
  int64_t grad_accum = 1;
  int64_t lora_r = 16;
  std::array<bool, 7> adapted{};  // all_linear_names() order
  bool dropout = true;            // lora_dropout > 0: masked input copies
  bool checkpoint_layers = true;
  bool offload_checkpoints = false;
  int64_t tile_tokens = 0;        // MLP token tile (0: untiled)
  int64_t loss_chunk_rows = 0;    // lm_head loss rows per chunk (0: the kernel's plan)
  bool embedding_on_host = false;
  std::string optim = "adamw";    // adamw | paged_adamw_32bit | paged_adamw_8bit
  int64_t eval_batch = 0, eval_seq = 0;  // 0: no evaluation
  int sm_count = 108;             // attention backward's split choice depends on it
  // --method dpo: 2 x batch rows (chosen, rejected) per micro-batch, the per-sequence
  // log-probs instead of the mean loss, and, unless precomputed, a no-grad reference pass
  // (adapters off) before each micro-batch; evaluation is a no-grad log-probs pass.
  bool dpo = false;
  bool dpo_reference_each_step = true;
};

struct SimResult {
  int64_t peak = 0;          // allocator in-use peak (bytes requested)
  int64_t peak_rounded = 0;  // the same with every block at its size class (what must fit)
  std::array<int64_t, static_cast<size_t>(Owner::Count)> at_peak{};  // live bytes by owner
  std::string peak_phase;    // where the peak happens, e.g. "backward, layer 0: swiglu"
  int64_t host_pinned = 0;   // offloaded checkpoints, paged optimizer states
  int64_t host = 0;          // pageable host memory the run keeps (embedding on host)
};

SimResult simulate_run(const SimInput& in);

// Bytes of one NF4 weight [out, in] with double quantization: packed nibbles,
// one u8 code per 64-block, one fp32 nested absmax per 256 codes.
int64_t nf4_weight_bytes(int64_t out, int64_t in);

}  // namespace train
