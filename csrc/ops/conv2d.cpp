// conv2d op: y = act(conv2d(x, w) + b) * gain (clamped), and conv2d_backward: dx, dw and db from dy = dL/dy and
// the saved output y (act' is folded into the kernels' operand loads and db into the weight gradient, gemm_glue.h).
//
//   CPU    ATen convolution (oneDNN) + one fused bias-activation pass over its output, in place, in the output's
//          own memory format. The backward through at::convolution_backward,
//          except the backward data of short reductions (a first layer on few channels: Cin/groups*kH*kW <= 72),
//          which the direct loops of csrc/cpu/conv2d.cpp compute several times faster than oneDNN.
//   CUDA   implicit-GEMM kernels (csrc/kernels/gemm.cuh, launched by conv2d.cu) with the epilogue fused into the
//          forward;
//          large problems go to ATen (cuDNN) + the fused pass per cuda_prefers_aten (gemm_glue.cpp).
//   EMU    always the CUDA kernels, under emulation, on CPU tensors.
// The kernels address every tensor through its strides, so NCHW, channels_last and non-contiguous inputs need
// no copy; the output is channels_last when x or w is (as ATen does), NCHW otherwise. A problem beyond the
// kernels' index limits (gemm_workspace() < 0) is computed by ATen, never wrongly.
// float32 follows torch.backends.cudnn.allow_tf32 (on by default, as in torch): TF32 tensor-core tiles when it
// is set, the full-precision SIMT tiles otherwise; half types always run on tensor cores (gemm.cuh).
#include <ATen/Context.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <vector>

#include "../kernels/activation.cuh"
#include "../cpu/conv2d.h"
#include "gemm_glue.h"
#include "ops.h"

namespace fastgan {
namespace {

// torch.backends.cudnn.conv.fp32_precision / allow_tf32, resolved by at::Context (public ATen) as for cuDNN.
bool conv_allows_tf32() {
  return at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV) ==
         at::Float32Precision::TF32;
}

ConvGeom geometry(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride, at::IntArrayRef padding,
                  at::IntArrayRef dilation, int64_t groups) {
  ConvGeom g;
  g.N = x.size(0);
  g.C = x.size(1);
  g.H = x.size(2);
  g.W = x.size(3);
  g.Co = w.size(0);
  g.KH = w.size(2);
  g.KW = w.size(3);
  g.sh = stride[0];
  g.sw = stride[1];
  g.ph = padding[0];
  g.pw = padding[1];
  g.dh = dilation[0];
  g.dw = dilation[1];
  g.OH = (g.H + 2 * g.ph - g.dh * (g.KH - 1) - 1) / g.sh + 1;
  g.OW = (g.W + 2 * g.pw - g.dw * (g.KW - 1) - 1) / g.sw + 1;
  g.G = groups;
  g.Cg = g.C / groups;
  g.Cog = g.Co / groups;
  return g;
}


// Memory order of the channel digit for an operand whose channels have stride sc and width stride sw: channels
// innermost (channels_last) or outermost (NCHW) in the reduction index, so the k-fast loads follow memory.
bool channel_innermost(int64_t sc, int64_t sw, int64_t C) { return C > 1 && sc < sw; }

GemmIndex spatial3(int64_t R1, int64_t R2, std::array<int64_t, 3> off, std::array<int64_t, 3> h,
                   std::array<int64_t, 3> w) {
  GemmIndex x;
  x.R1 = R1;
  x.R2 = R2;
  for (int i = 0; i < 3; ++i) {
    x.off[i] = off[i];
    x.h[i] = h[i];
    x.w[i] = w[i];
  }
  return x;
}

// Stride of the fastest-varying digit of an index (the unit stride decides the load mapping).
int64_t fastest_stride(const GemmIndex& x) { return x.R2 > 1 ? x.off[2] : (x.R1 > 1 ? x.off[1] : x.off[0]); }

// Output (N, C, P = H*W spatial) of a dense tensor in NCHW or channels_last.
// (t was allocated by us in one of the two formats; when both describe it, they give the same offsets.)
void set_out(GemmOut& c, const at::Tensor& t, int64_t C, int64_t P, int64_t chan_per_group) {
  const bool cl = !t.is_contiguous();
  c.ptr = t.mutable_data_ptr();
  c.P = P > 0 ? P : 1;
  c.s_outer = C * P;
  c.s_inner = cl ? C : 1;
  c.s_n = cl ? 1 : P;
  c.group_stride = chan_per_group * c.s_n;
}

// im2col(x) as a GEMM operand, shared by the forward (A: rows = output pixels (n, oh, ow), k = the patch) and the
// backward weight (B: k = output pixels, rows = the patch). The patch index is (c, kh, kw), or (kh, kw, c) when x
// is channels_last (`cin`). Loads walk the index whose elements are nearest in memory: the channels when they
// are innermost, else the output pixels (ow nearly contiguous in NCHW).
GemmOperand im2col_x(const ConvGeom& g, const at::Tensor& x, bool cin, bool pixels_are_rows) {
  GemmOperand o;
  o.ptr = x.const_data_ptr();
  o.kind = OperandKind::im2col;
  const GemmIndex pixels = spatial3(g.OH, g.OW, {x.stride(0), 0, 0}, {0, g.sh, 0}, {0, 0, g.sw});
  const GemmIndex patch = cin ? spatial3(g.KW, g.Cg, {0, 0, x.stride(1)}, {g.dh, 0, 0}, {0, g.dw, 0})
                              : spatial3(g.KH, g.KW, {x.stride(1), 0, 0}, {0, g.dh, 0}, {0, 0, g.dw});
  o.r = pixels_are_rows ? pixels : patch;
  o.k = pixels_are_rows ? patch : pixels;
  o.h0 = -g.ph;
  o.w0 = -g.pw;
  o.H = g.H;
  o.W = g.W;
  o.sh = x.stride(2);
  o.sw = x.stride(3);
  o.group_stride = g.Cg * x.stride(1);
  o.k_fast = pixels_are_rows ? cin : !cin;  // walk the channels when innermost, else the output pixels
  return o;
}

// Forward: M = N*OH*OW, N = Cout/G, K = Cin/G*KH*KW.
//   A = im2col(x): r = (n, oh, ow), k = (c, kh, kw) or (kh, kw, c) when x is channels_last;
//   B = w[g*Cog + n] viewed with the same k order.
GemmParams fwd_params(const ConvGeom& g, const at::Tensor& x, const at::Tensor& w, const at::Tensor& y) {
  GemmParams p;
  p.M = g.N * g.OH * g.OW;
  p.N = g.Cog;
  p.K = g.Cg * g.KH * g.KW;
  p.groups = g.G;
  const bool cin = channel_innermost(x.stride(1), x.stride(3), g.C);
  p.a = im2col_x(g, x, cin, /*pixels_are_rows=*/true);
  GemmOperand& b = p.b;
  b.ptr = w.const_data_ptr();
  b.r = gemm_index1(w.stride(0));
  b.k = cin ? spatial3(g.KW, g.Cg, {w.stride(2), w.stride(3), w.stride(1)}, {0, 0, 0}, {0, 0, 0})
            : spatial3(g.KH, g.KW, {w.stride(1), w.stride(2), w.stride(3)}, {0, 0, 0}, {0, 0, 0});
  b.group_stride = g.Cog * w.stride(0);
  b.k_fast = gemm_k_fast(w.stride(0), fastest_stride(b.k));
  set_out(p.c, y, g.Co, g.OH * g.OW, g.Cog);
  p.dtype = to_dtype(x, "conv2d", "x");
  p.tf32 = conv_allows_tf32();
  return p;
}

// Backward data, one GEMM per stride phase (rh, rw) in [0, sh) x [0, sw): the input pixels
// (rh + i*sh, rw + j*sw). Input row h receives output row oh = (h + ph - kh*dh) / sh from the taps kh for which
// that division is exact; for one phase those taps are kh0 + t*Th (Th = sh / gcd(sh, dh), t < nKh), and then
//   oh = h0 + i - t*Eh,   h0 = (rh + ph - kh0*dh) / sh,   Eh = Th*dh / sh   (both exact),
// the same in w. So each phase is an ordinary implicit GEMM over dz -- the im2col kind, in output coordinates,
// with negative tap steps -- and issues only the multiply-adds that exist: a convolution with stride s costs
// the work of its forward, not s^2 times it as masking the non-aligned taps would. Stride 1 is one phase.
//   M = N*Hp*Wp (the phase's pixels), N = Cin/G, K = Cout/G*nKh*nKw;
//   A = dz[n, g*Cog + co, h0 + i - t*Eh, w0 + j - u*Ew], k = (co, t, u) (or (t, u, co) when dz is channels_last);
//   B = w[g*Cog + co, ci, kh0 + t*Th, kw0 + u*Tw] with the same k order;
//   C = dx[n, g*Cg + ci, rh + i*sh, rw + j*sw] (the output's middle digit: rows of the phase).
// A phase without taps (kernel smaller than the stride) or without pixels has no GEMM: taps_empty tells the
// caller to zero dx first.
struct PhaseTaps {
  int64_t k0 = 0, n = 0, step = 1, out_step = 1;
};

PhaseTaps phase_taps(int64_t r, int64_t pad, int64_t K, int64_t s, int64_t d) {
  PhaseTaps t;
  t.step = s / std::gcd(s, d);
  t.out_step = t.step * d / s;
  for (int64_t k = 0; k < K; ++k) {
    if (((r + pad - k * d) % s + s) % s != 0) continue;
    if (t.n == 0) t.k0 = k;
    ++t.n;
    k += t.step - 1;  // the next aligned tap
  }
  return t;
}

const void* offset_ptr(const void* p, int64_t elems, const at::Tensor& t) {
  return static_cast<const char*>(p) + elems * static_cast<int64_t>(t.element_size());
}

std::vector<GemmParams> dgrad_phase_params(const ConvGeom& g, const at::Tensor& dz, const at::Tensor& w,
                                           const at::Tensor& dx, bool* taps_empty) {
  std::vector<GemmParams> out;
  *taps_empty = false;
  const bool cin = channel_innermost(dz.stride(1), dz.stride(3), g.Co);
  for (int64_t rh = 0; rh < g.sh; ++rh) {
    for (int64_t rw = 0; rw < g.sw; ++rw) {
      const int64_t Hp = rh < g.H ? (g.H - rh + g.sh - 1) / g.sh : 0;
      const int64_t Wp = rw < g.W ? (g.W - rw + g.sw - 1) / g.sw : 0;
      if (Hp == 0 || Wp == 0) continue;
      const PhaseTaps th = phase_taps(rh, g.ph, g.KH, g.sh, g.dh), tw = phase_taps(rw, g.pw, g.KW, g.sw, g.dw);
      if (th.n == 0 || tw.n == 0) {
        *taps_empty = true;
        continue;
      }
      GemmParams p;
      p.M = g.N * Hp * Wp;
      p.N = g.Cg;
      p.K = g.Cog * th.n * tw.n;
      p.groups = g.G;
      GemmOperand& a = p.a;
      a.ptr = dz.const_data_ptr();
      a.kind = OperandKind::im2col;
      a.r = spatial3(Hp, Wp, {dz.stride(0), 0, 0}, {0, 1, 0}, {0, 0, 1});
      a.k = cin ? spatial3(tw.n, g.Cog, {0, 0, dz.stride(1)}, {-th.out_step, 0, 0}, {0, -tw.out_step, 0})
                : spatial3(th.n, tw.n, {dz.stride(1), 0, 0}, {0, -th.out_step, 0}, {0, 0, -tw.out_step});
      a.h0 = (rh + g.ph - th.k0 * g.dh) / g.sh;
      a.w0 = (rw + g.pw - tw.k0 * g.dw) / g.sw;
      a.H = g.OH;
      a.W = g.OW;
      a.sh = dz.stride(2);
      a.sw = dz.stride(3);
      a.group_stride = g.Cog * dz.stride(1);
      a.k_fast = cin;
      GemmOperand& b = p.b;
      b.ptr = offset_ptr(w.const_data_ptr(), th.k0 * w.stride(2) + tw.k0 * w.stride(3), w);
      b.r = gemm_index1(w.stride(1));
      b.k = cin ? spatial3(tw.n, g.Cog, {th.step * w.stride(2), tw.step * w.stride(3), w.stride(0)}, {0, 0, 0},
                           {0, 0, 0})
                : spatial3(th.n, tw.n, {w.stride(0), th.step * w.stride(2), tw.step * w.stride(3)}, {0, 0, 0},
                           {0, 0, 0});
      b.group_stride = g.Cog * w.stride(0);
      b.k_fast = gemm_k_fast(w.stride(1), fastest_stride(b.k));
      GemmOut& c = p.c;
      c.ptr = const_cast<void*>(offset_ptr(dx.const_data_ptr(), rh * dx.stride(2) + rw * dx.stride(3), dx));
      c.P = Hp * Wp;
      c.P2 = Wp;
      c.s_outer = dx.stride(0);
      c.s_mid = g.sh * dx.stride(2);
      c.s_inner = g.sw * dx.stride(3);
      c.s_n = dx.stride(1);
      c.group_stride = g.Cg * dx.stride(1);
      p.dtype = to_dtype(dz, "conv2d_backward", "dz");
      p.tf32 = conv_allows_tf32();
      out.push_back(p);
    }
  }
  return out;
}

// Backward weight: M = Cout/G, N = Cin/G*KH*KW, K = N*OH*OW (long: split-K when the weight is small).
//   A = dz[n, g*Cog + m, oh, ow] with k = (n, oh, ow);
//   B = im2col(x) with k = (n, oh, ow) and r = (ci, kh, kw), or (kh, kw, ci) when x is channels_last, which
//   is then also dw's memory order (dw is allocated channels_last).
GemmParams wgrad_params(const ConvGeom& g, const at::Tensor& dz, const at::Tensor& x, const at::Tensor& dw,
                        bool cin) {
  GemmParams p;
  p.M = g.Cog;
  p.N = g.Cg * g.KH * g.KW;
  p.K = g.N * g.OH * g.OW;
  p.groups = g.G;
  GemmOperand& a = p.a;
  a.ptr = dz.const_data_ptr();
  a.r = gemm_index1(dz.stride(1));
  a.k = spatial3(g.OH, g.OW, {dz.stride(0), dz.stride(2), dz.stride(3)}, {0, 0, 0}, {0, 0, 0});
  a.group_stride = g.Cog * dz.stride(1);
  a.k_fast = gemm_k_fast(dz.stride(1), fastest_stride(a.k));
  p.b = im2col_x(g, x, cin, /*pixels_are_rows=*/false);
  p.c.ptr = dw.mutable_data_ptr();
  p.c.P = g.Cog;
  p.c.s_outer = 0;
  p.c.s_inner = g.Cg * g.KH * g.KW;
  p.c.s_n = 1;
  p.c.group_stride = g.Cog * g.Cg * g.KH * g.KW;
  p.dtype = to_dtype(x, "conv2d_backward", "x");
  p.tf32 = conv_allows_tf32();
  return p;
}

// (M, N): the GEMM's output dims per group (per launch); `macs`: multiply-adds the kernels issue. `phases`: the
// launches the result takes (stride phases of the backward data).
bool use_kernels(const Exec& ex, const at::Tensor& t, int64_t M, int64_t N, double macs, int64_t min_dim,
                 int64_t phases = 1) {
  if (ex.backend == Backend::EMU) return true;
  // Tiles mostly empty (depthwise, Cin = 1 backward data): cuDNN has dedicated kernels. Strided backward data
  // from 2^26 multiply-adds: its phases are short GEMMs run one after another (predicted 13-17 us for the seed
  // GAN's conv2/conv3 vs ~5-10 us for cuDNN, benchmarks/notes_kernels.md) -- cuDNN until a GPU run says otherwise.
  const bool poor_fit = gemm_poor_fit(M, N, macs) || (phases > 1 && macs >= double(1 << 26));
  return !cuda_prefers_aten(t, macs, min_dim, poor_fit);
}

void check_conv_args(const char* op, const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": x: expected a 4-D tensor (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK_VALUE(w.dim() == 4, op,
                    ": w: expected a 4-D tensor (out_channels, in_channels/groups, kH, kW), got shape ", w.sizes());
  TORCH_CHECK_VALUE(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, op,
                    ": stride, padding and dilation must have 2 elements each");
  TORCH_CHECK_VALUE(stride[0] >= 1 && stride[1] >= 1 && dilation[0] >= 1 && dilation[1] >= 1 && padding[0] >= 0 &&
                        padding[1] >= 0,
                    op, ": expected stride >= 1, dilation >= 1 and padding >= 0, got stride ", stride, ", padding ",
                    padding, ", dilation ", dilation);
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();  // (so the size check below cannot overflow)
  TORCH_CHECK_VALUE(stride[0] <= kMax && stride[1] <= kMax && dilation[0] <= kMax && dilation[1] <= kMax &&
                        padding[0] <= kMax && padding[1] <= kMax,
                    op, ": expected stride, padding and dilation below 2^31, got stride ", stride, ", padding ",
                    padding, ", dilation ", dilation);
  TORCH_CHECK_VALUE(w.size(0) >= 1, op, ": w: expected at least one output channel, got shape ", w.sizes());
  TORCH_CHECK_VALUE(groups >= 1 && x.size(1) == w.size(1) * groups && w.size(0) % groups == 0, op,
                    ": x: expected ", w.size(1) * groups,
                    " channels (w.shape[1] * groups) and out_channels divisible by groups=", groups, ", got x.shape ",
                    x.sizes(), " and w.shape ", w.sizes());
  for (int i = 0; i < 2; ++i)
    TORCH_CHECK_VALUE(x.size(2 + i) + 2 * padding[i] >= dilation[i] * (w.size(2 + i) - 1) + 1, op,
                      ": x: spatial size ", x.sizes().slice(2), " (padded by ", padding,
                      ") is smaller than the dilated kernel ", w.sizes().slice(2));
}

}  // namespace

at::Tensor conv2d(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                  c10::string_view act, double alpha, double gain, double clamp,
                  const c10::optional<at::Tensor>& dact_y) {
  const BelowAutograd below;
  const char* op = "fastgan::conv2d";
  check_float(x, op, "x");
  check_same(w, x, op, "w", "x");
  const int a = act_code(act, op);
  clamp = checked_clamp(op, alpha, gain, clamp, x.scalar_type());
  check_conv_args(op, x, w, stride, padding, dilation, groups);
  const bool has_b = check_bias(b, x, w.size(0), op, "w's out_channels");
  const ConvGeom g = geometry(x, w, stride, padding, dilation, groups);
  const at::Tensor dy = dact_output(dact_y, x, {g.N, g.Co, g.OH, g.OW}, has_b, op);
  const Exec ex = exec_for(x, op);
  c10::OptionalDeviceGuard guard(x.device());
  // (no input channels: ATen's convolution, whose result torch defines with zero channels)
  if (ex.backend != Backend::CPU && x.size(1) > 0) {
    const double macs = double(g.N * g.OH * g.OW) * double(g.Co) * double(g.Cg * g.KH * g.KW);
    if (use_kernels(ex, x, g.N * g.OH * g.OW, g.Cog, macs, std::min({g.N * g.OH * g.OW, g.Cog, g.Cg * g.KH * g.KW}))) {
      // torch's layout for this device (the fake kernel is aten.convolution's): channels_last when x or w is, but
      // on CUDA not for float64 (cuDNN's rule: cudnn_conv_suggest_memory_format)
      const bool cl = (channels_last(x) || channels_last(w)) &&
                      !(ex.backend == Backend::CUDA && x.scalar_type() == at::kDouble);
      const auto format = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
      at::Tensor y = at::empty({g.N, g.Co, g.OH, g.OW}, x.options().memory_format(format));
      poisoned(y);
      GemmParams p = fwd_params(g, x, w, y);
      at::Tensor bc = has_b ? b->contiguous() : at::Tensor();
      const at::Tensor yd = dy.defined() ? with_strides_of(dy, y) : at::Tensor();
      p.bias = has_b ? bc.const_data_ptr() : nullptr;
      p.out_y = dy.defined() ? yd.const_data_ptr() : nullptr;
      p.act = a;
      p.alpha = alpha;
      p.gain = gain;
      p.clamp = clamp;
      if (run_gemm(ex, p, y)) return y;
    }
  }
  // On the CPU the bias goes inside ATen's convolution, as in stock's: oneDNN adds it before rounding, and a
  // half-precision product rounded before a separate bias pass would round twice (bfloat16: 1 + 2^-9 - 1 gives 0,
  // not 2^-9). On CUDA stock adds the bias after cuDNN's convolution too: the fused pass gives its numbers.
  const bool bias_in_conv = has_b && ex.backend == Backend::CPU;
  at::Tensor y = at::convolution(x, w, bias_in_conv ? b : c10::nullopt, stride, padding, dilation, false, {0, 0},
                                 groups);
  if (dy.defined()) return dact_apply(ex, y, dy, a, alpha, gain, clamp);
  const bool bias_pass = has_b && !bias_in_conv;
  if (bias_pass || !is_identity(a, gain, clamp))
    bias_act_into(ex, y, bias_pass ? b : c10::nullopt, y, 1, a, alpha, gain, clamp);
  return y;
}

namespace {
// Kernel rows (or columns) whose taps read only padding, for every output position: their weight gradient is
// exactly zero. That happens when the padding exceeds what the kernel reaches, e.g. a 1-wide input, kernel 2,
// padding 1, stride 2. torch 2.14.1's oneDNN CPU backward for bfloat16 leaves those taps uninitialised (values up
// to 1e33 seen; reproduced with stock F.conv2d on a channels_last weight), so the CPU path writes them.
std::vector<int64_t> dead_taps(int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, int64_t d) {
  std::vector<int64_t> dead;
  for (int64_t t = 0; t < k; ++t) {
    bool live = false;
    for (int64_t o = 0; o < out && !live; ++o) {
      const int64_t i = o * s - p + t * d;
      live = i >= 0 && i < in;
    }
    if (!live) dead.push_back(t);
  }
  return dead;
}

void zero_dead_taps(at::Tensor& dw, const ConvGeom& g) {
  for (int64_t t : dead_taps(g.H, g.OH, g.KH, g.sh, g.ph, g.dh)) dw.select(2, t).zero_();
  for (int64_t t : dead_taps(g.W, g.OW, g.KW, g.sw, g.pw, g.dw)) dw.select(3, t).zero_();
}
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> mask, const c10::optional<at::Tensor>& y,
    c10::string_view act, double alpha, double gain, double clamp) {
  const BelowAutograd below;
  const char* op = "fastgan::conv2d_backward";
  check_float(x, op, "x");
  check_same(w, x, op, "w", "x");
  check_same(dy, x, op, "dy", "x");
  const int a = act_code(act, op);
  clamp = checked_clamp(op, alpha, gain, clamp, x.scalar_type());
  check_conv_args(op, x, w, stride, padding, dilation, groups);
  const ConvGeom g = geometry(x, w, stride, padding, dilation, groups);
  TORCH_CHECK_VALUE(dy.dim() == 4 && dy.size(0) == g.N && dy.size(1) == g.Co && dy.size(2) == g.OH &&
                        dy.size(3) == g.OW,
                    op, ": dy: expected shape [", g.N, ", ", g.Co, ", ", g.OH, ", ", g.OW, "], got ", dy.sizes());
  const at::Tensor yv = layer_output(y, dy, act, a, gain, clamp, op);
  const Exec ex = exec_for(x, op);
  c10::OptionalDeviceGuard guard(x.device());
  // Layouts (the fake kernel in fastgan/ops/conv2d.py says the same): dx in x's memory format; dw channels_last
  // when x is (then the kernels' reduction order (kh, kw, ci) is dw's memory order), contiguous otherwise.
  const bool cl = channels_last(x);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  LayerGrad lg(ex, dy, yv, 1, a, alpha, gain, clamp, mask[2] ? poisoned(at::empty({g.Co}, x.options())) : at::Tensor());
  // A of the products: dy with act' folded into the kernels' loads, else the materialised dz (which then also
  // gives db)
  const bool fold = ex.backend != Backend::CPU && lg.foldable(dy, yv);
  auto operand = [&]() { return fold ? dy : lg.dz(); };
  at::Tensor dx = at::empty({0}, x.options()), dw = at::empty({0}, x.options());
  bool dx_done = !mask[0], dw_done = !mask[1];
  if (ex.backend != Backend::CPU) {
    const double m = double(g.N * g.OH * g.OW) * double(g.Co) * double(g.Cg * g.KH * g.KW);
    // (per stride phase: M ~ N*H*W / (sh*sw), K ~ Cout/G*KH*KW / (sh*sw); the phases together issue m MACs)
    const int64_t phases = g.sh * g.sw, Mp = g.N * g.H * g.W / phases;
    const int64_t Kp = std::max<int64_t>(1, g.Cog * g.KH * g.KW / phases);
    // The weight gradient and the input gradient's stride phases go to the kernels as parts of one launch (the
    // weight gradient first: gemm.cuh). Outside the kernels' limits: both to ATen.
    std::vector<GemmParams> ps;
    at::Tensor dw_out, dx_out;
    const bool want_dw = mask[1] && use_kernels(ex, x, g.Cog, g.Cg * g.KH * g.KW, m,
                                                std::min({g.Cog, g.Cg * g.KH * g.KW, g.N * g.OH * g.OW}));
    const bool want_dx = mask[0] && use_kernels(ex, x, Mp, g.Cg, m, std::min({Mp, g.Cg, Kp}), phases);
    if (want_dw) {
      dw_out = poisoned(at::empty(w.sizes(), w.options().memory_format(fmt)));
      GemmParams p = wgrad_params(g, operand(), x, dw_out, cl);
      if (fold) lg.fold(p, yv);
      if (!lg.db_done && p.N > 0) p.rowsum = lg.db.mutable_data_ptr();  // db = dz summed over (n, oh, ow)
      ps.push_back(p);
    }
    if (want_dx) {
      dx_out = at::empty(x.sizes(), x.options().memory_format(fmt));
      bool taps_empty = false;
      for (GemmParams& p : dgrad_phase_params(g, operand(), w, dx_out, &taps_empty)) {
        if (fold) lg.fold(p, yv);
        ps.push_back(p);
      }
      if (taps_empty) dx_out.zero_();  // pixels no tap reaches: their gradient is 0
      else poisoned(dx_out);
    }
    auto done = [&](bool with_dw, bool with_dx) {
      if (with_dw) {
        dw = dw_out;
        dw_done = true;
        if (ps[0].rowsum != nullptr) lg.db_done = true;
      }
      if (with_dx) {
        dx = dx_out;
        dx_done = true;
      }
    };
    if (!ps.empty() && run_gemms(ex, ps, want_dw ? dw_out : dx_out)) {
      done(want_dw, want_dx);
    } else if (want_dw && want_dx) {  // one of them outside the kernels' limits: each on its own (the other: ATen)
      std::vector<GemmParams> pw(ps.begin(), ps.begin() + 1), px(ps.begin() + 1, ps.end());
      if (run_gemms(ex, pw, dw_out)) done(true, false);
      if (run_gemms(ex, px, dx_out)) done(false, true);
    }
  }
  if (ex.backend == Backend::CPU && mask[0] && small_conv_fits(x, w, g)) {
    dx = small_conv_dgrad(lg.dz(), x, w, g);
    dx_done = true;
  }
  if (!dx_done || !dw_done) {
    auto r = at::convolution_backward(lg.dz(), x, w, c10::nullopt, stride, padding, dilation, false, {0, 0}, groups,
                                      {!dx_done, !dw_done, false});
    if (!dx_done) dx = std::get<0>(r).contiguous(fmt);
    if (!dw_done) {
      dw = std::get<1>(r).contiguous(fmt);
      if (ex.backend == Backend::CPU) zero_dead_taps(dw, g);
    }
  }
  if (!lg.db_done) lg.dz();  // the bias gradient from the materialising pass
  return {dx, dw, mask[2] ? lg.db : at::empty({0}, x.options())};
}

}  // namespace fastgan
