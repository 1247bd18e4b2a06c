// Sample kernels for the CUDA CPU emulation tests (tests/test_emu.py). Plain CUDA: no #ifdef, compiled here with
// g++ -x c++ -DFG_EMU -I csrc. They include the project's kernel header so the real launch helper is exercised.
#include "kernels/common.cuh"
#include "kernels/activation.cuh"
#include "kernels/mma.cuh"

#include "kernels.cuh"

namespace fgemu_tests {

// ---- block reduction through shared memory ------------------------------------------------------------------
__global__ void block_reduce_sum(const float* __restrict__ x, float* __restrict__ out, int n) {
  __shared__ float buf[256];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  buf[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
}

// ---- warp-shuffle reductions ------------------------------------------------------------------------------------
__device__ __forceinline__ int warp_sum_xor(int v) {
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}
__device__ __forceinline__ int warp_sum_down(int v) {
  for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);
  return v;
}
// out[2*w] = xor-reduction of warp w (every lane holds it: checked by lane 31), out[2*w+1] = down-reduction (lane 0).
__global__ void warp_reduce(const int* x, int* out) {
  int gid = blockIdx.x * blockDim.x + threadIdx.x;
  int w = gid / 32, lane = threadIdx.x & 31;
  int a = warp_sum_xor(x[gid]);
  int b = warp_sum_down(x[gid]);
  if (lane == 31) out[2 * w] = a;
  if (lane == 0) out[2 * w + 1] = b;
}
// Block sum: warp shuffle, then the warp sums through shared memory, then warp 0 again.
__global__ void block_sum_shfl(const float* x, float* out, int n) {
  __shared__ float warp_sums[32];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = i < n ? x[i] : 0.0f;
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  int lane = threadIdx.x % warpSize, wid = threadIdx.x / warpSize;
  if (lane == 0) warp_sums[wid] = v;
  __syncthreads();
  int nw = (blockDim.x + warpSize - 1) / warpSize;
  if (wid == 0) {
    v = lane < nw ? warp_sums[lane] : 0.0f;
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    if (lane == 0) out[blockIdx.x] = v;
  }
}

// ---- shuffle variants with a width ------------------------------------------------------------------------------
// out[4*t + k]: k = 0 idx (src 3 within segments of `width`), 1 up by 2, 2 down by 3, 3 xor 5.
__global__ void shfl_width(const int* x, int* out, int width) {
  int t = threadIdx.x;
  int v = x[t];
  out[4 * t + 0] = __shfl_sync(0xffffffffu, v, 3, width);
  out[4 * t + 1] = __shfl_up_sync(0xffffffffu, v, 2, width);
  out[4 * t + 2] = __shfl_down_sync(0xffffffffu, v, 3, width);
  out[4 * t + 3] = __shfl_xor_sync(0xffffffffu, v, 5, width);
}

// ---- ballot-based stream compaction (order preserving, per block) --------------------------------------------------
// Keeps the positive values. out has gridDim.x * blockDim.x slots; counts[b] = number kept by block b.
__global__ void compact_positive(const int* x, int n, int* out, int* counts) {
  __shared__ int warp_base[32];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  int v = i < n ? x[i] : 0;
  bool keep = i < n && v > 0;
  unsigned ballot = __ballot_sync(0xffffffffu, keep);
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  int rank = __popc(ballot & ((1u << lane) - 1u));
  if (lane == 0) warp_base[wid] = __popc(ballot);
  __syncthreads();
  if (threadIdx.x == 0) {
    int acc = 0;
    for (int w = 0; w < (int)(blockDim.x + 31) / 32; ++w) {
      int c = warp_base[w];
      warp_base[w] = acc;
      acc += c;
    }
    counts[blockIdx.x] = acc;
  }
  __syncthreads();
  if (keep) out[blockIdx.x * blockDim.x + warp_base[wid] + rank] = v;
}

// ---- atomics ----------------------------------------------------------------------------------------------------
__global__ void histogram(const int* x, int n, unsigned* hist, int nbins) {
  __shared__ unsigned local[64];
  for (int b = threadIdx.x; b < nbins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    atomicAdd(&local[x[i] % nbins], 1u);
  __syncthreads();
  for (int b = threadIdx.x; b < nbins; b += blockDim.x) atomicAdd(&hist[b], local[b]);
}

__global__ void atomics_mix(AtomicsOut* o) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(&o->i_add, 2);
  atomicSub(&o->i_sub, 3);
  atomicAdd(&o->u_add, 1u);
  atomicSub(&o->u_sub, 1u);
  atomicAdd(&o->ull_add, 1ull << 33);
  atomicAdd(&o->f_add, 0.5f);
  atomicAdd(&o->d_add, 0.25);
  atomicMax(&o->i_max, t * 7 % 1000);
  atomicMin(&o->i_min, 1000 - t);
  atomicMax(&o->u_max, (unsigned)t);
  atomicMin(&o->ull_min, (unsigned long long)(t + 5));
  atomicOr(&o->u_or, 1u << (t % 32));
  atomicAnd(&o->u_and, ~(1u << (t % 16)));
  atomicXor(&o->u_xor, (unsigned)t);
  atomicExch(&o->i_exch, t);  // some thread's index
  atomicInc(&o->u_inc, 9u);   // wraps modulo 10
  // a lock-free "claim the first slot" with CAS
  if (atomicCAS(&o->cas_owner, -1, t) == -1) o->cas_winners += 1;
  atomicAdd(&o->h_add, __float2half(1.0f));
}

// ---- tiled matrix product (TILE does not divide the sizes) ------------------------------------------------------
constexpr int TILE = 16;
__global__ void matmul_tiled(const float* A, const float* B, float* C, int M, int N, int K) {
  __shared__ float As[TILE][TILE];
  __shared__ float Bs[TILE][TILE + 1];
  int row = blockIdx.y * TILE + threadIdx.y;
  int col = blockIdx.x * TILE + threadIdx.x;
  float acc = 0.0f;
  for (int k0 = 0; k0 < K; k0 += TILE) {
    As[threadIdx.y][threadIdx.x] = (row < M && k0 + (int)threadIdx.x < K) ? A[row * K + k0 + threadIdx.x] : 0.0f;
    Bs[threadIdx.y][threadIdx.x] = (col < N && k0 + (int)threadIdx.y < K) ? B[(k0 + threadIdx.y) * N + col] : 0.0f;
    __syncthreads();
    for (int k = 0; k < TILE; ++k) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
    __syncthreads();
  }
  if (row < M && col < N) C[row * N + col] = acc;
}

// ---- dynamic shared memory ---------------------------------------------------------------------------------------
// Reverses each block's chunk through `extern __shared__` memory sized at launch.
__global__ void reverse_dynamic(const float* x, float* y, int n) {
  extern __shared__ float dyn_tile[];
  int base = blockIdx.x * blockDim.x;
  int i = base + threadIdx.x;
  dyn_tile[threadIdx.x] = i < n ? x[i] : -1.0f;
  __syncthreads();
  int j = blockDim.x - 1 - threadIdx.x;
  if (base + j < n) y[base + j] = dyn_tile[threadIdx.x];
}

// Reads `count` floats of dynamic shared memory without writing them (poison check) and touches the last byte.
__global__ void read_dynamic_unwritten(float* y, int count) {
  extern __shared__ float dyn_tile[];
  for (int k = threadIdx.x; k < count; k += blockDim.x) y[blockIdx.x * count + k] = dyn_tile[k];
}

// ---- shared memory read before write ------------------------------------------------------------------------------
// Thread t writes buf[t] only for even t, then everybody reads buf[t ^ 1]: odd neighbours were never written.
__global__ void read_uninitialized(float* y) {
  __shared__ float buf[64];
  if (threadIdx.x % 2 == 0) buf[threadIdx.x] = 1.0f;
  __syncthreads();
  y[blockIdx.x * blockDim.x + threadIdx.x] = buf[threadIdx.x ^ 1u];
}
// A device helper's static shared array (kept for every kernel that calls it) and a kernel's own: both hold the fill
// at every block start and keep a block's values across barriers and block switches; another kernel's large array
// (big_static) is left out of this kernel's shared memory.
__device__ int* footprint_scratch() {
  __shared__ int scratch[64];
  return scratch;
}
__global__ void footprint(int* fresh, int* bad, int rounds) {
  __shared__ int mine[256];
  int* scratch = footprint_scratch();
  const int t = (int)threadIdx.x;
  fresh[blockIdx.x * blockDim.x + t] = mine[t] & scratch[t % 64];  // the fill, nothing older
  __syncthreads();
  for (int r = 0; r < rounds; ++r) {
    mine[t] = (int)blockIdx.x * 1000 + r * 7 + t;
    if (t < 64) scratch[t] = (int)blockIdx.x * 1000 + r;
    __syncthreads();
    int wrong = mine[(t + 1) % 256] != (int)blockIdx.x * 1000 + r * 7 + (t + 1) % 256;
    wrong |= scratch[(t + 5) % 64] != (int)blockIdx.x * 1000 + r;
    if (wrong) atomicAdd(bad, 1);
    __syncthreads();
  }
}
// A kernel named like one in emu_tests.cpp's anonymous namespace: their function-local variables get the same symbol
// name, so the emulator cannot tell whose each is and must leave neither out of the other's launch.
namespace {
__global__ void twin(int* fresh) {
  __shared__ int own[64];
  fresh[blockIdx.x * blockDim.x + threadIdx.x] = own[threadIdx.x];  // the fill in every block
  own[threadIdx.x] = 1;
}
}  // namespace
TwinKernel twin_in_kernels_cu() { return twin; }
__global__ void big_static(int* y) {
  __shared__ int big[8192];
  big[threadIdx.x] = (int)threadIdx.x;
  __syncthreads();
  y[threadIdx.x] = big[(threadIdx.x + 1) % blockDim.x];
}
// Block b writes its index to shared memory only when b == 0; later blocks must not see block 0's value.
__global__ void stale_between_blocks(int* y) {
  __shared__ int s;
  if (blockIdx.x == 0 && threadIdx.x == 0) s = 12345;
  __syncthreads();
  if (threadIdx.x == 0) y[blockIdx.x] = s;
}

// ---- 2-D / 3-D grids ------------------------------------------------------------------------------------------------
__global__ void grid_index(unsigned* out, dim3 total) {
  unsigned x = blockIdx.x * blockDim.x + threadIdx.x;
  unsigned y = blockIdx.y * blockDim.y + threadIdx.y;
  unsigned z = blockIdx.z * blockDim.z + threadIdx.z;
  if (x >= total.x || y >= total.y || z >= total.z) return;
  unsigned lin = (z * total.y + y) * total.x + x;
  unsigned tlin = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  out[4 * lin + 0] = x;
  out[4 * lin + 1] = y;
  out[4 * lin + 2] = z;
  out[4 * lin + 3] = (gridDim.x << 24) ^ (gridDim.y << 16) ^ (gridDim.z << 8) ^ (blockDim.x * blockDim.y * blockDim.z) ^
                     (tlin << 12);
}

// ---- block-wide vote barriers ----------------------------------------------------------------------------------------
__global__ void sync_votes(const int* x, int* out) {
  int p = x[threadIdx.x];
  int c = __syncthreads_count(p > 0);
  int a = __syncthreads_and(p > -100);
  int o = __syncthreads_or(p > 90);
  if (threadIdx.x == 0) {
    out[0] = c;
    out[1] = a;
    out[2] = o;
  }
}

// ---- warp votes, match, reduce, activemask ----------------------------------------------------------------------------
__global__ void warp_votes(const int* x, unsigned* out) {
  int lane = threadIdx.x & 31;
  int v = x[threadIdx.x];
  unsigned b = __ballot_sync(0xffffffffu, v & 1);
  int any = __any_sync(0xffffffffu, v > 100);
  int all = __all_sync(0xffffffffu, v >= 0);
  unsigned m = __match_any_sync(0xffffffffu, v % 4);
  int pred = 0;
  unsigned ma = __match_all_sync(0xffffffffu, 7, &pred);
  unsigned rs = __reduce_add_sync(0xffffffffu, (unsigned)v);
  int rmax = __reduce_max_sync(0xffffffffu, v - 50);
  __syncwarp();
  unsigned* o = out + 8 * (threadIdx.x);
  o[0] = b;
  o[1] = (unsigned)any;
  o[2] = (unsigned)all;
  o[3] = m;
  o[4] = ma ^ (unsigned)pred;
  o[5] = rs;
  o[6] = (unsigned)rmax;
  o[7] = (unsigned)lane;
}
// Warp-aggregated atomic increment: one atomic per group of active lanes (uses __activemask + __shfl_sync).
__global__ void aggregated_increment(const int* x, int* counter, int* slots) {
  int v = x[threadIdx.x];
  if (v % 3 == 0) {
    unsigned active = __activemask();
    int leader = __ffs((int)active) - 1;
    int lane = threadIdx.x & 31;
    int base = 0;
    if (lane == leader) base = atomicAdd(counter, __popc(active));
    base = __shfl_sync(active, base, leader);
    slots[threadIdx.x] = base + __popc(active & ((1u << lane) - 1u));
  } else {
    slots[threadIdx.x] = -1;
  }
}

// Partial warp: a block of 48 threads, warp 1 has 16 lanes. Full-mask shuffles read poison from missing lanes.
__global__ void partial_warp(float* out) {
  float v = (float)threadIdx.x;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, v, 8);
}

// ---- misc device functions used by real kernels -------------------------------------------------------------------
__global__ void intrinsics(float* f, int* i) {
  if (threadIdx.x != 0) return;
  f[0] = __saturatef(1.5f) + __saturatef(-2.0f) + __saturatef(0.25f);  // 1.25
  f[1] = __fdividef(1.0f, 4.0f) + __frcp_rn(8.0f) + rsqrtf(16.0f);       // 0.625
  f[2] = __int_as_float(__float_as_int(3.5f)) + __uint_as_float(__float_as_uint(0.5f));  // 4
  f[3] = fmaxf(min(2.0f, 3.0f), max(1.0f, -1.0f)) + __fmaf_rn(2.0f, 3.0f, 1.0f);          // 9
  f[4] = __expf(0.0f) + __logf(1.0f) + fastgan::fg_exp(0.0f);                              // 2
  f[5] = __ldg(f + 0);                                                                     // 1.25
  i[0] = __popc(0xF0F0u) + __clz(1) + __ffs(8) + (int)(__brev(1u) >> 28);  // 8 + 31 + 4 + 8 = 51
  i[1] = min(3, 7) + max(-2, -5) + (int)min(4u, 9u) + (int)__byte_perm(0x11223344u, 0, 0x0123) % 7;
  i[2] = __float2int_rn(2.5f) + __float2int_rn(3.5f) + __float2int_rz(-1.7f) + __float2int_rd(-1.2f);  // 2+4-1-2=3
  i[3] = (int)(clock64() > 0) + (int)__hisnan(__float2half(NAN)) + (int)(__half2float(__float2half(0.1f)) != 0.1f);
  float4 q = make_float4(1, 2, 3, 4);
  float2 p = make_float2(5, 6);
  int2 r = make_int2(7, 8);
  i[4] = (int)(q.x + q.w + p.y) + r.x + r.y + (int)(sizeof(float4) + alignof(float4) + alignof(double2));
  __threadfence();
  __threadfence_block();
}

// Uses the activation functors exactly as the fused ops will.
template <typename F>
__global__ void act_fwd(const float* x, float* y, int n, float alpha, float gain, float clamp) {
  fastgan::emu::grid_dependency_sync();  // launched by common.cuh's launch(): the project's kernels' rule
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = fastgan::act_forward<F, float>(x[i], alpha, gain, clamp);
}
template __global__ void act_fwd<fastgan::ActLrelu>(const float*, float*, int, float, float, float);

// Templated element copy through common.cuh's load/store (f16/bf16 storage, f32 math).
template <typename T>
__global__ void scale_copy(const T* x, T* y, int n, float s) {
  fastgan::emu::grid_dependency_sync();
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) fastgan::emu::store<T>(y, i, fastgan::emu::load<T>(x, i) * s);
}

// ---- kernels that must fail -----------------------------------------------------------------------------------------
__global__ void divergent_exit(float* y) {
  __shared__ float buf[128];
  if (threadIdx.x >= blockDim.x / 2) return;  // half the block leaves
  buf[threadIdx.x] = 1.0f;
  __syncthreads();
  y[threadIdx.x] = buf[threadIdx.x];
}
__global__ void two_barriers(float* y) {
  __shared__ float buf[128];
  if (threadIdx.x % 2) {
    buf[threadIdx.x] = 1.0f;
    __syncthreads();
  } else {
    buf[threadIdx.x] = 2.0f;
    __syncthreads();
  }
  y[threadIdx.x] = buf[threadIdx.x ^ 1];
}
__global__ void shfl_deadlock(float* y) {
  float v = (float)threadIdx.x;
  if (threadIdx.x < 16) {
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  } else {
    __syncthreads();
  }
  y[threadIdx.x] = v;
}
__global__ void shfl_bad_mask(float* y) {
  float v = (float)threadIdx.x;
  v = __shfl_xor_sync(0x0000ffffu, v, 1);  // lanes 16..31 are not in the mask
  y[threadIdx.x] = v;
}
__global__ void device_assert(const int* x) {
  assert(x[threadIdx.x] >= 0);
}
__global__ void big_smem(float* y) {
  extern __shared__ float dyn_tile[];
  dyn_tile[threadIdx.x] = (float)threadIdx.x;
  __syncthreads();
  y[blockIdx.x * blockDim.x + threadIdx.x] = dyn_tile[blockDim.x - 1 - threadIdx.x];
}
__global__ void noop(int*) {}
__global__ void null_write(int* p) {
  if (threadIdx.x == 3) p[threadIdx.x] = 1;  // p is null
}
__device__ __noinline__ int deep(int n, volatile char* sink) {
  volatile char pad[512];
  pad[n % 512] = (char)n;
  sink[0] = pad[(n * 7) % 512];
  if (n == 0) return 0;
  int r = deep(n - 1, sink);
  return r + pad[n % 512];  // the frame stays live across the call: no loop transformation
}
__global__ void stack_hog(int* out, int depth) {
  char sink[1];
  out[threadIdx.x] = deep(depth, sink);
}

// ---- speed -----------------------------------------------------------------------------------------------------------
__global__ void four_barriers(float* y) {
  __shared__ float buf[256];
  int t = threadIdx.x;
  buf[t] = (float)t;
  __syncthreads();
  float a = buf[(t + 1) % blockDim.x];
  __syncthreads();
  buf[t] = a * 2.0f;
  __syncthreads();
  float b = buf[(t + 7) % blockDim.x];
  __syncthreads();
  y[blockIdx.x * blockDim.x + t] = b;
}
__global__ void elementwise(const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i] * 2.0f + 1.0f;
}

// ---- races (found by FGEMU_RACECHECK / exposed by FGEMU_SCHEDULE=reverse) ---------------------------------------
// Neighbour shift with the barrier between the store and the load forgotten: gives the right answer when threads
// happen to run in increasing order (as the emulator does by default), garbage under the race check or another order.
__global__ void shift_missing_barrier(const float* x, float* out) {
  __shared__ float buf[128];
  int t = threadIdx.x;
  buf[t] = x[blockIdx.x * blockDim.x + t];
  // __syncthreads() missing here
  out[blockIdx.x * blockDim.x + t] = t > 0 ? buf[t - 1] : 0.0f;
}
// Every thread stores its own index into one shared word: a write-write race.
__global__ void write_write_race(int* out) {
  __shared__ int who;
  who = (int)threadIdx.x;
  __syncthreads();
  if (threadIdx.x == 0) *out = who;
}
// Same value from every thread: benign, not reported.
__global__ void same_value_writes(int* out) {
  __shared__ int flag;
  if (threadIdx.x == 0) flag = 0;
  __syncthreads();
  if (threadIdx.x % 3 == 0) flag = 1;
  __syncthreads();
  out[threadIdx.x] = flag;
}
// A plain store racing with atomics on the same shared counter.
__global__ void plain_vs_atomic(int* out) {
  __shared__ int count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  if (threadIdx.x == 5)
    count = 100;
  else
    atomicAdd(&count, 1);
  __syncthreads();
  if (threadIdx.x == 0) *out = count;
}
// Warp-synchronous reduction in shared memory: correct only with __syncwarp() between the steps.
__global__ void warp_smem_reduce(const int* x, int* out, int use_syncwarp) {
  __shared__ int s[64];
  int lane = threadIdx.x & 31, base = threadIdx.x & ~31;
  s[threadIdx.x] = x[threadIdx.x];
  __syncwarp();
  for (int off = 16; off > 0; off >>= 1) {
    int v = lane < off ? s[base + lane + off] : 0;
    if (use_syncwarp) __syncwarp();
    if (lane < off) s[threadIdx.x] += v;
    if (use_syncwarp) __syncwarp();
  }
  if (lane == 0) out[threadIdx.x / 32] = s[threadIdx.x];
}

}  // namespace fgemu_tests

// A kernel in the project's kernel namespace, using the pre-registered `smem` name and common.cuh's launch helper.
namespace fastgan {
namespace FG_NS {
__global__ void dyn_prefix_sum(const int* x, int* y, int n) {
  grid_dependency_sync();
  extern __shared__ __align__(16) unsigned char smem[];
  int* s = reinterpret_cast<int*>(smem);
  int t = threadIdx.x;
  s[t] = t < n ? x[t] : 0;
  __syncthreads();
  for (int off = 1; off < (int)blockDim.x; off <<= 1) {  // Hillis-Steele scan
    int v = t >= off ? s[t - off] : 0;
    __syncthreads();
    s[t] += v;
    __syncthreads();
  }
  if (t < n) y[t] = s[t];
}

void launch_dyn_prefix_sum(const int* x, int* y, int n, int threads) {
  launch("dyn_prefix_sum", dyn_prefix_sum, dim3(1), dim3(threads), threads * sizeof(int), nullptr, x, y, n);
}
}  // namespace FG_NS
}  // namespace fastgan

namespace fgemu_tests {
using namespace fastgan::emu;
// Wrappers used by the driver (the kernels are file-local templates / in this TU).
void run_act_lrelu(const float* x, float* y, int n) {
  launch("act_fwd<lrelu>", act_fwd<fastgan::ActLrelu>, dim3((n + 63) / 64), dim3(64), 0, nullptr, x, y, n, 0.2f,
         1.4142135f, 0.5f);
}
void run_scale_copy_half(const __half* x, __half* y, int n, float s) {
  launch("scale_copy<half>", scale_copy<__half>, dim3((n + 127) / 128), dim3(128), 0, nullptr, x, y, n, s);
}
void run_scale_copy_bf16(const __nv_bfloat16* x, __nv_bfloat16* y, int n, float s) {
  launch("scale_copy<bf16>", scale_copy<__nv_bfloat16>, dim3((n + 127) / 128), dim3(128), 0, nullptr, x, y, n, s);
}
void run_scale_copy_f64(const double* x, double* y, int n, float s) {
  dispatch_dtype(fastgan::DType::f64, "scale_copy", [&](auto tag) {
    using T = decltype(tag);
    launch("scale_copy<f64>", scale_copy<T>, dim3((n + 127) / 128), dim3(128), 0, nullptr, (const T*)x, (T*)y, n, s);
  });
}
}  // namespace fgemu_tests

// ---- memory shared between blocks (global-memory race check, interleaved blocks, poison) ---------------------------
namespace fgemu_tests {
// Every thread of the grid counts once: with a plain += updates are lost on a GPU (the emulator's default order never
// interrupts the read-modify-write, so only the race check shows it).
__global__ void count_plain(int* c) { *c += 1; }
__global__ void count_atomic(int* c) { atomicAdd(c, 1); }

// The last block to finish sums the per-block partial sums (CUDA's threadFenceReduction pattern). Without the fence
// the partial sum may not be visible to the last block when it reads it.
__global__ void last_block_sum(const float* x, float* partial, unsigned* count, float* out, int use_fence) {
  __shared__ float s[128];
  __shared__ bool is_last;
  s[threadIdx.x] = x[blockIdx.x * 128 + threadIdx.x];
  __syncthreads();
  for (int h = 64; h > 0; h >>= 1) {
    if ((int)threadIdx.x < h) s[threadIdx.x] += s[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = s[0];
    if (use_fence) __threadfence();
    unsigned ticket = atomicInc(count, gridDim.x);
    is_last = ticket == gridDim.x - 1;
  }
  __syncthreads();
  if (is_last && threadIdx.x == 0) {
    float acc = 0.0f;
    for (unsigned b = 0; b < gridDim.x; ++b) acc += partial[b];
    *out = acc;
    *count = 0;  // ready for the next launch (ordered after every block's atomicInc)
  }
}

// Block 1 hands a value to block 0 through a flag; block 0 spins on the flag (it needs block 1 to be resident).
__global__ void flag_handoff(int* data, volatile int* flag, int* out, int use_fence) {
  if (threadIdx.x != 0) return;
  if (blockIdx.x == 1) {
    data[0] = 42;
    if (use_fence) __threadfence();
    *flag = 1;
  } else if (blockIdx.x == 0) {
    while (*flag == 0) {
    }
    __threadfence();
    out[0] = data[0];
  }
}

// Programmatic dependent launch: copies src to dst after cudaGridDependencySynchronize(). `early` touches global
// memory before it in thread 5 of block 1: 1 reads src, 2 writes dst; 3: thread 5 of block 1 never synchronises;
// 4 only uses shared memory (an atomic too) before it (allowed); 5: an atomic on dst before it.
__global__ void pdl_copy(const int* src, int* dst, int n, int early) {
  __shared__ int stage[64];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const bool me = blockIdx.x == 1 && threadIdx.x == 5;
  int v = 0;
  if (me && early == 1) v = src[i];
  if (me && early == 2) dst[i] = -1;
  if (me && early == 5) atomicAdd(&dst[i], 1);
  stage[threadIdx.x] = (int)threadIdx.x;
  if (early == 4) atomicAdd(&stage[threadIdx.x], 0);
  cudaTriggerProgrammaticLaunchCompletion();
  if (!(me && early == 3)) cudaGridDependencySynchronize();
  if (i < n) dst[i] = src[i] + v + stage[threadIdx.x] - (int)threadIdx.x;
}

// Accesses a GPU makes as one instruction must be aligned to their size (else cudaErrorMisalignedAddress). Mode 0:
// all aligned -- u[i] = the 16-bit pair h[2i], h[2i+1] as one 4-byte load, d[i] = 2i, v[i] = w[i] as 16-byte
// vectors (common.cuh's load_vec / store_vec), r = the rows of an ldmatrix.x4 of a 32x8 16-bit matrix. In modes 1-4
// thread 5 of block 1 misbehaves: 1 a 4-byte load at an odd 16-bit offset, 2 a double stored 4 bytes off, 3 a vector
// loaded 4 bytes off, 4 an ldmatrix row address 8 bytes off.
struct __align__(16) Vec4 {
  float v[4];
};
__global__ void misaligned_access(const unsigned short* h, unsigned* u, double* d, const float* w, float* v,
                                  unsigned* r, int mode) {
  __shared__ __align__(16) unsigned short s[32 * 8 + 8];
  const int i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x & 31;
  const bool me = blockIdx.x == 1 && threadIdx.x == 5;
  u[i] = *reinterpret_cast<const unsigned*>(h + 2 * i + (me && mode == 1 ? 1 : 0));
  double* dp = d + i;
  if (me && mode == 2) dp = reinterpret_cast<double*>(reinterpret_cast<char*>(dp) + 4);
  *dp = 2.0 * i;
  const Vec4 x = fastgan::emu::load_vec<Vec4>(w + (me && mode == 3 ? 1 : 0), i);
  fastgan::emu::store_vec(v, i, x);
  for (int k = threadIdx.x; k < 32 * 8; k += blockDim.x) s[k] = h[k];
  __syncthreads();
  uint32_t q[4];
  fastgan::emu::tc::ldmatrix<4, false>(q, &s[lane * 8 + (me && mode == 4 ? 4 : 0)]);
  if (blockIdx.x == 0 && threadIdx.x < 32)
    for (int m = 0; m < 4; ++m) r[lane * 4 + m] = q[m];
}

// A grid-wide barrier by spinning on a counter: correct only when every block of the grid is resident at once.
__global__ void grid_spin_barrier(unsigned* arrived, int* out) {
  if (threadIdx.x == 0) {
    atomicAdd(arrived, 1u);
    while (atomicAdd(arrived, 0u) < gridDim.x) {
    }
    out[blockIdx.x] = 1;
  }
}

// Reads 64 shared ints of which only 32 were written: the maximum of non-negative inputs is unaffected by a 0xFF fill
// (-1) or a 0x00 fill, but not by others.
__global__ void uninitialized_max(const int* x, int* out) {
  __shared__ int s[64];
  if (threadIdx.x < 32) s[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) {
    int m = 0;
    for (int i = 0; i < 64; ++i) m = max(m, s[i]);
    *out = m;
  }
}

// Only block 2 writes `only_block2`, and two of its threads race there: the default race check learns the pages a
// kernel writes from its first block, so this race is found by FGEMU_RACECHECK=full only.
__global__ void race_in_later_block(int* out) {
  __shared__ int first[32];
  __shared__ int only_block2[256];
  first[threadIdx.x] = (int)threadIdx.x;
  __syncthreads();
  if (blockIdx.x == 2 && threadIdx.x < 2) only_block2[100] = (int)threadIdx.x + 1;
  __syncthreads();
  out[blockIdx.x * 32 + threadIdx.x] = first[31 - threadIdx.x] + (blockIdx.x == 2 ? only_block2[100] : 0);
}
}  // namespace fgemu_tests
