// Paged AdamW (--optim paged_adamw_32bit | paged_adamw_8bit, bitsandbytes' names).
//
// The states of every parameter live in one host buffer: pinned host memory
// (engine/cuda/pinned_allocator.h) when the parameters are on a CUDA device, ordinary host
// memory on the CPU. The buffer is laid out as a sequence of chunks of at most page_bytes,
// each a list of segments (a parameter's element range with its states), so that one chunk
// is one contiguous copy. A step on the device streams the chunks through kOptimizerPages
// device pages: chunk k+1 is copied in on a copy stream while chunk k is updated on the
// compute stream, then copied back; events order copies and kernels, with no host
// synchronisation per chunk (engine/cuda/paged_adamw.cpp). Device memory for the states is
// therefore kOptimizerPages * page_bytes whatever the model's size.
//
// 32-bit: fp32 m and v; per element kmath::adamw_update, so parameters and moments are
// bitwise those of resident AdamW (engine/optim/adamw.h).
// 8-bit: a parameter of >= 4096 elements keeps both moments as u8 codes with one fp32 absmax
// per 256-value block (kernels/math/adamw8bit.h: bitsandbytes' AdamW8bit arithmetic);
// smaller ones keep fp32 states, as bitsandbytes does.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/optim/adamw.h"
#include "engine/optim/optimizer.h"
#include "engine/tensor.h"
#include "kernels/math/adamw.h"

namespace engine::optim {

// Device memory of the paged optimizer: kOptimizerPages pages of kOptimizerPageBytes (the
// memory planner reads these).
inline constexpr size_t kOptimizerPageBytes = size_t{32} << 20;
inline constexpr int kOptimizerPages = 2;
inline constexpr size_t kOptimizerDeviceBytes = kOptimizerPageBytes * kOptimizerPages;

// Host bytes of the states of one parameter of `numel` elements (planner and tests):
// 8 per element in 32-bit; in 8-bit 2 per element plus 8 per 256-block, or 8 per element
// below 4096 elements. (Chunk alignment adds at most 64 bytes per segment.)
size_t optimizer_state_bytes(int64_t numel, bool eight_bit);

// One parameter's element range [begin, end) inside a chunk; byte offsets from the chunk's
// start. fp32 segments use m and v; quantized ones m and v (u8 codes) and the absmaxes.
struct StateSegment {
  size_t param = 0;
  int64_t begin = 0, end = 0;
  bool quantized = false;
  size_t m = 0, v = 0, absmax_m = 0, absmax_v = 0;
};

struct StateChunk {
  size_t offset = 0;  // into the host buffer
  size_t bytes = 0;
  std::vector<StateSegment> segments;
};

// The chunks of the states of parameters of `numels` elements, in order (no allocation: the
// memory planner calls it too), and the device bytes their pages take: the largest chunk
// times min(chunks, kOptimizerPages).
std::vector<StateChunk> plan_state_chunks(const std::vector<int64_t>& numels, bool eight_bit,
                                          size_t page_bytes = kOptimizerPageBytes);
size_t paged_device_bytes(const std::vector<StateChunk>& chunks);

class PagedAdamW final : public Optimizer {
 public:
  // All parameters f32 on one device. page_bytes >= 4096 (tests use small pages to make
  // many chunks); the default is kOptimizerPageBytes.
  PagedAdamW(std::vector<Tensor> params, AdamWConfig config, bool eight_bit,
             size_t page_bytes = kOptimizerPageBytes);
  ~PagedAdamW() override;
  void step() override;
  void zero_grad() override;
  void set_lr(float lr) override { config_.lr = lr; }
  int64_t steps() const override { return step_; }
  const std::vector<Tensor>& params() const override { return params_; }
  std::string kind() const override { return eight_bit_ ? "paged_adamw_8bit" : "paged_adamw_32bit"; }
  // "step" (i32 [2], as AdamW), then per parameter i: "m.<i>", "v.<i>" (f32, the parameter's
  // shape) for fp32 states, or "qm.<i>", "qv.<i>" (u8, the parameter's shape) and
  // "absmax_m.<i>", "absmax_v.<i>" (f32 [blocks]) for quantized ones.
  OptimizerState state() const override;
  void load_state(const OptimizerState& state) override;

  const std::vector<StateChunk>& chunks() const { return chunks_; }
  size_t host_bytes() const { return host_.nbytes(); }
  bool quantized(size_t param) const { return quantized_[param]; }

 private:
  void step_on_host(const kmath::AdamWStep& s);

  std::vector<Tensor> params_;
  std::vector<bool> quantized_;
  AdamWConfig config_;
  bool eight_bit_;
  size_t page_bytes_;
  int64_t step_ = 0;
  std::vector<StateChunk> chunks_;
  Tensor host_;                // u8, the chunks back to back (pinned for CUDA parameters)
  std::vector<Tensor> pages_;  // kOptimizerPages u8 device pages (CUDA parameters only)
};

}  // namespace engine::optim

namespace engine::backend {
// The CUDA half of PagedAdamW::step (engine/cuda/paged_adamw.cpp): every chunk in, updated,
// and out again through `pages`, on the current stream and a copy stream; returns without
// waiting (the current stream waits for the last copy back). Throws in a build without CUDA.
void device_paged_adamw_step(const std::vector<Tensor>& params,
                             const std::vector<optim::StateChunk>& chunks, uint8_t* host_state,
                             std::vector<Tensor>& pages, const kmath::AdamWStep& step);
}  // namespace engine::backend
