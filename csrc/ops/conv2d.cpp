// conv2d op: y = act(conv2d(x, w) + b) * gain. The convolution runs in ATen (oneDNN on CPU, cuDNN on CUDA);
// bias, activation, gain and clamp are one fused pass over its output, in place, in the output's own memory
// format (NCHW or channels_last).
#include <ATen/ops/convolution.h>

#include "glue.h"
#include "ops.h"

namespace fastgan {

at::Tensor conv2d(bool emu, const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                  c10::string_view act, double alpha, double gain, double clamp) {
  const char* op = "fastgan::conv2d";
  check_float(x, op, "x");
  check_same(w, x, op, "w", "x");
  const int a = act_code(act, op);
  check_act_args(op, alpha, gain, clamp);
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": x: expected a 4-D tensor (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK_VALUE(w.dim() == 4, op, ": w: expected a 4-D tensor (out_channels, in_channels/groups, kH, kW), got shape ",
                    w.sizes());
  TORCH_CHECK_VALUE(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, op,
                    ": stride, padding and dilation must have 2 elements each");
  TORCH_CHECK_VALUE(groups >= 1 && x.size(1) == w.size(1) * groups && w.size(0) % groups == 0, op,
                    ": x: expected ", w.size(1) * groups, " channels (w.shape[1] * groups) and out_channels divisible by groups=",
                    groups, ", got x.shape ", x.sizes(), " and w.shape ", w.sizes());
  const bool has_b = b.has_value() && b->defined();
  if (has_b) {
    check_same(*b, x, op, "b", "x");
    TORCH_CHECK_VALUE(b->dim() == 1 && b->size(0) == w.size(0), op, ": b: expected a 1-D tensor of length ", w.size(0),
                      " (w's out_channels), got shape ", b->sizes());
  }
  const Exec ex = exec_for(x, emu, op);
  c10::OptionalDeviceGuard guard(x.device());
  at::Tensor y = at::convolution(x, w, c10::nullopt, stride, padding, dilation, false, {0, 0}, groups);
  bias_act_into(ex, y, b, y, 1, a, alpha, gain, clamp);
  return y;
}

}  // namespace fastgan
