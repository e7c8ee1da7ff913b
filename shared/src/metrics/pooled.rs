//! Pooled out-of-fold ROC: every round's test predictions put together.
//!
//! In k-fold screening every image is tested once, so the pool is the
//! out-of-fold prediction of each image. In the malignancy task every tumour
//! image is tested in several rounds (4 of 10 in the paper's design); the
//! pool then holds each image once per round that tested it, and the plain
//! DeLong interval ([`Pooled::delong`]), which assumes independent cases, is
//! optimistic. The coordinator's pooled CI is therefore
//! [`super::clustered_delong`] with each patient as a cluster.

use super::{auc, delong, roc_curve, DelongAuc, MetricsError, RocPoint};

/// The pooled predictions of several rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Pooled {
    pub labels: Vec<bool>,
    pub scores: Vec<f64>,
}

impl Pooled {
    /// Concatenate rounds given as (labels, scores) pairs.
    pub fn from_rounds<'a>(
        rounds: impl IntoIterator<Item = (&'a [bool], &'a [f64])>,
    ) -> Result<Pooled, MetricsError> {
        let mut pooled = Pooled {
            labels: Vec::new(),
            scores: Vec::new(),
        };
        for (labels, scores) in rounds {
            if labels.len() != scores.len() {
                return Err(MetricsError::LengthMismatch {
                    labels: labels.len(),
                    scores: scores.len(),
                });
            }
            pooled.labels.extend_from_slice(labels);
            pooled.scores.extend_from_slice(scores);
        }
        Ok(pooled)
    }

    pub fn auc(&self) -> Result<Option<f64>, MetricsError> {
        auc(&self.labels, &self.scores)
    }

    pub fn delong(&self) -> Result<Option<DelongAuc>, MetricsError> {
        delong(&self.labels, &self.scores)
    }

    pub fn roc_curve(&self) -> Result<Vec<RocPoint>, MetricsError> {
        roc_curve(&self.labels, &self.scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_rounds_in_order() {
        let a = ([true, false], [0.9, 0.2]);
        let b = ([true, false, false], [0.3, 0.4, 0.1]);
        let p = Pooled::from_rounds([(&a.0[..], &a.1[..]), (&b.0[..], &b.1[..])]).unwrap();
        assert_eq!(p.labels, vec![true, false, true, false, false]);
        // Positives 0.9, 0.3; negatives 0.2, 0.4, 0.1: wins 3 + 2 = 5 of 6.
        assert!((p.auc().unwrap().unwrap() - 5.0 / 6.0).abs() < 1e-12);
        let bad = Pooled::from_rounds([(&a.0[..], &b.1[..])]);
        assert!(matches!(bad, Err(MetricsError::LengthMismatch { .. })));
    }
}
