//! Confusion counts at a decision threshold and the rates derived from them.

use serde::{Deserialize, Serialize};

use super::{validate, MetricsError};

/// The 2 × 2 confusion table of a binary classifier at one threshold.
///
/// Serialised with the keys `tp`, `fp`, `tn`, `fn`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Confusion {
    /// True positives: positive cases predicted positive.
    pub tp: u64,
    /// False positives: negative cases predicted positive.
    pub fp: u64,
    /// True negatives: negative cases predicted negative.
    pub tn: u64,
    /// False negatives: positive cases predicted negative.
    #[serde(rename = "fn")]
    pub fn_: u64,
}

/// `num / den` as a fraction, `None` when `den == 0`.
fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

impl Confusion {
    /// Counts the table for the rule *predicted positive iff `score >= threshold`*.
    ///
    /// # Errors
    ///
    /// [`MetricsError::LengthMismatch`] when the slices differ in length,
    /// [`MetricsError::NonFiniteScore`] for a NaN or infinite score,
    /// [`MetricsError::InvalidThreshold`] when `threshold` is NaN or outside `[0, 1]`.
    pub fn at_threshold(
        labels: &[bool],
        scores: &[f64],
        threshold: f64,
    ) -> Result<Confusion, MetricsError> {
        validate(labels, scores)?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(MetricsError::InvalidThreshold { threshold });
        }
        let mut c = Confusion::default();
        for (&label, &score) in labels.iter().zip(scores) {
            match (label, score >= threshold) {
                (true, true) => c.tp += 1,
                (true, false) => c.fn_ += 1,
                (false, true) => c.fp += 1,
                (false, false) => c.tn += 1,
            }
        }
        Ok(c)
    }

    /// Number of positive cases, `tp + fn`.
    pub fn n_pos(&self) -> u64 {
        self.tp + self.fn_
    }

    /// Number of negative cases, `tn + fp`.
    pub fn n_neg(&self) -> u64 {
        self.tn + self.fp
    }

    /// Number of cases, `tp + fp + tn + fn`.
    pub fn n(&self) -> u64 {
        self.n_pos() + self.n_neg()
    }

    /// Accuracy `(tp + tn) / n`; `None` when there is no case.
    pub fn accuracy(&self) -> Option<f64> {
        ratio(self.tp + self.tn, self.n())
    }

    /// Sensitivity (recall, true-positive rate) `tp / (tp + fn)`; `None` with no positive case.
    pub fn sensitivity(&self) -> Option<f64> {
        ratio(self.tp, self.n_pos())
    }

    /// Specificity (true-negative rate) `tn / (tn + fp)`; `None` with no negative case.
    pub fn specificity(&self) -> Option<f64> {
        ratio(self.tn, self.n_neg())
    }

    /// Positive predictive value (precision) `tp / (tp + fp)`; `None` when nothing is
    /// predicted positive.
    pub fn ppv(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    /// Negative predictive value `tn / (tn + fn)`; `None` when nothing is predicted
    /// negative.
    pub fn npv(&self) -> Option<f64> {
        ratio(self.tn, self.tn + self.fn_)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_fn_under_its_short_name() {
        let c = Confusion {
            tp: 1,
            fp: 2,
            tn: 3,
            fn_: 4,
        };
        let json = serde_json::to_string(&c).expect("serialise");
        assert_eq!(json, r#"{"tp":1,"fp":2,"tn":3,"fn":4}"#);
        let back: Confusion = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, c);
    }

    #[test]
    fn empty_input_gives_no_rates() {
        let c = Confusion::at_threshold(&[], &[], 0.5).expect("valid");
        assert_eq!(c, Confusion::default());
        assert_eq!(c.accuracy(), None);
        assert_eq!(c.sensitivity(), None);
        assert_eq!(c.specificity(), None);
        assert_eq!(c.ppv(), None);
        assert_eq!(c.npv(), None);
    }

    #[test]
    fn thresholds_zero_and_one_are_allowed() {
        // score >= 0 holds for every probability: all predicted positive.
        let c = Confusion::at_threshold(&[true, false], &[0.0, 0.3], 0.0).expect("valid");
        assert_eq!((c.tp, c.fp, c.tn, c.fn_), (1, 1, 0, 0));
        // score >= 1 only for a score of exactly 1.
        let c = Confusion::at_threshold(&[true, false], &[1.0, 0.99], 1.0).expect("valid");
        assert_eq!((c.tp, c.fp, c.tn, c.fn_), (1, 0, 1, 0));
    }
}
