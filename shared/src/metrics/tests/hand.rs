//! Small cases worked out by hand, and the error variants.

use crate::metrics::*;

const LABELS: [bool; 6] = [true, true, false, false, true, false];
const SCORES: [f64; 6] = [0.9, 0.4, 0.4, 0.2, 0.7, 0.6];

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn auc_by_counting_pairs() {
    // Positives 0.9, 0.4, 0.7; negatives 0.4, 0.2, 0.6; 3 × 3 = 9 pairs.
    //   0.9 beats 0.4, 0.2, 0.6              → 3
    //   0.4 ties 0.4 (½), beats 0.2, loses 0.6 → 1.5
    //   0.7 beats 0.4, 0.2, 0.6              → 3
    // AUC = 7.5 / 9 = 5/6.
    let a = auc(&LABELS, &SCORES).expect("valid").expect("defined");
    assert!(close(a, 5.0 / 6.0), "{a}");
}

#[test]
fn confusion_at_half() {
    // score >= 0.5: 0.9 (pos), 0.7 (pos), 0.6 (neg) → TP 2, FP 1
    // score <  0.5: 0.4 (pos) → FN 1; 0.4, 0.2 (neg) → TN 2
    let c = Confusion::at_threshold(&LABELS, &SCORES, 0.5).expect("valid");
    assert_eq!((c.tp, c.fp, c.tn, c.fn_), (2, 1, 2, 1));
    assert_eq!((c.n_pos(), c.n_neg()), (3, 3));
    assert!(close(c.accuracy().expect("n > 0"), 4.0 / 6.0)); // (2 + 2) / 6
    assert!(close(c.sensitivity().expect("pos"), 2.0 / 3.0)); // 2 / (2 + 1)
    assert!(close(c.specificity().expect("neg"), 2.0 / 3.0)); // 2 / (2 + 1)
    assert!(close(c.ppv().expect("pred pos"), 2.0 / 3.0)); // 2 / (2 + 1)
    assert!(close(c.npv().expect("pred neg"), 2.0 / 3.0)); // 2 / (2 + 1)
}

#[test]
fn confusion_counts_ties_at_the_threshold_as_positive() {
    // score >= 0.4: 0.9, 0.4, 0.7 (pos) → TP 3; 0.4, 0.6 (neg) → FP 2
    // score <  0.4: 0.2 (neg) → TN 1; FN 0
    let c = Confusion::at_threshold(&LABELS, &SCORES, 0.4).expect("valid");
    assert_eq!((c.tp, c.fp, c.tn, c.fn_), (3, 2, 1, 0));
    assert!(close(c.accuracy().expect("n > 0"), 4.0 / 6.0)); // (3 + 1) / 6
    assert_eq!(c.sensitivity(), Some(1.0)); // 3 / 3
    assert!(close(c.specificity().expect("neg"), 1.0 / 3.0)); // 1 / 3
    assert!(close(c.ppv().expect("pred pos"), 3.0 / 5.0)); // 3 / (3 + 2)
    assert_eq!(c.npv(), Some(1.0)); // 1 / (1 + 0)
}

#[test]
fn no_predicted_positive_leaves_ppv_undefined() {
    // Every score < 0.95: TP = FP = 0 → PPV = 0/0; sensitivity is 0/3, a real 0.
    let c = Confusion::at_threshold(&LABELS, &SCORES, 0.95).expect("valid");
    assert_eq!((c.tp, c.fp, c.tn, c.fn_), (0, 0, 3, 3));
    assert_eq!(c.ppv(), None);
    assert_eq!(c.sensitivity(), Some(0.0));
    assert_eq!(c.specificity(), Some(1.0));
    assert_eq!(c.npv(), Some(0.5)); // 3 / (3 + 3)
}

#[test]
fn one_class_leaves_auc_and_its_rates_undefined() {
    let labels = [true, true, true];
    let scores = [0.2, 0.5, 0.8];
    assert_eq!(auc(&labels, &scores).expect("valid"), None);
    assert_eq!(delong(&labels, &scores).expect("valid"), None);
    assert_eq!(
        paired_delong(&labels, &scores, &scores).expect("valid"),
        None
    );
    assert!(roc_curve(&labels, &scores).expect("valid").is_empty());
    let c = Confusion::at_threshold(&labels, &scores, 0.5).expect("valid");
    assert_eq!(c.specificity(), None);
    assert!(close(c.sensitivity().expect("pos"), 2.0 / 3.0));
    let r = RoundStats::compute(&labels, &scores, 0.5).expect("valid");
    assert_eq!((r.auc, r.auc_ci_low, r.auc_ci_high), (None, None, None));
    assert_eq!(auc(&[], &[]).expect("valid"), None);
}

#[test]
fn roc_curve_by_hand() {
    // Distinct scores, descending: 0.9 (P), 0.7 (P), 0.6 (N), 0.4 (P + N), 0.2 (N).
    // Cumulative (tp, fp) of 3 P and 3 N: (1,0), (2,0), (2,1), (3,2), (3,3).
    let expected = [
        (f64::INFINITY, 0.0, 0.0),
        (0.9, 0.0, 1.0 / 3.0),
        (0.7, 0.0, 2.0 / 3.0),
        (0.6, 1.0 / 3.0, 2.0 / 3.0),
        (0.4, 2.0 / 3.0, 1.0), // the tie: one diagonal step
        (0.2, 1.0, 1.0),
    ];
    let curve = roc_curve(&LABELS, &SCORES).expect("valid");
    assert_eq!(curve.len(), expected.len());
    for (p, (t, fpr, tpr)) in curve.iter().zip(expected) {
        assert_eq!(p.threshold, t);
        assert!(close(p.fpr, fpr) && close(p.tpr, tpr), "{p:?}");
    }
    // Trapezoids: 1/3·(2/3) + 1/3·(2/3 + 1)/2 + 1/3·1 = 4/18 + 5/18 + 6/18 = 5/6 = AUC.
    let area: f64 = curve
        .windows(2)
        .map(|w| (w[1].fpr - w[0].fpr) * (w[1].tpr + w[0].tpr) / 2.0)
        .sum();
    assert!(close(area, 5.0 / 6.0));
}

#[test]
fn length_mismatch_names_both_lengths() {
    let err = auc(&[true, false, true], &[0.1, 0.2]).expect_err("mismatch");
    assert_eq!(
        err,
        MetricsError::LengthMismatch {
            labels: 3,
            scores: 2
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("3 labels") && msg.contains("2 scores"),
        "{msg}"
    );
    // Every entry point checks it, paired_delong on both score sets.
    assert!(roc_curve(&[true], &[]).is_err());
    assert!(delong(&[true], &[]).is_err());
    assert!(Confusion::at_threshold(&[true], &[], 0.5).is_err());
    assert!(RoundStats::compute(&[true], &[], 0.5).is_err());
    assert!(bootstrap_auc_ci(&[true], &[], 10, 0.95, 0).is_err());
    let err = paired_delong(&[true, false], &[0.1, 0.2], &[0.1]).expect_err("b short");
    assert_eq!(
        err,
        MetricsError::LengthMismatch {
            labels: 2,
            scores: 1
        }
    );
}

#[test]
fn non_finite_score_names_index_and_value() {
    let err = auc(&[true, false, true], &[0.1, f64::NAN, 0.3]).expect_err("NaN");
    assert!(matches!(err, MetricsError::NonFiniteScore { index: 1, value } if value.is_nan()));
    let msg = err.to_string();
    assert!(msg.contains("index 1") && msg.contains("NaN"), "{msg}");
    let err = delong(&[true, false], &[f64::INFINITY, 0.3]).expect_err("inf");
    assert_eq!(
        err,
        MetricsError::NonFiniteScore {
            index: 0,
            value: f64::INFINITY
        }
    );
    assert!(err.to_string().contains("inf"));
    let err = paired_delong(&[true, false], &[0.1, 0.2], &[0.1, f64::NEG_INFINITY])
        .expect_err("-inf in b");
    assert!(matches!(err, MetricsError::NonFiniteScore { index: 1, .. }));
}

#[test]
fn bad_threshold_names_the_value() {
    for t in [1.5, -0.01] {
        let err = Confusion::at_threshold(&[true], &[0.5], t).expect_err("outside");
        assert_eq!(err, MetricsError::InvalidThreshold { threshold: t });
        assert!(err.to_string().contains(&t.to_string()), "{err}");
    }
    let err = RoundStats::compute(&[true], &[0.5], f64::NAN).expect_err("NaN");
    assert!(matches!(err, MetricsError::InvalidThreshold { threshold } if threshold.is_nan()));
    assert!(err.to_string().contains("NaN"));
}

/// Obuchowski's variance worked by hand. Clusters A: (+0.9, −0.2), B: +0.4,
/// C: −0.5, D: (+0.6, −0.6). V10 = 1, 1/3, 5/6 (A, B, D); V01 = 1, 2/3, 1/2
/// (A, C, D); θ = 6.5/9 = 13/18. Deviations from mᵢθ and nᵢθ, in 18ths:
/// dx = 5, −7, 0, 2 and dy = 5, 0, −1, −4 (A, B, C, D). With I = 4,
/// I10 = I01 = 3, M = N = 3:
/// S10 = 3/(2·3) · 78/324 = 39/324, S01 = 3/(2·3) · 42/324 = 21/324,
/// S11 = 4/3 · 17/324 = 68/972, and
/// Var = 39/972 + 21/972 + 2·68/(972·9) = 169/2187.
/// Plain DeLong on the same cases: 39/972 + 21/972 = 5/81, smaller: the two
/// cases of A (and of D) are positively correlated.
#[test]
fn clustered_delong_by_hand() {
    let labels = [true, false, true, false, true, false];
    let scores = [0.9, 0.2, 0.4, 0.5, 0.6, 0.6];
    let clusters = ["A", "A", "B", "C", "D", "D"];
    let c = clustered_delong(&labels, &scores, &clusters)
        .unwrap()
        .unwrap();
    assert!(close(c.auc, 13.0 / 18.0));
    assert!(close(c.variance, 169.0 / 2187.0), "{}", c.variance);
    assert_eq!((c.n_pos, c.n_neg), (3, 3));
    let plain = delong(&labels, &scores).unwrap().unwrap();
    assert!(close(plain.variance, 5.0 / 81.0), "{}", plain.variance);
    // Fewer than two clusters with a negative: undefined.
    let one = ["A", "A", "B", "A", "D", "A"];
    assert_eq!(clustered_delong(&labels, &scores, &one), Ok(None));
    assert_eq!(
        clustered_delong(&labels, &scores, &clusters[..5]),
        Err(MetricsError::ClusterCount {
            cases: 6,
            clusters: 5
        })
    );
}
