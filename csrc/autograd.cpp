// C++ autograd for the eager calls of the fused ops (fastgan._C.autograd_*; used by fastgan/_ops.py).
//
// A Python autograd.Function costs ~20-30 us of interpreter time per fused layer (apply, the Python backward
// node, the nested calls); these torch::autograd::Function classes do the same bookkeeping in C++. They cover
// plain eager calls only: under torch.compile the dispatcher ops (and their fake kernels) are traced, and under
// torch.func transforms the Python Functions (setup_context style) run, exactly as before.
//
// The formulas are the first-order ones of fastgan/_ops.py. The backward calls the backward ops directly when
// the backward itself is not being differentiated (grad mode off); otherwise (create_graph, e.g. an R1 penalty)
// it calls them through the dispatcher, where their autograd formulas (registered from Python) record the
// graph for the next derivative -- so every order of derivative stays on the same formulas.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <string>

#include "autograd.h"
#include "ops/ops.h"

namespace fastgan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using at::Tensor;
using OptTensor = c10::optional<Tensor>;

// The dispatcher op `qualified` (fastgan::name or fastgan_emu::name).
template <typename Sig>
c10::TypedOperatorHandle<Sig> lookup(const char* qualified) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(qualified, "").typed<Sig>();
}

using BiasActBwdSig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, bool, int64_t, c10::string_view,
                                                 double, double, double);
using DenseBwdSig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, std::array<bool, 2>);
using ConvBwdSig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, c10::IntArrayRef,
                                              c10::IntArrayRef, c10::IntArrayRef, int64_t, std::array<bool, 2>);
using BceBwdSig = Tensor(const Tensor&, const Tensor&, const OptTensor&, double, const OptTensor&, const OptTensor&,
                         int64_t);

std::tuple<Tensor, Tensor> call_bias_act_backward(bool emu, const Tensor& dy, const Tensor& y, bool db, int64_t dim,
                                                  const std::string& act, double alpha, double gain, double clamp) {
  if (!at::GradMode::is_enabled()) return bias_act_backward(emu, dy, y, db, dim, act, alpha, gain, clamp);
  static const auto native = lookup<BiasActBwdSig>("fastgan::bias_act_backward");
  if (!emu) return native.call(dy, y, db, dim, act, alpha, gain, clamp);
  static const auto emulated = lookup<BiasActBwdSig>("fastgan_emu::bias_act_backward");
  return emulated.call(dy, y, db, dim, act, alpha, gain, clamp);
}

std::tuple<Tensor, Tensor> call_dense_backward(bool emu, const Tensor& dz, const Tensor& x, const Tensor& w,
                                               std::array<bool, 2> mask) {
  if (!at::GradMode::is_enabled()) return dense_backward(emu, dz, x, w, mask);
  static const auto native = lookup<DenseBwdSig>("fastgan::dense_backward");
  if (!emu) return native.call(dz, x, w, mask);
  static const auto emulated = lookup<DenseBwdSig>("fastgan_emu::dense_backward");
  return emulated.call(dz, x, w, mask);
}

std::tuple<Tensor, Tensor> call_conv2d_backward(bool emu, const Tensor& dz, const Tensor& x, const Tensor& w,
                                                c10::IntArrayRef stride, c10::IntArrayRef padding,
                                                c10::IntArrayRef dilation, int64_t groups, std::array<bool, 2> mask) {
  if (!at::GradMode::is_enabled()) return conv2d_backward(emu, dz, x, w, stride, padding, dilation, groups, mask);
  static const auto native = lookup<ConvBwdSig>("fastgan::conv2d_backward");
  if (!emu) return native.call(dz, x, w, stride, padding, dilation, groups, mask);
  static const auto emulated = lookup<ConvBwdSig>("fastgan_emu::conv2d_backward");
  return emulated.call(dz, x, w, stride, padding, dilation, groups, mask);
}

Tensor call_bce_backward(bool emu, const Tensor& g, const Tensor& logits, const OptTensor& target, double label,
                         const OptTensor& weight, const OptTensor& pos_weight, int64_t reduction) {
  if (!at::GradMode::is_enabled())
    return sigmoid_bce_backward(emu, g, logits, target, label, weight, pos_weight, reduction);
  static const auto native = lookup<BceBwdSig>("fastgan::sigmoid_bce_backward");
  if (!emu) return native.call(g, logits, target, label, weight, pos_weight, reduction);
  static const auto emulated = lookup<BceBwdSig>("fastgan_emu::sigmoid_bce_backward");
  return emulated.call(g, logits, target, label, weight, pos_weight, reduction);
}

OptTensor opt(const Tensor& t) { return t.defined() ? OptTensor(t) : OptTensor(); }

// Saved non-tensor arguments: one saved_data entry holding a tuple (has_b, act, alpha, gain, clamp, emu, extra...).
// One entry keeps the context's hash map at its smallest size: with one entry per argument its bucket array grew
// to 1120 bytes per call, past glibc's per-thread cache (1032 bytes), and such a request is carved out of whatever
// large block was freed last -- typically the previous call's 1 MB input gradient, so the next one landed on a
// cache-cold block (the 2048 -> 1 head's backward ran ~25% slower than stock in the benchmark's loop).
void save_args(AutogradContext* ctx, bool has_b, const std::string& act, double alpha, double gain, double clamp,
               bool emu, std::vector<c10::IValue> extra = {}) {
  std::vector<c10::IValue> v{has_b, act, alpha, gain, clamp, emu};
  for (auto& e : extra) v.push_back(std::move(e));
  ctx->saved_data["args"] = c10::ivalue::Tuple::create(std::move(v));
}

struct Act {
  std::string act;
  double alpha, gain, clamp;
  bool emu;
};

bool saved_has_b(AutogradContext* ctx) { return ctx->saved_data["args"].toTupleRef().elements()[0].toBool(); }

Act load_act(AutogradContext* ctx) {
  const auto& e = ctx->saved_data["args"].toTupleRef().elements();
  return {e[1].toStringRef(), e[2].toDouble(), e[3].toDouble(), e[4].toDouble(), e[5].toBool()};
}

// The i-th extra argument saved after the epilogue's.
const c10::IValue& saved_extra(AutogradContext* ctx, size_t i) {
  return ctx->saved_data["args"].toTupleRef().elements()[6 + i];
}

// The shared first half of dense's and conv2d's backward: saved x, w, y; dz (and db) through the epilogue's
// derivative; which of dx / dw are wanted. Bias, when present, is input 2.
struct ProductGrads {
  Tensor x, w, dz, db;
  Act a;
  bool want_db;
  std::array<bool, 2> need;

  // The backward's result for a forward of n_args arguments: (dx, dw, db) as wanted, undefined for the rest.
  variable_list result(const Tensor& dx, const Tensor& dw, size_t n_args) const {
    variable_list out(n_args);
    out[0] = need[0] ? dx : Tensor();
    out[1] = need[1] ? dw : Tensor();
    out[2] = want_db ? db : Tensor();
    return out;
  }
};

ProductGrads product_grads(AutogradContext* ctx, const variable_list& grads, int64_t channel_dim) {
  const auto saved = ctx->get_saved_variables();
  ProductGrads r;
  r.x = saved[0];
  r.w = saved[1];
  const Tensor& y = saved[2];
  r.a = load_act(ctx);
  r.want_db = saved_has_b(ctx) && ctx->needs_input_grad(2);
  const int64_t dim = channel_dim < 0 ? y.dim() - 1 : channel_dim;
  std::tie(r.dz, r.db) =
      call_bias_act_backward(r.a.emu, grads[0], y, r.want_db, dim, r.a.act, r.a.alpha, r.a.gain, r.a.clamp);
  r.need = {ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
  return r;
}

struct BiasActFn : torch::autograd::Function<BiasActFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const OptTensor& b, int64_t dim, std::string act,
                        double alpha, double gain, double clamp, bool emu) {
    RECORD_FUNCTION("fastgan::bias_act", std::vector<c10::IValue>());
    Tensor y = bias_act(emu, x, b, dim, act, alpha, gain, clamp);
    ctx->save_for_backward({y});
    save_args(ctx, b.has_value() && b->defined(), act, alpha, gain, clamp, emu, {dim});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor y = ctx->get_saved_variables()[0];
    const Act a = load_act(ctx);
    const bool want_db = saved_has_b(ctx) && ctx->needs_input_grad(1);
    auto [dz, db] = call_bias_act_backward(a.emu, grads[0], y, want_db, saved_extra(ctx, 0).toInt(), a.act, a.alpha,
                                           a.gain, a.clamp);
    return {ctx->needs_input_grad(0) ? dz : Tensor(), want_db ? db : Tensor(), Tensor(), Tensor(), Tensor(),
            Tensor(),  Tensor(), Tensor()};
  }
};

struct DenseFn : torch::autograd::Function<DenseFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w, const OptTensor& b, std::string act,
                        double alpha, double gain, double clamp, bool emu) {
    RECORD_FUNCTION("fastgan::dense", std::vector<c10::IValue>());
    Tensor y = dense(emu, x, w, b, act, alpha, gain, clamp);
    ctx->save_for_backward({x, w, y});
    save_args(ctx, b.has_value() && b->defined(), act, alpha, gain, clamp, emu);
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const ProductGrads g = product_grads(ctx, grads, -1);  // channels last in a dense output
    Tensor dx, dw;
    if (g.need[0] || g.need[1]) std::tie(dx, dw) = call_dense_backward(g.a.emu, g.dz, g.x, g.w, g.need);
    return g.result(dx, dw, 8);
  }
};

struct Conv2dFn : torch::autograd::Function<Conv2dFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w, const OptTensor& b,
                        std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
                        int64_t groups, std::string act, double alpha, double gain, double clamp, bool emu) {
    RECORD_FUNCTION("fastgan::conv2d", std::vector<c10::IValue>());
    Tensor y = conv2d(emu, x, w, b, stride, padding, dilation, groups, act, alpha, gain, clamp);
    ctx->save_for_backward({x, w, y});
    save_args(ctx, b.has_value() && b->defined(), act, alpha, gain, clamp, emu, {stride, padding, dilation, groups});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const ProductGrads g = product_grads(ctx, grads, 1);
    Tensor dx, dw;
    if (g.need[0] || g.need[1]) {
      const auto stride = saved_extra(ctx, 0).toIntVector();
      const auto padding = saved_extra(ctx, 1).toIntVector();
      const auto dilation = saved_extra(ctx, 2).toIntVector();
      std::tie(dx, dw) = call_conv2d_backward(g.a.emu, g.dz, g.x, g.w, stride, padding, dilation,
                                              saved_extra(ctx, 3).toInt(), g.need);
    }
    return g.result(dx, dw, 12);
  }
};

// Only the logits' gradient: fastgan/_ops.py takes this path when target, weight and pos_weight need none.
struct SigmoidBceFn : torch::autograd::Function<SigmoidBceFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& logits, const OptTensor& target, double label,
                        const OptTensor& weight, const OptTensor& pos_weight, int64_t reduction, bool emu) {
    RECORD_FUNCTION("fastgan::sigmoid_bce", std::vector<c10::IValue>());
    Tensor loss = sigmoid_bce(emu, logits, target, label, weight, pos_weight, reduction);
    ctx->save_for_backward({logits, target.value_or(Tensor()), weight.value_or(Tensor()),
                            pos_weight.value_or(Tensor())});
    ctx->saved_data["args"] = c10::ivalue::Tuple::create({label, reduction, emu});  // (see save_args)
    return loss;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    Tensor dx;
    if (ctx->needs_input_grad(0)) {
      const auto& a = ctx->saved_data["args"].toTupleRef().elements();
      dx = call_bce_backward(a[2].toBool(), grads[0], saved[0], opt(saved[1]), a[0].toDouble(), opt(saved[2]),
                             opt(saved[3]), a[1].toInt());
    }
    return {dx, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

Tensor autograd_bias_act(const Tensor& x, const OptTensor& b, int64_t dim, const std::string& act, double alpha,
                         double gain, double clamp, bool emu) {
  return BiasActFn::apply(x, b, dim, act, alpha, gain, clamp, emu);
}

Tensor autograd_dense(const Tensor& x, const Tensor& w, const OptTensor& b, const std::string& act, double alpha,
                      double gain, double clamp, bool emu) {
  return DenseFn::apply(x, w, b, act, alpha, gain, clamp, emu);
}

Tensor autograd_conv2d(const Tensor& x, const Tensor& w, const OptTensor& b, const std::vector<int64_t>& stride,
                       const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation, int64_t groups,
                       const std::string& act, double alpha, double gain, double clamp, bool emu) {
  return Conv2dFn::apply(x, w, b, stride, padding, dilation, groups, act, alpha, gain, clamp, emu);
}

Tensor autograd_sigmoid_bce(const Tensor& logits, const OptTensor& target, double label, const OptTensor& weight,
                            const OptTensor& pos_weight, int64_t reduction, bool emu) {
  return SigmoidBceFn::apply(logits, target, label, weight, pos_weight, reduction, emu);
}

}  // namespace fastgan
