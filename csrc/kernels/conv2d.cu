// conv2d as implicit GEMM (the operand descriptors are built by the glue, csrc/ops/conv2d.cpp):
//   forward          (im2col, mat):  M = N*OH*OW output pixels, N = Cout/groups, K = Cin/groups*KH*KW,
//                                     fused bias + activation epilogue, NCHW or channels_last output;
//   backward data    (im2col, mat):  one GEMM per stride phase (the input pixels (rh + i*sh, rw + j*sw)):
//                                     M = N*H*W/(sh*sw), N = Cin/groups, K = Cout/groups * the phase's taps,
//                                     the operand being dz read with negative tap steps (conv2d.cpp); the
//                                     phases run as parts of one launch (up to 4 per launch, gemm.cuh);
//   backward weight  (mat, im2col):  M = Cout/groups, N = Cin/groups*KH*KW, K = N*OH*OW (split-K when the
//                                     weight is small and the batch long: the usual case); in one launch with
//                                     the input gradient's phases when the glue asks for both (conv2d.cpp).
// Groups are blocks of their own (gemm.cuh: a 1-D grid of tiles x groups x splits per part). Every tensor is
// addressed through its own strides (any layout is correct; the unit stride decides which index the threads of a
// warp walk, so NCHW and channels_last are both coalesced). This file only groups the parts into launches: the
// kernels themselves are compiled in gemm_<type>.cu (FG_GEMM_<TYPE> in gemm.cuh).
#include "gemm.cuh"

namespace fastgan {
namespace FG_NS {
namespace gemm {

void run_conv_gemm(const GemmParams* ps, const Plan* pls, int n, void* stream) {
  // A weight gradient (mat, im2col) and the input gradient's phases (im2col, mat) of one layer share a launch,
  // the weight gradient first: its blocks have the long k-chains, so they start first.
  static const char* const names[3] = {"conv2d_wgrad_gemm", "conv2d_gemm (forward / backward data)",
                                       "conv2d_backward_gemm (weight + data)"};
  gemm::run_tiled_parts<OperandKind::mat, OperandKind::im2col, OperandKind::im2col, OperandKind::mat>(ps, pls, n,
                                                                                                      stream, names);
}

}  // namespace gemm
}  // namespace FG_NS
}  // namespace fastgan
