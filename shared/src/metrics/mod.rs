//! Statistics of a classification round: confusion counts, ROC curve, AUC with
//! confidence intervals, paired AUC comparison and across-round summaries.
//!
//! # Conventions
//!
//! Every function takes two parallel slices:
//!
//! - `labels: &[bool]`: the truth, `true` for the positive class (tumour in the
//!   screening task, malignant in the malignancy task);
//! - `scores: &[f64]`: the model's probability of the positive class; higher means
//!   more positive. Scores must be finite; they need not lie in `[0, 1]` (ratings
//!   such as 1..5 work too), only the *threshold* of [`Confusion::at_threshold`] must.
//!
//! **Prediction rule:** a case is predicted positive iff `score >= threshold`.
//!
//! Quantities that are undefined on the data at hand (a rate whose denominator is
//! zero, an AUC with no positive or no negative case, a sample variance from fewer
//! than two values) are `None`: never 0 or 0.5 by convention.
//!
//! # What is here
//!
//! - [`Confusion`]: TP/FP/TN/FN at a threshold and the rates derived from them.
//! - [`roc_curve`], [`auc`]: the empirical ROC curve and its area, computed as the
//!   Mann-Whitney statistic `U / (m n)` with mid-ranks, so a tie between a positive
//!   and a negative counts 1/2.
//! - [`delong()`], [`DelongAuc`]: the DeLong, DeLong & Clarke-Pearson (1988) variance
//!   of the AUC, computed in O(N log N) with the mid-rank algorithm of Sun & Xu (2014),
//!   and its normal-approximation confidence interval.
//! - [`clustered_delong`]: the AUC's variance for clustered cases (an image
//!   tested in several rounds, a patient's several images), Obuchowski (1997).
//! - [`paired_delong`], [`PairedDelong`]: DeLong's test of two correlated AUCs (two
//!   score sets on the same cases); [`clustered_paired_delong`] for clustered cases.
//! - [`bootstrap_auc_ci`]: a stratified percentile-bootstrap interval for the AUC.
//! - [`summarize`], [`Summary`]: mean ± sample SD (n − 1), min and max across rounds,
//!   as the paper's tables report them.
//! - [`RoundStats`]: the per-round record the workers send and the reports print.
//! - [`normal_cdf`], [`normal_quantile`]: the standard normal distribution.
//!
//! # References
//!
//! - E. R. DeLong, D. M. DeLong, D. L. Clarke-Pearson (1988). Comparing the areas under
//!   two or more correlated receiver operating characteristic curves: a nonparametric
//!   approach. *Biometrics* 44(3):837–845.
//! - N. A. Obuchowski (1997). Nonparametric analysis of clustered ROC curve data.
//!   *Biometrics* 53(2):567–578.
//! - X. Sun, W. Xu (2014). Fast implementation of DeLong's algorithm for comparing the
//!   areas under correlated receiver operating characteristic curves. *IEEE Signal
//!   Processing Letters* 21(11):1389–1393.
//! - J. A. Hanley, B. J. McNeil (1982). The meaning and use of the area under a receiver
//!   operating characteristic (ROC) curve. *Radiology* 143(1):29–36.
//! - X. Robin et al. (2011). pROC: an open-source package for R and S+ to analyze and
//!   compare ROC curves. *BMC Bioinformatics* 12:77. (The reference implementation the
//!   tests compare with.)
//! - M. J. Wichura (1988). Algorithm AS 241: the percentage points of the normal
//!   distribution. *Applied Statistics* 37(3):477–484.

mod bootstrap;
mod clustered;
mod confusion;
mod delong;
mod normal;
mod pooled;
mod roc;
mod round;
mod summary;
mod youden;

#[cfg(test)]
mod tests;

pub use bootstrap::bootstrap_auc_ci;
pub use clustered::{clustered_delong, clustered_paired_delong};
pub use confusion::Confusion;
pub use delong::{delong, paired_delong, DelongAuc, PairedDelong};
pub use normal::{normal_cdf, normal_quantile};
pub use pooled::Pooled;
pub use roc::{auc, roc_curve, RocPoint};
pub use round::{RoundStats, ROUND_KEYS, SUMMARY_KEYS};
pub use summary::{summarize, summarize_optional, Summary};
pub use youden::youden_threshold;

/// Why a statistic could not be computed from its inputs.
///
/// Data that merely leave a quantity undefined (one class only, a zero denominator)
/// are not errors: those quantities come back as `None`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// The label and score slices (or two score slices) differ in length.
    #[error("labels and scores differ in length: {labels} labels, {scores} scores")]
    LengthMismatch {
        /// Number of labels.
        labels: usize,
        /// Number of scores.
        scores: usize,
    },
    /// The cluster ids differ in number from the cases.
    #[error("labels and cluster ids differ in length: {cases} cases, {clusters} cluster ids")]
    ClusterCount {
        /// Number of cases (labels).
        cases: usize,
        /// Number of cluster ids.
        clusters: usize,
    },
    /// A score is NaN or infinite.
    #[error("score at index {index} is not finite: {value}")]
    NonFiniteScore {
        /// Position of the offending score.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A decision threshold is NaN or outside `[0, 1]`.
    #[error("threshold {threshold} is not in [0, 1]")]
    InvalidThreshold {
        /// The offending threshold.
        threshold: f64,
    },
    /// A bootstrap was asked for zero resamples.
    #[error("the bootstrap needs at least one resample, got 0")]
    ZeroResamples,
    /// A confidence level is NaN or outside the open interval `(0, 1)`.
    #[error("confidence level {level} is not in (0, 1)")]
    InvalidLevel {
        /// The offending level.
        level: f64,
    },
}

/// Checks that `labels` and `scores` have the same length and every score is finite.
fn validate(labels: &[bool], scores: &[f64]) -> Result<(), MetricsError> {
    if labels.len() != scores.len() {
        return Err(MetricsError::LengthMismatch {
            labels: labels.len(),
            scores: scores.len(),
        });
    }
    match scores.iter().position(|s| !s.is_finite()) {
        Some(index) => Err(MetricsError::NonFiniteScore {
            index,
            value: scores[index],
        }),
        None => Ok(()),
    }
}

/// Checks that a confidence level lies in the open interval `(0, 1)`.
fn validate_level(level: f64) -> Result<(), MetricsError> {
    if level > 0.0 && level < 1.0 {
        Ok(())
    } else {
        Err(MetricsError::InvalidLevel { level })
    }
}

/// Splits validated scores into (positives, negatives), keeping their order.
fn split_by_class(labels: &[bool], scores: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    for (&label, &score) in labels.iter().zip(scores) {
        if label {
            pos.push(score);
        } else {
            neg.push(score);
        }
    }
    (pos, neg)
}
