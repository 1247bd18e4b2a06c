// Adam over a list of tensors in one launch (AdamParams, launchers.h): the whole optimiser step of a model, the
// step counters included (torch's fused Adam increments them in a launch of its own).
//   g = grad + weight_decay * param;  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps),   t = step + 1
// Blocks are assigned to tensors in order (block_start); a tensor's blocks walk its elements grid-stride. Every
// block reads the tensor's step; the last of them to finish (last_arrival, one counter slot per tensor) writes
// step + 1, so no block reads a counter another has already advanced.
#include "common.cuh"  // first: sets up CUDA or its emulation

#include <algorithm>

namespace fastgan {
namespace FG_NS {
namespace {

constexpr int kThreads = 256;
constexpr int kElemsPerBlock = kThreads * 4;  // elements a block covers before it strides
constexpr int kMaxBlocksPerTensor = 1024;

template <typename T>
struct AdamArgs {
  int n;
  T* param[kAdamMaxTensors];
  const T* grad[kAdamMaxTensors];
  T* exp_avg[kAdamMaxTensors];
  T* exp_avg_sq[kAdamMaxTensors];
  float* step[kAdamMaxTensors];
  int64_t numel[kAdamMaxTensors];
  int block_start[kAdamMaxTensors + 1];  // tensor i owns blocks [block_start[i], block_start[i + 1])
  double lr, beta1, beta2, eps, weight_decay;
  int* counters;
};

template <typename T>
__global__ void __launch_bounds__(kThreads) adam_kernel(const __grid_constant__ AdamArgs<T> a) {
  using M = typename OpMath<T>::type;
  int i = 0;
  while (i + 1 < a.n && (int)blockIdx.x >= a.block_start[i + 1]) ++i;
  const int blocks = a.block_start[i + 1] - a.block_start[i];
  const int b = (int)blockIdx.x - a.block_start[i];
  const double t = (double)*a.step[i] + 1.0;
  const double bc1 = 1.0 - pow(a.beta1, t), bc2 = 1.0 - pow(a.beta2, t);
  const M step_size = (M)(a.lr / bc1), bc2_sqrt = (M)fg_sqrt(bc2), eps = (M)a.eps, wd = (M)a.weight_decay;
  const M beta1 = (M)a.beta1, beta2 = (M)a.beta2, one_m_beta1 = (M)(1.0 - a.beta1), one_m_beta2 = (M)(1.0 - a.beta2);
  T* __restrict__ p = a.param[i];
  const T* __restrict__ g = a.grad[i];
  T* __restrict__ m = a.exp_avg[i];
  T* __restrict__ v = a.exp_avg_sq[i];
  const int64_t n = a.numel[i], stride = (int64_t)blocks * kThreads;
  for (int64_t e = (int64_t)b * kThreads + threadIdx.x; e < n; e += stride) {
    const M pe = load(p, e);
    const M ge = a.weight_decay != 0 ? load(g, e) + wd * pe : load(g, e);  // (no 0 x inf: as torch, skipped)
    const M me = beta1 * load(m, e) + one_m_beta1 * ge;
    const M ve = beta2 * load(v, e) + one_m_beta2 * ge * ge;
    store(m, e, me);
    store(v, e, ve);
    store(p, e, pe - step_size * me / (fg_sqrt(ve) / bc2_sqrt + eps));
  }
  if (last_arrival(a.counters + i, blocks) && threadIdx.x == 0) *a.step[i] = (float)t;
}

void adam(const AdamParams& p, void* stream) {
  if (p.n < 1 || p.n > kAdamMaxTensors) throw std::invalid_argument("adam: expected 1 to 32 tensors per launch");
  if (p.counters == nullptr) throw std::invalid_argument("adam: no counter slots (AdamParams::counters)");
  dispatch_dtype(p.dtype, "adam", [&](auto tag) {
    using T = decltype(tag);
    AdamArgs<T> a{};
    a.n = p.n;
    int64_t blocks = 0;
    for (int i = 0; i < p.n; ++i) {
      if (p.numel[i] < 0 || p.step[i] == nullptr) throw std::invalid_argument("adam: bad tensor " + std::to_string(i));
      a.param[i] = static_cast<T*>(p.param[i]);
      a.grad[i] = static_cast<const T*>(p.grad[i]);
      a.exp_avg[i] = static_cast<T*>(p.exp_avg[i]);
      a.exp_avg_sq[i] = static_cast<T*>(p.exp_avg_sq[i]);
      a.step[i] = p.step[i];
      a.numel[i] = p.numel[i];
      a.block_start[i] = (int)blocks;
      // at least one block per tensor, even an empty one: it advances the step
      blocks += std::max<int64_t>(1, std::min<int64_t>(kMaxBlocksPerTensor, ceil_div(p.numel[i], kElemsPerBlock)));
    }
    a.block_start[p.n] = (int)blocks;
    a.lr = p.lr;
    a.beta1 = p.beta1;
    a.beta2 = p.beta2;
    a.eps = p.eps;
    a.weight_decay = p.weight_decay;
    a.counters = p.counters;
    launch("adam", adam_kernel<T>, dim3((unsigned)blocks), dim3(kThreads), 0, stream, a);
  });
}

}  // namespace

void register_adam(KernelTable& t) { t.adam = adam; }

}  // namespace FG_NS
}  // namespace fastgan
