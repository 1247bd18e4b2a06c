// bias_act op: argument checks, the CPU kernels (C++ loops over ATen tensors) and the dispatch of the
// CUDA / emulated kernels. The epilogue helpers here are shared by dense and conv2d.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../kernels/activation.cuh"
#include "glue.h"
#include "ops.h"

namespace fastgan {
namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per parallel task

template <typename scalar_t, typename A>
void fwd_cpu(const scalar_t* x, const scalar_t* b, scalar_t* y, int64_t outer, int64_t C, int64_t inner,
             double alpha_, double gain_, double clamp_) {
  using M = at::opmath_type<scalar_t>;
  const M alpha = alpha_, gain = gain_, clamp = clamp_;
  if (inner == 1) {  // channels are the fastest dimension (dense layers, channels_last): vectorise over C
    at::parallel_for(0, outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1)), [=](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) {
        const scalar_t* xr = x + o * C;
        scalar_t* yr = y + o * C;
        if (b)
          for (int64_t c = 0; c < C; ++c) yr[c] = act_forward<A, M>(M(xr[c]) + M(b[c]), alpha, gain, clamp);
        else
          for (int64_t c = 0; c < C; ++c) yr[c] = act_forward<A, M>(M(xr[c]), alpha, gain, clamp);
      }
    });
    return;
  }
  const int64_t rows = outer * C;  // each row: `inner` elements of one channel
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / inner), [=](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const M bb = b ? M(b[r % C]) : M(0);
      const scalar_t* xr = x + r * inner;
      scalar_t* yr = y + r * inner;
      for (int64_t i = 0; i < inner; ++i) yr[i] = act_forward<A, M>(M(xr[i]) + bb, alpha, gain, clamp);
    }
  });
}

template <typename scalar_t, typename A>
void bwd_cpu(const scalar_t* dy, const scalar_t* y, scalar_t* dz, scalar_t* db, int64_t outer, int64_t C,
             int64_t inner, double alpha_, double gain_, double clamp_) {
  using M = at::opmath_type<scalar_t>;
  const M alpha = alpha_, gain = gain_, clamp = clamp_;
  const int64_t numel = outer * C * inner;
  if (db == nullptr) {
    at::parallel_for(0, numel, kGrain, [=](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) dz[i] = act_backward<A, M>(M(dy[i]), M(y[i]), alpha, gain, clamp);
    });
    return;
  }
  // dz and db in one pass. Each task owns a block of channels and sums them in a fixed order, so db does
  // not depend on the number of threads.
  const int64_t cblock = inner == 1 ? 64 : 1;
  const int64_t nblocks = (C + cblock - 1) / cblock;
  const int64_t per_block = std::max<int64_t>(1, outer * inner * cblock);
  at::parallel_for(0, nblocks, std::max<int64_t>(1, kGrain / per_block), [=](int64_t k0, int64_t k1) {
    M acc[64];
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t c0 = k * cblock, c1 = std::min(C, c0 + cblock);
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] = M(0);
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t base = (o * C + c) * inner;
          // kLanes independent partial sums: the loop vectorises, and the order is fixed (deterministic).
          constexpr int kLanes = 16;
          M part[kLanes] = {};
          int64_t i = 0;
          for (; i + kLanes <= inner; i += kLanes) {
            for (int l = 0; l < kLanes; ++l) {
              const M g = act_backward<A, M>(M(dy[base + i + l]), M(y[base + i + l]), alpha, gain, clamp);
              dz[base + i + l] = g;
              part[l] += g;
            }
          }
          for (; i < inner; ++i) {
            const M g = act_backward<A, M>(M(dy[base + i]), M(y[base + i]), alpha, gain, clamp);
            dz[base + i] = g;
            part[0] += g;
          }
          M s = M(0);
          for (int l = 0; l < kLanes; ++l) s += part[l];
          acc[c - c0] += s;
        }
      }
      for (int64_t c = c0; c < c1; ++c) db[c] = acc[c - c0];
    }
  });
}

template <typename Fn>
void dispatch_act_or_throw(int act, Fn&& fn) {
  TORCH_CHECK(dispatch_act(act, fn), "fastgan: unknown activation code ", act);
}

}  // namespace

void bias_act_into(const Exec& ex, const at::Tensor& x, const c10::optional<at::Tensor>& b, const at::Tensor& y,
                   int64_t dim, int act, double alpha, double gain, double clamp) {
  const bool has_b = b.has_value() && b->defined();
  int64_t C, inner;
  channel_layout(y, dim, has_b, &C, &inner);
  const int64_t numel = y.numel();
  if (numel == 0) return;
  at::Tensor bc = has_b ? b->contiguous() : at::Tensor();
  if (ex.backend == Backend::CPU) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "bias_act", [&] {
      dispatch_act_or_throw(act, [&](auto a) {
        fwd_cpu<scalar_t, decltype(a)>(x.const_data_ptr<scalar_t>(), has_b ? bc.const_data_ptr<scalar_t>() : nullptr,
                                       y.mutable_data_ptr<scalar_t>(), numel / (C * inner), C, inner, alpha, gain,
                                       clamp);
      });
    });
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
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "bias_act_backward", [&] {
      dispatch_act_or_throw(act, [&](auto a) {
        bwd_cpu<scalar_t, decltype(a)>(dy.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
                                       dz.mutable_data_ptr<scalar_t>(), has_db ? db.mutable_data_ptr<scalar_t>() : nullptr,
                                       numel / (C * inner), C, inner, alpha, gain, clamp);
      });
    });
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
  ex.kernels->bias_act_bwd(p, ex.stream);
}

static int64_t check_dim(const at::Tensor& x, int64_t dim, const char* op) {
  if (x.dim() == 0) return 0;
  TORCH_CHECK_INDEX(dim >= -x.dim() && dim < x.dim(), op, ": dim: expected an int in [", -x.dim(), ", ", x.dim() - 1,
                    "] for a ", x.dim(), "-D input, got ", dim);
  return dim < 0 ? dim + x.dim() : dim;
}

at::Tensor bias_act(bool emu, const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim,
                    c10::string_view act, double alpha, double gain, double clamp) {
  const char* op = "fastgan::bias_act";
  check_float(x, op, "x");
  const int a = act_code(act, op);
  check_act_args(op, alpha, gain, clamp);
  dim = check_dim(x, dim, op);
  const bool has_b = b.has_value() && b->defined();
  if (has_b) {
    check_same(*b, x, op, "b", "x");
    TORCH_CHECK(x.dim() > 0, op, ": x: a bias needs at least a 1-D input");
    TORCH_CHECK_VALUE(b->dim() == 1 && b->size(0) == x.size(dim), op, ": b: expected a 1-D tensor of length ",
                      x.size(dim), " (x.shape[", dim, "]), got shape ", b->sizes());
  }
  const Exec ex = exec_for(x, emu, op);
  c10::OptionalDeviceGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  at::Tensor xd = with_strides_of(x, y);
  poisoned(y);
  bias_act_into(ex, xd, b, y, dim, a, alpha, gain, clamp);
  return y;
}

std::tuple<at::Tensor, at::Tensor> bias_act_backward(bool emu, const at::Tensor& dy, const at::Tensor& y,
                                                     bool bias_grad, int64_t dim, c10::string_view act, double alpha,
                                                     double gain, double clamp) {
  const char* op = "fastgan::bias_act_backward";
  check_float(y, op, "y");
  check_same(dy, y, op, "dy", "y");
  TORCH_CHECK_VALUE(dy.sizes() == y.sizes(), op, ": dy: expected shape ", y.sizes(), " like y, got ", dy.sizes());
  const int a = act_code(act, op);
  check_act_args(op, alpha, gain, clamp);
  dim = check_dim(y, dim, op);
  const Exec ex = exec_for(y, emu, op);
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
