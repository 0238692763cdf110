// Offloaded tensors (engine/offload.h). Backend-level code like engine/backend.cpp: the
// only other file above engine/cuda/ that knows whether CUDA is built.
#include "engine/offload.h"

#include <map>
#include <utility>
#include <vector>

#include "engine/cuda/copy_stream.h"
#include "engine/cuda/pinned_allocator.h"
#include "engine/error.h"

namespace engine {

#if !ENGINE_WITH_CUDA
// No CUDA tensors exist in this build, so these are never reached.
namespace cuda {
CopyEvent copy_after_current(void*, const void*, size_t) {
  ENGINE_CHECK(false, "offload copies need a CUDA build");
  return nullptr;
}
void current_waits(CopyEvent) { ENGINE_CHECK(false, "offload copies need a CUDA build"); }
}  // namespace cuda
#endif

namespace {

// Device tensors whose copy to the host may still run, with the event after the copy.
thread_local std::vector<std::pair<Tensor, cuda::CopyEvent>> in_flight;

// Idle pinned buffers by byte count and dtype: every checkpoint of a run has the same size, so a
// step reuses the previous step's buffers and no cudaHostAlloc / cudaFreeHost (which
// synchronises the device) happens per layer.
using PoolKey = std::pair<size_t, DType>;
std::map<PoolKey, std::vector<Tensor>>& pool() {
  static auto* buffers = new std::map<PoolKey, std::vector<Tensor>>();  // never destroyed
  return *buffers;
}

Tensor host_buffer(const Tensor& like) {
  auto& free = pool()[{like.nbytes(), like.dtype()}];
  if (!free.empty()) {
    Tensor t = std::move(free.back());
    free.pop_back();
    return t.view(like.shape());
  }
  return Tensor::empty_from(cuda::pinned_allocator(), like.shape(), like.dtype());
}

}  // namespace

void drain_offloads() {
  for (auto& [tensor, stored] : in_flight) cuda::current_waits(stored);
  in_flight.clear();  // drops the device tensors: their next user is ordered after the copy
}

void release_offload_pool() { pool().clear(); }

size_t offload_pool_bytes() {
  size_t total = 0;
  for (const auto& [key, buffers] : pool()) total += key.first * buffers.size();
  return total;
}

OffloadedTensor::OffloadedTensor(const Tensor& t)
    : shape_(t.shape()), dtype_(t.dtype()), device_of_(t.device()) {
  if (t.device().is_cpu()) {
    kept_ = t;
    return;
  }
  drain_offloads();
  host_ = host_buffer(t);
  in_flight.emplace_back(t, cuda::copy_after_current(host_.raw_data(), t.raw_data(), t.nbytes()));
}

OffloadedTensor::~OffloadedTensor() {
  // A prefetch never taken: the copy may still write into the buffer, so the current
  // stream (the buffer's next user) waits for it before the buffer goes back.
  if (loaded_) {
    try {
      cuda::current_waits(loaded_);
    } catch (...) {
    }
  }
}

void OffloadedTensor::prefetch() {
  if (!host_.defined() || device_.defined()) return;
  device_ = Tensor::empty(shape_, dtype_, device_of_);
  loaded_ = cuda::copy_after_current(device_.raw_data(), host_.raw_data(), host_.nbytes());
}

Tensor OffloadedTensor::take() {
  if (!host_.defined()) {
    ENGINE_CHECK(kept_.defined(), "OffloadedTensor::take called twice");
    return std::move(kept_);
  }
  drain_offloads();
  prefetch();
  cuda::current_waits(loaded_);
  loaded_ = nullptr;
  pool()[{host_.nbytes(), host_.dtype()}].push_back(std::move(host_));
  host_ = Tensor();
  return std::move(device_);
}

}  // namespace engine
