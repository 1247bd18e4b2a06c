// GPU side of the tensor-core layout tests: runs the kernels of tensorcore.cu on a real GPU and checks them against
// the same scalar models as emu_tests.cpp's `tensor_cores` case, so the first GPU run confirms that the emulated
// fragment layouts are the hardware's. Built and run by benchmarks/gpu_check.sh:
//   nvcc -std=c++17 -I csrc -I tests/emu -arch=sm_90 tests/emu/tensorcore.cu tests/emu/tensorcore_gpu.cu -o tc && ./tc
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "tensorcore.cuh"

using namespace fgemu_tests;

static int failures = 0;
#define CK(call)                                                                     \
  do {                                                                               \
    cudaError_t e_ = (call);                                                         \
    if (e_ != cudaSuccess) {                                                         \
      printf("FAIL %s: %s\n", #call, cudaGetErrorString(e_));                        \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)
static void expect(bool ok, const char* what, int i) {
  if (!ok && failures++ < 10) printf("FAIL %s at %d\n", what, i);
}
template <typename T>
static T* dev(const std::vector<T>& h) {
  T* d;
  CK(cudaMalloc(&d, h.size() * sizeof(T)));
  CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
template <typename T>
static std::vector<T> host(const T* d, size_t n) {
  std::vector<T> h(n);
  CK(cudaDeviceSynchronize());
  CK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}
static std::vector<float> ints(int n, int lo, int hi, unsigned seed) {
  std::vector<float> v((size_t)n);
  for (auto& x : v) x = (float)(lo + (int)((seed = seed * 1103515245u + 12345u) >> 16) % (hi - lo + 1));
  return v;
}

// D (rows x cols, row-major, from the device) against C + A * B in float (integer-valued inputs: exact sums);
// A rows x K row-major, B K x cols row-major; C may be empty (zero).
static void check_product(const float* dD, const std::vector<float>& A, const std::vector<float>& B,
                          const std::vector<float>& C, int rows, int cols, int K, const char* what) {
  auto D = host(dD, (size_t)rows * cols);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      float e = C.empty() ? 0.0f : C[r * cols + c];
      for (int k = 0; k < K; ++k) e += A[r * K + k] * B[k * cols + c];
      expect(D[r * cols + c] == e, what, r * cols + c);
    }
}

int main() {
  const uint32_t in[] = {0x3F801000u, 0x3F800800u, 0xBF801000u, 0x3F801800u, 0x3F800FFFu, 0x7FC00001u, 0x7F800000u,
                         0x00000000u, 0x00001000u, 0x7F7FF000u, 0xC0490FDBu};
  const uint32_t want[] = {0x3F802000u, 0x3F800000u, 0xBF802000u, 0x3F802000u, 0x3F800000u, 0x7FFFFFFFu,
                           0x7F800000u, 0x00000000u, 0x00002000u, 0x7F800000u, 0xC0490000u};
  const int n = 11;
  std::vector<float> xf(n);
  memcpy(xf.data(), in, sizeof in);
  float* dx = dev(xf);
  uint32_t* dout = dev(std::vector<uint32_t>(128, 0u));
  tc_to_tf32<<<1, 32>>>(dx, dout, n);
  auto got = host(dout, n);
  for (int i = 0; i < n; ++i) expect(got[i] == want[i] || (want[i] == 0x7FFFFFFFu && (got[i] & 0x7FFFFFFFu) > 0x7F800000u),
                                     "to_tf32", i);

  std::vector<float> A = ints(128, -8, 8, 1), B = ints(64, -8, 8, 2), C = ints(128, -50, 50, 3);
  float *dA = dev(A), *dB = dev(B), *dC = dev(C), *dD = dev(std::vector<float>(128, 0.0f));
  for (int round : {0, 1}) {
    tc_mma_tf32<<<1, 32>>>(dA, dB, dC, dD, round);
    check_product(dD, A, B, C, 16, 8, 8, "mma tf32");
  }
  for (int bf16 : {0, 1}) {
    std::vector<float> a = ints(256, -8, 8, 4), b = ints(128, -8, 8, 5);
    auto bits16 = [bf16](const std::vector<float>& v) {
      std::vector<unsigned short> o(v.size());
      for (size_t i = 0; i < v.size(); ++i)
        o[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v[i])) : __half_as_ushort(__float2half_rn(v[i]));
      return o;
    };
    unsigned short *da = dev(bits16(a)), *db = dev(bits16(b));
    tc_mma_16bit<<<1, 32>>>(da, db, dC, dD, bf16);
    check_product(dD, a, b, C, 16, 8, 16, bf16 ? "mma bf16" : "mma f16");
  }
  std::vector<unsigned short> M(256);
  for (int i = 0; i < 256; ++i) M[i] = (unsigned short)(i + 1);
  unsigned short* dM = dev(M);
  for (int nm : {1, 2, 4})
    for (int trans : {0, 1}) {
      tc_ldmatrix<<<1, 32>>>(dM, dout, nm, trans);
      auto regs = host(dout, 128);
      for (int l = 0; l < 32; ++l)
        for (int m = 0; m < nm; ++m) {
          uint32_t e[2];
          for (int i = 0; i < 2; ++i) {
            const int row = trans ? 2 * (l % 4) + i : l / 4, col = trans ? l / 4 : 2 * (l % 4) + i;
            e[i] = M[(8 * m + row) * 8 + col];
          }
          expect(regs[l * 4 + m] == (e[0] | (e[1] << 16)), trans ? "ldmatrix.trans" : "ldmatrix", l * 4 + m);
        }
    }
  {  // mma_grid<float, 2, 2>
    std::vector<float> a = ints(32 * 8, -8, 8, 5u), b = ints(8 * 16, -8, 8, 6u);
    float *da = dev(a), *db = dev(b), *dd = dev(std::vector<float>(32 * 16, -1.0f));
    tc_mma_grid_tf32<<<1, 32>>>(da, db, dd);
    check_product(dd, a, b, {}, 32, 16, 8, "mma_grid");
  }
  {  // cp.async with a wait for every group (the only mode defined on a GPU)
    std::vector<uint4> src(64);
    for (int i = 0; i < 64; ++i) src[i] = uint4{(unsigned)i, 100u + i, 200u + i, 300u + i};
    uint4 *ds = dev(src), *dout4 = dev(std::vector<uint4>(64, uint4{0u, 0u, 0u, 0u}));
    tc_cp_async<<<1, 32>>>(ds, dout4, 0);
    auto o = host(dout4, 64);
    for (int i = 0; i < 64; ++i) {
      const bool ok = o[i].x == src[i].x && o[i].y == src[i].y &&
                      (i == 37 ? o[i].z == 0u && o[i].w == 0u : o[i].z == src[i].z && o[i].w == src[i].w);
      expect(ok, "cp.async", i);
    }
  }
  CK(cudaGetLastError());
  printf(failures ? "tensor-core layouts: %d FAILURES\n" : "tensor-core layouts: all match the emulation%.0d\n",
         failures);
  return failures ? 1 : 0;
}
