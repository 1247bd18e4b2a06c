// linear_bce: a one-output dense head (a discriminator's last layer) and its sigmoid-BCE loss in one op: two
// launches per forward + backward instead of five (head GEMV, loss sum, loss gradient, head weight gradient, head
// input gradient). Formulas in launchers.h (LinearBceParams); the element math is bce_math.cuh's.
//   forward:  a warp per row (grid-stride), lanes stride k with four accumulators and a fixed shuffle tree; lane 0
//             writes the logit and adds its weighted loss; per block a fixed-order sum of the 8 warps, and the
//             last block to arrive sums the blocks' partials in block order (bitwise deterministic);
//   backward: block (cx, ry) takes columns [256 cx, 256 cx + 256) (a thread each) and row chunks ry, ry + gy, ...
//             of 32 rows: the chunk's logit gradients dl go to shared memory, then each thread writes dx[m, k] =
//             dl[m] w[k] for its column and accumulates dw[k] += dl[m] x[m, k] (rows in order); with several row
//             blocks their partials are finished by the last of them (rows-block order), db by column block 0.
#include "common.cuh"  // first: sets up CUDA or its emulation
#include "bce_math.cuh"

namespace fastgan {
namespace FG_NS {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct HeadArgs {
  using M = typename OpMath<T>::type;
  const T* x;
  int64_t sx_n, sx_k;
  const T* w;
  int64_t sw;
  const T* b;
  const T* target;
  const T* weight;
  M label;
  T* logits;
  int64_t n, K;
  int reduction;

  // weighted loss and loss derivative of row i, from the logit as stored (rounded to T)
  FG_HD M loss(int64_t i) const {
    const M l = bce_loss<M>(load(logits, i), target ? load(target, i) : label, M(1));
    return weight ? l * load(weight, i) : l;
  }
  FG_HD M dloss(int64_t i) const {
    const M d = bce_dloss<M>(load(logits, i), target ? load(target, i) : label, M(1));
    return weight ? d * load(weight, i) : d;
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
linear_bce_fwd_kernel(HeadArgs<T> a, typename OpMath<T>::type* __restrict__ partial, int* counters,
                      T* __restrict__ loss) {
  grid_dependency_sync();  // first, before any global-memory access (PDL: common.cuh)
  using M = typename OpMath<T>::type;
  __shared__ M warp_sum[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t nw = (int64_t)gridDim.x * (kThreads / 32);
  const M bias = a.b != nullptr ? load(a.b, 0) : M(0);
  M acc = M(0);  // lane 0: this warp's rows' losses, in row order
  for (int64_t m = (int64_t)blockIdx.x * (kThreads / 32) + warp; m < a.n; m += nw) {  // warp-uniform
    const T* xr = a.x + m * a.sx_n;
    M s0 = M(0), s1 = M(0), s2 = M(0), s3 = M(0);
    int64_t k = lane;
    for (; k + 96 < a.K; k += 128) {
      s0 += load(xr, k * a.sx_k) * load(a.w, k * a.sw);
      s1 += load(xr, (k + 32) * a.sx_k) * load(a.w, (k + 32) * a.sw);
      s2 += load(xr, (k + 64) * a.sx_k) * load(a.w, (k + 64) * a.sw);
      s3 += load(xr, (k + 96) * a.sx_k) * load(a.w, (k + 96) * a.sw);
    }
    for (; k < a.K; k += 32) s0 += load(xr, k * a.sx_k) * load(a.w, k * a.sw);
    M s = (s0 + s1) + (s2 + s3);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) {
      store(a.logits, m, s + bias);
      acc += a.loss(m);  // (reads back the stored logit: the loss of the logit the caller gets)
    }
  }
  if (lane == 0) warp_sum[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    M blk = M(0);
    for (int i = 0; i < kThreads / 32; ++i) blk += warp_sum[i];
    partial[blockIdx.x] = blk;
  }
  if (!last_arrival(counters, (int)gridDim.x)) return;
  if (threadIdx.x == 0) {
    M total = M(0);
    for (int i = 0; i < (int)gridDim.x; ++i) total += partial[i];
    store(loss, 0, a.reduction == 1 ? total / M(a.n) : total);  // mean of no rows: 0 / 0 = NaN, as torch
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
linear_bce_bwd_kernel(HeadArgs<T> a, const T* __restrict__ g_loss, const T* __restrict__ g_logits, T* __restrict__ dx,
                      T* __restrict__ dw, T* __restrict__ db, typename OpMath<T>::type* __restrict__ partial,
                      int* counters) {
  grid_dependency_sync();  // first, before any global-memory access (PDL: common.cuh)
  using M = typename OpMath<T>::type;
  __shared__ M dl[kHeadRows];
  const M scale = load(g_loss, 0) / (a.reduction == 1 ? M(a.n) : M(1));
  const int64_t k = (int64_t)blockIdx.x * kHeadCols + threadIdx.x;
  const bool kok = k < a.K;
  const bool bias_here = db != nullptr && blockIdx.x == 0 && threadIdx.x == 0;
  const M wk = kok ? load(a.w, k * a.sw) : M(0);
  M accw = M(0), accb = M(0);
  for (int64_t r0 = (int64_t)blockIdx.y * kHeadRows; r0 < a.n; r0 += (int64_t)gridDim.y * kHeadRows) {
    const int rows = a.n - r0 < kHeadRows ? (int)(a.n - r0) : kHeadRows;
    if ((int)threadIdx.x < rows) {
      const int64_t m = r0 + threadIdx.x;
      dl[threadIdx.x] = scale * a.dloss(m) + (g_logits != nullptr ? load(g_logits, m) : M(0));
    }
    __syncthreads();
    for (int r = 0; r < rows; ++r) {
      const int64_t m = r0 + r;
      const M d = dl[r];
      if (dx != nullptr && kok) store(dx, m * a.K + k, d * wk);
      if (dw != nullptr && kok) accw += d * load(a.x, m * a.sx_n + k * a.sx_k);
    }
    if (bias_here)
      for (int r = 0; r < rows; ++r) accb += dl[r];
    __syncthreads();  // dl is rewritten by the next chunk
  }
  if (dw == nullptr && db == nullptr) return;
  if (gridDim.y == 1) {
    if (dw != nullptr && kok) store(dw, k, accw);
    if (bias_here) store(db, 0, accb);
    return;
  }
  M* mine = partial + (int64_t)blockIdx.y * (a.K + 1);
  if (kok) mine[k] = accw;
  if (bias_here) mine[a.K] = accb;
  if (!last_arrival(counters + blockIdx.x, (int)gridDim.y)) return;
  if (dw != nullptr && kok) {
    M s = M(0);
    for (int i = 0; i < (int)gridDim.y; ++i) s += partial[(int64_t)i * (a.K + 1) + k];
    store(dw, k, s);
  }
  if (bias_here) {
    M s = M(0);
    for (int i = 0; i < (int)gridDim.y; ++i) s += partial[(int64_t)i * (a.K + 1) + a.K];
    store(db, 0, s);
  }
}

template <typename T>
HeadArgs<T> head_args(const LinearBceParams& p) {
  HeadArgs<T> a;
  a.x = static_cast<const T*>(p.x);
  a.sx_n = p.sx_n;
  a.sx_k = p.sx_k;
  a.w = static_cast<const T*>(p.w);
  a.sw = p.sw;
  a.b = static_cast<const T*>(p.b);
  a.target = static_cast<const T*>(p.target);
  a.weight = static_cast<const T*>(p.weight);
  a.label = static_cast<typename OpMath<T>::type>(p.label);
  a.logits = static_cast<T*>(p.logits);
  a.n = p.n;
  a.K = p.K;
  a.reduction = p.reduction;
  return a;
}

void check(const LinearBceParams& p, const char* what) {
  if (p.reduction != 1 && p.reduction != 2) throw std::invalid_argument(std::string(what) + ": reduction must be 1 or 2");
  if (p.n < 0 || p.K < 0) throw std::invalid_argument(std::string(what) + ": negative size");
  if (p.workspace == nullptr || p.counters == nullptr)
    throw std::invalid_argument(std::string(what) + ": needs a workspace and counters (linear_bce_workspace)");
}

void linear_bce_fwd(const LinearBceParams& p, void* stream) {
  check(p, "linear_bce");
  dispatch_dtype(p.dtype, "linear_bce", [&](auto tag) {
    using T = decltype(tag);
    using M = typename OpMath<T>::type;
    launch("linear_bce", linear_bce_fwd_kernel<T>, dim3((unsigned)linear_bce_fwd_blocks(p.n)), dim3(kThreads), 0,
           stream, head_args<T>(p), static_cast<M*>(p.workspace), p.counters, static_cast<T*>(p.loss));
  });
}

void linear_bce_bwd(const LinearBceParams& p, void* stream) {
  const bool reduce = p.dw != nullptr || p.db != nullptr;
  if (reduce) check(p, "linear_bce_backward");
  const int64_t gx = ceil_div(p.K > 0 ? p.K : 1, kHeadCols), gy = linear_bce_bwd_row_blocks(p.n, p.K);
  if (!linear_bce_bwd_fits(p))
    throw std::invalid_argument("linear_bce_backward: more column blocks than counter slots (linear_bce_bwd_fits)");
  dispatch_dtype(p.dtype, "linear_bce_backward", [&](auto tag) {
    using T = decltype(tag);
    using M = typename OpMath<T>::type;
    launch("linear_bce_bwd", linear_bce_bwd_kernel<T>, dim3((unsigned)gx, (unsigned)gy), dim3(kThreads), 0, stream,
           head_args<T>(p), static_cast<const T*>(p.g_loss), static_cast<const T*>(p.g_logits),
           static_cast<T*>(p.dx), static_cast<T*>(p.dw), static_cast<T*>(p.db), static_cast<M*>(p.workspace),
           p.counters);
  });
}

}  // namespace

void register_linear_bce(KernelTable& t) {
  t.linear_bce_fwd = linear_bce_fwd;
  t.linear_bce_bwd = linear_bce_bwd;
}

}  // namespace FG_NS
}  // namespace fastgan
