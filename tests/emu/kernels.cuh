// Declarations of the sample kernels in kernels.cu, shared with the test driver emu_tests.cpp.
#pragma once

struct AtomicsOut {
  int i_add, i_sub;
  unsigned u_add, u_sub;
  unsigned long long ull_add;
  float f_add;
  double d_add;
  int i_max, i_min;
  unsigned u_max;
  unsigned long long ull_min;
  unsigned u_or, u_and, u_xor;
  int i_exch;
  unsigned u_inc;
  int cas_owner, cas_winners;
  __half h_add;
};

namespace fgemu_tests {
__global__ void block_reduce_sum(const float* __restrict__ x, float* __restrict__ out, int n);
__global__ void warp_reduce(const int* x, int* out);
__global__ void block_sum_shfl(const float* x, float* out, int n);
__global__ void shfl_width(const int* x, int* out, int width);
__global__ void compact_positive(const int* x, int n, int* out, int* counts);
__global__ void histogram(const int* x, int n, unsigned* hist, int nbins);
__global__ void atomics_mix(AtomicsOut* o);
__global__ void matmul_tiled(const float* A, const float* B, float* C, int M, int N, int K);
__global__ void reverse_dynamic(const float* x, float* y, int n);
__global__ void read_dynamic_unwritten(float* y, int count);
__global__ void read_uninitialized(float* y);
__global__ void stale_between_blocks(int* y);
__global__ void footprint(int* fresh, int* bad, int rounds);
__global__ void big_static(int* y);
using TwinKernel = void (*)(int*);
TwinKernel twin_in_kernels_cu();  // an anonymous-namespace kernel named like one in emu_tests.cpp
__global__ void grid_index(unsigned* out, dim3 total);
__global__ void sync_votes(const int* x, int* out);
__global__ void warp_votes(const int* x, unsigned* out);
__global__ void aggregated_increment(const int* x, int* counter, int* slots);
__global__ void partial_warp(float* out);
__global__ void intrinsics(float* f, int* i);
__global__ void divergent_exit(float* y);
__global__ void two_barriers(float* y);
__global__ void shfl_deadlock(float* y);
__global__ void shfl_bad_mask(float* y);
__global__ void device_assert(const int* x);
__global__ void big_smem(float* y);
__global__ void noop(int*);
__global__ void null_write(int* p);
__global__ void stack_hog(int* out, int depth);
__global__ void four_barriers(float* y);
__global__ void elementwise(const float* x, float* y, int n);
__global__ void shift_missing_barrier(const float* x, float* out);
__global__ void write_write_race(int* out);
__global__ void same_value_writes(int* out);
__global__ void plain_vs_atomic(int* out);
__global__ void warp_smem_reduce(const int* x, int* out, int use_syncwarp);
__global__ void count_plain(int* c);
__global__ void count_atomic(int* c);
__global__ void last_block_sum(const float* x, float* partial, unsigned* count, float* out, int use_fence);
__global__ void flag_handoff(int* data, volatile int* flag, int* out, int use_fence);
__global__ void pdl_copy(const int* src, int* dst, int n, int early);
__global__ void misaligned_access(const unsigned short* h, unsigned* u, double* d, const float* w, float* v,
                                  unsigned* r, int mode);
__global__ void grid_spin_barrier(unsigned* arrived, int* out);
__global__ void uninitialized_max(const int* x, int* out);
__global__ void race_in_later_block(int* out);

void run_act_lrelu(const float* x, float* y, int n);
void run_scale_copy_half(const __half* x, __half* y, int n, float s);
void run_scale_copy_bf16(const __nv_bfloat16* x, __nv_bfloat16* y, int n, float s);
void run_scale_copy_f64(const double* x, double* y, int n, float s);
}  // namespace fgemu_tests

namespace fastgan {
namespace FG_NS {
void launch_dyn_prefix_sum(const int* x, int* y, int n, int threads);
}
}  // namespace fastgan
