// The interface between the glue (csrc/ops, ATen) and the kernels (csrc/kernels, raw pointers).
// Each backend (fastgan::cuda compiled by nvcc, fastgan::emu compiled by the host compiler under the CPU
// emulation) provides the same KernelTable; the glue picks one and never needs a second code path.
#pragma once

#include <cstdint>

namespace fastgan {

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
  int64_t numel = 0, C = 1, inner = 1;
  int act = 0;
  double alpha = 0, gain = 1, clamp = -1;
  DType dtype{};
};
constexpr int kBiasGradSplits = 16;

// Stable sigmoid + binary cross-entropy. target == nullptr: every target equals `label`.
// weight / pos_weight: nullptr or numel elements (broadcast already materialised by the glue).
// reduction: 0 none (out has numel elements), 1 mean, 2 sum (out has 1 element).
struct BceParams {
  const void* logits = nullptr;
  const void* target = nullptr;
  const void* weight = nullptr;
  const void* pos_weight = nullptr;
  void* out = nullptr;
  void* workspace = nullptr;  // kBceMaxBlocks accumulators (float, or double for f64) for reductions
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
constexpr int kBceMaxBlocks = 1024;

struct KernelTable {
  const char* backend;
  void (*bias_act_fwd)(const BiasActParams&, void* stream);
  void (*bias_act_bwd)(const BiasActBwdParams&, void* stream);
  void (*bce_fwd)(const BceParams&, void* stream);
  void (*bce_bwd)(const BceBwdParams&, void* stream);
};

namespace cuda { const KernelTable& kernel_table(); }
namespace emu { const KernelTable& kernel_table(); }

}  // namespace fastgan
