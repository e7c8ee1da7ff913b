//! Scoring images with a trained network.

use crate::data::gather;
use crate::precision::{Compute, ShimError};
use tch::nn::ModuleT;
use tch::{Kind, Tensor};

/// Normalisation applied to every batch: (x - mean) / std.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalise {
    pub mean: f64,
    pub std: f64,
}

impl Normalise {
    pub fn apply(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        x.f_sub_scalar(self.mean)?.f_div_scalar(self.std)
    }
}

/// Probability of class 1 for the images at `index` (int64 on the device),
/// in eval mode without gradients, `batch` images at a time. With cuDNN
/// autotuning the last batch is padded to full size (and the padding's
/// scores dropped), so every forward pass has the training batch's shape
/// and the autotuned kernels are reused; elsewhere padding would only cost
/// time. The scores stay on the device until the end (one
/// transfer), and the softmax is taken in f64. `stop` is asked before each
/// batch: when it says yes, scoring ends with [`ScoreError::Cancelled`].
pub fn score(
    net: &impl ModuleT,
    images: &Tensor,
    index: &Tensor,
    norm: Normalise,
    batch: i64,
    compute: Compute,
    stop: &dyn Fn() -> bool,
) -> Result<Vec<f64>, ScoreError> {
    let n = index.size()[0];
    if n == 0 {
        return Ok(Vec::new());
    }
    let batch = batch.max(1);
    let padded_len = if compute.cuda && compute.cudnn_benchmark {
        (n + batch - 1) / batch * batch
    } else {
        n
    };
    tch::no_grad(|| {
        let index = if padded_len > n {
            let pad = index.f_narrow(0, 0, 1)?.f_expand([padded_len - n], false)?;
            Tensor::f_cat(&[index.shallow_clone(), pad], 0)?
        } else {
            index.shallow_clone()
        };
        let mut parts = Vec::new();
        let mut start = 0;
        while start < padded_len {
            if stop() {
                return Err(ScoreError::Cancelled);
            }
            let idx = index.f_narrow(0, start, batch.min(padded_len - start))?;
            let x = norm.apply(&gather(images, &idx)?)?;
            let logits = compute.forward(net, &x, false)?;
            // In f64: an f32 softmax is exactly 1.0 from a logit gap of
            // about 17, so confident scores would tie (and a tie between
            // a positive and a negative counts one half in the AUC).
            parts.push(
                logits
                    .f_to_kind(Kind::Double)?
                    .f_softmax(1, Kind::Double)?
                    .f_select(1, 1)?,
            );
            start += batch;
        }
        let all = Tensor::f_cat(&parts, 0)?
            .f_narrow(0, 0, n)?
            .f_to_kind(Kind::Double)?
            .f_to_device(tch::Device::Cpu)?;
        Ok(Vec::<f64>::try_from(&all)?)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Precision(#[from] ShimError),
    #[error("cancelled while scoring")]
    Cancelled,
}

/// Mean cross-entropy of `scores` (probabilities of class 1) against labels.
pub fn log_loss(labels: &[bool], scores: &[f64]) -> Option<f64> {
    if labels.is_empty() {
        return None;
    }
    let total: f64 = labels
        .iter()
        .zip(scores)
        .map(|(&y, &p)| {
            let p = p.clamp(1e-7, 1.0 - 1e-7);
            if y {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    Some(total / labels.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn never() -> bool {
        false
    }

    /// A "network" whose class-1 logit is the image's first (normalised)
    /// pixel, class 0's zero.
    fn first_pixel_logit() -> impl ModuleT {
        tch::nn::func_t(|x, _train| {
            let v = x.flatten(1, -1).narrow(1, 0, 1);
            Tensor::cat(&[v.zeros_like(), v], 1)
        })
    }

    #[test]
    fn scoring_stops_between_batches_when_told() {
        let net = first_pixel_logit();
        let images = Tensor::from_slice(&[1u8, 2, 3, 4, 5]).reshape([5, 1, 1, 1]);
        let index = Tensor::from_slice(&[0i64, 1, 2, 3, 4]);
        let plain = Normalise {
            mean: 0.0,
            std: 1.0,
        };
        // Told to stop after the first of three batches.
        let asked = Cell::new(0);
        let stop = || {
            asked.set(asked.get() + 1);
            asked.get() > 1
        };
        let err = score(&net, &images, &index, plain, 2, Compute::plain(), &stop).unwrap_err();
        assert!(matches!(err, ScoreError::Cancelled), "{err}");
        assert_eq!(asked.get(), 2, "asked before each batch, no further");
        // Never told: all three batches.
        asked.set(0);
        let counting = || {
            asked.set(asked.get() + 1);
            false
        };
        let s = score(&net, &images, &index, plain, 2, Compute::plain(), &counting).unwrap();
        assert_eq!((s.len(), asked.get()), (5, 3));
    }

    #[test]
    fn log_loss_by_hand() {
        let l = log_loss(&[true, false], &[0.8, 0.4]).unwrap();
        assert!((l - (-(0.8f64).ln() - (0.6f64).ln()) / 2.0).abs() < 1e-12);
        assert_eq!(log_loss(&[], &[]), None);
    }

    #[test]
    fn a_short_last_batch_scores_its_own_images_in_order() {
        let net = first_pixel_logit();
        let images = Tensor::from_slice(&[10u8, 20, 30, 40, 50]).reshape([5, 1, 1, 1]);
        let index = Tensor::from_slice(&[4i64, 0, 3, 1, 2]);
        let scale = Normalise {
            mean: 0.0,
            std: 0.1,
        };
        let one_by_one = score(&net, &images, &index, scale, 1, Compute::plain(), &never).unwrap();
        let in_twos = score(&net, &images, &index, scale, 2, Compute::plain(), &never).unwrap();
        assert_eq!(one_by_one, in_twos);
        let logistic = |v: f64| 1.0 / (1.0 + (-v).exp());
        // Pixels are read as x / 255, then normalised: logit x / 25.5.
        for (s, x) in in_twos.iter().zip([50.0, 10.0, 40.0, 20.0, 30.0]) {
            assert!((s - logistic(x / 25.5)).abs() < 1e-6, "{in_twos:?}");
        }
    }

    #[test]
    fn confident_scores_stay_below_one_and_apart() {
        // A "network" whose logit gap is the image's first pixel x 40:
        // gaps of 20 and 30, where an f32 softmax gives 1.0 for both.
        let net = tch::nn::func_t(|x, _train| {
            let gap = x.flatten(1, -1).narrow(1, 0, 1) * 40.0;
            Tensor::cat(&[gap.zeros_like(), gap], 1)
        });
        let images = Tensor::from_slice(&[128u8, 191]).reshape([2, 1, 1, 1]);
        let index = Tensor::from_slice(&[0i64, 1]);
        let plain = Normalise {
            mean: 0.0,
            std: 1.0,
        };
        let s = score(&net, &images, &index, plain, 1, Compute::plain(), &never).unwrap();
        assert!(s[0] < s[1] && s[1] < 1.0, "{s:?}");
        let f32_scores = Tensor::from_slice(&[0.0f32, 20.0, 0.0, 30.0])
            .reshape([2, 2])
            .softmax(1, Kind::Float);
        assert_eq!(
            Vec::<f32>::try_from(f32_scores.select(1, 1)).unwrap(),
            [1.0, 1.0]
        );
    }
}
