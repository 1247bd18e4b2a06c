// Element formulas of sigmoid + binary cross-entropy from logits, shared by the CPU loops (csrc/ops/bce.cpp),
// the CUDA kernels (bce.cu) and their emulation. With target t, positive-class weight p and logit x:
//   loss  = p t softplus(-x) + (1 - t) softplus(x)
//   dloss = (1 - t) sigmoid(x) - p t sigmoid(-x)
// Both are sums of non-negative terms for t in [0, 1], p >= 0: nothing cancels, so a confident logit keeps full
// relative precision. (The textbook forms (1 - t) x + softplus(-x) and sigmoid(x) - t, used by torch, cancel:
// for t = 1, x = 20 the latter gives 0 in float32 instead of -2.1e-9; for t = 0, x = -20 the former gives
// rounding noise instead of 2.1e-9.) softplus and sigmoid share one exp(-|x|): finite for every finite x.
#pragma once

#include "activation.cuh"

namespace fastgan {

template <typename M>
FG_HD M bce_loss(M x, M t, M p) {
  const M l = fg_log1p(fg_exp(x < M(0) ? x : -x));  // log1p(exp(-|x|))
  const M sp_neg = (x < M(0) ? -x : M(0)) + l;      // softplus(-x)
  const M sp_pos = (x > M(0) ? x : M(0)) + l;       // softplus(x)
  return p * t * sp_neg + (M(1) - t) * sp_pos;
}

template <typename M>
FG_HD M bce_dloss(M x, M t, M p) {
  const M e = fg_exp(x < M(0) ? x : -x);  // exp(-|x|) in (0, 1]
  const M r = M(1) / (M(1) + e);
  const M s_hi = r, s_lo = e * r;  // sigmoid(|x|), sigmoid(-|x|)
  const M s_pos = x < M(0) ? s_lo : s_hi, s_neg = x < M(0) ? s_hi : s_lo;  // sigmoid(x), sigmoid(-x)
  return (M(1) - t) * s_pos - p * t * s_neg;
}

}  // namespace fastgan
