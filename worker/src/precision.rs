//! Mixed precision and memory layout through the C++ shim
//! (`shim/precision.cpp`): tch 0.24 only offers fp16 autocast without a
//! gradient scaler, and no channels-last layout.
//!
//! - [`Bf16Autocast`]: a bf16 autocast region (the forward pass and loss);
//!   bf16 has fp32's range, so no loss scaling is needed.
//! - [`set_tf32`]: TF32 tensor cores for fp32 matmuls and convolutions.
//! - [`to_channels_last`]: re-lay 4-D tensors (conv weights, image batches)
//!   out as NHWC, which cuDNN runs fastest with tensor cores.

use std::os::raw::{c_int, c_void};
use tch::Tensor;

extern "C" {
    fn crossfold_autocast_enter_bf16(cuda: c_int) -> c_int;
    fn crossfold_autocast_exit(cuda: c_int, previous: c_int) -> c_int;
    fn crossfold_set_tf32(allow: c_int) -> c_int;
    fn crossfold_channels_last_inplace(t: *mut c_void) -> c_int;
    fn crossfold_is_channels_last(t: *mut c_void) -> c_int;
    fn crossfold_deterministic_algorithms() -> c_int;
}

/// Whether libtorch enforces deterministic algorithms in this process.
pub fn deterministic_algorithms() -> bool {
    // SAFETY: no arguments; the shim catches C++ exceptions (-1).
    unsafe { crossfold_deterministic_algorithms() == 1 }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("libtorch refused {0}")]
pub struct ShimError(&'static str);

/// A bf16 autocast region on the CUDA or CPU device type; ends on drop.
pub struct Bf16Autocast {
    cuda: bool,
    previous: c_int,
}

impl Bf16Autocast {
    pub fn enter(cuda: bool) -> Result<Self, ShimError> {
        // SAFETY: no arguments but an int; the shim catches C++ exceptions.
        let previous = unsafe { crossfold_autocast_enter_bf16(cuda as c_int) };
        if previous < 0 {
            return Err(ShimError("bf16 autocast"));
        }
        Ok(Bf16Autocast { cuda, previous })
    }
}

impl Drop for Bf16Autocast {
    fn drop(&mut self) {
        // SAFETY: pairs with the enter call above.
        unsafe {
            crossfold_autocast_exit(self.cuda as c_int, self.previous);
        }
    }
}

/// Allow or forbid TF32 for fp32 matmuls and convolutions on CUDA.
pub fn set_tf32(allow: bool) -> Result<(), ShimError> {
    // SAFETY: plain int argument; exceptions are caught in the shim.
    match unsafe { crossfold_set_tf32(allow as c_int) } {
        0 => Ok(()),
        _ => Err(ShimError("TF32 setting")),
    }
}

/// Re-lay a 4-D tensor's data out channels-last, in place (other tensors are
/// left alone). Parameters keep their identity, so this is safe on weights
/// held by a var store and an optimiser.
pub fn to_channels_last(t: &Tensor) -> Result<(), ShimError> {
    // SAFETY: `as_ptr` is tch's handle, a torch::Tensor*, valid while `t` lives.
    match unsafe { crossfold_channels_last_inplace(t.as_ptr() as *mut c_void) } {
        0 => Ok(()),
        _ => Err(ShimError("channels-last layout")),
    }
}

pub fn is_channels_last(t: &Tensor) -> bool {
    // SAFETY: as above.
    unsafe { crossfold_is_channels_last(t.as_ptr() as *mut c_void) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn bf16_autocast_region_casts_convolutions_and_ends() {
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu));
        let plain = x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
        assert_eq!(plain.kind(), Kind::Float);
        let inside = {
            let _region = Bf16Autocast::enter(false).unwrap();
            x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
        };
        assert_eq!(inside.kind(), Kind::BFloat16);
        let after = x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
        assert_eq!(
            after.kind(),
            Kind::Float,
            "autocast must end with the region"
        );
        let diff = (inside.to_kind(Kind::Float) - &plain)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 0.2, "{diff}");
    }

    #[test]
    fn channels_last_in_place_keeps_values() {
        let t = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        let before = t.copy();
        assert!(!is_channels_last(&t));
        to_channels_last(&t).unwrap();
        assert!(is_channels_last(&t));
        assert!(t.equal(&before));
        let v = Tensor::randn([7], (Kind::Float, Device::Cpu));
        to_channels_last(&v).unwrap();
    }

    #[test]
    fn compute_resolves_auto_per_device() {
        use crossfold_shared::spec::{Precision, Toggle, TrainSpec};
        let t = TrainSpec::default();
        let cpu = Compute::resolve(&t, Device::Cpu);
        assert_eq!(
            cpu,
            Compute {
                fused_optimizer: true,
                ..Compute::plain()
            }
        );
        let gpu = Compute::resolve(&t, Device::Cuda(0));
        assert_eq!(
            gpu,
            Compute {
                cuda: true,
                autocast_bf16: true,
                tf32: true,
                channels_last: true,
                fused_optimizer: true,
                cudnn_benchmark: false,
            }
        );
        let strict = TrainSpec {
            precision: Precision::Fp32,
            cudnn_benchmark: Toggle::On,
            fused_optimizer: Toggle::Off,
            channels_last: Toggle::Off,
            ..TrainSpec::default()
        };
        let g = Compute::resolve(&strict, Device::Cuda(1));
        assert!(!g.autocast_bf16 && !g.tf32 && !g.channels_last && !g.fused_optimizer);
        assert!(g.cudnn_benchmark);
        let tf32 = TrainSpec {
            precision: Precision::Tf32,
            ..TrainSpec::default()
        };
        let g = Compute::resolve(&tf32, Device::Cuda(0));
        assert!(g.tf32 && !g.autocast_bf16);
        assert!(!Compute::resolve(&tf32, Device::Cpu).tf32);
    }

    #[test]
    fn tf32_toggle_is_accepted() {
        set_tf32(true).unwrap();
        set_tf32(false).unwrap();
    }
}

/// How a job computes, resolved from the spec and the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compute {
    pub cuda: bool,
    pub autocast_bf16: bool,
    pub tf32: bool,
    pub channels_last: bool,
    /// libtorch's fused multi-tensor optimiser step (see `train::optim`).
    pub fused_optimizer: bool,
    /// cuDNN autotuning: fastest kernels, not bitwise reproducible.
    pub cudnn_benchmark: bool,
}

impl Compute {
    /// `precision = auto`: bf16 autocast and TF32 on CUDA, fp32 on the CPU;
    /// `fp32`: full precision (no TF32, no cuDNN autotuning); `tf32`: fp32
    /// with TF32 tensor cores on CUDA; `bf16`: bf16 autocast on any device.
    /// `channels_last = auto`: on for CUDA; `fused_optimizer = auto`: on;
    /// `cudnn_benchmark = auto`: off (see below).
    pub fn resolve(t: &crossfold_shared::spec::TrainSpec, device: tch::Device) -> Compute {
        use crossfold_shared::spec::{Precision, Toggle};
        let cuda = device.is_cuda();
        let toggle = |v: Toggle| match v {
            Toggle::Auto => cuda,
            Toggle::On => true,
            Toggle::Off => false,
        };
        Compute {
            cuda,
            autocast_bf16: match t.precision {
                Precision::Auto => cuda,
                Precision::Bf16 => true,
                Precision::Fp32 | Precision::Tf32 => false,
            },
            tf32: cuda && t.precision != Precision::Fp32,
            channels_last: toggle(t.channels_last),
            // The fused kernels exist for both devices: +71% on an H200,
            // +6% on a 2-core CPU (bench/README.md).
            fused_optimizer: t.fused_optimizer != Toggle::Off,
            // Autotuning is off unless asked for: on an H200 it added 1.1 s
            // to a 30-epoch screening job (every new shape is timed) and
            // made no later epoch faster (bench/README.md).
            cudnn_benchmark: cuda && t.cudnn_benchmark == Toggle::On,
        }
    }

    /// Full fp32, NCHW: what the CPU gets by default.
    pub fn plain() -> Compute {
        Compute {
            cuda: false,
            autocast_bf16: false,
            tf32: false,
            channels_last: false,
            fused_optimizer: false,
            cudnn_benchmark: false,
        }
    }

    /// Set the process-wide settings (TF32, cuDNN autotuning) for this
    /// job's device and keep them while the returned guard lives: a job of
    /// this process whose settings differ (another experiment's spec, in
    /// another slot) waits until every job using the current ones is done,
    /// so no job runs, or records in its provenance, settings it did not ask
    /// for. CPU jobs have no such settings and never wait.
    pub fn apply_globals(&self) -> Result<GlobalsGuard, ShimError> {
        if !self.cuda {
            return Ok(GlobalsGuard { gate: None });
        }
        let key = (self.tf32, self.cudnn_benchmark);
        let guard = GLOBALS.enter(key, || {
            set_tf32(key.0)?;
            tch::Cuda::cudnn_set_benchmark(key.1);
            Ok(())
        })?;
        Ok(guard)
    }

    /// Lay the model's 4-D weights out channels-last when asked.
    pub fn prepare_model(&self, vs: &tch::nn::VarStore) -> Result<(), ShimError> {
        if self.channels_last {
            for (_, v) in vs.variables() {
                to_channels_last(&v)?;
            }
        }
        Ok(())
    }

    /// Forward pass with this job's layout and precision; logits in fp32.
    pub fn forward(
        &self,
        net: &impl tch::nn::ModuleT,
        x: &Tensor,
        train: bool,
    ) -> Result<Tensor, ShimError> {
        if self.channels_last {
            to_channels_last(x)?;
        }
        let logits = if self.autocast_bf16 {
            let _region = Bf16Autocast::enter(self.cuda)?;
            net.forward_t(x, train)
        } else {
            net.forward_t(x, train)
        };
        Ok(logits.to_kind(tch::Kind::Float))
    }
}

/// Who uses the process-wide compute settings now: the settings and how
/// many holders. See [`Compute::apply_globals`].
pub struct GlobalsGate {
    state: std::sync::Mutex<(Option<(bool, bool)>, usize)>,
    changed: std::sync::Condvar,
}

static GLOBALS: GlobalsGate = GlobalsGate::new();

impl GlobalsGate {
    pub const fn new() -> GlobalsGate {
        GlobalsGate {
            state: std::sync::Mutex::new((None, 0)),
            changed: std::sync::Condvar::new(),
        }
    }

    /// Wait until no holder uses settings other than `key`, apply them with
    /// `set` when they are not already in force, and hold them.
    pub fn enter(
        &'static self,
        key: (bool, bool),
        set: impl FnOnce() -> Result<(), ShimError>,
    ) -> Result<GlobalsGuard, ShimError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.1 > 0 && state.0 != Some(key) {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.0 != Some(key) {
            set()?;
            state.0 = Some(key);
        }
        state.1 += 1;
        Ok(GlobalsGuard { gate: Some(self) })
    }
}

impl Default for GlobalsGate {
    fn default() -> Self {
        GlobalsGate::new()
    }
}

/// Holds the process-wide compute settings in force; see
/// [`Compute::apply_globals`].
pub struct GlobalsGuard {
    gate: Option<&'static GlobalsGate>,
}

impl Drop for GlobalsGuard {
    fn drop(&mut self) {
        if let Some(gate) = self.gate {
            let mut state = gate.state.lock().unwrap_or_else(|e| e.into_inner());
            state.1 = state.1.saturating_sub(1);
            if state.1 == 0 {
                gate.changed.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn jobs_with_other_settings_wait_for_the_current_holders() {
        static GATE: GlobalsGate = GlobalsGate::new();
        static SETS: AtomicUsize = AtomicUsize::new(0);
        let set = || {
            SETS.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        let a = GATE.enter((true, false), set).unwrap();
        // Same settings: enters at once, without setting them again.
        let b = GATE.enter((true, false), set).unwrap();
        assert_eq!(SETS.load(Ordering::SeqCst), 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let g = GATE.enter((false, false), set).unwrap();
            tx.send(()).unwrap();
            drop(g);
        });
        // Other settings wait while a holder remains...
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(a);
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(b);
        // ... and enter once the last one is gone, applying their settings.
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
        assert_eq!(SETS.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn cpu_jobs_hold_nothing() {
        let g = Compute::plain().apply_globals().unwrap();
        assert!(g.gate.is_none());
    }
}
