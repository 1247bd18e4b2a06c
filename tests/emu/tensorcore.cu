// Tensor-core instruction wrappers (csrc/kernels/mma.cuh) driven with whole matrices: each lane loads its fragments
// by the PTX ISA's layout from row-major global arrays, runs the instruction and stores its D fragment back. Compiled
// by the host compiler under the emulation (tests/test_emu.py) and by nvcc for sm_80/sm_90 (tools/check_kernels.py).
#include "kernels/mma.cuh"

#include "tensorcore.cuh"

namespace fgemu_tests {
using namespace fastgan::FG_NS::tc;

__device__ __forceinline__ void store_d(float* D, const float d[4]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}
__device__ __forceinline__ void load_c(const float* C, float c[4]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  c[0] = C[g * 8 + 2 * t];
  c[1] = C[g * 8 + 2 * t + 1];
  c[2] = C[(g + 8) * 8 + 2 * t];
  c[3] = C[(g + 8) * 8 + 2 * t + 1];
}

// A 16x8, B 8x8 (B[k][n]), C and D 16x8, row-major. round: operands through to_tf32 (else raw float bits).
__global__ void tc_mma_tf32(const float* A, const float* B, const float* C, float* D, int round) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  auto reg = [round](float x) { return round ? to_tf32(x) : __float_as_uint(x); };
  const uint32_t a[4] = {reg(A[g * 8 + t]), reg(A[(g + 8) * 8 + t]), reg(A[g * 8 + t + 4]),
                         reg(A[(g + 8) * 8 + t + 4])};
  const uint32_t b[2] = {reg(B[t * 8 + g]), reg(B[(t + 4) * 8 + g])};
  float c[4], d[4];
  load_c(C, c);
  mma_tf32_16x8x8(d, a, b, c);
  store_d(D, d);
}

__device__ __forceinline__ uint32_t pack(unsigned short lo, unsigned short hi) {
  return (uint32_t)lo | ((uint32_t)hi << 16);
}

// A 16x16, B 16x8 (B[k][n]) as raw 16-bit patterns; bf16 != 0: bfloat16, else float16.
__global__ void tc_mma_16bit(const unsigned short* A, const unsigned short* B, const float* C, float* D, int bf16) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  uint32_t a[4], b[2];
  for (int q = 0; q < 4; ++q) {
    const int row = g + 8 * (q & 1), col = 2 * t + 8 * (q >> 1);
    a[q] = pack(A[row * 16 + col], A[row * 16 + col + 1]);
  }
  for (int q = 0; q < 2; ++q) {
    const int k = 2 * t + 8 * q;
    b[q] = pack(B[k * 8 + g], B[(k + 1) * 8 + g]);
  }
  float c[4], d[4];
  load_c(C, c);
  if (bf16)
    mma_bf16_16x8x16(d, a, b, c);
  else
    mma_f16_16x8x16(d, a, b, c);
  store_d(D, d);
}

// ldmatrix from a 32x8 matrix of 16-bit values in shared memory (4 stacked 8x8 matrices); lane l passes row l's
// address; out[lane * 4 + m] = the register r[m] each variant returns (x1, x2, x4; trans when `trans`).
__global__ void tc_ldmatrix(const unsigned short* M, uint32_t* out, int n, int trans) {
  __shared__ __align__(16) unsigned short s[32 * 8];
  const int lane = threadIdx.x & 31;
  for (int i = lane; i < 32 * 8; i += 32) s[i] = M[i];
  __syncwarp();
  uint32_t r[4] = {0u, 0u, 0u, 0u};
  const void* row = &s[lane * 8];
  if (n == 1 && !trans) ldmatrix<1, false>(r, row);
  if (n == 1 && trans) ldmatrix<1, true>(r, row);
  if (n == 2 && !trans) ldmatrix<2, false>(r, row);
  if (n == 2 && trans) ldmatrix<2, true>(r, row);
  if (n == 4 && !trans) ldmatrix<4, false>(r, row);
  if (n == 4 && trans) ldmatrix<4, true>(r, row);
  for (int m = 0; m < 4; ++m) out[lane * 4 + m] = r[m];
}

// to_tf32 of n values.
__global__ void tc_to_tf32(const float* x, uint32_t* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = to_tf32(x[i]);
}
// mma_grid<float, 2, 2>: the warp's 32x16 tile of A (32x8, row-major) times B (8x16, B[k][n]), TF32 from to_tf32,
// fragments loaded by the m16n8k8 layout per m-tile c (rows 16c..) and n-tile j (columns 8j..); D 32x16 row-major.
__global__ void tc_mma_grid_tf32(const float* A, const float* B, float* D) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  uint32_t a[2][4], b[2][2];
  float acc[4][4] = {};
  for (int c = 0; c < 2; ++c) {
    const float* Ac = A + 16 * c * 8;
    a[c][0] = to_tf32(Ac[g * 8 + t]);
    a[c][1] = to_tf32(Ac[(g + 8) * 8 + t]);
    a[c][2] = to_tf32(Ac[g * 8 + t + 4]);
    a[c][3] = to_tf32(Ac[(g + 8) * 8 + t + 4]);
  }
  for (int j = 0; j < 2; ++j) {
    b[j][0] = to_tf32(B[t * 16 + 8 * j + g]);
    b[j][1] = to_tf32(B[(t + 4) * 16 + 8 * j + g]);
  }
  mma_grid<float, 2, 2>(acc, a, b);
  for (int i = 0; i < 4; ++i)      // row 16 (i / 2) + g + 8 (i % 2)
    for (int jj = 0; jj < 4; ++jj)  // column 8 (jj / 2) + 2t + jj % 2
      D[(16 * (i / 2) + g + 8 * (i % 2)) * 16 + 8 * (jj / 2) + 2 * t + jj % 2] = acc[i][jj];
}

// cp.async: thread t copies 16-byte chunk t in group 0 and chunk 32 + t in group 1 (chunk 37: only its first 8
// bytes from the source, the rest zero-filled), then waits: mode 0 for everything, mode 1 leaving the newest group
// pending, mode 2 not at all; then reads its own two chunks back into out. Only mode 0 is defined on a GPU.
__global__ void tc_cp_async(const uint4* src, uint4* out, int mode) {
  __shared__ __align__(16) uint4 s[64];
  const int t = threadIdx.x & 31;
  cp_async<16>(&s[t], &src[t]);
  cp_async_commit();
  cp_async<16>(&s[32 + t], &src[32 + t], t == 5 ? 8 : 16);
  cp_async_commit();
  if (mode == 0) cp_async_wait<0>();
  if (mode == 1) cp_async_wait<1>();
  out[t] = s[t];
  out[32 + t] = s[32 + t];
}
}  // namespace fgemu_tests
