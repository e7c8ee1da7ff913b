// Fused optimiser steps for tch: libtorch's multi-tensor kernels
// (_fused_sgd_, _fused_adam_, _fused_adamw_) update every parameter in a few
// launches, where tch's optimisers loop over the parameters one kernel at a
// time. Every function catches C++ exceptions, keeps the message for
// crossfold_optim_last_error() and returns -1.
#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_fused_adam.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/_fused_sgd.h>
#include <c10/core/GradMode.h>

#include <string>
#include <vector>

static thread_local std::string last_error;

static at::Tensor &tensor(void *t) { return *static_cast<at::Tensor *>(t); }

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
int crossfold_fused_adam(void **params, void **exp_avgs, void **exp_avg_sqs, void **steps, int n,
                         double lr, double beta1, double beta2, double weight_decay, double eps,
                         int decoupled) {
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
    if (decoupled) {
      at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps, false, false);
    } else {
      at::_fused_adam_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps, false, false);
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
// gradient, as torch.optim.SGD does.
int crossfold_fused_sgd(void **params, void **buffers, int n, double lr, double momentum,
                        double dampening, double weight_decay, int nesterov, int first_step) {
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
    at::_fused_sgd_(p, g, b, weight_decay, momentum, lr, dampening, nesterov != 0, false,
                    first_step != 0);
    return 0;
  } catch (const std::exception &e) {
    last_error = e.what();
    return -1;
  }
}
}
