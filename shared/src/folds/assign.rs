//! Patient-grouped, label-stratified assignment of images to groups.

use super::FoldsError;
use crate::hash::sha256_hex;
use crate::label::Label;
use crate::manifest::Entry;
use std::collections::BTreeMap;

/// Assign every image to one of `groups` groups (see the module docs of
/// [`crate::folds`] for the algorithm). Returns the group of each entry, in
/// entry order.
pub fn assign_groups(
    entries: &[Entry],
    groups: usize,
    seed: u64,
) -> Result<Vec<usize>, FoldsError> {
    // patient -> (label, image indices), checking labels agree.
    let mut patients: BTreeMap<&str, (Label, Vec<usize>)> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let slot = patients
            .entry(&e.patient_id)
            .or_insert((e.label, Vec::new()));
        if slot.0 != e.label {
            let first = &entries[slot.1[0]];
            return Err(FoldsError::ConflictingLabels {
                patient: e.patient_id.clone(),
                first: first.label.to_string(),
                first_path: first.path.clone(),
                second: e.label.to_string(),
                second_path: e.path.clone(),
            });
        }
        slot.1.push(i);
    }
    if patients.len() < groups {
        return Err(FoldsError::TooFewPatients {
            groups,
            patients: patients.len(),
        });
    }
    let mut per_label = vec![[0usize; 3]; groups];
    let mut total = vec![0usize; groups];
    let mut out = vec![0usize; entries.len()];
    for (li, label) in Label::ALL.iter().enumerate() {
        let mut ps: Vec<(usize, String, &Vec<usize>)> = patients
            .iter()
            .filter(|(_, (l, _))| l == label)
            .map(|(id, (_, imgs))| {
                (
                    imgs.len(),
                    sha256_hex(format!("{seed}:{id}").as_bytes()),
                    imgs,
                )
            })
            .collect();
        ps.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (n, _, imgs) in ps {
            let g = (0..groups)
                .min_by_key(|&g| (per_label[g][li], total[g], g))
                .unwrap_or(0);
            per_label[g][li] += n;
            total[g] += n;
            for &i in imgs {
                out[i] = g;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(normal: usize, benign: usize, malignant: usize) -> Vec<Entry> {
        let mut v = Vec::new();
        for (label, n) in [
            (Label::Normal, normal),
            (Label::Benign, benign),
            (Label::Malignant, malignant),
        ] {
            for i in 0..n {
                v.push(Entry::new(
                    format!("{label}/{i}.png"),
                    label,
                    format!("{label}-{i}"),
                ));
            }
        }
        v
    }

    fn counts(entries: &[Entry], g: &[usize], groups: usize) -> Vec<[usize; 3]> {
        let mut c = vec![[0; 3]; groups];
        for (e, &gi) in entries.iter().zip(g) {
            c[gi][Label::ALL.iter().position(|l| *l == e.label).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn papers_cohort_gives_52_16_36_per_group() {
        let entries = cohort(260, 80, 180);
        let g = assign_groups(&entries, 5, 2021).unwrap();
        assert_eq!(counts(&entries, &g, 5), vec![[52, 16, 36]; 5]);
    }

    #[test]
    fn uneven_cohorts_are_balanced_within_one() {
        let entries = cohort(263, 81, 177);
        let g = assign_groups(&entries, 5, 1).unwrap();
        let c = counts(&entries, &g, 5);
        for li in 0..3 {
            let v: Vec<usize> = c.iter().map(|x| x[li]).collect();
            assert!(
                v.iter().max().unwrap() - v.iter().min().unwrap() <= 1,
                "{c:?}"
            );
        }
        let totals: Vec<usize> = c.iter().map(|x| x.iter().sum()).collect();
        assert!(
            totals.iter().max().unwrap() - totals.iter().min().unwrap() <= 1,
            "{totals:?}"
        );
    }

    #[test]
    fn patients_stay_together() {
        let mut entries = Vec::new();
        for p in 0..40 {
            let label = Label::ALL[p % 3];
            for v in 0..(1 + p % 3) {
                entries.push(Entry::new(format!("{p}_{v}.png"), label, format!("P{p}")));
            }
        }
        let g = assign_groups(&entries, 4, 7).unwrap();
        for (i, a) in entries.iter().enumerate() {
            for (j, b) in entries.iter().enumerate() {
                if a.patient_id == b.patient_id {
                    assert_eq!(g[i], g[j]);
                }
            }
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_different_across_seeds() {
        let entries = cohort(30, 10, 20);
        let a = assign_groups(&entries, 5, 3).unwrap();
        let mut shuffled = entries.clone();
        shuffled.reverse();
        let b = assign_groups(&shuffled, 5, 3).unwrap();
        // Same patient -> same group whatever the row order.
        for (i, e) in entries.iter().enumerate() {
            let j = shuffled.iter().position(|x| x.path == e.path).unwrap();
            assert_eq!(a[i], b[j]);
        }
        assert_ne!(a, assign_groups(&entries, 5, 4).unwrap());
    }

    #[test]
    fn conflicting_labels_and_tiny_cohorts_are_refused() {
        let mut entries = cohort(3, 0, 0);
        entries[1].patient_id = entries[0].patient_id.clone();
        entries[1].label = Label::Benign;
        assert!(matches!(
            assign_groups(&entries, 2, 0),
            Err(FoldsError::ConflictingLabels { .. })
        ));
        assert!(matches!(
            assign_groups(&cohort(2, 1, 0), 5, 0),
            Err(FoldsError::TooFewPatients {
                groups: 5,
                patients: 3
            })
        ));
    }
}
