// The tiled GEMM kernels of dense and conv2d for float16 (tensor cores, m16n8k16): one of the five translation units
// that compile gemm.cuh's kernels side by side (see FG_GEMM_LAUNCH there).
#include "gemm.cuh"

namespace fastgan {
namespace FG_NS {
namespace gemm {

FG_GEMM_F16()

}  // namespace gemm
}  // namespace FG_NS
}  // namespace fastgan
