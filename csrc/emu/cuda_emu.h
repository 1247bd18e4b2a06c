// fgemu: CPU emulation of the CUDA programming model, so that the unmodified csrc/kernels/*.cu sources compile with the
// host compiler (g++ -x c++ -std=c++17 -DFG_EMU -I csrc) and run on the CPU with CUDA semantics.
//
//   * every CUDA thread is a cooperative fiber; a block runs on the calling host thread, blocks run one after another;
//   * __syncthreads() and the warp intrinsics really wait for the threads they name; misuse (a barrier reached by part
//     of the block, two different barriers, warp-exchange deadlocks) is reported as std::runtime_error naming the
//     kernel;
//   * __shared__ memory (static and `extern __shared__`) exists once per block and is filled with 0xFF bytes (NaN for
//     floating point) when each block starts, so reading shared memory before writing it shows up in results;
//   * launch limits of sm_90 (1024 threads/block, block and grid extents, 48 KB dynamic shared memory without opt-in,
//     227 KB with cudaFuncSetAttribute) are enforced.
//
// See csrc/emu/README.md for what is and is not modelled. The runtime lives in csrc/emu/*.cpp (no torch anywhere).
#pragma once

// Standard headers first: the CUDA qualifier macros below (__noinline__ in particular) must not leak into them.
#include <algorithm>
#include <atomic>
#include <cassert>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <math.h>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ---------------------------------------------------------------------------------------------------------------
// Execution-space and storage qualifiers.
// ---------------------------------------------------------------------------------------------------------------
#define __host__
#define __device__
// __global__: one nop at the entry, so that the function is listed in the module's __patchable_function_entries (the
// runtime tells kernels' function-local __shared__ variables from device helpers' by it: runtime.cpp, smem_skip).
#define __global__ __attribute__((patchable_function_entry(1, 0)))
#define __constant__
#define __managed__
#define __grid_constant__
#define __forceinline__ __inline__ __attribute__((always_inline))
// Kernel sources compiled with the memory-access instrumentation (csrc/emu/memcheck.cpp): code of the emulator
// itself that touches kernel memory on the runtime's behalf opts out.
#if defined(__clang__)
#define FGEMU_NO_INSTRUMENT __attribute__((no_sanitize("thread")))
#else
#define FGEMU_NO_INSTRUMENT __attribute__((no_sanitize_thread))
#endif
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __maxnreg__(...)
#define __cluster_dims__(...)
// __restrict__ is a GCC keyword already.

// Shared memory. `thread_local` is the one storage class that is valid both in `__shared__ T x[N];` (block scope:
// static storage, shared by all fibers of the block because they run on one host thread), in
// `static __shared__ T x[N];` and in `extern __shared__ T x[];` (which then names the per-block dynamic shared memory;
// see extern_shared.cpp for how the name is bound). The runtime fills the launch's part of the kernel module's TLS
// block (less the other kernels' variables) with 0xFF at every block start and restores it after the launch.
#define __shared__ thread_local

#include "cuda_emu_types.h"

// ---------------------------------------------------------------------------------------------------------------
// Runtime interface (csrc/emu/runtime.cpp).
// ---------------------------------------------------------------------------------------------------------------
namespace fgemu {

struct BuiltinVars {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
extern BuiltinVars g_builtin;
extern bool g_racecheck;  // FGEMU_RACECHECK: atomics report the bytes they update
extern bool g_sync_hooks;  // race check or several resident blocks: atomics and fences call the runtime
extern bool g_programmatic;  // the running launch is programmatic: atomics are checked against the grid sync

namespace rt {

enum WarpKind : int {
  kShflIdx = 0, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll, kUni, kSyncwarp, kMatchAny, kMatchAll,
  kReduceAddU, kReduceAddI, kReduceMinU, kReduceMinI, kReduceMaxU, kReduceMaxI, kReduceAnd, kReduceOr, kReduceXor,
  kExchange, kNumWarpKinds
};
struct WarpResult {
  uint64_t value;
  int pred;
};
enum BarKind : int { kBarPlain = 0, kBarCount = 1, kBarAnd = 2, kBarOr = 3 };

void syncthreads(const char* file, int line);
int syncthreads_reduce(int kind, int pred, const char* file, int line);
WarpResult warp_op(int kind, unsigned mask, uint64_t value, int value_size, int param, int width, const char* file,
                   int line);
unsigned activemask(const char* file, int line);
void yield_thread();  // __nanosleep: lets the other threads of the block run
// cp.async (csrc/kernels/mma.cuh): a copy lands at the wait_group that covers its commit group, not before.
void async_copy(void* dst, const void* src, int bytes, int src_bytes);
void async_commit();
void async_wait(int newer_groups);
[[noreturn]] void device_trap(const char* what, const char* file, int line);
long long clock_ticks();  // monotonic nanoseconds (clock64, __globaltimer)
void note_atomic(const void* addr, size_t size);  // race check: an atomic updated these bytes
void sync_point(unsigned one_in = 4);  // atomics, __nanosleep: with several resident blocks another may run here
void device_fence();  // __threadfence(): publishes this block's writes to later atomics/flags (race check)
// cudaGridDependencySynchronize(): from here on this thread may touch global memory in a launch made with
// programmatic dependent launch (LaunchDesc::programmatic), whose earlier global accesses fail the launch.
void grid_dependency_sync();
void atomic_before_grid_sync(const void* addr, size_t size);  // fails the launch if not yet synchronised
// A `bytes`-byte access (a power of two) that a GPU makes as one instruction: fails the launch unless addr is a
// multiple of `bytes` (on a GPU: cudaErrorMisalignedAddress, a sticky error that ends the context). `what` names it.
void check_aligned(const void* addr, size_t bytes, const char* what);
// Execution-order and race-check controls (also FGEMU_SCHEDULE=forward|reverse|random[:seed], FGEMU_RACECHECK=1,
// read at the first launch; calling these overrides the environment).
enum Schedule : int { kForward = 0, kReverse = 1, kRandom = 2 };
void set_schedule(int mode, unsigned seed = 0);
void set_racecheck(bool on, bool full = false);  // full: FGEMU_RACECHECK=full
int get_schedule(unsigned* seed = nullptr);
bool get_racecheck();
// FGEMU_BLOCKS=n: resident blocks that interleave (0: the default, 4 under the random schedule, else 1).
void set_blocks(int resident);
int get_blocks();
// FGEMU_POISON=ff|00|<hex byte>|random[:seed]: the byte shared memory is filled with at every block start
// (-1: a byte per launch drawn from the seed).
void set_poison(int byte, unsigned seed = 0);
int get_poison();
void set_launch_log(bool on);                 // record the name of every launch (clears the record)
std::vector<std::string> take_launch_log();  // and hand it over
void set_spin_limit(unsigned long switches);  // FGEMU_SPIN_LIMIT: block switches without progress -> deadlock
void* dynamic_smem();  // this thread's dynamic shared memory (what every `extern __shared__` array names)
// The last launch's static shared memory in bytes, and its module's whole thread-local block (the launch covers the
// block less the other kernels' function-local __shared__ variables: runtime.cpp, smem_skip).
void last_static_smem(size_t* covered, size_t* module_block);

struct LaunchDesc {
  const char* name;
  const void* kernel_id;  // the kernel's address: key for cudaFuncSetAttribute, locates the kernel's module
  void (*invoke)(void* payload);
  void* payload;
  dim3 grid, block;
  size_t smem;
  // Launched with programmatic dependent launch (cudaLaunchAttributeProgrammaticStreamSerialization): on a GPU the
  // grid may start while the previous kernel in the stream still runs, so every thread must call
  // cudaGridDependencySynchronize() before its first global-memory access; the emulation checks that it does.
  bool programmatic = false;
  size_t payload_size = 0;  // bytes at payload: the arguments, which the launch copies into each thread
};
void launch(const LaunchDesc& d);

}  // namespace rt

// Plain-function-pointer kernel call: every CUDA thread gets its own copy of the arguments (like kernel parameters).
template <typename... KArgs>
struct KernelCall {
  void (*kernel)(KArgs...);
  std::tuple<KArgs...> args;
  static void invoke(void* p) {
    KernelCall* c = static_cast<KernelCall*>(p);
    std::apply(c->kernel, c->args);
  }
};

namespace detail {
template <typename... KArgs, typename... Args>
void launch(bool programmatic, const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
            Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "fgemu::launch: wrong number of kernel arguments");
  KernelCall<KArgs...> call{kernel, std::tuple<KArgs...>(static_cast<KArgs>(std::forward<Args>(args))...)};
  rt::LaunchDesc d{name, reinterpret_cast<const void*>(kernel), &KernelCall<KArgs...>::invoke, &call, grid, block, smem,
                   programmatic, sizeof call};
  rt::launch(d);
}
}  // namespace detail

// Launch `kernel` on `grid` x `block` with `smem` bytes of dynamic shared memory. Runs to completion before returning;
// throws std::runtime_error("fgemu: kernel '<name>' ...") for invalid launches and faults detected while running.
template <typename... KArgs, typename... Args>
void launch(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, Args&&... args) {
  detail::launch(false, name, kernel, grid, block, smem, std::forward<Args>(args)...);
}

// The same as a launch with programmatic dependent launch (cudaLaunchKernelEx with
// cudaLaunchAttributeProgrammaticStreamSerialization): the grid's global-memory accesses before
// cudaGridDependencySynchronize() are reported (instrumented kernel sources; see rt::LaunchDesc::programmatic).
template <typename... KArgs, typename... Args>
void launch_programmatic(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                         Args&&... args) {
  detail::launch(true, name, kernel, grid, block, smem, std::forward<Args>(args)...);
}

}  // namespace fgemu

// ---------------------------------------------------------------------------------------------------------------
// Built-in variables. Read-only references to the runtime's per-thread values (set when a fiber is switched in).
// ---------------------------------------------------------------------------------------------------------------
inline const uint3& threadIdx = ::fgemu::g_builtin.thread_idx;
inline const uint3& blockIdx = ::fgemu::g_builtin.block_idx;
inline const dim3& blockDim = ::fgemu::g_builtin.block_dim;
inline const dim3& gridDim = ::fgemu::g_builtin.grid_dim;
constexpr int warpSize = 32;

#define FGEMU_SITE_PARAMS const char *fgemu_file = __builtin_FILE(), int fgemu_line = __builtin_LINE()
#define FGEMU_SITE fgemu_file, fgemu_line

// ---------------------------------------------------------------------------------------------------------------
// Block barriers. The call site (file:line) identifies the barrier: threads waiting at different sites are an error.
// ---------------------------------------------------------------------------------------------------------------
inline void __syncthreads(FGEMU_SITE_PARAMS) { ::fgemu::rt::syncthreads(FGEMU_SITE); }
inline int __syncthreads_count(int pred, FGEMU_SITE_PARAMS) {
  return ::fgemu::rt::syncthreads_reduce(::fgemu::rt::kBarCount, pred != 0, FGEMU_SITE);
}
inline int __syncthreads_and(int pred, FGEMU_SITE_PARAMS) {
  return ::fgemu::rt::syncthreads_reduce(::fgemu::rt::kBarAnd, pred != 0, FGEMU_SITE);
}
inline int __syncthreads_or(int pred, FGEMU_SITE_PARAMS) {
  return ::fgemu::rt::syncthreads_reduce(::fgemu::rt::kBarOr, pred != 0, FGEMU_SITE);
}

// Fences: emulated threads run one at a time on one host thread and switch only at synchronisation points, so a
// compiler barrier gives every ordering CUDA promises. The race check models what a fence publishes between blocks.
inline void __threadfence() {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (__builtin_expect(::fgemu::g_sync_hooks, 0)) ::fgemu::rt::device_fence();
}
// Programmatic dependent launch (sm_90): the trigger only lets the next grid be scheduled early (no memory effect);
// the wait is where the previous grid's completion and writes are awaited. Emulated launches run one after the
// other, so neither has an effect on the order; the wait marks the thread for the programmatic-launch check.
inline void cudaTriggerProgrammaticLaunchCompletion() {}
inline void cudaGridDependencySynchronize() {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  ::fgemu::rt::grid_dependency_sync();
}
inline void __threadfence_block() { std::atomic_signal_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_signal_fence(std::memory_order_seq_cst); }

// ---------------------------------------------------------------------------------------------------------------
// Warp intrinsics (32-lane semantics; every lane named in the mask must arrive before any of them continues).
// ---------------------------------------------------------------------------------------------------------------
namespace fgemu {
namespace detail {
template <typename T>
inline T warp_value_op(int kind, unsigned mask, T var, int param, int width, const char* file, int line) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "warp exchange of an unsupported type");
  uint64_t v = 0;
  std::memcpy(&v, &var, sizeof(T));
  rt::WarpResult r = rt::warp_op(kind, mask, v, (int)sizeof(T), param, width, file, line);
  T out;
  std::memcpy(&out, &r.value, sizeof(T));
  return out;
}
}  // namespace detail
}  // namespace fgemu

#define FGEMU_SHFL_OVERLOADS(T)                                                                                  \
  inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32, FGEMU_SITE_PARAMS) {                   \
    return ::fgemu::detail::warp_value_op<T>(::fgemu::rt::kShflIdx, mask, var, srcLane, width, FGEMU_SITE);      \
  }                                                                                                              \
  inline T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = 32, FGEMU_SITE_PARAMS) {         \
    return ::fgemu::detail::warp_value_op<T>(::fgemu::rt::kShflUp, mask, var, (int)delta, width, FGEMU_SITE);    \
  }                                                                                                              \
  inline T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = 32, FGEMU_SITE_PARAMS) {       \
    return ::fgemu::detail::warp_value_op<T>(::fgemu::rt::kShflDown, mask, var, (int)delta, width, FGEMU_SITE);  \
  }                                                                                                              \
  inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32, FGEMU_SITE_PARAMS) {              \
    return ::fgemu::detail::warp_value_op<T>(::fgemu::rt::kShflXor, mask, var, laneMask, width, FGEMU_SITE);     \
  }
FGEMU_SHFL_OVERLOADS(int)
FGEMU_SHFL_OVERLOADS(unsigned int)
FGEMU_SHFL_OVERLOADS(long)
FGEMU_SHFL_OVERLOADS(unsigned long)
FGEMU_SHFL_OVERLOADS(long long)
FGEMU_SHFL_OVERLOADS(unsigned long long)
FGEMU_SHFL_OVERLOADS(float)
FGEMU_SHFL_OVERLOADS(double)
FGEMU_SHFL_OVERLOADS(__half)
FGEMU_SHFL_OVERLOADS(__half2)
FGEMU_SHFL_OVERLOADS(__nv_bfloat16)
FGEMU_SHFL_OVERLOADS(__nv_bfloat162)
#undef FGEMU_SHFL_OVERLOADS

#define FGEMU_MATCH_OVERLOADS(T)                                                                                  \
  inline unsigned int __match_any_sync(unsigned mask, T value, FGEMU_SITE_PARAMS) {                               \
    uint64_t v = 0;                                                                                               \
    std::memcpy(&v, &value, sizeof(T));                                                                           \
    return (unsigned)::fgemu::rt::warp_op(::fgemu::rt::kMatchAny, mask, v, (int)sizeof(T), 0, 32, FGEMU_SITE).value; \
  }                                                                                                               \
  inline unsigned int __match_all_sync(unsigned mask, T value, int* pred, FGEMU_SITE_PARAMS) {                    \
    uint64_t v = 0;                                                                                               \
    std::memcpy(&v, &value, sizeof(T));                                                                           \
    ::fgemu::rt::WarpResult r = ::fgemu::rt::warp_op(::fgemu::rt::kMatchAll, mask, v, (int)sizeof(T), 0, 32, FGEMU_SITE); \
    *pred = r.pred;                                                                                               \
    return (unsigned)r.value;                                                                                     \
  }
FGEMU_MATCH_OVERLOADS(int)
FGEMU_MATCH_OVERLOADS(unsigned int)
FGEMU_MATCH_OVERLOADS(long)
FGEMU_MATCH_OVERLOADS(unsigned long)
FGEMU_MATCH_OVERLOADS(long long)
FGEMU_MATCH_OVERLOADS(unsigned long long)
FGEMU_MATCH_OVERLOADS(float)
FGEMU_MATCH_OVERLOADS(double)
#undef FGEMU_MATCH_OVERLOADS

inline unsigned int __ballot_sync(unsigned mask, int predicate, FGEMU_SITE_PARAMS) {
  return (unsigned)::fgemu::rt::warp_op(::fgemu::rt::kBallot, mask, predicate != 0, 4, 0, 32, FGEMU_SITE).value;
}
inline int __any_sync(unsigned mask, int predicate, FGEMU_SITE_PARAMS) {
  return (int)::fgemu::rt::warp_op(::fgemu::rt::kAny, mask, predicate != 0, 4, 0, 32, FGEMU_SITE).value;
}
inline int __all_sync(unsigned mask, int predicate, FGEMU_SITE_PARAMS) {
  return (int)::fgemu::rt::warp_op(::fgemu::rt::kAll, mask, predicate != 0, 4, 0, 32, FGEMU_SITE).value;
}
inline int __uni_sync(unsigned mask, int predicate, FGEMU_SITE_PARAMS) {
  return (int)::fgemu::rt::warp_op(::fgemu::rt::kUni, mask, predicate != 0, 4, 0, 32, FGEMU_SITE).value;
}
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu, FGEMU_SITE_PARAMS) {
  (void)::fgemu::rt::warp_op(::fgemu::rt::kSyncwarp, mask, 0, 4, 0, 32, FGEMU_SITE);
}
namespace fgemu {
// Not a CUDA intrinsic: the emulator's model of warp-wide instructions that read other lanes' registers (mma.sync,
// ldmatrix; csrc/kernels/mma.cuh). Every lane of `mask` passes `bytes` bytes; each receives all 32 lanes' bytes in
// lane order in `all` (32 * bytes; a lane outside the mask reads as 0xFF bytes). One collective instead of one
// __shfl_sync per register element.
struct ExchangeArgs {
  const void* mine;
  void* all;
};
inline void warp_exchange(unsigned mask, const void* mine, void* all, int bytes, FGEMU_SITE_PARAMS) {
  ExchangeArgs args{mine, all};
  (void)rt::warp_op(rt::kExchange, mask, (uint64_t)(uintptr_t)&args, 8, bytes, 32, FGEMU_SITE);
}
}  // namespace fgemu
// The lanes of the warp that reach this call together: the group is formed once every other lane of the warp has
// exited or is waiting at some synchronisation point.
inline unsigned int __activemask(FGEMU_SITE_PARAMS) { return ::fgemu::rt::activemask(FGEMU_SITE); }

#define FGEMU_REDUCE(NAME, KIND, T)                                                                             \
  inline T NAME(unsigned mask, T value, FGEMU_SITE_PARAMS) {                                                      \
    uint64_t v = 0;                                                                                               \
    std::memcpy(&v, &value, sizeof(T));                                                                           \
    uint64_t r = ::fgemu::rt::warp_op(::fgemu::rt::KIND, mask, v, 4, 0, 32, FGEMU_SITE).value;                     \
    T out;                                                                                                        \
    std::memcpy(&out, &r, sizeof(T));                                                                             \
    return out;                                                                                                   \
  }
FGEMU_REDUCE(__reduce_add_sync, kReduceAddU, unsigned)
FGEMU_REDUCE(__reduce_add_sync, kReduceAddI, int)
FGEMU_REDUCE(__reduce_min_sync, kReduceMinU, unsigned)
FGEMU_REDUCE(__reduce_min_sync, kReduceMinI, int)
FGEMU_REDUCE(__reduce_max_sync, kReduceMaxU, unsigned)
FGEMU_REDUCE(__reduce_max_sync, kReduceMaxI, int)
FGEMU_REDUCE(__reduce_and_sync, kReduceAnd, unsigned)
FGEMU_REDUCE(__reduce_or_sync, kReduceOr, unsigned)
FGEMU_REDUCE(__reduce_xor_sync, kReduceXor, unsigned)
#undef FGEMU_REDUCE

// ---------------------------------------------------------------------------------------------------------------
// Atomics. Only one emulated thread runs at any time and it is never interrupted inside an atomic, so a plain
// read-modify-write is atomic with respect to every other emulated thread.
// ---------------------------------------------------------------------------------------------------------------
namespace fgemu {
namespace detail {
// *a = f(*a), returns the old value; under FGEMU_RACECHECK the runtime is told which bytes an atomic updated. Not
// instrumented for the global-memory check (FGEMU_INSTRUMENTED): note_atomic records it as an atomic access instead.
template <typename T, typename F>
FGEMU_NO_INSTRUMENT inline T atomic_rmw(T* a, F f) {
  if (__builtin_expect(::fgemu::g_sync_hooks, 0)) ::fgemu::rt::sync_point();
  if (__builtin_expect(::fgemu::g_programmatic, 0)) ::fgemu::rt::atomic_before_grid_sync(a, sizeof(T));
  T old = *a;
  *a = f(old);
  if (__builtin_expect(::fgemu::g_racecheck, 0)) ::fgemu::rt::note_atomic(a, sizeof(T));
  return old;
}
}  // namespace detail
}  // namespace fgemu

#define FGEMU_RMW(T, NAME, EXPR) \
  inline T NAME(T* a, T v) { return ::fgemu::detail::atomic_rmw(a, [v]([[maybe_unused]] T o) -> T { return EXPR; }); }
#define FGEMU_ATOMIC_ARITH(T)       \
  FGEMU_RMW(T, atomicAdd, (T)(o + v)) \
  FGEMU_RMW(T, atomicExch, v)
FGEMU_ATOMIC_ARITH(int)
FGEMU_ATOMIC_ARITH(unsigned int)
FGEMU_ATOMIC_ARITH(unsigned long long)
FGEMU_ATOMIC_ARITH(float)
FGEMU_RMW(double, atomicAdd, o + v)
FGEMU_RMW(__half, atomicAdd, o + v)
FGEMU_RMW(__nv_bfloat16, atomicAdd, o + v)
FGEMU_RMW(__half2, atomicAdd, o + v)
FGEMU_RMW(__nv_bfloat162, atomicAdd, o + v)
FGEMU_RMW(float2, atomicAdd, (float2{o.x + v.x, o.y + v.y}))
FGEMU_RMW(float4, atomicAdd, (float4{o.x + v.x, o.y + v.y, o.z + v.z, o.w + v.w}))
FGEMU_RMW(int, atomicSub, (int)((unsigned)o - (unsigned)v))
FGEMU_RMW(unsigned int, atomicSub, o - v)
#define FGEMU_ATOMIC_MINMAX(T)                \
  FGEMU_RMW(T, atomicMin, (v < o ? v : o))    \
  FGEMU_RMW(T, atomicMax, (v > o ? v : o))
FGEMU_ATOMIC_MINMAX(int)
FGEMU_ATOMIC_MINMAX(unsigned int)
FGEMU_ATOMIC_MINMAX(long long)
FGEMU_ATOMIC_MINMAX(unsigned long long)
#define FGEMU_ATOMIC_BITS(T)      \
  FGEMU_RMW(T, atomicAnd, o & v)  \
  FGEMU_RMW(T, atomicOr, o | v)   \
  FGEMU_RMW(T, atomicXor, o ^ v)
FGEMU_ATOMIC_BITS(int)
FGEMU_ATOMIC_BITS(unsigned int)
FGEMU_ATOMIC_BITS(unsigned long long)
FGEMU_RMW(unsigned int, atomicInc, (o >= v ? 0u : o + 1u))
FGEMU_RMW(unsigned int, atomicDec, ((o == 0u || o > v) ? v : o - 1u))
#undef FGEMU_RMW
#undef FGEMU_ATOMIC_ARITH
#undef FGEMU_ATOMIC_MINMAX
#undef FGEMU_ATOMIC_BITS
#define FGEMU_ATOMIC_CAS(T)                                                                                    \
  inline T atomicCAS(T* a, T compare, T val) {                                                                 \
    return ::fgemu::detail::atomic_rmw(a, [compare, val](T o) -> T { return o == compare ? val : o; });        \
  }
FGEMU_ATOMIC_CAS(int)
FGEMU_ATOMIC_CAS(unsigned int)
FGEMU_ATOMIC_CAS(unsigned long long)
FGEMU_ATOMIC_CAS(unsigned short)
#undef FGEMU_ATOMIC_CAS
// Scoped variants (sm_60+): same behaviour here.
#define FGEMU_ATOMIC_SCOPED(NAME)                                                                         \
  template <typename... A>                                                                                \
  inline auto NAME##_block(A... a) -> decltype(NAME(a...)) { return NAME(a...); }                         \
  template <typename... A>                                                                                \
  inline auto NAME##_system(A... a) -> decltype(NAME(a...)) { return NAME(a...); }
FGEMU_ATOMIC_SCOPED(atomicAdd)
FGEMU_ATOMIC_SCOPED(atomicSub)
FGEMU_ATOMIC_SCOPED(atomicExch)
FGEMU_ATOMIC_SCOPED(atomicMin)
FGEMU_ATOMIC_SCOPED(atomicMax)
FGEMU_ATOMIC_SCOPED(atomicAnd)
FGEMU_ATOMIC_SCOPED(atomicOr)
FGEMU_ATOMIC_SCOPED(atomicXor)
FGEMU_ATOMIC_SCOPED(atomicCAS)
FGEMU_ATOMIC_SCOPED(atomicInc)
FGEMU_ATOMIC_SCOPED(atomicDec)
#undef FGEMU_ATOMIC_SCOPED

// ---------------------------------------------------------------------------------------------------------------
// Loads/stores with cache hints, misc device functions.
// ---------------------------------------------------------------------------------------------------------------
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
template <typename T> inline T __ldca(const T* p) { return *p; }
template <typename T> inline T __ldcs(const T* p) { return *p; }
template <typename T> inline T __ldlu(const T* p) { return *p; }
template <typename T> inline T __ldcv(const T* p) { return *p; }
template <typename T> inline void __stwb(T* p, T v) { *p = v; }
template <typename T> inline void __stcg(T* p, T v) { *p = v; }
template <typename T> inline void __stcs(T* p, T v) { *p = v; }
template <typename T> inline void __stwt(T* p, T v) { *p = v; }

inline long long clock64() { return ::fgemu::rt::clock_ticks(); }
inline unsigned long long __globaltimer() { return (unsigned long long)::fgemu::rt::clock_ticks(); }
inline void __nanosleep(unsigned int ns) {
  (void)ns;
  ::fgemu::rt::yield_thread();
  if (::fgemu::g_sync_hooks) ::fgemu::rt::sync_point();
}
[[noreturn]] inline void __trap(FGEMU_SITE_PARAMS) { ::fgemu::rt::device_trap("__trap()", FGEMU_SITE); }
[[noreturn]] inline void __brkpt(FGEMU_SITE_PARAMS) { ::fgemu::rt::device_trap("__brkpt()", FGEMU_SITE); }
inline void __prof_trigger(int) {}

// ---------------------------------------------------------------------------------------------------------------
// Integer and bit intrinsics.
// ---------------------------------------------------------------------------------------------------------------
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned int __brev(unsigned int x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  return __builtin_bswap32(x);
}
inline unsigned long long __brevll(unsigned long long x) {
  return ((unsigned long long)__brev((unsigned)x) << 32) | __brev((unsigned)(x >> 32));
}
inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
  uint64_t v = ((uint64_t)y << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xFFu) << (8 * i);
  return r;
}
inline unsigned int __funnelshift_l(unsigned int lo, unsigned int hi, unsigned int shift) {
  uint64_t v = ((uint64_t)hi << 32) | lo;
  return (unsigned)((v << (shift & 31u)) >> 32);
}
inline unsigned int __funnelshift_lc(unsigned int lo, unsigned int hi, unsigned int shift) {
  uint64_t v = ((uint64_t)hi << 32) | lo;
  return (unsigned)((v << (shift > 32u ? 32u : shift)) >> 32);
}
inline unsigned int __funnelshift_r(unsigned int lo, unsigned int hi, unsigned int shift) {
  uint64_t v = ((uint64_t)hi << 32) | lo;
  return (unsigned)(v >> (shift & 31u));
}
inline unsigned int __funnelshift_rc(unsigned int lo, unsigned int hi, unsigned int shift) {
  uint64_t v = ((uint64_t)hi << 32) | lo;
  return (unsigned)(v >> (shift > 32u ? 32u : shift));
}
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned int __umulhi(unsigned int a, unsigned int b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline int __mul24(int a, int b) { return (int)((unsigned)((a << 8) >> 8) * (unsigned)((b << 8) >> 8)); }
inline unsigned int __umul24(unsigned int a, unsigned int b) { return (a & 0xFFFFFFu) * (b & 0xFFFFFFu); }
inline int __hadd(int a, int b) { return (int)(((long long)a + b) >> 1); }
inline int __rhadd(int a, int b) { return (int)(((long long)a + b + 1) >> 1); }
inline unsigned int __uhadd(unsigned int a, unsigned int b) { return (unsigned)(((unsigned long long)a + b) >> 1); }
inline unsigned int __urhadd(unsigned int a, unsigned int b) { return (unsigned)(((unsigned long long)a + b + 1) >> 1); }
inline unsigned int __sad(int a, int b, unsigned int c) { return c + (unsigned)(a > b ? (long long)a - b : (long long)b - a); }
inline unsigned int __usad(unsigned int a, unsigned int b, unsigned int c) { return c + (a > b ? a - b : b - a); }

// ---------------------------------------------------------------------------------------------------------------
// Reinterpretation and conversion intrinsics.
// ---------------------------------------------------------------------------------------------------------------
inline int __float_as_int(float x) { int r; std::memcpy(&r, &x, 4); return r; }
inline float __int_as_float(int x) { float r; std::memcpy(&r, &x, 4); return r; }
inline unsigned int __float_as_uint(float x) { unsigned r; std::memcpy(&r, &x, 4); return r; }
inline float __uint_as_float(unsigned int x) { float r; std::memcpy(&r, &x, 4); return r; }
inline long long __double_as_longlong(double x) { long long r; std::memcpy(&r, &x, 8); return r; }
inline double __longlong_as_double(long long x) { double r; std::memcpy(&r, &x, 8); return r; }
inline int __double2hiint(double x) { return (int)(__double_as_longlong(x) >> 32); }
inline int __double2loint(double x) { return (int)(unsigned)(__double_as_longlong(x)); }
inline double __hiloint2double(int hi, int lo) {
  return __longlong_as_double((long long)(((unsigned long long)(unsigned)hi << 32) | (unsigned)lo));
}

namespace fgemu {
namespace detail {
// Round to nearest even independently of the current rounding mode.
template <typename F> inline F rne(F x) {
  F r = std::floor(x);
  F d = x - r;
  if (d > F(0.5) || (d == F(0.5) && std::fmod(r, F(2)) != F(0))) r += F(1);
  return r;
}
template <typename I, typename F> inline I sat_cvt(F x) {
  if (std::isnan(x)) return std::numeric_limits<I>::is_signed ? std::numeric_limits<I>::min() : I(0);
  if (x <= (F)std::numeric_limits<I>::min()) return std::numeric_limits<I>::min();
  if (x >= (F)std::numeric_limits<I>::max()) return std::numeric_limits<I>::max();
  return (I)x;
}
}  // namespace detail
}  // namespace fgemu

#define FGEMU_F2I(SUFFIX, I, F, ROUND)                                                          \
  inline I SUFFIX(F x) { return ::fgemu::detail::sat_cvt<I, F>(ROUND(x)); }
FGEMU_F2I(__float2int_rn, int, float, ::fgemu::detail::rne<float>)
FGEMU_F2I(__float2int_rz, int, float, std::trunc)
FGEMU_F2I(__float2int_ru, int, float, std::ceil)
FGEMU_F2I(__float2int_rd, int, float, std::floor)
FGEMU_F2I(__float2uint_rn, unsigned int, float, ::fgemu::detail::rne<float>)
FGEMU_F2I(__float2uint_rz, unsigned int, float, std::trunc)
FGEMU_F2I(__float2uint_ru, unsigned int, float, std::ceil)
FGEMU_F2I(__float2uint_rd, unsigned int, float, std::floor)
FGEMU_F2I(__float2ll_rn, long long, float, ::fgemu::detail::rne<float>)
FGEMU_F2I(__float2ll_rz, long long, float, std::trunc)
FGEMU_F2I(__double2int_rn, int, double, ::fgemu::detail::rne<double>)
FGEMU_F2I(__double2int_rz, int, double, std::trunc)
FGEMU_F2I(__double2int_ru, int, double, std::ceil)
FGEMU_F2I(__double2int_rd, int, double, std::floor)
FGEMU_F2I(__double2uint_rn, unsigned int, double, ::fgemu::detail::rne<double>)
FGEMU_F2I(__double2uint_rz, unsigned int, double, std::trunc)
FGEMU_F2I(__double2ll_rn, long long, double, ::fgemu::detail::rne<double>)
FGEMU_F2I(__double2ll_rz, long long, double, std::trunc)
#undef FGEMU_F2I
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned int x) { return (float)x; }
inline float __ll2float_rn(long long x) { return (float)x; }
inline float __ull2float_rn(unsigned long long x) { return (float)x; }
inline double __int2double_rn(int x) { return (double)x; }
inline double __ll2double_rn(long long x) { return (double)x; }
inline float __double2float_rn(double x) { return (float)x; }
inline float __double2float_rz(double x) {
  float f = (float)x;
  if (std::isfinite(x) && std::fabs((double)f) > std::fabs(x)) f = std::nextafter(f, 0.0f);
  return f;
}

// ---------------------------------------------------------------------------------------------------------------
// Floating-point intrinsics (the fast-math ones are computed exactly here; CUDA's are approximations).
// ---------------------------------------------------------------------------------------------------------------
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __fdiv_rn(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fsub_rn(float x, float y) { return x - y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __fmaf_rn(float x, float y, float z) { return fmaf(x, y, z); }
inline float __fmaf_ieee_rn(float x, float y, float z) { return fmaf(x, y, z); }
inline double __dadd_rn(double x, double y) { return x + y; }
inline double __dsub_rn(double x, double y) { return x - y; }
inline double __dmul_rn(double x, double y) { return x * y; }
inline double __ddiv_rn(double x, double y) { return x / y; }
inline double __drcp_rn(double x) { return 1.0 / x; }
inline double __dsqrt_rn(double x) { return sqrt(x); }
inline double __fma_rn(double x, double y, double z) { return fma(x, y, z); }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline double rcbrt(double x) { return 1.0 / cbrt(x); }
inline float sinpif(float x) { return (float)sin(M_PI * (double)x); }
inline float cospif(float x) { return (float)cos(M_PI * (double)x); }
inline double sinpi(double x) { return sin(M_PI * x); }
inline double cospi(double x) { return cos(M_PI * x); }
inline void sincospif(float x, float* s, float* c) { *s = sinpif(x); *c = cospif(x); }
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752440); }
inline float rhypotf(float x, float y) { return 1.0f / hypotf(x, y); }
inline float norm3df(float x, float y, float z) { return (float)std::sqrt((double)x * x + (double)y * y + (double)z * z); }
inline float rnorm3df(float x, float y, float z) { return 1.0f / norm3df(x, y, z); }
inline double erfinv(double y) {
  if (!(y > -1.0 && y < 1.0)) return y == 1.0 ? HUGE_VAL : (y == -1.0 ? -HUGE_VAL : NAN);
  // Giles' single-precision approximation refined by two Newton steps on erf.
  double w = -log((1.0 - y) * (1.0 + y)), x;
  if (w < 5.0) {
    w -= 2.5;
    x = 2.81022636e-08; x = 3.43273939e-07 + x * w; x = -3.5233877e-06 + x * w; x = -4.39150654e-06 + x * w;
    x = 0.00021858087 + x * w; x = -0.00125372503 + x * w; x = -0.00417768164 + x * w; x = 0.246640727 + x * w;
    x = 1.50140941 + x * w;
  } else {
    w = sqrt(w) - 3.0;
    x = -0.000200214257; x = 0.000100950558 + x * w; x = 0.00134934322 + x * w; x = -0.00367342844 + x * w;
    x = 0.00573950773 + x * w; x = -0.0076224613 + x * w; x = 0.00943887047 + x * w; x = 1.00167406 + x * w;
    x = 2.83297682 + x * w;
  }
  x *= y;
  for (int i = 0; i < 2; ++i) x -= (erf(x) - y) / (1.1283791670955126 * exp(-x * x));
  return x;
}
inline float erfinvf(float y) { return (float)erfinv((double)y); }
inline double erfcinv(double y) { return erfinv(1.0 - y); }
inline float erfcinvf(float y) { return (float)erfcinv((double)y); }
inline float normcdfinvf(float p) { return (float)(-1.4142135623730951 * erfcinv(2.0 * (double)p)); }
inline double normcdfinv(double p) { return -1.4142135623730951 * erfcinv(2.0 * p); }

// min/max as CUDA's math_functions.hpp declares them for device code (same overload set, incl. mixed signedness).
#define FGEMU_MINMAX(R, A, B)                                    \
  inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; }   \
  inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
FGEMU_MINMAX(int, int, int)
FGEMU_MINMAX(unsigned int, unsigned int, unsigned int)
FGEMU_MINMAX(unsigned int, int, unsigned int)
FGEMU_MINMAX(unsigned int, unsigned int, int)
FGEMU_MINMAX(long, long, long)
FGEMU_MINMAX(unsigned long, unsigned long, unsigned long)
FGEMU_MINMAX(unsigned long, long, unsigned long)
FGEMU_MINMAX(unsigned long, unsigned long, long)
FGEMU_MINMAX(long long, long long, long long)
FGEMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
FGEMU_MINMAX(unsigned long long, long long, unsigned long long)
FGEMU_MINMAX(unsigned long long, unsigned long long, long long)
#undef FGEMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin((double)a, b); }
inline double max(float a, double b) { return fmax((double)a, b); }
inline double min(double a, float b) { return fmin(a, (double)b); }
inline double max(double a, float b) { return fmax(a, (double)b); }
inline unsigned int umin(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int umax(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long llmin(long long a, long long b) { return a < b ? a : b; }
inline long long llmax(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long ullmin(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long ullmax(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

// ---------------------------------------------------------------------------------------------------------------
// CUDA runtime API subset (host side).
// ---------------------------------------------------------------------------------------------------------------
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidSymbol = 13,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNotSupported = 801,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorAssert = 710,
  cudaErrorLaunchFailure = 719,
  cudaErrorUnknown = 999,
};
typedef enum cudaError cudaError_t;

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
  cudaFuncAttributeRequiredClusterWidth = 11,
  cudaFuncAttributeRequiredClusterHeight = 12,
  cudaFuncAttributeRequiredClusterDepth = 13,
  cudaFuncAttributeNonPortableClusterSizeAllowed = 14,
  cudaFuncAttributeClusterSchedulingPolicyPreference = 15,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

const char* cudaGetErrorString(cudaError_t err);
const char* cudaGetErrorName(cudaError_t err);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value);
template <typename T>
inline cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaMalloc(void** p, size_t bytes);
template <typename T> inline cudaError_t cudaMalloc(T** p, size_t bytes) {
  return ::cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
cudaError_t cudaFree(void* p);
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind) {
  if (n) std::memmove(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind k, cudaStream_t = nullptr) {
  return cudaMemcpy(dst, src, n, k);
}
inline cudaError_t cudaMemset(void* dst, int v, size_t n) {
  if (n) std::memset(dst, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* dst, int v, size_t n, cudaStream_t = nullptr) { return cudaMemset(dst, v, n); }
template <typename T>
inline cudaError_t cudaMemcpyToSymbol(T& symbol, const void* src, size_t n, size_t offset = 0,
                                      cudaMemcpyKind = cudaMemcpyHostToDevice) {
  if (offset + n > sizeof(T)) return cudaErrorInvalidValue;
  std::memcpy(reinterpret_cast<char*>(&symbol) + offset, src, n);
  return cudaSuccess;
}
template <typename T>
inline cudaError_t cudaMemcpyFromSymbol(void* dst, const T& symbol, size_t n, size_t offset = 0,
                                        cudaMemcpyKind = cudaMemcpyDeviceToHost) {
  if (offset + n > sizeof(T)) return cudaErrorInvalidValue;
  std::memcpy(dst, reinterpret_cast<const char*>(&symbol) + offset, n);
  return cudaSuccess;
}

#undef FGEMU_SITE
#undef FGEMU_SITE_PARAMS
