// Stackful fibers for the SIMT emulator: the scheduler (on the caller's stack) enters a
// fiber, which runs on its own stack until it yields or exits. Not thread-safe: one
// scheduler per OS thread, and a fiber is entered only by the scheduler that started it.
#pragma once

#include <setjmp.h>
#include <ucontext.h>

#include <cstddef>

namespace simt {

struct SchedulerContext {
  ucontext_t first{};  // the scheduler side of a fiber's first entry
  jmp_buf resume{};
};

struct FiberContext {
  ucontext_t first{};  // the fiber's first entry: a fresh stack
  jmp_buf resume{};    // where the fiber continues after a yield
  bool started = false;
};

// Prepares `f` to run entry() on [stack, stack + bytes) at its first fiber_enter.
// entry must end with fiber_exit, never return.
void fiber_prepare(FiberContext& f, unsigned char* stack, size_t bytes, void (*entry)());
// Runs `f` until it calls fiber_yield or fiber_exit with `s`.
void fiber_enter(SchedulerContext& s, FiberContext& f);
// From inside `f`: back to the scheduler; returns when the scheduler enters `f` again.
void fiber_yield(FiberContext& f, SchedulerContext& s);
// From inside a fiber: back to the scheduler for good (the fiber's stack is abandoned).
[[noreturn]] void fiber_exit(SchedulerContext& s);

}  // namespace simt
