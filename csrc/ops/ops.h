// The op entry points registered with the dispatcher (csrc/registration.cpp). The tensors' device decides where
// an op runs; on CPU tensors the process-wide backend override (set_cpu_backend, glue.h) can send it to the
// emulated CUDA kernels instead of the C++ CPU kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

namespace fastgan {

at::Tensor bias_act(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim,
                    c10::string_view act, double alpha, double gain, double clamp);
std::tuple<at::Tensor, at::Tensor> bias_act_backward(const at::Tensor& dy, const at::Tensor& y,
                                                     bool bias_grad, int64_t dim, c10::string_view act, double alpha,
                                                     double gain, double clamp);
// dact_y (dense, conv2d): the output is act_backward(product, dact_y) instead of act(product + b) -- the double
// backward's product and dz's adjoint in one pass (b must be None).
at::Tensor dense(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                 c10::string_view act, double alpha, double gain, double clamp,
                 const c10::optional<at::Tensor>& dact_y);
// The backward ops take dy = dL/dy of the layer and its saved output y (dL/dz = act_backward(dy, y)); y may be
// None for a linear layer (gain 1, no clamp). mask: (dx, dw, db).
std::tuple<at::Tensor, at::Tensor, at::Tensor> dense_backward(const at::Tensor& dy, const at::Tensor& x,
                                                              const at::Tensor& w, std::array<bool, 3> mask,
                                                              const c10::optional<at::Tensor>& y, c10::string_view act,
                                                              double alpha, double gain, double clamp);
at::Tensor conv2d(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                  c10::string_view act, double alpha, double gain, double clamp,
                  const c10::optional<at::Tensor>& dact_y);
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> mask, const c10::optional<at::Tensor>& y,
    c10::string_view act, double alpha, double gain, double clamp);
at::Tensor sigmoid_bce(const at::Tensor& logits, const c10::optional<at::Tensor>& target, double label,
                       const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& pos_weight,
                       int64_t reduction);
at::Tensor sigmoid_bce_backward(const at::Tensor& grad, const at::Tensor& logits,
                                const c10::optional<at::Tensor>& target, double label,
                                const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& pos_weight,
                                int64_t reduction);

// A one-output dense head + sigmoid-BCE (launchers.h, LinearBceParams): (loss, logits); reduction 1 mean, 2 sum.
std::tuple<at::Tensor, at::Tensor> linear_bce(const at::Tensor& x, const at::Tensor& w,
                                              const c10::optional<at::Tensor>& b,
                                              const c10::optional<at::Tensor>& target, double label,
                                              const c10::optional<at::Tensor>& weight, int64_t reduction);
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_bce_backward(
    const at::Tensor& g_loss, const c10::optional<at::Tensor>& g_logits, const at::Tensor& x, const at::Tensor& w,
    const at::Tensor& logits, const c10::optional<at::Tensor>& target, double label,
    const c10::optional<at::Tensor>& weight, int64_t reduction, std::array<bool, 3> mask);

// scale * sum of x^2 (one element; a gradient penalty's squared norm) and its gradient 2 * scale * g * x.
at::Tensor sum_squares(const at::Tensor& x, double scale);
at::Tensor sum_squares_backward(const at::Tensor& g, const at::Tensor& x, double scale);

// Adam over lists of tensors, in place (params, exp_avgs, exp_avg_sqs, steps; ema, when given, one per parameter:
// its moving average): launchers.h, AdamParams.
void adam_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
           at::TensorList steps, double lr, double beta1, double beta2, double eps, double weight_decay,
           std::optional<at::TensorList> ema, double ema_beta);

}  // namespace fastgan
