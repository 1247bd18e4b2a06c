// fastgan._C.eager_dense: fastgan.functional.linear's fast path in one C++ call.
//
// A fused layer's forward pays for its Python wrapper: resolving the activation's defaults, checking that nothing
// which must see the dispatcher ops is active, choosing the implementation -- ~1.5 us with warm caches, 3-4 us
// when the layer's own data has just streamed through the caches (the 2048 -> 1 head: a 70 us forward, 5% of
// it). This does the same decisions here for the common case and returns None for everything else, which then
// takes the Python path unchanged (so every unusual argument, mode, transform or implementation keeps exactly
// the behaviour and the error messages it had):
//   * input, weight (and bias) plain tensors or Parameters (no subclass: its __torch_function__ must run);
//   * no autocast, torch.func transform, torch function / dispatch mode (plain_eager_state) and no forward AD;
//   * implementation native for a CPU input: fastgan._impl._current (use_impl) or else $FASTGAN_IMPL is unset,
//     empty, "auto" or "native", and fastgan._ext.C is loaded;
//   * act a known name and alpha / gain / clamp plain Python numbers within their ranges (defaults from the
//     activation table that fastgan/_activations.py registers with set_eager_activations).
// torch.compile never reaches it: the Python caller checks is_compiling first.
#include <pybind11/pybind11.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "autograd.h"

namespace fastgan {
namespace {

namespace py = pybind11;

struct ActDefault {
  std::string name;
  double alpha, gain;
};

struct State {
  std::vector<ActDefault> acts;
  py::object impl_module, ext_module, fwd_ad_module;
  py::str current = py::str("_current"), c = py::str("C"), level = py::str("_current_level");
  bool ready = false;
};

State& state() {
  static State* s = new State();  // never destroyed: Python may be finalizing when statics are
  return *s;
}

// A Python int or float (not bool) as a double; false for anything else.
bool number(PyObject* o, double* out) {
  if (PyFloat_CheckExact(o)) {
    *out = PyFloat_AS_DOUBLE(o);
    return true;
  }
  if (PyLong_CheckExact(o)) {
    *out = PyLong_AsDouble(o);
    if (*out == -1.0 && PyErr_Occurred()) {
      PyErr_Clear();
      return false;
    }
    return true;
  }
  return false;
}

bool word_is(const char* s, const char* w) {  // s, with surrounding whitespace stripped, equals w
  while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') ++s;
  size_t n = std::strlen(w);
  if (std::strncmp(s, w, n) != 0) return false;
  for (s += n; *s; ++s)
    if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') return false;
  return true;
}

bool blank(const char* s) { return word_is(s, ""); }

// Whether the native implementation is the one selected, as fastgan._impl.for_tensor would answer for a CPU tensor.
bool native_selected(State& st) {
  py::object C = st.ext_module.attr(st.c);
  if (C.is_none()) return false;
  py::object cur = st.impl_module.attr(st.current);
  if (cur.is_none()) {
    const char* env = std::getenv("FASTGAN_IMPL");
    return env == nullptr || blank(env) || word_is(env, "auto") || word_is(env, "native");
  }
  if (!PyUnicode_CheckExact(cur.ptr())) return false;
  const char* s = PyUnicode_AsUTF8(cur.ptr());
  if (s == nullptr) {
    PyErr_Clear();
    return false;
  }
  return std::strcmp(s, "auto") == 0 || std::strcmp(s, "native") == 0;
}

// act / alpha / gain / clamp as fastgan._activations.resolve returns them; false when anything is unusual.
bool resolve(State& st, PyObject* act, PyObject* alpha, PyObject* gain, PyObject* clamp, const ActDefault** spec,
             double* a, double* g, double* c) {
  if (!PyUnicode_CheckExact(act)) return false;
  Py_ssize_t n = 0;
  const char* name = PyUnicode_AsUTF8AndSize(act, &n);
  if (name == nullptr) {
    PyErr_Clear();
    return false;
  }
  *spec = nullptr;
  for (const auto& d : st.acts)
    if (d.name.size() == static_cast<size_t>(n) && std::memcmp(d.name.data(), name, n) == 0) *spec = &d;
  if (*spec == nullptr) return false;
  *a = (*spec)->alpha;
  *g = (*spec)->gain;
  *c = -1.0;
  if (alpha != Py_None && !number(alpha, a)) return false;
  if (gain != Py_None && !number(gain, g)) return false;
  if (clamp != Py_None && !number(clamp, c)) return false;
  if (!std::isfinite(*a) || *a < 0 || !std::isfinite(*g) || *g <= 0) return false;
  if (clamp != Py_None && (!(*c >= 0) || std::isinf(*c))) return false;
  return true;
}

}  // namespace

void set_eager_activations(py::dict table, py::object impl_module, py::object ext_module, py::object fwd_ad) {
  State& st = state();
  st.acts.clear();
  for (auto item : table) {
    auto t = item.second.cast<py::tuple>();
    st.acts.push_back({item.first.cast<std::string>(), t[0].cast<double>(), t[1].cast<double>()});
  }
  st.impl_module = impl_module;
  st.ext_module = ext_module;
  st.fwd_ad_module = fwd_ad;
  st.ready = true;
}

py::object eager_dense(py::handle input, py::handle weight, py::handle bias, py::handle act, py::handle alpha,
                       py::handle gain, py::handle clamp) {
  State& st = state();
  if (!st.ready || !THPVariable_CheckExact(input.ptr()) || !THPVariable_CheckExact(weight.ptr())) return py::none();
  const bool has_b = !bias.is_none();
  if (has_b && !THPVariable_CheckExact(bias.ptr())) return py::none();
  const at::Tensor& x = THPVariable_Unpack(input.ptr());
  if (!x.is_cpu() || !plain_eager_state()) return py::none();
  py::object level = st.fwd_ad_module.attr(st.level);
  int overflow = 0;
  if (!PyLong_CheckExact(level.ptr()) || PyLong_AsLongAndOverflow(level.ptr(), &overflow) >= 0 || overflow != 0) {
    PyErr_Clear();
    return py::none();
  }
  if (!native_selected(st)) return py::none();
  const ActDefault* spec;
  double a, g, c;
  if (!resolve(st, act.ptr(), alpha.ptr(), gain.ptr(), clamp.ptr(), &spec, &a, &g, &c)) return py::none();
  c10::optional<at::Tensor> b;
  if (has_b) b = THPVariable_Unpack(bias.ptr());
  const std::string name = spec->name;  // (the table may be replaced while the GIL is released)
  at::Tensor y;
  {
    py::gil_scoped_release no_gil;  // as torch's own bindings: other Python threads run during the op
    y = autograd_dense(x, THPVariable_Unpack(weight.ptr()), b, name, a, g, c, false);
  }
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(std::move(y)));
}

}  // namespace fastgan
