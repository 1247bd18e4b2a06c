// conv2d as implicit GEMM (the operand descriptors are built by the glue, csrc/ops/conv2d.cpp):
//   forward          (im2col, mat):  M = N*OH*OW output pixels, N = Cout/groups, K = Cin/groups*KH*KW,
//                                     fused bias + activation epilogue, NCHW or channels_last output;
//   backward data    (im2col, mat):  one GEMM per stride phase (the input pixels (rh + i*sh, rw + j*sw)):
//                                     M = N*H*W/(sh*sw), N = Cin/groups, K = Cout/groups * the phase's taps,
//                                     the operand being dz read with negative tap steps (conv2d.cpp); the
//                                     phases run as parts of one launch (up to 4 per launch, gemm.cuh);
//   backward weight  (mat, im2col):  M = Cout/groups, N = Cin/groups*KH*KW, K = N*OH*OW (split-K when the
//                                     weight is small and the batch long: the usual case).
// Groups run as grid.z. Every tensor is addressed through its own strides (any layout is correct; the unit
// stride decides which index the threads of a warp walk, so NCHW and channels_last are both coalesced).
#include "gemm.cuh"

namespace fastgan {
namespace FG_NS {
namespace gemm {

void run_conv_gemm(const GemmParams* ps, const Plan* pls, int n, void* stream) {
  const OperandKind a = ps[0].a.kind, b = ps[0].b.kind;
  if (a == OperandKind::im2col && b == OperandKind::mat)
    run_tiled_parts<OperandKind::im2col, OperandKind::mat>(ps, pls, n, stream, "conv2d_gemm (forward / backward data)");
  else if (a == OperandKind::mat && b == OperandKind::im2col)
    run_tiled_parts<OperandKind::mat, OperandKind::im2col>(ps, pls, n, stream, "conv2d_wgrad_gemm");
  else
    throw std::invalid_argument("gemm: unsupported operand kinds (" + std::to_string((int)a) + ", " +
                                std::to_string((int)b) + ")");
}

}  // namespace gemm
}  // namespace FG_NS
}  // namespace fastgan
