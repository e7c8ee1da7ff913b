//! Stratified percentile-bootstrap confidence interval of the AUC.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::roc::auc_split;
use super::{split_by_class, validate, validate_level, MetricsError};

/// A uniform index in `0..len` (`len > 0`) by Lemire's multiply-and-reject method,
/// unbiased and defined here so the stream of indices depends only on the ChaCha8
/// output, not on a `rand` version's sampling algorithm.
fn uniform_index(rng: &mut ChaCha8Rng, len: usize) -> usize {
    let range = len as u64;
    // 2^64 mod range: products whose low half falls below it are rejected.
    let threshold = range.wrapping_neg() % range;
    loop {
        let product = u128::from(rng.next_u64()) * u128::from(range);
        if (product as u64) >= threshold {
            return (product >> 64) as usize;
        }
    }
}

/// Draws `out.len()` values from `from` with replacement.
fn resample(rng: &mut ChaCha8Rng, from: &[f64], out: &mut [f64]) {
    for slot in out.iter_mut() {
        *slot = from[uniform_index(rng, from.len())];
    }
}

/// Quantile of sorted values with linear interpolation between order statistics
/// (Hyndman & Fan type 7, R's default): `h = (B − 1) q`, `x[⌊h⌋] + (h − ⌊h⌋)(x[⌊h⌋+1] − x[⌊h⌋])`.
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Stratified percentile-bootstrap interval of the AUC.
///
/// Each of the `resamples` replicates draws `m` positives from the `m` positive scores
/// and `n` negatives from the `n` negative scores, with replacement, so every replicate
/// keeps the class counts (pROC's `ci.auc(method = "bootstrap", stratified = TRUE)`),
/// and computes the Mann-Whitney AUC. The interval is the `(1 − level)/2` and
/// `(1 + level)/2` quantiles of the replicate AUCs (type-7 interpolation).
///
/// The generator is `ChaCha8Rng::seed_from_u64(seed)`; each replicate draws its
/// positives, then its negatives. The result is a deterministic function of the inputs
/// and `seed`.
///
/// Returns `Ok(None)` when there is no positive or no negative case.
///
/// # Errors
///
/// [`MetricsError::LengthMismatch`], [`MetricsError::NonFiniteScore`],
/// [`MetricsError::ZeroResamples`] when `resamples == 0`, [`MetricsError::InvalidLevel`]
/// when `level` is NaN or outside `(0, 1)`.
pub fn bootstrap_auc_ci(
    labels: &[bool],
    scores: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Result<Option<(f64, f64)>, MetricsError> {
    validate(labels, scores)?;
    if resamples == 0 {
        return Err(MetricsError::ZeroResamples);
    }
    validate_level(level)?;
    let (pos, neg) = split_by_class(labels, scores);
    if pos.is_empty() || neg.is_empty() {
        return Ok(None);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pos_star = vec![0.0; pos.len()];
    let mut neg_star = vec![0.0; neg.len()];
    // Every replicate keeps both classes, so every replicate has an AUC.
    let mut aucs: Vec<f64> = (0..resamples)
        .filter_map(|_| {
            resample(&mut rng, &pos, &mut pos_star);
            resample(&mut rng, &neg, &mut neg_star);
            auc_split(&pos_star, &neg_star)
        })
        .collect();
    if aucs.is_empty() {
        return Ok(None);
    }
    aucs.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    Ok(Some((
        quantile_sorted(&aucs, alpha),
        quantile_sorted(&aucs, 1.0 - alpha),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type7_quantile() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile_sorted(&x, 0.0), 1.0);
        assert_eq!(quantile_sorted(&x, 1.0), 5.0);
        assert_eq!(quantile_sorted(&x, 0.5), 3.0);
        // h = 4 × 0.1 = 0.4 → 1 + 0.4 × (2 − 1)
        assert!((quantile_sorted(&x, 0.1) - 1.4).abs() < 1e-15);
        assert_eq!(quantile_sorted(&[7.0], 0.3), 7.0);
    }

    #[test]
    fn uniform_index_stays_in_range_and_covers_it() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[uniform_index(&mut rng, 7)] += 1;
        }
        // Each bucket expects 1000; 6 SDs (≈ 6 × 30) is a generous band.
        assert!(seen.iter().all(|&c| (820..=1180).contains(&c)), "{seen:?}");
        assert_eq!(uniform_index(&mut rng, 1), 0);
    }

    #[test]
    fn separated_classes_give_a_degenerate_interval() {
        // Every replicate separates perfectly: AUC 1 each time.
        let labels = [true, true, true, false, false];
        let scores = [0.9, 0.8, 0.7, 0.2, 0.1];
        let ci = bootstrap_auc_ci(&labels, &scores, 50, 0.95, 3).expect("ok");
        assert_eq!(ci, Some((1.0, 1.0)));
    }

    #[test]
    fn one_class_gives_none() {
        let ci = bootstrap_auc_ci(&[false, false], &[0.1, 0.2], 10, 0.95, 0).expect("ok");
        assert_eq!(ci, None);
    }

    #[test]
    fn rejects_zero_resamples_and_bad_levels() {
        let (l, s) = ([true, false], [0.6, 0.4]);
        assert_eq!(
            bootstrap_auc_ci(&l, &s, 0, 0.95, 0),
            Err(MetricsError::ZeroResamples)
        );
        for level in [0.0, 1.0, -0.5, 1.5] {
            let err = bootstrap_auc_ci(&l, &s, 10, level, 0).expect_err("bad level");
            assert_eq!(err, MetricsError::InvalidLevel { level });
            assert!(err.to_string().contains(&level.to_string()));
        }
        let err = bootstrap_auc_ci(&l, &s, 10, f64::NAN, 0).expect_err("NaN level");
        assert!(matches!(err, MetricsError::InvalidLevel { level } if level.is_nan()));
        assert!(err.to_string().contains("NaN"));
    }
}
