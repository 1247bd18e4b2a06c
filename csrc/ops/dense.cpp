// dense op: y = act(x @ w.T + b) * gain. The product runs in ATen (MKL/oneDNN on CPU, cuBLAS on CUDA, and
// ATen on CPU tensors under emulation); bias, activation, gain and clamp are applied by one fused pass over
// the output, in place.
#include <ATen/ops/mm.h>

#include "glue.h"
#include "ops.h"

namespace fastgan {

at::Tensor dense(bool emu, const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                 c10::string_view act, double alpha, double gain, double clamp) {
  const char* op = "fastgan::dense";
  check_float(x, op, "x");
  check_same(w, x, op, "w", "x");
  const int a = act_code(act, op);
  check_act_args(op, alpha, gain, clamp);
  TORCH_CHECK_VALUE(w.dim() == 2, op, ": w: expected a 2-D tensor (out_features, in_features), got shape ", w.sizes());
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == w.size(1), op, ": x: expected last dimension ", w.size(1),
                    " (w's in_features), got shape ", x.sizes());
  const bool has_b = b.has_value() && b->defined();
  if (has_b) {
    check_same(*b, x, op, "b", "x");
    TORCH_CHECK_VALUE(b->dim() == 1 && b->size(0) == w.size(0), op, ": b: expected a 1-D tensor of length ", w.size(0),
                      " (w's out_features), got shape ", b->sizes());
  }
  const Exec ex = exec_for(x, emu, op);
  c10::OptionalDeviceGuard guard(x.device());
  const int64_t K = w.size(1), N = w.size(0);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = N;
  at::Tensor y = at::mm(x.reshape({-1, K}), w.t());  // contiguous (M, N)
  bias_act_into(ex, y, b, y, 1, a, alpha, gain, clamp);
  return y.view(out_shape);
}

}  // namespace fastgan
