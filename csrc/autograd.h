// C++ autograd entry points for eager calls of the fused ops (csrc/autograd.cpp), bound in csrc/module.cpp as
// fastgan._C.autograd_*. `emu`: run the emulated CUDA kernels (library fastgan_emu) instead of the native ones.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace fastgan {

// True when nothing that must see the dispatcher ops is active on this thread: autocast on any device, a
// torch.func transform, a torch function mode or a torch dispatch mode -- the thread-local state behind
// torch._C._is_any_autocast_enabled, _are_functorch_transforms_active, _is_torch_function_mode_enabled and
// _len_torch_dispatch_stack, read in one call.
bool plain_eager_state();

at::Tensor autograd_bias_act(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim,
                             const std::string& act, double alpha, double gain, double clamp, bool emu);
at::Tensor autograd_dense(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                          const std::string& act, double alpha, double gain, double clamp, bool emu);
at::Tensor autograd_conv2d(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                           const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                           const std::vector<int64_t>& dilation, int64_t groups, const std::string& act,
                           double alpha, double gain, double clamp, bool emu);
at::Tensor autograd_sigmoid_bce(const at::Tensor& logits, const c10::optional<at::Tensor>& target, double label,
                                const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& pos_weight,
                                int64_t reduction, bool emu);

}  // namespace fastgan
