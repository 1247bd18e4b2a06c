// CPU-loop helpers: ISA multiversioning, a vectorisable exp, and a fixed-order sum.
//
// The extension is compiled for the baseline x86-64 ISA (SSE2) so it loads on any machine. ATen's own CPU kernels
// are compiled several times and picked at run time; FG_CPU_CLONES does the same for one of our hot loops: GCC
// emits an AVX-512 (x86-64-v4), an AVX2+FMA (x86-64-v3) and a baseline clone and an ifunc resolver chooses once, at
// load time, from the CPU's features. Elsewhere (other compilers or architectures) it expands to nothing.
//
// exp: std::exp / expf is a libm call per element, which stops the loops around it from vectorising (glibc's
// vector variants are only declared under -ffast-math, which we do not use: it would break NaN propagation).
// fg_cpu_exp(float) is a branch-free Cody-Waite reduction + degree-6 minimax polynomial (the classic Cephes
// expf coefficients, < 2 ulp over the float range), written so the auto-vectoriser maps every step to SIMD.
// double keeps std::exp.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// A loop written with explicit vector types cannot be one target_clones body: GCC lowers a generic vector wider than
// the target's registers through the stack (the 64-byte tiles of the conv backward data ran 30x slower in the AVX2
// clone than with 32-byte ones; benchmarks/NOTES.md, 2026-12-06). Such a loop is instantiated once per register
// width instead, the wider ones marked FG_TARGET_V4 / FG_TARGET_V3, and fg_cpu_vector_bytes() says which one to call.
// Those marks are clones too (of the target and the baseline), not target("..."): GCC refuses to inline an
// always_inline helper into a target function whose ISA is not a superset of the command line's (-march=native,
// -march=haswell, conda's -march=nocona ...), while a clone inlines first and then compiles each copy for its
// target. The target copy is the one that runs: fg_cpu_vector_bytes() asks the CPU what the clones' resolver asks
// (unless FASTGAN_CPU_VECTOR_BYTES forces a width the CPU lacks: then that loop's baseline copy runs).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && \
    !defined(FASTGAN_NO_CPU_CLONES)
#define FG_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define FG_TARGET_V4 __attribute__((target_clones("arch=x86-64-v4", "default")))
#define FG_TARGET_V3 __attribute__((target_clones("arch=x86-64-v3", "default")))
#define FG_CPU_MULTIVERSIONED 1
#else
#define FG_CPU_CLONES
#define FG_TARGET_V4
#define FG_TARGET_V3
#define FG_CPU_MULTIVERSIONED 0
#endif

// Helpers called from a cloned loop are always inlined: an out-of-line copy would be compiled for the baseline
// ISA only.
#if defined(__GNUC__)
#define FG_INLINE inline __attribute__((always_inline))
#else
#define FG_INLINE inline
#endif

namespace fastgan {

// The widest registers, in bytes, this CPU has of those the instantiations are compiled for (see FG_TARGET_V4 above).
inline int fg_cpu_widest_vector_bytes() {
#if FG_CPU_MULTIVERSIONED
  return __builtin_cpu_supports("x86-64-v4") ? 64 : __builtin_cpu_supports("x86-64-v3") ? 32 : 16;
#else
  return 16;  // the baseline's: SSE2 on x86-64, NEON on AArch64
#endif
}

// The register width, in bytes, of the instantiation to run: the CPU's widest, or FASTGAN_CPU_VECTOR_BYTES (16, 32 or
// 64; read once). Any width is safe on any CPU: a width above the CPU's runs the wider loop's baseline clone (GCC
// splits its vectors: correct, and slow), which is how tests run the 64-byte loop's logic on a CPU without AVX-512.
inline int fg_cpu_vector_bytes() {
  static const int bytes = [] {
    const int widest = fg_cpu_widest_vector_bytes();
    const char* v = std::getenv("FASTGAN_CPU_VECTOR_BYTES");
    if (v == nullptr || *v == 0) return widest;
    const std::string want(v);
    if (want != "16" && want != "32" && want != "64") {
      TORCH_WARN("FASTGAN_CPU_VECTOR_BYTES=", want, " is not one of 16, 32, 64; using ", widest);
      return widest;
    }
    const int n = std::stoi(want);
    if (n > widest)
      TORCH_WARN("FASTGAN_CPU_VECTOR_BYTES=", n, " is wider than this CPU's ", widest,
                 "-byte registers: the portable copy of that loop runs (correct, many times slower; for tests)");
    return n;
  }();
  return bytes;
}

FG_INLINE float fg_bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// 2^n for integer-valued n in [-126, 127], built from the exponent field.
FG_INLINE float fg_pow2i(int32_t n) { return fg_bits_to_float(uint32_t(n + 127) << 23); }

// exp(xc) for a clamped, NaN-free xc in [-104, 89].
FG_INLINE float fg_cpu_exp_core(float xc) {
  // n = round(x / ln 2) with the 1.5 * 2^23 trick (round-to-nearest, no libm call); |n| <= 150.
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  // r = x - n ln2 in two steps (ln2 = C1 + C2, C1 exact in few bits): |r| <= ln2 / 2.
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * (r * r) + r + 1.0f;  // exp(r)
  // 2^n as two factors, each a normal float: results in the subnormal range round correctly, overflow gives inf.
  const int32_t ni = int32_t(n);
  const int32_t n1 = ni >> 1, n2 = ni - n1;
  return er * fg_pow2i(n1) * fg_pow2i(n2);
}

FG_INLINE float fg_cpu_exp(float x) {
  // Clamp to where exp is 0 / inf after rounding (NaN fails both comparisons and is restored at the end).
  float xc = x < -104.0f ? -104.0f : x;
  xc = xc > 89.0f ? 89.0f : xc;
  xc = xc == xc ? xc : 0.0f;
  const float y = fg_cpu_exp_core(xc);
  return x == x ? y : x;
}

// exp(x) for x <= 0 (or NaN), the argument of every exp in the sigmoid and tanh loops (exp(-|x|)): no upper
// clamp. Three vector ops fewer than fg_cpu_exp: the 128 x 784 sigmoid pass ran 25% faster (Zen 4).
FG_INLINE float fg_cpu_exp_nonpos(float x) {
  float xc = x < -104.0f ? -104.0f : x;
  xc = xc == xc ? xc : 0.0f;
  const float y = fg_cpu_exp_core(xc);
  return x == x ? y : x;
}

inline double fg_cpu_exp(double x) { return std::exp(x); }
inline double fg_cpu_exp_nonpos(double x) { return std::exp(x); }

// The sum of term(i) over i < n in an order that does not depend on the thread count: fixed-size chunks summed in
// parallel, then the chunks' sums added in order. M: the accumulator type.
template <typename M, typename Term>
M fixed_order_sum(int64_t n, const Term& term) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  std::vector<M> part(std::max<int64_t>(nchunks, 1), M(0));
  at::parallel_for(0, nchunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      M s = M(0);
      for (int64_t i = c * kChunk, e = std::min(n, (c + 1) * kChunk); i < e; ++i) s += term(i);
      part[c] = s;
    }
  });
  M s = M(0);
  for (M v : part) s += v;
  return s;
}

}  // namespace fastgan
