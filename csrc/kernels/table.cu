// Assembles this backend's KernelTable (fastgan::cuda under nvcc, fastgan::emu under the emulation).
#include "common.cuh"

namespace fastgan {
namespace FG_NS {

void register_bias_act(KernelTable& t);
void register_bce(KernelTable& t);
void register_dense(KernelTable& t);
void register_linear_bce(KernelTable& t);
void register_adam(KernelTable& t);
void register_sum_squares(KernelTable& t);

const KernelTable& kernel_table() {
  static const KernelTable table = [] {
    KernelTable t{};
#ifdef FG_EMU
    t.backend = "emu";
#else
    t.backend = "cuda";
#endif
    register_bias_act(t);
    register_bce(t);
    register_dense(t);
    register_linear_bce(t);
    register_adam(t);
    register_sum_squares(t);
    return t;
  }();
  return table;
}

}  // namespace FG_NS
}  // namespace fastgan
