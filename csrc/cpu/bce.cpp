// C++ CPU kernels of the sigmoid + binary cross-entropy op: the loss (per element or reduced in a fixed order, so
// the result does not depend on the thread count) and its gradient, from the shared element formulas of
// csrc/kernels/bce_math.cuh. Called by the glue (csrc/ops/bce.cpp) for CPU tensors.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "../kernels/bce_math.cuh"
#include "cpu.h"
#include "cpu_math.h"

namespace fastgan {
namespace {

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
CpuElem<scalar_t> cpu_elem(const BceCpuArgs& a) {
  auto ptr = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr; };
  return CpuElem<scalar_t>{ptr(a.logits), ptr(a.target), ptr(a.weight), ptr(a.pos_weight),
                           static_cast<at::opmath_type<scalar_t>>(a.label)};
}

}  // namespace

void cpu_sigmoid_bce(const BceCpuArgs& a, const at::Tensor& out) {
  const int64_t n = a.logits.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.logits.scalar_type(), "sigmoid_bce", [&] {
    using M = at::opmath_type<scalar_t>;
    const auto e = cpu_elem<scalar_t>(a);
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    if (a.reduction == 0) {
      at::parallel_for(0, n, 1 << 14, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) o[i] = e.loss(i);
      });
      return;
    }
    const M s = fixed_order_sum<M>(n, [&](int64_t i) { return e.loss(i); });
    o[0] = a.reduction == 1 ? s / M(n) : s;
  });
}

void cpu_sigmoid_bce_backward(const BceCpuArgs& a, const at::Tensor& g, const at::Tensor& dl) {
  const int64_t n = a.logits.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.logits.scalar_type(), "sigmoid_bce_backward", [&] {
    using M = at::opmath_type<scalar_t>;
    const auto e = cpu_elem<scalar_t>(a);
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* o = dl.mutable_data_ptr<scalar_t>();
    const M scale = a.reduction == 0 ? M(1) : M(gp[0]) / (a.reduction == 1 ? M(n) : M(1));
    at::parallel_for(0, n, 1 << 14, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) o[i] = (a.reduction == 0 ? M(gp[i]) : scale) * e.dloss(i);
    });
  });
}

}  // namespace fastgan
