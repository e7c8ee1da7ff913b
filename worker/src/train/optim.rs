//! The optimiser step: tch's optimisers (libtorch's C++ `torch::optim`,
//! which update the parameters one at a time, several kernels each) or
//! libtorch's fused multi-tensor kernels through the C++ shim
//! (`shim/optim.cpp`), which update every parameter in a few launches, as
//! `torch.optim`'s `fused=True` does. Same update rules: SGD with momentum,
//! dampening 0, weight decay and Nesterov; Adam (L2 weight decay); AdamW
//! (decoupled weight decay); betas (0.9, 0.999), eps 1e-8.

use crossfold_shared::spec::{Optimizer as OptKind, TrainSpec};
use std::ffi::CStr;
use std::os::raw::{c_char, c_double, c_int, c_void};
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

extern "C" {
    fn crossfold_optim_last_error() -> *const c_char;
    fn crossfold_zero_grad(params: *mut *mut c_void, n: c_int) -> c_int;
    fn crossfold_fused_adam(
        params: *mut *mut c_void,
        exp_avgs: *mut *mut c_void,
        exp_avg_sqs: *mut *mut c_void,
        steps: *mut *mut c_void,
        n: c_int,
        lr: c_double,
        lr_tensor: *mut c_void,
        beta1: c_double,
        beta2: c_double,
        weight_decay: c_double,
        eps: c_double,
        decoupled: c_int,
        grad_scale: *mut c_void,
        found_inf: *mut c_void,
    ) -> c_int;
    fn crossfold_fused_sgd(
        params: *mut *mut c_void,
        buffers: *mut *mut c_void,
        n: c_int,
        lr: c_double,
        lr_tensor: *mut c_void,
        momentum: c_double,
        dampening: c_double,
        weight_decay: c_double,
        nesterov: c_int,
        first_step: c_int,
        grad_scale: *mut c_void,
        found_inf: *mut c_void,
    ) -> c_int;
    fn crossfold_amp_check(
        params: *mut *mut c_void,
        n: c_int,
        found_inf: *mut c_void,
        one: *mut c_void,
    ) -> c_int;
    fn crossfold_amp_update(
        scale: *mut c_void,
        growth_tracker: *mut c_void,
        found_inf: *mut c_void,
        growth: c_double,
        backoff: c_double,
        interval: std::os::raw::c_long,
    ) -> c_int;
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("fused {what} step failed: {message}")]
    Fused { what: &'static str, message: String },
    #[error("a learning rate held on the device needs the fused optimiser")]
    DeviceLrNeedsFused,
    #[error(
        "train.precision = fp16 needs the fused optimiser (train.fused_optimizer = auto or on): \
         its loss scaling runs inside the fused step"
    )]
    ScalingNeedsFused,
}

/// Dynamic loss scaling for fp16 training, as torch.amp.GradScaler: the
/// loss is multiplied by `scale` before back-propagation so small fp16
/// gradients do not flush to zero; a step whose gradients hold an inf or a
/// NaN is skipped and the scale halved; after `interval` good steps in a
/// row it doubles. Everything stays on the device (no host sync per step).
pub struct LossScale {
    scale: Tensor,
    growth_tracker: Tensor,
    found_inf: Tensor,
    one: Tensor,
    interval: i64,
}

impl LossScale {
    /// GradScaler's defaults: 2^16, growth 2 every 2000 good steps, backoff 0.5.
    pub const INITIAL: f64 = 65536.0;
    pub const INTERVAL: i64 = 2000;

    pub fn new(device: tch::Device, initial: f64, interval: i64) -> Result<Self, tch::TchError> {
        let float = (Kind::Float, device);
        Ok(LossScale {
            scale: Tensor::f_full([], initial, float)?,
            growth_tracker: Tensor::f_zeros([], (Kind::Int, device))?,
            found_inf: Tensor::f_zeros([], float)?,
            one: Tensor::f_ones([], float)?,
            interval,
        })
    }

    /// The current scale (reads it from the device: for tests and reports).
    pub fn value(&self) -> Result<f64, tch::TchError> {
        self.scale.f_double_value(&[])
    }
}

/// An optimiser over a var store's trainable variables.
pub enum Optim {
    Tch(nn::Optimizer),
    Fused(Box<Fused>),
}

impl Optim {
    /// `loss_scale`: dynamic loss scaling (fp16), only with `fused`.
    pub fn new(
        vs: &nn::VarStore,
        t: &TrainSpec,
        fused: bool,
        loss_scale: Option<LossScale>,
    ) -> Result<Optim, OptimError> {
        if fused {
            return Ok(Optim::Fused(Box::new(Fused::new(vs, t, loss_scale)?)));
        }
        if loss_scale.is_some() {
            return Err(OptimError::ScalingNeedsFused);
        }
        let opt = match t.optimizer {
            OptKind::Adam => nn::adam(BETA1, BETA2, t.weight_decay).build(vs, t.lr),
            OptKind::Adamw => nn::adamw(BETA1, BETA2, t.weight_decay).build(vs, t.lr),
            OptKind::Sgd => nn::sgd(
                t.momentum,
                0.0,
                t.weight_decay,
                t.nesterov && t.momentum > 0.0,
            )
            .build(vs, t.lr),
        }?;
        Ok(Optim::Tch(opt))
    }

    /// The loss scaler, when the optimiser has one.
    pub fn loss_scale(&self) -> Option<&LossScale> {
        match self {
            Optim::Fused(f) => f.loss_scale.as_ref(),
            Optim::Tch(_) => None,
        }
    }

    /// Clear the gradients, back-propagate `loss`, update with rate `lr`.
    pub fn backward_step(&mut self, loss: &Tensor, lr: f64) -> Result<(), OptimError> {
        match self {
            Optim::Tch(opt) => {
                opt.set_lr(lr);
                opt.backward_step(loss);
                Ok(())
            }
            Optim::Fused(f) => f.backward_step(loss, Lr::Host(lr)),
        }
    }

    /// [`Optim::backward_step`] with the learning rate read on the device
    /// from `lr` (a one-element float tensor there), as a step replayed
    /// from a CUDA graph needs: fused optimiser only.
    pub fn backward_step_device_lr(
        &mut self,
        loss: &Tensor,
        lr: &Tensor,
    ) -> Result<(), OptimError> {
        match self {
            Optim::Tch(_) => Err(OptimError::DeviceLrNeedsFused),
            Optim::Fused(f) => f.backward_step(loss, Lr::Device(lr)),
        }
    }
}

/// Where a fused step reads its learning rate.
#[derive(Clone, Copy)]
enum Lr<'a> {
    /// A kernel argument, fixed when the kernel is launched.
    Host(f64),
    /// A one-element float tensor on the device, read when the kernel runs.
    Device(&'a Tensor),
}

/// State of a fused optimiser: the parameters and, per parameter, the
/// momentum buffer (SGD) or the moments and step count (Adam, AdamW).
pub struct Fused {
    kind: OptKind,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    params: Vec<Tensor>,
    buffers: Vec<Tensor>,
    exp_avgs: Vec<Tensor>,
    exp_avg_sqs: Vec<Tensor>,
    steps: Vec<Tensor>,
    first_step: bool,
    loss_scale: Option<LossScale>,
}

fn handles(ts: &[Tensor]) -> Vec<*mut c_void> {
    ts.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

fn last_error() -> String {
    // SAFETY: the shim returns a pointer to a thread-local NUL-terminated
    // string that lives until the next failure on this thread.
    unsafe { CStr::from_ptr(crossfold_optim_last_error()) }
        .to_string_lossy()
        .into_owned()
}

impl Fused {
    fn new(
        vs: &nn::VarStore,
        t: &TrainSpec,
        loss_scale: Option<LossScale>,
    ) -> Result<Fused, tch::TchError> {
        let params = vs.trainable_variables();
        let zeros = |p: &Tensor| p.f_zeros_like();
        let (mut buffers, mut exp_avgs, mut exp_avg_sqs, mut steps) =
            (vec![], vec![], vec![], vec![]);
        for p in &params {
            match t.optimizer {
                OptKind::Sgd => buffers.push(zeros(p)?),
                OptKind::Adam | OptKind::Adamw => {
                    exp_avgs.push(zeros(p)?);
                    exp_avg_sqs.push(zeros(p)?);
                    steps.push(Tensor::f_zeros([], (Kind::Float, p.device()))?);
                }
            }
        }
        Ok(Fused {
            kind: t.optimizer,
            momentum: t.momentum,
            nesterov: t.nesterov,
            weight_decay: t.weight_decay,
            params,
            buffers,
            exp_avgs,
            exp_avg_sqs,
            steps,
            first_step: true,
            loss_scale,
        })
    }

    fn backward_step(&mut self, loss: &Tensor, lr: Lr) -> Result<(), OptimError> {
        let (lr, lr_tensor) = match lr {
            Lr::Host(v) => (v, std::ptr::null_mut()),
            Lr::Device(t) => (0.0, t.as_ptr() as *mut c_void),
        };
        let mut params = handles(&self.params);
        let n = params.len() as c_int;
        // SAFETY: `params` holds live tch tensor handles (torch::Tensor*).
        if unsafe { crossfold_zero_grad(params.as_mut_ptr(), n) } != 0 {
            return Err(OptimError::Fused {
                what: "zero_grad",
                message: last_error(),
            });
        }
        let (grad_scale, found_inf) = match &self.loss_scale {
            Some(ls) => {
                loss.f_mul(&ls.scale)?.f_backward()?;
                // SAFETY: live tensor handles; `params` as above.
                let rc = unsafe {
                    crossfold_amp_check(
                        params.as_mut_ptr(),
                        n,
                        ls.found_inf.as_ptr() as *mut c_void,
                        ls.one.as_ptr() as *mut c_void,
                    )
                };
                if rc != 0 {
                    return Err(OptimError::Fused {
                        what: "loss-scale check",
                        message: last_error(),
                    });
                }
                (
                    ls.scale.as_ptr() as *mut c_void,
                    ls.found_inf.as_ptr() as *mut c_void,
                )
            }
            None => {
                loss.f_backward()?;
                (std::ptr::null_mut(), std::ptr::null_mut())
            }
        };
        let (rc, what) = match self.kind {
            OptKind::Sgd => {
                let mut buffers = handles(&self.buffers);
                // SAFETY: every array has one live handle per parameter.
                let rc = unsafe {
                    crossfold_fused_sgd(
                        params.as_mut_ptr(),
                        buffers.as_mut_ptr(),
                        n,
                        lr,
                        lr_tensor,
                        self.momentum,
                        0.0,
                        self.weight_decay,
                        (self.nesterov && self.momentum > 0.0) as c_int,
                        self.first_step as c_int,
                        grad_scale,
                        found_inf,
                    )
                };
                (rc, "SGD")
            }
            OptKind::Adam | OptKind::Adamw => {
                let (mut m, mut v, mut s) = (
                    handles(&self.exp_avgs),
                    handles(&self.exp_avg_sqs),
                    handles(&self.steps),
                );
                let decoupled = self.kind == OptKind::Adamw;
                // SAFETY: every array has one live handle per parameter.
                let rc = unsafe {
                    crossfold_fused_adam(
                        params.as_mut_ptr(),
                        m.as_mut_ptr(),
                        v.as_mut_ptr(),
                        s.as_mut_ptr(),
                        n,
                        lr,
                        lr_tensor,
                        BETA1,
                        BETA2,
                        self.weight_decay,
                        EPS,
                        decoupled as c_int,
                        grad_scale,
                        found_inf,
                    )
                };
                (rc, if decoupled { "AdamW" } else { "Adam" })
            }
        };
        if rc != 0 {
            return Err(OptimError::Fused {
                what,
                message: last_error(),
            });
        }
        if let Some(ls) = &self.loss_scale {
            // SAFETY: live tensor handles owned by `ls`.
            let rc = unsafe {
                crossfold_amp_update(
                    ls.scale.as_ptr() as *mut c_void,
                    ls.growth_tracker.as_ptr() as *mut c_void,
                    ls.found_inf.as_ptr() as *mut c_void,
                    2.0,
                    0.5,
                    ls.interval as std::os::raw::c_long,
                )
            };
            if rc != 0 {
                return Err(OptimError::Fused {
                    what: "loss-scale update",
                    message: last_error(),
                });
            }
        }
        self.first_step = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::Module;
    use tch::Device;

    /// A few steps of the same small network from the same start, with
    /// tch's optimiser and with the fused one: the parameters must agree.
    fn compare(optimizer: OptKind, momentum: f64, nesterov: bool) {
        compare_layouts(optimizer, momentum, nesterov, false);
    }

    /// As [`compare`], the fused run's weights and input laid out
    /// channels-last (as the CPU's default at 128 px and more lays them):
    /// its kernels walk weights, gradients and state by pointer, so all
    /// must share one layout.
    fn compare_layouts(optimizer: OptKind, momentum: f64, nesterov: bool, channels_last: bool) {
        let spec = TrainSpec {
            optimizer,
            momentum,
            nesterov,
            weight_decay: 0.01,
            ..TrainSpec::default()
        };
        let x = Tensor::randn([16, 3, 8, 8], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1].repeat(8));
        let build = |vs: &nn::VarStore| {
            let root = vs.root();
            nn::seq()
                .add(nn::conv2d(&root / "c", 3, 4, 3, Default::default()))
                .add_fn(|t| t.relu().flatten(1, -1))
                .add(nn::linear(&root / "l", 4 * 6 * 6, 2, Default::default()))
        };
        // Both runs start from the same weights (copied, not re-drawn: other
        // tests use libtorch's global generator at the same time).
        let start = nn::VarStore::new(Device::Cpu);
        let _ = build(&start);
        let run = |fused: bool| {
            let mut vs = nn::VarStore::new(Device::Cpu);
            let net = build(&vs);
            vs.copy(&start).unwrap();
            let x = x.copy();
            if fused && channels_last {
                for (_, v) in vs.variables() {
                    crate::precision::to_channels_last(&v).unwrap();
                }
                crate::precision::to_channels_last(&x).unwrap();
                let (_, w) = vs
                    .variables()
                    .into_iter()
                    .find(|(n, _)| n == "c.weight")
                    .unwrap();
                assert!(crate::precision::is_channels_last(&w));
            }
            let mut opt = Optim::new(&vs, &spec, fused, None).unwrap();
            for step in 0..4 {
                let loss = net.forward(&x).cross_entropy_for_logits(&y);
                opt.backward_step(&loss, 0.05 / (step + 1) as f64).unwrap();
            }
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            vars
        };
        let (plain, fused) = (run(false), run(true));
        let start = start.variables();
        for ((name, a), (_, b)) in plain.iter().zip(&fused) {
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{optimizer:?}: {name} differs by {diff}");
            if let Some(s) = start.get(name) {
                let moved = (a - s).abs().max().double_value(&[]);
                assert!(moved > 1e-7, "{optimizer:?}: {name} did not move ({moved})");
            }
        }
    }

    /// Steps of a small network with the fused optimiser, with or without
    /// loss scaling, from the same start; the variables after them.
    fn scaled_run(
        optimizer: OptKind,
        scale: Option<(f64, i64)>,
        start: &nn::VarStore,
        steps: usize,
    ) -> (Vec<(String, Tensor)>, Option<f64>, f64) {
        let spec = TrainSpec {
            optimizer,
            momentum: 0.9,
            weight_decay: 0.01,
            ..TrainSpec::default()
        };
        // Inputs of 100: the weights' gradients are 100 times the bias's.
        let x = Tensor::full([8, 5], 100.0, (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1].repeat(4));
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = nn::linear(vs.root() / "l", 5, 2, Default::default());
        vs.copy(start).unwrap();
        let ls = scale.map(|(s, interval)| LossScale::new(Device::Cpu, s, interval).unwrap());
        let mut opt = Optim::new(&vs, &spec, true, ls).unwrap();
        for _ in 0..steps {
            let loss = net.forward(&x).cross_entropy_for_logits(&y);
            opt.backward_step(&loss, 0.05).unwrap();
        }
        let value = opt.loss_scale().map(|l| l.value().unwrap());
        // Adam's step counts, summed over the parameters.
        let counted = match &opt {
            Optim::Fused(f) => f.steps.iter().map(|t| t.double_value(&[])).sum(),
            Optim::Tch(_) => 0.0,
        };
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        (vars, value, counted)
    }

    /// Starting weights from a fixed sequence, not libtorch's global
    /// generator (which tests running alongside draw from too): logits that
    /// favour class 0, so the gradients are far from zero.
    fn start() -> nn::VarStore {
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = nn::linear(vs.root() / "l", 5, 2, Default::default());
        tch::no_grad(|| {
            let vars = vs.variables();
            let w: Vec<f32> = (0..10).map(|i| if i < 5 { 0.01 } else { -0.01 }).collect();
            vars["l.weight"]
                .shallow_clone()
                .copy_(&Tensor::from_slice(&w).view([2, 5]));
            vars["l.bias"]
                .shallow_clone()
                .copy_(&Tensor::from_slice(&[0.0f32, 0.0]));
        });
        vs
    }

    #[test]
    fn loss_scaling_without_overflow_changes_nothing_and_grows_the_scale() {
        let start = start();
        for kind in [OptKind::Sgd, OptKind::Adamw] {
            let (plain, _, _) = scaled_run(kind, None, &start, 5);
            // A power of two scales and unscales the gradients exactly.
            let (scaled, value, _) = scaled_run(kind, Some((1024.0, 2)), &start, 5);
            for ((name, a), (_, b)) in plain.iter().zip(&scaled) {
                assert!(a.equal(b), "{kind:?}: {name} differs with loss scaling");
            }
            // Five good steps with growth every 2: doubled twice.
            assert_eq!(value, Some(4096.0), "{kind:?}");
        }
    }

    #[test]
    fn an_overflowing_step_is_skipped_and_halves_the_scale() {
        let start = start();
        for kind in [OptKind::Sgd, OptKind::Adam] {
            // At 2^125 the weights' scaled gradients (about 100 x 0.06 x
            // 2^125 > 3.4e38) overflow float32; the bias's do not, and the
            // whole step is skipped all the same.
            let huge = 2f64.powi(125);
            let (after, value, counted) = scaled_run(kind, Some((huge, 2000)), &start, 1);
            if kind == OptKind::Adam {
                assert_eq!(counted, 0.0, "a skipped step is not counted");
            }
            let start_vars = start.variables();
            for (name, t) in &after {
                assert!(
                    t.equal(&start_vars[name]),
                    "{kind:?}: {name} moved on an overflow"
                );
            }
            assert_eq!(value, Some(huge / 2.0), "{kind:?}");
            // The scale keeps halving until the steps go through, and then
            // training moves on.
            let (later, value, counted) = scaled_run(kind, Some((huge, 2000)), &start, 40);
            assert!(value.unwrap() < huge / 2.0);
            if kind == OptKind::Adam {
                // Two parameters, fewer than 40 counted steps each.
                assert!(counted > 0.0 && counted < 80.0, "{counted}");
            }
            assert!(later.iter().any(|(name, t)| !t.equal(&start_vars[name])));
        }
    }

    #[test]
    fn loss_scaling_needs_the_fused_optimiser() {
        let vs = start();
        let ls = LossScale::new(Device::Cpu, 1024.0, 10).unwrap();
        let err = Optim::new(&vs, &TrainSpec::default(), false, Some(ls))
            .err()
            .unwrap();
        assert!(err.to_string().contains("train.fused_optimizer"), "{err}");
    }

    /// The learning rate read on the device (as a CUDA graph's replayed
    /// step does) gives the same weights as the rate passed with the launch.
    #[test]
    fn a_learning_rate_on_the_device_steps_like_one_passed_with_the_launch() {
        let x = Tensor::full([8, 5], 1.0, (Kind::Float, Device::Cpu))
            + Tensor::arange(40, (Kind::Float, Device::Cpu)).view([8, 5]) / 40.0;
        let y = Tensor::from_slice(&[0i64, 1].repeat(4));
        for kind in [OptKind::Sgd, OptKind::Adam, OptKind::Adamw] {
            let spec = TrainSpec {
                optimizer: kind,
                momentum: 0.9,
                weight_decay: 0.01,
                ..TrainSpec::default()
            };
            let run = |on_device: bool| {
                let start = start();
                let mut vs = nn::VarStore::new(Device::Cpu);
                let net = nn::linear(vs.root() / "l", 5, 2, Default::default());
                vs.copy(&start).unwrap();
                let mut opt = Optim::new(&vs, &spec, true, None).unwrap();
                let lr = Tensor::zeros([], (Kind::Float, Device::Cpu));
                for step in 0..5 {
                    let rate = 0.05 / (step + 1) as f64;
                    let loss = net.forward(&x).cross_entropy_for_logits(&y);
                    if on_device {
                        let _ = lr.shallow_clone().fill_(rate);
                        opt.backward_step_device_lr(&loss, &lr).unwrap();
                    } else {
                        opt.backward_step(&loss, rate).unwrap();
                    }
                }
                let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
                vars.sort_by(|a, b| a.0.cmp(&b.0));
                (vars, start)
            };
            let ((host, start), (device, _)) = (run(false), run(true));
            let start = start.variables();
            for ((name, a), (_, b)) in host.iter().zip(&device) {
                // The rate is rounded to float32 on the device.
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(diff < 1e-6, "{kind:?}: {name} differs by {diff}");
                let moved = (a - &start[name]).abs().max().double_value(&[]);
                assert!(moved > 1e-4, "{kind:?}: {name} did not move ({moved})");
            }
        }
        // tch's own optimisers take the rate from the host only.
        let vs = start();
        let mut opt = Optim::new(&vs, &TrainSpec::default(), false, None).unwrap();
        let net = nn::linear(vs.root() / "m", 5, 2, Default::default());
        let loss = net.forward(&x).cross_entropy_for_logits(&y);
        let lr = Tensor::zeros([], (Kind::Float, Device::Cpu));
        let err = opt.backward_step_device_lr(&loss, &lr).unwrap_err();
        assert!(matches!(err, OptimError::DeviceLrNeedsFused), "{err}");
    }

    #[test]
    fn fused_sgd_with_nesterov_momentum_matches_tch() {
        compare(OptKind::Sgd, 0.9, true);
    }

    #[test]
    fn fused_sgd_with_classical_momentum_matches_tch() {
        compare(OptKind::Sgd, 0.9, false);
    }

    #[test]
    fn fused_sgd_without_momentum_matches_tch() {
        compare(OptKind::Sgd, 0.0, true);
    }

    #[test]
    fn fused_adam_matches_tch() {
        compare(OptKind::Adam, 0.9, true);
    }

    #[test]
    fn fused_adamw_matches_tch() {
        compare(OptKind::Adamw, 0.9, true);
    }

    #[test]
    fn fused_steps_on_channels_last_weights_match_tch() {
        for (optimizer, momentum) in [
            (OptKind::Sgd, 0.9),
            (OptKind::Adam, 0.9),
            (OptKind::Adamw, 0.9),
        ] {
            compare_layouts(optimizer, momentum, true, true);
        }
    }
}
