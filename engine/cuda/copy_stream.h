// The copy stream of offloaded tensors (engine/offload.h) and the event plumbing that
// orders it against the current stream. No CUDA headers: events are opaque handles.
// Only CUDA builds define these; engine/offload.cpp calls them for CUDA tensors only.
#pragma once
#include <cstddef>

namespace engine::cuda {

using CopyEvent = void*;  // a cudaEvent_t

// Queues dst <- src (`bytes`, either direction between pinned host and device memory) on
// the copy stream, after everything queued so far on the current stream; returns an
// event recorded after the copy. Nothing waits on the host.
CopyEvent copy_after_current(void* dst, const void* src, size_t bytes);
// The current stream waits (on the device) for `event`, which is then destroyed.
void current_waits(CopyEvent event);

}  // namespace engine::cuda
