// sigmoid + binary cross-entropy op glue: argument checks, allocation, and the choice of kernels -- the C++ CPU
// kernels (csrc/cpu/bce.cpp) or the CUDA / emulated kernels through the KernelTable.
#include <ATen/ExpandUtils.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cmath>
#include <vector>

#include "../cpu/cpu.h"
#include "glue.h"
#include "ops.h"

namespace fastgan {
namespace {

using Args = BceCpuArgs;

Args prepare(const char* op, const at::Tensor& logits, const c10::optional<at::Tensor>& target, double label,
             const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& pos_weight, int64_t reduction) {
  check_float(logits, op, "logits");
  TORCH_CHECK_VALUE(reduction >= 0 && reduction <= 2, op, ": reduction: expected 0 (none), 1 (mean) or 2 (sum), got ",
                    reduction);
  TORCH_CHECK_VALUE(std::isfinite(label), op, ": label: expected a finite number, got ", label);
  Args a;
  a.logits = logits.contiguous();
  a.label = label;
  a.reduction = reduction;
  if (target.has_value() && target->defined()) {
    check_same(*target, logits, op, "target", "logits");
    TORCH_CHECK_VALUE(target->sizes() == logits.sizes(), op, ": target: expected shape ", logits.sizes(),
                      " like logits, got ", target->sizes());
    a.target = target->contiguous();
  }
  auto bcast = [&](const c10::optional<at::Tensor>& t, const char* name) -> at::Tensor {
    if (!t.has_value() || !t->defined()) return at::Tensor();
    check_same(*t, logits, op, name, "logits");
    TORCH_CHECK_VALUE(at::infer_size(t->sizes(), logits.sizes()) == logits.sizes(), op, ": ", name, ": shape ",
                      t->sizes(), " does not broadcast to the logits' shape ", logits.sizes());
    return t->expand(logits.sizes()).contiguous();
  };
  a.weight = bcast(weight, "weight");
  a.pos_weight = bcast(pos_weight, "pos_weight");
  return a;
}

const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

}  // namespace

at::Tensor sigmoid_bce(const at::Tensor& logits, const c10::optional<at::Tensor>& target, double label,
                       const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& pos_weight,
                       int64_t reduction) {
  const BelowAutograd below;
  const char* op = "fastgan::sigmoid_bce";
  const Args a = prepare(op, logits, target, label, weight, pos_weight, reduction);
  const Exec ex = exec_for(logits, op);
  c10::OptionalDeviceGuard guard(logits.device());
  const int64_t n = a.logits.numel();
  at::Tensor out = reduction == 0 ? at::empty_like(a.logits) : at::empty({}, logits.options());
  poisoned(out);
  if (ex.backend == Backend::CPU) {
    cpu_sigmoid_bce(a, out);
    return out;
  }
  at::Tensor ws = at::empty({kSumMaxBlocks},
                            logits.options().dtype(logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
  BceParams p;
  p.logits = a.logits.const_data_ptr();
  p.target = ptr_or_null(a.target);
  p.weight = ptr_or_null(a.weight);
  p.pos_weight = ptr_or_null(a.pos_weight);
  p.out = out.mutable_data_ptr();
  p.workspace = ws.mutable_data_ptr();
  p.label = a.label;
  p.numel = n;
  p.reduction = (int)reduction;
  p.dtype = to_dtype(logits, op, "logits");
  with_counters(ex, logits, reduction != 0, [&](int* counters) {
    p.counters = counters;
    ex.kernels->bce_fwd(p, ex.stream);
  });
  return out;
}

at::Tensor sigmoid_bce_backward(const at::Tensor& grad, const at::Tensor& logits,
                                const c10::optional<at::Tensor>& target, double label,
                                const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& pos_weight,
                                int64_t reduction) {
  const BelowAutograd below;
  const char* op = "fastgan::sigmoid_bce_backward";
  const Args a = prepare(op, logits, target, label, weight, pos_weight, reduction);
  check_same(grad, logits, op, "grad", "logits");
  if (reduction == 0) {
    TORCH_CHECK_VALUE(grad.sizes() == logits.sizes(), op, ": grad: expected shape ", logits.sizes(), ", got ",
                      grad.sizes());
  } else {
    TORCH_CHECK_VALUE(grad.numel() == 1, op, ": grad: expected one element for a reduced loss, got shape ",
                      grad.sizes());
  }
  const Exec ex = exec_for(logits, op);
  c10::OptionalDeviceGuard guard(logits.device());
  const at::Tensor g = grad.contiguous();
  const int64_t n = a.logits.numel();
  at::Tensor dl = at::empty_like(a.logits);
  poisoned(dl);
  if (ex.backend == Backend::CPU) {
    cpu_sigmoid_bce_backward(a, g, dl);
    return dl;
  }
  BceBwdParams p;
  p.grad = g.const_data_ptr();
  p.logits = a.logits.const_data_ptr();
  p.target = ptr_or_null(a.target);
  p.weight = ptr_or_null(a.weight);
  p.pos_weight = ptr_or_null(a.pos_weight);
  p.dlogits = dl.mutable_data_ptr();
  p.label = a.label;
  p.numel = n;
  p.reduction = (int)reduction;
  p.dtype = to_dtype(logits, op, "logits");
  ex.kernels->bce_bwd(p, ex.stream);
  return dl;
}

}  // namespace fastgan
