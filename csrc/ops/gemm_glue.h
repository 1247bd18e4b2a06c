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
