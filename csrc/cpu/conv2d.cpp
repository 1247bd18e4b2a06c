// Direct CPU backward data for convolutions with a short reduction over input taps (K = in_channels/groups * kH *
// kW small: the first layer of an image model on 1-8 channels). oneDNN's backward data is slow there on CPU:
// torch 2.14.1 takes ~4 ms for the seed GAN's first layer (dx of 128x1x28x28 from 128x32x14x14, 7.2 M
// multiply-adds), these loops ~0.4 ms (one Zen 4 core; benchmarks/NOTES.md). Which shapes come here:
// conv2d.h.
//
// Per image (and group): the K x P patch gradients (P = OH*OW output pixels) are the product of the transposed
// Cout x K weight with the Cout x P gradient, in register tiles of 6-8 rows x 2 vectors of pixels; they are then
// scatter-added into dx in a fixed order. Images are never split across threads, so the result does not depend
// on the thread count. Accumulation is in the tensor's dtype (float32 or float64, like ATen's CPU convolution);
// other dtypes keep oneDNN. dz is read through its strides and dx written in x's layout (NCHW or channels_last).
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "conv2d.h"
#include "cpu_math.h"

namespace fastgan {
namespace {

// One register of VB bytes (GCC/Clang vector extension), VB the width of the instantiation's ISA: 64 (AVX-512), 32
// (AVX2) or 16 (SSE2 / NEON); see fg_cpu_vector_bytes. (A member typedef: GCC ignores a vector_size attribute on an
// alias template of a dependent type.)
template <typename T, int VB>
struct VecOf {
  typedef T type __attribute__((vector_size(VB)));
};
template <typename T, int VB>
using Vec = typename VecOf<T, VB>::type;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Pixels are padded to this many: a whole number of vectors at every width.
template <typename T>
constexpr int64_t kPixelPad = int64_t(64 / sizeof(T));

// Rows [r0, r0 + ROWS) x pixels [p0, p0 + VECS vectors) of out = a * cols: ROWS * VECS sums in registers over k.
template <int VB, int ROWS, int VECS, typename T>
FG_INLINE void gemm_tile(const T* __restrict__ a, int64_t lda, const T* __restrict__ cols, int64_t K, int64_t P,
                         int64_t Pp, T* __restrict__ out, int64_t ldo, int64_t r0, int64_t p0) {
  constexpr int64_t L = VB / int64_t(sizeof(T));
  Vec<T, VB> acc[ROWS][VECS];
  for (int i = 0; i < ROWS; ++i)
    for (int v = 0; v < VECS; ++v) acc[i][v] = Vec<T, VB>{};
  for (int64_t k = 0; k < K; ++k) {
    Vec<T, VB> c[VECS];
    for (int v = 0; v < VECS; ++v) std::memcpy(&c[v], cols + k * Pp + p0 + v * L, sizeof c[v]);  // unaligned load
    for (int i = 0; i < ROWS; ++i) {
      const T ak = a[(r0 + i) * lda + k];
      for (int v = 0; v < VECS; ++v) acc[i][v] += ak * c[v];
    }
  }
  for (int v = 0; v < VECS; ++v) {
    const int64_t q = p0 + v * L, n = std::min(L, P - q);
    for (int i = 0; i < ROWS; ++i) {
      T* o = out + (r0 + i) * ldo + q;
      if (n == L)
        std::memcpy(o, &acc[i][v], sizeof acc[i][v]);
      else
        for (int64_t l = 0; l < n; ++l) o[l] = acc[i][v][l];
    }
  }
}

template <int VB, int ROWS, typename T>
FG_INLINE void gemm_rows(const T* a, int64_t lda, const T* cols, int64_t K, int64_t P, int64_t Pp, T* out,
                         int64_t ldo, int64_t r0) {
  constexpr int64_t L = VB / int64_t(sizeof(T));
  int64_t p0 = 0;
  for (; p0 + 2 * L <= Pp; p0 += 2 * L) gemm_tile<VB, ROWS, 2>(a, lda, cols, K, P, Pp, out, ldo, r0, p0);
  for (; p0 < Pp; p0 += L) gemm_tile<VB, ROWS, 1>(a, lda, cols, K, P, Pp, out, ldo, r0, p0);
}

// out[r][p] = sum_k a[r][k] * cols[k][p] for rows [0, R), pixels [0, P). `a` is R x K (row stride lda, column
// stride 1); `cols` is K x Pp (Pp a multiple of kPixelPad, zero-padded); out rows have stride ldo.
// Tiles of ROWS rows x 2 vectors, the weights broadcast from memory, the order of the sum over k fixed. ROWS fills
// the register file without spilling: 8 x 2 accumulators + 2 loads + 1 broadcast of AVX-512's 32 registers (16 FMA
// chains, enough to cover the FMA latency on two pipes); 6 x 2 + 3 of the 16 of AVX2 and SSE2 (on a Zen 3 core 6 x 2
// measured 1.1-1.6x faster than 8 x 2 or 4 x 2).
template <int VB, typename T>
FG_INLINE void small_gemm_w(const T* __restrict__ a, int64_t lda, const T* __restrict__ cols, int64_t K, int64_t P,
                            int64_t Pp, T* __restrict__ out, int64_t ldo, int64_t R) {
  constexpr int ROWS = VB == 64 ? 8 : 6;
  int64_t r = 0;
  for (; r + ROWS <= R; r += ROWS) gemm_rows<VB, ROWS>(a, lda, cols, K, P, Pp, out, ldo, r);
  for (; r + ROWS / 2 <= R; r += ROWS / 2) gemm_rows<VB, ROWS / 2>(a, lda, cols, K, P, Pp, out, ldo, r);
  for (; r < R; ++r) gemm_rows<VB, 1>(a, lda, cols, K, P, Pp, out, ldo, r);
}

template <typename T>
FG_TARGET_V4 void small_gemm_v4(const T* a, int64_t lda, const T* cols, int64_t K, int64_t P, int64_t Pp, T* out,
                                int64_t ldo, int64_t R) {
  small_gemm_w<64>(a, lda, cols, K, P, Pp, out, ldo, R);
}

template <typename T>
FG_TARGET_V3 void small_gemm_v3(const T* a, int64_t lda, const T* cols, int64_t K, int64_t P, int64_t Pp, T* out,
                                int64_t ldo, int64_t R) {
  small_gemm_w<32>(a, lda, cols, K, P, Pp, out, ldo, R);
}

// vb: fg_cpu_vector_bytes(), read by the caller before its threads start (its first read may warn).
template <typename T>
void small_gemm(int vb, const T* a, int64_t lda, const T* cols, int64_t K, int64_t P, int64_t Pp, T* out,
                int64_t ldo, int64_t R) {
  if (vb == 64)
    small_gemm_v4(a, lda, cols, K, P, Pp, out, ldo, R);
  else if (vb == 32)
    small_gemm_v3(a, lda, cols, K, P, Pp, out, ldo, R);
  else
    small_gemm_w<16>(a, lda, cols, K, P, Pp, out, ldo, R);
}

// Output columns [lo, hi) whose tap at input offset `off` (= k*d - pad) lands inside [0, in): in = off + o*s.
inline void valid_range(int64_t off, int64_t s, int64_t in, int64_t out, int64_t* lo, int64_t* hi) {
  *lo = off >= 0 ? 0 : (-off + s - 1) / s;
  *hi = off > in - 1 ? 0 : std::min(out, (in - 1 - off) / s + 1);
  if (*lo > *hi) *lo = *hi;
}

// dx[c0 + c] += the patches of dcols, for one image and group (dx: the image's first element, with strides xs =
// {channel, row, column}: NCHW or channels_last; zeroed). The order of the additions into each element is fixed
// (taps in (c, kh, kw) order).
template <typename T>
FG_CPU_CLONES void scatter_patches(const T* dcols, int64_t Pp, const ConvGeom& g, int64_t c0, const int64_t* xs,
                                   T* dx) {
  for (int64_t c = 0; c < g.Cg; ++c)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const T* row = dcols + ((c * g.KH + kh) * g.KW + kw) * Pp;
        T* xc = dx + (c0 + c) * xs[0];
        const int64_t woff = kw * g.dw - g.pw;
        int64_t lo, hi;
        valid_range(woff, g.sw, g.W, g.OW, &lo, &hi);
        for (int64_t oh = 0; oh < g.OH; ++oh) {
          const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
          if (ih < 0 || ih >= g.H) continue;
          const T* __restrict__ o = row + oh * g.OW;
          T* __restrict__ xr = xc + ih * xs[1];
          for (int64_t ow = lo; ow < hi; ++ow) xr[(woff + ow * g.sw) * xs[2]] += o[ow];  // column >= 0 in [lo, hi)
        }
      }
}

template <typename T>
void dgrad_impl(const at::Tensor& dz, const at::Tensor& w, const ConvGeom& g, at::Tensor& dx) {
  const int64_t K = g.Cg * g.KH * g.KW, P = g.OH * g.OW, Pp = round_up(P, kPixelPad<T>);
  // wt[gr][k][co] = w[gr*Cog + co][k]: the transposed weight, rows of Cog.
  std::vector<T> wt(size_t(g.G * K * g.Cog));
  const T* wp = w.const_data_ptr<T>();
  for (int64_t gr = 0; gr < g.G; ++gr)
    for (int64_t co = 0; co < g.Cog; ++co)
      for (int64_t k = 0; k < K; ++k) wt[(gr * K + k) * g.Cog + co] = wp[(gr * g.Cog + co) * K + k];
  const T* dzp = dz.const_data_ptr<T>();  // any strides
  const int64_t zs[4] = {dz.stride(0), dz.stride(1), dz.stride(2), dz.stride(3)};
  const bool rows_dense = zs[3] == 1 && zs[2] == g.OW;  // each channel's pixels one run (NCHW)
  T* dxp = dx.mutable_data_ptr<T>();  // NCHW or channels_last, dense, zeroed
  const int64_t xs[3] = {dx.stride(1), dx.stride(2), dx.stride(3)};
  const int vb = fg_cpu_vector_bytes();
  at::parallel_for(0, g.N * g.G, 1, [&](int64_t t0, int64_t t1) {
    // The gradient rows of one image and group, padded to Pp with zeros, then the patch gradients.
    std::vector<T> dzb(size_t(g.Cog * Pp), T(0)), dcols(size_t(K * Pp));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / g.G, gr = t % g.G;
      const T* src = dzp + n * zs[0] + gr * g.Cog * zs[1];
      for (int64_t co = 0; co < g.Cog; ++co) {
        const T* s = src + co * zs[1];
        T* d = dzb.data() + co * Pp;
        if (rows_dense)
          std::copy(s, s + P, d);
        else
          for (int64_t oh = 0; oh < g.OH; ++oh)
            for (int64_t ow = 0; ow < g.OW; ++ow) d[oh * g.OW + ow] = s[oh * zs[2] + ow * zs[3]];
      }
      small_gemm<T>(vb, wt.data() + gr * K * g.Cog, g.Cog, dzb.data(), g.Cog, Pp, Pp, dcols.data(), Pp, K);
      scatter_patches<T>(dcols.data(), Pp, g, gr * g.Cg, xs, dxp + n * dx.stride(0));
    }
  });
}

}  // namespace

bool small_conv_fits(const at::Tensor& x, const at::Tensor& w, const ConvGeom& g) {
  const auto st = x.scalar_type();
  if (st != at::kFloat && st != at::kDouble) return false;
  const int64_t K = g.Cg * g.KH * g.KW;
  return K <= (channels_last(x) ? kSmallConvMaxKChannelsLast : kSmallConvMaxK) && g.Cog >= kSmallConvMinCout &&
         g.N > 0 && g.OH * g.OW > 0;
}

at::Tensor small_conv_dgrad(const at::Tensor& dz, const at::Tensor& x, const at::Tensor& w, const ConvGeom& g) {
  // dx in x's memory format, as the op's other paths and its fake kernel give it
  const auto fmt = channels_last(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor dx = at::empty({g.N, g.C, g.H, g.W}, x.options().memory_format(fmt)).zero_();  // (at::zeros drops fmt)
  const at::Tensor wc = w.contiguous();
  if (x.scalar_type() == at::kDouble)
    dgrad_impl<double>(dz, wc, g, dx);
  else
    dgrad_impl<float>(dz, wc, g, dx);
  return dx;
}

}  // namespace fastgan
