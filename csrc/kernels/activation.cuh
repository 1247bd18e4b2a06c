// Activation functors shared by the CPU kernels (plain C++), the CUDA kernels and their emulation.
// The Python twin of this table is fastgan/_activations.py; tests check the two agree.
//
// Each functor gives
//   f(x, alpha)        the activation,
//   d(a, alpha)        its derivative written through its own output a = f(x) (so backward saves y, not x),
// NaN propagates as in torch: f(NaN) = NaN for every activation, and the derivatives at a NaN output are torch's
// (relu passes the gradient, lrelu scales it by alpha). The second derivatives live in fastgan/_activations.py
// (the double backward is composed from ops there).
#pragma once

#include <math.h>

#ifndef FG_HD
#if defined(__CUDACC__) || defined(FG_EMU)
#define FG_HD __host__ __device__ __forceinline__
#else
#define FG_HD inline
#endif
#endif

namespace fastgan {

// Precision-preserving overloads usable in host and device code alike.
FG_HD float fg_exp(float x) { return expf(x); }
FG_HD double fg_exp(double x) { return exp(x); }
FG_HD float fg_tanh(float x) { return tanhf(x); }
FG_HD double fg_tanh(double x) { return tanh(x); }
FG_HD float fg_log1p(float x) { return log1pf(x); }
FG_HD double fg_log1p(double x) { return log1p(x); }
FG_HD float fg_sqrt(float x) { return sqrtf(x); }
FG_HD double fg_sqrt(double x) { return sqrt(x); }

// X(code, name, Functor): the single list. Codes are part of the op ABI between Python and C++.
#define FG_ACTIVATIONS(X)      \
  X(0, linear, ActLinear)      \
  X(1, relu, ActRelu)          \
  X(2, lrelu, ActLrelu)        \
  X(3, sigmoid, ActSigmoid)    \
  X(4, tanh, ActTanh)

struct ActLinear {
  template <typename T> static FG_HD T f(T x, T) { return x; }
  template <typename T> static FG_HD T d(T, T) { return T(1); }
};
struct ActRelu {
  template <typename T> static FG_HD T f(T x, T) { return x < T(0) ? T(0) : x; }     // NaN stays NaN
  template <typename T> static FG_HD T d(T a, T) { return a <= T(0) ? T(0) : T(1); }  // NaN passes dy
};
struct ActLrelu {
  template <typename T> static FG_HD T f(T x, T alpha) { return x > T(0) ? x : x * alpha; }
  template <typename T> static FG_HD T d(T a, T alpha) { return a > T(0) ? T(1) : alpha; }
};
struct ActSigmoid {
  // Stable for any finite x: exp of a non-positive number only.
  template <typename T> static FG_HD T f(T x, T) {
    if (x >= T(0)) return T(1) / (T(1) + fg_exp(-x));
    T e = fg_exp(x);
    return e / (T(1) + e);
  }
  template <typename T> static FG_HD T d(T a, T) { return a * (T(1) - a); }
};
struct ActTanh {
  template <typename T> static FG_HD T f(T x, T) { return fg_tanh(x); }
  template <typename T> static FG_HD T d(T a, T) { return T(1) - a * a; }
};

enum class Act : int {
#define FG_ACT_ENUM(code, name, F) name = code,
  FG_ACTIVATIONS(FG_ACT_ENUM)
#undef FG_ACT_ENUM
};

// The number of activations (codes are 0 .. kNumActivations - 1).
#define FG_ACT_COUNT(code, name, F) +1
constexpr int kNumActivations = 0 FG_ACTIVATIONS(FG_ACT_COUNT);
#undef FG_ACT_COUNT
FG_HD bool act_code_valid(int code) { return code >= 0 && code < kNumActivations; }

// Epilogue shared by every fused op: y = clamp(f(z) * gain, -clamp, clamp); clamp < 0 means none.
template <typename F, typename T>
FG_HD T act_forward(T z, T alpha, T gain, T clamp) {
  T y = F::template f<T>(z, alpha) * gain;
  if (clamp >= T(0)) y = y > clamp ? clamp : (y < -clamp ? -clamp : y);
  return y;
}

// dL/dz from dL/dy and the saved output y. Clamped outputs (|y| >= clamp) pass no gradient.
// y * (1 / gain), not y / gain: the reciprocal is loop-invariant, so a loop over elements multiplies instead of
// dividing (a vector division per element was ~30% of the CPU backward's time); exact for gain = 1.
template <typename F, typename T>
FG_HD T act_backward(T dy, T y, T alpha, T gain, T clamp) {
  if (clamp >= T(0) && (y >= clamp || y <= -clamp)) return T(0);
  return dy * gain * F::template d<T>(y * (T(1) / gain), alpha);
}

// Calls f(Functor{}) for the activation code; returns false for an unknown code.
template <typename Fn>
inline bool dispatch_act(int code, Fn&& fn) {
  switch (code) {
#define FG_ACT_CASE(c, name, F) \
  case c: fn(F{}); return true;
    FG_ACTIVATIONS(FG_ACT_CASE)
#undef FG_ACT_CASE
  }
  return false;
}

}  // namespace fastgan
