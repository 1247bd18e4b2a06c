// adam_ op glue: argument checks (each message names the argument and the tensor's index), the grouping of the
// tensors into launches (one dtype and at most kAdamMaxTensors tensors each), and the choice of kernels -- the C++
// CPU kernel (csrc/cpu/adam.cpp) or the CUDA / emulated kernel through the KernelTable.
#include <cmath>
#include <string>
#include <unordered_set>

#include "../cpu/cpu.h"
#include "glue.h"
#include "ops.h"

namespace fastgan {
namespace {

void check_list(const at::Tensor& t, const at::Tensor& p, const char* op, const char* arg, size_t i) {
  const std::string name = std::string(arg) + "[" + std::to_string(i) + "]";
  check_same(t, p, op, name.c_str(), "params[i]");
  TORCH_CHECK_VALUE(t.sizes() == p.sizes() && t.strides() == p.strides(), op, ": ", name, ": expected the shape ",
                    p.sizes(), " and strides ", p.strides(), " of params[", i, "], got ", t.sizes(), " and ",
                    t.strides());
}

}  // namespace

void adam_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
           at::TensorList steps, double lr, double beta1, double beta2, double eps, double weight_decay,
           std::optional<at::TensorList> ema, double ema_beta) {
  const BelowAutograd below;
  const char* op = "fastgan::adam_";
  const size_t n = params.size();
  TORCH_CHECK_VALUE(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n && steps.size() == n, op,
                    ": params, grads, exp_avgs, exp_avg_sqs and steps: expected lists of one length, got ", n, ", ",
                    grads.size(), ", ", exp_avgs.size(), ", ", exp_avg_sqs.size(), ", ", steps.size());
  TORCH_CHECK_VALUE(std::isfinite(lr) && lr >= 0, op, ": lr: expected a finite number >= 0, got ", lr);
  TORCH_CHECK_VALUE(beta1 >= 0 && beta1 < 1, op, ": beta1: expected a number in [0, 1), got ", beta1);
  TORCH_CHECK_VALUE(beta2 >= 0 && beta2 < 1, op, ": beta2: expected a number in [0, 1), got ", beta2);
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, op, ": eps: expected a finite number >= 0, got ", eps);
  TORCH_CHECK_VALUE(std::isfinite(weight_decay) && weight_decay >= 0, op,
                    ": weight_decay: expected a finite number >= 0, got ", weight_decay);
  const at::TensorList avg = ema.has_value() ? *ema : at::TensorList();
  TORCH_CHECK_VALUE(!ema.has_value() || avg.size() == n, op, ": ema: expected one tensor per parameter (", n,
                    "), got ", avg.size());
  TORCH_CHECK_VALUE(ema_beta >= 0 && ema_beta < 1, op, ": ema_beta: expected a number in [0, 1), got ", ema_beta);
  if (n == 0) return;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    const std::string name = "params[" + std::to_string(i) + "]";
    check_float(p, op, name.c_str());
    TORCH_CHECK_VALUE(p.device() == params[0].device(), op, ": ", name, ": expected the device of params[0] (",
                      params[0].device(), "), got ", p.device());
    TORCH_CHECK_VALUE(p.is_non_overlapping_and_dense(), op, ": ", name,
                      ": expected a dense tensor (no gaps or overlaps in memory), got strides ", p.strides());
    check_list(grads[i], p, op, "grads", i);
    check_list(exp_avgs[i], p, op, "exp_avgs", i);
    check_list(exp_avg_sqs[i], p, op, "exp_avg_sqs", i);
    if (ema.has_value()) check_list(avg[i], p, op, "ema", i);
    const at::Tensor& s = steps[i];
    TORCH_CHECK_VALUE(s.scalar_type() == at::kFloat && s.numel() == 1 && s.device() == p.device(), op, ": steps[",
                      i, "]: expected one float32 element on ", p.device(), ", got ", s.scalar_type(), " of ",
                      s.numel(), " elements on ", s.device());
  }
  // each tensor written once: the same parameter, moment or step counter twice would be updated twice (a race on
  // a GPU)
  std::unordered_set<const void*> seen;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor* written[4] = {&params[i], &exp_avgs[i], &exp_avg_sqs[i], ema.has_value() ? &avg[i] : nullptr};
    const char* names[4] = {"params", "exp_avgs", "exp_avg_sqs", "ema"};
    for (int k = 0; k < 3 + ema.has_value(); ++k)
      TORCH_CHECK_VALUE(written[k]->numel() == 0 || seen.insert(written[k]->const_data_ptr()).second, op, ": ",
                        names[k], "[", i, "]: a tensor written twice (it appears twice in the lists)");
    TORCH_CHECK_VALUE(seen.insert(steps[i].const_data_ptr()).second, op, ": steps[", i,
                      "]: the same step counter appears twice (or is another tensor of the lists)");
  }
  for (size_t i = 0; i < n; ++i)  // read while others are written: a race
    TORCH_CHECK_VALUE(grads[i].numel() == 0 || !seen.count(grads[i].const_data_ptr()), op, ": grads[", i,
                      "]: shares memory with a tensor the op writes (a parameter, moment, average or step counter)");
  const Exec ex = exec_for(params[0], op);
  c10::OptionalDeviceGuard guard(params[0].device());
  if (ex.backend == Backend::CPU) {
    for (size_t i = 0; i < n; ++i)
      cpu_adam(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i], steps[i], lr, beta1, beta2, eps, weight_decay,
               ema.has_value() ? avg[i] : at::Tensor(), ema_beta);
    return;
  }
  // launches of consecutive tensors of one dtype, at most kAdamMaxTensors each
  for (size_t i = 0; i < n;) {
    AdamParams p;
    p.dtype = to_dtype(params[i], op, "params");
    p.lr = lr;
    p.beta1 = beta1;
    p.beta2 = beta2;
    p.eps = eps;
    p.weight_decay = weight_decay;
    p.ema_beta = ema_beta;
    size_t j = i;
    for (; j < n && p.n < kAdamMaxTensors && params[j].scalar_type() == params[i].scalar_type(); ++j, ++p.n) {
      p.param[p.n] = params[j].mutable_data_ptr();
      p.grad[p.n] = grads[j].const_data_ptr();
      p.exp_avg[p.n] = exp_avgs[j].mutable_data_ptr();
      p.exp_avg_sq[p.n] = exp_avg_sqs[j].mutable_data_ptr();
      p.step[p.n] = steps[j].mutable_data_ptr<float>();
      p.ema[p.n] = ema.has_value() ? avg[j].mutable_data_ptr() : nullptr;
      p.numel[p.n] = params[j].numel();
    }
    with_counters(ex, params[i], true, [&](int* counters) {
      p.counters = counters;
      ex.kernels->adam(p, ex.stream);
    });
    i = j;
  }
}

}  // namespace fastgan
