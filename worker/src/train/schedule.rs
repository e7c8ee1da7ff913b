//! Learning-rate schedules, by optimisation step.

use crossfold_shared::spec::{Schedule, TrainSpec};

/// The learning rate at `step` (0-based) of `total` steps, with `warmup`
/// steps of linear warm-up (from lr/warmup to lr), then:
/// constant; cosine from lr down towards 0 (reached at step `total`, one
/// past the last step, so the last step still learns); or step decay by
/// `gamma` every `step_every` steps (counted from the end of warm-up).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub lr: f64,
    pub kind: Schedule,
    pub total: usize,
    pub warmup: usize,
    pub step_every: usize,
    pub gamma: f64,
}

impl LrSchedule {
    pub fn from_spec(t: &TrainSpec, steps_per_epoch: usize) -> LrSchedule {
        LrSchedule {
            lr: t.lr,
            kind: t.schedule,
            total: (t.epochs as usize * steps_per_epoch).max(1),
            warmup: t.warmup_epochs as usize * steps_per_epoch,
            step_every: (t.step_epochs as usize * steps_per_epoch).max(1),
            gamma: t.step_gamma,
        }
    }

    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let after = step - self.warmup;
        let span = self.total.saturating_sub(self.warmup).max(1);
        match self.kind {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                let progress = (after as f64 / span as f64).min(1.0);
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Schedule::Step => self.lr * self.gamma.powi((after / self.step_every) as i32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: Schedule) -> LrSchedule {
        LrSchedule {
            lr: 1.0,
            kind,
            total: 110,
            warmup: 10,
            step_every: 40,
            gamma: 0.1,
        }
    }

    #[test]
    fn warmup_is_linear() {
        let s = sched(Schedule::Constant);
        assert!((s.at(0) - 0.1).abs() < 1e-12);
        assert!((s.at(4) - 0.5).abs() < 1e-12);
        assert!((s.at(9) - 1.0).abs() < 1e-12);
        assert_eq!(s.at(50), 1.0);
    }

    #[test]
    fn cosine_halves_at_the_middle_and_ends_at_zero() {
        let s = sched(Schedule::Cosine);
        assert!((s.at(10) - 1.0).abs() < 1e-12);
        assert!((s.at(60) - 0.5).abs() < 1e-12);
        assert!(s.at(110).abs() < 1e-12);
        assert!(s.at(30) > s.at(31));
    }

    #[test]
    fn step_decays_by_gamma() {
        let s = sched(Schedule::Step);
        assert_eq!(s.at(49), 1.0);
        assert!((s.at(50) - 0.1).abs() < 1e-12);
        assert!((s.at(90) - 0.01).abs() < 1e-12);
    }
}
