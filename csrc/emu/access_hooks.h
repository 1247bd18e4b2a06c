// The interface between the memory-access hooks of instrumented kernel code (memcheck.cpp) and the runtime
// (runtime.cpp): what one access is, and the flags that tell the hooks which accesses the runtime must see.
#pragma once
#include <cstddef>

namespace fgemu {
namespace rt {

// kind: 0 read, 1 write, 2/3 volatile read/write, 4 atomic; + kNatural where the compiler emitted the access as
// aligned to its size (the __tsan_readN / writeN hooks, not the unaligned ones): a GPU requires that alignment.
void mem_access(const void* addr, size_t size, int kind);
constexpr int kNatural = 8;

// Which accesses of the running emulated thread mem_access must see besides a misaligned one: kAccessAll every
// access, kAccessVolatile volatile ones. Set by the runtime at every thread switch; 0 outside kernel code.
extern __attribute__((visibility("hidden"))) unsigned char g_access_checks;  // (one module: no GOT load)
constexpr unsigned char kAccessAll = 1, kAccessVolatile = 2;

}  // namespace rt
}  // namespace fgemu
