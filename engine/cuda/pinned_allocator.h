// Pinned (page-locked) host memory behind the engine's Allocator interface, so every
// pinned byte is counted (in use, peak, reserved) and bounded by a budget like device
// memory. Pinned memory is what a copy stream can move to and from the device
// asynchronously: the paged optimizer keeps its states there (engine/optim/paged_adamw.h)
// and offloaded activation checkpoints go there.
//
// Only cudaHostAlloc and cudaFreeHost touch the system, so a dry CUDA runtime that fakes
// them (virtual memory) sees every pinned byte as well.
//
// Tensors made from it (Tensor::empty_from(pinned_allocator(), ...)) are host tensors
// (Device::cpu()): the host reads and writes them directly.
//
// This header needs no CUDA headers. In a build without CUDA, or on a machine where no
// CUDA device can be used, pinned_allocator() throws engine::Error saying why ("no GPU"),
// and pinned_memory_available() returns false with the same reason.
#pragma once
#include <string>

#include "engine/allocator.h"

namespace engine::cuda {

class PinnedAllocator final : public Allocator {
 public:
  PinnedAllocator() = default;
  PinnedAllocator(const PinnedAllocator&) = delete;
  PinnedAllocator& operator=(const PinnedAllocator&) = delete;
  // Host memory: tensors from here are CPU tensors.
  Device device() const override { return Device::cpu(); }

 protected:
  // cudaHostAlloc (portable: pinned for every device); nullptr when over the budget or
  // when the system refuses (Allocator::allocate then throws engine::OutOfBudget).
  void* system_allocate(size_t bytes) override;
  void system_release(void* ptr, size_t bytes) override;
};

// True when pinned host memory can be allocated (a CUDA build with a usable device);
// otherwise `reason` says why.
bool pinned_memory_available(std::string* reason = nullptr);

// The process's one pinned-host allocator (never destroyed). Throws engine::Error naming
// the reason when pinned_memory_available() is false.
Allocator& pinned_allocator();

}  // namespace engine::cuda
