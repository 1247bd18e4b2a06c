// fgemu: CUDA built-in vector types, dim3/uint3 and the 16-bit float storage types for the CPU emulation.
// Included by cuda_emu.h; not meant to be included on its own.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ---------------------------------------------------------------------------------------------------------------
// Vector types with CUDA's sizes and alignments (vector_types.h).
// ---------------------------------------------------------------------------------------------------------------
#define FGEMU_VEC1(T, N, A)                                                  \
  struct __attribute__((aligned(A))) N { T x; };                             \
  inline constexpr N make_##N(T x) { return N{x}; }
#define FGEMU_VEC2(T, N, A)                                                  \
  struct __attribute__((aligned(A))) N { T x, y; };                          \
  inline constexpr N make_##N(T x, T y) { return N{x, y}; }
#define FGEMU_VEC3(T, N, A)                                                  \
  struct __attribute__((aligned(A))) N { T x, y, z; };                       \
  inline constexpr N make_##N(T x, T y, T z) { return N{x, y, z}; }
#define FGEMU_VEC4(T, N, A)                                                  \
  struct __attribute__((aligned(A))) N { T x, y, z, w; };                    \
  inline constexpr N make_##N(T x, T y, T z, T w) { return N{x, y, z, w}; }

FGEMU_VEC1(signed char, char1, 1)
FGEMU_VEC2(signed char, char2, 2)
FGEMU_VEC3(signed char, char3, 1)
FGEMU_VEC4(signed char, char4, 4)
FGEMU_VEC1(unsigned char, uchar1, 1)
FGEMU_VEC2(unsigned char, uchar2, 2)
FGEMU_VEC3(unsigned char, uchar3, 1)
FGEMU_VEC4(unsigned char, uchar4, 4)
FGEMU_VEC1(short, short1, 2)
FGEMU_VEC2(short, short2, 4)
FGEMU_VEC3(short, short3, 2)
FGEMU_VEC4(short, short4, 8)
FGEMU_VEC1(unsigned short, ushort1, 2)
FGEMU_VEC2(unsigned short, ushort2, 4)
FGEMU_VEC3(unsigned short, ushort3, 2)
FGEMU_VEC4(unsigned short, ushort4, 8)
FGEMU_VEC1(int, int1, 4)
FGEMU_VEC2(int, int2, 8)
FGEMU_VEC3(int, int3, 4)
FGEMU_VEC4(int, int4, 16)
FGEMU_VEC1(unsigned int, uint1, 4)
FGEMU_VEC2(unsigned int, uint2, 8)
FGEMU_VEC3(unsigned int, uint3, 4)
FGEMU_VEC4(unsigned int, uint4, 16)
FGEMU_VEC1(long, long1, 8)
FGEMU_VEC2(long, long2, 16)
FGEMU_VEC3(long, long3, 8)
FGEMU_VEC4(long, long4, 16)
FGEMU_VEC1(unsigned long, ulong1, 8)
FGEMU_VEC2(unsigned long, ulong2, 16)
FGEMU_VEC3(unsigned long, ulong3, 8)
FGEMU_VEC4(unsigned long, ulong4, 16)
FGEMU_VEC1(long long, longlong1, 8)
FGEMU_VEC2(long long, longlong2, 16)
FGEMU_VEC3(long long, longlong3, 8)
FGEMU_VEC4(long long, longlong4, 16)
FGEMU_VEC1(unsigned long long, ulonglong1, 8)
FGEMU_VEC2(unsigned long long, ulonglong2, 16)
FGEMU_VEC3(unsigned long long, ulonglong3, 8)
FGEMU_VEC4(unsigned long long, ulonglong4, 16)
FGEMU_VEC1(float, float1, 4)
FGEMU_VEC2(float, float2, 8)
FGEMU_VEC3(float, float3, 4)
FGEMU_VEC4(float, float4, 16)
FGEMU_VEC1(double, double1, 8)
FGEMU_VEC2(double, double2, 16)
FGEMU_VEC3(double, double3, 8)
FGEMU_VEC4(double, double4, 16)

#undef FGEMU_VEC1
#undef FGEMU_VEC2
#undef FGEMU_VEC3
#undef FGEMU_VEC4

static_assert(sizeof(float4) == 16 && alignof(float4) == 16, "float4 layout");
static_assert(sizeof(float2) == 8 && alignof(float2) == 8, "float2 layout");
static_assert(sizeof(double2) == 16 && alignof(double2) == 16, "double2 layout");
static_assert(sizeof(float3) == 12 && alignof(float3) == 4, "float3 layout");

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

// ---------------------------------------------------------------------------------------------------------------
// IEEE binary16 and bfloat16 storage types (cuda_fp16.h / cuda_bf16.h): 2 bytes, bit-compatible, conversions round
// to nearest even. Arithmetic follows CUDA: computed in float and rounded back.
// ---------------------------------------------------------------------------------------------------------------
namespace fgemu {
namespace fp {

inline uint32_t f2u(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float u2f(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint64_t d2u(double d) { uint64_t u; std::memcpy(&u, &d, 8); return u; }

// float -> binary16, round to nearest even (handles subnormals, overflow to inf, NaN stays NaN).
inline unsigned short float_to_half_rn(float f) {
  uint32_t x = f2u(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return (unsigned short)(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));  // NaN (quiet)
  if (ax >= 0x477FF000u) return (unsigned short)(sign | 0x7C00u);  // >= 65520 rounds to inf (or is inf)
  if (ax < 0x38800000u) {  // result is subnormal or zero (|f| < 2^-14)
    if (ax < 0x33000000u) return (unsigned short)sign;  // < 2^-25: rounds to zero (2^-25 exactly ties to 0)
    uint32_t e = ax >> 23;                              // biased exponent, 102..112
    uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;           // 24-bit significand
    uint32_t shift = 126 - e;                            // value = m * 2^(e-150); half ulp 2^-24 -> m >> (126-e)
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return (unsigned short)(sign | r);
  }
  // normal: rebias exponent 127 -> 15, keep 10 mantissa bits with RNE (carry may propagate into the exponent)
  uint32_t r = ((ax >> 13) - ((127u - 15u) << 10));
  uint32_t rem = ax & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return (unsigned short)(sign | r);
}

inline float half_to_float(unsigned short h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1Fu;
  uint32_t m = h & 0x3FFu;
  if (e == 0x1F) return u2f(sign | 0x7F800000u | (m << 13));
  if (e == 0) {
    if (m == 0) return u2f(sign);
    float v = (float)m * 5.9604644775390625e-8f;  // m * 2^-24, exact
    return sign ? -v : v;
  }
  return u2f(sign | ((e + 112u) << 23) | (m << 13));
}

inline unsigned short float_to_bf16_rn(float f) {
  uint32_t x = f2u(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (unsigned short)((x >> 16) | 0x40u);  // quiet NaN
  uint32_t lsb = (x >> 16) & 1u;
  x += 0x7FFFu + lsb;
  return (unsigned short)(x >> 16);
}
inline unsigned short float_to_bf16_rz(float f) {
  uint32_t x = f2u(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (unsigned short)((x >> 16) | 0x40u);
  return (unsigned short)(x >> 16);
}
inline float bf16_to_float(unsigned short b) { return u2f((uint32_t)b << 16); }

// double -> float rounding to odd: exact intermediate for a second rounding to a format with <= 22 significant bits,
// so double -> half/bf16 via this float rounds correctly (no double-rounding error).
inline float double_to_float_odd(double d) {
  float f = (float)d;
  if (!std::isfinite(f) || (double)f == d) return f;  // exact, NaN, or overflowed (inf is far outside both ranges)
  uint32_t u = f2u(f);
  if (std::fabs((double)f) > std::fabs(d)) u -= 1;  // truncate toward zero
  return u2f(u | 1u);
}

inline unsigned short float_to_half_rz(float f) {
  uint32_t x = f2u(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return (unsigned short)(sign | 0x7E00u);
  if (ax == 0x7F800000u) return (unsigned short)(sign | 0x7C00u);
  if (ax >= 0x47800000u) return (unsigned short)(sign | 0x7BFFu);
  if (ax < 0x38800000u) {
    if (ax < 0x33800000u) return (unsigned short)sign;
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
    return (unsigned short)(sign | (m >> (126 - e)));
  }
  return (unsigned short)(sign | ((ax >> 13) - ((127u - 15u) << 10)));
}

}  // namespace fp
}  // namespace fgemu

struct __half_raw { unsigned short x; };
struct __nv_bfloat16_raw { unsigned short x; };

struct __attribute__((aligned(2))) __half {
  unsigned short __x;
  __half() = default;
  constexpr __half(const __half_raw& r) : __x(r.x) {}
  __half(float f) : __x(::fgemu::fp::float_to_half_rn(f)) {}
  __half(double d) : __x(::fgemu::fp::float_to_half_rn(::fgemu::fp::double_to_float_odd(d))) {}
  __half(int v) : __half((float)v) {}
  __half(unsigned int v) : __half((float)v) {}
  __half(long v) : __half((double)v) {}
  __half(unsigned long v) : __half((double)v) {}
  __half(long long v) : __half((double)v) {}
  __half(unsigned long long v) : __half((double)v) {}
  __half(short v) : __half((float)v) {}
  __half(unsigned short v) : __half((float)v) {}
  __half& operator=(const __half_raw& r) { __x = r.x; return *this; }
  __half& operator=(float f) { __x = ::fgemu::fp::float_to_half_rn(f); return *this; }
  __half& operator=(double d) { *this = __half(d); return *this; }
  operator __half_raw() const { return __half_raw{__x}; }
  operator float() const { return ::fgemu::fp::half_to_float(__x); }
  explicit operator bool() const { return (__x & 0x7FFFu) != 0; }
};

struct __attribute__((aligned(2))) __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  constexpr __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
  __nv_bfloat16(float f) : __x(::fgemu::fp::float_to_bf16_rn(f)) {}
  __nv_bfloat16(double d) : __x(::fgemu::fp::float_to_bf16_rn(::fgemu::fp::double_to_float_odd(d))) {}
  __nv_bfloat16(int v) : __nv_bfloat16((float)v) {}
  __nv_bfloat16(unsigned int v) : __nv_bfloat16((float)v) {}
  __nv_bfloat16(long v) : __nv_bfloat16((double)v) {}
  __nv_bfloat16(unsigned long v) : __nv_bfloat16((double)v) {}
  __nv_bfloat16(long long v) : __nv_bfloat16((double)v) {}
  __nv_bfloat16(unsigned long long v) : __nv_bfloat16((double)v) {}
  __nv_bfloat16(short v) : __nv_bfloat16((float)v) {}
  __nv_bfloat16(unsigned short v) : __nv_bfloat16((float)v) {}
  __nv_bfloat16& operator=(const __nv_bfloat16_raw& r) { __x = r.x; return *this; }
  __nv_bfloat16& operator=(float f) { __x = ::fgemu::fp::float_to_bf16_rn(f); return *this; }
  __nv_bfloat16& operator=(double d) { *this = __nv_bfloat16(d); return *this; }
  operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
  operator float() const { return ::fgemu::fp::bf16_to_float(__x); }
  explicit operator bool() const { return (__x & 0x7FFFu) != 0; }
};

typedef __half half;
typedef __nv_bfloat16 nv_bfloat16;

struct __attribute__((aligned(4))) __half2 {
  __half x, y;
};
struct __attribute__((aligned(4))) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
typedef __half2 half2;
typedef __nv_bfloat162 nv_bfloat162;

static_assert(sizeof(__half) == 2 && alignof(__half) == 2, "__half layout");
static_assert(sizeof(__nv_bfloat16) == 2, "__nv_bfloat16 layout");
static_assert(sizeof(__half2) == 4 && alignof(__half2) == 4, "__half2 layout");
static_assert(std::is_trivially_copyable<__half>::value && std::is_trivial<__half>::value, "__half must be trivial");

// --- conversions --------------------------------------------------------------------------------------------
inline float __half2float(__half h) { return ::fgemu::fp::half_to_float(h.__x); }
inline __half __float2half(float f) { return __half_raw{::fgemu::fp::float_to_half_rn(f)}; }
inline __half __float2half_rn(float f) { return __half_raw{::fgemu::fp::float_to_half_rn(f)}; }
inline __half __float2half_rz(float f) { return __half_raw{::fgemu::fp::float_to_half_rz(f)}; }
inline __half __double2half(double d) { return __half(d); }
inline __half __int2half_rn(int v) { return __half((float)v); }
inline int __half2int_rz(__half h) { return (int)__half2float(h); }
inline int __half2int_rn(__half h) { return (int)std::nearbyint(__half2float(h)); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) { return __half_raw{u}; }
inline short __half_as_short(__half h) { return (short)h.__x; }
inline __half __short_as_half(short s) { return __half_raw{(unsigned short)s}; }
inline __half2 __halves2half2(__half a, __half b) { return __half2{a, b}; }
inline __half2 __half2half2(__half a) { return __half2{a, a}; }
inline __half2 __float2half2_rn(float f) { return __half2{__float2half_rn(f), __float2half_rn(f)}; }
inline __half2 __floats2half2_rn(float a, float b) { return __half2{__float2half_rn(a), __float2half_rn(b)}; }
inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }
inline float2 __half22float2(__half2 h) { return float2{__half2float(h.x), __half2float(h.y)}; }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
inline __half __low2half(__half2 h) { return h.x; }
inline __half __high2half(__half2 h) { return h.y; }
inline __half2 __lows2half2(__half2 a, __half2 b) { return __half2{a.x, b.x}; }
inline __half2 __highs2half2(__half2 a, __half2 b) { return __half2{a.y, b.y}; }

inline float __bfloat162float(__nv_bfloat16 b) { return ::fgemu::fp::bf16_to_float(b.__x); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16_raw{::fgemu::fp::float_to_bf16_rn(f)}; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16_raw{::fgemu::fp::float_to_bf16_rn(f)}; }
inline __nv_bfloat16 __float2bfloat16_rz(float f) { return __nv_bfloat16_raw{::fgemu::fp::float_to_bf16_rz(f)}; }
inline __nv_bfloat16 __double2bfloat16(double d) { return __nv_bfloat16(d); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16_raw{u}; }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162{a, b}; }
inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return __nv_bfloat162{a, a}; }
inline __nv_bfloat162 __float2bfloat162_rn(float f) { return __nv_bfloat162{__float2bfloat16_rn(f), __float2bfloat16_rn(f)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __floats2bfloat162_rn(v.x, v.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return float2{__bfloat162float(h.x), __bfloat162float(h.y)}; }
inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 h) { return h.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 h) { return h.y; }

// --- arithmetic (computed in float, rounded once) -----------------------------------------------------------
#define FGEMU_H16_OPS(H, TOF, FROMF)                                                                         \
  inline H operator+(const H& a, const H& b) { return FROMF(TOF(a) + TOF(b)); }                             \
  inline H operator-(const H& a, const H& b) { return FROMF(TOF(a) - TOF(b)); }                             \
  inline H operator*(const H& a, const H& b) { return FROMF(TOF(a) * TOF(b)); }                             \
  inline H operator/(const H& a, const H& b) { return FROMF(TOF(a) / TOF(b)); }                             \
  inline H& operator+=(H& a, const H& b) { a = a + b; return a; }                                           \
  inline H& operator-=(H& a, const H& b) { a = a - b; return a; }                                           \
  inline H& operator*=(H& a, const H& b) { a = a * b; return a; }                                           \
  inline H& operator/=(H& a, const H& b) { a = a / b; return a; }                                           \
  inline H operator+(const H& a) { return a; }                                                              \
  inline H operator-(const H& a) { H r = a; r.__x ^= 0x8000u; return r; }                                   \
  inline H& operator++(H& a) { a = a + H(1.0f); return a; }                                                 \
  inline H& operator--(H& a) { a = a - H(1.0f); return a; }                                                 \
  inline H operator++(H& a, int) { H r = a; ++a; return r; }                                                \
  inline H operator--(H& a, int) { H r = a; --a; return r; }                                                \
  inline bool operator==(const H& a, const H& b) { return TOF(a) == TOF(b); }                               \
  inline bool operator!=(const H& a, const H& b) { return TOF(a) != TOF(b); }                               \
  inline bool operator<(const H& a, const H& b) { return TOF(a) < TOF(b); }                                 \
  inline bool operator<=(const H& a, const H& b) { return TOF(a) <= TOF(b); }                               \
  inline bool operator>(const H& a, const H& b) { return TOF(a) > TOF(b); }                                 \
  inline bool operator>=(const H& a, const H& b) { return TOF(a) >= TOF(b); }                               \
  inline H __hadd(H a, H b) { return a + b; }                                                               \
  inline H __hsub(H a, H b) { return a - b; }                                                               \
  inline H __hmul(H a, H b) { return a * b; }                                                               \
  inline H __hdiv(H a, H b) { return a / b; }                                                               \
  inline H __hneg(H a) { return -a; }                                                                       \
  inline H __habs(H a) { H r = a; r.__x &= 0x7FFFu; return r; }                                            \
  inline H __hfma(H a, H b, H c) { return H(std::fma((double)TOF(a), (double)TOF(b), (double)TOF(c))); } \
  inline H __hmax(H a, H b) { float x = TOF(a), y = TOF(b); return std::isnan(x) ? b : (std::isnan(y) ? a : (x > y ? a : b)); } \
  inline H __hmin(H a, H b) { float x = TOF(a), y = TOF(b); return std::isnan(x) ? b : (std::isnan(y) ? a : (x < y ? a : b)); } \
  inline bool __heq(H a, H b) { return a == b; }                                                            \
  inline bool __hne(H a, H b) { return a != b; }                                                            \
  inline bool __hlt(H a, H b) { return a < b; }                                                             \
  inline bool __hle(H a, H b) { return a <= b; }                                                            \
  inline bool __hgt(H a, H b) { return a > b; }                                                             \
  inline bool __hge(H a, H b) { return a >= b; }                                                            \
  inline bool __hisnan(H a) { return std::isnan(TOF(a)); }                                                  \
  inline int __hisinf(H a) { float x = TOF(a); return std::isinf(x) ? (x < 0 ? -1 : 1) : 0; }             \
  inline H hsqrt(H a) { return FROMF(std::sqrt(TOF(a))); }                                                  \
  inline H hrsqrt(H a) { return FROMF(1.0f / std::sqrt(TOF(a))); }                                          \
  inline H hexp(H a) { return FROMF(std::exp(TOF(a))); }                                                    \
  inline H hlog(H a) { return FROMF(std::log(TOF(a))); }                                                    \
  inline H hfloor(H a) { return FROMF(std::floor(TOF(a))); }                                                \
  inline H hceil(H a) { return FROMF(std::ceil(TOF(a))); }                                                  \
  inline H htrunc(H a) { return FROMF(std::trunc(TOF(a))); }                                                \
  inline H hrint(H a) { return FROMF(std::nearbyint(TOF(a))); }

FGEMU_H16_OPS(__half, __half2float, __float2half_rn)
FGEMU_H16_OPS(__nv_bfloat16, __bfloat162float, __float2bfloat16_rn)
#undef FGEMU_H16_OPS

#define FGEMU_H16X2_OPS(H2, H)                                                                              \
  inline H2 __hadd2(H2 a, H2 b) { return H2{a.x + b.x, a.y + b.y}; }                                        \
  inline H2 __hsub2(H2 a, H2 b) { return H2{a.x - b.x, a.y - b.y}; }                                        \
  inline H2 __hmul2(H2 a, H2 b) { return H2{a.x * b.x, a.y * b.y}; }                                        \
  inline H2 __h2div(H2 a, H2 b) { return H2{a.x / b.x, a.y / b.y}; }                                        \
  inline H2 __hfma2(H2 a, H2 b, H2 c) { return H2{__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)}; }          \
  inline H2 __hneg2(H2 a) { return H2{-a.x, -a.y}; }                                                        \
  inline H2 __habs2(H2 a) { return H2{__habs(a.x), __habs(a.y)}; }                                          \
  inline H2 __hmax2(H2 a, H2 b) { return H2{__hmax(a.x, b.x), __hmax(a.y, b.y)}; }                          \
  inline H2 __hmin2(H2 a, H2 b) { return H2{__hmin(a.x, b.x), __hmin(a.y, b.y)}; }                          \
  inline H2 operator+(const H2& a, const H2& b) { return __hadd2(a, b); }                                   \
  inline H2 operator-(const H2& a, const H2& b) { return __hsub2(a, b); }                                   \
  inline H2 operator*(const H2& a, const H2& b) { return __hmul2(a, b); }                                   \
  inline H2 operator/(const H2& a, const H2& b) { return __h2div(a, b); }                                   \
  inline H2& operator+=(H2& a, const H2& b) { a = a + b; return a; }                                        \
  inline H2& operator-=(H2& a, const H2& b) { a = a - b; return a; }                                        \
  inline H2& operator*=(H2& a, const H2& b) { a = a * b; return a; }                                        \
  inline H2& operator/=(H2& a, const H2& b) { a = a / b; return a; }

FGEMU_H16X2_OPS(__half2, __half)
FGEMU_H16X2_OPS(__nv_bfloat162, __nv_bfloat16)
#undef FGEMU_H16X2_OPS
