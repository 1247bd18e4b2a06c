// Convolution geometry and the layout test shared by the conv2d op (ops/conv2d.cpp) and its direct CPU backward
// data for short reductions (cpu/conv2d.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fastgan {

// x: N x C x H x W, w: Co x Cg x KH x KW, y: N x Co x OH x OW; G groups of Cg input / Cog output channels.
struct ConvGeom {
  int64_t N, C, H, W, Co, KH, KW, OH, OW, G, Cg, Cog;
  int64_t sh, sw, ph, pw, dh, dw;
};

// Whether t's strides suggest channels_last (as ATen decides a convolution's output layout). fastgan/ops/conv2d.py's
// memory_format() writes out the same rule for the fake kernels.
inline bool channels_last(const at::Tensor& t) {
  return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

// Where the direct backward data is used instead of oneDNN (torch 2.14.1, one Zen 4 core; benchmarks/NOTES.md):
// - up to this patch length K = Cg*KH*KW (the forward's reduction length): oneDNN was 1.7-10x slower than the
//   direct loops for every K <= 72 measured (and equal at K = 288); with channels_last tensors, for which oneDNN
//   has a faster backward data, up to K = 36 (torch 2.14.1, one Zen 3 core, batch 128, 3x3 stride 2: 2.1-2.4x
//   faster at K = 27 and 36, 0.9-1.0x at K = 72);
// - from this many output channels per group: depthwise-like layers keep oneDNN's dedicated kernels.
// The forward and the weight gradient stay with oneDNN: direct loops for them measured up to 1.5x slower than
// oneDNN at its best. (oneDNN's forward of such layers can take 10x longer in a fresh process -- 3.3 vs 0.3 ms
// for 1 -> 32 channels at 28x28, batch 128 -- until larger convolutions have run: per-call memory page-faulted
// afresh; a training loop is past that after its first steps.)
constexpr int64_t kSmallConvMaxK = 72;
constexpr int64_t kSmallConvMaxKChannelsLast = 36;
constexpr int64_t kSmallConvMinCout = 8;

// True when the direct path applies: float32/float64, K <= kSmallConvMaxK (kSmallConvMaxKChannelsLast when x is
// channels_last), Cog >= kSmallConvMinCout.
bool small_conv_fits(const at::Tensor& x, const at::Tensor& w, const ConvGeom& g);
// The backward data of conv2d (dx: dense, in x's memory format); dz any strides.
at::Tensor small_conv_dgrad(const at::Tensor& dz, const at::Tensor& x, const at::Tensor& w, const ConvGeom& g);

}  // namespace fastgan
