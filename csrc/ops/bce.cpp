// sigmoid + binary cross-entropy op: CPU loops here, CUDA / emulated kernels through the KernelTable.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ExpandUtils.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cmath>
#include <vector>

#include "../kernels/bce_math.cuh"
#include "glue.h"
#include "ops.h"

namespace fastgan {
namespace {

struct Args {
  at::Tensor logits, target, weight, pos_weight;  // contiguous, same shape (target/weights may be undefined)
  double label;
  int64_t reduction;
};

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

template <typename scalar_t>
struct CpuElem {
  using M = at::opmath_type<scalar_t>;
  const scalar_t *x, *t, *w, *p;
  M label;
  M loss(int64_t i) const {
    const M xi = M(x[i]), ti = t ? M(t[i]) : label, pi = p ? M(p[i]) : M(1);
    const M l = bce_loss<M>(xi, ti, pi);
    return w ? l * M(w[i]) : l;
  }
  M dloss(int64_t i) const {
    const M xi = M(x[i]), ti = t ? M(t[i]) : label, pi = p ? M(p[i]) : M(1);
    const M d = bce_dloss<M>(xi, ti, pi);
    return w ? d * M(w[i]) : d;
  }
};

template <typename scalar_t>
CpuElem<scalar_t> cpu_elem(const Args& a) {
  auto ptr = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr; };
  return CpuElem<scalar_t>{ptr(a.logits), ptr(a.target), ptr(a.weight), ptr(a.pos_weight),
                           static_cast<at::opmath_type<scalar_t>>(a.label)};
}

const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

}  // namespace

at::Tensor sigmoid_bce(bool emu, const at::Tensor& logits, const c10::optional<at::Tensor>& target, double label,
                       const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& pos_weight,
                       int64_t reduction) {
  const BelowAutograd below;
  const char* op = "fastgan::sigmoid_bce";
  const Args a = prepare(op, logits, target, label, weight, pos_weight, reduction);
  const Exec ex = exec_for(logits, emu, op);
  c10::OptionalDeviceGuard guard(logits.device());
  const int64_t n = a.logits.numel();
  at::Tensor out = reduction == 0 ? at::empty_like(a.logits) : at::empty({}, logits.options());
  poisoned(out);
  if (ex.backend == Backend::CPU) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "sigmoid_bce", [&] {
      using M = at::opmath_type<scalar_t>;
      const auto e = cpu_elem<scalar_t>(a);
      scalar_t* o = out.mutable_data_ptr<scalar_t>();
      if (reduction == 0) {
        at::parallel_for(0, n, 1 << 14, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) o[i] = e.loss(i);
        });
        return;
      }
      // Fixed-size chunks summed in order: the result does not depend on the thread count.
      constexpr int64_t kChunk = 1 << 14;
      const int64_t nchunks = (n + kChunk - 1) / kChunk;
      std::vector<M> part(std::max<int64_t>(nchunks, 1), M(0));
      at::parallel_for(0, nchunks, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          M s = M(0);
          for (int64_t i = c * kChunk, e1 = std::min(n, (c + 1) * kChunk); i < e1; ++i) s += e.loss(i);
          part[c] = s;
        }
      });
      M s = M(0);
      for (M v : part) s += v;
      o[0] = reduction == 1 ? s / M(n) : s;
    });
    return out;
  }
  at::Tensor ws = at::empty({kBceMaxBlocks},
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
  ex.kernels->bce_fwd(p, ex.stream);
  return out;
}

at::Tensor sigmoid_bce_backward(bool emu, const at::Tensor& grad, const at::Tensor& logits,
                                const c10::optional<at::Tensor>& target, double label,
                                const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& pos_weight,
                                int64_t reduction) {
  const BelowAutograd below;
  const char* op = "fastgan::sigmoid_bce_backward";
  const Args a = prepare(op, logits, target, label, weight, pos_weight, reduction);
  check_same(grad, logits, op, "grad", "logits");
  if (reduction == 0) {
    TORCH_CHECK_VALUE(grad.sizes() == logits.sizes(), op, ": grad: expected shape ", logits.sizes(), ", got ", grad.sizes());
  } else {
    TORCH_CHECK_VALUE(grad.numel() == 1, op, ": grad: expected one element for a reduced loss, got shape ", grad.sizes());
  }
  const Exec ex = exec_for(logits, emu, op);
  c10::OptionalDeviceGuard guard(logits.device());
  const at::Tensor g = grad.contiguous();
  const int64_t n = a.logits.numel();
  at::Tensor dl = at::empty_like(a.logits);
  poisoned(dl);
  if (ex.backend == Backend::CPU) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "sigmoid_bce_backward", [&] {
      using M = at::opmath_type<scalar_t>;
      const auto e = cpu_elem<scalar_t>(a);
      const scalar_t* gp = g.const_data_ptr<scalar_t>();
      scalar_t* o = dl.mutable_data_ptr<scalar_t>();
      const M scale = reduction == 0 ? M(1) : M(gp[0]) / (reduction == 1 ? M(n) : M(1));
      at::parallel_for(0, n, 1 << 14, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) o[i] = (reduction == 0 ? M(gp[i]) : scale) * e.dloss(i);
      });
    });
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
