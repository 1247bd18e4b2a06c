// Tensor-core instructions, the one place kernels get them from (issue 20: the tensor-core GEMM builds on this).
//
// On the GPU each function is one PTX instruction (inline asm; sm_80 and later). Under the CPU emulation (FG_EMU) the
// same call is one warp collective (fgemu::warp_exchange: every lane sees every lane's fragment registers), then
// each lane computes its part with the exact fragment layouts of the PTX ISA ("Matrix Fragments for
// mma.m16n8k8 / mma.m16n8k16", "ldmatrix"): a lane that passes the wrong fragment gets the wrong product, as on
// the hardware. Every lane of the warp must call them together (mask 0xffffffff).
//
//   groupID g = lane >> 2, threadID_in_group t = lane & 3
//   m16n8k8  .tf32: A (16x8, row)  a0 (g, t)    a1 (g+8, t)    a2 (g, t+4)    a3 (g+8, t+4)
//                   B (8x8, col)   b0 (t, g)    b1 (t+4, g)
//   m16n8k16 .bf16/.f16 (two 16-bit elements per .b32 register, the lower column/row in the low half):
//                   A (16x16, row) r0 (g, 2t..2t+1)  r1 (g+8, 2t..)  r2 (g, 2t+8..)  r3 (g+8, 2t+8..)
//                   B (16x8, col)  r0 (2t..2t+1, g)  r1 (2t+8..2t+9, g)
//   C / D (16x8, f32): d0 (g, 2t)  d1 (g, 2t+1)  d2 (g+8, 2t)  d3 (g+8, 2t+1)
//
// What the emulation fixes where the ISA leaves it open: TF32 operands are read with their low 13 bits ignored
// (pass to_tf32() values: cvt.rna.tf32.f32, which the ISA defines exactly); products of TF32/BF16/FP16 values are
// exact in float32; they are summed in k order and C added last, in float32 round-to-nearest. The hardware's
// internal accumulation order and precision are not specified by the ISA, so results with cancellation may differ
// from a GPU in the last bits; exactly representable sums (the tests' integer-valued inputs) agree.
#pragma once

#include <cstring>
#include <type_traits>

#include "common.cuh"

namespace fastgan {
namespace FG_NS {
namespace tc {

// cvt.rna.tf32.f32: round to 10 explicit mantissa bits, nearest, ties away from zero; returns the .b32 register.
__device__ __forceinline__ uint32_t to_tf32(float x) {
#ifdef FG_EMU
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0x7F800000u) return (u & 0x007FFFFFu) ? 0x7FFFFFFFu : u;  // NaN (canonical), inf
  u += 0x1000u;  // half an ulp of the 10-bit mantissa on the magnitude: ties round away from zero
  return u & 0xFFFFE000u;
#else
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
#endif
}

// A float32 value rounded as cvt.rna.tf32.f32 does, as a float (what a TF32 tile stores in shared memory).
__device__ __forceinline__ float round_tf32(float x) { return __uint_as_float(to_tf32(x)); }

// Two floats exactly representable in H (__half / __nv_bfloat16) as one .b32 operand register, lo in the low half.
template <typename H>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  return (uint32_t)__half_as_ushort(__float2half_rn(lo)) | ((uint32_t)__half_as_ushort(__float2half_rn(hi)) << 16);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
         ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}

#ifdef FG_EMU
namespace detail {
inline float tf32_operand(uint32_t bits) {  // the tensor core reads 19 bits of a .tf32 register
  bits &= 0xFFFFE000u;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename H>
inline float half_lo(uint32_t r) {
  uint16_t h = (uint16_t)(r & 0xFFFFu);
  H v;
  memcpy(&v, &h, 2);
  return to_float(v);
}
template <typename H>
inline float half_hi(uint32_t r) {
  uint16_t h = (uint16_t)(r >> 16);
  H v;
  memcpy(&v, &h, 2);
  return to_float(v);
}

inline int lane_id() { return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31; }

// This lane's D fragment of one m16n8 product from the warp's gathered registers: ra(l, i) / rb(l, i) return
// register i of lane l's A / B fragment. Products exact in float32, summed in k order, C added last.
template <typename RA, typename RB>
inline void lane_tf32_16x8x8(float d[4], const float c[4], RA ra, RB rb) {
  const int lane = lane_id(), g = lane >> 2, t = lane & 3;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int k = 0; k < 8; ++k) {
    const int kq = k & 3, khi = k >> 2;
    float av[2], bv[2];
    for (int h = 0; h < 2; ++h) av[h] = tf32_operand(ra(g * 4 + kq, h + 2 * khi));  // A(g + 8h, k)
    for (int j = 0; j < 2; ++j) bv[j] = tf32_operand(rb((2 * t + j) * 4 + kq, khi));  // B(k, 2t + j)
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < 2; ++j) acc[2 * h + j] += av[h] * bv[j];
  }
  for (int i = 0; i < 4; ++i) d[i] = acc[i] + c[i];
}
template <typename H, typename RA, typename RB>
inline void lane_16x8x16(float d[4], const float c[4], RA ra, RB rb) {
  const int lane = lane_id(), g = lane >> 2, t = lane & 3;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int kp = 0; kp < 8; ++kp) {  // k = 2kp, 2kp + 1: one register holds both
    const int kq = kp & 3, khi = kp >> 2;
    float av[2][2], bv[2][2];
    for (int h = 0; h < 2; ++h) {  // rows g and g + 8
      const uint32_t r = ra(g * 4 + kq, h + 2 * khi);
      av[h][0] = half_lo<H>(r);
      av[h][1] = half_hi<H>(r);
    }
    for (int j = 0; j < 2; ++j) {  // columns 2t and 2t + 1
      const uint32_t r = rb((2 * t + j) * 4 + kq, khi);
      bv[j][0] = half_lo<H>(r);
      bv[j][1] = half_hi<H>(r);
    }
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < 2; ++j) {
        acc[2 * h + j] += av[h][0] * bv[j][0];
        acc[2 * h + j] += av[h][1] * bv[j][1];
      }
  }
  for (int i = 0; i < 4; ++i) d[i] = acc[i] + c[i];
}

template <typename H, typename RA, typename RB>  // H = float: TF32 m16n8k8; else m16n8k16 of H
inline void lane_mma(float d[4], const float c[4], RA ra, RB rb) {
  if constexpr (std::is_same<H, float>::value)
    lane_tf32_16x8x8(d, c, ra, rb);
  else
    lane_16x8x16<H>(d, c, ra, rb);
}

// Every lane's fragment registers of an MT x NJ grid of products, as the tensor cores collect them: one exchange.
template <int MT, int NJ>
struct GridRegs {
  uint32_t a[MT][4], b[NJ][2];
};
template <int MT, int NJ>
inline void gather(GridRegs<MT, NJ> (&all)[32], const uint32_t (&a)[MT][4], const uint32_t (&b)[NJ][2]) {
  GridRegs<MT, NJ> mine;
  memcpy(mine.a, a, sizeof(mine.a));
  memcpy(mine.b, b, sizeof(mine.b));
  fgemu::warp_exchange(0xffffffffu, &mine, all, (int)sizeof(mine));
}

template <typename H>
inline void mma_one(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  const uint32_t a1[1][4] = {{a[0], a[1], a[2], a[3]}};
  const uint32_t b1[1][2] = {{b[0], b[1]}};
  GridRegs<1, 1> all[32];
  gather(all, a1, b1);
  lane_mma<H>(d, c, [&](int l, int i) { return all[l].a[0][i]; }, [&](int l, int i) { return all[l].b[0][i]; });
}
}  // namespace detail
#endif

// D = A * B + C, m16n8k8, TF32 operands (registers from to_tf32), float32 accumulate.
__device__ __forceinline__ void mma_tf32_16x8x8(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                const float c[4]) {
#ifdef FG_EMU
  detail::mma_one<float>(d, a, b, c);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#endif
}

// D = A * B + C, m16n8k16, BF16 / FP16 operands, float32 accumulate.
#define FG_MMA_16X8X16(NAME, H, PTX_TYPE)                                                                         \
  __device__ __forceinline__ void NAME(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) { \
    FG_MMA_16X8X16_BODY(H, PTX_TYPE)                                                                           \
  }
#ifdef FG_EMU
#define FG_MMA_16X8X16_BODY(H, PTX_TYPE) detail::mma_one<H>(d, a, b, c);
#else
#define FG_MMA_16X8X16_BODY(H, PTX_TYPE)                                                                        \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PTX_TYPE "." PTX_TYPE                                    \
               ".f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"                        \
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                                 \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),        \
                 "f"(c[2]), "f"(c[3]));
#endif
FG_MMA_16X8X16(mma_bf16_16x8x16, __nv_bfloat16, "bf16")
FG_MMA_16X8X16(mma_f16_16x8x16, __half, "f16")
#undef FG_MMA_16X8X16
#undef FG_MMA_16X8X16_BODY

// A warp's (16 MT) x (8 NJ) tile for one k-step: MT x NJ mma.sync, A fragment a[c] of m-tile c, B fragment b[j] of
// n-tile j. acc[2c + h][2j + e] accumulates row g + 8h of m-tile c, column 2t + e of n-tile j (the D layout above).
// H = float: TF32 m16n8k8 (registers from to_tf32); __half / __nv_bfloat16: m16n8k16. Under the emulation the whole
// step is one warp exchange (the per-instruction functions above are one each).
template <typename H, int MT, int NJ>
__device__ __forceinline__ void mma_grid(float (&acc)[2 * MT][2 * NJ], const uint32_t (&a)[MT][4],
                                         const uint32_t (&b)[NJ][2]) {
#ifdef FG_EMU
  detail::GridRegs<MT, NJ> all[32];
  detail::gather(all, a, b);
#endif
  for (int c = 0; c < MT; ++c)  // constant trip counts: nvcc unrolls both loops (no #pragma: the emulation's
    for (int j = 0; j < NJ; ++j) {  // host compiler would warn)
      float d[4] = {acc[2 * c][2 * j], acc[2 * c][2 * j + 1], acc[2 * c + 1][2 * j], acc[2 * c + 1][2 * j + 1]};
#ifdef FG_EMU
      detail::lane_mma<H>(d, d, [&](int l, int i) { return all[l].a[c][i]; },
                          [&](int l, int i) { return all[l].b[j][i]; });
#else
      if constexpr (std::is_same<H, float>::value)
        mma_tf32_16x8x8(d, a[c], b[j], d);
      else if constexpr (std::is_same<H, __half>::value)
        mma_f16_16x8x16(d, a[c], b[j], d);
      else
        mma_bf16_16x8x16(d, a[c], b[j], d);
#endif
      acc[2 * c][2 * j] = d[0];
      acc[2 * c][2 * j + 1] = d[1];
      acc[2 * c + 1][2 * j] = d[2];
      acc[2 * c + 1][2 * j + 1] = d[3];
    }
}

// ldmatrix.sync.aligned.m8n8.xN(.trans).shared.b16: N 8x8 matrices of 16-bit elements from shared memory. Lanes
// 8m..8m+7 pass the addresses of rows 0..7 of matrix m (16 bytes each, 16-byte aligned). Lane l receives in r[m]
// the elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix m, or with TRANS (2(l%4), l/4) and (2(l%4)+1, l/4);
// the first in the low half.
template <int N, bool TRANS>
__device__ __forceinline__ void ldmatrix(uint32_t r[N], const void* row_addr) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix: .x1, .x2 or .x4");
#ifdef FG_EMU
  const int lane = detail::lane_id();
  if (lane < 8 * N) ::fgemu::rt::check_aligned(row_addr, 16, "an ldmatrix row address");
  const void* rows[32];
  fgemu::warp_exchange(0xffffffffu, &row_addr, rows, (int)sizeof(const void*));
  for (int m = 0; m < N; ++m) {
    uint16_t e[2];
    for (int i = 0; i < 2; ++i) {
      const int row = TRANS ? 2 * (lane & 3) + i : lane >> 2;
      const int col = TRANS ? lane >> 2 : 2 * (lane & 3) + i;
      memcpy(&e[i], static_cast<const unsigned char*>(rows[8 * m + row]) + 2 * col, 2);
    }
    r[m] = (uint32_t)e[0] | ((uint32_t)e[1] << 16);
  }
#else
  const unsigned s = (unsigned)__cvta_generic_to_shared(row_addr);
#define FG_LDMATRIX(XN, REGS, ...)                                                                      \
  if (TRANS)                                                                                            \
    asm volatile("ldmatrix.sync.aligned.m8n8." XN ".trans.shared.b16 " REGS ";" : __VA_ARGS__ : "r"(s)); \
  else                                                                                                  \
    asm volatile("ldmatrix.sync.aligned.m8n8." XN ".shared.b16 " REGS ";" : __VA_ARGS__ : "r"(s));
  if constexpr (N == 1) {
    FG_LDMATRIX("x1", "{%0}, [%1]", "=r"(r[0]))
  } else if constexpr (N == 2) {
    FG_LDMATRIX("x2", "{%0, %1}, [%2]", "=r"(r[0]), "=r"(r[1]))
  } else {
    FG_LDMATRIX("x4", "{%0, %1, %2, %3}, [%4]", "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]))
  }
#undef FG_LDMATRIX
#endif
}

// cp.async.{ca,cg}.shared.global: an asynchronous BYTES-byte copy (4, 8 or 16; addresses aligned to it) from global
// to shared memory, of which the first src_bytes come from the source and the rest are zero (bounds / padding).
// The copy belongs to the group the next cp_async_commit() closes, and may be read only after a cp_async_wait<N>()
// that leaves at most N newer groups pending (a barrier does not wait for it). Under the emulation the destination
// holds the launch's fill byte until then, so a missing or short wait reads poison, as it may read stale data on a
// GPU. sm_80 and later.
template <int BYTES>
__device__ __forceinline__ void cp_async(void* smem_dst, const void* gmem_src, int src_bytes = BYTES) {
  static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
#ifdef FG_EMU
  fgemu::rt::async_copy(smem_dst, gmem_src, BYTES, src_bytes);
#else
  const unsigned s = (unsigned)__cvta_generic_to_shared(smem_dst);
  if constexpr (BYTES == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem_src), "r"(src_bytes) : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(s), "l"(gmem_src), "n"(BYTES), "r"(src_bytes)
                 : "memory");
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#ifdef FG_EMU
  fgemu::rt::async_commit();
#else
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef FG_EMU
  fgemu::rt::async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

}  // namespace tc
}  // namespace FG_NS
}  // namespace fastgan
