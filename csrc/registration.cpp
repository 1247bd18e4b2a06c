// Dispatcher registration: the schemas of library `fastgan` and its CPU and CUDA kernels (csrc/ops/). Fake kernels,
// batching rules and autograd formulas are registered from Python (fastgan/ops/). Whether a CPU tensor runs the C++
// CPU kernels or the emulated CUDA kernels is the glue's backend override (csrc/ops/glue.h), not a second library.
#include <torch/library.h>

#include "ops/ops.h"

namespace fastgan {
namespace {

void impl_all(torch::Library& m) {
  m.impl("bias_act", TORCH_FN(bias_act));
  m.impl("bias_act_backward", TORCH_FN(bias_act_backward));
  m.impl("dense", TORCH_FN(dense));
  m.impl("dense_backward", TORCH_FN(dense_backward));
  m.impl("conv2d", TORCH_FN(conv2d));
  m.impl("conv2d_backward", TORCH_FN(conv2d_backward));
  m.impl("sigmoid_bce", TORCH_FN(sigmoid_bce));
  m.impl("sigmoid_bce_backward", TORCH_FN(sigmoid_bce_backward));
  m.impl("linear_bce", TORCH_FN(linear_bce));
  m.impl("linear_bce_backward", TORCH_FN(linear_bce_backward));
  m.impl("adam_", TORCH_FN(adam_));
  m.impl("sum_squares", TORCH_FN(sum_squares));
  m.impl("sum_squares_backward", TORCH_FN(sum_squares_backward));
}

}  // namespace
}  // namespace fastgan

TORCH_LIBRARY(fastgan, m) {
  m.def("bias_act(Tensor x, Tensor? b, int dim, str act, float alpha, float gain, float clamp) -> Tensor");
  m.def("bias_act_backward(Tensor dy, Tensor y, bool bias_grad, int dim, str act, float alpha, float gain, "
        "float clamp) -> (Tensor, Tensor)");
  m.def("dense(Tensor x, Tensor w, Tensor? b, str act, float alpha, float gain, float clamp, Tensor? dact_y=None) "
        "-> Tensor");
  m.def("dense_backward(Tensor dy, Tensor x, Tensor w, bool[3] mask, Tensor? y=None, str act=\"linear\", "
        "float alpha=0., float gain=1., float clamp=-1.) -> (Tensor, Tensor, Tensor)");
  m.def("conv2d(Tensor x, Tensor w, Tensor? b, int[2] stride, int[2] padding, int[2] dilation, int groups, str act, "
        "float alpha, float gain, float clamp, Tensor? dact_y=None) -> Tensor");
  m.def("conv2d_backward(Tensor dy, Tensor x, Tensor w, int[2] stride, int[2] padding, int[2] dilation, int groups, "
        "bool[3] mask, Tensor? y=None, str act=\"linear\", float alpha=0., float gain=1., float clamp=-1.) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("sigmoid_bce(Tensor logits, Tensor? target, float label, Tensor? weight, Tensor? pos_weight, int reduction) "
        "-> Tensor");
  m.def("sigmoid_bce_backward(Tensor grad, Tensor logits, Tensor? target, float label, Tensor? weight, "
        "Tensor? pos_weight, int reduction) -> Tensor");
  m.def("linear_bce(Tensor x, Tensor w, Tensor? b, Tensor? target, float label, Tensor? weight, int reduction) "
        "-> (Tensor, Tensor)");
  m.def("linear_bce_backward(Tensor g_loss, Tensor? g_logits, Tensor x, Tensor w, Tensor logits, Tensor? target, "
        "float label, Tensor? weight, int reduction, bool[3] mask) -> (Tensor, Tensor, Tensor)");
  m.def("adam_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
        "Tensor(d!)[] steps, float lr, float beta1, float beta2, float eps, float weight_decay, "
        "Tensor(e!)[]? ema=None, float ema_beta=0.) -> ()");
  m.def("sum_squares(Tensor x, float scale) -> Tensor");
  m.def("sum_squares_backward(Tensor g, Tensor x, float scale) -> Tensor");
}
TORCH_LIBRARY_IMPL(fastgan, CPU, m) { fastgan::impl_all(m); }
#ifdef FASTGAN_WITH_CUDA
TORCH_LIBRARY_IMPL(fastgan, CUDA, m) { fastgan::impl_all(m); }
#endif
