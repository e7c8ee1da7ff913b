//! Threshold choice by Youden's J on a validation set.

use super::{roc_curve, MetricsError};

/// The threshold that maximises Youden's J = sensitivity + specificity − 1
/// over the empirical ROC curve (rule: positive iff score >= threshold).
/// Ties in J go to the threshold closest to 0.5, then the higher one, so the
/// choice is deterministic. `None` when one class is missing, or when no
/// threshold separates the classes at all (J <= 0 at every threshold: tied
/// scores, or a model that ranks no better than chance): a threshold
/// chosen then would call almost every case positive, for no reason.
pub fn youden_threshold(labels: &[bool], scores: &[f64]) -> Result<Option<f64>, MetricsError> {
    let curve = roc_curve(labels, scores)?;
    let mut best: Option<(f64, f64)> = None; // (j, threshold)
    for p in curve.iter().filter(|p| p.threshold.is_finite()) {
        let j = p.tpr - p.fpr;
        let better = match best {
            None => true,
            Some((bj, bt)) => {
                j > bj + 1e-12
                    || ((j - bj).abs() <= 1e-12
                        && ((p.threshold - 0.5).abs() < (bt - 0.5).abs()
                            || ((p.threshold - 0.5).abs() == (bt - 0.5).abs() && p.threshold > bt)))
            }
        };
        if better {
            best = Some((j, p.threshold));
        }
    }
    Ok(best.filter(|&(j, _)| j > 1e-12).map(|(_, t)| t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_worked_case() {
        // Positives 0.9, 0.6, 0.35; negatives 0.5, 0.3, 0.1.
        // t = 0.6: sens 2/3, spec 1 -> J = 0.667; t = 0.35: sens 1, spec 2/3 -> 0.667;
        // t = 0.9: J = 0.333; t = 0.5: sens 2/3, spec 2/3 -> 0.333.
        // Tie between 0.6 and 0.35: 0.6 is closer to 0.5.
        let labels = [true, true, true, false, false, false];
        let scores = [0.9, 0.6, 0.35, 0.5, 0.3, 0.1];
        assert_eq!(youden_threshold(&labels, &scores).unwrap(), Some(0.6));
    }

    #[test]
    fn perfect_separation_picks_the_lowest_positive() {
        let labels = [true, true, false, false];
        let scores = [0.8, 0.7, 0.2, 0.1];
        assert_eq!(youden_threshold(&labels, &scores).unwrap(), Some(0.7));
    }

    #[test]
    fn no_separation_gives_none() {
        // All tied: J = 0 at the only threshold.
        let labels = [true, false, true, false];
        assert_eq!(youden_threshold(&labels, &[0.4; 4]).unwrap(), None);
        // Every negative above every positive: J <= 0 everywhere.
        let scores = [0.1, 0.9, 0.2, 0.8];
        assert_eq!(youden_threshold(&labels, &scores).unwrap(), None);
        // One pair ranked right is enough.
        let scores = [0.9, 0.8, 0.2, 0.1];
        assert_eq!(youden_threshold(&labels, &scores).unwrap(), Some(0.2));
    }

    #[test]
    fn one_class_gives_none() {
        assert_eq!(youden_threshold(&[true, true], &[0.1, 0.2]).unwrap(), None);
    }
}
