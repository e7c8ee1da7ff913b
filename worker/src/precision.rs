//! Mixed precision and memory layout through the C++ shim
//! (`shim/precision.cpp`): tch 0.24 only offers fp16 autocast without a
//! gradient scaler, and no channels-last layout.
//!
//! - [`Autocast`]: a bf16 or fp16 autocast region (the forward pass and
//!   loss); bf16 has fp32's range and needs no loss scaling, fp16 trains
//!   with dynamic loss scaling (`train::LossScale`).
//! - [`set_tf32`]: TF32 tensor cores for fp32 matmuls and convolutions.
//! - [`to_channels_last`]: re-lay 4-D tensors (conv weights, image batches)
//!   out as NHWC, which cuDNN runs fastest with tensor cores.

use std::os::raw::{c_int, c_void};
use tch::Tensor;

extern "C" {
    fn crossfold_autocast_enter(cuda: c_int, half: c_int) -> c_int;
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

/// Half-precision type of an autocast region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Bf16,
    Fp16,
}

/// An autocast region: ops inside run in `Half` where autocast allows, until
/// the value is dropped.
pub struct Autocast {
    cuda: bool,
    previous: c_int,
}

impl Autocast {
    pub fn enter(cuda: bool, half: Half) -> Result<Self, ShimError> {
        // SAFETY: plain C call into the shim; no pointers.
        let previous =
            unsafe { crossfold_autocast_enter(cuda as c_int, (half == Half::Fp16) as c_int) };
        if previous < 0 {
            return Err(ShimError("autocast"));
        }
        Ok(Autocast { cuda, previous })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: plain C call into the shim; no pointers.
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
            let _region = Autocast::enter(false, Half::Bf16).unwrap();
            x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
        };
        assert_eq!(inside.kind(), Kind::BFloat16);
        let after = x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
        assert_eq!(
            after.kind(),
            Kind::Float,
            "autocast must end with the region"
        );
        // Nested regions restore the outer one's type on the way out.
        let (inner, outer) = {
            let _outer = Autocast::enter(false, Half::Bf16).unwrap();
            let inner = {
                let _inner = Autocast::enter(false, Half::Fp16).unwrap();
                x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
            };
            (
                inner,
                x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1),
            )
        };
        assert_eq!((inner.kind(), outer.kind()), (Kind::Half, Kind::BFloat16));
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
        // One input channel (the stem): NCHW strides also pass as
        // channels-last, so libtorch would pick NCHW kernels; the weights
        // must be re-strided as PyTorch's module.to(channels_last) does.
        let stem = Tensor::randn([64, 1, 7, 7], (Kind::Float, Device::Cpu));
        let before = stem.copy();
        assert!(!is_channels_last(&stem));
        to_channels_last(&stem).unwrap();
        assert!(is_channels_last(&stem));
        assert_eq!(stem.stride(), vec![49, 1, 7, 1]);
        assert!(stem.equal(&before));
        // A convolution with it gives a channels-last output.
        let x = Tensor::randn([2, 1, 16, 16], (Kind::Float, Device::Cpu));
        to_channels_last(&x).unwrap();
        let y = x.conv2d(&stem, None::<Tensor>, [2, 2], [3, 3], [1, 1], 1);
        assert!(is_channels_last(&y), "stem output strides {:?}", y.stride());
    }

    #[test]
    fn compute_resolves_auto_per_device() {
        use crossfold_shared::spec::{Precision, Toggle, TrainSpec};
        let t = TrainSpec {
            image_size: 64,
            ..TrainSpec::default()
        };
        let cpu = Compute::resolve(&t, Device::Cpu, None).unwrap();
        assert_eq!(
            cpu,
            Compute {
                fused_optimizer: true,
                ..Compute::plain()
            }
        );
        // Channels-last on the CPU from 128 px.
        let big = TrainSpec {
            image_size: 128,
            ..TrainSpec::default()
        };
        assert!(
            Compute::resolve(&big, Device::Cpu, None)
                .unwrap()
                .channels_last
        );
        let ampere = Compute {
            cuda: true,
            autocast_bf16: true,
            autocast_fp16: false,
            tf32: true,
            channels_last: true,
            fused_optimizer: true,
            cudnn_benchmark: false,
            cuda_graph: false,
        };
        // An H200 (9.0), an A100 (8.0), or a GPU whose capability is unknown.
        for cap in [Some((9, 0)), Some((8, 0)), None] {
            assert_eq!(Compute::resolve(&t, Device::Cuda(0), cap).unwrap(), ampere);
        }
        // A T4 or V100 (7.5, 7.0): fp16 autocast with loss scaling, no TF32.
        for cap in [(7, 5), (7, 0)] {
            let g = Compute::resolve(&t, Device::Cuda(0), Some(cap)).unwrap();
            assert!(g.autocast_fp16 && !g.autocast_bf16 && !g.tf32, "{cap:?}");
            assert_eq!(g.autocast(), Some(Half::Fp16));
        }
        // A P100 (6.0): fp32.
        let g = Compute::resolve(&t, Device::Cuda(0), Some((6, 0))).unwrap();
        assert_eq!(g.autocast(), None);
        assert!(!g.tf32);

        let strict = TrainSpec {
            precision: Precision::Fp32,
            cudnn_benchmark: Toggle::On,
            fused_optimizer: Toggle::Off,
            channels_last: Toggle::Off,
            ..TrainSpec::default()
        };
        let g = Compute::resolve(&strict, Device::Cuda(1), Some((9, 0))).unwrap();
        assert!(!g.autocast_bf16 && !g.tf32 && !g.channels_last && !g.fused_optimizer);
        assert!(g.cudnn_benchmark);
        let tf32 = TrainSpec {
            precision: Precision::Tf32,
            ..TrainSpec::default()
        };
        let g = Compute::resolve(&tf32, Device::Cuda(0), None).unwrap();
        assert!(g.tf32 && !g.autocast_bf16);
        assert!(!Compute::resolve(&tf32, Device::Cpu, None).unwrap().tf32);
        // CUDA graphs: CUDA with the fused optimiser only.
        let graph = TrainSpec {
            cuda_graph: Toggle::On,
            ..TrainSpec::default()
        };
        assert!(
            Compute::resolve(&graph, Device::Cuda(0), None)
                .unwrap()
                .cuda_graph
        );
        assert!(
            !Compute::resolve(&graph, Device::Cpu, None)
                .unwrap()
                .cuda_graph
        );
        let auto_unfused = TrainSpec {
            cuda_graph: Toggle::Auto,
            fused_optimizer: Toggle::Off,
            ..TrainSpec::default()
        };
        let g = Compute::resolve(&auto_unfused, Device::Cuda(0), None).unwrap();
        assert!(!g.cuda_graph);
        assert!(
            !Compute::resolve(&t, Device::Cuda(0), None)
                .unwrap()
                .cuda_graph,
            "off by default"
        );
    }

    #[test]
    fn settings_the_device_cannot_honour_are_refused_by_name() {
        use crossfold_shared::spec::{Precision, Toggle, TrainSpec};
        let bf16 = TrainSpec {
            precision: Precision::Bf16,
            ..TrainSpec::default()
        };
        let err = Compute::resolve(&bf16, Device::Cuda(2), Some((7, 5))).unwrap_err();
        assert_eq!(
            err,
            ComputeError::NoBf16 {
                index: 2,
                major: 7,
                minor: 5
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("train.precision = bf16") && msg.contains("cuda:2"),
            "{msg}"
        );
        // bf16 on the CPU is fine.
        assert!(
            Compute::resolve(&bf16, Device::Cpu, None)
                .unwrap()
                .autocast_bf16
        );
        let fp16_unfused = TrainSpec {
            precision: Precision::Fp16,
            fused_optimizer: Toggle::Off,
            ..TrainSpec::default()
        };
        let err = Compute::resolve(&fp16_unfused, Device::Cuda(0), None).unwrap_err();
        assert_eq!(err, ComputeError::Fp16NeedsFused);
        assert!(err.to_string().contains("train.fused_optimizer"), "{err}");
    }

    #[test]
    fn fp16_autocast_region_casts_convolutions() {
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu));
        let inside = {
            let _region = Autocast::enter(false, Half::Fp16).unwrap();
            x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
        };
        assert_eq!(inside.kind(), Kind::Half);
        let plain = x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
        assert_eq!(plain.kind(), Kind::Float);
        let diff = (inside.to_kind(Kind::Float) - &plain)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 0.05, "{diff}");
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
    /// fp16 autocast with dynamic loss scaling (GPUs without bf16).
    #[serde(default)]
    pub autocast_fp16: bool,
    pub tf32: bool,
    pub channels_last: bool,
    /// libtorch's fused multi-tensor optimiser step (see `train::optim`).
    /// Absent from the cards of checkpoints written before it existed.
    #[serde(default)]
    pub fused_optimizer: bool,
    /// cuDNN autotuning: fastest kernels, not bitwise reproducible.
    #[serde(default)]
    pub cudnn_benchmark: bool,
    /// One training step captured as a CUDA graph and replayed (see
    /// `crate::graph`); CUDA with the fused optimiser only.
    #[serde(default)]
    pub cuda_graph: bool,
}

/// A compute setting the device cannot honour.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ComputeError {
    #[error(
        "train.precision = bf16: cuda:{index} has compute capability {major}.{minor}, and bf16 \
         needs 8.0 or later (Ampere); use fp16 (with loss scaling) or fp32"
    )]
    NoBf16 {
        index: usize,
        major: i32,
        minor: i32,
    },
    #[error(
        "train.precision = fp16 needs train.fused_optimizer = auto or on: its loss scaling \
         runs inside the fused optimiser step"
    )]
    Fp16NeedsFused,
}

/// Whether a device has what compute capability `major` brings (8: bf16
/// and TF32 tensor cores; 7: fp16 tensor cores). The CPU has no such limit;
/// a GPU whose capability is unknown is taken to be a current one.
pub fn at_least(cuda: bool, capability: Option<(i32, i32)>, major: i32) -> bool {
    !cuda || capability.is_none_or(|(m, _)| m >= major)
}

impl Compute {
    /// [`Compute::resolve`] for `device`, with the GPU's compute capability
    /// read from the CUDA driver.
    pub fn for_device(
        t: &crossfold_shared::spec::TrainSpec,
        device: tch::Device,
    ) -> Result<Compute, ComputeError> {
        Compute::resolve(t, device, crate::device::capability_of(device))
    }

    /// `precision = auto`: on CUDA bf16 autocast and TF32 where the GPU has
    /// them (compute capability 8.0 or later, or unknown), fp16 autocast
    /// with loss scaling on 7.x (Volta, Turing: fp16 tensor cores only),
    /// fp32 before that; fp32 on the CPU. `fp32`: full precision (no TF32);
    /// `tf32`: fp32 with TF32 tensor cores on CUDA; `bf16`: bf16 autocast on
    /// any device that has it; `fp16`: fp16 autocast with loss scaling.
    /// `channels_last = auto`: on for CUDA, and on the CPU from 128 px;
    /// `fused_optimizer = auto`: on;
    /// `cudnn_benchmark = auto`: off (see below);
    /// `cuda_graph = auto` or `on`: on for CUDA with the fused optimiser.
    pub fn resolve(
        t: &crossfold_shared::spec::TrainSpec,
        device: tch::Device,
        capability: Option<(i32, i32)>,
    ) -> Result<Compute, ComputeError> {
        use crossfold_shared::spec::{Precision, Toggle};
        let cuda = device.is_cuda();
        let at_least = |major: i32| at_least(cuda, capability, major);
        let (bf16, fp16) = match t.precision {
            Precision::Auto if !cuda => (false, false),
            Precision::Auto if at_least(8) => (true, false),
            Precision::Auto if at_least(7) => (false, true),
            Precision::Auto => (false, false),
            Precision::Bf16 => (true, false),
            Precision::Fp16 => (false, true),
            Precision::Fp32 | Precision::Tf32 => (false, false),
        };
        if bf16 && !at_least(8) {
            let (major, minor) = capability.unwrap_or((0, 0));
            let index = match device {
                tch::Device::Cuda(i) => i,
                _ => 0,
            };
            return Err(ComputeError::NoBf16 {
                index,
                major,
                minor,
            });
        }
        let fused_optimizer = t.fused_optimizer != Toggle::Off;
        if fp16 && !fused_optimizer {
            return Err(ComputeError::Fp16NeedsFused);
        }
        Ok(Compute {
            cuda,
            autocast_bf16: bf16,
            autocast_fp16: fp16,
            tf32: cuda && t.precision != Precision::Fp32 && at_least(8),
            // On the CPU channels-last pays from 128 px: ResNet34 on the
            // 2-core EPYC, +13% at 128 px, -10% at 64 px (bench/README.md).
            channels_last: match t.channels_last {
                Toggle::Auto => cuda || t.image_size >= 128,
                Toggle::On => true,
                Toggle::Off => false,
            },
            // The fused kernels exist for both devices: +71% on an H200,
            // +6% on a 2-core CPU (bench/README.md).
            fused_optimizer,
            // Autotuning is off unless asked for: on an H200 it added 1.1 s
            // to a 30-epoch screening job (every new shape is timed) and
            // made no later epoch faster (bench/README.md).
            cudnn_benchmark: cuda && t.cudnn_benchmark == Toggle::On,
            // The learning rate of a replayed step is read on the device,
            // which only the fused step can do (the spec refuses `on` with
            // the fused optimiser off).
            cuda_graph: cuda && fused_optimizer && t.cuda_graph != Toggle::Off,
        })
    }

    /// The half type of the autocast region, if any.
    pub fn autocast(&self) -> Option<Half> {
        if self.autocast_bf16 {
            Some(Half::Bf16)
        } else if self.autocast_fp16 {
            Some(Half::Fp16)
        } else {
            None
        }
    }

    /// Full fp32, NCHW: what the CPU gets by default.
    pub fn plain() -> Compute {
        Compute {
            cuda: false,
            autocast_bf16: false,
            autocast_fp16: false,
            tf32: false,
            channels_last: false,
            fused_optimizer: false,
            cudnn_benchmark: false,
            cuda_graph: false,
        }
    }

    /// Set the process-wide settings (TF32, cuDNN autotuning) for this
    /// job's device and keep them while the returned guard lives: a job of
    /// this process whose settings differ (another experiment's spec, in
    /// another slot) waits until every job using the current ones is done,
    /// so no job runs, or records in its provenance, settings it did not ask
    /// for. CPU jobs have no such settings and never wait. One guard per job,
    /// taken before it puts anything on the device and held to its end (a
    /// second one taken while holding the first could wait on itself).
    pub fn apply_globals(&self, cancelled: &dyn Fn() -> bool) -> Result<GlobalsGuard, GateError> {
        if !self.cuda {
            return Ok(GlobalsGuard { gate: None });
        }
        let key = (self.tf32, self.cudnn_benchmark);
        GLOBALS.enter(
            key,
            || {
                set_tf32(key.0)?;
                tch::Cuda::cudnn_set_benchmark(key.1);
                Ok(())
            },
            cancelled,
        )
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
        let logits = if let Some(half) = self.autocast() {
            let _region = Autocast::enter(self.cuda, half)?;
            net.forward_t(x, train)
        } else {
            net.forward_t(x, train)
        };
        Ok(logits.to_kind(tch::Kind::Float))
    }
}

/// Who uses the process-wide compute settings now. See
/// [`Compute::apply_globals`].
pub struct GlobalsGate {
    state: std::sync::Mutex<GateState>,
    changed: std::sync::Condvar,
}

struct GateState {
    /// The settings in force while `holders > 0`.
    key: Option<(bool, bool)>,
    holders: usize,
    /// Callers waiting for other settings than those in force: while there
    /// are any, newcomers with the settings in force wait too, so a steady
    /// stream of same-settings jobs cannot starve them.
    waiting_other: usize,
}

static GLOBALS: GlobalsGate = GlobalsGate::new();

/// Whether no job of this process holds process-wide GPU settings now.
pub fn globals_free() -> bool {
    GLOBALS
        .state
        .lock()
        .map(|st| st.holders == 0)
        .unwrap_or(true)
}

/// Why [`GlobalsGate::enter`] gave up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GateError {
    #[error("{0}")]
    Shim(#[from] ShimError),
    #[error("cancelled while waiting for another job's compute settings to be released")]
    Cancelled,
}

impl GlobalsGate {
    pub const fn new() -> GlobalsGate {
        GlobalsGate {
            state: std::sync::Mutex::new(GateState {
                key: None,
                holders: 0,
                waiting_other: 0,
            }),
            changed: std::sync::Condvar::new(),
        }
    }

    /// Wait until no holder uses settings other than `key` (checking
    /// `cancelled` every 100 ms), apply them with `set` when the gate was
    /// free (so settings changed behind its back are put right), and hold
    /// them.
    pub fn enter(
        &'static self,
        key: (bool, bool),
        set: impl FnOnce() -> Result<(), ShimError>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<GlobalsGuard, GateError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let blocked =
            |st: &GateState| st.holders > 0 && (st.key != Some(key) || st.waiting_other > 0);
        if blocked(&st) {
            let other = st.key != Some(key);
            if other {
                st.waiting_other += 1;
            }
            // A waiter for other settings does not block itself.
            let still_blocked = |st: &GateState| {
                st.holders > 0 && (st.key != Some(key) || st.waiting_other > usize::from(other))
            };
            while still_blocked(&st) {
                if cancelled() {
                    if other {
                        st.waiting_other -= 1;
                        self.changed.notify_all();
                    }
                    return Err(GateError::Cancelled);
                }
                st = self
                    .changed
                    .wait_timeout(st, std::time::Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if other {
                st.waiting_other -= 1;
            }
        }
        if st.holders == 0 {
            st.key = None;
            set()?;
            st.key = Some(key);
        }
        st.holders += 1;
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
            let mut st = gate.state.lock().unwrap_or_else(|e| e.into_inner());
            st.holders = st.holders.saturating_sub(1);
            if st.holders == 0 {
                gate.changed.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    fn never() -> bool {
        false
    }

    #[test]
    fn jobs_with_other_settings_wait_for_the_current_holders() {
        static GATE: GlobalsGate = GlobalsGate::new();
        static SETS: AtomicUsize = AtomicUsize::new(0);
        let set = || {
            SETS.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        let a = GATE.enter((true, false), set, &never).unwrap();
        // Same settings: enters at once, without setting them again.
        let b = GATE.enter((true, false), set, &never).unwrap();
        assert_eq!(SETS.load(Ordering::SeqCst), 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let g = GATE.enter((false, false), set, &never).unwrap();
            tx.send(()).unwrap();
            drop(g);
        });
        // Other settings wait while a holder remains...
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        drop(a);
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        drop(b);
        // ... and enter once the last one is gone, applying their settings.
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
        assert_eq!(SETS.load(Ordering::SeqCst), 2);
        // A free gate applies the settings again, even the same ones (they
        // may have been changed behind its back).
        drop(GATE.enter((false, false), set, &never).unwrap());
        assert_eq!(SETS.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_waiter_for_other_settings_is_not_starved_by_newcomers() {
        static GATE: GlobalsGate = GlobalsGate::new();
        let held = GATE.enter((true, true), || Ok(()), &never).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let g = GATE.enter((false, false), || Ok(()), &never).unwrap();
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            drop(g);
        });
        // Wait until the other-settings caller is queued.
        for _ in 0..100 {
            if GATE.state.lock().unwrap().waiting_other == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(GATE.state.lock().unwrap().waiting_other, 1);
        // A newcomer with the settings in force now queues behind it.
        let (tx2, rx2) = std::sync::mpsc::channel();
        let newcomer = std::thread::spawn(move || {
            let g = GATE.enter((true, true), || Ok(()), &never).unwrap();
            tx2.send(()).unwrap();
            drop(g);
        });
        assert!(rx2.recv_timeout(Duration::from_millis(300)).is_err());
        drop(held);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        rx2.recv_timeout(Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
        newcomer.join().unwrap();
    }

    #[test]
    fn waiting_stops_when_cancelled() {
        static GATE: GlobalsGate = GlobalsGate::new();
        static STOP: AtomicBool = AtomicBool::new(false);
        let held = GATE.enter((true, false), || Ok(()), &never).unwrap();
        let waiter = std::thread::spawn(|| {
            GATE.enter((false, true), || Ok(()), &|| STOP.load(Ordering::SeqCst))
                .err()
        });
        std::thread::sleep(Duration::from_millis(200));
        STOP.store(true, Ordering::SeqCst);
        assert_eq!(waiter.join().unwrap(), Some(GateError::Cancelled));
        // The cancelled waiter no longer holds anyone back.
        assert_eq!(GATE.state.lock().unwrap().waiting_other, 0);
        drop(GATE.enter((true, false), || Ok(()), &never).unwrap());
        drop(held);
    }

    #[test]
    fn cpu_jobs_hold_nothing() {
        let g = Compute::plain().apply_globals(&never).unwrap();
        assert!(g.gate.is_none());
    }
}
