//! End-to-end tests of the generator on small cohorts.

use super::anatomy::Bone;
use super::lesion_render::PlacedLesion;
use super::render::Shot;
use super::*;

fn small(seed: u64) -> SynthConfig {
    SynthConfig {
        normal: 4,
        benign: 4,
        malignant: 4,
        size: 64,
        seed,
        views_per_patient: 1,
    }
}

fn read_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readable dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("under dir").to_path_buf();
                out.push((rel, std::fs::read(&p).expect("readable file")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn same_config_gives_identical_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    generate(&small(11), a.path()).unwrap();
    generate(&small(11), b.path()).unwrap();
    let (ta, tb) = (read_tree(a.path()), read_tree(b.path()));
    // 12 images, the manifest, the settings it was made with and the lock.
    assert_eq!(ta.len(), 15);
    assert_eq!(ta, tb);
    let c = tempfile::tempdir().unwrap();
    generate(&small(12), c.path()).unwrap();
    assert_ne!(ta, read_tree(c.path()), "another seed gives other images");
}

#[test]
fn a_folder_is_held_before_it_is_looked_at() {
    let dir = tempfile::tempdir().unwrap();
    // Another process at work there: told so, nothing written.
    let other = begin_writing(dir.path()).unwrap();
    for err in [
        generate_unless_there(&small(1), dir.path()).unwrap_err(),
        generate(&small(1), dir.path()).unwrap_err(),
    ] {
        assert!(matches!(err, SynthError::Busy { .. }), "{err}");
    }
    assert!(!dir.path().join("images").exists());
    // It finished its cohort meanwhile: that one is kept, none generated.
    drop(other);
    generate(&small(1), dir.path()).unwrap();
    let before = read_tree(dir.path());
    assert!(generate_unless_there(&small(2), dir.path())
        .unwrap()
        .is_none());
    assert_eq!(read_tree(dir.path()), before);
    // An older crossfold writing a cohort there holds only the marker:
    // waited for too, its images left alone.
    std::fs::remove_file(dir.path().join("manifest.csv")).unwrap();
    let older = replace::hold_marker(&dir.path().join(SYNTHETIC_PARTIAL), dir.path()).unwrap();
    let err = generate_unless_there(&small(1), dir.path()).unwrap_err();
    assert!(matches!(err, SynthError::Busy { .. }), "{err}");
    assert!(dir.path().join("images").exists());
    drop(older);
    assert!(generate_unless_there(&small(1), dir.path())
        .unwrap()
        .is_some());
}

#[test]
fn manifest_lists_every_image_with_all_columns() {
    let dir = tempfile::tempdir().unwrap();
    let m = generate(&small(3), dir.path()).unwrap();
    assert_eq!(m.root, dir.path());
    assert_eq!(m.counts(), [4, 4, 4]);
    let text = std::fs::read_to_string(dir.path().join("manifest.csv")).unwrap();
    assert_eq!(
        text.lines().next(),
        Some("path,label,patient_id,site,subtype,age,sex,view,center")
    );
    let loaded = Manifest::load(&dir.path().join("manifest.csv")).unwrap();
    assert_eq!(loaded.entries, m.entries);
    let mut ids: Vec<&str> = m.entries.iter().map(|e| e.patient_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 12, "unique ids in order");
    for (i, e) in m.entries.iter().enumerate() {
        assert_eq!(e.patient_id, format!("P{:04}", i + 1));
        assert_eq!(
            e.path,
            format!("images/{}/{}_ap.png", e.label, e.patient_id)
        );
        let img = image::open(m.resolve(e)).unwrap();
        assert_eq!(img.color(), image::ColorType::L8);
        assert_eq!((img.width(), img.height()), (64, 64));
        assert_eq!(e.site.is_some(), e.label.is_tumour());
        assert_eq!(e.subtype.is_some(), e.label.is_tumour());
        assert!(matches!(e.sex.as_deref(), Some("M" | "F")));
        assert!(CENTERS.contains(&e.center.as_deref().unwrap()));
    }
}

#[test]
fn several_views_get_their_own_names() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        normal: 1,
        benign: 0,
        malignant: 1,
        size: 48,
        views_per_patient: 4,
        ..small(5)
    };
    let m = generate(&cfg, dir.path()).unwrap();
    let views: Vec<&str> = m
        .entries
        .iter()
        .map(|e| e.view.as_deref().unwrap())
        .collect();
    assert_eq!(
        views,
        ["ap", "lat", "oblique", "ap2", "ap", "lat", "oblique", "ap2"]
    );
    assert!(m.entries.iter().all(|e| m.resolve(e).is_file()));
    assert!(!dir.path().join("images/benign").exists());
}

#[test]
fn config_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            SynthConfig {
                size: 16,
                ..small(1)
            },
            "size = 16",
        ),
        (
            SynthConfig {
                size: 5000,
                ..small(1)
            },
            "size = 5000",
        ),
        (
            SynthConfig {
                views_per_patient: 0,
                ..small(1)
            },
            "views_per_patient = 0",
        ),
        (
            SynthConfig {
                views_per_patient: 5,
                ..small(1)
            },
            "views_per_patient = 5",
        ),
        (
            SynthConfig {
                normal: 0,
                benign: 0,
                malignant: 0,
                ..small(1)
            },
            "normal+benign+malignant = 0",
        ),
    ];
    for (cfg, needle) in cases {
        let err = generate(&cfg, dir.path()).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert!(
        read_tree(dir.path()).is_empty(),
        "nothing written for a bad config"
    );
}

#[test]
fn io_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = generate(&small(1), &blocker.join("out")).unwrap_err();
    assert!(matches!(err, SynthError::CreateDir { .. }), "{err}");
    assert!(err.to_string().contains("file"), "{err}");
}

fn patients(cfg: &SynthConfig) -> Vec<Patient> {
    draw_cohort(cfg)
        .into_iter()
        .map(|s| Patient::new(cfg.seed, s))
        .collect()
}

/// Pixel values split by what the ray crosses: (bone, soft tissue only).
fn by_tissue(p: &Patient, seed: u64, size: u32) -> (Vec<f64>, Vec<f64>) {
    let img = p.render(seed, 0, size, true);
    let n = size as usize;
    let mut rng = seeded_rng(seed, STREAM_IMAGE, p.subject.index as u64, 0);
    let shot = Shot::draw(&mut rng, n, p.subject.center, &p.knee);
    let view = p.knee.view(0.0);
    let (mut bone, mut soft) = (Vec::new(), Vec::new());
    for py in n / 8..n - n / 8 {
        for px in n / 8..n - n / 8 {
            let (x, y) = shot.acquisition.to_anatomy(px, py, n);
            let s = view.sample(x, y);
            let v = img.get_pixel(px as u32, py as u32).0[0] as f64;
            if s.bones.iter().any(|b| b.sdf < -0.01) {
                bone.push(v);
            } else if s.bones.iter().all(|b| b.sdf > 0.01) && s.soft > 0.15 {
                soft.push(v);
            }
        }
    }
    (bone, soft)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[test]
fn images_look_like_radiographs_not_noise() {
    let cfg = small(21);
    for p in patients(&cfg).iter().take(6) {
        let img = p.render(cfg.seed, 0, 96, true);
        let px: Vec<f64> = img.pixels().map(|v| v.0[0] as f64).collect();
        let m = mean(&px);
        let sd = (px.iter().map(|v| (v - m).powi(2)).sum::<f64>() / px.len() as f64).sqrt();
        assert!(
            (30.0..200.0).contains(&m),
            "{}: mean {m}",
            p.subject.patient_id
        );
        assert!(sd > 20.0, "{}: sd {sd}", p.subject.patient_id);
        let (bone, soft) = by_tissue(p, cfg.seed, 96);
        assert!(bone.len() > 300 && soft.len() > 100);
        assert!(
            mean(&bone) > mean(&soft) + 25.0,
            "{}: bone {} vs soft {}",
            p.subject.patient_id,
            mean(&bone),
            mean(&soft)
        );
    }
}

#[test]
fn lesions_change_the_image_where_they_are() {
    let cfg = SynthConfig {
        normal: 0,
        benign: 3,
        malignant: 3,
        ..small(31)
    };
    let n = 96usize;
    for p in patients(&cfg) {
        let plan = p.lesion.as_ref().expect("tumour has a lesion");
        let with = p.render(cfg.seed, 0, n as u32, true);
        let without = p.render(cfg.seed, 0, n as u32, false);
        let mut rng = seeded_rng(cfg.seed, STREAM_IMAGE, p.subject.index as u64, 0);
        let shot = Shot::draw(&mut rng, n, p.subject.center, &p.knee);
        let view = p.knee.view(0.0);
        let placed = PlacedLesion::new(plan, &view);
        let (mut inside, mut far) = (Vec::new(), Vec::new());
        for py in 0..n {
            for px in 0..n {
                let (x, y) = shot.acquisition.to_anatomy(px, py, n);
                let d = (with.get_pixel(px as u32, py as u32).0[0] as f64
                    - without.get_pixel(px as u32, py as u32).0[0] as f64)
                    .abs();
                let q = placed.radial(x, y);
                if q < 1.0 {
                    inside.push(d);
                } else if !placed.near(x, y) {
                    far.push(d);
                }
            }
        }
        let id = &p.subject.patient_id;
        assert!(!inside.is_empty(), "{id}: lesion off the image");
        assert!(
            mean(&inside) > 2.0,
            "{id}: {plan:?} mean diff {}",
            mean(&inside)
        );
        assert!(mean(&far) < 0.5, "{id}: far diff {}", mean(&far));
        assert!(matches!(
            placed.bone,
            Bone::Femur | Bone::Tibia | Bone::Fibula
        ));
    }
}

#[test]
fn seeds_separate_streams_subjects_and_views() {
    use rand::Rng;
    let draw = |a, b, c, d| seeded_rng(a, b, c, d).random::<u64>();
    let base = draw(1, 2, 3, 0);
    assert_eq!(base, draw(1, 2, 3, 0));
    for other in [
        draw(2, 2, 3, 0),
        draw(1, 3, 3, 0),
        draw(1, 2, 4, 0),
        draw(1, 2, 3, 1),
    ] {
        assert_ne!(base, other);
    }
}
