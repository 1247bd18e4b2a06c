// Tiled implicit GEMM with a fused bias/activation/gain/clamp epilogue: the engine of dense (forward, dX, dW)
// and conv2d (forward, backward data, backward weight). See GemmParams in launchers.h for the operand model
// (mixed-radix indices; kinds mat / im2col).
//
// Design (predictions in benchmarks/notes_kernels.md):
//   * block tile BM x BN x BK in shared memory (two stages), 256 threads; two ways to multiply a tile:
//     - tensor cores (TcCfg): 8 warps as 2 x 4, each warp (BM/32) m16 x (BN/32) n8 mma.sync tiles: TF32
//       m16n8k8 for float32 when torch allows TF32 (GemmParams::tf32), BF16/FP16 m16n8k16 for half types
//       (always), float32 accumulators. A warp's m16 tiles are spaced 32 rows apart (not adjacent) so that
//       m-tile c of every warp forms one contiguous 32-row chunk for the epilogue. Fragments are read from the
//       float tile with one 32-bit load per register (the row pad makes those reads conflict-free); float32
//       values are rounded to TF32 once, when the tile is stored;
//     - SIMT FMA (TileCfg): each thread a TM x TN register tile made of 4x4 sub-tiles spaced so that a warp's
//       shared-memory fragment reads are contiguous (no bank conflicts, 16-byte reads where the compiler can
//       vectorise them). The full-precision path: float32 without TF32, float64;
//   * global -> register prefetch of tile t+1 while tile t is multiplied: one __syncthreads per k-tile;
//   * operand loads are scalar and coalesced along whichever index has unit stride (GemmOperand::k_fast);
//     half types are widened to float when they enter shared memory, so all arithmetic is float (double for
//     float64);
//   * the epilogue stages the accumulator tile through shared memory and writes it with the output's unit
//     stride across the warp (NCHW conv outputs are m-contiguous, dense outputs n-contiguous), applying
//     bias + activation + gain + clamp on the way: one store per element;
//   * split-K (groups x splits blocks per tile) when the tile grid cannot fill the device: each split writes float
//     partial sums to a workspace; the last split of a tile to arrive (an atomic counter per tile, fenced) sums
//     them in a fixed order (bitwise deterministic) and applies the epilogue: no second launch;
//   * index arithmetic: 32-bit digit indices with multiply-shift division (FastDiv, < 2^31), 64-bit element
//     offsets. The host side rejects problems beyond these limits (the glue routes them to ATen first).
// The CPU emulation runs this very source (the tensor-core instructions through mma.cuh's emulated layouts).
#pragma once

#include <algorithm>
#include <type_traits>

#include "common.cuh"
#include "fastdiv.cuh"
#include "mma.cuh"

namespace fastgan {
namespace FG_NS {
namespace gemm {

struct DevIndex {
  FastDiv d2, d1;
  int32_t off0, off1, off2;
  int32_t h0, h1, h2, w0, w1, w2;
};

struct Coord {
  int32_t off, h, w;
};

__device__ __forceinline__ Coord split_index(const DevIndex& x, uint32_t i) {
  const uint32_t q = x.d2.div(i);
  const int32_t d2 = (int32_t)(i - q * x.d2.d);
  const uint32_t d0u = x.d1.div(q);
  const int32_t d1 = (int32_t)(q - d0u * x.d1.d), d0 = (int32_t)d0u;
  Coord c;
  c.off = d0 * x.off0 + d1 * x.off1 + d2 * x.off2;
  c.h = d0 * x.h0 + d1 * x.h1 + d2 * x.h2;
  c.w = d0 * x.w0 + d1 * x.w1 + d2 * x.w2;
  return c;
}

template <typename T>
struct DevOperand {
  const T* ptr;
  int64_t group_stride;
  DevIndex r, k;
  int32_t h0, w0, H, W;
  int32_t sh, sw;
  int32_t k_fast;
  // A of a backward GEMM (GemmParams::a_y): elements are dL/dy and enter as act_backward(v, y) with y read at the
  // same offset (y has the operand's strides). nullptr: elements as they are.
  const T* y;
  int act;
  typename OpMath<T>::type alpha, gain, clamp;
};

// dL/dz = act_backward(dL/dy, y) for the operand's activation (a block-uniform switch).
template <typename T>
__device__ __forceinline__ typename OpMath<T>::type act_grad(const DevOperand<T>& op, typename OpMath<T>::type v,
                                                             typename OpMath<T>::type y) {
  using M = typename OpMath<T>::type;
  switch (op.act) {
#define FG_GEMM_DACT_CASE(code, name, F) \
  case code: return act_backward<F, M>(v, y, op.alpha, op.gain, op.clamp);
    FG_ACTIVATIONS(FG_GEMM_DACT_CASE)
#undef FG_GEMM_DACT_CASE
    default: return v;
  }
}

template <typename T>
struct GemmArgs {
  using M = typename OpMath<T>::type;
  DevOperand<T> a, b;
  T* out;
  int64_t out_group_stride, s_outer, s_mid, s_inner, s_n;
  FastDiv P, P2;
  const T* bias;
  const T* out_y;  // GemmParams::out_y: the epilogue writes act_backward(v, out_y[off]), or nullptr
  M alpha, gain, clamp;
  int act;
  int tf32;  // float32 tiles multiply on tensor cores (inputs rounded to TF32)
  int splits;
  int64_t Mrows, Ncols, K, kchunk;
  M* ws;          // split-K partial sums: [groups * splits][M][N]
  int* counters;  // split-K: one zero slot per output tile (arrivals), left zero
  T* rowsum;      // GemmParams::rowsum: [groups][M] sums over k of A, or nullptr
  M* ws_rows;     // split-K with row sums: their partials, [groups * splits][M] (after ws's tiles)
};

// Up to kMaxParts independent GEMMs in one launch: the stride phases of a convolution's input gradient (one launch
// instead of sh * sw), a layer's weight and input gradients side by side. Parts [0, nfirst) have the kernel's
// first operand kinds, the rest its second (gemm_kernel); each has its own tile grid, split-K and counter slots.
// A 1-D grid: part i owns blocks [bbase[i], bbase[i + 1]), its tiles_m x tiles_n tiles x groups x splits in that
// order (m fastest), so parts of very different shapes waste no blocks. Read in place from the parameter space
// (__grid_constant__: no per-thread copy).
constexpr int kMaxParts = 5;
template <typename T>
struct GemmBatch {
  GemmArgs<T> part[kMaxParts];
  int bbase[kMaxParts + 1];
  int tiles_m[kMaxParts], tiles_n[kMaxParts];
  int nparts, nfirst;
};

// Tile configurations. NT threads arranged TY x TX; each thread owns TM x TN outputs as (TM/4) x (TN/4)
// sub-tiles of 4 x 4, sub-tile rows spaced by TY*4, columns by TX*4.
// Both kinds of configuration describe a thread's accumulators acc[TM][TN] the same way for the epilogue: row i
// of the tile is (i / IPC) * CH + crow(tid, i % IPC) (chunk i / IPC of CH rows), column j is col(tid, j).
template <int BM_, int BN_, int BK_, int TM_, int TN_, int MINB_>
struct TileCfg {
  static constexpr bool kTensorCores = false;
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_, MINB = MINB_;
  static constexpr int TX = BN / TN, TY = BM / TM, NT = TX * TY;
  static constexpr int PAD = 4;  // keeps rows 16-byte aligned; k-fast smem stores are at most 2-way conflicted
  static constexpr int LDA = BM + PAD, LDB = BN + PAD;
  static constexpr int CH = TY * 4;  // epilogue staging: rows per chunk (one sub-tile row of every thread)
  static constexpr int IPC = 4;
  static constexpr int LDC = BN + 1;
  __device__ __forceinline__ static int crow(int tid, int ii) { return (tid / TX) * 4 + ii; }
  __device__ __forceinline__ static int col(int tid, int j) { return (tid % TX) * 4 + (j / 4) * (TX * 4) + (j % 4); }
  static constexpr int kMainElems = 2 * BK * LDA + 2 * BK * LDB;
  static constexpr int kStageElems = CH * LDC;
  static constexpr int kSmemElems = kMainElems > kStageElems ? kMainElems : kStageElems;
  static_assert(TM % 4 == 0 && TN % 4 == 0, "register tiles are made of 4x4 sub-tiles");
  static_assert(NT % BM == 0 && NT % BN == 0 && NT % BK == 0, "loader mappings need NT divisible by the tile");
  static_assert((BM * BK) % NT == 0 && (BN * BK) % NT == 0 && (CH * BN) % NT == 0, "even work split");
};
// Register budgets (ptxas, sm_80/sm_90; tools/check_kernels.py prints them): the 64 tile needs ~105-125
// registers (2 blocks = 16 warps per SM); its float64 twin and the 128 tile (~165 registers) run one block per
// SM and spill nothing.
using Cfg64 = TileCfg<64, 64, 16, 4, 4, 2>;    // float/half types; small and medium problems, split-K capable
using Cfg64d = TileCfg<64, 64, 16, 4, 4, 1>;   // float64
using Cfg128 = TileCfg<128, 128, 8, 8, 8, 1>;  // float/half types; problems that fill the device

// Tensor-core tiles: 8 warps as WARPS_M x WARPS_N; a warp owns MT m16 tiles (rows (c * WARPS_M + wm) * 16 ...)
// and NJ n8 tiles (columns (j * WARPS_N + wn) * 8 ...). A lane holds rows g, g + 8 and columns 2t, 2t + 1 of
// each (g = lane / 4, t = lane % 4): the mma accumulator layout. PAD makes the fragment loads conflict-free:
// TF32 reads rows k = t (LDA = 8 mod 32 banks), 16-bit types rows k = 2t (LDA = 4 mod 32).
template <int BM_, int BN_, int BK_, int PAD_, int MINB_>
struct TcCfg {
  static constexpr bool kTensorCores = true;
  static constexpr int WARPS_M = 2, WARPS_N = 4;
  static constexpr int BM = BM_, BN = BN_, BK = BK_, MINB = MINB_, NT = 32 * WARPS_M * WARPS_N;
  static constexpr int MT = BM / (16 * WARPS_M), NJ = BN / (8 * WARPS_N);
  static constexpr int TM = 2 * MT, TN = 2 * NJ;
  static constexpr int PAD = PAD_, LDA = BM + PAD, LDB = BN + PAD;
  static constexpr int CH = 16 * WARPS_M, IPC = 2;
  static constexpr int LDC = BN + 1;
  static constexpr int kMainElems = 2 * BK * LDA + 2 * BK * LDB;
  static constexpr int kStageElems = CH * LDC;
  static constexpr int kSmemElems = kMainElems > kStageElems ? kMainElems : kStageElems;
  __device__ __forceinline__ static int crow(int tid, int h) { return ((tid >> 5) / WARPS_N) * 16 + ((tid & 31) >> 2) + 8 * h; }
  __device__ __forceinline__ static int col(int tid, int j) {
    return ((j >> 1) * WARPS_N + (tid >> 5) % WARPS_N) * 8 + 2 * (tid & 3) + (j & 1);
  }
  static_assert(BM % (16 * WARPS_M) == 0 && BN % (8 * WARPS_N) == 0 && BK % 16 == 0, "whole mma tiles");
  static_assert(NT % BM == 0 && NT % BN == 0 && NT % BK == 0, "loader mappings need NT divisible by the tile");
  static_assert((BM * BK) % NT == 0 && (BN * BK) % NT == 0 && (CH * BN) % NT == 0, "even work split");
};
template <typename T>
using Tc64For = TcCfg<64, 64, 16, sizeof(T) == 2 ? 4 : 8, 2>;
template <typename T>
using Tc128For = TcCfg<128, 128, 16, sizeof(T) == 2 ? 4 : 8, 1>;

// The smallest magnitude that becomes inf when a fetched value is rounded for the tensor cores: to TF32 (cvt.rna)
// for float, to T itself for the 16-bit types (an activation gradient applied on the fly, DACT, can leave T's range,
// and 0 x inf on a padding tap would then give NaN). Round to nearest: the midpoint above the largest finite value.
template <typename T> struct FiniteBelow { static constexpr float value = 0x1.ffep+127f; };
template <> struct FiniteBelow<__half> { static constexpr float value = 65520.0f; };
template <> struct FiniteBelow<__nv_bfloat16> { static constexpr float value = 0x1.ffp+127f; };

// Loads a ROWS x BK slice of one operand (k in [k0, k0 + BK), r in [row0, row0 + ROWS)) into registers and
// from there into shared memory laid out [BK][ROWS + PAD] (r contiguous). DACT: the operand may carry an activation
// gradient (DevOperand::y; the A operand).
template <typename T, OperandKind KIND, int ROWS, int BK, int NT, bool DACT = false>
struct TileLoader {
  using M = typename OpMath<T>::type;
  static constexpr int E = ROWS * BK / NT;  // elements per thread per tile
  static constexpr int RSTEP = NT / BK;     // k-fast mapping: rows between a thread's elements
  static constexpr int KSTEP = NT / ROWS;   // r-fast mapping: ks between a thread's elements
  const T* base;
  const T* ybase;   // DACT: the saved output y at the operand's offsets, or nullptr
  int32_t roff[E], rh[E], rw[E];
  bool rok[E];
  int rl0, kl0;
  M v[E];
  bool pad[E];      // im2col: the element is zero padding (it must not take part in products: 0 x NaN = NaN)
  bool nonfinite;   // the tile just fetched holds an inf or NaN

  __device__ __forceinline__ void init(const DevOperand<T>& op, int group, int64_t row0, int64_t rows, int tid) {
    base = op.ptr + (int64_t)group * op.group_stride;
    ybase = DACT && op.y != nullptr ? op.y + (int64_t)group * op.group_stride : nullptr;
    if (op.k_fast) {
      kl0 = tid % BK;
      rl0 = tid / BK;
    } else {
      rl0 = tid % ROWS;
      kl0 = tid / ROWS;
    }
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int64_t r = row0 + rl0 + (op.k_fast ? e * RSTEP : 0);
      rok[e] = r < rows;
      const Coord c = split_index(op.r, rok[e] ? (uint32_t)r : 0u);
      roff[e] = c.off;
      rh[e] = c.h + op.h0;
      rw[e] = c.w + op.w0;
    }
  }

  __device__ __forceinline__ M value(const DevOperand<T>& op, int64_t off) const {
    const M v = load(base, off);
    return DACT && ybase != nullptr ? act_grad(op, v, load(ybase, off)) : v;
  }

  __device__ __forceinline__ M element(const DevOperand<T>& op, int e, const Coord& kc, bool kok) {
    bool ok = rok[e] && kok;
    if (KIND == OperandKind::mat) return ok ? value(op, roff[e] + kc.off) : M(0);
    const int32_t hc = rh[e] + kc.h, wc = rw[e] + kc.w;  // im2col: zero outside [0, H) x [0, W)
    const bool inside = (uint32_t)hc < (uint32_t)op.H && (uint32_t)wc < (uint32_t)op.W;
    pad[e] = ok && !inside;
    return ok && inside ? value(op, roff[e] + kc.off + hc * op.sh + wc * op.sw) : M(0);
  }

  // Row sums of the fetched values, accumulated in shared memory rs [slots][ROWS]: each (slot, row) belongs to one
  // thread (slot = its k lane), which adds its elements in a fixed order, so no barrier is needed until the slots
  // are summed (rows_sum_slots) and the result does not depend on scheduling.
  static constexpr int kRowSlotsKFast = BK, kRowSlotsRFast = KSTEP;
  __device__ __forceinline__ void zero_rows(M* rs, bool k_fast) const {
    if (k_fast) {
#pragma unroll
      for (int e = 0; e < E; ++e) rs[kl0 * ROWS + rl0 + e * RSTEP] = M(0);
    } else {
      rs[kl0 * ROWS + rl0] = M(0);
    }
  }
  __device__ __forceinline__ void add_rows(M* rs, bool k_fast) const {
    if (k_fast) {
#pragma unroll
      for (int e = 0; e < E; ++e) rs[kl0 * ROWS + rl0 + e * RSTEP] += v[e];
    } else {
      M s = rs[kl0 * ROWS + rl0];
#pragma unroll
      for (int e = 0; e < E; ++e) s += v[e];
      rs[kl0 * ROWS + rl0] = s;
    }
  }

  // inf, NaN, and finite values that the tensor cores' rounding turns into inf (FiniteBelow; flagging those on the
  // exact paths too only costs the masked loop).
  __device__ __forceinline__ void check_finite() {
    nonfinite = false;
    constexpr M lim = M(FiniteBelow<T>::value);
#pragma unroll
    for (int e = 0; e < E; ++e) nonfinite |= !(v[e] < lim && v[e] > -lim);
  }

  __device__ __forceinline__ void fetch(const DevOperand<T>& op, int64_t k0, int64_t kend) {
    if (op.k_fast) {
      const int64_t k = k0 + kl0;
      const bool kok = k < kend;
      const Coord kc = split_index(op.k, kok ? (uint32_t)k : 0u);
#pragma unroll
      for (int e = 0; e < E; ++e) v[e] = element(op, e, kc, kok);
    } else {
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const int64_t k = k0 + kl0 + e * KSTEP;
        const bool kok = k < kend;
        const Coord kc = split_index(op.k, kok ? (uint32_t)k : 0u);
        v[e] = element(op, e, kc, kok);
      }
    }
    if (KIND == OperandKind::mat) check_finite();
  }

  // Writes one value per element into a [BK][LD] shared-memory tile at the element's (k, r) position.
  template <int LD, typename S, typename V>
  __device__ __forceinline__ void scatter(S* dst, const V (&vals)[E], bool k_fast) const {
    if (k_fast) {
#pragma unroll
      for (int e = 0; e < E; ++e) dst[kl0 * LD + rl0 + e * RSTEP] = vals[e];
    } else {
#pragma unroll
      for (int e = 0; e < E; ++e) dst[(kl0 + e * KSTEP) * LD + rl0] = vals[e];
    }
  }
  // TF32: the tile holds the values the tensor cores read (rounded once here, not per fragment load).
  template <int LD, bool TF32>
  __device__ __forceinline__ void store(M* S, bool k_fast) const {
    if constexpr (TF32) {
      M r[E];
#pragma unroll
      for (int e = 0; e < E; ++e) r[e] = tc::round_tf32(v[e]);
      scatter<LD>(S, r, k_fast);
    } else {
      scatter<LD>(S, v, k_fast);
    }
  }
  // im2col operands: which elements of the stored tile are padding (same layout as store(), LD = ROWS + 4).
  __device__ __forceinline__ void store_pad(unsigned char* S, bool k_fast) const { scatter<ROWS + 4>(S, pad, k_fast); }
};

template <typename T, typename A>
__device__ __forceinline__ void epilogue_store(const GemmArgs<T>& p, T* out, const T* bias, int64_t m, int64_t n,
                                               typename OpMath<T>::type v) {
  using M = typename OpMath<T>::type;
  if (bias != nullptr) v += load(bias, n);
  const uint32_t q = p.P.div((uint32_t)m);
  const uint32_t r = (uint32_t)m - q * p.P.d;
  const uint32_t r1 = p.P2.div(r);
  const int64_t off = (int64_t)q * p.s_outer + (int64_t)r1 * p.s_mid + (int64_t)(r - r1 * p.P2.d) * p.s_inner +
                      n * p.s_n;
  if (p.out_y != nullptr)  // (block-uniform) dz's adjoint of a double backward: act' of the layer's saved output
    store(out, off, act_backward<A, M>(v, load(p.out_y + (out - p.out), off), p.alpha, p.gain, p.clamp));
  else
    store(out, off, act_forward<A, M>(v, p.alpha, p.gain, p.clamp));
}

// Writes one staged chunk (rows [r0, r0 + CH) of the block tile) with the epilogue of activation A.
template <typename Cfg, typename T, typename A>
__device__ __forceinline__ void write_chunk(const GemmArgs<T>& p, const typename OpMath<T>::type* Cs, T* out,
                                            const T* bias, int64_t mbase, int64_t n0, bool m_fast, int tid) {
  constexpr int PER = Cfg::CH * Cfg::BN / Cfg::NT;
#pragma unroll 4
  for (int e = 0; e < PER; ++e) {
    const int idx = tid + e * Cfg::NT;
    const int rl = m_fast ? idx % Cfg::CH : idx / Cfg::BN;
    const int nl = m_fast ? idx / Cfg::CH : idx % Cfg::BN;
    const int64_t m = mbase + rl, n = n0 + nl;
    if (m < p.Mrows && n < p.Ncols) epilogue_store<T, A>(p, out, bias, m, n, Cs[rl * Cfg::LDC + nl]);
  }
}

// One k-tile on tensor cores: acc (the mma accumulator layout of TcCfg) += As^T Bs, As [BK][LDA] (m contiguous),
// Bs [BK][LDB] (n contiguous), float values exactly representable in the operand type (TF32-rounded for float).
template <typename T, typename Cfg>
__device__ __forceinline__ void mma_tile(float (&acc)[Cfg::TM][Cfg::TN], const float* As, const float* Bs, int tid) {
  constexpr int LDA = Cfg::LDA, LDB = Cfg::LDB, MT = Cfg::MT, NJ = Cfg::NJ;
  const int g = (tid & 31) >> 2, t = tid & 3;
  const float* Ac = As + ((tid >> 5) / Cfg::WARPS_N) * 16 + g;  // m-tile c adds c * 16 * WARPS_M
  const float* Bc = Bs + ((tid >> 5) % Cfg::WARPS_N) * 8 + g;   // n-tile j adds j * 8 * WARPS_N
  if constexpr (std::is_same<T, float>::value) {  // m16n8k8: A (g, t) (g+8, t) (g, t+4) (g+8, t+4); B (t, g) (t+4, g)
#pragma unroll
    for (int kk = 0; kk < Cfg::BK; kk += 8) {
      uint32_t af[MT][4], bf[NJ][2];
#pragma unroll
      for (int c = 0; c < MT; ++c) {
        const float* a = Ac + (kk + t) * LDA + c * 16 * Cfg::WARPS_M;
        af[c][0] = __float_as_uint(a[0]);
        af[c][1] = __float_as_uint(a[8]);
        af[c][2] = __float_as_uint(a[4 * LDA]);
        af[c][3] = __float_as_uint(a[4 * LDA + 8]);
      }
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        const float* b = Bc + (kk + t) * LDB + j * 8 * Cfg::WARPS_N;
        bf[j][0] = __float_as_uint(b[0]);
        bf[j][1] = __float_as_uint(b[4 * LDB]);
      }
      tc::mma_grid<T, MT, NJ>(acc, af, bf);
    }
  } else {  // m16n8k16: A rows g, g+8 x k pairs (2t, 2t+1), (2t+8, 2t+9); B k pairs (2t, 2t+1), (2t+8, 2t+9) x column g
#pragma unroll
    for (int kk = 0; kk < Cfg::BK; kk += 16) {
      uint32_t af[MT][4], bf[NJ][2];
#pragma unroll
      for (int c = 0; c < MT; ++c) {
        const float* a = Ac + (kk + 2 * t) * LDA + c * 16 * Cfg::WARPS_M;
        af[c][0] = tc::pack2<T>(a[0], a[LDA]);
        af[c][1] = tc::pack2<T>(a[8], a[LDA + 8]);
        af[c][2] = tc::pack2<T>(a[8 * LDA], a[9 * LDA]);
        af[c][3] = tc::pack2<T>(a[8 * LDA + 8], a[9 * LDA + 8]);
      }
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        const float* b = Bc + (kk + 2 * t) * LDB + j * 8 * Cfg::WARPS_N;
        bf[j][0] = tc::pack2<T>(b[0], b[LDB]);
        bf[j][1] = tc::pack2<T>(b[8 * LDB], b[9 * LDB]);
      }
      tc::mma_grid<T, MT, NJ>(acc, af, bf);
    }
  }
}

// One k-tile on the SIMT path (TileCfg): each thread its TM x TN outer products.
template <typename Cfg, typename M>
__device__ __forceinline__ void fma_tile(M (&acc)[Cfg::TM][Cfg::TN], const M* As, const M* Bs, int tid) {
  const M* Ac = As + (tid / Cfg::TX) * 4;
  const M* Bc = Bs + (tid % Cfg::TX) * 4;
#pragma unroll
  for (int kk = 0; kk < Cfg::BK; ++kk) {
    M a[Cfg::TM], b[Cfg::TN];
#pragma unroll
    for (int i = 0; i < Cfg::TM; ++i) a[i] = Ac[kk * Cfg::LDA + (i / 4) * (Cfg::TY * 4) + (i % 4)];
#pragma unroll
    for (int j = 0; j < Cfg::TN; ++j) b[j] = Bc[kk * Cfg::LDB + (j / 4) * (Cfg::TX * 4) + (j % 4)];
#pragma unroll
    for (int i = 0; i < Cfg::TM; ++i)
#pragma unroll
      for (int j = 0; j < Cfg::TN; ++j) acc[i][j] += a[i] * b[j];
  }
}

template <typename Cfg>
__device__ __forceinline__ int tile_row(int tid, int i) {
  return (i / Cfg::IPC) * Cfg::CH + Cfg::crow(tid, i % Cfg::IPC);
}

// Split-K finish of one output tile (group g, rows m0.., columns n0..): C = sum over s in order of the partials.
template <typename Cfg, typename T, typename A>
__device__ __forceinline__ void finish_splits(const GemmArgs<T>& p, T* out, const T* bias, int g, int64_t m0,
                                              int64_t n0, int tid) {
  using M = typename OpMath<T>::type;
  const int64_t MN = p.Mrows * p.Ncols;
  const M* w = p.ws + (int64_t)g * p.splits * MN;
  for (int idx = tid; idx < Cfg::BM * Cfg::BN; idx += Cfg::NT) {
    const int64_t m = m0 + idx / Cfg::BN, n = n0 + idx % Cfg::BN;
    if (m >= p.Mrows || n >= p.Ncols) continue;
    const M* e = w + m * p.Ncols + n;
    M acc = M(0);
    for (int s = 0; s < p.splits; ++s) acc += e[s * MN];
    epilogue_store<T, A>(p, out, bias, m, n, acc);
  }
}

// Convolutions: padding must not take part in products (0 x inf = NaN would reach outputs the non-finite value
// does not touch in torch). When a k-tile of the plain operand holds an inf or NaN (a block-uniform flag from the
// barrier), that tile is multiplied with the im2col operand's padding masked out; otherwise the plain loop runs.
// pad_s: the padding flags of a tile pair, 2 x BK x (PadRows + 4) bytes.
template <typename Cfg, OperandKind AK, OperandKind BKIND>
struct PadMask {
  static constexpr bool kA = AK == OperandKind::im2col && BKIND == OperandKind::mat;
  static constexpr bool kB = AK == OperandKind::mat && BKIND == OperandKind::im2col;
  static constexpr int kRows = kA ? Cfg::BM : (kB ? Cfg::BN : 1);
  static constexpr int kBytes = kA || kB ? 2 * Cfg::BK * (kRows + 4) : 1;
};

// Block blockIdx.x of a launch, as part `part`'s tile (bx, by) of its tiles_m x tiles_n grid and z its group x
// split index.
struct BlockTile {
  int bx, by, z, tiles_m, tiles_n;
};
template <typename T>
__device__ __forceinline__ BlockTile block_tile(const GemmBatch<T>& batch, const int part) {
  BlockTile t;
  t.tiles_m = batch.tiles_m[part];
  t.tiles_n = batch.tiles_n[part];
  const int local = (int)blockIdx.x - batch.bbase[part], rest = local / t.tiles_m;
  t.bx = local - rest * t.tiles_m;
  t.z = rest / t.tiles_n;
  t.by = rest - t.z * t.tiles_n;
  return t;
}

// One block of part `part` with the kernel's shared memory: smem (tiles, then the epilogue's staging), pad_s
// (PadMask), rs_s (row sums, the 64 tiles).
template <typename T, typename Cfg, OperandKind AK, OperandKind BKIND>
__device__ __forceinline__ void gemm_block(const GemmBatch<T>& batch, const int part, typename OpMath<T>::type* smem,
                                           unsigned char* pad_s, typename OpMath<T>::type* rs_s) {
  using M = typename OpMath<T>::type;
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, TM = Cfg::TM, TN = Cfg::TN;
  constexpr int LDA = Cfg::LDA, LDB = Cfg::LDB;
  constexpr bool kTF32 = Cfg::kTensorCores && std::is_same<T, float>::value;
  constexpr bool kMaskA = PadMask<Cfg, AK, BKIND>::kA, kMaskB = PadMask<Cfg, AK, BKIND>::kB;
  constexpr int kPadRows = PadMask<Cfg, AK, BKIND>::kRows;

  const GemmArgs<T>& p = batch.part[part];
  const BlockTile bt = block_tile(batch, part);
  const int z = bt.z;
  // The block's tile (bx, by, z) and split-K counter slot, kept in shared memory for after the main loop: values
  // decoded with divisions are not rematerialised, and held in registers across the loop they made the 64 tiles
  // (at the 128-register cap) spill.
  __shared__ int tile_s[4];
  const int64_t m0 = (int64_t)bt.bx * BM, n0 = (int64_t)bt.by * BN;
  if (m0 >= p.Mrows || n0 >= p.Ncols) return;  // (never: the grid is the parts' own tiles; block-uniform)
  const int tid = threadIdx.x;
  const int g = z / p.splits, s = z - g * p.splits;
  if (tid == 0) {  // (read only after the barrier that follows the first tile's load, which every path passes)
    tile_s[0] = bt.bx;
    tile_s[1] = bt.by;
    tile_s[2] = z;
    tile_s[3] = (g * bt.tiles_n + bt.by) * bt.tiles_m + bt.bx;
  }
  const int64_t kbeg = (int64_t)s * p.kchunk;
  const int64_t kend = kbeg + p.kchunk < p.K ? kbeg + p.kchunk : p.K;
  const int nt = kend > kbeg ? (int)((kend - kbeg + BK - 1) / BK) : 0;

  TileLoader<T, AK, BM, BK, Cfg::NT, true> la;
  TileLoader<T, BKIND, BN, BK, Cfg::NT> lb;
  la.init(p.a, g, m0, p.Mrows, tid);
  lb.init(p.b, g, n0, p.Ncols, tid);
  // Row sums of A (GemmParams::rowsum: the bias gradient of a weight-gradient GEMM), by the blocks of the first
  // column of tiles, from the values as loaded (before any TF32 rounding). The 64 tiles only (make_plan).
  constexpr bool kRowSums = BM == 64;
  const bool rows_here = kRowSums && p.rowsum != nullptr && bt.by == 0;
  if (rows_here) la.zero_rows(rs_s, p.a.k_fast);

  M acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = M(0);

  M* As = smem;
  M* Bs = smem + 2 * BK * LDA;
  constexpr int LDP = kPadRows + 4;
  auto store_tiles = [&](int buf) {
    la.template store<LDA, kTF32>(As + buf * BK * LDA, p.a.k_fast);
    lb.template store<LDB, kTF32>(Bs + buf * BK * LDB, p.b.k_fast);
    if (kMaskA) la.store_pad(pad_s + buf * BK * LDP, p.a.k_fast);
    if (kMaskB) lb.store_pad(pad_s + buf * BK * LDP, p.b.k_fast);
  };
  auto tile_nonfinite = [&]() { return kMaskA ? lb.nonfinite : (kMaskB ? la.nonfinite : false); };
  bool nonfinite = false;
  if (nt > 0) {
    la.fetch(p.a, kbeg, kend);
    lb.fetch(p.b, kbeg, kend);
    if (rows_here) la.add_rows(rs_s, p.a.k_fast);
    store_tiles(0);
  }
  if (kMaskA || kMaskB)
    nonfinite = __syncthreads_or(nt > 0 && tile_nonfinite()) != 0;
  else
    __syncthreads();

  for (int t = 0; t < nt; ++t) {
    const int cur = t & 1;
    const bool more = t + 1 < nt;
    if (more) {  // global loads of the next tile are in flight while this one is multiplied
      la.fetch(p.a, kbeg + (int64_t)(t + 1) * BK, kend);
      lb.fetch(p.b, kbeg + (int64_t)(t + 1) * BK, kend);
      if (rows_here) la.add_rows(rs_s, p.a.k_fast);
    }
    const M* Ac = As + cur * BK * LDA;
    const M* Bc = Bs + cur * BK * LDB;
    if (!(kMaskA || kMaskB) || !nonfinite) {
      if constexpr (Cfg::kTensorCores)
        mma_tile<T, Cfg>(acc, Ac, Bc, tid);
      else
        fma_tile<Cfg>(acc, Ac, Bc, tid);
    } else {  // rare: padding masked out of the products (scalar FMA in either accumulator layout)
      const unsigned char* Pc = pad_s + cur * BK * LDP;
#pragma unroll 1
      for (int kk = 0; kk < BK; ++kk) {
        M a[TM], b[TN];
        bool pz[kMaskA ? TM : TN];
#pragma unroll
        for (int i = 0; i < TM; ++i) a[i] = Ac[kk * LDA + tile_row<Cfg>(tid, i)];
#pragma unroll
        for (int j = 0; j < TN; ++j) b[j] = Bc[kk * LDB + Cfg::col(tid, j)];
#pragma unroll
        for (int q = 0; q < (kMaskA ? TM : TN); ++q)
          pz[q] = Pc[kk * LDP + (kMaskA ? tile_row<Cfg>(tid, q) : Cfg::col(tid, q))] != 0;
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j)
            if (!pz[kMaskA ? i : j]) acc[i][j] += a[i] * b[j];
      }
    }
    if (more) store_tiles(cur ^ 1);
    if (kMaskA || kMaskB)
      nonfinite = __syncthreads_or(more && tile_nonfinite()) != 0;
    else
      __syncthreads();
  }

  const int64_t m0f = (int64_t)tile_s[0] * BM, n0f = (int64_t)tile_s[1] * BN;
  const int zf = tile_s[2], gf = zf / p.splits;
  const bool split = p.splits > 1;
  // Row sums: the slots of each row in a fixed order (the main loop's last barrier ordered every add before this).
  if (rows_here && tid < BM && m0f + tid < p.Mrows) {
    const int slots = p.a.k_fast ? decltype(la)::kRowSlotsKFast : decltype(la)::kRowSlotsRFast;
    M r = M(0);
    for (int q = 0; q < slots; ++q) r += rs_s[q * BM + tid];
    if (split)
      p.ws_rows[(int64_t)zf * p.Mrows + m0f + tid] = r;
    else
      store(p.rowsum, (int64_t)gf * p.Mrows + m0f + tid, r);
  }

  // Epilogue: stage CH rows at a time through shared memory (the main loop's last barrier freed it).
  M* Cs = smem;
  const bool m_fast = !split && (p.s_inner == 1 || p.s_inner < p.s_n);  // write along the smaller stride
  T* out = p.out + (int64_t)gf * p.out_group_stride;
  const T* bias = p.bias != nullptr ? p.bias + (int64_t)gf * p.Ncols : nullptr;
#pragma unroll
  for (int c = 0; c < TM / Cfg::IPC; ++c) {
#pragma unroll
    for (int ii = 0; ii < Cfg::IPC; ++ii)
#pragma unroll
      for (int j = 0; j < TN; ++j) Cs[Cfg::crow(tid, ii) * Cfg::LDC + Cfg::col(tid, j)] = acc[c * Cfg::IPC + ii][j];
    __syncthreads();
    const int64_t mbase = m0f + c * Cfg::CH;
    if (split) {
      M* ws = p.ws + (int64_t)zf * p.Mrows * p.Ncols;
      constexpr int PER = Cfg::CH * BN / Cfg::NT;
#pragma unroll 4
      for (int e = 0; e < PER; ++e) {
        const int idx = tid + e * Cfg::NT;
        const int rl = idx / BN, nl = idx % BN;
        const int64_t m = mbase + rl, n = n0f + nl;
        if (m < p.Mrows && n < p.Ncols) ws[m * p.Ncols + n] = Cs[rl * Cfg::LDC + nl];
      }
    } else {
      switch (p.act) {
#define FG_GEMM_ACT_CASE(code, name, F) \
  case code: write_chunk<Cfg, T, F>(p, Cs, out, bias, mbase, n0f, m_fast, tid); break;
        FG_ACTIVATIONS(FG_GEMM_ACT_CASE)
#undef FG_GEMM_ACT_CASE
        default: break;
      }
    }
    __syncthreads();
  }
  if (!split) return;
  // Split-K, in the kernel: the last split of this tile to arrive sums the splits' partials in order (s = 0, 1, ..:
  // bitwise deterministic, whichever arrives last) and applies the epilogue. Release: each block fences its
  // partials before its arrival is counted; acquire: the last block fences after seeing the count.
  // (p.counters: this part's own tiles_m * tiles_n * groups slots, one per output tile)
  if (!last_arrival(p.counters + tile_s[3], p.splits)) return;
  switch (p.act) {
#define FG_GEMM_FINISH_CASE(code, name, F) \
  case code: finish_splits<Cfg, T, F>(p, out, bias, gf, m0f, n0f, tid); break;
    FG_ACTIVATIONS(FG_GEMM_FINISH_CASE)
#undef FG_GEMM_FINISH_CASE
    default: break;
  }
  if (rows_here && tid < BM && m0f + tid < p.Mrows) {  // the row sums' partials, in split order
    M r = M(0);
    for (int q = 0; q < p.splits; ++q) r += p.ws_rows[((int64_t)gf * p.splits + q) * p.Mrows + m0f + tid];
    store(p.rowsum, (int64_t)gf * p.Mrows + m0f + tid, r);
  }
}

// The kernel: parts [0, nfirst) are GEMMs of operand kinds (AK0, BK0), the others of (AK1, BK1) (the same pair
// when a launch has one kind; a convolution's weight and input gradients are the two kinds of one launch).
template <typename T, typename Cfg, OperandKind AK0, OperandKind BK0, OperandKind AK1, OperandKind BK1>
__global__ void __launch_bounds__(Cfg::NT, Cfg::MINB) gemm_kernel(const __grid_constant__ GemmBatch<T> batch) {
  grid_dependency_sync();  // first, before any global-memory access (PDL: common.cuh)
  using M = typename OpMath<T>::type;
  static_assert(!Cfg::kTensorCores || std::is_same<M, float>::value, "tensor-core tiles accumulate in float");
  constexpr bool kOneKind = AK0 == AK1 && BK0 == BK1;
  constexpr int kPad0 = PadMask<Cfg, AK0, BK0>::kBytes, kPad1 = PadMask<Cfg, AK1, BK1>::kBytes;
  __shared__ __align__(16) M smem[Cfg::kSmemElems];
  __shared__ unsigned char pad_s[kPad0 > kPad1 ? kPad0 : kPad1];
  __shared__ M rs_s[Cfg::BM == 64 ? Cfg::BK * Cfg::BM : 1];
  int part = 0;
  while (part + 1 < batch.nparts && (int)blockIdx.x >= batch.bbase[part + 1]) ++part;
  if (kOneKind || part < batch.nfirst)
    gemm_block<T, Cfg, AK0, BK0>(batch, part, smem, pad_s, rs_s);
  else if constexpr (!kOneKind)
    gemm_block<T, Cfg, AK1, BK1>(batch, part, smem, pad_s, rs_s);
}

// ------------------------------------------------------------------------------------------------- host side
constexpr int64_t kIndexLimit = 2147483647;  // digit indices and coordinates are 32-bit

struct Plan {
  int cfg = 64;     // 64 or 128 (tile configurations); 0: the dot kernel (dense.cu)
  bool tc = false;  // tensor-core tiles: half types always, float32 when p.tf32
  int splits = 1;
  int64_t kchunk = 0;
};

inline size_t accum_size(DType dt) { return dt == DType::f64 ? sizeof(double) : sizeof(float); }

// The size heuristic, shared by both backends so the emulation takes the same decisions as an H200.
inline Plan make_plan(const GemmParams& p) {
  Plan pl;
  pl.tc = p.dtype == DType::f16 || p.dtype == DType::bf16 || (p.dtype == DType::f32 && p.tf32);
  const int64_t sm = p.sm_count > 0 ? p.sm_count : 132;
  const int64_t G = p.groups < 1 ? 1 : p.groups;
  const int64_t t128 = ceil_div(p.M, 128) * ceil_div(p.N, 128) * G;
  // A full wave of big tiles (the most reuse per shared-memory load), and both dimensions fill most of one.
  // (Row sums are computed by the 64 tiles only.)
  if (p.dtype != DType::f64 && p.rowsum == nullptr && t128 >= sm && p.M >= 96 && p.N >= 96) {
    pl.cfg = 128;
    pl.kchunk = p.K;
    return pl;
  }
  const int64_t t64 = ceil_div(p.M, 64) * ceil_div(p.N, 64) * G;
  int64_t splits = 1;
  // Split K when the tile grid leaves more than half the SMs idle and the k-chain is long: a lone block needs
  // ~0.35 us per 16-deep k-tile (latency-bound), so cutting a >= 32-tile chain pays for the reduce launch.
  if (t64 * 2 <= sm && p.K >= 512) {
    splits = ceil_div(sm, t64);
    if (splits > p.K / 128) splits = p.K / 128;  // >= 8 k-tiles per split
    if (splits > 128) splits = 128;
    if (splits > 65535 / G) splits = 65535 / G;
    const int64_t ws_cap = (int64_t(1) << 25) / (G * (p.M > 0 ? p.M : 1) * (p.N > 0 ? p.N : 1));  // <= 128 MB
    if (splits > ws_cap) splits = ws_cap;
    if (splits < 1) splits = 1;
  }
  int64_t kchunk = ceil_div(ceil_div(p.K, splits), 16) * 16;
  if (kchunk < 16) kchunk = 16;
  pl.splits = splits > 1 ? (int)ceil_div(p.K, kchunk) : 1;
  pl.kchunk = pl.splits > 1 ? kchunk : p.K;
  return pl;
}

// Split-K partial sums: [groups * splits][M][N], then the row sums' partials [groups * splits][M].
inline int64_t workspace_bytes(const GemmParams& p, const Plan& pl) {
  if (pl.splits <= 1) return 0;
  const int64_t zs = (int64_t)pl.splits * (p.groups < 1 ? 1 : p.groups);
  return zs * (p.M * p.N + (p.rowsum != nullptr ? p.M : 0)) * (int64_t)accum_size(p.dtype);
}

inline DevIndex dev_index(const GemmIndex& x) {
  DevIndex d;
  d.d2 = FastDiv(x.R2);
  d.d1 = FastDiv(x.R1);
  d.off0 = (int32_t)x.off[0];
  d.off1 = (int32_t)x.off[1];
  d.off2 = (int32_t)x.off[2];
  d.h0 = (int32_t)x.h[0];
  d.h1 = (int32_t)x.h[1];
  d.h2 = (int32_t)x.h[2];
  d.w0 = (int32_t)x.w[0];
  d.w1 = (int32_t)x.w[1];
  d.w2 = (int32_t)x.w[2];
  return d;
}

template <typename T>
DevOperand<T> dev_operand(const GemmOperand& o) {
  DevOperand<T> d;
  d.ptr = static_cast<const T*>(o.ptr);
  d.group_stride = o.group_stride;
  d.r = dev_index(o.r);
  d.k = dev_index(o.k);
  d.h0 = (int32_t)o.h0;
  d.w0 = (int32_t)o.w0;
  d.H = (int32_t)o.H;
  d.W = (int32_t)o.W;
  d.sh = (int32_t)o.sh;
  d.sw = (int32_t)o.sw;
  d.k_fast = o.k_fast ? 1 : 0;
  d.y = nullptr;
  d.act = 0;
  d.alpha = d.gain = d.clamp = 0;
  return d;
}

// Largest element offset an operand can address (per group), for the 32-bit offset limit.
inline int64_t max_index_offset(const GemmIndex& x, int64_t extent, int64_t* hmax, int64_t* wmax) {
  const int64_t top = extent > 0 ? extent - 1 : 0;
  const int64_t d0 = top / (x.R1 * x.R2);
  const int64_t d[3] = {d0, x.R1 - 1, x.R2 - 1};
  int64_t off = 0;
  for (int i = 0; i < 3; ++i) {
    off += d[i] * (x.off[i] < 0 ? -x.off[i] : x.off[i]);
    *hmax += d[i] * (x.h[i] < 0 ? -x.h[i] : x.h[i]);
    *wmax += d[i] * (x.w[i] < 0 ? -x.w[i] : x.w[i]);
  }
  return off;
}

// True when p is inside the kernels' index limits: sizes and digit indices < 2^31 - 1, spatial coordinates
// < 2^30 in magnitude, every in-operand element offset < 2^31 - 1, grid extents.
inline bool within_limits(const GemmParams& p) {
  auto small = [](int64_t v) { return v >= -(int64_t(1) << 30) && v <= (int64_t(1) << 30); };
  bool ok = p.M >= 0 && p.N >= 0 && p.K >= 0 && p.M < kIndexLimit && p.N < kIndexLimit && p.K < kIndexLimit &&
            p.groups >= 1 && p.groups <= 65535 && ceil_div(p.N, 64) <= 65535 && p.c.P >= 1 && p.c.P < kIndexLimit &&
            p.c.P2 >= 0 && p.c.P2 <= p.c.P;
  if (!ok) return false;
  const GemmOperand* ops[2] = {&p.a, &p.b};
  const int64_t rext[2] = {p.M, p.N};
  for (int j = 0; j < 2; ++j) {
    const GemmOperand* o = ops[j];
    ok = ok && o->r.R1 >= 1 && o->r.R2 >= 1 && o->k.R1 >= 1 && o->k.R2 >= 1 && o->r.R1 < kIndexLimit &&
         o->r.R2 < kIndexLimit && o->k.R1 < kIndexLimit && o->k.R2 < kIndexLimit && small(o->H) && small(o->W) &&
         small(o->h0) && small(o->w0) &&
         o->sh >= 0 && o->sw >= 0;
    if (!ok) return false;
    int64_t hmax = o->h0 < 0 ? -o->h0 : o->h0, wmax = o->w0 < 0 ? -o->w0 : o->w0;
    int64_t off = max_index_offset(o->r, rext[j], &hmax, &wmax) + max_index_offset(o->k, p.K, &hmax, &wmax);
    if (o->kind != OperandKind::mat) off += (o->H - 1) * o->sh + (o->W - 1) * o->sw;
    ok = ok && small(hmax) && small(wmax) && off < kIndexLimit;
  }
  return ok;
}

inline void check_limits(const GemmParams& p, const char* what) {
  if (!within_limits(p))
    throw std::invalid_argument(std::string(what) +
                                ": problem outside the GEMM kernels' limits (sizes < 2^31, offsets inside one "
                                "operand < 2^31, coordinates < 2^30, groups <= 65535); the glue should have "
                                "routed it to ATen (gemm_workspace returns -1 for such problems)");
}

template <typename T>
GemmArgs<T> make_args(const GemmParams& p, const Plan& pl) {
  using M = typename OpMath<T>::type;
  GemmArgs<T> a;
  a.a = dev_operand<T>(p.a);
  a.b = dev_operand<T>(p.b);
  a.out = static_cast<T*>(p.c.ptr);
  a.out_group_stride = p.c.group_stride;
  a.s_outer = p.c.s_outer;
  a.s_mid = p.c.P2 > 0 ? p.c.s_mid : 0;
  a.s_inner = p.c.s_inner;
  a.s_n = p.c.s_n;
  a.P = FastDiv(p.c.P);
  a.P2 = FastDiv(p.c.P2 > 0 ? p.c.P2 : p.c.P);
  a.bias = static_cast<const T*>(p.bias);
  a.out_y = static_cast<const T*>(p.out_y);
  a.alpha = (M)p.alpha;
  a.gain = (M)p.gain;
  a.clamp = (M)p.clamp;
  a.act = p.act;
  a.tf32 = pl.tc && p.dtype == DType::f32;
  a.splits = pl.splits;
  a.Mrows = p.M;
  a.Ncols = p.N;
  a.K = p.K;
  a.kchunk = pl.kchunk > 0 ? pl.kchunk : 1;
  a.ws = static_cast<M*>(p.workspace);
  a.counters = p.counters;
  a.a.y = static_cast<const T*>(p.a_y);
  a.a.act = p.a_act;
  a.a.alpha = (M)p.a_alpha;
  a.a.gain = (M)p.a_gain;
  a.a.clamp = (M)p.a_clamp;
  a.rowsum = static_cast<T*>(p.rowsum);
  a.ws_rows = p.rowsum != nullptr && a.ws != nullptr
                  ? a.ws + (int64_t)pl.splits * (p.groups < 1 ? 1 : p.groups) * p.M * p.N
                  : nullptr;
  return a;
}

// One launch for parts [0, n) (n <= kMaxParts, one tile configuration): parts [0, nfirst) of kinds (AK0, BK0), the
// others of (AK1, BK1). Each part keeps its plan's split-K, with its own counter slots.
template <typename T, typename C, OperandKind AK0, OperandKind BK0, OperandKind AK1, OperandKind BK1>
void launch_tiled(const GemmParams* ps, const Plan* pls, int n, int nfirst, void* stream, const char* name) {
  GemmBatch<T> batch{};
  int64_t blocks = 0, slots = 0;
  for (int i = 0; i < n; ++i) {
    batch.part[i] = make_args<T>(ps[i], pls[i]);  // each part its own k extent
    const int64_t tm = ceil_div(ps[i].M, C::BM), tn = ceil_div(ps[i].N, C::BN);
    batch.tiles_m[i] = (int)tm;
    batch.tiles_n[i] = (int)tn;
    batch.bbase[i] = (int)blocks;
    blocks += tm * tn * ps[i].groups * pls[i].splits;
    if (blocks > kIndexLimit) throw std::invalid_argument(std::string(name) + ": more than 2^31 - 1 blocks");
    if (pls[i].splits > 1) {  // counter slots: one per output tile of the part
      if (ps[i].counters == nullptr || slots + tm * tn * ps[i].groups > kCounterSlots)
        throw std::invalid_argument(std::string(name) + ": split-K needs " +
                                    std::to_string(slots + tm * tn * ps[i].groups) +
                                    " zeroed counter slots (GemmParams::counters, at most " +
                                    std::to_string(kCounterSlots) + ")");
      batch.part[i].counters = ps[i].counters + slots;
      slots += tm * tn * ps[i].groups;
    }
  }
  batch.bbase[n] = (int)blocks;
  batch.nparts = n;
  batch.nfirst = nfirst;
  launch(name, gemm_kernel<T, C, AK0, BK0, AK1, BK1>, dim3((unsigned)blocks), dim3(C::NT), 0, stream, batch);
}

// The launches run_tiled makes, compiled in translation units of their own, one per element type and arithmetic
// (gemm_tf32.cu, gemm_f32.cu, gemm_f16.cu, gemm_bf16.cu, gemm_f64.cu; 4-7 kernels each): with every conv kernel in
// conv2d.cu, that one file took nvcc 200 s of one core, the longest step of the build; split, the files compile side
// by side. Every other file that includes this header sees these declarations only (extern template: it compiles
// none of these kernels itself). FG_GEMM_LAUNCHES_128 / _64(E, T, C): the launches of tile configuration C --
// dense (mat, mat), conv forward / backward data (im2col, mat), weight gradient (mat, im2col) and, in the 64 tiles,
// weight gradient + backward data in one launch. A launch missing here is compiled where it is used (slower build,
// still correct); one declared but not defined leaves an undefined symbol that fails `import fastgan._C` (a shared
// object links with undefined symbols). FG_GEMM_<TYPE>(E): all launches of one unit.
#define FG_GEMM_LAUNCH(E, T, C, AK0, BK0, AK1, BK1)                                                             \
  E template void launch_tiled<T, C, OperandKind::AK0, OperandKind::BK0, OperandKind::AK1, OperandKind::BK1>( \
      const GemmParams*, const Plan*, int, int, void*, const char*);
#define FG_GEMM_LAUNCHES_128(E, T, C)            \
  FG_GEMM_LAUNCH(E, T, C, mat, mat, mat, mat)       \
  FG_GEMM_LAUNCH(E, T, C, im2col, mat, im2col, mat) \
  FG_GEMM_LAUNCH(E, T, C, mat, im2col, mat, im2col)
#define FG_GEMM_LAUNCHES_64(E, T, C) FG_GEMM_LAUNCHES_128(E, T, C) FG_GEMM_LAUNCH(E, T, C, mat, im2col, im2col, mat)
#define FG_GEMM_TF32(E) FG_GEMM_LAUNCHES_128(E, float, Tc128For<float>) FG_GEMM_LAUNCHES_64(E, float, Tc64For<float>)
#define FG_GEMM_F32(E) FG_GEMM_LAUNCHES_128(E, float, Cfg128) FG_GEMM_LAUNCHES_64(E, float, Cfg64)
#define FG_GEMM_F16(E) FG_GEMM_LAUNCHES_128(E, __half, Tc128For<__half>) FG_GEMM_LAUNCHES_64(E, __half, Tc64For<__half>)
#define FG_GEMM_BF16(E)                                                  \
  FG_GEMM_LAUNCHES_128(E, __nv_bfloat16, Tc128For<__nv_bfloat16>) \
  FG_GEMM_LAUNCHES_64(E, __nv_bfloat16, Tc64For<__nv_bfloat16>)
#define FG_GEMM_F64(E) FG_GEMM_LAUNCHES_64(E, double, Cfg64d)
FG_GEMM_TF32(extern)
FG_GEMM_F32(extern)
FG_GEMM_F16(extern)
FG_GEMM_BF16(extern)
FG_GEMM_F64(extern)

// Runs n parts that share a launch (same_launch) as one launch, the tile configuration from the plan. Half types
// have only the tensor-core tiles, float64 only the SIMT 64 tile, float32 both (TF32 or full precision). Two kinds
// of parts in one launch: the 64 tiles only.
template <typename T, OperandKind AK0, OperandKind BK0, OperandKind AK1, OperandKind BK1>
void run_tiled(const GemmParams* ps, const Plan* pls, int n, int nfirst, void* stream, const char* name) {
  const Plan& pl = pls[0];
  constexpr bool kOneKind = AK0 == AK1 && BK0 == BK1;
  if (n < 1 || n > kMaxParts || nfirst < 1 || nfirst > n || (kOneKind && nfirst != n))
    throw std::invalid_argument(std::string(name) + ": bad batch of " + std::to_string(n) + " parts");
  for (int i = 0; i < n; ++i) {
    if (pls[i].splits > 1 && ps[i].workspace == nullptr)
      throw std::invalid_argument(std::string(name) + ": split-K plan without a workspace (call gemm_workspace)");
    if (!act_code_valid(ps[i].act) || (ps[i].a_y != nullptr && !act_code_valid(ps[i].a_act)))
      throw std::invalid_argument(std::string(name) + ": unknown activation code");
    if (ps[i].rowsum != nullptr && pl.cfg == 128)
      throw std::invalid_argument(std::string(name) + ": row sums need the 64 tile");
    if (pls[i].cfg != pl.cfg || pls[i].tc != pl.tc || ps[i].groups != ps[0].groups)
      throw std::invalid_argument(std::string(name) + ": parts differ in tile configuration or groups");
    if (pls[i].cfg == 128 && pls[i].splits > 1)
      throw std::invalid_argument(std::string(name) + ": the 128 tile has no split-K");
  }
  constexpr bool kDouble = std::is_same<T, double>::value, kFloat = std::is_same<T, float>::value;
  if constexpr (!kDouble) {
    if (pl.tc) {
      if constexpr (kOneKind) {
        if (pl.cfg == 128) {
          launch_tiled<T, Tc128For<T>, AK0, BK0, AK1, BK1>(ps, pls, n, nfirst, stream, name);
          return;
        }
      }
      if (pl.cfg != 128) {
        launch_tiled<T, Tc64For<T>, AK0, BK0, AK1, BK1>(ps, pls, n, nfirst, stream, name);
        return;
      }
    }
  }
  if constexpr (kFloat) {
    if (!pl.tc) {
      if constexpr (kOneKind) {
        if (pl.cfg == 128) {
          launch_tiled<T, Cfg128, AK0, BK0, AK1, BK1>(ps, pls, n, nfirst, stream, name);
          return;
        }
      }
      if (pl.cfg != 128) {
        launch_tiled<T, Cfg64, AK0, BK0, AK1, BK1>(ps, pls, n, nfirst, stream, name);
        return;
      }
    }
  }
  if constexpr (kDouble) {
    if (pl.cfg != 128 && !pl.tc) {
      launch_tiled<T, Cfg64d, AK0, BK0, AK1, BK1>(ps, pls, n, nfirst, stream, name);
      return;
    }
  }
  throw std::invalid_argument(std::string(name) + ": no tile configuration for this dtype and plan");
}

// Parts a and b can share a launch: same tile configuration (tile, tensor cores), dtype and groups; operand kinds
// that differ only in the 64 tiles.
inline bool same_launch(const GemmParams& a, const Plan& pa, const GemmParams& b, const Plan& pb) {
  const bool same_kinds = a.a.kind == b.a.kind && a.b.kind == b.b.kind;
  return pa.cfg == pb.cfg && pa.tc == pb.tc && a.dtype == b.dtype && a.groups == b.groups &&
         (same_kinds || pa.cfg != 128) && pa.cfg != 0 && pb.cfg != 0;
}

// Runs n GEMMs in as few launches as same_launch allows: runs of consecutive parts with at most two operand-kind
// pairs, (AK0, BK0) then (AK1, BK1). names: of the launches with the first kinds only, the second only, both.
template <OperandKind AK0, OperandKind BK0, OperandKind AK1, OperandKind BK1>
void run_tiled_parts(const GemmParams* ps, const Plan* pls, int n, void* stream, const char* const names[3]) {
  const char* name0 = names[0];
  auto first = [&](int i) { return ps[i].a.kind == AK0 && ps[i].b.kind == BK0; };
  auto second = [&](int i) { return ps[i].a.kind == AK1 && ps[i].b.kind == BK1; };
  for (int i = 0; i < n;) {
    if (!first(i) && !second(i)) throw std::invalid_argument(std::string(name0) + ": unexpected operand kinds");
    // (split parts' counter slots: one per output tile, kCounterSlots per launch)
    auto slots = [&](int k) {
      return pls[k].splits > 1 ? ceil_div(ps[k].M, 64) * ceil_div(ps[k].N, 64) * ps[k].groups : int64_t(0);
    };
    int j = i + 1;
    int64_t used = slots(i);
    while (j < n && j - i < kMaxParts && used + slots(j) <= kCounterSlots &&
           same_launch(ps[i], pls[i], ps[j], pls[j]) && (first(j) ? first(j - 1) : second(j))) {
      used += slots(j);
      ++j;
    }
    int nfirst = i;
    while (nfirst < j && first(nfirst)) ++nfirst;
    nfirst -= i;
    dispatch_dtype(ps[i].dtype, name0, [&](auto tag) {
      using T = decltype(tag);
      if (nfirst == j - i)
        run_tiled<T, AK0, BK0, AK0, BK0>(ps + i, pls + i, j - i, j - i, stream, names[0]);
      else if (nfirst == 0)
        run_tiled<T, AK1, BK1, AK1, BK1>(ps + i, pls + i, j - i, j - i, stream, names[1]);
      else if constexpr (AK0 != AK1 || BK0 != BK1)
        run_tiled<T, AK0, BK0, AK1, BK1>(ps + i, pls + i, j - i, nfirst, stream, names[2]);
    });
    i = j;
  }
}

// Defined in conv2d.cu: the three convolution combinations, for n parts of one kind pair.
void run_conv_gemm(const GemmParams* ps, const Plan* pls, int n, void* stream);

}  // namespace gemm
}  // namespace FG_NS
}  // namespace fastgan
