//! Across-round summaries: mean ± sample SD, min, max.

use serde::{Deserialize, Serialize};

/// Summary of one statistic across rounds, as the paper's tables give it
/// ("mean ± SD").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values summarised.
    pub n: usize,
    /// Arithmetic mean `x̄ = Σ xᵢ / n`.
    pub mean: f64,
    /// Sample standard deviation `√(Σ (xᵢ − x̄)² / (n − 1))`; `None` when `n < 2`.
    ///
    /// The divisor is `n − 1`, which reproduces the paper's SDs (Table 3: 8.459 for
    /// the column labelled "PPV", 19.081 for "NPV"; the population SD gives 8.025 and
    /// 18.102).
    pub sd: Option<f64>,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// Summarises `values`; `None` when `values` is empty or holds a NaN or infinity
/// (whose mean would be undefined).
///
/// The SD is computed in two passes (mean first, then squared deviations), which
/// avoids the cancellation of the one-pass `Σx² − n x̄²` formula.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let sd = (n >= 2).then(|| {
        let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
        (ss / (n - 1) as f64).sqrt()
    });
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Summary {
        n,
        mean,
        sd,
        min,
        max,
    })
}

/// Summarises the values that are `Some`, skipping the `None`s (rounds where the
/// statistic was undefined); `n` counts the values used. `None` when no value is left,
/// or as [`summarize`].
pub fn summarize_optional(values: &[Option<f64>]) -> Option<Summary> {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    summarize(&present)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cases() {
        assert_eq!(summarize(&[]), None);
        let one = summarize(&[3.5]).expect("one value");
        assert_eq!(
            (one.n, one.mean, one.sd, one.min, one.max),
            (1, 3.5, None, 3.5, 3.5)
        );
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, Σ(x − 5)² = 9+1+1+1+0+0+4+16 = 32,
        // sample SD √(32/7) = 2.138…, population SD √(32/8) = 2.
        let s = summarize(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).expect("values");
        assert_eq!(s.mean, 5.0);
        assert!((s.sd.expect("n >= 2") - (32.0f64 / 7.0).sqrt()).abs() < 1e-15);
        assert_eq!((s.min, s.max), (2.0, 9.0));
    }

    #[test]
    fn non_finite_values_give_none() {
        assert_eq!(summarize(&[1.0, f64::NAN]), None);
        assert_eq!(summarize(&[1.0, f64::INFINITY]), None);
    }

    #[test]
    fn optional_skips_none() {
        let s = summarize_optional(&[Some(1.0), None, Some(3.0)]).expect("two values");
        assert_eq!((s.n, s.mean), (2, 2.0));
        assert!((s.sd.expect("n = 2") - 2f64.sqrt()).abs() < 1e-15);
        assert_eq!(summarize_optional(&[None, None]), None);
    }
}
