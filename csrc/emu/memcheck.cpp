// Memory-access hooks for the global-memory race check and for blocks that interleave (csrc/emu/README.md).
//
// Kernel sources are compiled for the emulation with the compiler's ThreadSanitizer instrumentation
// (`-fsanitize=thread`, volatile accesses distinguished, no function entry/exit hooks) but WITHOUT its runtime
// library: every load and store of kernel code calls one of the functions below, which hand it to the emulator
// (fgemu::rt::mem_access) when a check needs it. This file itself, the runtime and all host code are compiled without
// the instrumentation. With no check on, a hook costs a load and a test (access_hooks.h's g_access_checks). Atomics of
// the emulated CUDA API are not instrumented (FGEMU_NO_INSTRUMENT); C++ atomics in kernel code are performed here and
// count as atomics.
#include <cstdint>

#include "access_hooks.h"

namespace {
// The common case inline: an access no check needs and that is aligned (or not declared natural) returns after one
// load and one test (size and kind are constants in each hook).
inline void hook(const void* a, size_t n, int kind) {
  using namespace ::fgemu::rt;
  const int base = kind & ~kNatural;
  const unsigned char need = (base == 2 || base == 3) ? (kAccessAll | kAccessVolatile) : kAccessAll;
  if (__builtin_expect(!(g_access_checks & need), 1) &&
      !((kind & kNatural) && (reinterpret_cast<uintptr_t>(a) & (n - 1)) != 0))
    return;
  mem_access(a, n, kind);
}
}  // namespace

// Hidden: the hooks serve the kernels linked into the same module and must not take the place of a real
// ThreadSanitizer runtime another library of the process may use.
#pragma GCC visibility push(hidden)
extern "C" {
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_ignore_thread_begin() {}
void __tsan_ignore_thread_end() {}

// (N-byte accesses the compiler made aligned to N: kNatural; the unaligned variants are accesses it may split)
#define FGEMU_HOOKS(N)                                                                         \
  void __tsan_read##N(void* a) { hook(a, N, 0 + NAT(N)); }                                     \
  void __tsan_write##N(void* a) { hook(a, N, 1 + NAT(N)); }                                    \
  void __tsan_unaligned_read##N(void* a) { hook(a, N, 0); }                                    \
  void __tsan_unaligned_write##N(void* a) { hook(a, N, 1); }                                   \
  void __tsan_volatile_read##N(void* a) { hook(a, N, 2 + NAT(N)); }                            \
  void __tsan_volatile_write##N(void* a) { hook(a, N, 3 + NAT(N)); }                           \
  void __tsan_unaligned_volatile_read##N(void* a) { hook(a, N, 2); }                           \
  void __tsan_unaligned_volatile_write##N(void* a) { hook(a, N, 3); }                          \
  void __tsan_read##N##_pc(void* a, void*) { hook(a, N, 0 + NAT(N)); }                         \
  void __tsan_write##N##_pc(void* a, void*) { hook(a, N, 1 + NAT(N)); }
#define NAT(N) ((N) > 1 ? ::fgemu::rt::kNatural : 0)
FGEMU_HOOKS(1)
FGEMU_HOOKS(2)
FGEMU_HOOKS(4)
FGEMU_HOOKS(8)
FGEMU_HOOKS(16)
#undef FGEMU_HOOKS
#undef NAT

void __tsan_read_range(void* a, unsigned long n) { hook(a, n, 0); }
void __tsan_write_range(void* a, unsigned long n) { hook(a, n, 1); }
void __tsan_vptr_read(void**) {}
void __tsan_vptr_update(void**, void*) {}

// C++ atomics in instrumented code: performed here (one emulated thread runs at a time), reported as atomics.
// The memory-order argument uses the values of the __ATOMIC_* constants.
#define FGEMU_ATOMIC_FETCH(N, T, OP)                                      \
  T __tsan_atomic##N##_fetch_##OP(volatile T* a, T v, int mo) {           \
    hook((const void*)a, sizeof(T), 4);                                   \
    return __atomic_fetch_##OP(a, v, mo);                                 \
  }
#define FGEMU_ATOMICS(N, T)                                                                   \
  T __tsan_atomic##N##_load(const volatile T* a, int mo) {                                    \
    hook((const void*)a, sizeof(T), 4);                                                       \
    return __atomic_load_n(a, mo);                                                            \
  }                                                                                           \
  void __tsan_atomic##N##_store(volatile T* a, T v, int mo) {                                 \
    hook((const void*)a, sizeof(T), 4);                                                       \
    __atomic_store_n(a, v, mo);                                                               \
  }                                                                                           \
  T __tsan_atomic##N##_exchange(volatile T* a, T v, int mo) {                                 \
    hook((const void*)a, sizeof(T), 4);                                                       \
    return __atomic_exchange_n(a, v, mo);                                                     \
  }                                                                                           \
  FGEMU_ATOMIC_FETCH(N, T, add)                                                               \
  FGEMU_ATOMIC_FETCH(N, T, sub)                                                               \
  FGEMU_ATOMIC_FETCH(N, T, and)                                                               \
  FGEMU_ATOMIC_FETCH(N, T, or)                                                                \
  FGEMU_ATOMIC_FETCH(N, T, xor)                                                               \
  FGEMU_ATOMIC_FETCH(N, T, nand)                                                              \
  int __tsan_atomic##N##_compare_exchange_strong(volatile T* a, T* c, T v, int mo, int fmo) { \
    hook((const void*)a, sizeof(T), 4);                                                       \
    return __atomic_compare_exchange_n(a, c, v, false, mo, fmo);                              \
  }                                                                                           \
  int __tsan_atomic##N##_compare_exchange_weak(volatile T* a, T* c, T v, int mo, int fmo) {   \
    hook((const void*)a, sizeof(T), 4);                                                       \
    return __atomic_compare_exchange_n(a, c, v, true, mo, fmo);                               \
  }                                                                                           \
  T __tsan_atomic##N##_compare_exchange_val(volatile T* a, T c, T v, int mo, int fmo) {       \
    hook((const void*)a, sizeof(T), 4);                                                       \
    __atomic_compare_exchange_n(a, &c, v, false, mo, fmo);                                    \
    return c;                                                                                 \
  }
FGEMU_ATOMICS(8, uint8_t)
FGEMU_ATOMICS(16, uint16_t)
FGEMU_ATOMICS(32, uint32_t)
FGEMU_ATOMICS(64, uint64_t)
#undef FGEMU_ATOMICS
#undef FGEMU_ATOMIC_FETCH

void __tsan_atomic_thread_fence(int mo) { __atomic_thread_fence(mo); }
void __tsan_atomic_signal_fence(int mo) { __atomic_signal_fence(mo); }
}
#pragma GCC visibility pop
