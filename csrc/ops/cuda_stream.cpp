// The only glue file that includes CUDA headers; compiled in CUDA builds only. c10/cuda/CUDAStream.h is
// enough for launching (ATen/cuda/CUDAContext.h would pull in cuBLAS headers the pip toolkit may lack).
#include <c10/cuda/CUDAStream.h>

#include <atomic>

#include "glue.h"

namespace fastgan {

void* current_cuda_stream(const at::Tensor& t) {
  return static_cast<void*>(c10::cuda::getCurrentCUDAStream(t.device().index()).stream());
}

}  // namespace fastgan

namespace fastgan {

// Multiprocessor count of t's device (cached per device), for the GEMM kernels' size heuristic.
int current_cuda_sm_count(const at::Tensor& t) {
  static std::atomic<int> cache[64] = {};
  const int dev = t.device().index() < 0 ? 0 : t.device().index();
  if (dev < 64 && cache[dev] > 0) return cache[dev];
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) {
    (void)cudaGetLastError();
    n = 132;
  }
  if (dev < 64) cache[dev] = n;
  return n;
}

}  // namespace fastgan

namespace fastgan {

// Whether work queued on `stream` is being captured into a CUDA graph (the split-K counters then come from the
// graph's own memory, zeroed inside the graph).
bool cuda_stream_capturing(void* stream) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(static_cast<cudaStream_t>(stream), &st) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return st != cudaStreamCaptureStatusNone;
}

}  // namespace fastgan
