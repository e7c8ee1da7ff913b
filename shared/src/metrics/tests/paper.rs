//! The paper's Tables 2 and 3 (see PROTOCOL.md, "Reported results" and "What the
//! numbers show"), recomputed with this module.

use crate::metrics::*;

/// Table 3, per round: the column labelled "PPV" (in fact sensitivity, %), the column
/// labelled "NPV" (in fact specificity, %), accuracy (%), AUC.
const TABLE3: [(f64, f64, f64, f64); 10] = [
    (100.0, 0.0, 69.2, 0.63),
    (93.1, 21.9, 71.2, 0.63),
    (98.6, 0.31, 69.2, 0.58),
    (70.8, 65.5, 69.2, 0.69),
    (94.4, 21.9, 72.1, 0.55),
    (87.5, 31.3, 70.2, 0.63),
    (97.2, 15.6, 72.1, 0.54),
    (97.2, 15.6, 72.1, 0.57),
    (90.3, 34.3, 73.1, 0.73),
    (90.3, 34.4, 71.2, 0.63),
];

/// Malignant (positive) and benign test images per malignancy round.
const N_MALIGNANT: u64 = 72;
const N_BENIGN: u64 = 32;

/// A test set realising a confusion table: true positives and false positives score
/// 0.9, false negatives and true negatives 0.1.
fn realise(tp: u64, fp: u64, tn: u64, fn_: u64) -> (Vec<bool>, Vec<f64>) {
    let mut labels = Vec::new();
    let mut scores = Vec::new();
    for (count, label, score) in [
        (tp, true, 0.9),
        (fn_, true, 0.1),
        (fp, false, 0.9),
        (tn, false, 0.1),
    ] {
        for _ in 0..count {
            labels.push(label);
            scores.push(score);
        }
    }
    (labels, scores)
}

/// Round `r`'s table under the reading "PPV" = TP/72, "NPV" = TN/32.
fn round_stats(sens_pct: f64, spec_pct: f64) -> RoundStats {
    let tp = (sens_pct * N_MALIGNANT as f64 / 100.0).round() as u64;
    let tn = (spec_pct * N_BENIGN as f64 / 100.0).round() as u64;
    let (labels, scores) = realise(tp, N_BENIGN - tn, tn, N_MALIGNANT - tp);
    RoundStats::compute(&labels, &scores, 0.5).expect("valid")
}

/// A fraction as a percent to 1 decimal, rounding halves up as the paper does
/// (10/32 = 31.25 % → 31.3; `format!` alone would round the tie to even, 31.2).
fn pct1(fraction: Option<f64>) -> String {
    format!(
        "{:.1}",
        (1000.0 * fraction.expect("defined")).round() / 10.0
    )
}

#[test]
fn table3_accuracy_fits_eight_rounds_and_exposes_two_typos() {
    // Round 1: TP = 100.0 × 72/100 = 72, TN = 0 → (72 + 0)/104 = 69.2 %, as published.
    // Round 3: TP = round(70.99) = 71, TN = round(0.0992) = 0 → 71/104 = 68.3 ≠ 69.2.
    // Round 10: TP = round(65.02) = 65, TN = round(11.008) = 11 → 76/104 = 73.1 ≠ 71.2.
    for (i, &(sens, spec, acc, _)) in TABLE3.iter().enumerate() {
        let round = i + 1;
        let r = round_stats(sens, spec);
        assert_eq!((r.n_pos, r.n_neg), (72, 32));
        let ours = pct1(r.accuracy);
        let published = format!("{acc:.1}");
        if round == 3 || round == 10 {
            assert_ne!(ours, published, "round {round} should not fit");
        } else {
            assert_eq!(ours, published, "round {round}");
        }
    }
    assert_eq!(pct1(round_stats(98.6, 0.31).accuracy), "68.3");
    assert_eq!(pct1(round_stats(90.3, 34.4).accuracy), "73.1");
}

#[test]
fn table3_ppv_column_is_sensitivity() {
    // TP/72 rounds back to the published "PPV" in all ten rounds.
    for (i, &(sens, spec, _, _)) in TABLE3.iter().enumerate() {
        let r = round_stats(sens, spec);
        assert_eq!(pct1(r.sensitivity), format!("{sens:.1}"), "round {}", i + 1);
    }
    // The "NPV" column reads back as TN/32 except in round 3 (0.31, the typo), round 4
    // (TN = 21 gives 65.6, published 65.5) and round 9 (TN = 11 gives 34.375 → 34.4,
    // published 34.3, while round 10 prints the same 11/32 as 34.4).
    for (i, &(sens, spec, _, _)) in TABLE3.iter().enumerate() {
        let round = i + 1;
        let fits = pct1(round_stats(sens, spec).specificity) == format!("{spec:.1}");
        assert_eq!(fits, ![3, 4, 9].contains(&round), "round {round}");
    }
}

/// Population SD (divisor n), to show the paper did not use it.
fn population_sd(values: &[f64]) -> f64 {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (ss / values.len() as f64).sqrt()
}

#[test]
fn table3_summaries_use_the_sample_sd() {
    let ppv: Vec<f64> = TABLE3.iter().map(|r| r.0).collect();
    let npv: Vec<f64> = TABLE3.iter().map(|r| r.1).collect();
    let acc: Vec<f64> = TABLE3.iter().map(|r| r.2).collect();
    let aucs: Vec<f64> = TABLE3.iter().map(|r| r.3).collect();

    // "PPV": mean 91.94, sample SD 8.459 → 91.9 ± 8.5; population SD 8.025 → 8.0.
    let s = summarize(&ppv).expect("values");
    assert_eq!(s.n, 10);
    assert!((s.sd.expect("n >= 2") - 8.459).abs() < 5e-4);
    assert_eq!(
        format!("{:.1} ± {:.1}", s.mean, s.sd.expect("sd")),
        "91.9 ± 8.5"
    );
    assert_ne!(format!("{:.1}", population_sd(&ppv)), "8.5");
    assert_eq!((s.min, s.max), (70.8, 100.0));

    // "NPV": mean 24.081, sample SD 19.081 → 24.1 ± 19.1; population 18.102 → 18.1.
    let s = summarize(&npv).expect("values");
    assert!((s.sd.expect("n >= 2") - 19.081).abs() < 5e-4);
    assert_eq!(
        format!("{:.1} ± {:.1}", s.mean, s.sd.expect("sd")),
        "24.1 ± 19.1"
    );
    assert_ne!(format!("{:.1}", population_sd(&npv)), "19.1");

    // Accuracy: the rows average 70.96 (71.0), not the published 71.2. Their sample SD
    // is 1.43 (population 1.36), not the published 1.6 either.
    let s = summarize(&acc).expect("values");
    assert!((s.mean - 70.96).abs() < 1e-9);
    assert_ne!(format!("{:.1}", s.mean), "71.2");
    assert!((s.sd.expect("n >= 2") - 1.4323).abs() < 1e-4);

    // AUC: 0.618 ± 0.0603 → 0.62 ± 0.06, as published.
    let s = summarize(&aucs).expect("values");
    assert_eq!(
        format!("{:.2} ± {:.2}", s.mean, s.sd.expect("sd")),
        "0.62 ± 0.06"
    );
}

#[test]
fn table2_summaries() {
    // "NPV" 98.1, 100 × 4: mean 99.62, Σ dev² = 1.52² + 4 × 0.38² = 2.888,
    // SD √(2.888/4) = 0.850 → 99.6 ± 0.8.
    let s = summarize(&[98.1, 100.0, 100.0, 100.0, 100.0]).expect("values");
    assert_eq!(
        format!("{:.1} ± {:.1}", s.mean, s.sd.expect("sd")),
        "99.6 ± 0.8"
    );
    // Accuracy 99.0, 100 × 4: 99.8 ± 0.447 → 99.8 ± 0.4.
    let s = summarize(&[99.0, 100.0, 100.0, 100.0, 100.0]).expect("values");
    assert_eq!(
        format!("{:.1} ± {:.1}", s.mean, s.sd.expect("sd")),
        "99.8 ± 0.4"
    );
    // "PPV" 100 × 5: 100.0 ± 0.0.
    let s = summarize(&[100.0; 5]).expect("values");
    assert_eq!(
        format!("{:.1} ± {:.1}", s.mean, s.sd.expect("sd")),
        "100.0 ± 0.0"
    );
    // AUC 0.99, 1 × 4: mean 0.998, SD √((0.008² + 4 × 0.002²)/4) = 0.00447 → 0.998 ± 0.004.
    let s = summarize(&[0.99, 1.0, 1.0, 1.0, 1.0]).expect("values");
    assert_eq!(
        format!("{:.3} ± {:.3}", s.mean, s.sd.expect("sd")),
        "0.998 ± 0.004"
    );
}
