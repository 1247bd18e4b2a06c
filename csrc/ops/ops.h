// The op entry points registered with the dispatcher (csrc/registration.cpp). `emu` selects the emulated CUDA
// kernels on CPU tensors (library fastgan_emu); otherwise the tensors' device decides.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

namespace fastgan {

at::Tensor bias_act(bool emu, const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim,
                    c10::string_view act, double alpha, double gain, double clamp);
std::tuple<at::Tensor, at::Tensor> bias_act_backward(bool emu, const at::Tensor& dy, const at::Tensor& y,
                                                     bool bias_grad, int64_t dim, c10::string_view act, double alpha,
                                                     double gain, double clamp);
at::Tensor dense(bool emu, const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                 c10::string_view act, double alpha, double gain, double clamp);
std::tuple<at::Tensor, at::Tensor> dense_backward(bool emu, const at::Tensor& dz, const at::Tensor& x,
                                                  const at::Tensor& w, std::array<bool, 2> mask);
at::Tensor conv2d(bool emu, const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                  c10::string_view act, double alpha, double gain, double clamp);
std::tuple<at::Tensor, at::Tensor> conv2d_backward(bool emu, const at::Tensor& dz, const at::Tensor& x,
                                                   const at::Tensor& w, at::IntArrayRef stride,
                                                   at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                                   std::array<bool, 2> mask);
at::Tensor sigmoid_bce(bool emu, const at::Tensor& logits, const c10::optional<at::Tensor>& target, double label,
                       const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& pos_weight,
                       int64_t reduction);
at::Tensor sigmoid_bce_backward(bool emu, const at::Tensor& grad, const at::Tensor& logits,
                                const c10::optional<at::Tensor>& target, double label,
                                const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& pos_weight,
                                int64_t reduction);

}  // namespace fastgan
