// Element formulas of the Adam op, shared by the CPU loop (csrc/cpu/adam.cpp), the CUDA kernel (adam.cu) and its
// emulation. With t the step count after this update (1, 2, ...):
//   g = grad + weight_decay * param;  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)               (torch.optim.Adam's)
// and, with an exponential moving average of the parameters (ema given; ema_beta 0 makes it a copy), afterwards
//   ema = lerp(ema, param, 1 - beta_t),  beta_t = min(ema_beta, (1 + t) / (10 + t))
// (the ramp of TensorFlow's ExponentialMovingAverage with num_updates: short averages while the weights move fast;
// lerp in torch's two-sided form, exact at both ends).
#pragma once

#include "activation.cuh"

namespace fastgan {

template <typename M>
struct AdamConsts {
  M step_size, bc2_sqrt, eps, wd, beta1, beta2, one_m_beta1, one_m_beta2;
  M ema_w;  // 1 - beta_t
  bool decay;
};

template <typename M>
FG_HD AdamConsts<M> adam_consts(double t, double lr, double beta1, double beta2, double eps, double weight_decay,
                                double ema_beta) {
  const double bc1 = 1.0 - pow(beta1, t), bc2 = 1.0 - pow(beta2, t);
  const double ramp = (1.0 + t) / (10.0 + t);
  AdamConsts<M> c;
  c.step_size = M(lr / bc1);
  c.bc2_sqrt = M(fg_sqrt(bc2));
  c.eps = M(eps);
  c.wd = M(weight_decay);
  c.beta1 = M(beta1);
  c.beta2 = M(beta2);
  c.one_m_beta1 = M(1.0 - beta1);
  c.one_m_beta2 = M(1.0 - beta2);
  c.ema_w = M(1.0 - (ema_beta < ramp ? ema_beta : ramp));
  c.decay = weight_decay != 0;
  return c;
}

// One element: updates m and v, returns the new parameter (p, g, m, v already in M).
template <typename M>
FG_HD M adam_element(const AdamConsts<M>& c, M p, M g, M& m, M& v) {
  const M ge = c.decay ? g + c.wd * p : g;  // (no 0 x inf: as torch, skipped)
  m = c.beta1 * m + c.one_m_beta1 * ge;
  v = c.beta2 * v + c.one_m_beta2 * ge * ge;
  return p - c.step_size * m / (fg_sqrt(v) / c.bc2_sqrt + c.eps);
}

// torch's lerp(e, p, w): exact at both ends.
template <typename M>
FG_HD M ema_lerp(M e, M p, M w) {
  return (w < M(0) ? -w : w) < M(0.5) ? e + w * (p - e) : p - (p - e) * (M(1) - w);
}

}  // namespace fastgan
