// The fiber switch of the SIMT emulator (fiber.h).
//
// The first entry of a fiber goes through swapcontext (a fresh stack needs makecontext);
// every later switch is _setjmp/_longjmp, which skips swapcontext's signal-mask system
// call: the emulator switches at every barrier and warp-wide instruction of every thread.
//
// This file is compiled without _FORTIFY_SOURCE (the #undef below, before any system
// header, so that it wins over a -D on the command line and over compilers that define
// it by default at -O2, as Ubuntu's do). Fortified, _longjmp becomes __longjmp_chk,
// which aborts ("longjmp causes uninitialized stack frame") when the target's stack
// pointer lies below the current one and not on a sigaltstack: exactly a jump from the
// scheduler's stack onto a fiber stack mapped lower in memory. The check assumes one
// stack per thread, which fibers break by design; nothing else in the emulator loses it.
// A hand-written switch in assembly would avoid glibc's check too, but needs code per
// host architecture and is invisible to AddressSanitizer, which intercepts _longjmp.
#undef _FORTIFY_SOURCE

#include "tests/simt/fiber.h"

namespace simt {

// noinline: getcontext returns twice, which may clobber a caller's locals.
[[gnu::noinline]] void fiber_prepare(FiberContext& f, unsigned char* stack, size_t bytes, void (*entry)()) {
  f.started = false;
  getcontext(&f.first);
  f.first.uc_stack.ss_sp = stack;
  f.first.uc_stack.ss_size = bytes;
  f.first.uc_link = nullptr;
  makecontext(&f.first, entry, 0);
}

// noinline: locals of a function that calls _setjmp may not survive the _longjmp back,
// so no caller's frame may be merged into these.
[[gnu::noinline]] void fiber_enter(SchedulerContext& s, FiberContext& f) {
  if (_setjmp(s.resume) != 0) return;  // the fiber yielded or exited
  if (f.started) _longjmp(f.resume, 1);
  f.started = true;
  swapcontext(&s.first, &f.first);
}

[[gnu::noinline]] void fiber_yield(FiberContext& f, SchedulerContext& s) {
  if (_setjmp(f.resume) == 0) _longjmp(s.resume, 1);
}

void fiber_exit(SchedulerContext& s) { _longjmp(s.resume, 1); }

}  // namespace simt
