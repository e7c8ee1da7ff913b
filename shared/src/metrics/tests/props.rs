//! Properties that hold for any data.

use proptest::prelude::*;

use crate::metrics::*;

/// Labels with scores on a coarse grid of `[0, 1]`, so ties across classes are common.
fn case() -> impl Strategy<Value = (Vec<bool>, Vec<f64>)> {
    prop::collection::vec((any::<bool>(), 0u8..=20), 0..60).prop_map(|v| {
        let labels = v.iter().map(|p| p.0).collect();
        let scores = v.iter().map(|p| f64::from(p.1) / 20.0).collect();
        (labels, scores)
    })
}

/// A case with a second score set on the same labels.
fn paired_case() -> impl Strategy<Value = (Vec<bool>, Vec<f64>, Vec<f64>)> {
    prop::collection::vec((any::<bool>(), 0u8..=20, 0u8..=20), 0..60).prop_map(|v| {
        let labels = v.iter().map(|p| p.0).collect();
        let a = v.iter().map(|p| f64::from(p.1) / 20.0).collect();
        let b = v.iter().map(|p| f64::from(p.2) / 20.0).collect();
        (labels, a, b)
    })
}

fn auc_of(labels: &[bool], scores: &[f64]) -> Option<f64> {
    auc(labels, scores).expect("valid input")
}

proptest! {
    #[test]
    fn negated_scores_give_one_minus_auc((labels, scores) in case()) {
        let neg: Vec<f64> = scores.iter().map(|s| -s).collect();
        match (auc_of(&labels, &scores), auc_of(&labels, &neg)) {
            (Some(a), Some(b)) => prop_assert!((a + b - 1.0).abs() < 1e-12),
            (a, b) => prop_assert!(a.is_none() && b.is_none()),
        }
    }

    #[test]
    fn auc_is_invariant_under_increasing_maps((labels, scores) in case()) {
        let a = auc_of(&labels, &scores);
        let exp: Vec<f64> = scores.iter().map(|s| s.exp()).collect();
        let cubic: Vec<f64> = scores.iter().map(|s| s * s * s + s).collect();
        prop_assert_eq!(a, auc_of(&labels, &exp));
        prop_assert_eq!(a, auc_of(&labels, &cubic));
    }

    #[test]
    fn swapping_classes_and_negating_keeps_auc((labels, scores) in case()) {
        let flipped: Vec<bool> = labels.iter().map(|l| !l).collect();
        let neg: Vec<f64> = scores.iter().map(|s| -s).collect();
        match (auc_of(&labels, &scores), auc_of(&flipped, &neg)) {
            (Some(a), Some(b)) => prop_assert!((a - b).abs() < 1e-12),
            (a, b) => prop_assert!(a.is_none() && b.is_none()),
        }
    }

    #[test]
    fn auc_is_the_trapezoidal_area_under_the_roc_curve((labels, scores) in case()) {
        let curve = roc_curve(&labels, &scores).expect("valid");
        match auc_of(&labels, &scores) {
            None => prop_assert!(curve.is_empty()),
            Some(a) => {
                let first = curve[0];
                let last = curve[curve.len() - 1];
                prop_assert_eq!((first.fpr, first.tpr), (0.0, 0.0));
                prop_assert_eq!((last.fpr, last.tpr), (1.0, 1.0));
                prop_assert!(curve.windows(2).all(|w| w[0].threshold > w[1].threshold
                    && w[0].fpr <= w[1].fpr && w[0].tpr <= w[1].tpr));
                let area: f64 = curve
                    .windows(2)
                    .map(|w| (w[1].fpr - w[0].fpr) * (w[1].tpr + w[0].tpr) / 2.0)
                    .sum();
                prop_assert!((area - a).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn delong_ci_contains_the_auc((labels, scores) in case(), level in 0.01f64..0.999) {
        if let Some(d) = delong(&labels, &scores).expect("valid") {
            prop_assert_eq!(Some(d.auc), auc_of(&labels, &scores));
            prop_assert!(d.variance >= 0.0);
            let (lo, hi) = d.ci(level);
            prop_assert!(0.0 <= lo && lo <= d.auc && d.auc <= hi && hi <= 1.0);
            // A wider level never gives a narrower interval.
            let (lo95, hi95) = d.ci(0.95);
            let (lo99, hi99) = d.ci(0.99);
            prop_assert!(lo99 <= lo95 && hi95 <= hi99);
        }
    }

    #[test]
    fn bootstrap_ci_is_ordered_and_deterministic(
        (labels, scores) in case(),
        seed in any::<u64>(),
        level in 0.5f64..0.99,
    ) {
        let ci = bootstrap_auc_ci(&labels, &scores, 64, level, seed).expect("valid");
        match ci {
            None => prop_assert!(auc_of(&labels, &scores).is_none()),
            Some((lo, hi)) => {
                prop_assert!(0.0 <= lo && lo <= hi && hi <= 1.0);
                let again = bootstrap_auc_ci(&labels, &scores, 64, level, seed).expect("valid");
                prop_assert_eq!(again, ci);
            }
        }
    }

    #[test]
    fn paired_delong_of_identical_scores_is_null((labels, scores) in case()) {
        if let Some(t) = paired_delong(&labels, &scores, &scores).expect("valid") {
            prop_assert_eq!(t.difference, 0.0);
            prop_assert_eq!(t.z, 0.0);
            prop_assert_eq!(t.p_value, 1.0);
            prop_assert_eq!(t.auc_a, t.auc_b);
        }
    }

    #[test]
    fn paired_delong_is_antisymmetric((labels, a, b) in paired_case()) {
        let ab = paired_delong(&labels, &a, &b).expect("valid");
        let ba = paired_delong(&labels, &b, &a).expect("valid");
        match (ab, ba) {
            (Some(ab), Some(ba)) => {
                prop_assert_eq!(ab.difference, -ba.difference);
                prop_assert!((ab.se - ba.se).abs() < 1e-12);
                prop_assert!((ab.p_value - ba.p_value).abs() < 1e-9);
                prop_assert!((0.0..=1.0).contains(&ab.p_value));
            }
            (ab, ba) => prop_assert!(ab.is_none() && ba.is_none()),
        }
    }

    #[test]
    fn confusion_rates_follow_their_definitions(
        (labels, scores) in case(),
        threshold in 0.0f64..=1.0,
    ) {
        let c = Confusion::at_threshold(&labels, &scores, threshold).expect("valid");
        let n = labels.len() as u64;
        prop_assert_eq!(c.tp + c.fp + c.tn + c.fn_, n);
        prop_assert_eq!(c.n_pos(), labels.iter().filter(|&&l| l).count() as u64);
        let predicted_pos = scores.iter().filter(|&&s| s >= threshold).count() as u64;
        prop_assert_eq!(c.tp + c.fp, predicted_pos);
        match c.accuracy() {
            None => prop_assert_eq!(n, 0),
            Some(acc) => prop_assert!((acc - (c.tp + c.tn) as f64 / n as f64).abs() < 1e-15),
        }
        for rate in [c.accuracy(), c.sensitivity(), c.specificity(), c.ppv(), c.npv()]
            .into_iter()
            .flatten()
        {
            prop_assert!((0.0..=1.0).contains(&rate));
        }
        let r = RoundStats::compute(&labels, &scores, threshold).expect("valid");
        prop_assert_eq!(r.confusion(), c);
        prop_assert_eq!(r.auc, auc_of(&labels, &scores));
    }

    #[test]
    fn one_case_per_cluster_is_plain_delong((labels, scores) in case()) {
        let own: Vec<usize> = (0..labels.len()).collect();
        let plain = delong(&labels, &scores).expect("valid");
        let clustered = clustered_delong(&labels, &scores, &own).expect("valid");
        match (plain, clustered) {
            (Some(p), Some(c)) => {
                prop_assert!((p.auc - c.auc).abs() < 1e-12);
                prop_assert!((p.variance - c.variance).abs() < 1e-12 * (1.0 + p.variance));
            }
            (p, c) => prop_assert!(p.is_none() && c.is_none()),
        }
    }

    #[test]
    fn clustered_paired_delong_with_one_case_per_cluster_is_paired_delong(
        (labels, a, b) in paired_case(),
    ) {
        let own: Vec<usize> = (0..labels.len()).collect();
        let plain = paired_delong(&labels, &a, &b).expect("valid");
        let clustered = clustered_paired_delong(&labels, &a, &b, &own).expect("valid");
        match (plain, clustered) {
            (Some(p), Some(c)) => {
                prop_assert!((p.difference - c.difference).abs() < 1e-12);
                prop_assert!((p.se - c.se).abs() < 1e-9, "{} vs {}", p.se, c.se);
                prop_assert!((p.p_value - c.p_value).abs() < 1e-9);
            }
            (p, c) => prop_assert!(p.is_none() && c.is_none()),
        }
    }

    #[test]
    fn clustered_paired_delong_against_tied_scores_is_the_clustered_variance(
        (labels, a, _) in paired_case(),
        clusters in prop::collection::vec(0usize..8, 60),
    ) {
        // All of B tied: its components are all 1/2 and drop out of the
        // difference, which then varies as A's AUC does.
        let clusters = &clusters[..labels.len()];
        let tied = vec![0.5; labels.len()];
        let paired = clustered_paired_delong(&labels, &a, &tied, clusters).expect("valid");
        let single = clustered_delong(&labels, &a, clusters).expect("valid");
        match (paired, single) {
            (Some(p), Some(s)) => {
                prop_assert!((p.auc_b - 0.5).abs() < 1e-12);
                prop_assert!((p.se * p.se - s.variance.max(0.0)).abs() < 1e-12);
            }
            (p, s) => prop_assert!(p.is_none() && s.is_none()),
        }
    }

    #[test]
    fn clustered_paired_delong_is_antisymmetric_and_keeps_repeats_as_one_case(
        (labels, a, b) in paired_case(),
        clusters in prop::collection::vec(0usize..8, 60),
        k in 2usize..4,
    ) {
        let clusters = &clusters[..labels.len()];
        let ab = clustered_paired_delong(&labels, &a, &b, clusters).expect("valid");
        let ba = clustered_paired_delong(&labels, &b, &a, clusters).expect("valid");
        // Every case k times in its own cluster: the same test.
        let rep = |v: &[f64]| v.iter().flat_map(|&x| std::iter::repeat_n(x, k)).collect::<Vec<_>>();
        let rep_labels: Vec<bool> = labels.iter().flat_map(|&x| std::iter::repeat_n(x, k)).collect();
        let rep_clusters: Vec<usize> = clusters.iter().flat_map(|&x| std::iter::repeat_n(x, k)).collect();
        let repeated = clustered_paired_delong(&rep_labels, &rep(&a), &rep(&b), &rep_clusters)
            .expect("valid");
        match (ab, ba, repeated) {
            (Some(x), Some(y), Some(r)) => {
                prop_assert!((x.difference + y.difference).abs() < 1e-12);
                prop_assert!((x.se - y.se).abs() < 1e-12);
                prop_assert!((x.p_value - y.p_value).abs() < 1e-12);
                prop_assert!((x.se - r.se).abs() < 1e-9, "{} vs {}", x.se, r.se);
            }
            (x, y, r) => prop_assert!(x.is_none() && y.is_none() && r.is_none()),
        }
    }

    #[test]
    fn repeating_each_case_in_its_own_cluster_changes_nothing(
        (labels, scores) in case(),
        k in 2usize..5,
    ) {
        // An image tested k times with the same score is one cluster.
        let own: Vec<usize> = (0..labels.len()).collect();
        let rep = |v: &[bool]| v.iter().flat_map(|&x| std::iter::repeat_n(x, k)).collect::<Vec<_>>();
        let rep_scores: Vec<f64> = scores.iter().flat_map(|&x| std::iter::repeat_n(x, k)).collect();
        let rep_clusters: Vec<usize> = own.iter().flat_map(|&x| std::iter::repeat_n(x, k)).collect();
        let once = clustered_delong(&labels, &scores, &own).expect("valid");
        let repeated = clustered_delong(&rep(&labels), &rep_scores, &rep_clusters).expect("valid");
        match (once, repeated) {
            (Some(a), Some(b)) => {
                prop_assert!((a.auc - b.auc).abs() < 1e-12);
                prop_assert!((a.variance - b.variance).abs() < 1e-12 * (1.0 + a.variance));
                // Plain DeLong on the repeats is too small by about k.
                let naive = delong(&rep(&labels), &rep_scores).expect("valid").expect("defined");
                prop_assert!(naive.variance <= a.variance + 1e-15);
            }
            (a, b) => prop_assert!(a.is_none() && b.is_none()),
        }
    }

    #[test]
    fn quantile_inverts_cdf(p in 1e-12f64..(1.0 - 1e-12)) {
        let x = normal_quantile(p);
        prop_assert!((normal_cdf(x) - p).abs() <= 1e-12 * p.min(1.0 - p) + 1e-15);
    }
}
