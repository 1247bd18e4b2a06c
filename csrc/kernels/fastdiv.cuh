// Integer division by a run-time constant without a divide instruction: n / d for 0 <= n < 2^31 with one
// multiply-high, an add and a shift (Granlund-Montgomery round-up method, as in PyTorch's IntDivider).
#pragma once

#include "common.cuh"

namespace fastgan {
namespace FG_NS {

struct FastDiv {
  uint32_t d = 1, mul = 1, shift = 0;
  FastDiv() = default;
  explicit FastDiv(int64_t divisor) {
    d = divisor < 1 ? 1u : (divisor > 2147483647 ? 2147483647u : (uint32_t)divisor);
    shift = 0;
    while (shift < 31 && (uint64_t(1) << shift) < d) ++shift;
    mul = (uint32_t)(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return (__umulhi(n, mul) + n) >> shift; }
};

}  // namespace FG_NS
}  // namespace fastgan
