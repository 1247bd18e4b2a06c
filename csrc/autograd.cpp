// C++ autograd for the eager calls of the fused ops (fastgan._C.autograd_*; used by fastgan/_ops.py).
//
// A Python autograd.Function costs ~20-30 us of interpreter time per fused layer (apply, the Python backward
// node, the nested calls). These entry points record the graph in C++ the way ATen's generated autograd kernels
// do: one torch::autograd::Node subclass per op, its next edges collected from the inputs, its saved tensors as
// SavedVariables (so saved-tensor hooks, version checks and "backward through the graph a second time" errors
// behave as for any ATen op), the output's history set on the node. They replace torch::autograd::Function
// classes, whose generic machinery (per-input VariableInfo, a context with a string-keyed map of IValues, output
// wrapping) cost ~5 us per call more (measured: a 4x8 -> 1 linear layer's forward + backward, 61 -> 5x us;
// stock F.linear 49 us). They cover plain eager calls only: under torch.compile the dispatcher ops (and their
// fake kernels) are traced, and under torch.func transforms / torch function or dispatch modes / forward AD the
// Python Functions (setup_context style) run (fastgan/_ops.py decides).
//
// The formulas are the first-order ones of fastgan/_ops.py. A backward calls the backward ops directly when it
// is not itself being differentiated (grad mode off); otherwise (create_graph, e.g. an R1 penalty) it calls them
// through the dispatcher, where their autograd formulas (registered from Python) record the graph for the next
// derivative -- so every order of derivative stays on the same formulas.
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sum.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>

#include <mutex>
#include <optional>
#include <string>

#include "autograd.h"
#include "ops/glue.h"
#include "ops/ops.h"

namespace fastgan {
namespace {

using torch::autograd::collect_next_edges;
using torch::autograd::compute_requires_grad;
using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::set_history;
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
bool given(const OptTensor& t) { return t.has_value() && t->defined(); }

// The epilogue's arguments, saved by every node with one.
struct Epilogue {
  std::string act;
  double alpha, gain, clamp;
  bool emu;

  // act(z) * gain without a clamp: dz = dy * gain needs no saved output.
  bool linear() const { return act == "linear" && clamp < 0; }

  // (dz, db) at the pre-activation from dy and the saved output y; db (when wanted) over every dim but `dim`.
  std::tuple<Tensor, Tensor> backward(const Tensor& dy, const Tensor& y, bool want_db, int64_t dim) const {
    return call_bias_act_backward(emu, dy, y, want_db, dim, act, alpha, gain, clamp);
  }

  // For compiled autograd (below): the arguments as IValues, and back.
  void pack(std::vector<c10::IValue>& v) const {
    v.insert(v.end(), {act, alpha, gain, clamp, emu});
  }
  static Epilogue unpack(const std::vector<c10::IValue>& v, size_t i) {
    return {v[i].toStringRef(), v[i + 1].toDouble(), v[i + 2].toDouble(), v[i + 3].toDouble(), v[i + 4].toBool()};
  }
  void collect(torch::dynamo::autograd::CompiledNodeArgs& args) const {
    args.collect(act);
    args.collect(alpha);
    args.collect(gain);
    args.collect(clamp);
    args.collect(emu);
  }
};

// Compiled autograd (torch._dynamo.compiled_autograd) runs a node as an opaque call of `functional` on the
// gradients and `packed` (the saved tensors, unpacked, and every other argument), as it runs a
// torch::autograd::Function's node: the call lands in its graph as it is, not traced through (the C++ kernels
// cannot run on its fake tensors).
variable_list opaque_call(const Node& node, torch::dynamo::autograd::functional_apply_t functional,
                          const variable_list& grads, const std::vector<c10::IValue>& packed,
                          torch::dynamo::autograd::SwapSavedVariables& saved) {
  namespace ca = torch::dynamo::autograd;
  std::vector<at::TypePtr> schema;
  schema.reserve(packed.size());
  for (const auto& v : packed) schema.emplace_back(v.isTensor() ? at::TensorType::get() : v.type());
  auto metadata =
      ca::IValuePacker<std::vector<std::optional<torch::autograd::InputMetadata>>>::pack(
          ca::get_input_metadata(node.next_edges()));
  const auto& py = ca::getPyCompilerInterface();
  const std::string fn = py->bind_function(saved.get_py_compiler(), node.name(), functional, schema,
                                           /*is_custom_function=*/true, /*is_traceable=*/false);
  return py->call_function(saved.get_py_compiler(), "apply_functional", fn, grads, packed, metadata);
}

c10::IValue maybe(const Tensor& t) { return t.defined() ? c10::IValue(t) : c10::IValue(); }
Tensor tensor_or_undefined(const c10::IValue& v) { return v.isNone() ? Tensor() : v.toTensor(); }

// (dz, db) for a product's epilogue: through the saved output y, or for a linear epilogue (the D head) dz = dy
// itself (times the gain) and db its sum, as ATen's addmm backward does -- no pass over the output, no saved
// output. ATen ops, so a create_graph backward records them. db is summed over every dim but `dim`.
std::tuple<Tensor, Tensor> pre_activation(const Epilogue& ep, const Tensor& dy, const Tensor& y, bool want_db,
                                          int64_t dim) {
  if (!ep.linear()) return ep.backward(dy, y, want_db, dim);
  std::optional<BelowAutograd> below;
  if (!at::GradMode::is_enabled()) below.emplace();
  Tensor dz = ep.gain == 1.0 ? dy : at::mul(dy, ep.gain);
  // dy may be any strided tensor (expanded, for a `.sum()` loss): ATen's CPU products take it as it is; the
  // CUDA kernels (and their emulation) get a dense one.
  if ((ep.emu || !dz.is_cpu()) && !dz.is_contiguous() &&
      !(dz.dim() == 4 && dz.is_contiguous(at::MemoryFormat::ChannelsLast)))
    dz = dz.contiguous();
  Tensor db;
  if (want_db) {
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < dz.dim(); ++d)
      if (d != dim) dims.push_back(d);
    db = dims.empty() ? dz : at::sum(dz, dims);
  }
  return {dz, db};
}

// A dense / conv2d node's gradients (dx, dw, db), computing only the wanted ones; `product` runs the op's
// backward for dx / dw. `dim`: the output's channel dim (-1: the last).
template <typename Product>
variable_list product_grads(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& y, const Epilogue& ep,
                            std::array<bool, 3> want, int64_t dim, Product product) {
  variable_list out(3);
  if (!dy.defined()) return out;
  auto [dz, db] = pre_activation(ep, dy, y, want[2], dim < 0 ? dy.dim() - 1 : dim);
  if (want[0] || want[1]) {
    auto [dx, dw] = product(dz, x, w, std::array<bool, 2>{want[0], want[1]});
    if (want[0]) out[0] = std::move(dx);
    if (want[1]) out[1] = std::move(dw);
  }
  if (want[2]) out[2] = std::move(db);
  return out;
}

// The shared state of dense's and conv2d's nodes: x, w and (unless the epilogue is linear) y saved.
struct ProductBackward : Node {
  SavedVariable x_, w_, y_;
  Epilogue ep;
  bool has_b = false;

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    x_.reset_data();
    w_.reset_data();
    y_.reset_data();
  }

  std::array<bool, 3> wanted() const {
    return {task_should_compute_output(0), task_should_compute_output(1), has_b && task_should_compute_output(2)};
  }
  Tensor saved_y() { return ep.linear() ? Tensor() : y_.unpack(getptr()); }

  // After the forward: edges to x, w, b; x, w (and y when needed) saved; y's history set on this node.
  void record(const Tensor& x, const Tensor& w, const OptTensor& b, const Tensor& y) {
    set_next_edges(collect_next_edges(x, w, b));
    x_ = SavedVariable(x, false);
    w_ = SavedVariable(w, false);
    has_b = given(b);
    set_history(y, getptr());
    if (!ep.linear()) y_ = SavedVariable(y, true);
  }

  // Compiled autograd: packed = [x, w, y or None, epilogue (5), want (3), extra...].
  void collect_product(torch::dynamo::autograd::CompiledNodeArgs& args) const {
    args.collect(x_, false);
    args.collect(w_, false);
    args.collect(y_, true);
    ep.collect(args);
    args.collect(has_b);
  }
  std::vector<c10::IValue> pack_product() {
    std::vector<c10::IValue> v{x_.unpack(), w_.unpack(), maybe(saved_y())};
    ep.pack(v);
    for (bool b : wanted()) v.emplace_back(b);
    return v;
  }
  // apply_with_saved: the opaque call of `functional` on pack_product() + `extra`.
  variable_list swapped(const variable_list& grads, torch::dynamo::autograd::SwapSavedVariables& saved,
                        torch::dynamo::autograd::functional_apply_t functional,
                        std::vector<c10::IValue> extra = {}) {
    saved.before(x_);
    saved.before(w_);
    saved.before(y_);
    std::vector<c10::IValue> packed = pack_product();
    packed.insert(packed.end(), extra.begin(), extra.end());
    variable_list out = opaque_call(*this, functional, grads, packed, saved);
    saved.after(x_);
    saved.after(w_);
    saved.after(y_);
    return out;
  }
  // The packed product arguments back: (x, w, y, epilogue, want).
  static std::tuple<Tensor, Tensor, Tensor, Epilogue, std::array<bool, 3>> unpack_product(
      const std::vector<c10::IValue>& v) {
    return {v[0].toTensor(), v[1].toTensor(), tensor_or_undefined(v[2]), Epilogue::unpack(v, 3),
            {v[8].toBool(), v[9].toBool(), v[10].toBool()}};
  }
};

struct BiasActBackward : Node {
  SavedVariable y_;
  Epilogue ep;
  int64_t dim = 1;
  bool has_b = false;

  std::string name() const override { return "fastgan::BiasActBackward"; }
  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    y_.reset_data();
  }
  static variable_list run(const Tensor& dy, const Tensor& y, const Epilogue& ep, int64_t dim, bool want_dx,
                           bool want_db) {
    variable_list out(2);
    if (!dy.defined() || !(want_dx || want_db)) return out;
    auto [dz, db] = ep.backward(dy, y, want_db, dim);
    if (want_dx) out[0] = std::move(dz);
    if (want_db) out[1] = std::move(db);
    return out;
  }
  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const bool want_dx = task_should_compute_output(0), want_db = has_b && task_should_compute_output(1);
    if (!grads[0].defined() || !(want_dx || want_db)) return variable_list(2);
    return run(grads[0], y_.unpack(getptr()), ep, dim, want_dx, want_db);
  }
  // Compiled autograd: packed = [y, epilogue (5), dim, want_dx, want_db].
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    args.collect(y_, true);
    ep.collect(args);
    args.collect(dim);
    args.collect(has_b);
  }
  static variable_list functional(const variable_list& grads, const std::vector<c10::IValue>& v) {
    return run(grads[0], v[0].toTensor(), Epilogue::unpack(v, 1), v[6].toInt(), v[7].toBool(), v[8].toBool());
  }
  variable_list apply_with_saved(const variable_list& grads,
                                 torch::dynamo::autograd::SwapSavedVariables& saved) override {
    saved.before(y_);
    std::vector<c10::IValue> v{y_.unpack(getptr())};
    ep.pack(v);
    v.insert(v.end(), {dim, task_should_compute_output(0), has_b && task_should_compute_output(1)});
    variable_list out = opaque_call(*this, &BiasActBackward::functional, grads, v, saved);
    saved.after(y_);
    return out;
  }
};

struct DenseBackward : ProductBackward {
  std::string name() const override { return "fastgan::DenseBackward"; }
  static variable_list run(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& y, const Epilogue& ep,
                           std::array<bool, 3> want) {
    const bool emu = ep.emu;
    return product_grads(dy, x, w, y, ep, want, -1,
                         [emu](const Tensor& dz, const Tensor& x, const Tensor& w, std::array<bool, 2> need) {
                           return call_dense_backward(emu, dz, x, w, need);
                         });
  }
  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!grads[0].defined()) return variable_list(3);
    return run(grads[0], x_.unpack(), w_.unpack(), saved_y(), ep, wanted());
  }
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override { collect_product(args); }
  static variable_list functional(const variable_list& grads, const std::vector<c10::IValue>& v) {
    auto [x, w, y, ep, want] = unpack_product(v);
    return run(grads[0], x, w, y, ep, want);
  }
  variable_list apply_with_saved(const variable_list& grads,
                                 torch::dynamo::autograd::SwapSavedVariables& saved) override {
    return swapped(grads, saved, &DenseBackward::functional);
  }
};

struct Conv2dBackward : ProductBackward {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;

  std::string name() const override { return "fastgan::Conv2dBackward"; }
  static variable_list run(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& y, const Epilogue& ep,
                           std::array<bool, 3> want, c10::IntArrayRef stride, c10::IntArrayRef padding,
                           c10::IntArrayRef dilation, int64_t groups) {
    return product_grads(dy, x, w, y, ep, want, 1,
                         [&](const Tensor& dz, const Tensor& x, const Tensor& w, std::array<bool, 2> need) {
                           return call_conv2d_backward(ep.emu, dz, x, w, stride, padding, dilation, groups, need);
                         });
  }
  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!grads[0].defined()) return variable_list(3);
    return run(grads[0], x_.unpack(), w_.unpack(), saved_y(), ep, wanted(), stride, padding, dilation, groups);
  }
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    collect_product(args);
    args.collect(stride);
    args.collect(padding);
    args.collect(dilation);
    args.collect(groups);
  }
  static variable_list functional(const variable_list& grads, const std::vector<c10::IValue>& v) {
    auto [x, w, y, ep, want] = unpack_product(v);
    return run(grads[0], x, w, y, ep, want, v[11].toIntVector(), v[12].toIntVector(), v[13].toIntVector(),
               v[14].toInt());
  }
  variable_list apply_with_saved(const variable_list& grads,
                                 torch::dynamo::autograd::SwapSavedVariables& saved) override {
    return swapped(grads, saved, &Conv2dBackward::functional, {stride, padding, dilation, groups});
  }
};

// Only the logits' gradient: fastgan/_ops.py takes this path when target, weight and pos_weight need none.
struct SigmoidBceBackward : Node {
  SavedVariable logits_, target_, weight_, pos_weight_;
  double label = 0;
  int64_t reduction = 1;
  bool emu = false;

  std::string name() const override { return "fastgan::SigmoidBceBackward"; }
  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    logits_.reset_data();
    target_.reset_data();
    weight_.reset_data();
    pos_weight_.reset_data();
  }
  static variable_list run(const Tensor& g, const Tensor& logits, const Tensor& target, const Tensor& weight,
                           const Tensor& pos_weight, double label, int64_t reduction, bool emu, bool want) {
    variable_list out(1);
    if (!g.defined() || !want) return out;
    out[0] = call_bce_backward(emu, g, logits, opt(target), label, opt(weight), opt(pos_weight), reduction);
    return out;
  }
  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!grads[0].defined() || !task_should_compute_output(0)) return variable_list(1);
    return run(grads[0], logits_.unpack(), target_.unpack(), weight_.unpack(), pos_weight_.unpack(), label,
               reduction, emu, true);
  }
  // Compiled autograd: packed = [logits, target, weight, pos_weight (None when absent), label, reduction, emu, want].
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    args.collect(logits_, false);
    args.collect(target_, false);
    args.collect(weight_, false);
    args.collect(pos_weight_, false);
    args.collect(label);
    args.collect(reduction);
    args.collect(emu);
  }
  static variable_list functional(const variable_list& grads, const std::vector<c10::IValue>& v) {
    return run(grads[0], v[0].toTensor(), tensor_or_undefined(v[1]), tensor_or_undefined(v[2]),
               tensor_or_undefined(v[3]), v[4].toDouble(), v[5].toInt(), v[6].toBool(), v[7].toBool());
  }
  variable_list apply_with_saved(const variable_list& grads,
                                 torch::dynamo::autograd::SwapSavedVariables& saved) override {
    for (SavedVariable* sv : {&logits_, &target_, &weight_, &pos_weight_}) saved.before(*sv);
    std::vector<c10::IValue> v{logits_.unpack(), maybe(target_.unpack()), maybe(weight_.unpack()),
                               maybe(pos_weight_.unpack()), label, reduction, emu, task_should_compute_output(0)};
    variable_list out = opaque_call(*this, &SigmoidBceBackward::functional, grads, v, saved);
    for (SavedVariable* sv : {&logits_, &target_, &weight_, &pos_weight_}) saved.after(*sv);
    return out;
  }
};

// SavedVariable of an optional tensor (an undefined one when absent).
SavedVariable save_opt(const OptTensor& t) { return given(t) ? SavedVariable(*t, false) : SavedVariable(); }

}  // namespace

bool plain_eager_state() {
  // the device types torch._C._is_any_autocast_enabled looks at
  for (const auto dev : {at::kCPU, at::kCUDA, at::kXPU, at::kIPU, at::kHPU, at::kXLA, at::kPrivateUse1, at::kMPS})
    if (at::autocast::is_autocast_enabled(dev)) return false;
  const auto included = c10::impl::tls_local_dispatch_key_set().included_;
  if (included.has(c10::DispatchKey::FuncTorchDynamicLayerFrontMode) ||
      included.has(c10::DispatchKey::FuncTorchDynamicLayerBackMode))
    return false;
  return !at::impl::torch_function_mode_enabled() && c10::impl::TorchDispatchModeTLS::stack_len() == 0;
}

Tensor autograd_bias_act(const Tensor& x, const OptTensor& b, int64_t dim, const std::string& act, double alpha,
                         double gain, double clamp, bool emu) {
  RECORD_FUNCTION("fastgan::bias_act", std::vector<c10::IValue>());
  Tensor y = bias_act(emu, x, b, dim, act, alpha, gain, clamp);
  if (compute_requires_grad(x, b)) {
    auto node = c10::make_intrusive<BiasActBackward>();
    node->set_next_edges(collect_next_edges(x, b));
    node->ep = {act, alpha, gain, clamp, emu};
    node->dim = dim;
    node->has_b = given(b);
    set_history(y, node);
    node->y_ = SavedVariable(y, true);
  }
  return y;
}

Tensor autograd_dense(const Tensor& x, const Tensor& w, const OptTensor& b, const std::string& act, double alpha,
                      double gain, double clamp, bool emu) {
  RECORD_FUNCTION("fastgan::dense", std::vector<c10::IValue>());
  Tensor y = dense(emu, x, w, b, act, alpha, gain, clamp);
  if (compute_requires_grad(x, w, b)) {
    auto node = c10::make_intrusive<DenseBackward>();
    node->ep = {act, alpha, gain, clamp, emu};
    node->record(x, w, b, y);
  }
  return y;
}

Tensor autograd_conv2d(const Tensor& x, const Tensor& w, const OptTensor& b, const std::vector<int64_t>& stride,
                       const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation, int64_t groups,
                       const std::string& act, double alpha, double gain, double clamp, bool emu) {
  RECORD_FUNCTION("fastgan::conv2d", std::vector<c10::IValue>());
  Tensor y = conv2d(emu, x, w, b, stride, padding, dilation, groups, act, alpha, gain, clamp);
  if (compute_requires_grad(x, w, b)) {
    auto node = c10::make_intrusive<Conv2dBackward>();
    node->ep = {act, alpha, gain, clamp, emu};
    node->stride = stride;
    node->padding = padding;
    node->dilation = dilation;
    node->groups = groups;
    node->record(x, w, b, y);
  }
  return y;
}

Tensor autograd_sigmoid_bce(const Tensor& logits, const OptTensor& target, double label, const OptTensor& weight,
                            const OptTensor& pos_weight, int64_t reduction, bool emu) {
  RECORD_FUNCTION("fastgan::sigmoid_bce", std::vector<c10::IValue>());
  TORCH_CHECK(!compute_requires_grad(target, weight, pos_weight),
              "fastgan::sigmoid_bce: the C++ autograd entry point computes the logits' gradient only; a target, "
              "weight or pos_weight that requires grad takes the Python path (fastgan/_ops.py)");
  Tensor loss = sigmoid_bce(emu, logits, target, label, weight, pos_weight, reduction);
  if (compute_requires_grad(logits)) {
    auto node = c10::make_intrusive<SigmoidBceBackward>();
    node->set_next_edges(collect_next_edges(logits));
    node->logits_ = SavedVariable(logits, false);
    node->target_ = save_opt(target);
    node->weight_ = save_opt(weight);
    node->pos_weight_ = save_opt(pos_weight);
    node->label = label;
    node->reduction = reduction;
    node->emu = emu;
    set_history(loss, node);
  }
  return loss;
}

}  // namespace fastgan
