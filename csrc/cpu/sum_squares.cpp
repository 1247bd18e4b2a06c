// C++ CPU kernels of the sum-of-squares op (a gradient penalty's squared norm): the sum in fixed-size chunks added
// in order, so the result does not depend on the thread count, and its gradient. Called by the glue
// (csrc/ops/sum_squares.cpp) for CPU tensors.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "cpu.h"
#include "cpu_math.h"

namespace fastgan {

void cpu_sum_squares(const at::Tensor& x, double scale, const at::Tensor& out) {
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sum_squares", [&] {
    using M = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const M s = fixed_order_sum<M>(n, [&](int64_t i) { return M(xp[i]) * M(xp[i]); });
    out.mutable_data_ptr<scalar_t>()[0] = static_cast<scalar_t>(M(scale) * s);
  });
}

void cpu_sum_squares_backward(const at::Tensor& g, const at::Tensor& x, double scale, const at::Tensor& dx) {
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sum_squares_backward", [&] {
    using M = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* o = dx.mutable_data_ptr<scalar_t>();
    const M s = M(2) * M(scale) * M(g.const_data_ptr<scalar_t>()[0]);
    at::parallel_for(0, n, 1 << 14, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) o[i] = static_cast<scalar_t>(s * M(xp[i]));
    });
  });
}

}  // namespace fastgan
