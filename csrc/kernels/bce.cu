// Sigmoid + binary cross-entropy from logits: forward with its reduction, backward in one kernel.
//   loss_i = w_i * [ p_i t_i softplus(-x_i) + (1 - t_i) softplus(x_i) ]
//   dloss_i/dx_i = w_i * [ (1 - t_i) sigmoid(x_i) - p_i t_i sigmoid(-x_i) ]
// (bce_math.cuh: no cancellation for confident logits; finite for every finite x, |x| = 1e4 included.)
// The reduced loss sums in one launch with a fixed block count and order (common.cuh): the same bits on every run.
#include "common.cuh"  // first: sets up CUDA or its emulation
#include "bce_math.cuh"

namespace fastgan {
namespace FG_NS {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct BceElem {
  using M = typename OpMath<T>::type;
  const T* logits;
  const T* target;
  const T* weight;
  const T* pos_weight;
  M label;

  FG_HD M t(int64_t i) const { return target ? load(target, i) : label; }
  FG_HD M loss(int64_t i) const {
    const M p = pos_weight ? load(pos_weight, i) : M(1);
    const M l = bce_loss<M>(load(logits, i), t(i), p);
    return weight ? l * load(weight, i) : l;
  }
  FG_HD M dloss(int64_t i) const {
    const M p = pos_weight ? load(pos_weight, i) : M(1);
    const M d = bce_dloss<M>(load(logits, i), t(i), p);
    return weight ? d * load(weight, i) : d;
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) bce_none_kernel(BceElem<T> e, T* __restrict__ out, int64_t numel) {
  grid_dependency_sync();  // first, before any global-memory access (PDL: common.cuh)
  const int64_t stride = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += stride) store(out, i, e.loss(i));
}

// The reduced loss (common.cuh's fixed_order_sum_kernel): mean divides by numel (0/0 = NaN as in torch).
template <typename T>
struct BceSum {
  using M = typename OpMath<T>::type;
  BceElem<T> e;
  int64_t numel;
  int mean;
  FG_HD M term(int64_t i) const { return e.loss(i); }
  FG_HD M finish(M total) const { return mean ? total / M(numel) : total; }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
bce_bwd_kernel(BceElem<T> e, const T* __restrict__ grad, T* __restrict__ dlogits, int64_t numel, int reduction) {
  grid_dependency_sync();  // first, before any global-memory access (PDL: common.cuh)
  using M = typename OpMath<T>::type;
  const int64_t stride = (int64_t)blockDim.x * gridDim.x;
  M scale = M(1);
  if (reduction != 0) scale = load(grad, 0) / (reduction == 1 ? M(numel) : M(1));
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += stride) {
    const M g = reduction == 0 ? load(grad, i) : scale;
    store(dlogits, i, g * e.dloss(i));
  }
}

int64_t elementwise_grid(int64_t numel) {
  const int64_t blocks = ceil_div(numel, kThreads);
  return blocks < 65536 ? blocks : 65536;
}

template <typename T, typename P>
BceElem<T> elem(const P& p) {
  return BceElem<T>{static_cast<const T*>(p.logits), static_cast<const T*>(p.target),
                    static_cast<const T*>(p.weight), static_cast<const T*>(p.pos_weight),
                    static_cast<typename OpMath<T>::type>(p.label)};
}

void bce_fwd(const BceParams& p, void* stream) {
  dispatch_dtype(p.dtype, "sigmoid_bce", [&](auto tag) {
    using T = decltype(tag);
    if (p.reduction == 0) {
      launch("bce_none", bce_none_kernel<T>, dim3((unsigned)elementwise_grid(p.numel)), dim3(kThreads), 0, stream,
             elem<T>(p), static_cast<T*>(p.out), p.numel);
      return;
    }
    launch_fixed_order_sum<T>("bce_sum", BceSum<T>{elem<T>(p), p.numel, p.reduction == 1 ? 1 : 0}, p.workspace,
                              p.counters, p.out, p.numel, stream);
  });
}

void bce_bwd(const BceBwdParams& p, void* stream) {
  dispatch_dtype(p.dtype, "sigmoid_bce_backward", [&](auto tag) {
    using T = decltype(tag);
    launch("bce_bwd", bce_bwd_kernel<T>, dim3((unsigned)elementwise_grid(p.numel)), dim3(kThreads), 0, stream,
           elem<T>(p), static_cast<const T*>(p.grad), static_cast<T*>(p.dlogits), p.numel, p.reduction);
  });
}

}  // namespace

void register_bce(KernelTable& t) {
  t.bce_fwd = bce_fwd;
  t.bce_bwd = bce_bwd;
}

}  // namespace FG_NS
}  // namespace fastgan
