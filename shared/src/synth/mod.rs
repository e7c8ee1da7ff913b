//! The synthetic knee-radiograph cohort: a stand-in for the study's 520
//! antero-posterior knee radiographs, for testing the pipeline end to end
//! without patient data.
//!
//! The model, one module per concept:
//! - [`cohort`] and [`demographics`]: who the subjects are (label, subtype,
//!   site, age, sex, center), matching Table 1 of the study.
//! - [`anatomy`] (with `bones`): the knee (femur, patella, tibia, fibula,
//!   soft tissue, growth plates, degeneration), drawn per subject.
//! - [`lesion`] and [`lesion_render`]: the tumour's radiological features,
//!   drawn with overlapping per-class probabilities, and how they change
//!   the picture.
//! - [`acquisition`]: positioning, exposure, noise, blur, collimation and
//!   the L/R marker, independent of the label.
//! - [`render`]: attenuation along each ray and the final pixels.
//! - [`raster`] and [`font`]: drawing primitives and a tiny bitmap font.
//!
//! Determinism: the cohort comes from an RNG seeded by `(seed, cohort)`, a
//! subject's anatomy and lesion from `(seed, subject index)`, and each image
//! (textures, acquisition, noise) from `(seed, subject index, view)`, with
//! the lesion's textures on a stream of their own; all ChaCha8. Images are
//! rendered on all cores, but no draw depends on the thread or the order, so
//! the same config gives byte-identical files.

pub mod acquisition;
pub mod anatomy;
mod bones;
pub mod cohort;
pub mod demographics;
pub mod font;
pub mod lesion;
pub mod lesion_render;
pub mod raster;
pub mod render;
mod replace;

use crate::label::Label;
use crate::manifest::{Entry, Manifest, ManifestError};
use anatomy::Knee;
use image::GrayImage;
use lesion::LesionPlan;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

pub use cohort::{draw_cohort, Sex, Site, Subject, Subtype, CENTERS};
pub use render::VIEWS;
use replace::clear_before_generating;
pub use replace::{begin_writing, check_earlier, remove_earlier, Writing};

/// What to generate. Recorded beside the manifest as `synthetic.toml`
/// (every field, none other: a file that lacks one is not read).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    pub normal: usize,
    pub benign: usize,
    pub malignant: usize,
    /// Width and height of every image in pixels (32..=4096).
    pub size: u32,
    pub seed: u64,
    /// Views per patient (1..=4): ap, lat, oblique, ap2.
    pub views_per_patient: u32,
}

impl Default for SynthConfig {
    /// The study's cohort (Table 1): 260 normal, 80 benign, 180 malignant.
    fn default() -> Self {
        SynthConfig {
            normal: 260,
            benign: 80,
            malignant: 180,
            size: 256,
            seed: 2021,
            views_per_patient: 1,
        }
    }
}

impl SynthConfig {
    /// Number of subjects with this label.
    pub fn count(&self, label: Label) -> usize {
        match label {
            Label::Normal => self.normal,
            Label::Benign => self.benign,
            Label::Malignant => self.malignant,
        }
    }

    /// Check the config; the error names the offending field and value.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |field: &'static str, value: String, reason: &'static str| {
            Err(SynthError::InvalidConfig {
                field,
                value,
                reason,
            })
        };
        if !(32..=4096).contains(&self.size) {
            return bad("size", self.size.to_string(), "must be 32 to 4096 pixels");
        }
        if !(1..=VIEWS.len() as u32).contains(&self.views_per_patient) {
            return bad(
                "views_per_patient",
                self.views_per_patient.to_string(),
                "must be 1 to 4",
            );
        }
        let total = self.normal as u128 + self.benign as u128 + self.malignant as u128;
        if total == 0 {
            return bad(
                "normal+benign+malignant",
                "0".into(),
                "no images to generate",
            );
        }
        if total > 1_000_000 {
            return bad(
                "normal+benign+malignant",
                total.to_string(),
                "at most 1000000 subjects",
            );
        }
        Ok(())
    }
}

/// Why a cohort could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid synth config: {field} = {value}: {reason}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write image {}: {source}", path.display())]
    WriteImage {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("an image worker thread panicked")]
    Worker,
    #[error("{}: holds {count} file(s) synth did not write ({examples}); nothing was removed: move them, or choose another --out", dir.display())]
    Foreign {
        dir: PathBuf,
        count: usize,
        examples: String,
    },
    #[error("{}: holds {count} file(s) ({examples}) but no manifest.csv and no sign of a synthetic cohort crossfold began there; nothing was generated over them: move them, or point dataset.manifest at their manifest", dir.display())]
    Unrecorded {
        dir: PathBuf,
        count: usize,
        examples: String,
    },
    #[error("{}: holds {count} image(s) named as synth names them ({examples}) but no manifest.csv and no sign of which crossfold wrote them (a cohort stopped by an older version?): delete that folder to have the cohort generated again", dir.display())]
    Unfinished {
        dir: PathBuf,
        count: usize,
        examples: String,
    },
    #[error("{}: another crossfold process is generating a synthetic cohort there (it holds .synthetic.lock); wait for it to finish, then run this again", dir.display())]
    Busy { dir: PathBuf },
    #[error("{}: cannot create or lock it: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot list {}: {source}", path.display())]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) const STREAM_COHORT: u64 = 1;
const STREAM_SUBJECT: u64 = 2;
const STREAM_IMAGE: u64 = 3;
const STREAM_LESION_TEXTURE: u64 = 4;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A ChaCha8 generator for one purpose, seeded from the config seed, a
/// stream tag, the subject index and the view.
pub(crate) fn seeded_rng(seed: u64, stream: u64, subject: u64, view: u64) -> ChaCha8Rng {
    let mut state = seed;
    for v in [stream, subject, view] {
        state = splitmix(&mut state) ^ v;
    }
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    ChaCha8Rng::from_seed(bytes)
}

/// A subject with the parts that are the same in every view.
#[derive(Debug, Clone)]
pub struct Patient {
    pub subject: Subject,
    pub knee: Knee,
    pub lesion: Option<LesionPlan>,
}

impl Patient {
    /// Anatomy and lesion of `subject`, from the subject's own RNG.
    pub fn new(seed: u64, subject: Subject) -> Patient {
        let mut rng = seeded_rng(seed, STREAM_SUBJECT, subject.index as u64, 0);
        let knee = Knee::draw(&subject, &mut rng);
        let lesion = LesionPlan::draw(&subject, &knee, &mut rng);
        Patient {
            subject,
            knee,
            lesion,
        }
    }

    /// Render view `view` (index into [`VIEWS`]); `with_lesion = false`
    /// renders the same image as if the knee were healthy.
    pub fn render(&self, seed: u64, view: usize, size: u32, with_lesion: bool) -> GrayImage {
        let (index, view64) = (self.subject.index as u64, view as u64);
        let mut rng = seeded_rng(seed, STREAM_IMAGE, index, view64);
        let mut lesion_rng = seeded_rng(seed, STREAM_LESION_TEXTURE, index, view64);
        let lesion = self.lesion.as_ref().filter(|_| with_lesion);
        render::render_view(
            &self.knee,
            lesion,
            self.subject.center,
            view,
            size,
            &mut rng,
            &mut lesion_rng,
        )
    }

    /// Manifest path of a view, relative to the output directory.
    pub fn image_path(&self, view: usize) -> String {
        format!(
            "images/{}/{}_{}.png",
            self.subject.label, self.subject.patient_id, VIEWS[view].0
        )
    }

    fn entry(&self, view: usize) -> Entry {
        let s = &self.subject;
        let mut e = Entry::new(self.image_path(view), s.label, s.patient_id.clone());
        e.site = s.site.map(|v| v.as_str().to_string());
        e.subtype = s.subtype.map(|v| v.as_str().to_string());
        e.age = Some(s.age);
        e.sex = Some(s.sex.as_str().to_string());
        e.view = Some(VIEWS[view].0.to_string());
        e.center = Some(CENTERS[s.center].to_string());
        e
    }
}

fn create_dir(path: &Path) -> Result<(), SynthError> {
    std::fs::create_dir_all(path).map_err(|source| SynthError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// Where a cohort records the settings it was generated with, beside its
/// manifest: a spec asking for another cohort there is refused (see
/// `experiment::prepare`).
pub const SYNTHETIC_SETTINGS: &str = "synthetic.toml";

/// Beside a cohort being written, until its manifest is: the images there
/// are synth's, though no manifest or settings say so yet.
pub const SYNTHETIC_PARTIAL: &str = "synthetic.partial";

/// Held (an advisory lock) by the process generating a cohort in its
/// folder, from before it looks at what is there until its manifest is
/// written.
pub const SYNTHETIC_LOCK: &str = ".synthetic.lock";

/// Generate the cohort into `out_dir`: PNGs under
/// `images/<label>/<patient_id>_<view>.png` and `manifest.csv`, returning
/// the manifest (root = `out_dir`). Uses every core; the output depends only
/// on `cfg`.
pub fn generate(cfg: &SynthConfig, out_dir: &Path) -> Result<Manifest, SynthError> {
    cfg.validate()?;
    let held = begin_writing(out_dir)?;
    generate_held(cfg, out_dir, held)
}

/// Generate the cohort into `out_dir` unless a manifest is there (`None`):
/// what an earlier cohort stopped before its manifest left is removed
/// first, and anything else under `images/` refuses it (see
/// [`clear_before_generating`]). The folder is held from before it is
/// looked at, so two processes starting at once neither both generate nor
/// remove each other's images: the second is told the first is at work.
pub fn generate_unless_there(
    cfg: &SynthConfig,
    out_dir: &Path,
) -> Result<Option<Manifest>, SynthError> {
    cfg.validate()?;
    let held = begin_writing(out_dir)?;
    if out_dir.join("manifest.csv").exists() {
        return Ok(None);
    }
    clear_before_generating(out_dir, &held)?;
    generate_held(cfg, out_dir, held).map(Some)
}

/// [`generate`] by the process that holds `out_dir` (see [`begin_writing`]).
pub fn generate_held(
    cfg: &SynthConfig,
    out_dir: &Path,
    _held: Writing,
) -> Result<Manifest, SynthError> {
    // First the mark that the images here are synth's...
    let partial = out_dir.join(SYNTHETIC_PARTIAL);
    let _marker = replace::hold_marker(&partial, out_dir)?;
    // ...then the settings an earlier cohort here was recorded with, which
    // no longer hold: these are recorded once the images are written.
    let _ = std::fs::remove_file(out_dir.join(SYNTHETIC_SETTINGS));
    for label in Label::ALL {
        if cfg.count(label) > 0 {
            create_dir(&out_dir.join("images").join(label.as_str()))?;
        }
    }
    let patients: Vec<Patient> = draw_cohort(cfg)
        .into_iter()
        .map(|s| Patient::new(cfg.seed, s))
        .collect();
    let views = cfg.views_per_patient as usize;
    let jobs: Vec<(usize, usize)> = (0..patients.len())
        .flat_map(|p| (0..views).map(move |v| (p, v)))
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 32)
        .min(jobs.len());
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let errors: Mutex<Vec<(usize, SynthError)>> = Mutex::new(Vec::new());
    let all_joined = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= jobs.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let (p, v) = jobs[j];
                    let patient = &patients[p];
                    let img = patient.render(cfg.seed, v, cfg.size, true);
                    let path = out_dir.join(patient.image_path(v));
                    if let Err(source) = img.save_with_format(&path, image::ImageFormat::Png) {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut e) = errors.lock() {
                            e.push((j, SynthError::WriteImage { path, source }));
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().all(|h| h.join().is_ok())
    });
    if !all_joined {
        return Err(SynthError::Worker);
    }
    let mut errors = errors.into_inner().map_err(|_| SynthError::Worker)?;
    errors.sort_by_key(|(j, _)| *j);
    if let Some((_, e)) = errors.into_iter().next() {
        return Err(e);
    }
    let manifest = Manifest {
        root: out_dir.to_path_buf(),
        entries: jobs.iter().map(|&(p, v)| patients[p].entry(v)).collect(),
    };
    // Before the manifest, which marks the cohort complete: a cohort with a
    // manifest has its settings beside it.
    if let Ok(text) = toml::to_string(cfg) {
        let _ = std::fs::write(out_dir.join(SYNTHETIC_SETTINGS), text);
    }
    manifest.write(&out_dir.join("manifest.csv"))?;
    let _ = std::fs::remove_file(&partial);
    Ok(manifest)
}

#[cfg(test)]
mod tests;
