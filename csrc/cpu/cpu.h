// The C++ CPU kernels, one file per op (csrc/cpu/<op>.cpp), called by the glue (csrc/ops/) for CPU tensors.
// They take ATen tensors the glue has checked and allocated (dense, in the layout the comments name) and do the
// arithmetic; products and convolutions other than those below are ATen's (MKL / oneDNN).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fastgan {

// bias_act (cpu/bias_act.cpp). x, y (y may be x) and dy, y, dz dense with identical strides, viewed as
// [outer][C][inner] in memory order (channel_layout, ops/glue.h); b / db: C elements, or undefined.
void cpu_bias_act(const at::Tensor& x, const at::Tensor& b, const at::Tensor& y, int64_t C, int64_t inner, int act,
                  double alpha, double gain, double clamp);
void cpu_bias_act_backward(const at::Tensor& dy, const at::Tensor& y, const at::Tensor& dz, const at::Tensor& db,
                           int64_t C, int64_t inner, int act, double alpha, double gain, double clamp);

// sigmoid_bce (cpu/bce.cpp). Every tensor contiguous with the logits' shape; target / weight / pos_weight may be
// undefined (then: the constant label, 1, 1). reduction: 0 none, 1 mean, 2 sum.
struct BceCpuArgs {
  at::Tensor logits, target, weight, pos_weight;
  double label;
  int64_t reduction;
};
void cpu_sigmoid_bce(const BceCpuArgs& a, const at::Tensor& out);
// g: the upstream gradient (contiguous; one element for a reduced loss); dl: the logits' gradient.
void cpu_sigmoid_bce_backward(const BceCpuArgs& a, const at::Tensor& g, const at::Tensor& dl);

// sum_squares (cpu/sum_squares.cpp): out (one element) = scale * sum of x^2, summed in a fixed order; dx = 2 * scale
// * g * x (g one element). x and dx contiguous.
void cpu_sum_squares(const at::Tensor& x, double scale, const at::Tensor& out);
void cpu_sum_squares_backward(const at::Tensor& g, const at::Tensor& x, double scale, const at::Tensor& dx);

// adam_ (cpu/adam.cpp): one tensor's update (AdamParams' algorithm, launchers.h); p, g, m, v (and ema, when
// defined) dense with identical strides (walked in memory order), step one float32 element, advanced by one.
void cpu_adam(const at::Tensor& p, const at::Tensor& g, const at::Tensor& m, const at::Tensor& v,
              const at::Tensor& step, double lr, double beta1, double beta2, double eps, double weight_decay,
              const at::Tensor& ema, double ema_beta);

}  // namespace fastgan
