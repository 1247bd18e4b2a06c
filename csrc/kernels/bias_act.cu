// bias + activation: forward, and backward with the bias gradient fused into the same launch.
//
// Memory-bound kernels (2 x numel elements moved forward, 3 x backward), so:
//   * 16-byte vector loads/stores (4 float, 8 half/bfloat16, 2 double per access) when every pointer is 16-byte
//     aligned, with a scalar tail; scalar accesses otherwise (same code, vector width 1);
//   * no per-element integer division: the channel of the first element of a vector comes from one
//     multiply-shift division pair (FastDiv; 64-bit division only for tensors of >= 2^31 elements) and is then
//     advanced element by element (j -> j + 1 wraps at `inner`, then the channel wraps at C);
//   * the bias gradient: a warp per (channel, split) sums a contiguous share of the channel with the (o, j)
//     position advanced incrementally (no division per element), or, when the channels are the fastest
//     dimension (inner == 1: dense layers, channels_last), lanes walk consecutive channels and warps interleaved
//     rows, so every warp access is coalesced; splits adapt to the work (<= kBiasGradSplits). These two use
//     scalar accesses: coalesced, but not 16-byte vectors yet.
//     Partial sums are combined in a fixed order (no float atomics): bitwise reproducible.
//   * the activation is a template parameter: straight-line code per activation, no branch per element.
#include <algorithm>

#include "fastdiv.cuh"

namespace fastgan {
namespace FG_NS {
namespace {

constexpr int kThreads = 256;

template <typename T, int V>
struct __align__(sizeof(T) * V) Pack {
  T v[V];
};

// Position (j within the `inner` run, channel c) of flat element i.
struct ChannelCursor {
  int64_t j, c;
  __device__ __forceinline__ void seek(int64_t i, int64_t inner, int64_t C, const FastDiv& dinner,
                                       const FastDiv& dC, bool wide) {
    int64_t q;
    if (wide) {
      q = i / inner;
      j = i - q * inner;
      c = q % C;
    } else {
      const uint32_t qq = dinner.div((uint32_t)i);
      j = (int64_t)i - (int64_t)qq * inner;
      c = (int64_t)qq - (int64_t)dC.div(qq) * C;
    }
  }
  __device__ __forceinline__ void next(int64_t inner, int64_t C) {
    if (++j == inner) {
      j = 0;
      if (++c == C) c = 0;
    }
  }
};

struct Layout {
  int64_t numel, C, inner;
  FastDiv dinner, dC;
  int wide;  // numel >= 2^31: 64-bit division
};

// y[i] = act(x[i] + b[(i / inner) % C]) * gain, clamped. x and y may alias (in-place epilogue after a GEMM).
template <typename T, typename A, int V>
__global__ void __launch_bounds__(kThreads)
bias_act_fwd_kernel(const T* x, const T* __restrict__ b, T* y, Layout L, typename OpMath<T>::type alpha,
                    typename OpMath<T>::type gain, typename OpMath<T>::type clamp) {
  grid_dependency_sync();  // first, before any global-memory access (PDL: common.cuh)
  using M = typename OpMath<T>::type;
  const int64_t nvec = L.numel / V;
  const int64_t stride = (int64_t)blockDim.x * gridDim.x;
  for (int64_t v = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; v < nvec; v += stride) {
    const Pack<T, V> in = load_vec<Pack<T, V>>(x, v);
    Pack<T, V> out;
    if (b != nullptr) {
      ChannelCursor cur;
      cur.seek(v * V, L.inner, L.C, L.dinner, L.dC, L.wide);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        store(out.v, e, act_forward<A, M>(load(in.v, e) + load(b, cur.c), alpha, gain, clamp));
        cur.next(L.inner, L.C);
      }
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e) store(out.v, e, act_forward<A, M>(load(in.v, e), alpha, gain, clamp));
    }
    store_vec(y, v, out);
  }
  const int64_t tail = L.numel - nvec * V;  // < V elements, done by the first threads of block 0
  if (blockIdx.x == 0 && (int64_t)threadIdx.x < tail) {
    const int64_t i = nvec * V + threadIdx.x;
    M z = load(x, i);
    if (b != nullptr) {
      ChannelCursor cur;
      cur.seek(i, L.inner, L.C, L.dinner, L.dC, L.wide);
      z += load(b, cur.c);
    }
    store(y, i, act_forward<A, M>(z, alpha, gain, clamp));
  }
}

// Backward without a bias gradient: purely elementwise.
template <typename T, typename A, int V>
__global__ void __launch_bounds__(kThreads)
bias_act_bwd_kernel(const T* dy, const T* __restrict__ y, T* dz, int64_t numel, typename OpMath<T>::type alpha,
                    typename OpMath<T>::type gain, typename OpMath<T>::type clamp) {
  grid_dependency_sync();  // first, before any global-memory access (PDL: common.cuh)
  using M = typename OpMath<T>::type;
  const int64_t nvec = numel / V;
  const int64_t stride = (int64_t)blockDim.x * gridDim.x;
  for (int64_t v = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; v < nvec; v += stride) {
    const Pack<T, V> g = load_vec<Pack<T, V>>(dy, v);
    const Pack<T, V> a = load_vec<Pack<T, V>>(y, v);
    Pack<T, V> out;
#pragma unroll
    for (int e = 0; e < V; ++e)
      store(out.v, e, act_backward<A, M>(load(g.v, e), load(a.v, e), alpha, gain, clamp));
    store_vec(dz, v, out);
  }
  const int64_t tail = numel - nvec * V;
  if (blockIdx.x == 0 && (int64_t)threadIdx.x < tail) {
    const int64_t i = nvec * V + threadIdx.x;
    store(dz, i, act_backward<A, M>(load(dy, i), load(y, i), alpha, gain, clamp));
  }
}

// Backward with the bias gradient, inner > 1: warp w of block bx owns channel c = 8 bx + w and walks split s
// (= blockIdx.y) of its elements: runs of `inner` contiguous elements, one per outer index o, lanes striding by
// 32 with the (o, j) position found once and then advanced with carries (no division per element). The warp's
// sum is reduced with shuffles in a fixed order and written as one partial. One warp per channel keeps the grid
// proportional to the work however many channels there are (a block per channel idled most of its threads
// when channels are many and small).
constexpr int kWarps = kThreads / 32;

// The bias gradient of channel c from its splits' partial sums, added in split order (bitwise deterministic).
template <typename T>
__device__ __forceinline__ void finish_bias_grad(const typename OpMath<T>::type* partial, T* db, int64_t c, int64_t C,
                                                 int splits) {
  using M = typename OpMath<T>::type;
  if (c >= C) return;
  M s = M(0);
  for (int k = 0; k < splits; ++k) s += partial[c * splits + k];
  store(db, c, s);
}

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
bias_act_bwd_db_kernel(const T* dy, const T* __restrict__ y, T* dz, typename OpMath<T>::type* __restrict__ partial,
                       T* __restrict__ db, int* counters, int64_t outer, int64_t rows_per_split, int64_t C,
                       int64_t inner, int64_t step_o, int64_t step_j, typename OpMath<T>::type alpha,
                       typename OpMath<T>::type gain, typename OpMath<T>::type clamp) {
  grid_dependency_sync();  // first, before any global-memory access (PDL: common.cuh)
  using M = typename OpMath<T>::type;
  const int lane = threadIdx.x % 32;
  const int64_t c = (int64_t)blockIdx.x * kWarps + threadIdx.x / 32;
  if (c < C) {  // whole warps: the shuffles below see all 32 lanes
    const int64_t o_begin = rows_per_split * blockIdx.y;
    const int64_t o_end = o_begin + rows_per_split < outer ? o_begin + rows_per_split : outer;
    // The lane's first element: (o_begin, lane) carried into the next runs when inner < 32 (32-bit division).
    int64_t o = o_begin, j = lane;
    if (inner < 32) {
      const int q = lane / (int)inner;
      o += q;
      j = lane - q * (int)inner;
    }
    M acc = M(0);
    while (o < o_end) {
      const int64_t i = (o * C + c) * inner + j;
      const M g = act_backward<A, M>(load(dy, i), load(y, i), alpha, gain, clamp);
      store(dz, i, g);
      acc += g;
      o += step_o;  // advance by 32 elements: step_o = 32 / inner, step_j = 32 % inner (from the host)
      j += step_j;
      if (j >= inner) {
        j -= inner;
        ++o;
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) {
      if (gridDim.y == 1)
        store(db, c, acc);
      else
        partial[c * gridDim.y + blockIdx.y] = acc;
    }
  }
  if (gridDim.y > 1 && last_arrival(counters + blockIdx.x, (int)gridDim.y) && threadIdx.x < kWarps)
    finish_bias_grad<T>(partial, db, (int64_t)blockIdx.x * kWarps + threadIdx.x, C, (int)gridDim.y);
}

// Backward with the bias gradient, inner == 1 (channels fastest: dense layers, channels_last): block (bx, s)
// covers channels [32 bx, 32 bx + 32) (one per lane: a warp reads 128 consecutive bytes of a row) and rows
// [s * chunk, (s + 1) * chunk), warp r of the block taking rows r, r + 8, ...; the 8 per-warp sums are then
// combined in a fixed order through shared memory.
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
bias_act_bwd_db_rows_kernel(const T* dy, const T* __restrict__ y, T* dz,
                            typename OpMath<T>::type* __restrict__ partial, T* __restrict__ db, int* counters,
                            int64_t rows, int64_t chunk, int64_t C, typename OpMath<T>::type alpha,
                            typename OpMath<T>::type gain, typename OpMath<T>::type clamp) {
  grid_dependency_sync();  // first, before any global-memory access (PDL: common.cuh)
  using M = typename OpMath<T>::type;
  __shared__ M red[kWarps][32];
  const int lane = threadIdx.x % 32, rw = threadIdx.x / 32;
  const int64_t c = (int64_t)blockIdx.x * 32 + lane;
  const int64_t begin = chunk * blockIdx.y;
  const int64_t end = begin + chunk < rows ? begin + chunk : rows;
  M acc = M(0);
  if (c < C) {
    for (int64_t o = begin + rw; o < end; o += kWarps) {
      const int64_t i = o * C + c;
      const M g = act_backward<A, M>(load(dy, i), load(y, i), alpha, gain, clamp);
      store(dz, i, g);
      acc += g;
    }
  }
  red[rw][lane] = acc;
  __syncthreads();
  if (rw == 0 && c < C) {
    M s = M(0);
    for (int r = 0; r < kWarps; ++r) s += red[r][lane];
    if (gridDim.y == 1)
      store(db, c, s);
    else
      partial[c * gridDim.y + blockIdx.y] = s;
  }
  if (gridDim.y > 1 && last_arrival(counters + blockIdx.x, (int)gridDim.y) && threadIdx.x < 32)
    finish_bias_grad<T>(partial, db, c, C, (int)gridDim.y);
}

int64_t grid_for(int64_t work) {
  const int64_t blocks = ceil_div(work, kThreads);
  return blocks < 1 ? 1 : (blocks < 65536 ? blocks : 65536);  // grid-stride loops cover the rest
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

void bias_act_fwd(const BiasActParams& p, void* stream) {
  dispatch_dtype(p.dtype, "bias_act", [&](auto tag) {
    using T = decltype(tag);
    using M = typename OpMath<T>::type;
    constexpr int V = 16 / sizeof(T);
    Layout L;
    L.numel = p.numel;
    L.C = p.C < 1 ? 1 : p.C;
    L.inner = p.inner < 1 ? 1 : p.inner;
    L.wide = p.numel >= 2147483647 ? 1 : 0;
    L.dinner = FastDiv(L.inner);
    L.dC = FastDiv(L.C);
    const bool vec = aligned16(p.x) && aligned16(p.y);
    bool ok = dispatch_act(p.act, [&](auto act) {
      using A = decltype(act);
      const T* x = static_cast<const T*>(p.x);
      const T* b = static_cast<const T*>(p.b);
      T* y = static_cast<T*>(p.y);
      if (vec)
        launch("bias_act_fwd", bias_act_fwd_kernel<T, A, V>, dim3((unsigned)grid_for(p.numel / V)), dim3(kThreads),
               0, stream, x, b, y, L, (M)p.alpha, (M)p.gain, (M)p.clamp);
      else
        launch("bias_act_fwd_unaligned", bias_act_fwd_kernel<T, A, 1>, dim3((unsigned)grid_for(p.numel)),
               dim3(kThreads), 0, stream, x, b, y, L, (M)p.alpha, (M)p.gain, (M)p.clamp);
    });
    if (!ok) throw std::invalid_argument("bias_act: unknown activation code " + std::to_string(p.act));
  });
}

void bias_act_bwd(const BiasActBwdParams& p, void* stream) {
  dispatch_dtype(p.dtype, "bias_act_backward", [&](auto tag) {
    using T = decltype(tag);
    using M = typename OpMath<T>::type;
    constexpr int V = 16 / sizeof(T);
    bool ok = dispatch_act(p.act, [&](auto act) {
      using A = decltype(act);
      const T* dy = static_cast<const T*>(p.dy);
      const T* y = static_cast<const T*>(p.y);
      T* dz = static_cast<T*>(p.dz);
      if (p.db == nullptr) {
        if (aligned16(p.dy) && aligned16(p.y) && aligned16(p.dz))
          launch("bias_act_bwd", bias_act_bwd_kernel<T, A, V>, dim3((unsigned)grid_for(p.numel / V)),
                 dim3(kThreads), 0, stream, dy, y, dz, p.numel, (M)p.alpha, (M)p.gain, (M)p.clamp);
        else
          launch("bias_act_bwd_unaligned", bias_act_bwd_kernel<T, A, 1>, dim3((unsigned)grid_for(p.numel)),
                 dim3(kThreads), 0, stream, dy, y, dz, p.numel, (M)p.alpha, (M)p.gain, (M)p.clamp);
        return;
      }
      if (p.C > 2147483647) throw std::invalid_argument("bias_act_backward: more than 2^31-1 channels");
      M* partial = static_cast<M*>(p.workspace);
      T* db = static_cast<T*>(p.db);
      const int64_t per_channel = p.C == 0 ? 0 : p.numel / p.C;
      // Splits of each channel's elements: enough parallelism for big tensors, at most kBiasGradSplits
      // (the workspace), and no more than the work needs (~4096 elements per warp, ~64 rows per block). The last
      // block of each channel group to finish adds the splits' partials (last_arrival: one counter slot per
      // group; with more groups than slots there is parallelism enough without splits).
      // All divisions here, on the host: the kernels keep no 64-bit division (its call frame would spill).
      auto check_counters = [&](int64_t groups, int64_t splits) {
        if (splits > 1 && p.counters == nullptr)
          throw std::invalid_argument("bias_act_backward: split bias gradient without counters (BiasActBwdParams)");
        return splits > 1 && groups > kCounterSlots ? int64_t(1) : splits;
      };
      if (p.inner == 1) {
        const int64_t gx = ceil_div(p.C, 32);
        int64_t splits = std::min<int64_t>(kBiasGradSplits, std::max<int64_t>(1, ceil_div(per_channel, 64)));
        splits = check_counters(gx, splits);
        const int64_t chunk = ceil_div(per_channel, splits);
        launch("bias_act_bwd_db_rows", bias_act_bwd_db_rows_kernel<T, A>, dim3((unsigned)gx, (unsigned)splits),
               dim3(kThreads), 0, stream, dy, y, dz, partial, db, p.counters, per_channel, chunk, p.C, (M)p.alpha,
               (M)p.gain, (M)p.clamp);
      } else {
        const int64_t inner = p.inner, outer = per_channel / inner, gx = ceil_div(p.C, kWarps);
        int64_t splits = std::min<int64_t>(kBiasGradSplits, std::max<int64_t>(1, ceil_div(per_channel, 4096)));
        splits = std::min<int64_t>(splits, std::max<int64_t>(outer, 1));  // whole runs per split
        splits = check_counters(gx, splits);
        const int64_t rows_per_split = std::max<int64_t>(1, ceil_div(outer, splits));
        launch("bias_act_bwd_db", bias_act_bwd_db_kernel<T, A>, dim3((unsigned)gx, (unsigned)splits), dim3(kThreads),
               0, stream, dy, y, dz, partial, db, p.counters, outer, rows_per_split, p.C, inner, 32 / inner,
               32 % inner, (M)p.alpha, (M)p.gain, (M)p.clamp);
      }
    });
    if (!ok) throw std::invalid_argument("bias_act_backward: unknown activation code " + std::to_string(p.act));
  });
}

}  // namespace

void register_bias_act(KernelTable& t) {
  t.bias_act_fwd = bias_act_fwd;
  t.bias_act_bwd = bias_act_bwd;
}

}  // namespace FG_NS
}  // namespace fastgan
