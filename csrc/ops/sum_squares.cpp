// Sum-of-squares op glue (a gradient penalty's squared norm): argument checks, allocation, and the choice of
// kernels -- the C++ CPU kernels (csrc/cpu/sum_squares.cpp) or the CUDA / emulated kernels through the KernelTable.
#include <ATen/ops/empty.h>

#include <cmath>

#include "../cpu/cpu.h"
#include "glue.h"
#include "ops.h"

namespace fastgan {
namespace {

// The checks both directions share, and the kernels' parameters for the contiguous x.
void check_args(const at::Tensor& x, double scale, const char* op) {
  check_float(x, op, "x");
  TORCH_CHECK_VALUE(std::isfinite(scale), op, ": scale: expected a finite number, got ", scale);
}

SumSquaresParams params_for(const at::Tensor& xc, double scale, const char* op) {
  SumSquaresParams p;
  p.x = xc.const_data_ptr();
  p.numel = xc.numel();
  p.scale = scale;
  p.dtype = to_dtype(xc, op, "x");
  return p;
}

}  // namespace

at::Tensor sum_squares(const at::Tensor& x, double scale) {
  const BelowAutograd below;
  const char* op = "fastgan::sum_squares";
  check_args(x, scale, op);
  const Exec ex = exec_for(x, op);
  c10::OptionalDeviceGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty({}, x.options());
  poisoned(out);
  if (ex.backend == Backend::CPU) {
    cpu_sum_squares(xc, scale, out);
    return out;
  }
  at::Tensor ws = at::empty({kSumMaxBlocks},
                            x.options().dtype(x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
  SumSquaresParams p = params_for(xc, scale, op);
  p.out = out.mutable_data_ptr();
  p.workspace = ws.mutable_data_ptr();
  with_counters(ex, x, true, [&](int* counters) {
    p.counters = counters;
    ex.kernels->sum_squares_fwd(p, ex.stream);
  });
  return out;
}

at::Tensor sum_squares_backward(const at::Tensor& g, const at::Tensor& x, double scale) {
  const BelowAutograd below;
  const char* op = "fastgan::sum_squares_backward";
  check_args(x, scale, op);
  check_same(g, x, op, "g", "x");
  TORCH_CHECK_VALUE(g.numel() == 1, op, ": g: expected one element (the gradient of the sum), got shape ", g.sizes());
  const Exec ex = exec_for(x, op);
  c10::OptionalDeviceGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  const at::Tensor gc = g.contiguous();
  at::Tensor dx = at::empty(x.sizes(), x.options());
  poisoned(dx);
  if (ex.backend == Backend::CPU) {
    cpu_sum_squares_backward(gc, xc, scale, dx);
    return dx;
  }
  SumSquaresParams p = params_for(xc, scale, op);
  p.g = gc.const_data_ptr();
  p.out = dx.mutable_data_ptr();
  ex.kernels->sum_squares_bwd(p, ex.stream);
  return dx;
}

}  // namespace fastgan
