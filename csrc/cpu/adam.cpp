// C++ CPU kernel of the Adam op: the element formulas of csrc/kernels/adam_math.cuh (as the CUDA kernel), in memory
// order. Called by the glue (csrc/ops/adam.cpp) for CPU tensors, one tensor at a time.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "../kernels/adam_math.cuh"
#include "cpu.h"

namespace fastgan {

void cpu_adam(const at::Tensor& p, const at::Tensor& g, const at::Tensor& m, const at::Tensor& v,
              const at::Tensor& step, double lr, double beta1, double beta2, double eps, double weight_decay,
              const at::Tensor& ema, double ema_beta) {
  float* s = step.mutable_data_ptr<float>();
  const double t = double(*s) + 1.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "fastgan::adam_", [&] {
    using M = at::opmath_type<scalar_t>;
    scalar_t* pp = p.mutable_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* mp = m.mutable_data_ptr<scalar_t>();
    scalar_t* vp = v.mutable_data_ptr<scalar_t>();
    scalar_t* ep = ema.defined() ? ema.mutable_data_ptr<scalar_t>() : nullptr;
    const AdamConsts<M> c = adam_consts<M>(t, lr, beta1, beta2, eps, weight_decay, ema_beta);
    at::parallel_for(0, p.numel(), 1 << 14, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        M me = M(mp[i]), ve = M(vp[i]);
        pp[i] = scalar_t(adam_element(c, M(pp[i]), M(gp[i]), me, ve));
        mp[i] = scalar_t(me);
        vp[i] = scalar_t(ve);
        if (ep != nullptr) ep[i] = scalar_t(ema_lerp(M(ep[i]), M(pp[i]), c.ema_w));
      }
    });
  });
  *s = float(t);
}

}  // namespace fastgan
