// Shared glue between ATen and the kernel layer: backend choice, dtype mapping, argument checks with
// messages that name the argument, current-stream lookup.
#pragma once

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/core/DeviceGuard.h>

#include <string>

#include "../kernels/activation.cuh"
#include "../kernels/launchers.h"

namespace fastgan {

// Where an op runs. CPU: C++ loops + ATen GEMM/conv. CUDA: the CUDA kernels on the current stream.
// EMU: the CUDA kernels executed on CPU tensors by the emulator -- the same glue, another KernelTable.
enum class Backend { CPU, CUDA, EMU };

struct Exec {
  Backend backend;
  const KernelTable* kernels;  // nullptr for CPU
  void* stream;                // cudaStream_t for CUDA, nullptr otherwise
};

// Scope guard every op entry point opens first: the ATen calls inside an op (views, reshapes, empty, mm_out,
// mul_out, ...) dispatch straight to their kernels, as the calls inside a generated autograd kernel do. Without
// it each of them also passes the Autograd and ADInplaceOrView layers -- the saved inputs require grad, so every
// view records view metadata and every out= call bumps version counters -- ~0.5-2 us per call, which was most of
// the fixed cost of a small layer's backward. Outputs are fresh tensors (never views of an input), so nothing
// autograd needs is skipped; the autograd of the ops themselves is the dispatcher's / csrc/autograd.cpp's.
using BelowAutograd = at::AutoDispatchBelowADInplaceOrView;

// Where an op on `t` runs: the device decides (CPU or CUDA); CPU tensors go to the emulated CUDA kernels while the
// backend override says "emu". The one place where that choice is made.
Exec exec_for(const at::Tensor& t, const char* op);

// The backend override for CPU tensors: "native" (the C++ CPU kernels, default) or "emu" (the CUDA kernel sources
// under CPU emulation; an error in a build without the emulation). Process-wide, as fastgan.use_impl, which sets it.
void set_cpu_backend(const std::string& name);
std::string cpu_backend();
// Programmatic dependent launch of the CUDA kernels (fastgan.cuda_pdl; FASTGAN_CUDA_PDL=0|1 the initial value, off
// by default): csrc/kernels/common.cuh. Process-wide.
void set_cuda_pdl(bool on);
bool cuda_pdl();
int64_t cuda_pdl_launches();  // CUDA launches made with programmatic dependent launch so far

DType to_dtype(const at::Tensor& t, const char* op, const char* arg);

// Checks shared by every op; each message names the op and the argument.
void check_float(const at::Tensor& t, const char* op, const char* arg);
void check_same(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* arg, const char* ref_arg);
int act_code(c10::string_view act, const char* op);
// Checks alpha, gain and clamp; returns the clamp as an output of `dtype` stores it, the value the kernels compare
// with. Half types round it (bfloat16(0.7) = 0.69921875) and a clamped output holds the rounded value, so the
// backward's test |y| >= clamp needs it: with 0.7 every clamped bfloat16 output would pass its gradient. The
// forward's outputs are the same with either value.
double checked_clamp(const char* op, double alpha, double gain, double clamp, at::ScalarType dtype);
// Whether act(z) * gain, clamped (clamp < 0: none), is z itself: nothing for a pass to apply, no y for a gradient
// (fastgan/_activations.py's is_identity).
inline bool is_identity(int code, double gain, double clamp) {
  return code == static_cast<int>(Act::linear) && gain == 1.0 && clamp < 0;
}
// The optional bias b: same device/dtype as x, 1-D of length n (`what` names where n comes from). True if given.
bool check_bias(const c10::optional<at::Tensor>& b, const at::Tensor& x, int64_t n, const char* op,
                const std::string& what);

// The saved output y of a backward op's layer (dense_backward, conv2d_backward): checked against dy (dtype, device,
// shape); undefined when the activation's gradient needs no y (linear, gain 1, no clamp: dz = dy). An error when
// the activation needs y and none was given.
at::Tensor layer_output(const c10::optional<at::Tensor>& y, const at::Tensor& dy, c10::string_view act, int code,
                        double gain, double clamp, const char* op);

// The dact_y argument of dense / conv2d (out = act_backward(product, dact_y): the double backward's product with dz's
// adjoint in its epilogue), checked against x (dtype, device) and the output's sizes; no bias allowed with it.
// Undefined when not given.
at::Tensor dact_output(const c10::optional<at::Tensor>& dact_y, const at::Tensor& x, at::IntArrayRef out_sizes,
                       bool has_b, const char* op);
// The fallback of a dact_y call whose product came from ATen: act_backward(product, dact_y) as a new tensor.
at::Tensor dact_apply(const Exec& ex, const at::Tensor& product, const at::Tensor& dact_y, int act, double alpha,
                      double gain, double clamp);

// `t` itself if its strides equal `like`'s, else a copy with `like`'s strides (kernels walk memory order).
at::Tensor with_strides_of(const at::Tensor& t, const at::Tensor& like);

// Bias-activation epilogue over a dense tensor, in place allowed (y may be x). Used by bias_act, dense, conv2d.
void bias_act_into(const Exec& ex, const at::Tensor& x, const c10::optional<at::Tensor>& b, const at::Tensor& y,
                   int64_t dim, int act, double alpha, double gain, double clamp);
// dz (and db when defined) from dy and the saved output y (both dense with identical strides).
void bias_act_backward_into(const Exec& ex, const at::Tensor& dy, const at::Tensor& y, const at::Tensor& dz,
                            const at::Tensor& db, int64_t dim, int act, double alpha, double gain, double clamp);

// Channel count C and inner size of `dim` in the memory order of a dense tensor.
void channel_layout(const at::Tensor& t, int64_t dim, bool has_bias, int64_t* C, int64_t* inner);

// Debug aid used by the tests: fill freshly allocated outputs with NaN so an unwritten element shows up.
// Zeroed int32 slots (kCounterSlots) for kernels that reduce across blocks in one launch (launchers.h); `per_call`
// holds the buffer when one is made for this call (CUDA-graph capture). After a kernel call that threw:
// counters_after_failure (an emulated kernel may have stopped with slots set).
int* zeroed_counters(const Exec& ex, const at::Tensor& like, at::Tensor& per_call);
void counters_after_failure(const Exec& ex, const at::Tensor& like, int* counters);

// Calls launch(counters) with zeroed counter slots when `needed` (nullptr otherwise), re-zeroing them if it throws.
template <typename F>
void with_counters(const Exec& ex, const at::Tensor& like, bool needed, F&& launch) {
  at::Tensor per_call;
  int* counters = needed ? zeroed_counters(ex, like, per_call) : nullptr;
  try {
    launch(counters);
  } catch (...) {
    counters_after_failure(ex, like, counters);
    throw;
  }
}

void set_poison(bool on);
bool poison_enabled();
const at::Tensor& poisoned(const at::Tensor& t);  // fills t when poisoning is on; returns t

void* current_cuda_stream(const at::Tensor& t);  // defined in cuda_stream.cpp (CUDA builds) or below (stub)

}  // namespace fastgan
