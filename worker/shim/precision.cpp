// Small C++ shim for what tch 0.24 does not expose: autocast, TF32 and
// channels-last memory format. Compiled by worker/build.rs against the same
// libtorch headers torch-sys uses. Every function catches C++ exceptions and
// reports failure through its return value.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/DeviceType.h>
#include <c10/core/GradMode.h>
#include <c10/core/MemoryFormat.h>

static c10::DeviceType device_type(int cuda) { return cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU; }

extern "C" {

// Enter an autocast region on CUDA (cuda != 0) or the CPU, in bf16
// (half == 0) or fp16 (half != 0).
// Returns the state to restore on exit: the previous enabled flag in bit 0
// and the previous autocast dtype (a c10::ScalarType) above it; -1 on error.
int crossfold_autocast_enter(int cuda, int half) {
  try {
    auto dt = device_type(cuda);
    bool prev = at::autocast::is_autocast_enabled(dt);
    int prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dt));
    at::autocast::set_autocast_dtype(dt, half ? at::kHalf : at::kBFloat16);
    at::autocast::set_autocast_enabled(dt, true);
    at::autocast::increment_nesting();
    return (prev_dtype << 1) | (prev ? 1 : 0);
  } catch (...) {
    return -1;
  }
}

// Leave the region entered above, restoring the previous enabled flag and
// dtype; the cast cache is cleared when the outermost region ends (as
// torch.autocast does), so weights updated by the optimiser are cast afresh
// next step.
int crossfold_autocast_exit(int cuda, int previous) {
  try {
    auto dt = device_type(cuda);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(dt, (previous & 1) != 0);
    at::autocast::set_autocast_dtype(dt, static_cast<c10::ScalarType>(previous >> 1));
    return 0;
  } catch (...) {
    return -1;
  }
}

// Allow (1) or forbid (0) TF32 in cuBLAS matmuls and cuDNN convolutions.
int crossfold_set_tf32(int allow) {
  try {
    at::globalContext().setAllowTF32CuBLAS(allow != 0);
    at::globalContext().setAllowTF32CuDNN(allow != 0);
    return 0;
  } catch (...) {
    return -1;
  }
}

// `t` is a tch tensor handle (a torch::Tensor*). Re-lays its data out in
// channels-last order in place (set_data keeps the variable's identity, so
// optimiser state and the var store still see the same parameter).
// Always through a fresh channels-last tensor: `contiguous(ChannelsLast)`
// returns a one-channel tensor ([64, 1, 7, 7], the stem's weights) as it is,
// since its NCHW strides also pass as channels-last, and libtorch then picks
// NCHW kernels for it; PyTorch's `module.to(memory_format=channels_last)`
// re-strides it. (A stem left NCHW made the first block mix layouts: extra
// copies and slow batch-norm and max-pool kernels.)
int crossfold_channels_last_inplace(void *t) {
  try {
    auto *x = static_cast<at::Tensor *>(t);
    if (x->dim() != 4) return 0;
    if (x->suggest_memory_format() == c10::MemoryFormat::ChannelsLast) return 0;
    c10::NoGradGuard no_grad;
    at::Tensor y = at::empty_like(*x, c10::MemoryFormat::ChannelsLast);
    y.copy_(*x);
    x->set_data(y);
    return 0;
  } catch (...) {
    return -1;
  }
}

// 1 when libtorch treats the tensor as channels-last (its strides say so,
// not merely compatible with it), 0 when not, -1 on error.
int crossfold_is_channels_last(void *t) {
  try {
    auto *x = static_cast<at::Tensor *>(t);
    return x->dim() == 4 && x->suggest_memory_format() == c10::MemoryFormat::ChannelsLast ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

// 1 when libtorch enforces deterministic algorithms, 0 when not, -1 on error.
int crossfold_deterministic_algorithms() {
  try {
    return at::globalContext().deterministicAlgorithms() ? 1 : 0;
  } catch (...) {
    return -1;
  }
}
}
