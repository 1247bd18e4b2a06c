// bias + activation: forward, and backward with the bias gradient fused into the same launch.
#include "common.cuh"

namespace fastgan {
namespace FG_NS {
namespace {

constexpr int kThreads = 256;

// y[i] = act(x[i] + b[(i / inner) % C]) * gain, clamped. x and y may alias (in-place epilogue after a GEMM).
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
bias_act_fwd_kernel(const T* x, const T* __restrict__ b, T* y, int64_t numel, int64_t C, int64_t inner,
                    typename OpMath<T>::type alpha, typename OpMath<T>::type gain, typename OpMath<T>::type clamp) {
  using M = typename OpMath<T>::type;
  const int64_t stride = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += stride) {
    M z = load(x, i);
    if (b != nullptr) z += load(b, (i / inner) % C);
    store(y, i, act_forward<A, M>(z, alpha, gain, clamp));
  }
}

// Backward without a bias gradient: purely elementwise.
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
bias_act_bwd_kernel(const T* dy, const T* __restrict__ y, T* dz, int64_t numel, typename OpMath<T>::type alpha,
                    typename OpMath<T>::type gain, typename OpMath<T>::type clamp) {
  using M = typename OpMath<T>::type;
  const int64_t stride = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += stride)
    store(dz, i, act_backward<A, M>(load(dy, i), load(y, i), alpha, gain, clamp));
}

// Backward with the bias gradient: block (c, s) walks split s of channel c's elements, writes dz and one
// partial sum; partials are combined in a fixed order by bias_grad_finalize, so results are bitwise
// reproducible (no float atomics).
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
bias_act_bwd_db_kernel(const T* dy, const T* __restrict__ y, T* dz, typename OpMath<T>::type* __restrict__ partial,
                       int64_t per_channel, int64_t C, int64_t inner, typename OpMath<T>::type alpha,
                       typename OpMath<T>::type gain, typename OpMath<T>::type clamp) {
  using M = typename OpMath<T>::type;
  __shared__ M red[kThreads];
  const int64_t c = blockIdx.x;
  const int64_t chunk = (per_channel + gridDim.y - 1) / gridDim.y;
  const int64_t begin = chunk * blockIdx.y;
  const int64_t end = begin + chunk < per_channel ? begin + chunk : per_channel;
  M acc = M(0);
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const int64_t o = j / inner;
    const int64_t i = (o * C + c) * inner + (j - o * inner);
    const M g = act_backward<A, M>(load(dy, i), load(y, i), alpha, gain, clamp);
    store(dz, i, g);
    acc += g;
  }
  red[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[c * gridDim.y + blockIdx.y] = red[0];
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
bias_grad_finalize(const typename OpMath<T>::type* __restrict__ partial, T* __restrict__ db, int64_t C, int splits) {
  using M = typename OpMath<T>::type;
  const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  M s = M(0);
  for (int k = 0; k < splits; ++k) s += partial[c * splits + k];
  store(db, c, s);
}

int64_t grid_for(int64_t numel) {
  const int64_t blocks = ceil_div(numel, kThreads);
  return blocks < 65536 ? blocks : 65536;  // grid-stride loops cover the rest
}

void bias_act_fwd(const BiasActParams& p, void* stream) {
  dispatch_dtype(p.dtype, "bias_act", [&](auto tag) {
    using T = decltype(tag);
    using M = typename OpMath<T>::type;
    bool ok = dispatch_act(p.act, [&](auto act) {
      using A = decltype(act);
      launch("bias_act_fwd", bias_act_fwd_kernel<T, A>, dim3((unsigned)grid_for(p.numel)), dim3(kThreads), 0,
             stream, static_cast<const T*>(p.x), static_cast<const T*>(p.b), static_cast<T*>(p.y), p.numel, p.C,
             p.inner, (M)p.alpha, (M)p.gain, (M)p.clamp);
    });
    if (!ok) throw std::invalid_argument("bias_act: unknown activation code " + std::to_string(p.act));
  });
}

void bias_act_bwd(const BiasActBwdParams& p, void* stream) {
  dispatch_dtype(p.dtype, "bias_act_backward", [&](auto tag) {
    using T = decltype(tag);
    using M = typename OpMath<T>::type;
    bool ok = dispatch_act(p.act, [&](auto act) {
      using A = decltype(act);
      if (p.db == nullptr) {
        launch("bias_act_bwd", bias_act_bwd_kernel<T, A>, dim3((unsigned)grid_for(p.numel)), dim3(kThreads), 0,
               stream, static_cast<const T*>(p.dy), static_cast<const T*>(p.y), static_cast<T*>(p.dz), p.numel,
               (M)p.alpha, (M)p.gain, (M)p.clamp);
        return;
      }
      if (p.C > 2147483647) throw std::invalid_argument("bias_act_backward: more than 2^31-1 channels");
      launch("bias_act_bwd_db", bias_act_bwd_db_kernel<T, A>, dim3((unsigned)p.C, kBiasGradSplits), dim3(kThreads),
             0, stream, static_cast<const T*>(p.dy), static_cast<const T*>(p.y), static_cast<T*>(p.dz),
             static_cast<M*>(p.workspace), p.C == 0 ? 0 : p.numel / p.C, p.C, p.inner, (M)p.alpha, (M)p.gain,
             (M)p.clamp);
      launch("bias_grad_finalize", bias_grad_finalize<T>, dim3((unsigned)ceil_div(p.C, kThreads)), dim3(kThreads),
             0, stream, static_cast<const M*>(p.workspace), static_cast<T*>(p.db), p.C, kBiasGradSplits);
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
