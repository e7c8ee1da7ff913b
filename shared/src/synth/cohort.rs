//! The cohort: who the synthetic subjects are.
//!
//! Demographics follow Table 1 of the study (see `PROTOCOL.md`): for each
//! label the subtype, site and sex counts are the table's proportions scaled
//! to the requested number of images and rounded by largest remainder (so the
//! default 260/80/180 cohort reproduces the table exactly); they are dealt out
//! to subjects in a seeded random order, independently of each other. Ages are
//! drawn from a per-subtype prior (osteosarcoma and Ewing sarcoma in the
//! young, chondrosarcoma older, ...) and then shifted and scaled per label so
//! that the label's mean and SD match the table, clipped to 5..85 years. The
//! acquiring center is dealt out in equal thirds within each label, so it
//! carries no information about the label. Finally the subjects of all labels
//! are shuffled together and numbered `P0001`, `P0002`, ... in that order, so
//! a patient id says nothing about the label either.

use super::demographics::{table, Table};
pub use super::demographics::{Sex, Site, Subtype, AGE_RANGE, CENTERS};
use super::{seeded_rng, SynthConfig, STREAM_COHORT};
use crate::label::Label;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::StandardNormal;

/// One synthetic patient.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// Position in the cohort (0-based); `patient_id` is `P` + index + 1.
    pub index: usize,
    pub patient_id: String,
    pub label: Label,
    /// `None` for normal knees.
    pub subtype: Option<Subtype>,
    /// `None` for normal knees.
    pub site: Option<Site>,
    /// Whole years.
    pub age: f64,
    pub sex: Sex,
    /// Index into [`CENTERS`].
    pub center: usize,
}

/// Split `total` into parts proportional to `weights` by the largest
/// remainder method; ties go to the earlier part.
pub fn allocate(total: usize, weights: &[f64]) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let quotas: Vec<f64> = weights.iter().map(|w| w / sum * total as f64).collect();
    let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = quotas[a] - quotas[a].floor();
        let rb = quotas[b] - quotas[b].floor();
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let missing = total - counts.iter().sum::<usize>();
    for &k in order.iter().take(missing) {
        counts[k] += 1;
    }
    counts
}

/// `counts[k]` copies of `items[k]`, in a seeded random order.
fn deal<T: Copy, R: Rng>(rng: &mut R, items: &[T], counts: &[usize]) -> Vec<T> {
    let mut out: Vec<T> = items
        .iter()
        .zip(counts)
        .flat_map(|(&item, &n)| std::iter::repeat_n(item, n))
        .collect();
    out.shuffle(rng);
    out
}

fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// Ages for one label: per-subject priors, then repeatedly shifted/scaled to
/// the target moments and clipped to [`AGE_RANGE`], then rounded.
fn draw_ages<R: Rng>(rng: &mut R, subtypes: &[Option<Subtype>], t: &Table) -> Vec<f64> {
    let mut ages: Vec<f64> = subtypes
        .iter()
        .map(|s| {
            let z: f64 = rng.sample(StandardNormal);
            let (m, sd) = match s {
                Some(Subtype::Osteosarcoma) if rng.random::<f64>() < 0.12 => (62.0, 10.0),
                Some(s) => s.age_prior(),
                None => (t.age_mean, t.age_sd),
            };
            m + sd * z
        })
        .collect();
    if ages.len() < 2 {
        return ages
            .iter()
            .map(|_| t.age_mean.round().clamp(AGE_RANGE.0, AGE_RANGE.1))
            .collect();
    }
    for _ in 0..30 {
        let (m, sd) = mean_sd(&ages);
        let scale = if sd > 1e-9 { t.age_sd / sd } else { 1.0 };
        for a in &mut ages {
            *a = (t.age_mean + (*a - m) * scale).clamp(AGE_RANGE.0, AGE_RANGE.1);
        }
    }
    ages.iter().map(|a| a.round()).collect()
}

/// Draw the whole cohort for `cfg` (no images): deterministic in the seed.
pub fn draw_cohort(cfg: &SynthConfig) -> Vec<Subject> {
    let mut rng = seeded_rng(cfg.seed, STREAM_COHORT, 0, 0);
    let mut subjects = Vec::with_capacity(cfg.normal + cfg.benign + cfg.malignant);
    for label in Label::ALL {
        let n = cfg.count(label);
        if n == 0 {
            continue;
        }
        let t = table(label);
        let subtypes: Vec<Option<Subtype>> = if t.subtypes.is_empty() {
            vec![None; n]
        } else {
            let items: Vec<Option<Subtype>> = t.subtypes.iter().map(|(s, _)| Some(*s)).collect();
            let w: Vec<f64> = t.subtypes.iter().map(|(_, w)| *w).collect();
            deal(&mut rng, &items, &allocate(n, &w))
        };
        let sites: Vec<Option<Site>> = if t.sites.is_empty() {
            vec![None; n]
        } else {
            let items: Vec<Option<Site>> = t.sites.iter().map(|(s, _)| Some(*s)).collect();
            let w: Vec<f64> = t.sites.iter().map(|(_, w)| *w).collect();
            deal(&mut rng, &items, &allocate(n, &w))
        };
        let sexes = deal(&mut rng, &[Sex::Male, Sex::Female], &allocate(n, &t.sexes));
        let centers = deal(&mut rng, &[0usize, 1, 2], &allocate(n, &[1.0, 1.0, 1.0]));
        let ages = draw_ages(&mut rng, &subtypes, &t);
        for k in 0..n {
            subjects.push(Subject {
                index: 0,
                patient_id: String::new(),
                label,
                subtype: subtypes[k],
                site: sites[k],
                age: ages[k],
                sex: sexes[k],
                center: centers[k],
            });
        }
    }
    subjects.shuffle(&mut rng);
    for (i, s) in subjects.iter_mut().enumerate() {
        s.index = i;
        s.patient_id = format!("P{:04}", i + 1);
    }
    subjects
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count<T: PartialEq>(xs: impl Iterator<Item = T>, x: T) -> usize {
        xs.filter(|v| *v == x).count()
    }

    #[test]
    fn largest_remainder_allocation_sums_and_scales() {
        assert_eq!(
            allocate(180, &[133.0, 20.0, 5.0, 22.0]),
            vec![133, 20, 5, 22]
        );
        assert_eq!(allocate(18, &[133.0, 20.0, 5.0, 22.0]), vec![13, 2, 1, 2]);
        assert_eq!(allocate(10, &[1.0, 1.0, 1.0]), vec![4, 3, 3]);
        assert_eq!(allocate(0, &[1.0, 2.0]), vec![0, 0]);
    }

    #[test]
    fn default_cohort_reproduces_table_1() {
        let cohort = draw_cohort(&SynthConfig::default());
        assert_eq!(cohort.len(), 520);
        let of = |l: Label| cohort.iter().filter(move |s| s.label == l);
        assert_eq!(of(Label::Normal).count(), 260);
        assert_eq!(of(Label::Benign).count(), 80);
        assert_eq!(of(Label::Malignant).count(), 180);
        let m = || of(Label::Malignant);
        let b = || of(Label::Benign);
        let st = |s: Subtype| Some(s);
        assert_eq!(
            count(m().map(|s| s.subtype), st(Subtype::Osteosarcoma)),
            133
        );
        assert_eq!(
            count(m().map(|s| s.subtype), st(Subtype::Chondrosarcoma)),
            20
        );
        assert_eq!(count(m().map(|s| s.subtype), st(Subtype::EwingSarcoma)), 5);
        assert_eq!(
            count(m().map(|s| s.subtype), st(Subtype::OtherMalignant)),
            22
        );
        assert_eq!(
            count(b().map(|s| s.subtype), st(Subtype::GiantCellTumour)),
            36
        );
        assert_eq!(
            count(b().map(|s| s.subtype), st(Subtype::NonOssifyingFibroma)),
            15
        );
        assert_eq!(count(b().map(|s| s.subtype), st(Subtype::Chondroma)), 10);
        assert_eq!(count(b().map(|s| s.subtype), st(Subtype::OtherBenign)), 19);
        let sites = [
            (Site::DistalFemur, 91, 29),
            (Site::ProximalTibia, 76, 43),
            (Site::ProximalFibula, 13, 8),
        ];
        for (site, nm, nb) in sites {
            assert_eq!(count(m().map(|s| s.site), Some(site)), nm, "{site:?}");
            assert_eq!(count(b().map(|s| s.site), Some(site)), nb, "{site:?}");
        }
        for (label, males, females) in [
            (Label::Malignant, 88, 92),
            (Label::Benign, 41, 39),
            (Label::Normal, 122, 138),
        ] {
            assert_eq!(count(of(label).map(|s| s.sex), Sex::Male), males);
            assert_eq!(count(of(label).map(|s| s.sex), Sex::Female), females);
        }
        assert!(of(Label::Normal).all(|s| s.site.is_none() && s.subtype.is_none()));
    }

    #[test]
    fn default_cohort_ages_match_table_1() {
        let cohort = draw_cohort(&SynthConfig::default());
        for (label, mean, sd) in [
            (Label::Malignant, 24.5, 17.8),
            (Label::Benign, 29.4, 16.3),
            (Label::Normal, 36.1, 15.6),
        ] {
            let ages: Vec<f64> = cohort
                .iter()
                .filter(|s| s.label == label)
                .map(|s| s.age)
                .collect();
            let (m, s) = mean_sd(&ages);
            assert!((m - mean).abs() < 0.5, "{label}: mean {m} vs {mean}");
            assert!((s - sd).abs() < 1.0, "{label}: sd {s} vs {sd}");
            assert!(ages
                .iter()
                .all(|a| (AGE_RANGE.0..=AGE_RANGE.1).contains(a) && a.fract() == 0.0));
        }
        // The subtype priors survive the rescaling: osteosarcoma patients are
        // younger than chondrosarcoma patients on average.
        let mean_of = |t: Subtype| {
            let a: Vec<f64> = cohort
                .iter()
                .filter(|s| s.subtype == Some(t))
                .map(|s| s.age)
                .collect();
            mean_sd(&a).0
        };
        assert!(mean_of(Subtype::Osteosarcoma) + 10.0 < mean_of(Subtype::Chondrosarcoma));
    }

    #[test]
    fn ids_are_unique_ordered_and_do_not_sort_by_label() {
        let cohort = draw_cohort(&SynthConfig::default());
        for (i, s) in cohort.iter().enumerate() {
            assert_eq!(s.index, i);
            assert_eq!(s.patient_id, format!("P{:04}", i + 1));
        }
        let first_20: Vec<Label> = cohort.iter().take(20).map(|s| s.label).collect();
        assert!(first_20.iter().any(|l| *l != first_20[0]));
        // Centers are balanced within each label.
        for label in Label::ALL {
            let n = cohort.iter().filter(|s| s.label == label).count();
            for c in 0..3 {
                let k = cohort
                    .iter()
                    .filter(|s| s.label == label && s.center == c)
                    .count();
                assert!(k.abs_diff(n / 3) <= 1, "{label} center {c}: {k} of {n}");
            }
        }
        assert_eq!(cohort, draw_cohort(&SynthConfig::default()));
    }

    #[test]
    fn small_cohorts_scale_proportionally() {
        let cfg = SynthConfig {
            normal: 3,
            benign: 2,
            malignant: 5,
            ..SynthConfig::default()
        };
        let cohort = draw_cohort(&cfg);
        assert_eq!(cohort.len(), 10);
        let os = cohort
            .iter()
            .filter(|s| s.subtype == Some(Subtype::Osteosarcoma))
            .count();
        assert_eq!(os, 4);
        assert!(cohort
            .iter()
            .filter(|s| s.label.is_tumour())
            .all(|s| s.site.is_some()));
    }
}
