// Declarations of the tensor-core test kernels in tensorcore.cu (shared with the test driver emu_tests.cpp).
#pragma once
#include <cstdint>

namespace fgemu_tests {
__global__ void tc_mma_tf32(const float* A, const float* B, const float* C, float* D, int round);
__global__ void tc_mma_16bit(const unsigned short* A, const unsigned short* B, const float* C, float* D, int bf16);
__global__ void tc_ldmatrix(const unsigned short* M, uint32_t* out, int n, int trans);
__global__ void tc_to_tf32(const float* x, uint32_t* out, int n);
__global__ void tc_mma_grid_tf32(const float* A, const float* B, float* D);
__global__ void tc_cp_async(const uint4* src, uint4* out, int mode);
}  // namespace fgemu_tests
