// Assembles this backend's KernelTable (fastgan::cuda under nvcc, fastgan::emu under the emulation), and holds the
// CUDA backend's programmatic-launch setting.
#include "common.cuh"

#include <atomic>
#include <cstdlib>
#include <cstring>

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

#ifndef FG_EMU
// Built like every kernel of this module (the same -gencode list, the same first statement); never launched: its
// attributes say which code version the device runs the kernels from.
__global__ void programmatic_launch_probe() { grid_dependency_sync(); }

namespace {
std::atomic<int> g_programmatic{-1};  // -1 until first read: FASTGAN_CUDA_PDL, then set_programmatic_launch's
constexpr int kMaxDevices = 64;
std::atomic<int> g_capable[kMaxDevices];  // per device: 0 not asked yet, 1 the kernels can wait, 2 they cannot
std::atomic<unsigned long long> g_programmatic_launches{0};
}  // namespace

bool programmatic_launch_setting() {
  int on = g_programmatic.load(std::memory_order_relaxed);
  if (on < 0) {
    const char* v = std::getenv("FASTGAN_CUDA_PDL");
    if (v == nullptr || *v == 0 || std::strcmp(v, "0") == 0) on = 0;
    else if (std::strcmp(v, "1") == 0) on = 1;
    else throw std::invalid_argument(std::string("FASTGAN_CUDA_PDL: expected 0 or 1, got '") + v + "'");
    int expected = -1;
    if (!g_programmatic.compare_exchange_strong(expected, on)) on = expected;  // a concurrent setter won
  }
  return on == 1;
}

void set_programmatic_launch(bool on) { g_programmatic.store(on ? 1 : 0); }

bool programmatic_launch() {
  if (!programmatic_launch_setting()) return false;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) {
    (void)cudaGetLastError();
    return false;
  }
  int capable = g_capable[dev].load(std::memory_order_relaxed);
  if (capable == 0) {
    // Not the device's compute capability alone: the kernels must run from sm_90+ code, which has the wait. A
    // build from compute_8x PTX (TORCH_CUDA_ARCH_LIST="8.0+PTX") JIT-compiled for an H100 has none, and a launch
    // with the attribute would then race with its predecessor.
    cudaFuncAttributes fa{};
    if (cudaFuncGetAttributes(&fa, programmatic_launch_probe) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    capable = fa.ptxVersion >= 90 && fa.binaryVersion >= 90 ? 1 : 2;
    g_capable[dev].store(capable, std::memory_order_relaxed);
  }
  return capable == 1;
}

void count_programmatic_launch() { g_programmatic_launches.fetch_add(1, std::memory_order_relaxed); }
unsigned long long programmatic_launches() { return g_programmatic_launches.load(std::memory_order_relaxed); }
#endif

}  // namespace FG_NS
}  // namespace fastgan
