// Offloading a device tensor to pinned host memory and bringing it back, ordered by
// CUDA events on one copy stream (the activation checkpoints of long sequences:
// engine::checkpoint with offload, docs/memory.md).
//
//   OffloadedTensor(t)  the copy stream waits for the current stream (t is written),
//                       copies t to a pinned host buffer, records `stored`. t itself
//                       stays referenced until the next offload or take on this thread,
//                       which makes the current stream wait for `stored` and only then
//                       drops it: the caching allocator may hand the block to the current
//                       stream at once (engine/cuda/caching_allocator.h), and that stream's
//                       later work is now ordered after the copy.
//   prefetch()          a fresh device buffer; the copy stream waits for the current
//                       stream (the buffer's previous users), copies host -> device,
//                       records `loaded`.
//   take()              prefetches if not done, makes the current stream wait for
//                       `loaded`, returns the device tensor, and gives the host buffer
//                       back to a pool (its next use is a copy on the same copy stream,
//                       so after this one).
// No call waits on the host: no cudaDeviceSynchronize, no cudaStreamSynchronize, no
// cudaFreeHost per tensor (pooled host buffers are freed by release_offload_pool()).
// On the CPU, and for CPU tensors, every step is a no-op and take() returns t itself.
#pragma once
#include <cstddef>
#include <memory>

#include "engine/tensor.h"

namespace engine {

class OffloadedTensor {
 public:
  explicit OffloadedTensor(const Tensor& t);
  ~OffloadedTensor();
  OffloadedTensor(const OffloadedTensor&) = delete;
  OffloadedTensor& operator=(const OffloadedTensor&) = delete;

  void prefetch();
  Tensor take();  // once
  bool on_host() const { return host_.defined(); }

 private:
  Tensor kept_;    // the tensor itself (CPU tensors: nothing moves)
  Tensor host_;    // pinned copy
  Tensor device_;  // prefetched copy
  void* loaded_ = nullptr;  // event after the host -> device copy
  Shape shape_;
  DType dtype_;
  Device device_of_;
};

// Waits (on the device: the current stream waits for the copies) for every offload of
// this thread still in flight and drops the device tensors they hold.
void drain_offloads();
// Frees the pool of pinned host buffers kept for reuse (synchronises: cudaFreeHost).
void release_offload_pool();
// Bytes of pinned host memory the pool holds idle (for tests and reports).
size_t offload_pool_bytes();

}  // namespace engine
