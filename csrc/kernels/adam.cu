// Adam over a list of tensors in one launch (AdamParams, launchers.h): the whole optimiser step of a model, the
// step counters included (torch's fused Adam increments them in a launch of its own), and optionally the update of
// an exponential moving average of the parameters (a GAN's EMA generator) in the same pass. The element formulas:
// adam_math.cuh.
// Blocks are assigned to tensors in order (block_start); a tensor's blocks walk its elements grid-stride. Every
// block reads the tensor's step; the last of them to finish (last_arrival, one counter slot per tensor) writes
// step + 1, so no block reads a counter another has already advanced.
#include "common.cuh"  // first: sets up CUDA or its emulation
#include "adam_math.cuh"

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
  T* ema[kAdamMaxTensors];  // nullptr: no average
  int64_t numel[kAdamMaxTensors];
  int block_start[kAdamMaxTensors + 1];  // tensor i owns blocks [block_start[i], block_start[i + 1])
  double lr, beta1, beta2, eps, weight_decay, ema_beta;
  int* counters;
};

template <typename T>
__global__ void __launch_bounds__(kThreads) adam_kernel(const __grid_constant__ AdamArgs<T> a) {
  grid_dependency_sync();  // first, before any global-memory access (PDL: common.cuh)
  using M = typename OpMath<T>::type;
  int i = 0;
  while (i + 1 < a.n && (int)blockIdx.x >= a.block_start[i + 1]) ++i;
  const int blocks = a.block_start[i + 1] - a.block_start[i];
  const int b = (int)blockIdx.x - a.block_start[i];
  const double t = (double)*a.step[i] + 1.0;
  const AdamConsts<M> c = adam_consts<M>(t, a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.ema_beta);
  T* __restrict__ p = a.param[i];
  const T* __restrict__ g = a.grad[i];
  T* __restrict__ m = a.exp_avg[i];
  T* __restrict__ v = a.exp_avg_sq[i];
  T* __restrict__ ema = a.ema[i];
  const int64_t n = a.numel[i], stride = (int64_t)blocks * kThreads;
  for (int64_t e = (int64_t)b * kThreads + threadIdx.x; e < n; e += stride) {
    M me = load(m, e), ve = load(v, e);
    store(p, e, adam_element(c, load(p, e), load(g, e), me, ve));
    store(m, e, me);
    store(v, e, ve);
    if (ema != nullptr) store(ema, e, ema_lerp(load(ema, e), load(p, e), c.ema_w));  // (p as stored: rounded to T)
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
      a.ema[i] = static_cast<T*>(p.ema[i]);
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
    a.ema_beta = p.ema_beta;
    a.counters = p.counters;
    launch("adam", adam_kernel<T>, dim3((unsigned)blocks), dim3(kThreads), 0, stream, a);
  });
}

}  // namespace

void register_adam(KernelTable& t) { t.adam = adam; }

}  // namespace FG_NS
}  // namespace fastgan
