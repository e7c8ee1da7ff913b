//! The AUC's variance when cases come in clusters: Obuchowski's (1997)
//! nonparametric method, DeLong's variance for correlated cases.
//!
//! Pooled out-of-fold predictions are such data: in the malignancy task's
//! 2-of-5 design every image is tested in 4 of the 10 rounds, and a
//! patient may have several images. Treating those predictions as
//! independent (plain DeLong) makes the interval too narrow; grouping them
//! into clusters (a patient, or an image) does not.
//!
//! With clusters `i = 1…I`, `mᵢ` positives and `nᵢ` negatives in cluster
//! `i`, `M = Σ mᵢ`, `N = Σ nᵢ`, DeLong's structural components
//! `V10(X)`, `V01(Y)` over all `M` positives and `N` negatives (see
//! [`super::delong()`]), their sums within each cluster `V10ᵢ`, `V01ᵢ`, and
//! `I10`, `I01` the numbers of clusters holding a positive and a negative:
//!
//! ```text
//! S10 = I10 / ((I10 − 1) M) Σᵢ (V10ᵢ − mᵢ θ)²
//! S01 = I01 / ((I01 − 1) N) Σᵢ (V01ᵢ − nᵢ θ)²
//! S11 = I / (I − 1) Σᵢ (V10ᵢ − mᵢ θ)(V01ᵢ − nᵢ θ)
//! Var(θ) = S10 / M + S01 / N + 2 S11 / (M N)
//! ```
//!
//! With one case per cluster this is DeLong's variance exactly, and
//! repeating every case `k` times within its own cluster leaves it
//! unchanged (both are tested).
//!
//! Two score sets on the same clustered cases ([`clustered_paired_delong`]):
//! every term above is bilinear in the components, so the variance of the
//! difference `δ = θa − θb` is the same formula with the components'
//! differences `V10a − V10b`, `V01a − V01b` and `δ` for `θ`, which is
//! `Var(θa) + Var(θb) − 2 Cov(θa, θb)` of Obuchowski's paper. With one
//! case per cluster it is DeLong's paired test exactly.
//!
//! N. A. Obuchowski (1997). Nonparametric analysis of clustered ROC curve
//! data. *Biometrics* 53(2):567–578.

use std::collections::HashMap;
use std::hash::Hash;

use super::delong::{placements, PairedDelong};
use super::{split_by_class, validate, DelongAuc, MetricsError};

/// The AUC with Obuchowski's variance for the clusters `clusters` (one id
/// per case; cases with equal ids form a cluster).
///
/// Returns `Ok(None)` when fewer than 2 clusters hold a positive or fewer
/// than 2 hold a negative (the sums of squares divide by `I10 − 1` and
/// `I01 − 1`). `n_pos` and `n_neg` of the result count cases, not
/// clusters.
///
/// # Errors
///
/// [`MetricsError::LengthMismatch`], [`MetricsError::ClusterCount`],
/// [`MetricsError::NonFiniteScore`].
pub fn clustered_delong<C: Eq + Hash>(
    labels: &[bool],
    scores: &[f64],
    clusters: &[C],
) -> Result<Option<DelongAuc>, MetricsError> {
    validate(labels, scores)?;
    let Some(g) = Grouping::new(labels, clusters)? else {
        return Ok(None);
    };
    let (pos, neg) = split_by_class(labels, scores);
    let p = placements(&pos, &neg);
    Ok(Some(DelongAuc {
        auc: p.auc,
        variance: g.variance(labels, &p.v10, &p.v01, p.auc),
        n_pos: pos.len(),
        n_neg: neg.len(),
    }))
}

/// DeLong's paired test of two score sets on the same cases, with the
/// variance of the difference for clustered cases (see the module notes):
/// `None` as for [`clustered_delong`].
///
/// # Errors
///
/// As [`clustered_delong`], for either score set.
pub fn clustered_paired_delong<C: Eq + Hash>(
    labels: &[bool],
    scores_a: &[f64],
    scores_b: &[f64],
    clusters: &[C],
) -> Result<Option<PairedDelong>, MetricsError> {
    validate(labels, scores_a)?;
    validate(labels, scores_b)?;
    let Some(g) = Grouping::new(labels, clusters)? else {
        return Ok(None);
    };
    let (pos_a, neg_a) = split_by_class(labels, scores_a);
    let (pos_b, neg_b) = split_by_class(labels, scores_b);
    let (a, b) = (placements(&pos_a, &neg_a), placements(&pos_b, &neg_b));
    let d10: Vec<f64> = a.v10.iter().zip(&b.v10).map(|(x, y)| x - y).collect();
    let d01: Vec<f64> = a.v01.iter().zip(&b.v01).map(|(x, y)| x - y).collect();
    let variance = g.variance(labels, &d10, &d01, a.auc - b.auc);
    Ok(Some(PairedDelong::from_variance(a.auc, b.auc, variance)))
}

/// Cases in clusters: each case's cluster, and each cluster's positives
/// and negatives.
struct Grouping {
    of: Vec<usize>,
    m: Vec<usize>,
    n: Vec<usize>,
}

impl Grouping {
    /// `None` when fewer than 2 clusters hold a positive or a negative.
    fn new<C: Eq + Hash>(labels: &[bool], clusters: &[C]) -> Result<Option<Self>, MetricsError> {
        if clusters.len() != labels.len() {
            return Err(MetricsError::ClusterCount {
                cases: labels.len(),
                clusters: clusters.len(),
            });
        }
        let mut index: HashMap<&C, usize> = HashMap::new();
        let of: Vec<usize> = clusters
            .iter()
            .map(|c| {
                let next = index.len();
                *index.entry(c).or_insert(next)
            })
            .collect();
        let (mut m, mut n) = (vec![0usize; index.len()], vec![0usize; index.len()]);
        for (&label, &c) in labels.iter().zip(&of) {
            if label {
                m[c] += 1;
            } else {
                n[c] += 1;
            }
        }
        let with_pos = m.iter().filter(|&&k| k > 0).count();
        let with_neg = n.iter().filter(|&&k| k > 0).count();
        Ok((with_pos >= 2 && with_neg >= 2).then_some(Grouping { of, m, n }))
    }

    /// Obuchowski's variance of a statistic `theta` whose structural
    /// components are `v10` (in the order of the positives) and `v01` (of
    /// the negatives).
    fn variance(&self, labels: &[bool], v10: &[f64], v01: &[f64], theta: f64) -> f64 {
        let clusters = self.m.len();
        let (mut sum10, mut sum01) = (vec![0.0; clusters], vec![0.0; clusters]);
        let (mut next_pos, mut next_neg) = (v10.iter(), v01.iter());
        for (&label, &c) in labels.iter().zip(&self.of) {
            // Components come in the order of the positives and of the
            // negatives, as the cases are.
            let (sums, next) = if label {
                (&mut sum10, &mut next_pos)
            } else {
                (&mut sum01, &mut next_neg)
            };
            sums[c] += next.next().copied().unwrap_or(0.0);
        }
        let (big_m, big_n) = (v10.len() as f64, v01.len() as f64);
        let i10 = self.m.iter().filter(|&&k| k > 0).count() as f64;
        let i01 = self.n.iter().filter(|&&k| k > 0).count() as f64;
        let i = clusters as f64;
        let (mut ss10, mut ss01, mut ss11) = (0.0, 0.0, 0.0);
        for c in 0..clusters {
            let dx = sum10[c] - self.m[c] as f64 * theta;
            let dy = sum01[c] - self.n[c] as f64 * theta;
            ss10 += dx * dx;
            ss01 += dy * dy;
            ss11 += dx * dy;
        }
        let s10 = i10 / ((i10 - 1.0) * big_m) * ss10;
        let s01 = i01 / ((i01 - 1.0) * big_n) * ss01;
        let s11 = i / (i - 1.0) * ss11;
        s10 / big_m + s01 / big_n + 2.0 * s11 / (big_m * big_n)
    }
}
