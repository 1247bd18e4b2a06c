// The only glue file that includes CUDA headers; compiled in CUDA builds only. c10/cuda/CUDAStream.h is
// enough for launching (ATen/cuda/CUDAContext.h would pull in cuBLAS headers the pip toolkit may lack).
#include <c10/cuda/CUDAStream.h>

#include "glue.h"

namespace fastgan {

void* current_cuda_stream(const at::Tensor& t) {
  return static_cast<void*>(c10::cuda::getCurrentCUDAStream(t.device().index()).stream());
}

}  // namespace fastgan
