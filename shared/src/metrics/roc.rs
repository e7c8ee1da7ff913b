//! The empirical ROC curve and the Mann-Whitney AUC.

use std::cmp::Ordering;

use serde::Serialize;

use super::{split_by_class, validate, MetricsError};

/// One point of an empirical ROC curve.
///
/// Serialises as `{"threshold", "fpr", "tpr"}`; the first point's threshold is
/// `+inf`, which `serde_json` writes as `null`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RocPoint {
    /// The rule *predicted positive iff `score >= threshold`* gives this point.
    pub threshold: f64,
    /// False-positive rate, `fp / n_neg` (1 − specificity).
    pub fpr: f64,
    /// True-positive rate, `tp / n_pos` (sensitivity).
    pub tpr: f64,
}

/// Compares two finite scores; `-0.0` and `0.0` are equal.
fn cmp_scores(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

/// Mid-ranks of finite values: rank 1 for the smallest, and tied values share the
/// mean of the ranks they occupy (a tie over ranks 3, 4, 5 gives 4 to each).
/// O(N log N).
pub(super) fn midranks(values: &[f64]) -> Vec<f64> {
    let n = values.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cmp_scores(values[a], values[b]));
    let mut ranks = vec![0.0; n];
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1 ..= end; their mean:
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// The Mann-Whitney AUC from the mid-ranks of the pooled sample, the `m` positives
/// first: `AUC = (R₊ − m(m+1)/2) / (m n)` with `R₊` the positives' rank sum.
pub(super) fn auc_from_pooled_ranks(pooled_ranks: &[f64], m: usize) -> f64 {
    let n = pooled_ranks.len() - m;
    let rank_sum: f64 = pooled_ranks[..m].iter().sum();
    let m_f = m as f64;
    (rank_sum - m_f * (m_f + 1.0) / 2.0) / (m_f * n as f64)
}

/// The Mann-Whitney AUC of positive scores `pos` against negative scores `neg`;
/// `None` when either is empty.
pub(super) fn auc_split(pos: &[f64], neg: &[f64]) -> Option<f64> {
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let pooled: Vec<f64> = pos.iter().chain(neg).copied().collect();
    Some(auc_from_pooled_ranks(&midranks(&pooled), pos.len()))
}

/// Area under the empirical ROC curve, as the Mann-Whitney statistic.
///
/// With `m` positives `X` and `n` negatives `Y`,
///
/// ```text
/// AUC = 1/(m n) Σᵢ Σⱼ ψ(Xᵢ, Yⱼ),   ψ(x, y) = 1 if x > y, 1/2 if x = y, 0 if x < y,
/// ```
///
/// computed in O(N log N) from mid-ranks: `AUC = (R₊ − m(m+1)/2) / (m n)` where `R₊`
/// is the sum of the positives' ranks in the pooled sample. It equals the trapezoidal
/// area under [`roc_curve`] (Hanley & McNeil 1982).
///
/// Returns `Ok(None)` when there is no positive or no negative case.
///
/// # Errors
///
/// [`MetricsError::LengthMismatch`], [`MetricsError::NonFiniteScore`].
pub fn auc(labels: &[bool], scores: &[f64]) -> Result<Option<f64>, MetricsError> {
    validate(labels, scores)?;
    let (pos, neg) = split_by_class(labels, scores);
    Ok(auc_split(&pos, &neg))
}

/// The empirical ROC curve.
///
/// The first point is `(fpr, tpr) = (0, 0)` with threshold `+inf` (nothing predicted
/// positive); then one point per distinct score, in decreasing order of score, each
/// giving the rates of the rule *predicted positive iff `score >= threshold`*; the last
/// point, at the lowest score, is `(1, 1)`. Tied scores make one step, so a tie between
/// positives and negatives gives a diagonal segment, whose trapezoid counts each tied
/// pair 1/2, as [`auc`] does.
///
/// Returns an empty curve when there is no positive or no negative case (one of the
/// rates is then undefined).
///
/// # Errors
///
/// [`MetricsError::LengthMismatch`], [`MetricsError::NonFiniteScore`].
pub fn roc_curve(labels: &[bool], scores: &[f64]) -> Result<Vec<RocPoint>, MetricsError> {
    validate(labels, scores)?;
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Ok(Vec::new());
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| cmp_scores(scores[b], scores[a]));

    let mut points = vec![RocPoint {
        threshold: f64::INFINITY,
        fpr: 0.0,
        tpr: 0.0,
    }];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut start = 0;
    while start < order.len() {
        let threshold = scores[order[start]];
        let mut end = start;
        while end < order.len() && scores[order[end]] == threshold {
            if labels[order[end]] {
                tp += 1;
            } else {
                fp += 1;
            }
            end += 1;
        }
        points.push(RocPoint {
            threshold,
            fpr: fp as f64 / n_neg as f64,
            tpr: tp as f64 / n_pos as f64,
        });
        start = end;
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midranks_average_tied_positions() {
        // sorted: 0.1 (rank 1), 0.5 0.5 0.5 (ranks 2,3,4 → 3), 0.9 (rank 5)
        let r = midranks(&[0.5, 0.9, 0.1, 0.5, 0.5]);
        assert_eq!(r, vec![3.0, 5.0, 1.0, 3.0, 3.0]);
    }

    #[test]
    fn negative_zero_ties_with_zero() {
        assert_eq!(midranks(&[0.0, -0.0]), vec![1.5, 1.5]);
        assert_eq!(auc(&[true, false], &[0.0, -0.0]).expect("valid"), Some(0.5));
    }

    #[test]
    fn single_class_gives_empty_curve() {
        assert!(roc_curve(&[true, true], &[0.1, 0.2])
            .expect("valid")
            .is_empty());
        assert!(roc_curve(&[], &[]).expect("valid").is_empty());
    }
}
