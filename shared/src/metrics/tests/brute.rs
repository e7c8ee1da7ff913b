//! The mid-rank DeLong against a direct O(m·n) evaluation of DeLong's structural
//! components, and the AUC against Hanley & McNeil's (1982) rating table.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::metrics::delong::placements;
use crate::metrics::*;

/// DeLong et al. (1988)'s kernel.
fn psi(x: f64, y: f64) -> f64 {
    if x > y {
        1.0
    } else if x == y {
        0.5
    } else {
        0.0
    }
}

/// Direct structural components: V10(Xᵢ) = mean over j of ψ(Xᵢ, Yⱼ),
/// V01(Yⱼ) = mean over i of ψ(Xᵢ, Yⱼ).
fn brute_components(pos: &[f64], neg: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let v10 = pos
        .iter()
        .map(|&x| neg.iter().map(|&y| psi(x, y)).sum::<f64>() / neg.len() as f64)
        .collect();
    let v01 = neg
        .iter()
        .map(|&y| pos.iter().map(|&x| psi(x, y)).sum::<f64>() / pos.len() as f64)
        .collect();
    (v10, v01)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample covariance with divisor k − 1.
fn cov(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / (a.len() - 1) as f64
}

/// Brute-force AUC and DeLong variance: θ = mean V10, Var = S10/m + S01/n.
fn brute_delong(pos: &[f64], neg: &[f64]) -> (f64, f64) {
    let (v10, v01) = brute_components(pos, neg);
    let var = cov(&v10, &v10) / pos.len() as f64 + cov(&v01, &v01) / neg.len() as f64;
    (mean(&v10), var)
}

/// Random labels and scores rounded to `levels` values, so ties are frequent.
fn random_case(rng: &mut ChaCha8Rng, len: usize, levels: u32) -> (Vec<bool>, Vec<f64>, Vec<f64>) {
    let labels: Vec<bool> = (0..len).map(|_| rng.random_bool(0.4)).collect();
    let mut score = |shift: f64, l: bool| {
        let raw = rng.random::<f64>() + if l { shift } else { 0.0 };
        (raw * levels as f64).floor() / levels as f64
    };
    let a: Vec<f64> = labels.iter().map(|&l| score(0.3, l)).collect();
    let b: Vec<f64> = labels.iter().map(|&l| score(0.1, l)).collect();
    (labels, a, b)
}

fn split(labels: &[bool], scores: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let pos = labels
        .iter()
        .zip(scores)
        .filter(|p| *p.0)
        .map(|p| *p.1)
        .collect();
    let neg = labels
        .iter()
        .zip(scores)
        .filter(|p| !*p.0)
        .map(|p| *p.1)
        .collect();
    (pos, neg)
}

#[test]
fn midrank_delong_matches_direct_components() {
    let mut rng = ChaCha8Rng::seed_from_u64(20_240_601);
    for case in 0..200 {
        let len = 4 + case % 97;
        let levels = [3, 7, 20, 1000][case % 4];
        let (labels, scores, _) = random_case(&mut rng, len, levels);
        let (pos, neg) = split(&labels, &scores);
        let fast = delong(&labels, &scores).expect("valid");
        if pos.len() < 2 || neg.len() < 2 {
            assert_eq!(fast, None);
            continue;
        }
        let fast = fast.expect("two per class");
        let (theta, var) = brute_delong(&pos, &neg);
        assert!((fast.auc - theta).abs() < 1e-12, "case {case}");
        assert!(
            (fast.variance - var).abs() < 1e-12 * (1.0 + var),
            "case {case}"
        );
        assert_eq!((fast.n_pos, fast.n_neg), (pos.len(), neg.len()));
        // The components themselves, one by one.
        let p = placements(&pos, &neg);
        let (v10, v01) = brute_components(&pos, &neg);
        assert!(p.v10.iter().zip(&v10).all(|(a, b)| (a - b).abs() < 1e-12));
        assert!(p.v01.iter().zip(&v01).all(|(a, b)| (a - b).abs() < 1e-12));
        // And the plain AUC.
        let a = auc(&labels, &scores).expect("valid").expect("defined");
        assert!((a - theta).abs() < 1e-12);
    }
}

/// Obuchowski's clustered variance straight from its definition, with
/// components from ψ over all pairs (the formulas in `clustered.rs`).
fn brute_clustered(labels: &[bool], scores: &[f64], clusters: &[usize]) -> (f64, f64) {
    let (pos, neg) = split(labels, scores);
    let (v10, v01) = brute_components(&pos, &neg);
    let theta = mean(&v10);
    let k = clusters.iter().max().map_or(0, |c| c + 1);
    let (mut sx, mut sy) = (vec![0.0; k], vec![0.0; k]);
    let (mut m, mut n) = (vec![0.0; k], vec![0.0; k]);
    let (mut i, mut j) = (0, 0);
    for (&l, &c) in labels.iter().zip(clusters) {
        if l {
            sx[c] += v10[i];
            m[c] += 1.0;
            i += 1;
        } else {
            sy[c] += v01[j];
            n[c] += 1.0;
            j += 1;
        }
    }
    let used: Vec<usize> = (0..k).filter(|&c| m[c] + n[c] > 0.0).collect();
    let count = |w: &[f64]| used.iter().filter(|&&c| w[c] > 0.0).count() as f64;
    let (i10, i01, ic) = (count(&m), count(&n), used.len() as f64);
    let (big_m, big_n) = (pos.len() as f64, neg.len() as f64);
    let dx = |c: usize| sx[c] - m[c] * theta;
    let dy = |c: usize| sy[c] - n[c] * theta;
    let s10 = i10 / ((i10 - 1.0) * big_m) * used.iter().map(|&c| dx(c) * dx(c)).sum::<f64>();
    let s01 = i01 / ((i01 - 1.0) * big_n) * used.iter().map(|&c| dy(c) * dy(c)).sum::<f64>();
    let s11 = ic / (ic - 1.0) * used.iter().map(|&c| dx(c) * dy(c)).sum::<f64>();
    (
        theta,
        s10 / big_m + s01 / big_n + 2.0 * s11 / (big_m * big_n),
    )
}

#[test]
fn clustered_delong_matches_its_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(1997);
    let mut checked = 0;
    for case in 0..200 {
        let len = 6 + case % 60;
        let (labels, scores, _) = random_case(&mut rng, len, [3, 7, 20, 1000][case % 4]);
        // Clusters of mixed classes and sizes: 1 to len/2 of them.
        let k = 1 + rng.random_range(0..len / 2);
        let clusters: Vec<usize> = (0..len).map(|_| rng.random_range(0..k)).collect();
        let Some(fast) = clustered_delong(&labels, &scores, &clusters).expect("valid") else {
            continue;
        };
        let (theta, var) = brute_clustered(&labels, &scores, &clusters);
        assert!((fast.auc - theta).abs() < 1e-12, "case {case}");
        assert!(
            (fast.variance - var).abs() < 1e-12 * (1.0 + var.abs()),
            "case {case}: {} vs {var}",
            fast.variance
        );
        checked += 1;
    }
    assert!(
        checked > 150,
        "only {checked} cases had two clusters per class"
    );
}

#[test]
fn paired_delong_matches_direct_covariance() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for case in 0..100 {
        let (labels, a, b) = random_case(&mut rng, 10 + case, [4, 10, 50][case % 3]);
        let Some(t) = paired_delong(&labels, &a, &b).expect("valid") else {
            continue;
        };
        let (pa, na) = split(&labels, &a);
        let (pb, nb) = split(&labels, &b);
        let (v10a, v01a) = brute_components(&pa, &na);
        let (v10b, v01b) = brute_components(&pb, &nb);
        let (m, n) = (pa.len() as f64, na.len() as f64);
        // DeLong (1988): S = S10/m + S01/n as 2 × 2 covariance matrices;
        // Var(θa − θb) = S_aa + S_bb − 2 S_ab.
        let s_aa = cov(&v10a, &v10a) / m + cov(&v01a, &v01a) / n;
        let s_bb = cov(&v10b, &v10b) / m + cov(&v01b, &v01b) / n;
        let s_ab = cov(&v10a, &v10b) / m + cov(&v01a, &v01b) / n;
        let var = s_aa + s_bb - 2.0 * s_ab;
        let diff = mean(&v10a) - mean(&v10b);
        assert!((t.difference - diff).abs() < 1e-12, "case {case}");
        assert!((t.se * t.se - var).abs() < 1e-12, "case {case}");
        if var > 1e-12 {
            let z = diff / var.sqrt();
            assert!((t.z - z).abs() < 1e-8 * (1.0 + z.abs()), "case {case}");
            // p = 2(1 − Φ(|z|)) from the CDF directly.
            let p = 2.0 * (1.0 - normal_cdf(z.abs()));
            assert!((t.p_value - p).abs() < 1e-9, "case {case}");
        }
    }
}

/// Hanley & McNeil (1982), Radiology 143:29, Table 1: 109 CT images rated on a 5-point
/// scale (1 = definitely normal … 5 = definitely abnormal).
fn hanley_mcneil() -> (Vec<bool>, Vec<f64>) {
    let normals = [33, 6, 6, 11, 2]; // n = 58
    let abnormals = [3, 2, 2, 11, 33]; // n = 51
    let mut labels = Vec::new();
    let mut scores = Vec::new();
    for (rating, (&nn, &na)) in normals.iter().zip(&abnormals).enumerate() {
        for _ in 0..nn {
            labels.push(false);
            scores.push(rating as f64 + 1.0);
        }
        for _ in 0..na {
            labels.push(true);
            scores.push(rating as f64 + 1.0);
        }
    }
    (labels, scores)
}

#[test]
fn hanley_mcneil_rating_table_gives_0_893() {
    // Pairs (abnormal, normal) won + ½ tied, rating by rating:
    //   1: 3 × (0 below + 33/2)  =   49.5
    //   2: 2 × (33 + 6/2)        =   72
    //   3: 2 × (39 + 6/2)        =   84
    //   4: 11 × (45 + 11/2)      =  555.5
    //   5: 33 × (56 + 2/2)       = 1881
    // total 2642 of 51 × 58 = 2958 pairs → 0.89317, the paper's W = 0.893.
    let (labels, scores) = hanley_mcneil();
    assert_eq!(labels.len(), 109);
    let a = auc(&labels, &scores).expect("valid").expect("defined");
    assert!((a - 2642.0 / 2958.0).abs() < 1e-12);
    assert_eq!(format!("{a:.3}"), "0.893");
    // DeLong's variance on the same table agrees with the direct components. (Hanley &
    // McNeil's own SE, 0.032, comes from their exponential approximation, a different
    // estimator, so it is not compared here.)
    let d = delong(&labels, &scores).expect("valid").expect("defined");
    let (pos, neg) = split(&labels, &scores);
    let (_, var) = brute_delong(&pos, &neg);
    assert!((d.variance - var).abs() < 1e-15);
    // Area under the ROC curve by trapezoids: the 5 ratings give 5 points + origin.
    let curve = roc_curve(&labels, &scores).expect("valid");
    assert_eq!(curve.len(), 6);
    let area: f64 = curve
        .windows(2)
        .map(|w| (w[1].fpr - w[0].fpr) * (w[1].tpr + w[0].tpr) / 2.0)
        .sum();
    assert!((area - a).abs() < 1e-12);
}
