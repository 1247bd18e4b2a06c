// C++ CPU kernel of the Adam op: the element formula of csrc/kernels/adam.cu, in memory order. Called by the glue
// (csrc/ops/adam.cpp) for CPU tensors, one tensor at a time.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "cpu.h"

namespace fastgan {

void cpu_adam(const at::Tensor& p, const at::Tensor& g, const at::Tensor& m, const at::Tensor& v,
              const at::Tensor& step, double lr, double beta1, double beta2, double eps, double weight_decay) {
  float* s = step.mutable_data_ptr<float>();
  const double t = double(*s) + 1.0;
  const double bc1 = 1.0 - std::pow(beta1, t), bc2 = 1.0 - std::pow(beta2, t);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "fastgan::adam_", [&] {
    using M = at::opmath_type<scalar_t>;
    scalar_t* pp = p.mutable_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* mp = m.mutable_data_ptr<scalar_t>();
    scalar_t* vp = v.mutable_data_ptr<scalar_t>();
    const M step_size = M(lr / bc1), bc2_sqrt = M(std::sqrt(bc2)), e = M(eps), wd = M(weight_decay);
    const M b1 = M(beta1), b2 = M(beta2), c1 = M(1.0 - beta1), c2 = M(1.0 - beta2);
    at::parallel_for(0, p.numel(), 1 << 14, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const M pe = M(pp[i]);
        const M ge = weight_decay != 0 ? M(gp[i]) + wd * pe : M(gp[i]);
        const M me = b1 * M(mp[i]) + c1 * ge;
        const M ve = b2 * M(vp[i]) + c2 * ge * ge;
        mp[i] = scalar_t(me);
        vp[i] = scalar_t(ve);
        pp[i] = scalar_t(pe - step_size * me / (std::sqrt(ve) / bc2_sqrt + e));
      }
    });
  });
  *s = float(t);
}

}  // namespace fastgan
