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
        beta1: c_double,
        beta2: c_double,
        weight_decay: c_double,
        eps: c_double,
        decoupled: c_int,
    ) -> c_int;
    fn crossfold_fused_sgd(
        params: *mut *mut c_void,
        buffers: *mut *mut c_void,
        n: c_int,
        lr: c_double,
        momentum: c_double,
        dampening: c_double,
        weight_decay: c_double,
        nesterov: c_int,
        first_step: c_int,
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
}

/// An optimiser over a var store's trainable variables.
pub enum Optim {
    Tch(nn::Optimizer),
    Fused(Box<Fused>),
}

impl Optim {
    pub fn new(vs: &nn::VarStore, t: &TrainSpec, fused: bool) -> Result<Optim, tch::TchError> {
        if fused {
            return Ok(Optim::Fused(Box::new(Fused::new(vs, t)?)));
        }
        let opt = match t.optimizer {
            OptKind::Adam => nn::adam(BETA1, BETA2, t.weight_decay).build(vs, t.lr),
            OptKind::Adamw => nn::adamw(BETA1, BETA2, t.weight_decay).build(vs, t.lr),
            OptKind::Sgd => {
                nn::sgd(t.momentum, 0.0, t.weight_decay, t.momentum > 0.0).build(vs, t.lr)
            }
        }?;
        Ok(Optim::Tch(opt))
    }

    /// Clear the gradients, back-propagate `loss`, update with rate `lr`.
    pub fn backward_step(&mut self, loss: &Tensor, lr: f64) -> Result<(), OptimError> {
        match self {
            Optim::Tch(opt) => {
                opt.set_lr(lr);
                opt.backward_step(loss);
                Ok(())
            }
            Optim::Fused(f) => f.backward_step(loss, lr),
        }
    }
}

/// State of a fused optimiser: the parameters and, per parameter, the
/// momentum buffer (SGD) or the moments and step count (Adam, AdamW).
pub struct Fused {
    kind: OptKind,
    momentum: f64,
    weight_decay: f64,
    params: Vec<Tensor>,
    buffers: Vec<Tensor>,
    exp_avgs: Vec<Tensor>,
    exp_avg_sqs: Vec<Tensor>,
    steps: Vec<Tensor>,
    first_step: bool,
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
    fn new(vs: &nn::VarStore, t: &TrainSpec) -> Result<Fused, tch::TchError> {
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
            weight_decay: t.weight_decay,
            params,
            buffers,
            exp_avgs,
            exp_avg_sqs,
            steps,
            first_step: true,
        })
    }

    fn backward_step(&mut self, loss: &Tensor, lr: f64) -> Result<(), OptimError> {
        let mut params = handles(&self.params);
        let n = params.len() as c_int;
        // SAFETY: `params` holds live tch tensor handles (torch::Tensor*).
        if unsafe { crossfold_zero_grad(params.as_mut_ptr(), n) } != 0 {
            return Err(OptimError::Fused {
                what: "zero_grad",
                message: last_error(),
            });
        }
        loss.f_backward()?;
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
                        self.momentum,
                        0.0,
                        self.weight_decay,
                        (self.momentum > 0.0) as c_int,
                        self.first_step as c_int,
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
                        BETA1,
                        BETA2,
                        self.weight_decay,
                        EPS,
                        decoupled as c_int,
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
    fn compare(optimizer: OptKind, momentum: f64) {
        let spec = TrainSpec {
            optimizer,
            momentum,
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
            let mut opt = Optim::new(&vs, &spec, fused).unwrap();
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

    #[test]
    fn fused_sgd_with_nesterov_momentum_matches_tch() {
        compare(OptKind::Sgd, 0.9);
    }

    #[test]
    fn fused_sgd_without_momentum_matches_tch() {
        compare(OptKind::Sgd, 0.0);
    }

    #[test]
    fn fused_adam_matches_tch() {
        compare(OptKind::Adam, 0.9);
    }

    #[test]
    fn fused_adamw_matches_tch() {
        compare(OptKind::Adamw, 0.9);
    }
}
