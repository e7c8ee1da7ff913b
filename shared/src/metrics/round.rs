//! The per-round statistics record.

use serde::{Deserialize, Serialize};

use super::{auc, delong, Confusion, MetricsError};

/// Confidence level of the AUC interval in [`RoundStats`].
const CI_LEVEL: f64 = 0.95;

/// Everything reported for one test round, computed from the round's test labels and
/// scores at one threshold.
///
/// The JSON keys are, in this order: `n_pos`, `n_neg`, `threshold`, `tp`, `fp`, `tn`,
/// `fn`, `accuracy`, `sensitivity`, `specificity`, `ppv`, `npv`, `auc`, `auc_ci_low`,
/// `auc_ci_high`, `auc_ci_method`. Rates are fractions in `[0, 1]`; an undefined one
/// is `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundStats {
    /// Positive cases in the test set.
    pub n_pos: u64,
    /// Negative cases in the test set.
    pub n_neg: u64,
    /// Decision threshold: predicted positive iff `score >= threshold`.
    pub threshold: f64,
    /// True positives.
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// True negatives.
    pub tn: u64,
    /// False negatives.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// `(tp + tn) / n`.
    pub accuracy: Option<f64>,
    /// `tp / (tp + fn)`.
    pub sensitivity: Option<f64>,
    /// `tn / (tn + fp)`.
    pub specificity: Option<f64>,
    /// `tp / (tp + fp)`.
    pub ppv: Option<f64>,
    /// `tn / (tn + fn)`.
    pub npv: Option<f64>,
    /// Mann-Whitney AUC; `None` without both classes.
    pub auc: Option<f64>,
    /// Lower end of the 95% AUC interval; `None` with fewer than 2 cases of a class.
    pub auc_ci_low: Option<f64>,
    /// Upper end of the 95% AUC interval.
    pub auc_ci_high: Option<f64>,
    /// How the interval was computed: `"delong"`.
    pub auc_ci_method: String,
}

impl RoundStats {
    /// Computes the record: the confusion table at `threshold` (predicted positive iff
    /// `score >= threshold`), its rates, the Mann-Whitney AUC and its 95% DeLong
    /// interval (normal approximation, clipped to `[0, 1]`).
    ///
    /// # Errors
    ///
    /// [`MetricsError::LengthMismatch`], [`MetricsError::NonFiniteScore`],
    /// [`MetricsError::InvalidThreshold`].
    pub fn compute(
        labels: &[bool],
        scores: &[f64],
        threshold: f64,
    ) -> Result<RoundStats, MetricsError> {
        let c = Confusion::at_threshold(labels, scores, threshold)?;
        let auc = auc(labels, scores)?;
        let ci = delong(labels, scores)?.map(|d| d.ci(CI_LEVEL));
        Ok(RoundStats {
            n_pos: c.n_pos(),
            n_neg: c.n_neg(),
            threshold,
            tp: c.tp,
            fp: c.fp,
            tn: c.tn,
            fn_: c.fn_,
            accuracy: c.accuracy(),
            sensitivity: c.sensitivity(),
            specificity: c.specificity(),
            ppv: c.ppv(),
            npv: c.npv(),
            auc,
            auc_ci_low: ci.map(|(low, _)| low),
            auc_ci_high: ci.map(|(_, high)| high),
            auc_ci_method: "delong".to_string(),
        })
    }

    /// The confusion table this record was computed from.
    pub fn confusion(&self) -> Confusion {
        Confusion {
            tp: self.tp,
            fp: self.fp,
            tn: self.tn,
            fn_: self.fn_,
        }
    }
}

/// The keys of a [`RoundStats`] record in their JSON order (a contract
/// scripts rely on).
pub const ROUND_KEYS: [&str; 16] = [
    "n_pos",
    "n_neg",
    "threshold",
    "tp",
    "fp",
    "tn",
    "fn",
    "accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "auc_ci_method",
];

/// The per-round metrics an experiment summarises as mean ± SD, in the
/// order the report tables show them: the first five as percentages.
pub const SUMMARY_KEYS: [&str; 6] = [
    "accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "auc",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_come_in_the_fixed_order() {
        let labels = [true, true, false, false, true, false];
        let scores = [0.9, 0.4, 0.4, 0.2, 0.7, 0.6];
        let r = RoundStats::compute(&labels, &scores, 0.5).expect("valid");
        let json = serde_json::to_string(&r).expect("serialise");
        let mut last = 0;
        // The serialised order is the published contract, ROUND_KEYS.
        for key in ROUND_KEYS {
            let at = json
                .find(&format!("\"{key}\":"))
                .unwrap_or_else(|| panic!("key {key} missing in {json}"));
            assert!(at >= last, "key {key} out of order in {json}");
            last = at;
        }
        let value: serde_json::Value = serde_json::from_str(&json).expect("parse");
        assert_eq!(value.as_object().expect("object").len(), ROUND_KEYS.len());
        let back: RoundStats = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, r);
    }

    #[test]
    fn undefined_quantities_are_null() {
        // One positive only: AUC is defined (1 pair), the DeLong interval is not;
        // nothing is predicted positive at 0.95 → PPV undefined.
        let r = RoundStats::compute(&[true, false, false], &[0.8, 0.1, 0.2], 0.95).expect("valid");
        assert_eq!(r.auc, Some(1.0));
        assert_eq!((r.auc_ci_low, r.auc_ci_high), (None, None));
        assert_eq!(r.ppv, None);
        assert_eq!(r.auc_ci_method, "delong");
        let value = serde_json::to_value(&r).expect("serialise");
        assert!(value["ppv"].is_null() && value["auc_ci_low"].is_null());
        assert_eq!(r.confusion().n(), 3);
    }
}
