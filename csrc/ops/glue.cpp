#include "glue.h"

#include "../kernels/activation.cuh"

#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <atomic>
#include <limits>
#include <map>
#include <mutex>
#include <tuple>

#include <cmath>
#include <stdexcept>

namespace fastgan {

static std::atomic<bool> g_emulate{false};

void set_cpu_backend(const std::string& name) {
  TORCH_CHECK_VALUE(name == "native" || name == "emu", "set_cpu_backend: expected 'native' or 'emu', got '", name,
                    "'");
#ifndef FASTGAN_WITH_EMU
  TORCH_CHECK(name == "native", "set_cpu_backend: fastgan._C was built without the CUDA emulation (FASTGAN_EMU=0)");
#endif
  g_emulate = name == "emu";
}

std::string cpu_backend() { return g_emulate ? "emu" : "native"; }

void set_cuda_pdl(bool on) {
#ifdef FASTGAN_WITH_CUDA
  cuda::set_programmatic_launch(on);
#else
  TORCH_CHECK(!on, "cuda_pdl: fastgan._C was built without CUDA kernels");
#endif
}

bool cuda_pdl() {
#ifdef FASTGAN_WITH_CUDA
  try {
    return cuda::programmatic_launch_setting();
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
#endif
  return false;
}

int64_t cuda_pdl_launches() {
#ifdef FASTGAN_WITH_CUDA
  return static_cast<int64_t>(cuda::programmatic_launches());
#else
  return 0;
#endif
}

Exec exec_for(const at::Tensor& t, const char* op) {
  if (t.device().is_cpu()) {
#ifdef FASTGAN_WITH_EMU
    if (g_emulate) return Exec{Backend::EMU, &emu::kernel_table(), nullptr};
#endif
    return Exec{Backend::CPU, nullptr, nullptr};
  }
#ifdef FASTGAN_WITH_CUDA
  if (t.device().is_cuda()) return Exec{Backend::CUDA, &cuda::kernel_table(), current_cuda_stream(t)};
#endif
  TORCH_CHECK(false, op, ": no fastgan kernels for device ", t.device());
}

#if defined(FASTGAN_WITH_CUDA)
bool cuda_stream_capturing(void* stream);  // cuda_stream.cpp
#endif

// One buffer per (device, stream), zeroed once when created: kernels on one stream run in order and each leaves
// its slots zero. While the stream is being captured into a CUDA graph, a fresh zeroed buffer per call instead
// (its zeroing is part of the graph, so a replay on any stream never shares slots with eager work). The
// per-stream buffers live as long as the process (deliberately leaked: no CUDA frees during static destruction).
// Streams are told apart by their handle: a stream destroyed while its kernels still run, whose handle is reused
// at once by a new stream, would share the buffer (torch's pooled streams are never destroyed). The emulation:
// one buffer per host thread (its launches run to completion in that thread, and a failure re-zeroes only its own).
int* zeroed_counters(const Exec& ex, const at::Tensor& like, at::Tensor& per_call) {
  const auto opts = like.options().dtype(at::kInt);
  if (ex.backend == Backend::EMU) {
    thread_local at::Tensor emu_counters;
    if (!emu_counters.defined()) emu_counters = at::zeros({kCounterSlots}, opts);
    return emu_counters.mutable_data_ptr<int>();
  }
#if defined(FASTGAN_WITH_CUDA)
  if (ex.backend == Backend::CUDA && cuda_stream_capturing(ex.stream)) {
    per_call = at::zeros({kCounterSlots}, opts);
    return per_call.mutable_data_ptr<int>();
  }
#endif
  static std::mutex mu;
  static auto* buffers = new std::map<std::tuple<int, int, void*>, at::Tensor>();
  const std::tuple<int, int, void*> key{static_cast<int>(like.device().type()), like.device().index(), ex.stream};
  std::lock_guard<std::mutex> lock(mu);
  auto it = buffers->find(key);
  if (it == buffers->end()) it = buffers->emplace(key, at::zeros({kCounterSlots}, opts)).first;
  return it->second.mutable_data_ptr<int>();
}

void counters_after_failure(const Exec& ex, const at::Tensor& like, int* counters) {
  // An emulated kernel that stopped part-way may leave slots set: zero them before anything else runs. (On a GPU a
  // kernel fault is a sticky error of the whole context instead.)
  if (counters != nullptr && ex.backend == Backend::EMU)
    at::from_blob(counters, {kCounterSlots}, like.options().dtype(at::kInt)).zero_();
}

DType to_dtype(const at::Tensor& t, const char* op, const char* arg) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::f32;
    case at::kDouble: return DType::f64;
    case at::kHalf: return DType::f16;
    case at::kBFloat16: return DType::bf16;
    default: break;
  }
  TORCH_CHECK_TYPE(false, op, ": ", arg, ": expected a floating-point tensor (float32, float64, float16 or bfloat16), got ",
                   t.scalar_type());
}

void check_float(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.defined(), op, ": ", arg, ": expected a tensor, got None");
  to_dtype(t, op, arg);
}

void check_same(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* arg, const char* ref_arg) {
  check_float(t, op, arg);
  TORCH_CHECK(t.device() == ref.device(), op, ": ", arg, ": expected a tensor on ", ref.device(), " like ", ref_arg,
              ", got one on ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, ": ", arg, ": expected dtype ", ref.scalar_type(),
                   " like ", ref_arg, ", got ", t.scalar_type());
}

bool check_bias(const c10::optional<at::Tensor>& b, const at::Tensor& x, int64_t n, const char* op,
                const std::string& what) {
  if (!b.has_value() || !b->defined()) return false;
  check_same(*b, x, op, "b", "x");
  TORCH_CHECK_VALUE(b->dim() == 1 && b->size(0) == n, op, ": b: expected a 1-D tensor of length ", n, " (", what,
                    "), got shape ", b->sizes());
  return true;
}

int act_code(c10::string_view act, const char* op) {
#define FG_ACT_NAME(code, name, F) \
  if (act == #name) return code;
  FG_ACTIVATIONS(FG_ACT_NAME)
#undef FG_ACT_NAME
  std::string names;
#define FG_ACT_LIST(code, name, F) names += std::string(names.empty() ? "" : ", ") + #name;
  FG_ACTIVATIONS(FG_ACT_LIST)
#undef FG_ACT_LIST
  TORCH_CHECK_VALUE(false, op, ": act: unknown activation '", std::string(act), "'; expected one of ", names);
}

double checked_clamp(const char* op, double alpha, double gain, double clamp, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(std::isfinite(alpha) && alpha >= 0, op, ": alpha: expected a finite number >= 0, got ", alpha);
  TORCH_CHECK_VALUE(std::isfinite(gain) && gain > 0, op, ": gain: expected a finite number > 0, got ", gain);
  TORCH_CHECK_VALUE(!std::isnan(clamp) && !std::isinf(clamp), op,
                    ": clamp: expected a finite number (negative = no clamp), got ", clamp);
  if (clamp < 0) return clamp;
  // (the kernels hold the clamp as a float for the half types, and round their float result to the type)
  if (dtype == at::kHalf) return static_cast<float>(c10::Half(static_cast<float>(clamp)));
  if (dtype == at::kBFloat16) return static_cast<float>(c10::BFloat16(static_cast<float>(clamp)));
  return clamp;
}

at::Tensor layer_output(const c10::optional<at::Tensor>& y, const at::Tensor& dy, c10::string_view act, int code,
                        double gain, double clamp, const char* op) {
  const bool identity = is_identity(code, gain, clamp);
  const bool given = y.has_value() && y->defined();
  TORCH_CHECK_VALUE(given || identity, op, ": y: the layer's saved output is required for act='", act, "', gain=",
                    gain, ", clamp=", clamp, " (only a linear layer with gain 1 and no clamp needs none)");
  if (!given || identity) return at::Tensor();
  check_same(*y, dy, op, "y", "dy");
  TORCH_CHECK_VALUE(y->sizes() == dy.sizes(), op, ": y: expected shape ", dy.sizes(), " like dy, got ", y->sizes());
  return *y;
}

at::Tensor dact_output(const c10::optional<at::Tensor>& dact_y, const at::Tensor& x, at::IntArrayRef out_sizes,
                       bool has_b, const char* op) {
  if (!dact_y.has_value() || !dact_y->defined()) return at::Tensor();
  check_same(*dact_y, x, op, "dact_y", "x");
  TORCH_CHECK_VALUE(dact_y->sizes() == out_sizes, op, ": dact_y: expected the output's shape ", out_sizes, ", got ",
                    dact_y->sizes());
  TORCH_CHECK_VALUE(!has_b, op, ": b: must be None with dact_y (the product's gradient has no bias)");
  return *dact_y;
}

at::Tensor dact_apply(const Exec& ex, const at::Tensor& product, const at::Tensor& dact_y, int act, double alpha,
                      double gain, double clamp) {
  at::Tensor dz = at::empty_like(product);
  poisoned(dz);
  bias_act_backward_into(ex, product, with_strides_of(dact_y, product), dz, at::Tensor(), 1, act, alpha, gain, clamp);
  return dz;
}

at::Tensor with_strides_of(const at::Tensor& t, const at::Tensor& like) {
  if (t.strides() == like.strides()) return t;
  at::Tensor out = at::empty_like(like);
  out.copy_(t);
  return out;
}

void channel_layout(const at::Tensor& t, int64_t dim, bool has_bias, int64_t* C, int64_t* inner) {
  const int64_t n = t.numel();
  if (!has_bias || t.dim() == 0 || t.size(dim) <= 1) {
    *C = 1;
    *inner = n > 0 ? n : 1;
    return;
  }
  *C = t.size(dim);
  *inner = t.stride(dim);  // dense tensor: the dims that are faster in memory multiply to stride(dim)
}

static std::atomic<bool> g_poison{false};
void set_poison(bool on) { g_poison = on; }
bool poison_enabled() { return g_poison; }
const at::Tensor& poisoned(const at::Tensor& t) {
  if (g_poison && t.numel() > 0) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

#if !defined(FASTGAN_WITH_CUDA)
void* current_cuda_stream(const at::Tensor&) { return nullptr; }
#endif

}  // namespace fastgan
