// Glue helpers shared by dense and conv2d for the implicit-GEMM kernels (csrc/kernels/gemm.cuh): workspace
// allocation, the device's multiprocessor count, and the CUDA routing policy (our kernels or ATen).
#pragma once

#include <string>
#include <vector>

#include "glue.h"

namespace fastgan {

// Multiprocessor count for the kernels' size heuristic: the CUDA device's; 132 (an H200) under emulation so
// the emulated kernels take the decisions the target GPU takes.
int gemm_sm_count(const Exec& ex, const at::Tensor& t);

// Runs p with ex's kernels (allocating the split-K workspace like `like`). Returns false, doing nothing, when
// the problem is outside the kernels' index limits; the caller then computes it with ATen.
bool run_gemm(const Exec& ex, GemmParams& p, const at::Tensor& like);

// Runs every GEMM of ps in order (one result computed in parts, e.g. the stride phases of a convolution's input
// gradient); false, doing nothing, when any of them is outside the kernels' limits.
bool run_gemms(const Exec& ex, std::vector<GemmParams>& ps, const at::Tensor& like);

// The upstream gradient of a backward op (dense_backward, conv2d_backward): dL/dy of a fused layer
// y = clamp(act(z) * gain) with its saved output y, or dL/dz itself when y is undefined (act linear, gain 1,
// no clamp: the ops drop y then). The GEMM kernels take dL/dy as it is: their A operand applies act' while
// loading (fold_act_grad) and the weight-gradient GEMM sums the bias gradient (GemmParams::rowsum). What cannot
// (the CPU, products routed to ATen, y with other strides than dy) uses dL/dz materialised once by dz().
struct LayerGrad {
  const Exec& ex;
  at::Tensor dy, y;  // y undefined: dy is dL/dz
  int64_t dim;       // the channel dim (bias gradient)
  int act;
  double alpha, gain, clamp;
  at::Tensor db;     // the bias gradient to produce (undefined: none)
  bool db_done;      // db written (or not wanted)
  at::Tensor dz_;    // materialised dL/dz

  LayerGrad(const Exec& ex, at::Tensor dy, at::Tensor y, int64_t dim, int act, double alpha, double gain,
            double clamp, at::Tensor db);
  // dL/dz as a tensor (dy itself when y is undefined and no bias gradient is pending); the first call computes it,
  // with the bias gradient in the same pass.
  const at::Tensor& dz();
  // Whether a GEMM can read `a` (a view of dy) as dL/dy: y's view `y_view` has the same strides wherever a dim
  // has more than one element (or y is undefined).
  bool foldable(const at::Tensor& a, const at::Tensor& y_view) const;
  // Makes p's A operand (a foldable view of dy) dL/dy: p.a_y = y_view and the activation.
  void fold(GemmParams& p, const at::Tensor& y_view) const;
};

// A single-digit index: element offset = i * stride.
GemmIndex gemm_index1(int64_t stride);

// Load mapping for a matrix operand: walk k across the warp unless r has the unit stride and k does not.
bool gemm_k_fast(int64_t r_unit_stride, int64_t k_unit_stride);

// CUDA routing policy, FASTGAN_CUDA_GEMM = auto (default) | kernels | aten. `auto` sends large products to ATen
// (cuBLAS / cuDNN; tensor cores for half types), see benchmarks/notes_kernels.md. `macs` is the multiply-add
// count of the product the kernels would run (including work they waste, e.g. strided backward data).
// Never consulted for the emulation (which always runs the kernels) or the CPU.
// `poor_fit`: a shape the tiles serve badly (see gemm_poor_fit), sent to ATen in `auto` mode.
// A GEMM whose output fills under a quarter of its 64 x 64 tiles (N or M tiny: depthwise convolutions, Cin = 1
// backward data, skinny products the dot kernel does not take) and which is big enough for that to matter.
bool gemm_poor_fit(int64_t M, int64_t N, double macs);

bool cuda_prefers_aten(const at::Tensor& t, double macs, int64_t min_dim, bool poor_fit = false);

// The routing policy at run time (fastgan.cuda_gemm_route): "auto" | "kernels" | "aten"; the environment variable
// gives the initial value. Process-wide; the benchmark's fastgan-kernels / fastgan-aten variants switch it around
// each call to measure both sides of every routing decision.
void set_cuda_gemm_route(const std::string& name);
std::string cuda_gemm_route();

}  // namespace fastgan
