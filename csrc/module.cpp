// The Python module fastgan._C: loading it registers the ops (registration.cpp); it also reports how it was
// built, so fastgan can detect a torch mismatch and `fastgan doctor` can print the build, and it holds the few
// process-wide switches of the glue (backend override for CPU tensors, CUDA product routing, test poisoning).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "kernels/activation.cuh"
#include "ops/gemm_glue.h"

#ifndef FASTGAN_TORCH_VERSION
#error "setup.py / CMakeLists.txt define FASTGAN_TORCH_VERSION"
#endif
#ifndef FASTGAN_CUDA_VERSION
#define FASTGAN_CUDA_VERSION ""
#endif
#ifndef FASTGAN_CUDA_ARCHS
#define FASTGAN_CUDA_ARCHS ""
#endif

#ifdef FASTGAN_WITH_EMU
namespace fgemu {
namespace rt {  // csrc/emu/runtime.cpp (its header defines CUDA's keywords: not for torch translation units)
void set_launch_log(bool on);
std::vector<std::string> take_launch_log();
}  // namespace rt
}  // namespace fgemu
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastgan compiled ops (registered as torch.ops.fastgan.*)";
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
  m.def("set_cpu_backend", &fastgan::set_cpu_backend, "CPU tensors: 'native' (C++ kernels) | 'emu' (emulated CUDA)");
  m.def("cpu_backend", &fastgan::cpu_backend);
  m.def("set_cuda_gemm_route", &fastgan::set_cuda_gemm_route, "CUDA products: 'auto' | 'kernels' | 'aten'");
  m.def("cuda_gemm_route", &fastgan::cuda_gemm_route);
#ifdef FASTGAN_WITH_EMU
  m.def("emu_launch_log", [](bool start) {
    std::vector<std::string> names = fgemu::rt::take_launch_log();
    fgemu::rt::set_launch_log(start);
    return names;
  }, "Emulated launches: start (or stop) recording kernel names; returns those recorded so far");
#endif
  m.def("activations", [] {
    pybind11::dict d;
#define FG_ACT_PY(code, name, F) d[#name] = code;
    FG_ACTIVATIONS(FG_ACT_PY)
#undef FG_ACT_PY
    return d;
  });
}
