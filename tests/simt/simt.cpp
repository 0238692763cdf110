// The SIMT emulator's scheduler and warp-wide instructions (the model is in simt.h).
#include "tests/simt/simt.h"

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <exception>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "kernels/math/bf16.h"
#include "tests/simt/arch.h"
#include "tests/simt/fiber.h"

namespace simt {

ThreadState* current = nullptr;

namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kGuardBytes = 4096;  // below each stack: an overflow faults, it does not corrupt
constexpr unsigned char kPoison = 0xFF;  // NaN in every float and bf16 format
constexpr size_t kMaxStaticShared = 48 * 1024;  // per block, on every architecture (ptxas)

struct PendingCopy {
  unsigned char* dst;
  std::array<unsigned char, 16> data;
  int bytes;
  int group;
};

struct Fiber {
  ThreadState state;
  FiberContext context;
  bool done = false;
  bool at_block_barrier = false;
  uint64_t block_generation = 0;  // the block barrier generation it waits to end
  std::vector<PendingCopy> copies;
  int open_group = 0;  // cp.async group the next copy joins
};

struct Barrier {
  int arrived = 0;
  unsigned arrived_mask = 0;  // warp barriers
  uint64_t generation = 0;
};

// The rendezvous of the lanes of one mask. CUDA requires every lane named in a mask to
// execute the same warp-wide instruction with that mask, so lanes of disjoint masks (the
// two sides of a divergent warp) meet at separate barriers, through separate slots.
struct WarpBarrier {
  unsigned mask = 0;
  Barrier barrier;
  // Two buffers, alternating with the barrier's generation: a lane can be at most one
  // barrier of its mask ahead of another, so one barrier per exchange suffices.
  std::array<std::array<std::array<unsigned char, kSlotBytes>, 32>, 2> slots{};
};

struct Warp {
  unsigned live = 0;                  // lanes that exist and have not exited
  WarpBarrier full{0xffffffffu, {}};  // the mask of nearly every warp-wide instruction
  std::vector<std::unique_ptr<WarpBarrier>> partial;  // one per other mask in use
};

// One block in flight.
struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  Barrier barrier;
  int live = 0;
  std::vector<unsigned char> dynamic_shared;
  std::vector<std::pair<const void*, size_t>> static_shared;  // key -> offset in the arena
  size_t static_shared_bytes = 0;
  uint64_t events = 0;  // arrivals, releases and exits: progress, for deadlock detection
  std::exception_ptr error;
  SchedulerContext scheduler;
  const std::function<void()>* body = nullptr;
};

Block* block = nullptr;
Fiber* running = nullptr;

std::vector<unsigned char*>& stack_pool() {
  static std::vector<unsigned char*> pool;
  return pool;
}

unsigned char* stack_for(size_t i) {
  auto& pool = stack_pool();
  while (pool.size() <= i) {
    void* p = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("simt: cannot map a fiber stack");
    mprotect(p, kGuardBytes, PROT_NONE);
    pool.push_back(static_cast<unsigned char*>(p) + kGuardBytes);
  }
  return pool[i];
}

void yield() { fiber_yield(running->context, block->scheduler); }

Warp& my_warp() { return block->warps[running->state.linear / 32]; }

void release_block_if_complete() {
  Barrier& b = block->barrier;
  if (b.arrived > 0 && b.arrived >= block->live) {
    b.arrived = 0;
    ++b.generation;
    ++block->events;
  }
}

// Lanes outside the mask take no part; a barrier completes when every live lane of its
// mask has arrived.
void release_warp_if_complete(const Warp& w, WarpBarrier& wb) {
  Barrier& b = wb.barrier;
  if (b.arrived_mask != 0 && ((w.live & wb.mask) & ~b.arrived_mask) == 0) {
    b.arrived_mask = 0;
    ++b.generation;
    ++block->events;
  }
}

[[gnu::noinline]] WarpBarrier& partial_barrier(Warp& w, unsigned mask) {
  for (auto& wb : w.partial)
    if (wb->mask == mask) return *wb;
  auto wb = std::make_unique<WarpBarrier>();
  wb->mask = mask;
  return *w.partial.emplace_back(std::move(wb));
}

WarpBarrier& warp_barrier(Warp& w, unsigned mask) {
  return mask == w.full.mask ? w.full : partial_barrier(w, mask);
}

void fiber_main() {
  Fiber* self = running;
  try {
    (*block->body)();
  } catch (...) {
    if (!block->error) block->error = std::current_exception();
  }
  self->done = true;
  --block->live;
  my_warp().live &= ~(1u << (self->state.linear & 31));
  ++block->events;
  release_block_if_complete();
  Warp& warp = my_warp();
  release_warp_if_complete(warp, warp.full);
  for (auto& wb : warp.partial) release_warp_if_complete(warp, *wb);
  fiber_exit(block->scheduler);
}

// Runs f until it waits or ends.
void resume(Block& b, Fiber& f) {
  running = &f;
  current = &f.state;
  fiber_enter(b.scheduler, f.context);
}

// The static shared variables of the block in flight (one block runs at a time).
alignas(128) unsigned char static_arena[kMaxStaticShared];

void run_block(const std::function<void()>& body, dim3 grid, dim3 dims, uint3 index,
               size_t smem) {
  const int threads = static_cast<int>(dims.x * dims.y * dims.z);
  Block b;
  b.body = &body;
  b.live = threads;
  // Shared memory is uninitialized at every block start on a GPU; here it holds poison,
  // so that a read before the block's own write shows as NaN rather than passing with
  // the previous block's values. Static variables are poisoned at their allocation.
  b.dynamic_shared.assign(smem, kPoison);
  b.fibers.resize(static_cast<size_t>(threads));
  b.warps.resize(static_cast<size_t>((threads + 31) / 32));
  for (int i = 0; i < threads; ++i) b.warps[i / 32].live |= 1u << (i % 32);
  block = &b;
  for (int i = 0; i < threads; ++i) {
    Fiber& f = b.fibers[static_cast<size_t>(i)];
    f.state.linear = i;
    f.state.thread_idx = {static_cast<unsigned>(i) % dims.x,
                          static_cast<unsigned>(i) / dims.x % dims.y,
                          static_cast<unsigned>(i) / (dims.x * dims.y)};
    f.state.block_idx = index;
    f.state.block_dim = dims;
    f.state.grid_dim = grid;
    fiber_prepare(f.context, stack_for(static_cast<size_t>(i)), kStackBytes, fiber_main);
  }
  // Warp-serial schedule: one warp runs alone from one __syncthreads to the next, its
  // lanes interleaved at warp-wide instructions; warps take turns in forward order in
  // even blocks and in reverse order in odd ones. A missing __syncthreads between a
  // producer warp and a consumer warp then shows in one of the two orders: the consumer
  // reads the tile before the producer has written it (stale data, or the poison).
  const int warps = static_cast<int>(b.warps.size());
  const bool reverse = (index.x + index.y + index.z) % 2 == 1;
  auto runnable = [&](const Fiber& f) {
    return !f.done && !(f.at_block_barrier && f.block_generation == b.barrier.generation);
  };
  while (b.live > 0 && !b.error) {
    const uint64_t before = b.events;
    for (int wi = 0; wi < warps && !b.error; ++wi) {
      const int w = reverse ? warps - 1 - wi : wi;
      const size_t first = static_cast<size_t>(w) * 32;
      const size_t last = std::min(first + 32, b.fibers.size());
      for (bool any = true; any && !b.error;) {
        any = false;
        const uint64_t pass = b.events;
        for (size_t i = first; i < last && !b.error; ++i) {
          Fiber& f = b.fibers[i];
          if (!runnable(f)) continue;
          any = true;
          resume(b, f);
        }
        if (b.events == pass) break;  // the warp is stuck; the block-level check decides
      }
    }
    if (!b.error && b.live > 0 && b.events == before) {
      std::ostringstream msg;
      msg << "simt: deadlock in block (" << index.x << "," << index.y << "," << index.z
          << "): " << b.live << " threads wait at barriers that not all of their block or warp "
          << "reach";
      block = nullptr;
      throw std::runtime_error(msg.str());
    }
  }
  block = nullptr;
  running = nullptr;
  current = nullptr;
  if (b.error) std::rethrow_exception(b.error);
}

std::map<const void*, size_t>& dynamic_shared_limits() {
  static std::map<const void*, size_t> limits;
  return limits;
}

}  // namespace

bool allow_dynamic_shared(const void* kernel, int bytes) {
  if (bytes < 0 || static_cast<size_t>(bytes) > arch().shared_per_block_optin) return false;
  dynamic_shared_limits()[kernel] = static_cast<size_t>(bytes);
  return true;
}

void launch(const void* kernel, dim3 grid, dim3 dims, size_t smem,
            const std::function<void()>& body) {
  const uint64_t threads = uint64_t(dims.x) * dims.y * dims.z;
  if (threads == 0 || threads > uint64_t(arch().max_threads_per_block) || grid.x == 0 ||
      grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    throw std::runtime_error("simt: invalid launch configuration");
  auto allowed = dynamic_shared_limits().find(kernel);
  const size_t limit =
      allowed == dynamic_shared_limits().end() ? kDefaultDynamicShared : allowed->second;
  if (smem > limit) {
    std::ostringstream msg;
    msg << "simt: launch with " << smem << " bytes of dynamic shared memory, above the "
        << limit << " the kernel allows (" << arch().name << ": at most "
        << arch().shared_per_block_optin << " after cudaFuncSetAttribute)";
    throw std::runtime_error(msg.str());
  }
  if (block != nullptr) throw std::runtime_error("simt: launch from inside a kernel");
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) run_block(body, grid, dims, {x, y, z}, smem);
}

unsigned char* dynamic_shared() { return block->dynamic_shared.data(); }

void* static_shared(const void* key, size_t bytes) {
  Block& b = *block;
  for (const auto& [k, offset] : b.static_shared)
    if (k == key) return static_arena + offset;
  const size_t offset = (b.static_shared_bytes + 15) / 16 * 16;
  if (offset + bytes > kMaxStaticShared)
    throw std::runtime_error("simt: more than 48 KiB of static shared memory in one block");
  if (offset + bytes + b.dynamic_shared.size() > arch().shared_per_block_optin) {
    std::ostringstream msg;
    msg << "simt: " << offset + bytes << " bytes of static and " << b.dynamic_shared.size()
        << " of dynamic shared memory exceed the " << arch().shared_per_block_optin
        << " of a block on " << arch().name;
    throw std::runtime_error(msg.str());
  }
  std::memset(static_arena + offset, kPoison, bytes);
  b.static_shared.emplace_back(key, offset);
  b.static_shared_bytes = offset + bytes;
  return static_arena + offset;
}

void sync_block() {
  Barrier& b = block->barrier;
  const uint64_t gen = b.generation;
  ++b.arrived;
  ++block->events;
  running->at_block_barrier = true;
  running->block_generation = gen;
  release_block_if_complete();
  while (b.generation == gen) yield();
  running->at_block_barrier = false;
}

namespace {
// The barrier of `mask` in the calling lane's warp, checking that the lane is in the mask.
WarpBarrier& my_warp_barrier(unsigned mask) {
  if ((mask & (1u << lane())) == 0)
    throw std::runtime_error("simt: warp-wide operation from a lane outside its mask");
  return warp_barrier(my_warp(), mask);
}

void arrive_and_wait(WarpBarrier& wb) {
  Barrier& b = wb.barrier;
  const uint64_t gen = b.generation;
  b.arrived_mask |= 1u << lane();
  ++block->events;
  release_warp_if_complete(my_warp(), wb);
  while (b.generation == gen) yield();
}
}  // namespace

void sync_warp(unsigned mask) { arrive_and_wait(my_warp_barrier(mask)); }

const unsigned char* warp_exchange(unsigned mask, const void* mine, size_t bytes) {
  WarpBarrier& wb = my_warp_barrier(mask);
  auto& slots = wb.slots[static_cast<size_t>(wb.barrier.generation % 2)];
  std::memcpy(slots[static_cast<size_t>(lane())].data(), mine, bytes);
  arrive_and_wait(wb);
  return slots[0].data();
}

// ---- cp.async: queued per thread, landing at cp.async.wait_group ----------------------

void cp_async(void* smem, const void* gmem, int bytes, bool valid) {
  PendingCopy c{static_cast<unsigned char*>(smem), {}, bytes, running->open_group};
  if (valid) std::memcpy(c.data.data(), gmem, static_cast<size_t>(bytes));
  if (reinterpret_cast<uintptr_t>(smem) % static_cast<uintptr_t>(bytes) != 0)
    throw std::runtime_error("simt: misaligned cp.async destination");
  running->copies.push_back(c);
}

void cp_async_commit() { ++running->open_group; }

void cp_async_wait(int pending) {
  auto& copies = running->copies;
  const int complete_below = running->open_group - pending;  // groups [0, this) must land
  std::vector<PendingCopy> keep;
  for (const PendingCopy& c : copies) {
    if (c.group < complete_below) std::memcpy(c.dst, c.data.data(), static_cast<size_t>(c.bytes));
    else keep.push_back(c);
  }
  copies.swap(keep);
}

// ---- tensor-core instructions -----------------------------------------------------------

namespace {
const unsigned char* slot(const unsigned char* slots, int l) {
  return slots + static_cast<size_t>(l) * kSlotBytes;
}
float bf16_half(uint32_t reg, int half) {
  return kmath::bf16_bits_to_float(static_cast<uint16_t>(reg >> (16 * half)));
}
}  // namespace

void ldmatrix_x4(uint32_t (&r)[4], const void* row_address, bool transpose) {
  if (reinterpret_cast<uintptr_t>(row_address) % 16 != 0)
    throw std::runtime_error("simt: ldmatrix row address not 16-byte aligned");
  const unsigned char* slots = warp_exchange(0xffffffffu, &row_address, sizeof row_address);
  auto element = [&](int row_lane, int col) {  // b16 element `col` of the row lane `row_lane` gave
    const unsigned char* p;
    std::memcpy(&p, slot(slots, row_lane), sizeof p);
    uint16_t v;
    std::memcpy(&v, p + 2 * col, 2);
    return static_cast<uint32_t>(v);
  };
  const int l = lane();
  for (int i = 0; i < 4; ++i) {
    if (!transpose) {
      const int row = 8 * i + l / 4;
      r[i] = element(row, 2 * (l % 4)) | element(row, 2 * (l % 4) + 1) << 16;
    } else {  // element (2(l%4) + j, l/4) of matrix i
      r[i] = element(8 * i + 2 * (l % 4), l / 4) | element(8 * i + 2 * (l % 4) + 1, l / 4) << 16;
    }
  }
}

void mma_m16n8k16_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  struct Fragments {
    uint32_t a[4], b[2];
  };
  const Fragments mine{{a[0], a[1], a[2], a[3]}, {b0, b1}};
  const unsigned char* slots = warp_exchange(0xffffffffu, &mine, sizeof mine);
  Fragments f[32];
  for (int l = 0; l < 32; ++l) std::memcpy(&f[l], slot(slots, l), sizeof(Fragments));
  // A[row][k] and B[k][col] from the lanes that hold them (layouts in kernels/ptx.cuh).
  auto a_at = [&](int row, int k) {
    const int g = row % 8, t = (k % 8) / 2, reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
    return bf16_half(f[4 * g + t].a[reg], k % 2);
  };
  auto b_at = [&](int k, int col) {
    return bf16_half(f[4 * col + (k % 8) / 2].b[k >= 8 ? 1 : 0], k % 2);
  };
  const int l = lane(), g = l / 4, t = l % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
    float sum = 0.0f;
    for (int k = 0; k < 16; ++k) sum += a_at(row, k) * b_at(k, col);
    c[i] += sum;
  }
}

uint32_t pack_bf16x2(float lo, float hi) {
  return uint32_t{kmath::float_to_bf16_bits(lo)} | uint32_t{kmath::float_to_bf16_bits(hi)} << 16;
}

}  // namespace simt
