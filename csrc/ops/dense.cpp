// dense op: y = act(x @ w.T + b) * gain (clamped), and dense_backward: dx = dz @ w, dw = dz^T @ x, db = sum of dz
// from dy = dL/dy and the saved output y (dz = act_backward(dy, y), folded into the kernels' operand loads and db
// into the weight gradient's row sums, gemm_glue.h).
//
//   CPU    ATen GEMM (MKL/oneDNN) with the bias in it (addmm: x w^T + b rounded once, as F.linear), then one
//          activation pass over the output, in place, where there is one to apply.
//   CUDA   the tiled GEMM kernel with the epilogue fused (csrc/kernels/gemm.cuh, launched by dense.cu); large
//          products go to cuBLAS the same way as on the CPU (addmm: cuBLASLt's bias epilogue; + the activation
//          pass) per cuda_prefers_aten (gemm_glue.cpp).
//   EMU    always the CUDA kernels, under emulation, on CPU tensors.
// float32 follows torch.backends.cuda.matmul.allow_tf32 (off by default, as in torch): TF32 tensor-core tiles
// when it is set, the full-precision SIMT tiles otherwise; half types always run on tensor cores (gemm.cuh).
#include <ATen/Context.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

#include <algorithm>
#include <vector>

#include "../kernels/activation.cuh"
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
  // torch.backends.cuda.matmul.fp32_precision / allow_tf32, resolved by at::Context (public ATen). Not
  // allowTF32CuBLAS(): it throws once the new fp32_precision API has been used.
  p.tf32 = at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) ==
           at::Float32Precision::TF32;
  return p;
}

bool use_kernels(const Exec& ex, const at::Tensor& t, int64_t M, int64_t N, int64_t K) {
  if (ex.backend == Backend::EMU) return true;
  const double macs = double(M) * double(N) * double(K);
  const bool dot = K >= 128 && (M <= 8 || N <= 8);  // the dot kernel serves skinny products (dense.cu)
  return !cuda_prefers_aten(t, macs, std::min({M, N, K}), !dot && gemm_poor_fit(M, N, macs));
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

at::Tensor dense(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                 c10::string_view act, double alpha, double gain, double clamp,
                 const c10::optional<at::Tensor>& dact_y) {
  const BelowAutograd below;
  const char* op = "fastgan::dense";
  check_float(x, op, "x");
  check_same(w, x, op, "w", "x");
  const int a = act_code(act, op);
  clamp = checked_clamp(op, alpha, gain, clamp, x.scalar_type());
  TORCH_CHECK_VALUE(w.dim() == 2, op, ": w: expected a 2-D tensor (out_features, in_features), got shape ", w.sizes());
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == w.size(1), op, ": x: expected last dimension ", w.size(1),
                    " (w's in_features), got shape ", x.sizes());
  const bool has_b = check_bias(b, x, w.size(0), op, "w's out_features");
  const Exec ex = exec_for(x, op);
  c10::OptionalDeviceGuard guard(x.device());
  const int64_t K = w.size(1), N = w.size(0);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = N;
  const int64_t M = leading(x);
  const at::Tensor x2 = as_matrix(x, M, K);
  const at::Tensor dy = dact_output(dact_y, x, out_shape, has_b, op);
  const at::Tensor dy2 = dy.defined() ? dy.reshape({M, N}) : dy;
  if (ex.backend != Backend::CPU && use_kernels(ex, x, M, N, K)) {
    at::Tensor y = at::empty({M, N}, x.options());
    poisoned(y);
    GemmParams p = matmul_params(x2, x2.stride(0), x2.stride(1), w, w.stride(1), w.stride(0), y, M, N, K);
    at::Tensor bc = has_b ? b->contiguous() : at::Tensor();
    const at::Tensor yd = dy.defined() ? with_strides_of(dy2, y) : at::Tensor();
    p.bias = has_b ? bc.const_data_ptr() : nullptr;
    p.out_y = dy.defined() ? yd.const_data_ptr() : nullptr;
    p.act = a;
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    if (run_gemm(ex, p, y)) return as_shape(y, out_shape);
  }
  at::Tensor y = at::empty({M, N}, x.options());
  if (dy.defined()) {
    at::mm_out(y, x2, w.t());
    return as_shape(dact_apply(ex, y, dy2, a, alpha, gain, clamp), out_shape);
  }
  // The bias rides in the GEMM's accumulator, as in F.linear (x w^T + b rounded once: a half-type product rounded
  // before the bias is added loses the bits where the two cancel; cuBLASLt's bias epilogue on CUDA), then the
  // activation in one pass over y, where there is one to apply.
  if (has_b)
    at::addmm_out(y, *b, x2, w.t());
  else
    at::mm_out(y, x2, w.t());
  if (!is_identity(a, gain, clamp))
    bias_act_into(ex, y, c10::nullopt, y, 1, a, alpha, gain, clamp);
  return as_shape(y, out_shape);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dense_backward(const at::Tensor& dy, const at::Tensor& x,
                                                              const at::Tensor& w, std::array<bool, 3> mask,
                                                              const c10::optional<at::Tensor>& y, c10::string_view act,
                                                              double alpha, double gain, double clamp) {
  const BelowAutograd below;
  const char* op = "fastgan::dense_backward";
  check_float(x, op, "x");
  check_same(w, x, op, "w", "x");
  check_same(dy, x, op, "dy", "x");
  const int a = act_code(act, op);
  clamp = checked_clamp(op, alpha, gain, clamp, x.scalar_type());
  TORCH_CHECK_VALUE(w.dim() == 2, op, ": w: expected a 2-D tensor (out_features, in_features), got shape ", w.sizes());
  const int64_t K = w.size(1), N = w.size(0);
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == K, op, ": x: expected last dimension ", K, ", got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(dy.dim() == x.dim() && dy.size(-1) == N && dy.sizes().slice(0, dy.dim() - 1) ==
                                                                   x.sizes().slice(0, x.dim() - 1),
                    op, ": dy: expected shape ", x.sizes().slice(0, x.dim() - 1), " + [", N, "], got ", dy.sizes());
  const at::Tensor yv = layer_output(y, dy, act, a, gain, clamp, op);
  const Exec ex = exec_for(x, op);
  c10::OptionalDeviceGuard guard(x.device());
  const int64_t M = leading(x);
  const bool kern = ex.backend != Backend::CPU;
  const at::Tensor x2 = as_matrix(x, M, K), dy2 = as_matrix(dy, M, N);
  const at::Tensor y2 = yv.defined() ? as_matrix(yv, M, N) : at::Tensor();
  LayerGrad g(ex, dy, yv, dy.dim() - 1, a, alpha, gain, clamp,
              mask[2] ? poisoned(at::empty({N}, x.options())) : at::Tensor());
  // A of the products: dy with act' folded into the kernels' loads, else the materialised dz (which then also
  // gives db)
  const bool fold = kern && g.foldable(dy2, y2);
  auto operand = [&]() { return fold ? dy2 : as_matrix(g.dz(), M, N); };
  at::Tensor dw = mask[1] ? poisoned(at::empty({N, K}, x.options())) : at::empty({0}, x.options());
  at::Tensor dx = mask[0] ? poisoned(at::empty({M, K}, x.options())) : at::empty({0}, x.options());
  // On the kernels, dw and dx are two parts of one launch (same operand kinds; gemm.cuh runs parts that share a
  // tile plan together): dw (N x K) = dz^T (N x M) @ x (M x K) with db = dz^T @ ones (the row sums of A), and
  // dx (M x K) = dz (M x N) @ w (N x K).
  std::vector<GemmParams> ps;
  int dw_part = -1, dx_part = -1;
  if (kern && mask[1] && K > 0 && use_kernels(ex, x, N, K, M)) {
    const at::Tensor A = operand();
    GemmParams p = matmul_params(A, A.stride(1), A.stride(0), x2, x2.stride(0), x2.stride(1), dw, N, K, M);
    if (fold) g.fold(p, y2);
    if (!g.db_done) p.rowsum = g.db.mutable_data_ptr();
    dw_part = (int)ps.size();
    ps.push_back(p);
  }
  if (kern && mask[0] && use_kernels(ex, x, M, K, N)) {
    const at::Tensor A = operand();
    GemmParams p = matmul_params(A, A.stride(0), A.stride(1), w, w.stride(0), w.stride(1), dx, M, K, N);
    if (fold) g.fold(p, y2);
    dx_part = (int)ps.size();
    ps.push_back(p);
  }
  const bool ran = !ps.empty() && run_gemms(ex, ps, x);  // (nothing runs when a part is outside the limits)
  if (ran && dw_part >= 0 && ps[dw_part].rowsum != nullptr) g.db_done = true;
  if (mask[1] && !(ran && dw_part >= 0)) at::mm_out(dw, as_matrix(g.dz(), M, N).t(), x2);
  if (mask[0] && !(ran && dx_part >= 0)) at::mm_out(dx, as_matrix(g.dz(), M, N), w);
  if (mask[0]) dx = as_shape(dx, x.sizes());
  if (!g.db_done) g.dz();  // the bias gradient from the materialising pass
  return {dx, dw, mask[2] ? g.db : at::empty({0}, x.options())};
}

}  // namespace fastgan
