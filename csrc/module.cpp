// The Python module fastgan._C: loading it registers the ops (registration.cpp); it also reports how it was
// built, so fastgan can detect a torch mismatch and `fastgan doctor` can print the build.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>  // Tensor <-> torch.Tensor casters

#include <string>

#include "autograd.h"
#include "kernels/activation.cuh"
#include "ops/gemm_glue.h"

namespace fastgan {
void set_poison(bool on);
// csrc/bench_allocator.cpp
void use_caching_cpu_allocator();
bool caching_cpu_allocator_active();
// csrc/eager_fast.cpp
void set_eager_activations(pybind11::dict table, pybind11::object impl_module, pybind11::object ext_module,
                           pybind11::object fwd_ad);
pybind11::object eager_dense(pybind11::handle input, pybind11::handle weight, pybind11::handle bias,
                             pybind11::handle act, pybind11::handle alpha, pybind11::handle gain,
                             pybind11::handle clamp);
}

#ifndef FASTGAN_TORCH_VERSION
#error "setup.py / CMakeLists.txt define FASTGAN_TORCH_VERSION"
#endif
#ifndef FASTGAN_CUDA_VERSION
#define FASTGAN_CUDA_VERSION ""
#endif
#ifndef FASTGAN_CUDA_ARCHS
#define FASTGAN_CUDA_ARCHS ""
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastgan compiled ops (registered as torch.ops.fastgan.* and torch.ops.fastgan_emu.*)";
  m.def("build_info", [] {
    pybind11::dict d;
    d["torch_version"] = FASTGAN_TORCH_VERSION;
#ifdef FASTGAN_WITH_CUDA
    d["with_cuda"] = true;
#else
    d["with_cuda"] = false;
#endif
#ifdef FASTGAN_WITH_EMU
    d["with_emu"] = true;
#else
    d["with_emu"] = false;
#endif
    d["cuda_version"] = FASTGAN_CUDA_VERSION;
    d["cuda_archs"] = FASTGAN_CUDA_ARCHS;
#if defined(__clang__)
    d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    d["compiler"] = std::string("gcc ") + __VERSION__;
#endif
    return d;
  });
  m.def("set_poison", &fastgan::set_poison, "Fill outputs with NaN before kernels run (tests)");
  m.def("set_cuda_gemm_route", &fastgan::set_cuda_gemm_route, "CUDA products: 'auto' | 'kernels' | 'aten'");
  m.def("cuda_gemm_route", &fastgan::cuda_gemm_route);
  // Eager entry points with C++ autograd (csrc/autograd.cpp); fastgan/_ops.py decides when they apply.
  m.def("autograd_bias_act", &fastgan::autograd_bias_act);
  m.def("autograd_dense", &fastgan::autograd_dense);
  m.def("autograd_conv2d", &fastgan::autograd_conv2d);
  m.def("autograd_sigmoid_bce", &fastgan::autograd_sigmoid_bce);
  m.def("plain_eager_state", &fastgan::plain_eager_state);
  m.def("use_caching_cpu_allocator", &fastgan::use_caching_cpu_allocator,
        "fastgan bench --cpu-allocator caching: every CPU tensor from a per-size LIFO cache from now on (process-wide)");
  m.def("caching_cpu_allocator_active", &fastgan::caching_cpu_allocator_active);
  m.def("set_eager_activations", &fastgan::set_eager_activations);
  m.def("eager_dense", &fastgan::eager_dense, "fastgan.functional.linear's fast path; None when it does not apply");
  m.def("activations", [] {
    pybind11::dict d;
#define FG_ACT_PY(code, name, F) d[#name] = code;
    FG_ACTIVATIONS(FG_ACT_PY)
#undef FG_ACT_PY
    return d;
  });
}
