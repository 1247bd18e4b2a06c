// The interface between the glue (csrc/ops, ATen) and the kernels (csrc/kernels, raw pointers).
// Each backend (fastgan::cuda compiled by nvcc, fastgan::emu compiled by the host compiler under the CPU
// emulation) provides the same KernelTable; the glue picks one and never needs a second code path.
#pragma once

#include <cstdint>

namespace fastgan {

// Kernels that reduce across blocks in one launch (split-K, bias gradients) count arrivals in int32 slots that
// are zero before the launch; the last block to arrive finishes and resets its slot, so every launch leaves the
// slots zero. Kernels on one stream run in order: the glue keeps one zeroed buffer of kCounterSlots per stream.
constexpr int kCounterSlots = 65536;
// Blocks of a one-launch fixed-order reduction (sigmoid_bce's, sum_squares'): its workspace holds this many
// accumulators.
constexpr int kSumMaxBlocks = 1024;

// Element types understood by the kernels; the glue maps at::ScalarType onto these.
enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

// y = clamp(act(x + b[c]) * gain), c = (i / inner) % C over the memory order of a dense tensor.
struct BiasActParams {
  const void* x = nullptr;
  const void* b = nullptr;  // C elements or nullptr
  void* y = nullptr;        // may alias x
  int64_t numel = 0, C = 1, inner = 1;
  int act = 0;
  double alpha = 0, gain = 1, clamp = -1;  // clamp < 0: none
  DType dtype{};
};

// dz = dL/d(x+b) from dy and the saved output y (same layout); db[c] = sum of dz over channel c (optional).
struct BiasActBwdParams {
  const void* dy = nullptr;
  const void* y = nullptr;
  void* dz = nullptr;
  void* db = nullptr;         // C elements of dtype, or nullptr
  void* workspace = nullptr;  // >= C * kBiasGradSplits accumulators (float, or double for f64) when db
  int* counters = nullptr;    // when db: kCounterSlots zeroed slots
  int64_t numel = 0, C = 1, inner = 1;
  int act = 0;
  double alpha = 0, gain = 1, clamp = -1;
  DType dtype{};
};
constexpr int kBiasGradSplits = 64;  // most partial sums per channel (the kernels use fewer when the work is small)

// Stable sigmoid + binary cross-entropy. target == nullptr: every target equals `label`.
// weight / pos_weight: nullptr or numel elements (broadcast already materialised by the glue).
// reduction: 0 none (out has numel elements), 1 mean, 2 sum (out has 1 element).
struct BceParams {
  const void* logits = nullptr;
  const void* target = nullptr;
  const void* weight = nullptr;
  const void* pos_weight = nullptr;
  void* out = nullptr;
  void* workspace = nullptr;  // kSumMaxBlocks accumulators (float, or double for f64) for reductions
  int* counters = nullptr;    // for reductions: kCounterSlots zeroed slots
  double label = 0;
  int64_t numel = 0;
  int reduction = 1;
  DType dtype{};
};
// dlogits = grad * dL/dlogits; grad has 1 element (mean/sum) or numel elements (none).
struct BceBwdParams {
  const void* grad = nullptr;
  const void* logits = nullptr;
  const void* target = nullptr;
  const void* weight = nullptr;
  const void* pos_weight = nullptr;
  void* dlogits = nullptr;
  double label = 0;
  int64_t numel = 0;
  int reduction = 1;
  DType dtype{};
};

// out = scale * sum_i x_i^2 over numel dense elements (one element: a gradient penalty's squared norm), summed in
// a fixed order; its backward dx = 2 * scale * g * x, g one element (read on the device).
struct SumSquaresParams {
  const void* x = nullptr;
  const void* g = nullptr;    // backward: dL/dout, one element
  void* out = nullptr;        // forward: one element; backward: dx, numel elements in x's order
  void* workspace = nullptr;  // forward: kSumMaxBlocks accumulators (float, or double for f64)
  int* counters = nullptr;    // forward: kCounterSlots zeroed slots
  int64_t numel = 0;
  double scale = 1;
  DType dtype{};
};

// A one-output dense head and its sigmoid-BCE loss in one op (a discriminator's last layer and loss):
//   logits[i] = x[i, :] . w + b,  loss = reduce_i weight_i * bce(logits[i], target_i)   (reduction 1 mean, 2 sum)
// and its backward: dl_i = g_loss * weight_i * dbce(logits[i], target_i) (/ n for the mean) + g_logits[i],
//   dx = dl w^T, dw = dl^T x, db = sum_i dl_i.
struct LinearBceParams {
  const void* x = nullptr;  // (n, K), strides sx_n, sx_k
  int64_t sx_n = 0, sx_k = 1;
  const void* w = nullptr;  // K elements, stride sw
  int64_t sw = 1;
  const void* b = nullptr;       // 1 element or nullptr
  const void* target = nullptr;  // n contiguous elements, or nullptr: every target is `label`
  const void* weight = nullptr;  // n contiguous elements or nullptr
  double label = 0;
  int64_t n = 0, K = 0;
  int reduction = 1;
  void* logits = nullptr;  // n elements: written by the forward, read by the backward
  void* loss = nullptr;    // forward: 1 element
  const void* g_loss = nullptr;    // backward: 1 element
  const void* g_logits = nullptr;  // backward: n elements or nullptr
  void* dx = nullptr;              // backward: (n, K) contiguous, or nullptr
  void* dw = nullptr;              // backward: K elements, or nullptr
  void* db = nullptr;              // backward: 1 element, or nullptr
  void* workspace = nullptr;       // linear_bce_workspace() accumulators (float, or double for f64)
  int* counters = nullptr;         // kCounterSlots zeroed slots
  DType dtype{};
};
constexpr int kHeadRows = 32;      // backward: rows per block and pass
constexpr int kHeadCols = 256;     // backward: columns per block (one per thread)
inline int64_t linear_bce_fwd_blocks(int64_t n) {  // forward: a warp per row, 8 rows per block, <= 1024 blocks
  const int64_t b = (n + 7) / 8;
  return b < 1 ? 1 : (b > 1024 ? 1024 : b);
}
// backward: row blocks (grid.y), <= 1024 and <= 2^22 / (K + 1) (the partials' workspace stays <= 16 MB of floats)
inline int64_t linear_bce_bwd_row_blocks(int64_t n, int64_t K) {
  int64_t b = (n + kHeadRows - 1) / kHeadRows;
  const int64_t cap = (int64_t(1) << 22) / (K + 1);
  if (b > 1024) b = 1024;
  if (b > cap) b = cap;
  return b < 1 ? 1 : b;
}
// The backward's column blocks that reduce (dw or db wanted) each take a counter slot: K <= kHeadCols * kCounterSlots.
inline bool linear_bce_bwd_fits(const LinearBceParams& p) {
  return (p.dw == nullptr && p.db == nullptr) || (p.K + kHeadCols - 1) / kHeadCols <= kCounterSlots;
}
// Accumulators the launch needs: forward one per block; backward (row blocks) x (K + 1) when dw or db is wanted.
inline int64_t linear_bce_workspace(const LinearBceParams& p, bool backward) {
  if (!backward) return linear_bce_fwd_blocks(p.n);
  return (p.dw != nullptr || p.db != nullptr) ? linear_bce_bwd_row_blocks(p.n, p.K) * (p.K + 1) : 0;
}

// ---------------------------------------------------------------------------------------------------------
// Implicit GEMM, the engine of dense and conv2d (forward, backward data, backward weight):
//   C[g][m][n] = sum_k A[g](m, k) * B[g](k, n),   g < groups, m < M, n < N, k < K   (all < 2^31 - 1)
// with the epilogue y = clamp(act(C + bias[g*N + n]) * gain) applied before the single store.
// Each operand element is addressed through two mixed-radix indices: the operand's own index r (m for A, n for
// B) and the reduction index k. An index i is split into digits (d0, d1, d2), d2 fastest:
//   d2 = i % R2, d1 = (i / R2) % R1, d0 = i / (R1 * R2)
// and every digit adds to the element offset (off), and to two spatial coordinates (h, w) used by the
// convolution kinds:
//   mat:    offset = base + sum(off)                                  (a strided matrix, any strides)
//   im2col: h = h0 + sum(h), w = w0 + sum(w); zero unless 0 <= h < H and 0 <= w < W;
//           offset = base + sum(off) + h * sh + w * sw                (convolution input patches; also the
//                                                                      output gradient read by one stride
//                                                                      phase of the input gradient)
enum class OperandKind : int { mat = 0, im2col = 1 };

struct GemmIndex {
  int64_t R1 = 1, R2 = 1;     // radices of digits d1 and d2 (d0 is unbounded)
  int64_t off[3] = {0, 0, 0};  // element offset per unit of d0, d1, d2
  int64_t h[3] = {0, 0, 0};    // spatial coordinate contributions (im2col)
  int64_t w[3] = {0, 0, 0};
};

struct GemmOperand {
  const void* ptr = nullptr;
  OperandKind kind = OperandKind::mat;
  bool k_fast = true;        // load mapping: consecutive threads walk k (true) or r (false); pick the unit stride
  int64_t group_stride = 0;  // elements between consecutive groups
  GemmIndex r, k;
  int64_t h0 = 0, w0 = 0;    // coordinate constants (e.g. -padding)
  int64_t H = 1, W = 1;      // coordinate bounds
  int64_t sh = 0, sw = 0;    // element strides of the h / w coordinates
};

// Output: element (g, m, n) at ptr + g * group_stride + (m / P) * s_outer + ((m % P) / P2) * s_mid
// + ((m % P) % P2) * s_inner + n * s_n. P2 = 0 means P2 = P (no middle digit: two-digit rows, the usual case);
// the middle digit serves outputs that skip rows, e.g. one stride phase of a convolution's input gradient.
struct GemmOut {
  void* ptr = nullptr;
  int64_t group_stride = 0;
  int64_t P = 1, s_outer = 0, s_inner = 0, s_n = 1;
  int64_t P2 = 0, s_mid = 0;
};

struct GemmParams {
  int64_t M = 0, N = 0, K = 0, groups = 1;
  GemmOperand a, b;
  GemmOut c;
  const void* bias = nullptr;  // groups * N elements or nullptr
  int act = 0;
  double alpha = 0, gain = 1, clamp = -1;
  DType dtype{};
  bool tf32 = false;          // float32 may multiply on TF32 tensor cores (torch's allow_tf32 flag for the op)
  int sm_count = 132;         // multiprocessors of the device (the emulation models an H200: 132)
  void* workspace = nullptr;  // gemm_workspace(p) bytes when that is > 0 (split-K partial sums)
  int* counters = nullptr;    // with a workspace (split-K): kCounterSlots zeroed slots (see kCounterSlots)
  // The backward of a fused layer without a separate activation pass:
  //  * a_y: A holds dL/dy of a layer y = clamp(act(z) * gain) and enters the product as
  //    dL/dz = act_backward(A, y) (activation.cuh), y being read at A's element offsets (same strides as A);
  //    nullptr: A as it is;
  //  * rowsum: rowsum[g * M + m] = sum_k A(m, k) (after a_y), groups * M elements of dtype -- the bias gradient,
  //    computed by the weight-gradient GEMM (A = dL/dz with k over the batch). Fixed summation order (bitwise
  //    reproducible). Plans with row sums take the 64 tile or the dot kernel. nullptr: none.
  const void* a_y = nullptr;
  int a_act = 0;
  double a_alpha = 0, a_gain = 1, a_clamp = -1;
  void* rowsum = nullptr;
  // out_y: the epilogue writes act_backward(product, y) for the activation (act, alpha, gain, clamp) -- dL/dz of a
  // layer whose dL/dy is the product -- with y read at the output's offsets (same strides as the output); no bias.
  // The double backward's product followed by dz's adjoint in one launch. nullptr: the forward epilogue.
  const void* out_y = nullptr;
};

// Adam (torch.optim.Adam's algorithm: L2 weight decay added to the gradient, bias-corrected moments) over up to
// kAdamMaxTensors tensors of one dtype in one launch. Per tensor i: param, grad, exp_avg, exp_avg_sq hold numel[i]
// elements in the same (dense) memory order; step[i] is one float32, the steps taken so far: the update uses
// step + 1, and the tensor's last block to finish writes step + 1 (after every block of it has read step). Moments
// and arithmetic in float (double for float64); the bias corrections in double. ema[i] (optional): the parameter's
// exponential moving average, moved toward the updated parameter (adam_math.cuh) in the same pass.
constexpr int kAdamMaxTensors = 32;
struct AdamParams {
  int n = 0;
  void* param[kAdamMaxTensors] = {};
  const void* grad[kAdamMaxTensors] = {};
  void* exp_avg[kAdamMaxTensors] = {};
  void* exp_avg_sq[kAdamMaxTensors] = {};
  float* step[kAdamMaxTensors] = {};
  void* ema[kAdamMaxTensors] = {};  // nullptr, or the parameter's moving average (its shape and strides)
  int64_t numel[kAdamMaxTensors] = {};
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  double ema_beta = 0;  // the average's decay (ramped: adam_math.cuh)
  int* counters = nullptr;  // kCounterSlots zeroed slots (one per tensor)
  DType dtype{};
};

struct KernelTable {
  const char* backend;
  void (*bias_act_fwd)(const BiasActParams&, void* stream);
  void (*bias_act_bwd)(const BiasActBwdParams&, void* stream);
  void (*bce_fwd)(const BceParams&, void* stream);
  void (*bce_bwd)(const BceBwdParams&, void* stream);
  // Bytes of workspace gemm() needs for p (0: none); -1: p is outside the kernels' index limits (sizes,
  // offsets inside one operand < 2^31, coordinates < 2^30) and must be computed another way (ATen).
  // The glue allocates the workspace and sets p.workspace.
  int64_t (*gemm_workspace)(const GemmParams& p);
  // n independent GEMMs with one (a.kind, b.kind): (mat, mat) dense; (im2col, mat) conv forward, or the stride
  // phases of one conv backward data; (mat, im2col) conv backward weight. Parts that share a tile plan run in one
  // launch. Throws std::invalid_argument for anything else.
  void (*gemm)(const GemmParams* parts, int n, void* stream);
  void (*linear_bce_fwd)(const LinearBceParams&, void* stream);
  void (*linear_bce_bwd)(const LinearBceParams&, void* stream);
  void (*adam)(const AdamParams&, void* stream);
  void (*sum_squares_fwd)(const SumSquaresParams&, void* stream);
  void (*sum_squares_bwd)(const SumSquaresParams&, void* stream);
};

namespace cuda { const KernelTable& kernel_table(); }
namespace emu { const KernelTable& kernel_table(); }

// Programmatic dependent launch of the CUDA kernels (common.cuh: launch, grid_dependency_sync), process-wide:
// 1 on (where the device is sm_90 or newer), 0 off. The initial value is FASTGAN_CUDA_PDL (0 or 1; default 0);
// the setting throws std::invalid_argument for another value of it.
namespace cuda {
void set_programmatic_launch(bool on);
bool programmatic_launch_setting();
unsigned long long programmatic_launches();  // launches made with the attribute so far (tests, doctor)
}  // namespace cuda

}  // namespace fastgan
