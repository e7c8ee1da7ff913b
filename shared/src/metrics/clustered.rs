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
//! N. A. Obuchowski (1997). Nonparametric analysis of clustered ROC curve
//! data. *Biometrics* 53(2):567–578.

use std::collections::HashMap;
use std::hash::Hash;

use super::delong::placements;
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
    let n_clusters = index.len();
    // Per cluster: positives, negatives, and the sums of their components.
    let (mut m, mut n) = (vec![0usize; n_clusters], vec![0usize; n_clusters]);
    for (&label, &c) in labels.iter().zip(&of) {
        if label {
            m[c] += 1;
        } else {
            n[c] += 1;
        }
    }
    let with_pos = m.iter().filter(|&&k| k > 0).count();
    let with_neg = n.iter().filter(|&&k| k > 0).count();
    if with_pos < 2 || with_neg < 2 {
        return Ok(None);
    }
    let (pos, neg) = split_by_class(labels, scores);
    let p = placements(&pos, &neg);
    let (mut v10, mut v01) = (vec![0.0; n_clusters], vec![0.0; n_clusters]);
    let (mut next_pos, mut next_neg) = (p.v10.iter(), p.v01.iter());
    for (&label, &c) in labels.iter().zip(&of) {
        // Placements come in the order of the positives and of the
        // negatives, as the cases are.
        let (sums, next) = if label {
            (&mut v10, &mut next_pos)
        } else {
            (&mut v01, &mut next_neg)
        };
        sums[c] += next.next().copied().unwrap_or(0.0);
    }
    let theta = p.auc;
    let (big_m, big_n) = (pos.len() as f64, neg.len() as f64);
    let (i10, i01, i) = (with_pos as f64, with_neg as f64, n_clusters as f64);
    let (mut ss10, mut ss01, mut ss11) = (0.0, 0.0, 0.0);
    for c in 0..n_clusters {
        let dx = v10[c] - m[c] as f64 * theta;
        let dy = v01[c] - n[c] as f64 * theta;
        ss10 += dx * dx;
        ss01 += dy * dy;
        ss11 += dx * dy;
    }
    let s10 = i10 / ((i10 - 1.0) * big_m) * ss10;
    let s01 = i01 / ((i01 - 1.0) * big_n) * ss01;
    let s11 = i / (i - 1.0) * ss11;
    Ok(Some(DelongAuc {
        auc: theta,
        variance: s10 / big_m + s01 / big_n + 2.0 * s11 / (big_m * big_n),
        n_pos: pos.len(),
        n_neg: neg.len(),
    }))
}
