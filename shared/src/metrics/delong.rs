//! DeLong's variance of the AUC, its confidence interval, and the paired DeLong test.
//!
//! With `m` positive scores `X₁…X_m` and `n` negative scores `Y₁…Y_n`, and
//! `ψ(x, y) = 1` if `x > y`, `1/2` if `x = y`, `0` otherwise, DeLong et al. (1988)
//! define the structural components (pROC calls them placements)
//!
//! ```text
//! V10(Xᵢ) = 1/n Σⱼ ψ(Xᵢ, Yⱼ)       V01(Yⱼ) = 1/m Σᵢ ψ(Xᵢ, Yⱼ)
//! ```
//!
//! whose means both equal the AUC `θ`, and estimate
//!
//! ```text
//! S10 = Σᵢ (V10(Xᵢ) − θ)² / (m − 1)    S01 = Σⱼ (V01(Yⱼ) − θ)² / (n − 1)
//! Var(θ) = S10 / m + S01 / n.
//! ```
//!
//! Sun & Xu (2014) obtain the components from mid-ranks in O(N log N): with `Tz` the
//! mid-ranks in the pooled sample and `Tx`, `Ty` those within each class,
//! `V10(Xᵢ) = (Tz(Xᵢ) − Tx(Xᵢ)) / n` and `V01(Yⱼ) = 1 − (Tz(Yⱼ) − Ty(Yⱼ)) / m`.
//! These are the formulas of pROC's `var(method = "delong")` and `roc.test`.

use super::normal::{normal_cdf, normal_quantile};
use super::roc::{auc_from_pooled_ranks, midranks};
use super::{split_by_class, validate, MetricsError};

/// An AUC with its DeLong variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DelongAuc {
    /// The Mann-Whitney AUC (equal to [`super::auc`]).
    pub auc: f64,
    /// DeLong's variance estimate `S10/m + S01/n`.
    pub variance: f64,
    /// Number of positive cases `m`.
    pub n_pos: usize,
    /// Number of negative cases `n`.
    pub n_neg: usize,
}

impl DelongAuc {
    /// Standard error, `√variance`.
    pub fn se(&self) -> f64 {
        self.variance.max(0.0).sqrt()
    }

    /// Two-sided normal-approximation interval `AUC ± z·SE` with
    /// `z = Φ⁻¹((1 + level)/2)` (1.96 for `level = 0.95`), clipped to `[0, 1]`.
    ///
    /// For a `level` outside `(0, 1)` this returns the limits of the interval as the
    /// level tends to the nearer bound: `(auc, auc)` for `level <= 0`, and `(0, 1)` for
    /// `level >= 1` or NaN. A level that comes from user input should be checked first
    /// ([`super::bootstrap_auc_ci`] rejects such levels with
    /// [`MetricsError::InvalidLevel`]).
    pub fn ci(&self, level: f64) -> (f64, f64) {
        if level <= 0.0 {
            return (self.auc, self.auc);
        }
        if level.is_nan() || level >= 1.0 {
            return (0.0, 1.0);
        }
        let half_width = normal_quantile(0.5 + level / 2.0) * self.se();
        (
            (self.auc - half_width).max(0.0),
            (self.auc + half_width).min(1.0),
        )
    }
}

/// DeLong's test of two correlated AUCs (two score sets on the same cases).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedDelong {
    /// AUC of the first score set.
    pub auc_a: f64,
    /// AUC of the second score set.
    pub auc_b: f64,
    /// `auc_a − auc_b`.
    pub difference: f64,
    /// Standard error of the difference.
    pub se: f64,
    /// `difference / se`.
    pub z: f64,
    /// Two-sided p-value `2 (1 − Φ(|z|))`.
    pub p_value: f64,
}

/// The AUC and the structural components of one score set.
impl PairedDelong {
    /// The test of `auc_a − auc_b` with that difference's `variance`
    /// (a variance below 0 from rounding is taken as 0).
    pub(super) fn from_variance(auc_a: f64, auc_b: f64, variance: f64) -> Self {
        let difference = auc_a - auc_b;
        let se = variance.max(0.0).sqrt();
        let (z, p_value) = if se > 0.0 {
            let z = difference / se;
            (z, (2.0 * normal_cdf(-z.abs())).min(1.0))
        } else if difference == 0.0 {
            (0.0, 1.0)
        } else {
            (difference.signum() * f64::INFINITY, 0.0)
        };
        PairedDelong {
            auc_a,
            auc_b,
            difference,
            se,
            z,
            p_value,
        }
    }
}

pub(super) struct Placements {
    pub(super) auc: f64,
    /// `V10(Xᵢ)`, in the order of the positives.
    pub(super) v10: Vec<f64>,
    /// `V01(Yⱼ)`, in the order of the negatives.
    pub(super) v01: Vec<f64>,
}

/// Structural components by mid-ranks (Sun & Xu 2014). Needs `pos` and `neg` non-empty.
pub(super) fn placements(pos: &[f64], neg: &[f64]) -> Placements {
    let (m, n) = (pos.len(), neg.len());
    let pooled: Vec<f64> = pos.iter().chain(neg).copied().collect();
    let tz = midranks(&pooled);
    let tx = midranks(pos);
    let ty = midranks(neg);
    let v10 = (0..m).map(|i| (tz[i] - tx[i]) / n as f64).collect();
    let v01 = (0..n)
        .map(|j| 1.0 - (tz[m + j] - ty[j]) / m as f64)
        .collect();
    Placements {
        auc: auc_from_pooled_ranks(&tz, m),
        v10,
        v01,
    }
}

/// Sample variance `Σ (vᵢ − mean)² / (k − 1)` around a given mean; needs `k >= 2`.
fn sample_var(values: &[f64], mean: f64) -> f64 {
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    ss / (values.len() - 1) as f64
}

/// The AUC with DeLong's variance (see the module docs for the formulas).
///
/// Returns `Ok(None)` when there are fewer than 2 positive or fewer than 2 negative
/// cases: the sample variances `S10`, `S01` divide by `m − 1` and `n − 1`. (The AUC
/// alone is defined from one case per class: see [`super::auc`].)
///
/// # Errors
///
/// [`MetricsError::LengthMismatch`], [`MetricsError::NonFiniteScore`].
pub fn delong(labels: &[bool], scores: &[f64]) -> Result<Option<DelongAuc>, MetricsError> {
    validate(labels, scores)?;
    let (pos, neg) = split_by_class(labels, scores);
    let (m, n) = (pos.len(), neg.len());
    if m < 2 || n < 2 {
        return Ok(None);
    }
    let p = placements(&pos, &neg);
    let variance = sample_var(&p.v10, p.auc) / m as f64 + sample_var(&p.v01, p.auc) / n as f64;
    Ok(Some(DelongAuc {
        auc: p.auc,
        variance,
        n_pos: m,
        n_neg: n,
    }))
}

/// DeLong's paired test of `H₀: AUC_a = AUC_b` for two score sets on the same cases.
///
/// With `Dᵢ = V10ᵃ(Xᵢ) − V10ᵇ(Xᵢ)` and `Eⱼ = V01ᵃ(Yⱼ) − V01ᵇ(Yⱼ)`, whose means are both
/// `δ = AUC_a − AUC_b`,
///
/// ```text
/// Var(δ) = Σ(Dᵢ − δ)² / ((m − 1) m) + Σ(Eⱼ − δ)² / ((n − 1) n)
/// ```
///
/// which equals `S_aa + S_bb − 2 S_ab` of DeLong et al. (1988), computed so that it
/// cannot come out negative. `z = δ / √Var(δ)`, `p = 2 (1 − Φ(|z|))`.
///
/// When the standard error is exactly 0 (for instance identical score sets, or two
/// score sets that rank the cases identically): if `δ = 0` then `z = 0` and `p = 1`;
/// otherwise `z = ±inf` and `p = 0`, the limit of the normal approximation.
///
/// Returns `Ok(None)` with fewer than 2 positive or 2 negative cases.
///
/// # Errors
///
/// [`MetricsError::LengthMismatch`] when either score slice differs in length from
/// `labels`, [`MetricsError::NonFiniteScore`] for a non-finite score in either.
pub fn paired_delong(
    labels: &[bool],
    scores_a: &[f64],
    scores_b: &[f64],
) -> Result<Option<PairedDelong>, MetricsError> {
    validate(labels, scores_a)?;
    validate(labels, scores_b)?;
    let (pos_a, neg_a) = split_by_class(labels, scores_a);
    let (pos_b, neg_b) = split_by_class(labels, scores_b);
    let (m, n) = (pos_a.len(), neg_a.len());
    if m < 2 || n < 2 {
        return Ok(None);
    }
    let a = placements(&pos_a, &neg_a);
    let b = placements(&pos_b, &neg_b);
    let difference = a.auc - b.auc;
    let d10: Vec<f64> = a.v10.iter().zip(&b.v10).map(|(x, y)| x - y).collect();
    let d01: Vec<f64> = a.v01.iter().zip(&b.v01).map(|(x, y)| x - y).collect();
    let variance =
        sample_var(&d10, difference) / m as f64 + sample_var(&d01, difference) / n as f64;
    Ok(Some(PairedDelong::from_variance(a.auc, b.auc, variance)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_per_class_is_the_minimum() {
        assert_eq!(
            delong(&[true, false, false], &[0.9, 0.1, 0.2]).expect("ok"),
            None
        );
        assert!(delong(&[true, true, false, false], &[0.9, 0.3, 0.1, 0.2])
            .expect("ok")
            .is_some());
    }

    #[test]
    fn ci_clips_and_handles_odd_levels() {
        let d = DelongAuc {
            auc: 0.98,
            variance: 0.01,
            n_pos: 10,
            n_neg: 10,
        };
        let (lo, hi) = d.ci(0.95);
        assert!((lo - (0.98 - 1.959_963_984_540_054 * 0.1)).abs() < 1e-12);
        assert_eq!(hi, 1.0);
        assert_eq!(d.ci(0.0), (0.98, 0.98));
        assert_eq!(d.ci(1.0), (0.0, 1.0));
        assert_eq!(d.ci(f64::NAN), (0.0, 1.0));
    }

    #[test]
    fn perfect_separation_has_zero_variance() {
        // Every V10 and V01 is 1, so S10 = S01 = 0.
        let d = delong(&[true, true, false, false], &[0.9, 0.8, 0.2, 0.1])
            .expect("ok")
            .expect("defined");
        assert_eq!((d.auc, d.variance, d.se()), (1.0, 0.0, 0.0));
        assert_eq!(d.ci(0.95), (1.0, 1.0));
    }

    #[test]
    fn zero_se_with_a_difference_gives_infinite_z() {
        // A separates perfectly (all components 1); B ties everything (all 1/2):
        // the differences are constant, so SE = 0 while δ = 1/2.
        let labels = [true, true, false, false];
        let t = paired_delong(&labels, &[0.9, 0.8, 0.2, 0.1], &[0.5; 4])
            .expect("ok")
            .expect("defined");
        assert_eq!((t.difference, t.se, t.p_value), (0.5, 0.0, 0.0));
        assert_eq!(t.z, f64::INFINITY);
    }
}
