// Sum of squares, scaled -- a gradient penalty's squared norm (R1: scale * ||grad_x D(x)||^2) -- in one launch, and
// its gradient in one pass:
//   out = scale * sum_i x_i^2,   dx_i = 2 * scale * g * x_i   (g = dL/dout, one element read on the device).
// The forward is one fixed-order reduction launch (common.cuh's fixed_order_sum_kernel, as bce.cu's loss): the
// same bits on every run. Half types accumulate in float.
#include "common.cuh"  // first: sets up CUDA or its emulation

namespace fastgan {
namespace FG_NS {
namespace {

constexpr int kThreads = 256;
constexpr int kItemsPerThread = 4;

// The forward's terms for common.cuh's fixed_order_sum_kernel.
template <typename T>
struct Squares {
  using M = typename OpMath<T>::type;
  const T* x;
  M scale;
  FG_HD M term(int64_t i) const {
    const M v = load(x, i);
    return v * v;
  }
  FG_HD M finish(M total) const { return scale * total; }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
sum_squares_bwd_kernel(const T* __restrict__ g, const T* __restrict__ x, T* __restrict__ dx, int64_t numel,
                       typename OpMath<T>::type scale) {
  grid_dependency_sync();  // first, before any global-memory access (PDL: common.cuh)
  using M = typename OpMath<T>::type;
  const M s = M(2) * scale * load(g, 0);
  const int64_t stride = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += stride) store(dx, i, s * load(x, i));
}

void sum_squares_fwd(const SumSquaresParams& p, void* stream) {
  dispatch_dtype(p.dtype, "sum_squares", [&](auto tag) {
    using T = decltype(tag);
    using M = typename OpMath<T>::type;
    launch_fixed_order_sum<T>("sum_squares", Squares<T>{static_cast<const T*>(p.x), static_cast<M>(p.scale)},
                              p.workspace, p.counters, p.out, p.numel, stream);
  });
}

void sum_squares_bwd(const SumSquaresParams& p, void* stream) {
  if (p.numel == 0) return;
  dispatch_dtype(p.dtype, "sum_squares_backward", [&](auto tag) {
    using T = decltype(tag);
    using M = typename OpMath<T>::type;
    int64_t blocks = ceil_div(p.numel, (int64_t)kThreads * kItemsPerThread);
    blocks = blocks > 65536 ? 65536 : blocks;
    launch("sum_squares_bwd", sum_squares_bwd_kernel<T>, dim3((unsigned)blocks), dim3(kThreads), 0, stream,
           static_cast<const T*>(p.g), static_cast<const T*>(p.x), static_cast<T*>(p.out), p.numel,
           static_cast<M>(p.scale));
  });
}

}  // namespace

void register_sum_squares(KernelTable& t) {
  t.sum_squares_fwd = sum_squares_fwd;
  t.sum_squares_bwd = sum_squares_bwd;
}

}  // namespace FG_NS
}  // namespace fastgan
