//! A validation set carved out of a round's training images, for early
//! stopping and threshold choice. Test images are never touched.
//!
//! Algorithm: the training images are gathered by patient, and each patient
//! is put in one class of the task: positive when any of their images is
//! positive, else negative (so a patient with images of both classes is
//! never split between fitting and validation). Within each class the
//! patients are ordered by `SHA-256("validation:<seed>:<patient_id>")` and
//! taken in that order until the class's validation images reach
//! `round(fraction × class images)` (at least one patient per class when the
//! class has two or more patients and `fraction > 0`), passing over a patient
//! whose move would leave no image of a class for fitting, and one whose
//! images would overshoot the target by more than leaving them out falls
//! short of it (a patient with many images; when no patient could be taken
//! so, the one with the fewest images is). So the split is patient-grouped,
//! stratified on the task's label, close to the fraction, and deterministic.

use crate::hash::sha256_hex;
use crate::label::Task;
use crate::manifest::Entry;
use std::collections::BTreeMap;

/// Indices into `entries` for fitting and for validation, each ascending.
pub fn carve_validation(
    entries: &[&Entry],
    task: Task,
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut by_patient: BTreeMap<&str, (bool, Vec<usize>)> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let p = by_patient.entry(e.patient_id.as_str()).or_default();
        p.0 |= task.is_positive(e.label);
        p.1.push(i);
    }
    let positives = |imgs: &[usize]| {
        imgs.iter()
            .filter(|&&i| task.is_positive(entries[i].label))
            .count()
    };
    // Images left for fitting, per class: a patient is only moved to
    // validation when both classes keep at least one image for fitting.
    let mut fit_pos = positives(&(0..entries.len()).collect::<Vec<_>>());
    let mut fit_neg = entries.len() - fit_pos;
    let mut validation = Vec::new();
    if fraction > 0.0 {
        for positive in [false, true] {
            let patients: Vec<(&str, &Vec<usize>)> = by_patient
                .iter()
                .filter(|(_, (pos, _))| *pos == positive)
                .map(|(p, (_, imgs))| (*p, imgs))
                .collect();
            if patients.len() < 2 {
                continue;
            }
            let class_images: usize = patients.iter().map(|(_, imgs)| imgs.len()).sum();
            let want = ((fraction * class_images as f64).round() as usize).max(1);
            let mut order: Vec<(String, &Vec<usize>)> = patients
                .iter()
                .map(|(p, imgs)| {
                    (
                        sha256_hex(format!("validation:{seed}:{p}").as_bytes()),
                        *imgs,
                    )
                })
                .collect();
            order.sort();
            let mut taken = 0;
            // The smallest patient passed over for overshooting.
            let mut passed_over: Option<&Vec<usize>> = None;
            for (_, imgs) in &order {
                if taken >= want {
                    break;
                }
                let pos = positives(imgs);
                let neg = imgs.len() - pos;
                if pos >= fit_pos || neg >= fit_neg {
                    continue; // the fitting set would lose a class
                }
                // (taken < want here)
                if taken + imgs.len() > want && taken + imgs.len() - want > want - taken {
                    if passed_over.is_none_or(|p| imgs.len() < p.len()) {
                        passed_over = Some(imgs);
                    }
                    continue;
                }
                validation.extend_from_slice(imgs);
                taken += imgs.len();
                fit_pos -= pos;
                fit_neg -= neg;
            }
            if let (0, Some(imgs)) = (taken, passed_over) {
                let pos = positives(imgs);
                validation.extend_from_slice(imgs);
                fit_pos -= pos;
                fit_neg -= imgs.len() - pos;
            }
        }
    }
    validation.sort_unstable();
    let mut is_val = vec![false; entries.len()];
    for &i in &validation {
        is_val[i] = true;
    }
    let fit = (0..entries.len()).filter(|&i| !is_val[i]).collect();
    (fit, validation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::Label;

    fn cohort() -> Vec<Entry> {
        let mut v = Vec::new();
        for i in 0..60 {
            let label = [Label::Normal, Label::Benign, Label::Malignant][i % 3];
            v.push(Entry::new(format!("{i}a.png"), label, format!("P{i}")));
            if i % 4 == 0 {
                v.push(Entry::new(format!("{i}b.png"), label, format!("P{i}")));
            }
        }
        v
    }

    #[test]
    fn stratified_patient_grouped_and_deterministic() {
        let entries = cohort();
        let refs: Vec<&Entry> = entries.iter().collect();
        let (fit, val) = carve_validation(&refs, Task::Screening, 0.2, 1);
        assert_eq!(fit.len() + val.len(), refs.len());
        let pos = |ix: &[usize]| {
            ix.iter()
                .filter(|&&i| Task::Screening.is_positive(refs[i].label))
                .count()
        };
        // About 20% of each class.
        let (vp, vn) = (pos(&val), val.len() - pos(&val));
        assert!((8..=10).contains(&vp), "{vp}");
        assert!((4..=6).contains(&vn), "{vn}");
        // No patient on both sides.
        for &v in &val {
            assert!(fit
                .iter()
                .all(|&f| refs[f].patient_id != refs[v].patient_id));
        }
        assert_eq!(
            carve_validation(&refs, Task::Screening, 0.2, 1),
            (fit.clone(), val.clone())
        );
        assert_ne!(carve_validation(&refs, Task::Screening, 0.2, 2).1, val);
    }

    #[test]
    fn a_patient_with_images_of_both_classes_stays_on_one_side() {
        // Every patient has a normal and a tumour image (e.g. both knees).
        let mut entries = Vec::new();
        for i in 0..40 {
            let tumour = if i % 2 == 0 {
                Label::Benign
            } else {
                Label::Malignant
            };
            entries.push(Entry::new(
                format!("{i}-l.png"),
                Label::Normal,
                format!("P{i}"),
            ));
            entries.push(Entry::new(format!("{i}-r.png"), tumour, format!("P{i}")));
        }
        // And some patients with normal images only.
        for i in 40..60 {
            entries.push(Entry::new(
                format!("{i}.png"),
                Label::Normal,
                format!("P{i}"),
            ));
        }
        let refs: Vec<&Entry> = entries.iter().collect();
        for seed in 0..20 {
            let (fit, val) = carve_validation(&refs, Task::Screening, 0.2, seed);
            assert!(!val.is_empty());
            assert_eq!(fit.len() + val.len(), refs.len());
            for &v in &val {
                assert!(
                    fit.iter()
                        .all(|&f| refs[f].patient_id != refs[v].patient_id),
                    "seed {seed}: patient {} on both sides",
                    refs[v].patient_id
                );
            }
            // Both kinds of patients are represented in validation.
            assert!(val.iter().any(|&i| refs[i].label != Label::Normal));
            let normal_only = |i: usize| refs[i].patient_id[1..].parse::<u32>().unwrap() >= 40;
            assert!(val.iter().any(|&i| normal_only(i)));
        }
    }

    #[test]
    fn fitting_keeps_both_classes_when_patients_have_both() {
        // A has a normal and a tumour image, B tumours only, C a normal one:
        // moving A would leave fitting without normal images if C goes too,
        // and moving B and A would leave it without tumours.
        let entries = [
            Entry::new("a1.png", Label::Normal, "A"),
            Entry::new("a2.png", Label::Benign, "A"),
            Entry::new("b1.png", Label::Malignant, "B"),
            Entry::new("b2.png", Label::Benign, "B"),
            Entry::new("c1.png", Label::Normal, "C"),
        ];
        let refs: Vec<&Entry> = entries.iter().collect();
        for seed in 0..50 {
            for fraction in [0.1, 0.5, 0.9] {
                let (fit, _) = carve_validation(&refs, Task::Screening, fraction, seed);
                let pos = fit
                    .iter()
                    .filter(|&&i| Task::Screening.is_positive(refs[i].label))
                    .count();
                assert!(
                    pos > 0 && pos < fit.len(),
                    "seed {seed}, {fraction}: {fit:?}"
                );
            }
        }
    }

    #[test]
    fn a_patient_with_many_images_is_passed_over_for_one_closer_to_the_fraction() {
        // Normal patients with 1, 1, 1, 1 and 16 images (20 in all) and
        // four tumour patients: 10% of the normal images is 2.
        let mut entries = Vec::new();
        for i in 0..16 {
            entries.push(Entry::new(format!("big{i}.png"), Label::Normal, "BIG"));
        }
        for p in 0..4 {
            entries.push(Entry::new(
                format!("n{p}.png"),
                Label::Normal,
                format!("N{p}"),
            ));
            entries.push(Entry::new(
                format!("t{p}.png"),
                Label::Benign,
                format!("T{p}"),
            ));
        }
        let refs: Vec<&Entry> = entries.iter().collect();
        for seed in 0..40 {
            let (fit, val) = carve_validation(&refs, Task::Screening, 0.1, seed);
            let normal = val
                .iter()
                .filter(|&&i| refs[i].label == Label::Normal)
                .count();
            assert_eq!(normal, 2, "seed {seed}: {val:?}");
            assert!(fit.iter().any(|&i| refs[i].patient_id == "BIG"));
        }
        // Only big patients: the smallest one goes (at least one patient).
        let mut entries = Vec::new();
        for (p, n) in [("A", 6), ("B", 3), ("C", 9)] {
            for i in 0..n {
                entries.push(Entry::new(format!("{p}{i}.png"), Label::Normal, p));
            }
        }
        entries.push(Entry::new("t1.png", Label::Benign, "T1"));
        entries.push(Entry::new("t2.png", Label::Benign, "T2"));
        let refs: Vec<&Entry> = entries.iter().collect();
        for seed in 0..20 {
            let (_, val) = carve_validation(&refs, Task::Screening, 0.05, seed);
            let normal: Vec<&str> = val
                .iter()
                .filter(|&&i| refs[i].label == Label::Normal)
                .map(|&i| refs[i].patient_id.as_str())
                .collect();
            assert_eq!(normal, ["B"; 3], "seed {seed}");
        }
    }

    #[test]
    fn zero_fraction_keeps_everything_for_fitting() {
        let entries = cohort();
        let refs: Vec<&Entry> = entries.iter().collect();
        let (fit, val) = carve_validation(&refs, Task::Malignancy, 0.0, 1);
        assert!(val.is_empty());
        assert_eq!(fit.len(), refs.len());
    }

    #[test]
    fn tiny_classes_keep_at_least_one_patient_for_fitting() {
        let entries = [
            Entry::new("a", Label::Benign, "p1"),
            Entry::new("b", Label::Malignant, "p2"),
            Entry::new("c", Label::Malignant, "p3"),
        ];
        let refs: Vec<&Entry> = entries.iter().collect();
        let (fit, val) = carve_validation(&refs, Task::Malignancy, 0.5, 1);
        assert_eq!(val.len(), 1);
        assert_eq!(fit.len(), 2);
    }
}
