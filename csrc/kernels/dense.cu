// dense: y = act(x @ w.T + b) * gain (clamped), and the backward products dX = dz @ W and dW = dz^T @ X.
// All three are GemmParams with (mat, mat) operands (the glue sets the strides); this file adds the table's
// gemm entry points and a warp-per-output dot kernel for skinny products.
//
// Kernel choice (make_dense_plan):
//   * dot kernel when one side is tiny (M <= 8 or N <= 8) and K >= 128: the GAN head (N = 1, K = 2048) and
//     batch-1 layers. One warp per output element, lanes stride k with four independent accumulators, warp
//     shuffle reduction in a fixed order, epilogue by lane 0. A tile kernel would waste >= 7/8 of its tile.
//   * otherwise the tiled GEMM of gemm.cuh (128 tile when the output fills the device, else the 64 tile with
//     split-K when K is long and the tile grid is small).
#include <vector>

#include "gemm.cuh"

namespace fastgan {
namespace FG_NS {
namespace {

using gemm::GemmArgs;
using gemm::Plan;

constexpr int kDotThreads = 256;

// A(m, k) as the product takes it: dL/dz from dL/dy when the operand carries an activation gradient.
template <typename T>
__device__ __forceinline__ typename OpMath<T>::type dot_a(const GemmArgs<T>& p, int64_t off) {
  const typename OpMath<T>::type v = load(p.a.ptr, off);
  return p.a.y != nullptr ? gemm::act_grad(p.a, v, load(p.a.y, off)) : v;
}

// Outputs o < M * N are products; with row sums, outputs M * N + m are sum_k A(m, k) (a column of ones for B).
template <typename T, typename A>
__global__ void __launch_bounds__(kDotThreads) gemm_dot_kernel(const GemmArgs<T> p) {
  grid_dependency_sync();  // first, before any global-memory access (PDL: common.cuh)
  using M = typename OpMath<T>::type;
  const int lane = threadIdx.x & 31;
  const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  // (the dot plan keeps M * N + M < 2^31: 32-bit output indices, no 64-bit division per output)
  const uint32_t products = (uint32_t)(p.Mrows * p.Ncols), ncols = (uint32_t)p.Ncols;
  const int64_t total = (int64_t)products + (p.rowsum != nullptr ? p.Mrows : 0);
  const int64_t ak = p.a.k.off0, bk = p.b.k.off0;
  for (int64_t o = warp; o < total; o += nwarps) {  // warp-uniform loop: every lane reaches the shuffles
    const uint32_t ou = (uint32_t)o;
    const bool ones = ou >= products;
    const int64_t m = ones ? ou - products : ou / ncols, n = ones ? 0 : ou - (uint32_t)m * ncols;
    const int64_t a0 = m * p.a.r.off0;
    const T* b = p.b.ptr + n * p.b.r.off0;
    auto bval = [&](int64_t k) { return ones ? M(1) : load(b, k * bk); };
    M s0 = M(0), s1 = M(0), s2 = M(0), s3 = M(0);
    int64_t k = lane;
    for (; k + 96 < p.K; k += 128) {
      s0 += dot_a(p, a0 + k * ak) * bval(k);
      s1 += dot_a(p, a0 + (k + 32) * ak) * bval(k + 32);
      s2 += dot_a(p, a0 + (k + 64) * ak) * bval(k + 64);
      s3 += dot_a(p, a0 + (k + 96) * ak) * bval(k + 96);
    }
    for (; k < p.K; k += 32) s0 += dot_a(p, a0 + k * ak) * bval(k);
    M s = (s0 + s1) + (s2 + s3);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) {
      if (ones)
        store(p.rowsum, m, s);
      else
        gemm::epilogue_store<T, A>(p, p.out, p.bias, m, n, s);
    }
  }
}

bool single_digit(const GemmIndex& x) { return x.R1 == 1 && x.R2 == 1; }

Plan make_dense_plan(const GemmParams& p) {
  const bool mat = p.a.kind == OperandKind::mat && p.b.kind == OperandKind::mat;
  if (mat && p.groups == 1 && p.K >= 128 && (p.M <= 8 || p.N <= 8) && p.M * p.N + p.M < (int64_t(1) << 31) &&
      single_digit(p.a.r) && single_digit(p.a.k) && single_digit(p.b.r) && single_digit(p.b.k)) {
    Plan pl;
    pl.cfg = 0;
    pl.kchunk = p.K;
    return pl;
  }
  return gemm::make_plan(p);
}

Plan plan_for(const GemmParams& p) {
  const bool mat = p.a.kind == OperandKind::mat && p.b.kind == OperandKind::mat;
  return mat ? make_dense_plan(p) : gemm::make_plan(p);
}

void run_dot(const GemmParams& p, const Plan& pl, void* stream) {
  dispatch_dtype(p.dtype, "dense_dot", [&](auto tag) {
    using T = decltype(tag);
    const GemmArgs<T> a = gemm::make_args<T>(p, pl);
    const int64_t total = p.M * p.N + (p.rowsum != nullptr ? p.M : 0);
    const int64_t want = ceil_div(total, kDotThreads / 32);
    const unsigned blocks = (unsigned)(want < 65535 ? want : 65535);
    bool ok = dispatch_act(p.act, [&](auto act) {
      using A = decltype(act);
      launch("dense_dot", gemm_dot_kernel<T, A>, dim3(blocks), dim3(kDotThreads), 0, stream, a);
    });
    if (!ok) throw std::invalid_argument("dense: unknown activation code " + std::to_string(p.act));
  });
}

int64_t gemm_workspace(const GemmParams& p) {
  if (!gemm::within_limits(p)) return -1;
  return gemm::workspace_bytes(p, plan_for(p));
}

void gemm_run(const GemmParams* ps, int n, void* stream) {
  if (n < 1) return;
  std::vector<GemmParams> parts;  // the non-empty ones, in order
  std::vector<Plan> plans;
  for (int i = 0; i < n; ++i) {
    gemm::check_limits(ps[i], "gemm");
    const bool dense_i = ps[i].a.kind == OperandKind::mat && ps[i].b.kind == OperandKind::mat;
    const bool dense_0 = ps[0].a.kind == OperandKind::mat && ps[0].b.kind == OperandKind::mat;
    if (dense_i != dense_0)
      throw std::invalid_argument("gemm: dense and convolution GEMMs in one call");
    if (ps[i].M == 0 || ps[i].N == 0) {
      if (ps[i].rowsum != nullptr && ps[i].M > 0)  // no tile would run to write them
        throw std::invalid_argument("gemm: row sums of a product with N == 0 (the caller computes them)");
      continue;
    }
    parts.push_back(ps[i]);
    plans.push_back(plan_for(ps[i]));
  }
  const int m = (int)parts.size();
  if (m == 0) return;
  // Parts of one call run side by side (the stride phases of an input gradient, a layer's input and weight
  // gradients): parts of one operand-kind pair keep split-K only when their tiles together leave more than half the
  // device idle (then each keeps the split its own plan chose). A weight gradient beside input-gradient phases keeps
  // its own (its k-chain is the batch: unsplit, its few blocks would be the launch's critical path).
  if (m > 1) {
    const int64_t sm = parts[0].sm_count > 0 ? parts[0].sm_count : 132;
    auto same_kinds = [&](int i, int j) {
      return parts[i].a.kind == parts[j].a.kind && parts[i].b.kind == parts[j].b.kind;
    };
    for (int i = 0; i < m; ++i) {
      int64_t tiles = 0;
      int peers = 0;
      for (int j = 0; j < m; ++j)
        if (same_kinds(i, j)) {
          tiles += ceil_div(parts[j].M, 64) * ceil_div(parts[j].N, 64) * parts[j].groups;
          ++peers;
        }
      if (peers > 1 && tiles * 2 > sm && plans[i].splits > 1) {
        plans[i].splits = 1;
        plans[i].kchunk = parts[i].K;
      }
    }
  }
  if (parts[0].a.kind == OperandKind::mat && parts[0].b.kind == OperandKind::mat) {
    for (int i = 0; i < m;) {
      if (plans[i].cfg == 0) {
        run_dot(parts[i], plans[i], stream);
        ++i;
        continue;
      }
      int j = i + 1;
      while (j < m && plans[j].cfg != 0) ++j;
      static const char* const names[3] = {"dense_gemm", "dense_gemm", "dense_gemm"};
      gemm::run_tiled_parts<OperandKind::mat, OperandKind::mat, OperandKind::mat, OperandKind::mat>(
          parts.data() + i, plans.data() + i, j - i, stream, names);
      i = j;
    }
    return;
  }
  gemm::run_conv_gemm(parts.data(), plans.data(), m, stream);
}

}  // namespace

void register_dense(KernelTable& t) {
  t.gemm_workspace = gemm_workspace;
  t.gemm = gemm_run;
}

}  // namespace FG_NS
}  // namespace fastgan
