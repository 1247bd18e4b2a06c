// dense op: y = act(x @ w.T + b) * gain (clamped), and dense_backward: dx = dz @ w, dw = dz^T @ x (dz is the
// gradient at the pre-activation, from bias_act_backward).
//
//   CPU    ATen GEMM (MKL/oneDNN), then one fused bias-activation pass over the output, in place.
//   CUDA   the tiled GEMM kernel with the epilogue fused (csrc/kernels/dense.cu, gemm.cuh); large products go to
//          cuBLAS through at::mm (+ the fused pass) per cuda_prefers_aten (gemm_glue.cpp).
//   EMU    always the CUDA kernels, under emulation, on CPU tensors.
// torch.backends.cuda.matmul.allow_tf32 is honoured by construction: our kernels compute in full float32
// (SIMT FMA, never TF32); products routed to cuBLAS follow the flag through ATen.
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/mv.h>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "../kernels/activation.cuh"
#include "cpu_math.h"
#include "gemm_glue.h"
#include "ops.h"

namespace fastgan {
namespace {

// C (M x N, row-major, contiguous) = A (M x K, strides sa_m, sa_k) * B (K x N, strides sb_k, sb_n).
GemmParams matmul_params(const at::Tensor& a, int64_t sa_m, int64_t sa_k, const at::Tensor& b, int64_t sb_k,
                         int64_t sb_n, const at::Tensor& c, int64_t M, int64_t N, int64_t K) {
  GemmParams p;
  p.M = M;
  p.N = N;
  p.K = K;
  p.a.ptr = a.const_data_ptr();
  p.a.r = gemm_index1(sa_m);
  p.a.k = gemm_index1(sa_k);
  p.a.k_fast = gemm_k_fast(sa_m, sa_k);
  p.b.ptr = b.const_data_ptr();
  p.b.r = gemm_index1(sb_n);
  p.b.k = gemm_index1(sb_k);
  p.b.k_fast = gemm_k_fast(sb_n, sb_k);
  p.c.ptr = c.mutable_data_ptr();
  p.c.P = M > 0 ? M : 1;
  p.c.s_outer = 0;
  p.c.s_inner = N;
  p.c.s_n = 1;
  p.dtype = to_dtype(c, "dense", "x");
  return p;
}

bool use_kernels(const Exec& ex, const at::Tensor& t, int64_t M, int64_t N, int64_t K) {
  if (ex.backend == Backend::EMU) return true;
  const double macs = double(M) * double(N) * double(K);
  const bool dot = K >= 128 && (M <= 8 || N <= 8);  // the dot kernel serves skinny products (dense.cu)
  return !cuda_prefers_aten(t, macs, std::min({M, N, K}), !dot && gemm_poor_fit(M, N, macs));
}

// out = a @ b for the CPU path. An inner dimension of 1 (the head's input gradient: dz (M x 1) @ w (1 x K); a
// forward with in_features 1) is an outer product, for which ATen's mm goes through MKL's rank-1 update (output
// zeroed, then updated): a broadcast multiply writes it in one pass with the same single rounding per element.
// 128 x 2048: 14 vs 22 us. One output column (the head's forward: x (M x K) @ w^T (K x 1)) is a matrix-vector
// product: MKL's GEMV through at::mv is 1.3 us faster there than the GEMM call (19.7 vs 21.0 us), and with the bias
// added by the epilogue pass the forward matches F.linear's addmm (21.1 vs 21.1 us; 21.9 with addmm).
void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) {
  if (a.size(1) == 1)
    at::mul_out(out, a, b);
  else if (b.size(1) == 1 && out.is_contiguous() && out.device().is_cpu()) {
    at::Tensor out1 = out.view({out.size(0)});
    at::mv_out(out1, a, b.select(1, 0));
  } else {
    at::mm_out(out, a, b);
  }
}

// The backward of a layer with one output feature (every discriminator's logit head), both gradients in one pass
// over x: row i writes dx[i, :] = dz[i] * w and adds dz[i] * x[i, :] to dw. ATen needs two passes (a GEMV over x
// for dw, a broadcast multiply for dx). Threads split the columns, so every dw[k] is summed over the rows in the
// same order whatever the thread count (bitwise the same result with 1 or 16 threads), and no partial sums are
// kept. (Across machines the result can differ in the last bit: the AVX2 / AVX-512 clones contract a * b + c into
// FMAs, the baseline clone does not.) 128 x 2048 on one thread (2-core Zen 4): 42 vs 55 us per torch.ops call,
// dx and dw.
constexpr int64_t kRank1MinCols = 64;      // narrower x: ATen's two calls (too little per row to split or vectorise)
constexpr int64_t kRank1GrainElems = 1 << 15;  // elements of x per parallel task

template <typename T>
FG_CPU_CLONES void rank1_cols(const T* __restrict__ dz, int64_t sdz, const T* __restrict__ x, int64_t ldx,
                              const T* __restrict__ w, T* __restrict__ dx, int64_t K, T* __restrict__ dw, int64_t M,
                              int64_t k0, int64_t k1) {
  for (int64_t k = k0; k < k1; ++k) dw[k] = T(0);
  int64_t i = 0;
  for (; i + 4 <= M; i += 4) {  // four rows per sweep: w and dw are loaded once per four rows of x and dx
    const T s0 = dz[i * sdz], s1 = dz[(i + 1) * sdz], s2 = dz[(i + 2) * sdz], s3 = dz[(i + 3) * sdz];
    const T* __restrict__ x0 = x + i * ldx;
    const T* __restrict__ x1 = x0 + ldx;
    const T* __restrict__ x2 = x1 + ldx;
    const T* __restrict__ x3 = x2 + ldx;
    T* __restrict__ d0 = dx + i * K;
    T* __restrict__ d1 = d0 + K;
    T* __restrict__ d2 = d1 + K;
    T* __restrict__ d3 = d2 + K;
    for (int64_t k = k0; k < k1; ++k) {
      const T wk = w[k];
      d0[k] = s0 * wk;
      d1[k] = s1 * wk;
      d2[k] = s2 * wk;
      d3[k] = s3 * wk;
      dw[k] += (s0 * x0[k] + s1 * x1[k]) + (s2 * x2[k] + s3 * x3[k]);
    }
  }
  for (; i < M; ++i) {
    const T s = dz[i * sdz];
    const T* __restrict__ xi = x + i * ldx;
    T* __restrict__ di = dx + i * K;
    for (int64_t k = k0; k < k1; ++k) {
      di[k] = s * w[k];
      dw[k] += s * xi[k];
    }
  }
}

// dz2 (M x 1, any row stride: 0 for the expanded gradient of y.sum()), x2 (M x K, any row stride), w (1 x K); dx
// (M x K) and dw (1 x K) fresh and contiguous (so no output aliases an input). False: not this path's case.
bool rank1_backward_cpu(const at::Tensor& dz2, const at::Tensor& x2, const at::Tensor& w, at::Tensor& dx,
                        at::Tensor& dw) {
  const auto st = x2.scalar_type();
  const int64_t M = x2.size(0), K = x2.size(1);
  if ((st != at::kFloat && st != at::kDouble) || M == 0 || K < kRank1MinCols || x2.stride(1) != 1 ||
      w.stride(1) != 1)
    return false;
  TORCH_INTERNAL_ASSERT(dz2.size(0) == M && dz2.size(1) == 1);
  // tasks are runs of whole 16-column blocks (whole cache lines of dx rows and dw for float, so no two threads
  // write the same line), of ~kRank1GrainElems elements of x each
  constexpr int64_t kCols = 16;
  const int64_t nblk = (K + kCols - 1) / kCols;
  const int64_t grain = std::max<int64_t>(1, kRank1GrainElems / (M * kCols));
  AT_DISPATCH_FLOATING_TYPES(st, "fastgan::dense_backward", [&] {
    const scalar_t* pdz = dz2.const_data_ptr<scalar_t>();
    const scalar_t* px = x2.const_data_ptr<scalar_t>();
    const scalar_t* pw = w.const_data_ptr<scalar_t>();
    scalar_t* pdx = dx.mutable_data_ptr<scalar_t>();
    scalar_t* pdw = dw.mutable_data_ptr<scalar_t>();
    const int64_t sdz = dz2.stride(0), ldx = x2.stride(0);
    at::parallel_for(0, nblk, grain, [=](int64_t b0, int64_t b1) {
      rank1_cols<scalar_t>(pdz, sdz, px, ldx, pw, pdx, K, pdw, M, b0 * kCols, std::min(K, b1 * kCols));
    });
  });
  return true;
}

// t as the 2-D (rows x cols) matrix the products take, and a product's 2-D result in the caller's shape; neither
// builds a view (a TensorImpl each) when the shape already is the one wanted: most layers' inputs are 2-D.
at::Tensor as_matrix(const at::Tensor& t, int64_t rows, int64_t cols) {
  return t.dim() == 2 ? t : t.reshape({rows, cols});  // reshape: a view whenever the leading dims allow it
}
at::Tensor as_shape(const at::Tensor& t, at::IntArrayRef sizes) { return t.sizes() == sizes ? t : t.view(sizes); }

int64_t leading(const at::Tensor& t) {  // product of all but the last dim (reshape(-1, 0) would be ambiguous)
  int64_t m = 1;
  for (int64_t i = 0; i + 1 < t.dim(); ++i) m *= t.size(i);
  return m;
}

}  // namespace

at::Tensor dense(bool emu, const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                 c10::string_view act, double alpha, double gain, double clamp) {
  const BelowAutograd below;
  const char* op = "fastgan::dense";
  check_float(x, op, "x");
  check_same(w, x, op, "w", "x");
  const int a = act_code(act, op);
  check_act_args(op, alpha, gain, clamp);
  TORCH_CHECK_VALUE(w.dim() == 2, op, ": w: expected a 2-D tensor (out_features, in_features), got shape ", w.sizes());
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == w.size(1), op, ": x: expected last dimension ", w.size(1),
                    " (w's in_features), got shape ", x.sizes());
  const bool has_b = check_bias(b, x, w.size(0), op, "w's out_features");
  const Exec ex = exec_for(x, emu, op);
  c10::OptionalDeviceGuard guard(x.device());
  const int64_t K = w.size(1), N = w.size(0);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = N;
  const int64_t M = leading(x);
  const at::Tensor x2 = as_matrix(x, M, K);
  if (ex.backend != Backend::CPU && use_kernels(ex, x, M, N, K)) {
    at::Tensor y = at::empty({M, N}, x.options());
    poisoned(y);
    GemmParams p = matmul_params(x2, x2.stride(0), x2.stride(1), w, w.stride(1), w.stride(0), y, M, N, K);
    at::Tensor bc = has_b ? b->contiguous() : at::Tensor();
    p.bias = has_b ? bc.const_data_ptr() : nullptr;
    p.act = a;
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    if (run_gemm(ex, p, y)) return as_shape(y, out_shape);
  }
  at::Tensor y = at::empty({M, N}, x.options());
  const bool reduced = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  if (ex.backend == Backend::CPU && has_b && a == static_cast<int>(Act::linear) && gain == 1.0 && clamp < 0 &&
      K > 1 && (N > 1 || reduced)) {
    // Nothing to fuse: the bias rides in the GEMM's accumulator, as F.linear does. A float / double layer with one
    // output feature (the D head) takes the GEMV in mm_into + the epilogue pass instead (faster, and bitwise
    // F.linear's); a half-precision one stays here, where its result is rounded once. (CUDA / EMU products
    // declined by the kernels keep the epilogue pass: cuda_gemm_route('aten') promises that one.)
    at::addmm_out(y, *b, x2, w.t());
    return as_shape(y, out_shape);
  }
  mm_into(y, x2, w.t());
  bias_act_into(ex, y, b, y, 1, a, alpha, gain, clamp);
  return as_shape(y, out_shape);
}

std::tuple<at::Tensor, at::Tensor> dense_backward(bool emu, const at::Tensor& dz, const at::Tensor& x,
                                                  const at::Tensor& w, std::array<bool, 2> mask) {
  const BelowAutograd below;
  const char* op = "fastgan::dense_backward";
  check_float(x, op, "x");
  check_same(w, x, op, "w", "x");
  check_same(dz, x, op, "dz", "x");
  TORCH_CHECK_VALUE(w.dim() == 2, op, ": w: expected a 2-D tensor (out_features, in_features), got shape ", w.sizes());
  const int64_t K = w.size(1), N = w.size(0);
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == K, op, ": x: expected last dimension ", K, ", got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(dz.dim() == x.dim() && dz.size(-1) == N && dz.sizes().slice(0, dz.dim() - 1) ==
                                                                   x.sizes().slice(0, x.dim() - 1),
                    op, ": dz: expected shape ", x.sizes().slice(0, x.dim() - 1), " + [", N, "], got ", dz.sizes());
  const Exec ex = exec_for(x, emu, op);
  c10::OptionalDeviceGuard guard(x.device());
  const int64_t M = leading(x);
  const at::Tensor x2 = as_matrix(x, M, K), dz2 = as_matrix(dz, M, N);
  at::Tensor dx = at::empty({0}, x.options()), dw = at::empty({0}, x.options());
  if (ex.backend == Backend::CPU && N == 1 && mask[0] && mask[1]) {
    at::Tensor dx_ = at::empty({M, K}, x.options()), dw_ = at::empty({N, K}, x.options());
    if (rank1_backward_cpu(dz2, x2, w, dx_, dw_)) return {as_shape(dx_, x.sizes()), dw_};
  }
  // dw first: it reads x, which the forward has just read when this layer is the last before the loss (the D
  // head), before dx's write (M x K, as large as x) evicts it.
  if (mask[1]) {  // dw (N x K) = dz^T (N x M) @ x (M x K)
    at::Tensor out = poisoned(at::empty({N, K}, x.options()));
    bool done = false;
    if (ex.backend != Backend::CPU && use_kernels(ex, x, N, K, M)) {
      GemmParams p = matmul_params(dz2, dz2.stride(1), dz2.stride(0), x2, x2.stride(0), x2.stride(1), out, N, K, M);
      done = run_gemm(ex, p, out);
    }
    if (!done) mm_into(out, dz2.t(), x2);
    dw = out;
  }
  if (mask[0]) {  // dx (M x K) = dz (M x N) @ w (N x K)
    at::Tensor out = poisoned(at::empty({M, K}, x.options()));
    bool done = false;
    if (ex.backend != Backend::CPU && use_kernels(ex, x, M, K, N)) {
      GemmParams p = matmul_params(dz2, dz2.stride(0), dz2.stride(1), w, w.stride(0), w.stride(1), out, M, K, N);
      done = run_gemm(ex, p, out);
    }
    if (!done) mm_into(out, dz2, w);
    dx = as_shape(out, x.sizes());
  }
  return {dx, dw};
}

}  // namespace fastgan
