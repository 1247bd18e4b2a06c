// Dispatcher registration. Library `fastgan`: C++ kernels for CPU tensors, CUDA kernels for CUDA tensors.
// Library `fastgan_emu`: the same schemas, whose CPU kernels run the CUDA kernel sources under emulation.
// Fake (meta) kernels and autograd formulas are registered from Python (fastgan/_ops.py).
#include <torch/library.h>

#include "ops/ops.h"

namespace fastgan {
namespace {

// The schemas, shared by both libraries.
constexpr const char* kSchemas[] = {
    "bias_act(Tensor x, Tensor? b, int dim, str act, float alpha, float gain, float clamp) -> Tensor",
    "bias_act_backward(Tensor dy, Tensor y, bool bias_grad, int dim, str act, float alpha, float gain, "
    "float clamp) -> (Tensor, Tensor)",
    "dense(Tensor x, Tensor w, Tensor? b, str act, float alpha, float gain, float clamp) -> Tensor",
    "dense_backward(Tensor dz, Tensor x, Tensor w, bool[2] mask) -> (Tensor, Tensor)",
    "conv2d(Tensor x, Tensor w, Tensor? b, int[2] stride, int[2] padding, int[2] dilation, int groups, str act, "
    "float alpha, float gain, float clamp) -> Tensor",
    "conv2d_backward(Tensor dz, Tensor x, Tensor w, int[2] stride, int[2] padding, int[2] dilation, int groups, "
    "bool[2] mask) -> (Tensor, Tensor)",
    "sigmoid_bce(Tensor logits, Tensor? target, float label, Tensor? weight, Tensor? pos_weight, int reduction) "
    "-> Tensor",
    "sigmoid_bce_backward(Tensor grad, Tensor logits, Tensor? target, float label, Tensor? weight, "
    "Tensor? pos_weight, int reduction) -> Tensor",
};

template <bool EMU>
at::Tensor bias_act_k(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim, c10::string_view act,
                      double alpha, double gain, double clamp) {
  return bias_act(EMU, x, b, dim, act, alpha, gain, clamp);
}
template <bool EMU>
std::tuple<at::Tensor, at::Tensor> bias_act_backward_k(const at::Tensor& dy, const at::Tensor& y, bool bias_grad,
                                                       int64_t dim, c10::string_view act, double alpha, double gain,
                                                       double clamp) {
  return bias_act_backward(EMU, dy, y, bias_grad, dim, act, alpha, gain, clamp);
}
template <bool EMU>
at::Tensor dense_k(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b, c10::string_view act,
                   double alpha, double gain, double clamp) {
  return dense(EMU, x, w, b, act, alpha, gain, clamp);
}
template <bool EMU>
std::tuple<at::Tensor, at::Tensor> dense_backward_k(const at::Tensor& dz, const at::Tensor& x, const at::Tensor& w,
                                                    std::array<bool, 2> mask) {
  return dense_backward(EMU, dz, x, w, mask);
}
template <bool EMU>
std::tuple<at::Tensor, at::Tensor> conv2d_backward_k(const at::Tensor& dz, const at::Tensor& x, const at::Tensor& w,
                                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                                     at::IntArrayRef dilation, int64_t groups,
                                                     std::array<bool, 2> mask) {
  return conv2d_backward(EMU, dz, x, w, stride, padding, dilation, groups, mask);
}
template <bool EMU>
at::Tensor conv2d_k(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                    c10::string_view act, double alpha, double gain, double clamp) {
  return conv2d(EMU, x, w, b, stride, padding, dilation, groups, act, alpha, gain, clamp);
}
template <bool EMU>
at::Tensor sigmoid_bce_k(const at::Tensor& logits, const c10::optional<at::Tensor>& target, double label,
                         const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& pos_weight,
                         int64_t reduction) {
  return sigmoid_bce(EMU, logits, target, label, weight, pos_weight, reduction);
}
template <bool EMU>
at::Tensor sigmoid_bce_backward_k(const at::Tensor& grad, const at::Tensor& logits,
                                  const c10::optional<at::Tensor>& target, double label,
                                  const c10::optional<at::Tensor>& weight,
                                  const c10::optional<at::Tensor>& pos_weight, int64_t reduction) {
  return sigmoid_bce_backward(EMU, grad, logits, target, label, weight, pos_weight, reduction);
}

void define_all(torch::Library& m) {
  for (const char* s : kSchemas) m.def(s);
}

template <bool EMU>
void impl_all(torch::Library& m) {
  m.impl("bias_act", TORCH_FN(bias_act_k<EMU>));
  m.impl("bias_act_backward", TORCH_FN(bias_act_backward_k<EMU>));
  m.impl("dense", TORCH_FN(dense_k<EMU>));
  m.impl("dense_backward", TORCH_FN(dense_backward_k<EMU>));
  m.impl("conv2d", TORCH_FN(conv2d_k<EMU>));
  m.impl("conv2d_backward", TORCH_FN(conv2d_backward_k<EMU>));
  m.impl("sigmoid_bce", TORCH_FN(sigmoid_bce_k<EMU>));
  m.impl("sigmoid_bce_backward", TORCH_FN(sigmoid_bce_backward_k<EMU>));
}

}  // namespace
}  // namespace fastgan

TORCH_LIBRARY(fastgan, m) { fastgan::define_all(m); }
TORCH_LIBRARY_IMPL(fastgan, CPU, m) { fastgan::impl_all<false>(m); }
#ifdef FASTGAN_WITH_CUDA
TORCH_LIBRARY_IMPL(fastgan, CUDA, m) { fastgan::impl_all<false>(m); }
#endif

#ifdef FASTGAN_WITH_EMU
TORCH_LIBRARY(fastgan_emu, m) { fastgan::define_all(m); }
TORCH_LIBRARY_IMPL(fastgan_emu, CPU, m) { fastgan::impl_all<true>(m); }
#endif
