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
namespace {
std::atomic<int> g_programmatic{-1};  // -1 until first read: FASTGAN_CUDA_PDL, then set_programmatic_launch's
constexpr int kMaxDevices = 64;
std::atomic<int> g_major[kMaxDevices];  // compute capability major per device, 0 until first asked
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
  int major = g_major[dev].load(std::memory_order_relaxed);
  if (major == 0) {
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    g_major[dev].store(major, std::memory_order_relaxed);
  }
  return major >= 9;
}
#endif

}  // namespace FG_NS
}  // namespace fastgan
