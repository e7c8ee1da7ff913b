// Fused optimiser steps for tch: libtorch's multi-tensor kernels
// (_fused_sgd_, _fused_adam_, _fused_adamw_) update every parameter in a few
// launches, where tch's optimisers loop over the parameters one kernel at a
// time. Every function catches C++ exceptions, keeps the message for
// crossfold_optim_last_error() and returns -1.
#include <ATen/core/Tensor.h>
#include <ATen/ops/_amp_foreach_non_finite_check_and_unscale.h>
#include <ATen/ops/_amp_update_scale.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_sub.h>
#include <ATen/ops/_fused_adam.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/_fused_sgd.h>
#include <c10/core/GradMode.h>

#include <optional>
#include <string>
#include <vector>

static thread_local std::string last_error;

static at::Tensor &tensor(void *t) { return *static_cast<at::Tensor *>(t); }

// An optional tensor argument: null means none.
static std::optional<at::Tensor> maybe(void *t) {
  if (t == nullptr) return std::nullopt;
  return tensor(t);
}

extern "C" {

// The message of the last failure on this thread ("" when none).
const char *crossfold_optim_last_error() { return last_error.c_str(); }

// Drop the gradients of `n` parameters (set to none, as PyTorch's
// zero_grad(set_to_none=True)).
int crossfold_zero_grad(void **params, int n) {
  try {
    for (int i = 0; i < n; ++i) {
      tensor(params[i]).mutable_grad().reset();
    }
    return 0;
  } catch (const std::exception &e) {
    last_error = e.what();
    return -1;
  }
}

// One Adam step (decoupled != 0: AdamW) over the parameters that have a
// gradient. `steps` are float scalar tensors on the parameters' device,
// incremented here before the update as torch.optim does.
// With loss scaling, `grad_scale` is the scale the loss was multiplied by
// (the kernel divides the gradients by it) and `found_inf` the flag set by
// crossfold_amp_check: when it is 1 the update is skipped and the step
// counts are put back, as torch.optim does; both null without scaling.
// `lr_tensor`, when not null, is a one-element float tensor on the device
// holding the learning rate, read by the kernel (`lr` is then ignored): a
// step captured in a CUDA graph sees the rate written before each replay.
int crossfold_fused_adam(void **params, void **exp_avgs, void **exp_avg_sqs, void **steps, int n,
                         double lr, void *lr_tensor, double beta1, double beta2,
                         double weight_decay, double eps, int decoupled, void *grad_scale,
                         void *found_inf) {
  try {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> p, g, m, v, s;
    for (int i = 0; i < n; ++i) {
      const at::Tensor &grad = tensor(params[i]).grad();
      if (!grad.defined()) continue;
      p.push_back(tensor(params[i]));
      g.push_back(grad);
      m.push_back(tensor(exp_avgs[i]));
      v.push_back(tensor(exp_avg_sqs[i]));
      s.push_back(tensor(steps[i]));
    }
    if (p.empty()) return 0;
    at::_foreach_add_(s, 1);
    auto scale = maybe(grad_scale), inf = maybe(found_inf);
    if (lr_tensor != nullptr && decoupled) {
      at::_fused_adamw_(p, g, m, v, {}, s, tensor(lr_tensor), beta1, beta2, weight_decay, eps, false,
                        false, scale, inf);
    } else if (lr_tensor != nullptr) {
      at::_fused_adam_(p, g, m, v, {}, s, tensor(lr_tensor), beta1, beta2, weight_decay, eps, false,
                       false, scale, inf);
    } else if (decoupled) {
      at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps, false, false, scale,
                        inf);
    } else {
      at::_fused_adam_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps, false, false, scale,
                       inf);
    }
    if (inf) {
      at::_foreach_sub_(s, std::vector<at::Tensor>(s.size(), *inf));
    }
    return 0;
  } catch (const std::exception &e) {
    last_error = e.what();
    return -1;
  }
}

// One SGD step (momentum, dampening, weight decay, Nesterov) over the
// parameters that have a gradient. `buffers` are the momentum buffers
// (ignored when momentum is 0); on the first step they are set to the
// gradient, as torch.optim.SGD does. `lr_tensor` as for Adam.
int crossfold_fused_sgd(void **params, void **buffers, int n, double lr, void *lr_tensor,
                        double momentum, double dampening, double weight_decay, int nesterov,
                        int first_step, void *grad_scale, void *found_inf) {
  try {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> p, g, b;
    for (int i = 0; i < n; ++i) {
      const at::Tensor &grad = tensor(params[i]).grad();
      if (!grad.defined()) continue;
      p.push_back(tensor(params[i]));
      g.push_back(grad);
      if (momentum != 0.0) b.push_back(tensor(buffers[i]));
    }
    if (p.empty()) return 0;
    if (lr_tensor != nullptr) {
      at::_fused_sgd_(p, g, b, weight_decay, momentum, tensor(lr_tensor), dampening, nesterov != 0,
                      false, first_step != 0, maybe(grad_scale), maybe(found_inf));
    } else {
      at::_fused_sgd_(p, g, b, weight_decay, momentum, lr, dampening, nesterov != 0, false,
                      first_step != 0, maybe(grad_scale), maybe(found_inf));
    }
    return 0;
  } catch (const std::exception &e) {
    last_error = e.what();
    return -1;
  }
}

// Loss scaling, step 1: `found_inf` (float, one element) is set to 1 when any
// gradient of the `n` parameters holds an inf or a NaN. `one` is a float
// tensor holding 1: gradients are multiplied by it, i.e. left as they are
// (the fused step divides them by the scale). No host sync.
int crossfold_amp_check(void **params, int n, void *found_inf, void *one) {
  try {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> g;
    for (int i = 0; i < n; ++i) {
      const at::Tensor &grad = tensor(params[i]).grad();
      if (grad.defined()) g.push_back(grad);
    }
    at::Tensor &inf = tensor(found_inf);
    inf.zero_();
    if (g.empty()) return 0;
    at::_amp_foreach_non_finite_check_and_unscale_(g, inf, tensor(one));
    return 0;
  } catch (const std::exception &e) {
    last_error = e.what();
    return -1;
  }
}

// Loss scaling, step 2: after an overflow the scale is multiplied by
// `backoff`; after `interval` steps in a row without one, by `growth`
// (torch.amp.GradScaler's rule). On the device, no host sync.
int crossfold_amp_update(void *scale, void *growth_tracker, void *found_inf, double growth,
                         double backoff, long interval) {
  try {
    c10::NoGradGuard no_grad;
    at::_amp_update_scale_(tensor(scale), tensor(growth_tracker), tensor(found_inf), growth,
                           backoff, interval);
    return 0;
  } catch (const std::exception &e) {
    last_error = e.what();
    return -1;
  }
}
}
