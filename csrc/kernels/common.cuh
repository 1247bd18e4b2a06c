// fastgan kernel layer: shared definitions for every .cu file.
//
// Rules for code under csrc/kernels/ (see GUIDE §1):
//   * raw pointers, sizes, strides and a stream only -- no torch headers;
//   * the same source compiles with nvcc (namespace fastgan::cuda) and with the host compiler under the CPU
//     emulation (-DFG_EMU, namespace fastgan::emu, csrc/emu/cuda_emu.h);
//   * no #ifdef FG_EMU inside kernels: the backend switch lives in this header (launch helper, types) and, for the
//     tensor-core instructions, in mma.cuh.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#ifdef FG_EMU
#include "../emu/cuda_emu.h"
#define FG_NS emu
#else
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define FG_NS cuda
#endif

#define FG_HD __host__ __device__ __forceinline__

#include "launchers.h"
#include "activation.cuh"

namespace fastgan {

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
  }
  return "?";
}

namespace FG_NS {

// Arithmetic type: half types compute in float32, float64 stays float64.
template <typename T> struct OpMath { using type = float; };
template <> struct OpMath<double> { using type = double; };

template <typename T> FG_HD typename OpMath<T>::type load(const T* p, int64_t i) { return p[i]; }
template <> FG_HD float load<__half>(const __half* p, int64_t i) { return __half2float(p[i]); }
template <> FG_HD float load<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }

template <typename T> FG_HD void store(T* p, int64_t i, typename OpMath<T>::type v) { p[i] = static_cast<T>(v); }
template <> FG_HD void store<__half>(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }
template <> FG_HD void store<__nv_bfloat16>(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }

// Element i of an array of vectors P (bias_act's 16-byte packs): one access of sizeof(P) bytes on a GPU, which faults
// unless the address is a multiple of alignof(P) (the launchers check the pointers before choosing vectors; the
// emulation checks every access, as the compiled kernels' scalar accesses are checked through their hooks).
template <typename P>
__device__ __forceinline__ P load_vec(const void* p, int64_t i) {
  const P* q = static_cast<const P*>(p) + i;
#ifdef FG_EMU
  ::fgemu::rt::check_aligned(q, alignof(P), "a vector load");
#endif
  return *q;
}
template <typename P>
__device__ __forceinline__ void store_vec(void* p, int64_t i, const P& v) {
  P* q = static_cast<P*>(p) + i;
#ifdef FG_EMU
  ::fgemu::rt::check_aligned(q, alignof(P), "a vector store");
#endif
  *q = v;
}

// Calls f.template operator()<T>() with the C++ type of `dt`.
template <typename F> void dispatch_dtype(DType dt, const char* what, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    case DType::f16: f(__half{}); return;
    case DType::bf16: f(__nv_bfloat16{}); return;
  }
  throw std::invalid_argument(std::string(what) + ": unsupported dtype");
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Programmatic dependent launch (PDL, sm_90+): launched with it (launch() below, when programmatic_launch() says
// so), a kernel's blocks may start while the previous kernel in the stream is still running, which hides the launch
// gap between the short dependent kernels of a training step. Every kernel calls this first, before touching global
// memory: it lets the next kernel be scheduled (whose blocks then wait here in turn; all of this grid's blocks have
// started by then, so none is crowded out) and waits until the previous kernel has completed with its writes
// visible. So a kernel sees memory as without PDL; only the launch overlaps. Without the attribute (PDL off, or a
// GPU before sm_90) both instructions are no-ops. The early trigger also lets another library's kernel launched
// with PDL right after ours start its preamble early: correct if that kernel waits before touching its inputs, as
// PDL requires (fastgan's launches are off by default; torch's own kernels do not use PDL). The emulation launches
// every kernel as a programmatic launch and fails one whose thread touches global memory before this call.
__device__ __forceinline__ void grid_dependency_sync() {
#if defined(FG_EMU)
  cudaGridDependencySynchronize();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaTriggerProgrammaticLaunchCompletion();
  cudaGridDependencySynchronize();
#endif
}

// Whether launch() asks for programmatic dependent launch on the current device: the process setting
// (set_programmatic_launch; FASTGAN_CUDA_PDL=0|1 gives the initial value, off by default until a GPU has measured
// it) and kernels that run there from sm_90+ code (which has the wait). Defined in table.cu, with the count of
// launches that had the attribute (programmatic_launches, launchers.h).
bool programmatic_launch();
void count_programmatic_launch();

// The one launch path of every kernel. Under nvcc: cudaLaunchKernelEx on the given stream (the glue passes the
// current torch stream), with the programmatic-serialisation attribute where programmatic_launch(), then the launch
// is checked. Under emulation: the CPU runtime executes the grid with CUDA's semantics as a programmatic launch
// (the strictest case) and reports faults with the kernel's name. Empty grids are not launched (CUDA rejects them).
template <typename... KArgs, typename... Args>
void launch(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, void* stream,
            Args... args) {
  if ((int64_t)grid.x * grid.y * grid.z == 0) return;
#ifdef FG_EMU
  (void)stream;
  ::fgemu::launch_programmatic(name, kernel, grid, block, smem, static_cast<KArgs>(args)...);
#else
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = static_cast<cudaStream_t>(stream);
  cudaLaunchAttribute attr[1] = {};
  if (programmatic_launch()) {
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    count_programmatic_launch();
  }
  cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...);
  if (err == cudaSuccess) err = cudaGetLastError();
  else (void)cudaGetLastError();  // clear the (non-sticky) launch error, as after <<<>>>
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("fastgan: launch of CUDA kernel '") + name + "' failed: " +
                             cudaGetErrorString(err) + " (grid " + std::to_string(grid.x) + "x" +
                             std::to_string(grid.y) + "x" + std::to_string(grid.z) + ", block " +
                             std::to_string(block.x) + "x" + std::to_string(block.y) + "x" +
                             std::to_string(block.z) + ", dynamic smem " + std::to_string(smem) + " B)");
  }
#endif
}

// Cross-block reduction in one launch: every thread of a block calls this after the block has written its
// partial results; it returns true in the last of `arrivals` blocks sharing `slot` (one of the kCounterSlots
// zeroed int32 slots, launchers.h), which may then read every block's partials, and resets the slot. Release: a
// fence before the arrival is counted; acquire: a fence after the last arrival is seen.
__device__ __forceinline__ bool last_arrival(int* slot, int arrivals) {
  __shared__ int last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
    last = atomicAdd(slot, 1) == arrivals - 1;
    if (last) atomicExch(slot, 0);
  }
  __syncthreads();
  if (last) __threadfence();
  return last != 0;
}

// The sum of one value per thread over a 1-D block of kThreads threads (a power of two) in a fixed tree order:
// the same bits on every run; every thread gets the total. kThreads accumulators of shared memory.
template <int kThreads, typename M>
__device__ __forceinline__ M block_sum(M acc) {
  __shared__ M red[kThreads];
  red[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  const M total = red[0];
  __syncthreads();  // red may be reused by the next call
  return total;
}

// The sum of s.term(i) over i < numel in one launch, the same bits on every run whichever block finishes last:
// block b adds a grid-stride share in a fixed tree order (block_sum) into partial[b]; the last block to finish
// (last_arrival) adds the blocks' partials in order and writes s.finish(total) to out[0]. Sum: a trivially copyable
// functor with FG_HD `M term(int64_t)` and `M finish(M)`, M = OpMath<T>::type. Launched by launch_fixed_order_sum.
constexpr int kSumThreads = 256;
constexpr int kSumItemsPerThread = 4;

template <typename T, typename Sum>
__global__ void __launch_bounds__(kSumThreads)
fixed_order_sum_kernel(Sum s, typename OpMath<T>::type* __restrict__ partial, int* counters, T* __restrict__ out,
                       int64_t numel) {
  grid_dependency_sync();  // first, before any global-memory access (PDL: common.cuh)
  using M = typename OpMath<T>::type;
  const int64_t stride = (int64_t)blockDim.x * gridDim.x;
  M acc = M(0);
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += stride) acc += s.term(i);
  const M block = block_sum<kSumThreads>(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = block;
  if (!last_arrival(counters, (int)gridDim.x)) return;
  acc = M(0);
  for (int k = threadIdx.x; k < (int)gridDim.x; k += blockDim.x) acc += partial[k];
  const M total = block_sum<kSumThreads>(acc);
  if (threadIdx.x == 0) store(out, 0, s.finish(total));
}

// workspace: kSumMaxBlocks accumulators of M (launchers.h); counters: kCounterSlots zeroed slots.
template <typename T, typename Sum>
void launch_fixed_order_sum(const char* name, const Sum& s, void* workspace, int* counters, void* out, int64_t numel,
                            void* stream) {
  if (counters == nullptr) throw std::invalid_argument(std::string(name) + ": the reduction needs counters");
  int64_t blocks = ceil_div(numel, (int64_t)kSumThreads * kSumItemsPerThread);
  blocks = blocks < 1 ? 1 : (blocks > kSumMaxBlocks ? kSumMaxBlocks : blocks);
  launch(name, fixed_order_sum_kernel<T, Sum>, dim3((unsigned)blocks), dim3(kSumThreads), 0, stream, s,
         static_cast<typename OpMath<T>::type*>(workspace), counters, static_cast<T*>(out), numel);
}


}  // namespace FG_NS
}  // namespace fastgan
