//! Contact sheet of the synthetic cohort: one normal knee, one benign and two
//! malignant tumours of different subtypes, each labelled, rendered exactly
//! as `synth::generate` renders them for the default config (256 px, seed 2021).
//!
//! Regenerate `docs/synth-contact-sheet.png` with:
//!
//! ```text
//! cargo run --release -p crossfold-shared --example contact_sheet
//! ```
//!
//! An output path may be given after `--`.

use crossfold_shared::label::Label;
use crossfold_shared::synth::anatomy::Bone;
use crossfold_shared::synth::font::{draw_text, CELL_HEIGHT};
use crossfold_shared::synth::lesion::Periosteal;
use crossfold_shared::synth::{draw_cohort, Patient, Subtype, SynthConfig};
use image::{GrayImage, Luma};
use std::path::{Path, PathBuf};

const SCALE: u32 = 2;
const LINE: u32 = CELL_HEIGHT * SCALE + 6;
const PAD: u32 = 8;

/// The first patient (in id order) that `pick` accepts.
fn first(patients: &[Patient], pick: impl Fn(&Patient) -> bool) -> Option<&Patient> {
    patients.iter().find(|p| pick(p))
}

/// A conspicuous lesion away from the thin fibula, to show the features.
fn clear(p: &Patient) -> bool {
    p.lesion
        .as_ref()
        .is_some_and(|l| l.conspicuity > 0.8 && l.bone != Bone::Fibula)
}

fn caption(p: &Patient) -> [String; 3] {
    let s = &p.subject;
    let kind = s
        .subtype
        .map(|t| t.as_str().replace('_', " "))
        .unwrap_or_else(|| "no lesion".into());
    let site = s
        .site
        .map(|t| t.as_str().replace('_', " "))
        .unwrap_or_default();
    [
        format!("{} {}", s.label, s.patient_id),
        kind,
        format!("{site} {}y {}", s.age, s.sex.as_str())
            .trim()
            .to_string(),
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let shared = Path::new(env!("CARGO_MANIFEST_DIR"));
            let root = shared.parent().unwrap_or(shared);
            root.join("docs/synth-contact-sheet.png")
        });
    let cfg = SynthConfig::default();
    let patients: Vec<Patient> = draw_cohort(&cfg)
        .into_iter()
        .map(|s| Patient::new(cfg.seed, s))
        .collect();
    let subtype = |t: Subtype| move |p: &Patient| p.subject.subtype == Some(t) && clear(p);
    let chosen = [
        first(&patients, |p| p.subject.label == Label::Normal),
        first(&patients, subtype(Subtype::GiantCellTumour)),
        first(&patients, |p| {
            subtype(Subtype::Osteosarcoma)(p)
                && p.lesion.as_ref().is_some_and(|l| {
                    l.bone == Bone::Femur
                        && l.matrix > 0.0
                        && matches!(l.periosteal, Some((Periosteal::Sunburst, _)))
                })
        }),
        first(&patients, |p| {
            subtype(Subtype::Chondrosarcoma)(p)
                && p.lesion.as_ref().is_some_and(|l| l.stipple > 0.0)
        }),
    ];
    let n = cfg.size;
    let tile_w = n + 2 * PAD;
    let tile_h = n + 2 * PAD + 3 * LINE;
    let mut sheet = GrayImage::from_pixel(2 * tile_w, 2 * tile_h, Luma([24]));
    for (k, p) in chosen.iter().enumerate() {
        let p = p.ok_or("default cohort lacks a subject for the contact sheet")?;
        let img = p.render(cfg.seed, 0, n, true);
        let (ox, oy) = ((k as u32 % 2) * tile_w, (k as u32 / 2) * tile_h);
        image::imageops::replace(&mut sheet, &img, (ox + PAD) as i64, (oy + PAD) as i64);
        for (line, text) in caption(p).iter().enumerate() {
            let y = oy + PAD + n + 6 + line as u32 * LINE;
            let value = if line == 0 { 255 } else { 200 };
            draw_text(&mut sheet, (ox + PAD) as i64, y as i64, text, SCALE, value);
        }
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    sheet.save(&out)?;
    println!("wrote {}", out.display());
    Ok(())
}
