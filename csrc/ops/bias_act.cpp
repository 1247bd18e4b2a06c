// bias_act op glue: argument checks, allocation, and the choice of kernels -- the C++ CPU kernels
// (csrc/cpu/bias_act.cpp) or the CUDA / emulated kernels through the KernelTable. The epilogue helpers here are
// shared by dense and conv2d.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <string>

#include "../cpu/cpu.h"
#include "glue.h"
#include "ops.h"

namespace fastgan {

void bias_act_into(const Exec& ex, const at::Tensor& x, const c10::optional<at::Tensor>& b, const at::Tensor& y,
                   int64_t dim, int act, double alpha, double gain, double clamp) {
  const bool has_b = b.has_value() && b->defined();
  int64_t C, inner;
  channel_layout(y, dim, has_b, &C, &inner);
  const int64_t numel = y.numel();
  if (numel == 0) return;
  at::Tensor bc = has_b ? b->contiguous() : at::Tensor();
  if (ex.backend == Backend::CPU) {
    cpu_bias_act(x, bc, y, C, inner, act, alpha, gain, clamp);
    return;
  }
  BiasActParams p;
  p.x = x.const_data_ptr();
  p.b = has_b ? bc.const_data_ptr() : nullptr;
  p.y = y.mutable_data_ptr();
  p.numel = numel;
  p.C = C;
  p.inner = inner;
  p.act = act;
  p.alpha = alpha;
  p.gain = gain;
  p.clamp = clamp;
  p.dtype = to_dtype(y, "bias_act", "x");
  ex.kernels->bias_act_fwd(p, ex.stream);
}

void bias_act_backward_into(const Exec& ex, const at::Tensor& dy, const at::Tensor& y, const at::Tensor& dz,
                            const at::Tensor& db, int64_t dim, int act, double alpha, double gain, double clamp) {
  const bool has_db = db.defined();
  int64_t C, inner;
  channel_layout(y, dim, has_db, &C, &inner);
  const int64_t numel = y.numel();
  if (has_db && numel == 0) db.zero_();
  if (numel == 0) return;
  if (ex.backend == Backend::CPU) {
    cpu_bias_act_backward(dy, y, dz, has_db ? db : at::Tensor(), C, inner, act, alpha, gain, clamp);
    return;
  }
  at::Tensor ws;
  if (has_db)
    ws = at::empty({C * kBiasGradSplits},
                   y.options().dtype(y.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
  BiasActBwdParams p;
  p.dy = dy.const_data_ptr();
  p.y = y.const_data_ptr();
  p.dz = dz.mutable_data_ptr();
  p.db = has_db ? db.mutable_data_ptr() : nullptr;
  p.workspace = has_db ? ws.mutable_data_ptr() : nullptr;
  p.numel = numel;
  p.C = C;
  p.inner = inner;
  p.act = act;
  p.alpha = alpha;
  p.gain = gain;
  p.clamp = clamp;
  p.dtype = to_dtype(y, "bias_act_backward", "y");
  with_counters(ex, y, has_db, [&](int* counters) {
    p.counters = counters;
    ex.kernels->bias_act_bwd(p, ex.stream);
  });
}

static int64_t check_dim(const at::Tensor& x, int64_t dim, const char* op) {
  if (x.dim() == 0) return 0;
  TORCH_CHECK_INDEX(dim >= -x.dim() && dim < x.dim(), op, ": dim: expected an int in [", -x.dim(), ", ", x.dim() - 1,
                    "] for a ", x.dim(), "-D input, got ", dim);
  return dim < 0 ? dim + x.dim() : dim;
}

at::Tensor bias_act(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim,
                    c10::string_view act, double alpha, double gain, double clamp) {
  const BelowAutograd below;
  const char* op = "fastgan::bias_act";
  check_float(x, op, "x");
  const int a = act_code(act, op);
  clamp = checked_clamp(op, alpha, gain, clamp, x.scalar_type());
  dim = check_dim(x, dim, op);
  const bool has_b = b.has_value() && b->defined();
  if (has_b) {
    TORCH_CHECK(x.dim() > 0, op, ": x: a bias needs at least a 1-D input");
    check_bias(b, x, x.size(dim), op, "x.shape[" + std::to_string(dim) + "]");
  }
  const Exec ex = exec_for(x, op);
  c10::OptionalDeviceGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  at::Tensor xd = with_strides_of(x, y);
  poisoned(y);
  bias_act_into(ex, xd, b, y, dim, a, alpha, gain, clamp);
  return y;
}

std::tuple<at::Tensor, at::Tensor> bias_act_backward(const at::Tensor& dy, const at::Tensor& y,
                                                     bool bias_grad, int64_t dim, c10::string_view act, double alpha,
                                                     double gain, double clamp) {
  const BelowAutograd below;
  const char* op = "fastgan::bias_act_backward";
  check_float(y, op, "y");
  check_same(dy, y, op, "dy", "y");
  TORCH_CHECK_VALUE(dy.sizes() == y.sizes(), op, ": dy: expected shape ", y.sizes(), " like y, got ", dy.sizes());
  const int a = act_code(act, op);
  clamp = checked_clamp(op, alpha, gain, clamp, y.scalar_type());
  dim = check_dim(y, dim, op);
  const Exec ex = exec_for(y, op);
  c10::OptionalDeviceGuard guard(y.device());
  at::Tensor dz = at::empty_like(y);
  at::Tensor yd = with_strides_of(y, dz);
  at::Tensor dyd = with_strides_of(dy, dz);
  at::Tensor db = bias_grad ? at::empty({y.dim() ? y.size(dim) : 1}, y.options()) : at::empty({0}, y.options());
  poisoned(dz);
  poisoned(db);
  bias_act_backward_into(ex, dyd, yd, dz, bias_grad ? db : at::Tensor(), dim, a, alpha, gain, clamp);
  return {dz, db};
}

}  // namespace fastgan
