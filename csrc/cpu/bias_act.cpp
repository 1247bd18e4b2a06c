// C++ CPU kernels of bias_act: the fused bias + activation forward and its backward (dz, and the bias gradient
// in the same pass), vectorised per ISA (cpu_math.h). Called by the glue (csrc/ops/bias_act.cpp) for CPU tensors,
// also as the epilogue pass of dense and conv2d.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../kernels/activation.cuh"
#include "cpu.h"
#include "cpu_math.h"

namespace fastgan {
namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per parallel task

// The CPU loops' view of an activation: the shared functor, except that the sigmoid and tanh forwards use the
// vectorisable fg_cpu_exp (cpu_math.h) -- with a libm call per element the loops would stay scalar (~10x slower
// than ATen's).
template <typename A>
struct CpuAct : A {};
template <>
struct CpuAct<ActSigmoid> : ActSigmoid {
  template <typename T>
  static T f(T x, T) {
    const T e = fg_cpu_exp_nonpos(-std::fabs(x));  // exp(-|x|) in [0, 1]: stable for any x
    const T r = T(1) / (T(1) + e);
    return x < T(0) ? e * r : r;
  }
};
template <>
struct CpuAct<ActTanh> : ActTanh {
  // float: both branches computed and one selected (branch-free, so the loop vectorises). |x| < 0.625: an odd
  // polynomial (the Cephes tanhf minimax coefficients; no cancellation near 0); otherwise (1 - e) / (1 + e) with
  // e = exp(-2|x|) <= 0.29 and the sign restored (e underflows to 0 for large |x|: exactly +-1; NaN stays NaN).
  template <typename T>
  static T f(T x, T) {
    if constexpr (std::is_same_v<T, float>) {
      const float ax = x < 0.0f ? -x : x;
      const float z = x * x;
      float p = -5.70498872745e-3f;
      p = p * z + 2.06390887954e-2f;
      p = p * z - 5.37397155531e-2f;
      p = p * z + 1.33314422036e-1f;
      p = p * z - 3.33332819422e-1f;
      const float small = x * (1.0f + p * z);  // (keeps the sign of -0)
      const float e = fg_cpu_exp_nonpos(-2.0f * ax);
      const float big = (1.0f - e) / (1.0f + e);
      const float sbig = x < 0.0f ? -big : big;
      return ax < 0.625f ? small : sbig;
    } else {
      return std::tanh(x);
    }
  }
};

// The per-element formulas of the loops. CL = false (no clamp: the common case, decided once per call) makes
// the clamp a constant -1, so its comparisons fold away instead of running as masked vector ops.
template <typename A, bool CL, typename M>
FG_INLINE M cpu_fwd(M z, M alpha, M gain, M clamp) {
  return act_forward<A, M>(z, alpha, gain, CL ? clamp : M(-1));
}
template <typename A, bool CL, typename M>
FG_INLINE M cpu_bwd(M dy, M y, M alpha, M gain, M clamp) {
  return act_backward<A, M>(dy, y, alpha, gain, CL ? clamp : M(-1));
}

// Hot loops, each compiled per ISA (FG_CPU_CLONES). In-place epilogues (y == x: dense and conv2d) pass one
// pointer: with two that may alias, the vectoriser's run-time overlap check fails for y == x and the scalar
// fallback runs.
template <typename scalar_t, typename A, bool CL, typename M>
FG_CPU_CLONES void fwd_rows(const scalar_t* x, const scalar_t* b, scalar_t* y, int64_t r0, int64_t r1, int64_t C,
                            int64_t inner, M alpha, M gain, M clamp) {
  for (int64_t r = r0; r < r1; ++r) {
    const M bb = b ? M(b[r % C]) : M(0);
    scalar_t* __restrict__ yr = y + r * inner;
    if (x == y) {
      for (int64_t i = 0; i < inner; ++i) yr[i] = cpu_fwd<A, CL, M>(M(yr[i]) + bb, alpha, gain, clamp);
    } else {
      const scalar_t* __restrict__ xr = x + r * inner;
      for (int64_t i = 0; i < inner; ++i) yr[i] = cpu_fwd<A, CL, M>(M(xr[i]) + bb, alpha, gain, clamp);
    }
  }
}

// Channels fastest (dense layers, channels_last): rows [o0, o1) of C channels.
template <typename scalar_t, typename A, bool CL, typename M>
FG_CPU_CLONES void fwd_channels_last(const scalar_t* x, const scalar_t* b, scalar_t* y, int64_t o0, int64_t o1,
                                     int64_t C, M alpha, M gain, M clamp) {
  const scalar_t* __restrict__ bp = b;
  for (int64_t o = o0; o < o1; ++o) {
    scalar_t* __restrict__ yr = y + o * C;
    if (x == y) {
      if (bp)
        for (int64_t c = 0; c < C; ++c) yr[c] = cpu_fwd<A, CL, M>(M(yr[c]) + M(bp[c]), alpha, gain, clamp);
      else
        for (int64_t c = 0; c < C; ++c) yr[c] = cpu_fwd<A, CL, M>(M(yr[c]), alpha, gain, clamp);
    } else {
      const scalar_t* __restrict__ xr = x + o * C;
      if (bp)
        for (int64_t c = 0; c < C; ++c) yr[c] = cpu_fwd<A, CL, M>(M(xr[c]) + M(bp[c]), alpha, gain, clamp);
      else
        for (int64_t c = 0; c < C; ++c) yr[c] = cpu_fwd<A, CL, M>(M(xr[c]), alpha, gain, clamp);
    }
  }
}

template <typename scalar_t, typename A, bool CL, typename M>
FG_CPU_CLONES void bwd_range(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ y,
                             scalar_t* __restrict__ dz, int64_t i0, int64_t i1, M alpha, M gain, M clamp) {
  for (int64_t i = i0; i < i1; ++i) dz[i] = cpu_bwd<A, CL, M>(M(dy[i]), M(y[i]), alpha, gain, clamp);
}

// dz for rows [o0, o1) of C channel runs of `inner` elements (NCHW-like), in memory order, and each run's sum
// added into sums[c] (zeroed by the caller). kLanes independent partial sums per run: the loop vectorises without
// reassociating (no -ffast-math), and the order is fixed (lanes of a run in order, runs in row order).
template <typename scalar_t, typename A, bool CL, typename M>
FG_CPU_CLONES void bwd_db_rows(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ y,
                               scalar_t* __restrict__ dz, M* __restrict__ sums, int64_t o0, int64_t o1, int64_t C,
                               int64_t inner, M alpha, M gain, M clamp) {
  constexpr int kLanes = 16;
  for (int64_t o = o0; o < o1; ++o)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t base = (o * C + c) * inner;
      M part[kLanes] = {};
      int64_t i = 0;
      for (; i + kLanes <= inner; i += kLanes)
        for (int l = 0; l < kLanes; ++l) {
          const M g = cpu_bwd<A, CL, M>(M(dy[base + i + l]), M(y[base + i + l]), alpha, gain, clamp);
          dz[base + i + l] = g;
          part[l] += g;
        }
      for (int l = 0; i < inner; ++i, ++l) {
        const M g = cpu_bwd<A, CL, M>(M(dy[base + i]), M(y[base + i]), alpha, gain, clamp);
        dz[base + i] = g;
        part[l] += g;
      }
      M r = M(0);
      for (int l = 0; l < kLanes; ++l) r += part[l];
      sums[c] += r;
    }
}

// Columns fastest (channels of dense layers / channels_last, or the elements of a small plane): dz for rows
// [o0, o1) of W columns, and each column's sum added into sums[0, W) (zeroed by the caller). One long vectorised
// loop per row; the sums stay in cache (W is at most a plane or the channel count).
template <typename scalar_t, typename A, bool CL, typename M>
FG_CPU_CLONES void bwd_db_columns(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ y,
                                  scalar_t* __restrict__ dz, M* __restrict__ sums, int64_t o0, int64_t o1, int64_t W,
                                  M alpha, M gain, M clamp) {
  for (int64_t o = o0; o < o1; ++o) {
    const int64_t base = o * W;
    for (int64_t j = 0; j < W; ++j) {
      const M g = cpu_bwd<A, CL, M>(M(dy[base + j]), M(y[base + j]), alpha, gain, clamp);
      dz[base + j] = g;
      sums[j] += g;
    }
  }
}

// Planes: with the channel dim not the fastest (NCHW), a row of one channel has only `inner` = H*W elements (49 for
// a 7x7 map): per-row loop overhead and remainders cost more than the arithmetic. When one outer index's block of
// C*inner elements (a "plane") is small, the loops run over whole planes instead, against the bias expanded to a
// plane (forward) or accumulating a plane of partial sums (bias gradient): long, fully vectorised loops.
constexpr int64_t kPlaneMax = 1 << 15;
constexpr int64_t kShortRow = 128;  // rows of at least this many elements vectorise well on their own

template <typename scalar_t, typename A, bool CL>
void fwd_cpu_impl(const scalar_t* x, const scalar_t* b, scalar_t* y, int64_t outer, int64_t C, int64_t inner,
                  double alpha_, double gain_, double clamp_) {
  using M = at::opmath_type<scalar_t>;
  using F = CpuAct<A>;
  const M alpha = alpha_, gain = gain_, clamp = clamp_;
  std::vector<scalar_t> bplane;
  if (inner > 1 && (b == nullptr || (inner < kShortRow && C * inner <= kPlaneMax))) {  // no bias: any plane
    if (b) {
      bplane.resize(static_cast<size_t>(C * inner));
      for (int64_t c = 0; c < C; ++c) std::fill_n(bplane.begin() + c * inner, inner, b[c]);
      b = bplane.data();
    }
    C *= inner;
    inner = 1;
  }
  if (inner == 1) {  // channels (or planes) are the fastest dimension: vectorise along them
    at::parallel_for(0, outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1)), [=](int64_t o0, int64_t o1) {
      fwd_channels_last<scalar_t, F, CL, M>(x, b, y, o0, o1, C, alpha, gain, clamp);
    });
    return;
  }
  const int64_t rows = outer * C;  // each row: `inner` elements of one channel
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / inner), [=](int64_t r0, int64_t r1) {
    fwd_rows<scalar_t, F, CL, M>(x, b, y, r0, r1, C, inner, alpha, gain, clamp);
  });
}

template <typename scalar_t, typename A>
void fwd_cpu(const scalar_t* x, const scalar_t* b, scalar_t* y, int64_t outer, int64_t C, int64_t inner,
             double alpha, double gain, double clamp) {
  if (clamp >= 0)
    fwd_cpu_impl<scalar_t, A, true>(x, b, y, outer, C, inner, alpha, gain, clamp);
  else
    fwd_cpu_impl<scalar_t, A, false>(x, b, y, outer, C, inner, alpha, gain, clamp);
}

template <typename scalar_t, typename A, bool CL>
void bwd_cpu_impl(const scalar_t* dy, const scalar_t* y, scalar_t* dz, scalar_t* db, int64_t outer, int64_t C,
                  int64_t inner, double alpha_, double gain_, double clamp_) {
  using M = at::opmath_type<scalar_t>;
  const M alpha = alpha_, gain = gain_, clamp = clamp_;
  const int64_t numel = outer * C * inner;
  if (db == nullptr) {
    at::parallel_for(0, numel, kGrain, [=](int64_t i0, int64_t i1) {
      bwd_range<scalar_t, A, CL, M>(dy, y, dz, i0, i1, alpha, gain, clamp);
    });
    return;
  }
  // dz and db in one pass. Tasks are row splits; each writes the partial sums of its rows, and the partials are
  // added in a fixed order. The split count depends on the sizes only, so db has the same bits for any number of
  // threads. Columns mode (channels fastest, or a small plane when rows of one channel are short): per-column
  // sums over whole rows, each channel's `inner` columns added at the end; otherwise one sum per channel run
  // (bwd_db_rows). Both walk memory in order.
  const bool columns = inner == 1 || (inner < kShortRow && C * inner <= kPlaneMax);
  const int64_t W = columns ? C * inner : C;  // partial sums per split
  // ~2^18 elements per split: parallelism for big tensors, few partials to add up for small ones
  const int64_t splits = std::max<int64_t>(1, std::min<int64_t>({outer, 64, numel >> 18}));
  const int64_t rows_per_split = (outer + splits - 1) / splits;
  std::vector<M> partial(static_cast<size_t>(splits * W), M(0));
  M* part = partial.data();
  at::parallel_for(0, splits, 1, [=](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t o0 = s * rows_per_split, o1 = std::min(outer, o0 + rows_per_split);
      if (columns)
        bwd_db_columns<scalar_t, A, CL, M>(dy, y, dz, part + s * W, o0, o1, W, alpha, gain, clamp);
      else
        bwd_db_rows<scalar_t, A, CL, M>(dy, y, dz, part + s * W, o0, o1, C, inner, alpha, gain, clamp);
    }
  });
  const int64_t per_c = columns ? inner : 1;
  for (int64_t c = 0; c < C; ++c) {
    M acc = M(0);
    for (int64_t s = 0; s < splits; ++s)
      for (int64_t j = 0; j < per_c; ++j) acc += part[s * W + c * per_c + j];
    db[c] = acc;
  }
}

template <typename scalar_t, typename A>
void bwd_cpu(const scalar_t* dy, const scalar_t* y, scalar_t* dz, scalar_t* db, int64_t outer, int64_t C,
             int64_t inner, double alpha, double gain, double clamp) {
  if (clamp >= 0)
    bwd_cpu_impl<scalar_t, A, true>(dy, y, dz, db, outer, C, inner, alpha, gain, clamp);
  else
    bwd_cpu_impl<scalar_t, A, false>(dy, y, dz, db, outer, C, inner, alpha, gain, clamp);
}

template <typename Fn>
void dispatch_act_or_throw(int act, Fn&& fn) {
  TORCH_CHECK(dispatch_act(act, fn), "fastgan: unknown activation code ", act);
}

}  // namespace

void cpu_bias_act(const at::Tensor& x, const at::Tensor& b, const at::Tensor& y, int64_t C, int64_t inner, int act,
                  double alpha, double gain, double clamp) {
  const bool has_b = b.defined();
  const int64_t numel = y.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "bias_act", [&] {
    dispatch_act_or_throw(act, [&](auto a) {
      fwd_cpu<scalar_t, decltype(a)>(x.const_data_ptr<scalar_t>(), has_b ? b.const_data_ptr<scalar_t>() : nullptr,
                                     y.mutable_data_ptr<scalar_t>(), numel / (C * inner), C, inner, alpha, gain,
                                     clamp);
    });
  });
}

void cpu_bias_act_backward(const at::Tensor& dy, const at::Tensor& y, const at::Tensor& dz, const at::Tensor& db,
                           int64_t C, int64_t inner, int act, double alpha, double gain, double clamp) {
  const bool has_db = db.defined();
  const int64_t numel = y.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "bias_act_backward", [&] {
    dispatch_act_or_throw(act, [&](auto a) {
      bwd_cpu<scalar_t, decltype(a)>(dy.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
                                     dz.mutable_data_ptr<scalar_t>(), has_db ? db.mutable_data_ptr<scalar_t>() : nullptr,
                                     numel / (C * inner), C, inner, alpha, gain, clamp);
    });
  });
}

}  // namespace fastgan
