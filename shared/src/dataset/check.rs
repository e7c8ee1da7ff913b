//! `crossfold dataset check`: everything wrong with a data set, all at once.

use super::paths::{contained_in, normalise};
use super::{available_threads, parallel_map, DatasetError};
use crate::imaging::{
    decode_bytes_scaled, resize_to_square, Gray16, Gray16Scale, GrayImage, ImagingError, Reading,
};
use crate::label::{Label, Task};
use crate::manifest::{check_rows, read_raw, RawRow};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// A field's value is wrong (unknown label, empty patient id, bad age).
    BadValue,
    MissingFile,
    /// The file exists but does not decode as PNG, JPEG or DICOM.
    Undecodable,
    /// A zero-byte file or an image with no pixels.
    EmptyImage,
    DuplicatePath,
    /// One patient has images with different labels.
    ConflictingLabels,
    PathEscape,
    /// The manifest has a header and no rows.
    NoRows,
    /// The same file content under two patients: an error when their labels
    /// differ, a warning (one image on both sides of a split) otherwise.
    DuplicateContent,
    /// Warning: every pixel has the same value.
    BlankImage,
    /// Warning: two patient ids that differ only in letter case (`P0001`,
    /// `p0001`): two patients to crossfold, perhaps one in fact.
    PatientIdCase,
    /// Warning: the data set's 16-bit gray PNGs were read on two scales
    /// (some as 12-bit data, some as 16-bit): the images read on the rarer
    /// scale are named, as 16 times too bright or too dark if all come from
    /// one detector.
    MixedBitDepth,
    /// Warning: a 16-bit gray PNG read as 12-bit data
    /// (`train.gray16 = "12bit"`) has pixels above 4095, made white.
    ClippedGray16,
}

/// One finding, naming the manifest line, the row's path and the bad value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    pub kind: IssueKind,
    pub line: u64,
    pub path: String,
    pub field: Option<String>,
    pub value: Option<String>,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}")?;
            if let Some(v) = &self.value {
                write!(f, " = {v:?}")?;
            }
            write!(f, ": ")?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub manifest: PathBuf,
    pub data_root: PathBuf,
    pub rows: usize,
    /// Images per label, for the rows whose label is known.
    pub counts: BTreeMap<String, usize>,
    pub patients: usize,
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
    /// The SHA-256 of every decodable file, by normalised path: what the
    /// data set's fingerprint is made of, so it need not read them again.
    #[serde(skip)]
    pub file_sha256: HashMap<String, String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

fn issue(
    kind: IssueKind,
    row: &RawRow,
    field: Option<&str>,
    value: Option<&str>,
    message: String,
) -> Issue {
    Issue {
        kind,
        line: row.line,
        path: row.path.clone(),
        field: field.map(str::to_string),
        value: value.map(str::to_string),
        message,
    }
}

/// Every decodable image of a checked manifest, resized to the network's
/// square input while the check had it decoded, so that a job run right
/// after its check (`crossfold-worker train`) decodes each image once.
/// Images are taken out as they are used, so they are not held twice.
#[derive(Debug)]
pub struct Squares {
    pub reading: Reading,
    /// `size * size` bytes per image, keyed by its normalised path.
    by_path: Mutex<HashMap<String, Vec<u8>>>,
}

impl Squares {
    /// Take out the image at `path` (as a manifest row spells it), if it
    /// is here read as `reading` says.
    pub fn take(&self, path: &str, reading: Reading) -> Option<Vec<u8>> {
        if reading != self.reading {
            return None;
        }
        self.images().remove(&normalise(path))
    }

    /// Images still here.
    pub fn len(&self) -> usize {
        self.images().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Let go of every image left.
    pub fn clear(&self) {
        self.images().clear();
    }

    fn images(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        // A panic while holding the lock leaves the map whole.
        self.by_path.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Check a manifest and its files. `data_root` defaults to the manifest's
/// directory; no path may leave it. Fails only when the manifest itself
/// cannot be read or has a bad header; everything else is a finding.
pub fn check(manifest: &Path, data_root: Option<&Path>) -> Result<CheckReport, DatasetError> {
    check_with(manifest, data_root, None).map(|(report, _)| report)
}

/// Which images [`check_keeping`] keeps, and how they are read.
#[derive(Clone, Copy, Debug)]
pub struct Keep {
    /// How the images are read and kept.
    pub reading: Reading,
    /// Only images with one of these labels (say, a malignancy round's
    /// benign and malignant images): the others are checked and let go.
    pub task: Option<Task>,
}

/// [`check`], keeping the decodable images `keep` asks for, resized, as it
/// goes.
pub fn check_keeping(
    manifest: &Path,
    data_root: Option<&Path>,
    keep: Keep,
) -> Result<(CheckReport, Squares), DatasetError> {
    let (report, by_path) = check_with(manifest, data_root, Some(keep))?;
    Ok((
        report,
        Squares {
            reading: keep.reading,
            by_path: Mutex::new(by_path),
        },
    ))
}

type Kept = HashMap<String, Vec<u8>>;

fn check_with(
    manifest: &Path,
    data_root: Option<&Path>,
    keep: Option<Keep>,
) -> Result<(CheckReport, Kept), DatasetError> {
    // A root that is not a folder would fail every row the same way: one
    // error instead.
    if let Some(root) = data_root {
        if !root.is_dir() {
            return Err(DatasetError::Layout {
                path: root.to_path_buf(),
                message: if root.exists() {
                    "the data root is not a folder".into()
                } else {
                    "the data root does not exist".into()
                },
            });
        }
    }
    let rows = read_raw(manifest)?;
    let base = crate::manifest::manifest_root(manifest);
    let root = data_root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| base.clone());
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if rows.is_empty() {
        errors.push(Issue {
            kind: IssueKind::NoRows,
            line: 1,
            path: String::new(),
            field: None,
            value: None,
            message: "the manifest has a header but no rows".into(),
        });
    }

    let (_, problems) = check_rows(&rows);
    let all_rows = rows.len();
    // A row with too many or too few fields has its values in the wrong
    // columns: reported above, and kept out of every check below.
    let rows: Vec<RawRow> = rows
        .into_iter()
        .filter(|r| r.fields.0 == r.fields.1)
        .collect();
    for p in problems {
        errors.push(Issue {
            kind: IssueKind::BadValue,
            line: p.line,
            path: p.path,
            field: Some(p.field.to_string()),
            value: Some(p.value),
            message: p.message,
        });
    }

    // Duplicate paths (after folding `./` and `a/../`).
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for row in rows.iter().filter(|r| !r.path.is_empty()) {
        let key = normalise(&row.path);
        match seen.get(&key) {
            Some(first) => errors.push(issue(
                IssueKind::DuplicatePath,
                row,
                Some("path"),
                Some(&row.path),
                format!("same file as line {first}"),
            )),
            None => {
                seen.insert(key, row.line);
            }
        }
    }

    // Patients with conflicting labels.
    let mut by_patient: BTreeMap<&str, Vec<(&RawRow, Label)>> = BTreeMap::new();
    for row in &rows {
        if let (false, Ok(label)) = (row.patient_id.is_empty(), row.label.parse::<Label>()) {
            by_patient
                .entry(&row.patient_id)
                .or_default()
                .push((row, label));
        }
    }
    for (patient, images) in &by_patient {
        let first = images[0];
        for (row, label) in &images[1..] {
            if *label != first.1 {
                errors.push(issue(
                    IssueKind::ConflictingLabels,
                    row,
                    Some("label"),
                    Some(label.as_str()),
                    format!(
                        "patient {patient:?} is {} on line {} ({})",
                        first.1, first.0.line, first.0.path
                    ),
                ));
            }
        }
    }

    // Patient ids that differ only in case: counted as two patients, so
    // one patient's images could land on both sides of a round.
    let mut by_folded: BTreeMap<String, &RawRow> = BTreeMap::new();
    let mut in_order: Vec<(&str, &RawRow)> = by_patient
        .iter()
        .map(|(patient, images)| (*patient, images[0].0))
        .collect();
    in_order.sort_by_key(|(_, row)| row.line);
    for (patient, first_row) in in_order {
        let folded = patient.to_lowercase();
        match by_folded.get(&folded) {
            Some(first) => warnings.push(issue(
                IssueKind::PatientIdCase,
                first_row,
                Some("patient_id"),
                Some(patient),
                format!(
                    "differs from patient {:?} (line {}) only in letter case: they are two patients here; \
                     if they are one, spell the id the same",
                    first.patient_id, first.line
                ),
            )),
            None => {
                by_folded.insert(folded, first_row);
            }
        }
    }

    // Files: containment, existence, decoding.
    let file_rows: Vec<&RawRow> = rows.iter().filter(|r| !r.path.is_empty()).collect();
    let findings = parallel_map(&file_rows, available_threads(), |row| {
        let wanted = keep.filter(|k| {
            k.task.is_none_or(|task| {
                row.label
                    .parse::<Label>()
                    .is_ok_and(|label| task.includes(label))
            })
        });
        let gray16 = keep.map_or(Gray16Scale::Auto, |k| k.reading.gray16);
        check_file(&base, &root, row, gray16, wanted.map(|k| k.reading))
    });
    let mut by_content: BTreeMap<String, &RawRow> = BTreeMap::new();
    let mut kept = Kept::new();
    let mut file_sha256 = HashMap::new();
    let mut gray16 = Vec::new();
    for (row, found) in file_rows.iter().zip(findings) {
        errors.extend(found.errors);
        warnings.extend(found.warnings);
        if let Some(g) = found.gray16 {
            gray16.push((*row, g));
        }
        if let Some(square) = found.square {
            kept.insert(normalise(&row.path), square);
        }
        let Some(sha) = found.sha else { continue };
        file_sha256.insert(normalise(&row.path), sha.clone());
        match by_content.get(&sha) {
            // The same path twice is a DuplicatePath error already.
            Some(first)
                if first.patient_id != row.patient_id
                    && normalise(&first.path) != normalise(&row.path) =>
            {
                let same_label = first.label.trim().eq_ignore_ascii_case(row.label.trim());
                let found = issue(
                    IssueKind::DuplicateContent,
                    row,
                    Some("path"),
                    Some(&row.path),
                    format!(
                        "same content as line {} ({}, patient {:?}, {}){}",
                        first.line,
                        first.path,
                        first.patient_id,
                        first.label,
                        if same_label {
                            ": one image under two patients can end up on both sides of a round"
                        } else {
                            ": one image with two labels"
                        }
                    ),
                );
                if same_label {
                    warnings.push(found);
                } else {
                    errors.push(found);
                }
            }
            Some(_) => {}
            None => {
                by_content.insert(sha, row);
            }
        }
    }

    warnings.extend(mixed_bit_depths(&gray16));
    errors.sort_by_key(|i| (i.line, i.kind));
    warnings.sort_by_key(|i| (i.line, i.kind));
    let mut counts = BTreeMap::new();
    for row in &rows {
        if let Ok(l) = row.label.parse::<Label>() {
            *counts.entry(l.to_string()).or_insert(0) += 1;
        }
    }
    let report = CheckReport {
        manifest: manifest.to_path_buf(),
        data_root: root,
        rows: all_rows,
        counts,
        patients: by_patient.len(),
        errors,
        warnings,
        file_sha256,
    };
    Ok((report, kept))
}

/// The image at `path` and the SHA-256 of the bytes it was decoded from
/// (the file is read once).
fn read_and_decode(
    path: &Path,
    gray16: Gray16Scale,
) -> Result<(GrayImage, Option<Gray16>, String), ImagingError> {
    let bytes = crate::imaging::read_image_file(path)?;
    let (img, gray16) = decode_bytes_scaled(&bytes, path, gray16)?;
    Ok((img, gray16, crate::hash::sha256_hex(&bytes)))
}

/// A warning for each 16-bit gray image read on the rarer of two scales,
/// when the data set has both (ties: the 16-bit ones are named).
fn mixed_bit_depths(read: &[(&RawRow, Gray16)]) -> Vec<Issue> {
    let as12 = read.iter().filter(|(_, g)| *g != Gray16::As16Bit).count();
    let as16 = read.len() - as12;
    if as12 == 0 || as16 == 0 {
        return Vec::new();
    }
    let (rare, others, how, other_how) = if as12 < as16 {
        (
            Gray16::As12Bit,
            as16,
            "as 12-bit data (no pixel above 4095: full scale 4095)",
            "as 16-bit data (full scale 65535)",
        )
    } else {
        (
            Gray16::As16Bit,
            as12,
            "as 16-bit data (a pixel above 4095: full scale 65535)",
            "as 12-bit data (full scale 4095)",
        )
    };
    read.iter()
        .filter(|(_, g)| (*g == Gray16::As16Bit) == (rare == Gray16::As16Bit))
        .map(|(row, _)| {
            issue(
                IssueKind::MixedBitDepth,
                row,
                None,
                None,
                format!(
                    "16-bit gray image read {how}, while {others} other 16-bit gray images of this data set were read {other_how}: \
                     if they come from one detector, this one is 16 times too dark or too bright; store them all at one bit depth, \
                     or read them all on one scale with train.gray16 = \"16bit\", or \"12bit\" (which makes pixels above 4095 white), in the spec"
                ),
            )
        })
        .collect()
}

/// What the check of one file found.
struct FileFindings {
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
    /// The SHA-256 of a decodable file's content.
    sha: Option<String>,
    /// A decodable image resized, when asked to keep it.
    square: Option<Vec<u8>>,
    /// How a 16-bit gray image was scaled.
    gray16: Option<Gray16>,
}

fn check_file(
    base: &Path,
    root: &Path,
    row: &RawRow,
    scale: Gray16Scale,
    keep: Option<Reading>,
) -> FileFindings {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut sha = None;
    let mut square = None;
    let mut gray16 = None;
    // The path is relative to the manifest; it must stay under the data root.
    let full = match contained_in(root, base, &row.path) {
        Ok(full) => full,
        Err(reason) => {
            errors.push(issue(
                IssueKind::PathEscape,
                row,
                Some("path"),
                Some(&row.path),
                format!("escapes the data root {}: {reason}", root.display()),
            ));
            return FileFindings {
                errors,
                warnings,
                sha,
                square,
                gray16,
            };
        }
    };
    match std::fs::metadata(&full) {
        Err(e) => {
            errors.push(issue(
                IssueKind::MissingFile,
                row,
                None,
                None,
                format!("cannot open {}: {e}", full.display()),
            ));
        }
        Ok(m) if m.len() == 0 => {
            errors.push(issue(
                IssueKind::EmptyImage,
                row,
                None,
                None,
                "empty file (0 bytes)".into(),
            ));
        }
        // Decode the whole image, whatever its format (recognised by content).
        Ok(_) => match read_and_decode(&full, scale) {
            Ok((img, read_as, digest)) => {
                sha = Some(digest);
                gray16 = read_as;
                if read_as == Some(Gray16::Clipped12Bit) {
                    warnings.push(issue(
                        IssueKind::ClippedGray16,
                        row,
                        None,
                        None,
                        "16-bit gray image with pixels above 4095, read as 12-bit data as \
                         train.gray16 = \"12bit\" says: those pixels are white; if it holds \
                         16-bit data, read it with \"16bit\" or \"auto\""
                            .into(),
                    ));
                }
                square = keep.map(|k| resize_to_square(&img, k.size, k.mode));
                if img.is_blank() {
                    warnings.push(issue(
                        IssueKind::BlankImage,
                        row,
                        None,
                        None,
                        "every pixel has the same value".into(),
                    ));
                }
            }
            Err(ImagingError::Empty { .. }) => {
                errors.push(issue(
                    IssueKind::EmptyImage,
                    row,
                    None,
                    None,
                    "image has no pixels".into(),
                ));
            }
            Err(e) => {
                errors.push(issue(IssueKind::Undecodable, row, None, None, e.detail()));
            }
        },
    }
    FileFindings {
        errors,
        warnings,
        sha,
        square,
        gray16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma};

    fn write_png(path: &Path, v: u8, gradient: bool) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let img = GrayImage::from_fn(8, 8, |x, _| {
            Luma([if gradient {
                v.wrapping_add(x as u8 * 9)
            } else {
                v
            }])
        });
        img.save(path).unwrap();
    }

    #[test]
    fn reports_every_kind_of_problem_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        write_png(&d.join("a.png"), 10, true);
        write_png(&d.join("b.png"), 20, true);
        write_png(&d.join("blank.png"), 7, false);
        std::fs::write(d.join("empty.png"), b"").unwrap();
        std::fs::write(d.join("junk.png"), b"this is not a png").unwrap();
        std::fs::write(dir.path().join("outside.png"), b"x").unwrap();
        let manifest = d.join("manifest.csv");
        std::fs::write(
            &manifest,
            "path,label,patient_id\n\
             a.png,normal,p1\n\
             b.png,Tumor,p2\n\
             ./a.png,normal,p3\n\
             missing.png,benign,p4\n\
             empty.png,benign,p5\n\
             junk.png,malignant,p6\n\
             ../outside.png,normal,p7\n\
             /etc/hosts,normal,p8\n\
             blank.png,benign,p1\n",
        )
        .unwrap();
        let report = check(&manifest, None).unwrap();
        assert!(!report.ok());
        let kinds: Vec<(u64, IssueKind)> = report.errors.iter().map(|i| (i.line, i.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (3, IssueKind::BadValue),
                (4, IssueKind::DuplicatePath),
                (5, IssueKind::MissingFile),
                (6, IssueKind::EmptyImage),
                (7, IssueKind::Undecodable),
                (8, IssueKind::PathEscape),
                (9, IssueKind::PathEscape),
                (10, IssueKind::ConflictingLabels),
            ]
        );
        assert_eq!(report.warnings.len(), 1);
        assert_eq!(report.warnings[0].kind, IssueKind::BlankImage);
        assert!(report.errors[0].to_string().contains("\"Tumor\""));
        assert!(report.errors[7].to_string().contains("\"p1\""));
    }

    #[test]
    fn keeping_the_images_finds_the_same_and_keeps_what_decodes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_png(&d.join("a.png"), 10, true);
        write_png(&d.join("sub/b.png"), 90, true);
        std::fs::write(d.join("junk.png"), b"not an image").unwrap();
        let manifest = d.join("manifest.csv");
        std::fs::write(
            &manifest,
            "path,label,patient_id\na.png,normal,p1\nsub/b.png,benign,p2\njunk.png,normal,p3\n",
        )
        .unwrap();
        let plain = check(&manifest, None).unwrap();
        let reading = Reading {
            size: 6,
            mode: crate::imaging::ResizeMode::Stretch,
            gray16: Gray16Scale::Auto,
        };
        let keep = Keep {
            reading,
            task: None,
        };
        let (report, squares) = check_keeping(&manifest, None, keep).unwrap();
        assert_eq!(report.errors, plain.errors);
        assert_eq!(report.warnings, plain.warnings);
        assert_eq!(squares.len(), 2, "the undecodable file is not kept");
        let want = crate::imaging::load_square(&d.join("sub/b.png"), reading).unwrap();
        // Found however a row spells the path; taken out once.
        assert_eq!(squares.take("./sub//b.png", reading), Some(want));
        assert_eq!(squares.take("sub/b.png", reading), None);
        assert_eq!(squares.len(), 1);
        // For one task, only its images are kept: not the normal one here.
        let malignancy = Keep {
            task: Some(Task::Malignancy),
            ..keep
        };
        let (_, squares) = check_keeping(&manifest, None, malignancy).unwrap();
        assert_eq!(squares.len(), 1);
        assert!(squares.take("a.png", reading).is_none());
        assert!(squares.take("sub/b.png", reading).is_some());
    }

    #[test]
    fn a_ragged_row_is_one_error_and_kept_out_of_the_file_checks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_png(&d.join("a.png"), 10, true);
        write_png(&d.join("c.png"), 30, true);
        let manifest = d.join("manifest.csv");
        std::fs::write(
            &manifest,
            "path,label,patient_id\na.png,normal,p1\nb,x.png,benign,p2\nc.png,malignant\n",
        )
        .unwrap();
        let report = check(&manifest, None).unwrap();
        let found: Vec<_> = report
            .errors
            .iter()
            .map(|e| (e.line, e.kind, e.field.as_deref()))
            .collect();
        assert_eq!(
            found,
            [
                (3, IssueKind::BadValue, Some("fields")),
                (4, IssueKind::BadValue, Some("fields"))
            ],
            "{:?}",
            report.errors
        );
        assert_eq!(report.rows, 3);
        assert_eq!(report.counts.get("malignant"), None, "{:?}", report.counts);
        assert_eq!(report.patients, 1);
    }

    #[test]
    fn patient_ids_that_differ_only_in_case_are_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_png(&d.join("a.png"), 10, true);
        write_png(&d.join("b.png"), 20, true);
        write_png(&d.join("c.png"), 30, true);
        let manifest = d.join("manifest.csv");
        std::fs::write(
            &manifest,
            "path,label,patient_id\na.png,normal,p0001\nb.png,normal,P0001\nc.png,normal,P0002\n",
        )
        .unwrap();
        let report = check(&manifest, None).unwrap();
        assert!(report.ok(), "{:?}", report.errors);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        let w = &report.warnings[0];
        assert_eq!((w.kind, w.line), (IssueKind::PatientIdCase, 3));
        let text = w.to_string();
        assert!(
            // The later line is the one warned about, naming the earlier.
            text.contains("patient_id = \"P0001\"") && text.contains("\"p0001\" (line 2)"),
            "{text}"
        );
    }

    #[test]
    fn dicom_files_are_decoded() {
        use crate::imaging::tests::{write_dicom, Dcm};
        let dir = tempfile::tempdir().unwrap();
        write_dicom(
            &dir.path().join("good.dcm"),
            &Dcm::mono2(2, 2, &[0, 1, 2, 3]),
        );
        write_dicom(&dir.path().join("flat.dcm"), &Dcm::mono2(2, 2, &[5; 4]));
        // Pixel data shorter than Rows x Columns says.
        write_dicom(&dir.path().join("short.dcm"), &Dcm::mono2(64, 64, &[1, 2]));
        let mut junk = vec![0u8; 128];
        junk.extend_from_slice(b"DICMnot really a dicom file");
        std::fs::write(dir.path().join("junk.dcm"), junk).unwrap();
        let manifest = dir.path().join("manifest.csv");
        std::fs::write(
            &manifest,
            "path,label,patient_id\n\
             good.dcm,normal,p1\n\
             flat.dcm,benign,p2\n\
             short.dcm,benign,p3\n\
             junk.dcm,malignant,p4\n",
        )
        .unwrap();
        let report = check(&manifest, None).unwrap();
        let kinds: Vec<(u64, IssueKind)> = report.errors.iter().map(|i| (i.line, i.kind)).collect();
        assert_eq!(
            kinds,
            vec![(4, IssueKind::Undecodable), (5, IssueKind::Undecodable)]
        );
        assert!(!report.errors[1]
            .message
            .contains(dir.path().to_str().unwrap()));
        let warnings: Vec<(u64, IssueKind)> =
            report.warnings.iter().map(|i| (i.line, i.kind)).collect();
        assert_eq!(warnings, vec![(3, IssueKind::BlankImage)]);
    }

    #[test]
    fn a_clean_data_set_passes() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("img/a.png"), 1, true);
        write_png(&dir.path().join("img/b.png"), 2, true);
        let manifest = dir.path().join("manifest.csv");
        std::fs::write(
            &manifest,
            "path,label,patient_id\nimg/a.png,normal,p1\nimg/b.png,malignant,p2\n",
        )
        .unwrap();
        let report = check(&manifest, None).unwrap();
        assert!(report.ok(), "{:?}", report.errors);
        assert_eq!(report.rows, 2);
        assert_eq!(report.patients, 2);
        assert!(report.warnings.is_empty());
    }

    #[test]
    fn a_header_only_manifest_fails() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("manifest.csv");
        std::fs::write(&manifest, "path,label,patient_id\n").unwrap();
        let report = check(&manifest, None).unwrap();
        assert!(!report.ok());
        assert_eq!(report.errors[0].kind, IssueKind::NoRows);
        assert_eq!(
            report.errors[0].to_string(),
            "line 1: the manifest has a header but no rows"
        );
    }

    #[test]
    fn one_image_under_two_patients_is_found() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("img/a.png"), 1, true);
        std::fs::copy(dir.path().join("img/a.png"), dir.path().join("img/b.png")).unwrap();
        std::fs::copy(dir.path().join("img/a.png"), dir.path().join("img/c.png")).unwrap();
        write_png(&dir.path().join("img/d.png"), 9, true);
        let manifest = dir.path().join("manifest.csv");
        std::fs::write(
            &manifest,
            "path,label,patient_id\nimg/a.png,benign,p1\nimg/b.png,Benign,p2\nimg/c.png,malignant,p3\nimg/d.png,normal,p4\n",
        )
        .unwrap();
        let report = check(&manifest, None).unwrap();
        // Same label: a warning (it could land on both sides of a round).
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert_eq!(report.warnings[0].kind, IssueKind::DuplicateContent);
        assert_eq!(report.warnings[0].line, 3);
        // Another label: an error naming the first occurrence.
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        let e = &report.errors[0];
        assert_eq!((e.kind, e.line), (IssueKind::DuplicateContent, 4));
        assert!(
            e.message
                .contains("line 2 (img/a.png, patient \"p1\", benign)"),
            "{e}"
        );
        assert!(e.message.contains("two labels"), "{e}");
    }

    #[test]
    fn sixteen_bit_images_read_on_two_scales_are_pointed_out() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Three look like 12-bit data (all below 4096), one does not.
        let write16 = |name: &str, top: u16| {
            let img = image::ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(8, 8, |x, y| {
                Luma([top / 64 * (x + 8 * y) as u16 / 63 * 64])
            });
            img.save(d.join(name)).unwrap();
        };
        write16("a.png", 4000);
        write16("b.png", 3000);
        write16("c.png", 4095);
        write16("d.png", 60000);
        let manifest = d.join("manifest.csv");
        let rows = "path,label,patient_id\na.png,normal,p1\nb.png,benign,p2\nc.png,normal,p3\nd.png,normal,p4\n";
        std::fs::write(&manifest, rows).unwrap();
        let report = check(&manifest, None).unwrap();
        assert!(report.ok(), "{:?}", report.errors);
        let w: Vec<(u64, IssueKind)> = report.warnings.iter().map(|i| (i.line, i.kind)).collect();
        assert_eq!(w, vec![(5, IssueKind::MixedBitDepth)]);
        assert!(
            report.warnings[0].message.contains("as 16-bit data")
                && report.warnings[0].message.contains("3 other"),
            "{}",
            report.warnings[0]
        );
        // Checked as a job reads them with one scale fixed: under "16bit"
        // nothing is mixed; under "12bit" the 16-bit image is named as
        // clipped, and nothing as mixed.
        let keep = |gray16| Keep {
            reading: Reading {
                size: 8,
                mode: crate::imaging::ResizeMode::Pad,
                gray16,
            },
            task: None,
        };
        let (report, _) = check_keeping(&manifest, None, keep(Gray16Scale::Bits16)).unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let (report, _) = check_keeping(&manifest, None, keep(Gray16Scale::Bits12)).unwrap();
        let w: Vec<(u64, IssueKind)> = report.warnings.iter().map(|i| (i.line, i.kind)).collect();
        assert_eq!(w, vec![(5, IssueKind::ClippedGray16)]);
        assert!(
            report.warnings[0].message.contains("white"),
            "{}",
            report.warnings[0]
        );
        // One scale for all: nothing to say.
        write16("d.png", 2000);
        assert!(check(&manifest, None).unwrap().warnings.is_empty());
    }
}
