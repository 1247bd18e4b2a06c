// linear_bce op glue: a one-output dense head and its sigmoid-BCE loss (a discriminator's last layer and loss) as
// one op, and its backward as one op.
//   CPU    the unfused layer's and loss's own CPU computations (dense's ATen products, the sigmoid_bce kernels),
//          in the same order: the same bits, so a model trains identically with either (the CPU step is GEMM-bound;
//          a fused loop would save microseconds, not launches).
//   CUDA   csrc/kernels/linear_bce.cu: one launch forward (logits and the reduced loss), one backward (dx, dw, db).
//   EMU    the same kernels under emulation, on CPU tensors.
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

#include <cmath>

#include "gemm_glue.h"
#include "ops.h"

namespace fastgan {
namespace {

struct HeadInputs {
  int64_t n = 0, K = 0;
  at::Tensor target, weight;  // contiguous (n,) or undefined
};

HeadInputs check_head(const char* op, const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                      const c10::optional<at::Tensor>& target, double label, const c10::optional<at::Tensor>& weight,
                      int64_t reduction) {
  check_float(x, op, "x");
  check_same(w, x, op, "w", "x");
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": x: expected a 2-D tensor (batch, in_features), got shape ", x.sizes());
  TORCH_CHECK_VALUE(w.dim() == 2 && w.size(0) == 1 && w.size(1) == x.size(1), op,
                    ": w: expected shape [1, ", x.size(1), "] (one output feature), got ", w.sizes());
  if (b.has_value() && b->defined()) {
    check_same(*b, x, op, "b", "x");
    TORCH_CHECK_VALUE(b->numel() == 1 && b->dim() == 1, op, ": b: expected shape [1], got ", b->sizes());
  }
  TORCH_CHECK_VALUE(reduction == 1 || reduction == 2, op, ": reduction: expected 1 (mean) or 2 (sum), got ",
                    reduction);
  TORCH_CHECK_VALUE(std::isfinite(label), op, ": label: expected a finite number, got ", label);
  HeadInputs h;
  h.n = x.size(0);
  h.K = x.size(1);
  if (target.has_value() && target->defined()) {
    check_same(*target, x, op, "target", "x");
    TORCH_CHECK_VALUE(target->dim() == 1 && target->size(0) == h.n, op, ": target: expected shape [", h.n,
                      "], got ", target->sizes());
    h.target = target->contiguous();
  }
  if (weight.has_value() && weight->defined()) {
    check_same(*weight, x, op, "weight", "x");
    TORCH_CHECK_VALUE(weight->dim() <= 1 && (weight->numel() == 1 || weight->numel() == h.n), op,
                      ": weight: expected shape [", h.n, "] or one element, got ", weight->sizes());
    h.weight = weight->reshape({-1}).expand({h.n}).contiguous();
  }
  return h;
}

const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

LinearBceParams head_params(const at::Tensor& x, const at::Tensor& w, const HeadInputs& h, double label,
                            int64_t reduction, const char* op) {
  LinearBceParams p;
  p.x = x.const_data_ptr();
  p.sx_n = x.stride(0);
  p.sx_k = x.stride(1);
  p.w = w.const_data_ptr();
  p.sw = w.stride(1);
  p.target = ptr_or_null(h.target);
  p.weight = ptr_or_null(h.weight);
  p.label = label;
  p.n = h.n;
  p.K = h.K;
  p.reduction = static_cast<int>(reduction);
  p.dtype = to_dtype(x, op, "x");
  return p;
}

at::Tensor accumulators(const at::Tensor& like, int64_t n) {
  return at::empty({n > 0 ? n : 1}, like.options().dtype(like.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> linear_bce(const at::Tensor& x, const at::Tensor& w,
                                              const c10::optional<at::Tensor>& b,
                                              const c10::optional<at::Tensor>& target, double label,
                                              const c10::optional<at::Tensor>& weight, int64_t reduction) {
  const BelowAutograd below;
  const char* op = "fastgan::linear_bce";
  const HeadInputs h = check_head(op, x, w, b, target, label, weight, reduction);
  const Exec ex = exec_for(x, op);
  c10::OptionalDeviceGuard guard(x.device());
  const bool has_b = b.has_value() && b->defined();
  if (ex.backend == Backend::CPU) {  // the dense op's CPU products (same bits as the unfused layer + loss)
    at::Tensor y = at::empty({h.n, 1}, x.options());
    if (has_b)
      at::addmm_out(y, *b, x, w.t());
    else
      at::mm_out(y, x, w.t());
    at::Tensor logits = y.view({h.n});
    at::Tensor loss = sigmoid_bce(logits, h.target.defined() ? c10::optional<at::Tensor>(h.target) : c10::nullopt,
                                  label, h.weight.defined() ? c10::optional<at::Tensor>(h.weight) : c10::nullopt,
                                  c10::nullopt, reduction);
    return {loss, logits};
  }
  at::Tensor logits = poisoned(at::empty({h.n}, x.options()));
  at::Tensor loss = poisoned(at::empty({}, x.options()));
  LinearBceParams p = head_params(x, w, h, label, reduction, op);
  at::Tensor bc = has_b ? b->contiguous() : at::Tensor();
  p.b = ptr_or_null(bc);
  p.logits = logits.mutable_data_ptr();
  p.loss = loss.mutable_data_ptr();
  at::Tensor ws = accumulators(x, linear_bce_workspace(p, false));
  p.workspace = ws.mutable_data_ptr();
  with_counters(ex, x, true, [&](int* counters) {
    p.counters = counters;
    ex.kernels->linear_bce_fwd(p, ex.stream);
  });
  return {loss, logits};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_bce_backward(
    const at::Tensor& g_loss, const c10::optional<at::Tensor>& g_logits, const at::Tensor& x, const at::Tensor& w,
    const at::Tensor& logits, const c10::optional<at::Tensor>& target, double label,
    const c10::optional<at::Tensor>& weight, int64_t reduction, std::array<bool, 3> mask) {
  const BelowAutograd below;
  const char* op = "fastgan::linear_bce_backward";
  const HeadInputs h = check_head(op, x, w, c10::nullopt, target, label, weight, reduction);
  check_same(g_loss, x, op, "g_loss", "x");
  TORCH_CHECK_VALUE(g_loss.numel() == 1, op, ": g_loss: expected one element, got shape ", g_loss.sizes());
  check_same(logits, x, op, "logits", "x");
  TORCH_CHECK_VALUE(logits.dim() == 1 && logits.size(0) == h.n, op, ": logits: expected shape [", h.n, "], got ",
                    logits.sizes());
  const bool has_gl = g_logits.has_value() && g_logits->defined();
  if (has_gl) {
    check_same(*g_logits, x, op, "g_logits", "x");
    TORCH_CHECK_VALUE(g_logits->sizes() == logits.sizes(), op, ": g_logits: expected shape [", h.n, "], got ",
                      g_logits->sizes());
  }
  const Exec ex = exec_for(x, op);
  c10::OptionalDeviceGuard guard(x.device());
  auto none = [&]() { return at::empty({0}, x.options()); };  // (a fresh one per output: outputs must not alias)
  LinearBceParams fit;  // (in_features beyond kHeadCols x kCounterSlots with dw / db: the ATen route below)
  fit.K = h.K;
  fit.dw = mask[1] ? &fit : nullptr;
  fit.db = mask[2] ? &fit : nullptr;
  if (ex.backend == Backend::CPU || !linear_bce_bwd_fits(fit)) {
    at::Tensor dl = sigmoid_bce_backward(g_loss.reshape({}), logits,
                                         h.target.defined() ? c10::optional<at::Tensor>(h.target) : c10::nullopt,
                                         label, h.weight.defined() ? c10::optional<at::Tensor>(h.weight) : c10::nullopt,
                                         c10::nullopt, reduction);
    if (has_gl) dl.add_(*g_logits);
    // dense_backward's CPU path for a linear layer (same bits as the unfused layer + loss): db in the pass that
    // copies dz, then the two products (ATen's, on any device)
    LayerGrad g(ex, dl.view({h.n, 1}), at::Tensor(), 1, 0, 0.0, 1.0, -1.0,
                mask[2] ? at::empty({1}, x.options()) : at::Tensor());
    const at::Tensor& dz = g.dz();
    return {mask[0] ? at::mm(dz, w) : none(), mask[1] ? at::mm(dz.t(), x) : none(), mask[2] ? g.db : none()};
  }
  at::Tensor dx = mask[0] ? poisoned(at::empty({h.n, h.K}, x.options())) : none();
  at::Tensor dw = mask[1] ? poisoned(at::empty({1, h.K}, x.options())) : none();
  at::Tensor db = mask[2] ? poisoned(at::empty({1}, x.options())) : none();
  LinearBceParams p = head_params(x, w, h, label, reduction, op);
  const at::Tensor lc = logits.contiguous(), gc = g_loss.contiguous();
  const at::Tensor glc = has_gl ? g_logits->contiguous() : at::Tensor();
  p.logits = const_cast<void*>(lc.const_data_ptr());  // read only in the backward
  p.g_loss = gc.const_data_ptr();
  p.g_logits = ptr_or_null(glc);
  p.dx = mask[0] ? dx.mutable_data_ptr() : nullptr;
  p.dw = mask[1] ? dw.mutable_data_ptr() : nullptr;
  p.db = mask[2] ? db.mutable_data_ptr() : nullptr;
  const int64_t acc = linear_bce_workspace(p, true);
  at::Tensor ws = acc > 0 ? accumulators(x, acc) : at::Tensor();
  p.workspace = acc > 0 ? ws.mutable_data_ptr() : nullptr;
  with_counters(ex, x, acc > 0, [&](int* counters) {
    p.counters = counters;
    ex.kernels->linear_bce_bwd(p, ex.stream);
  });
  return {dx, dw, db};
}

}  // namespace fastgan
