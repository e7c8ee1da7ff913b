//! The data-set manifest: a CSV file with one row per image.
//!
//! Required columns: `path,label,patient_id`. Optional columns:
//! `site,subtype,age,sex,view,center`. Column order is free; unknown columns
//! are an error so that a typo (`patient` for `patient_id`) is not silently
//! ignored. Labels are `normal|benign|malignant`, case-insensitive. Paths are
//! relative to the directory that holds the manifest.

use crate::label::Label;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub const REQUIRED_COLUMNS: [&str; 3] = ["path", "label", "patient_id"];
pub const OPTIONAL_COLUMNS: [&str; 6] = ["site", "subtype", "age", "sex", "view", "center"];

/// One image of the data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Path as written in the manifest (relative to the manifest's directory).
    pub path: String,
    pub label: Label,
    /// The label as the manifest spells it (white space trimmed), kept only
    /// when that differs from the canonical lower-case spelling (`Normal`,
    /// `MALIGNANT`): predictions and rewritten manifests show it as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_text: Option<String>,
    pub patient_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center: Option<String>,
}

impl Entry {
    pub fn new(path: impl Into<String>, label: Label, patient_id: impl Into<String>) -> Self {
        Entry {
            path: path.into(),
            label,
            label_text: None,
            patient_id: patient_id.into(),
            site: None,
            subtype: None,
            age: None,
            sex: None,
            view: None,
            center: None,
        }
    }

    /// The label as the manifest wrote it.
    pub fn label_as_written(&self) -> &str {
        self.label_text.as_deref().unwrap_or(self.label.as_str())
    }
}

/// A row as read, before its values are checked. `line` is the 1-based line
/// number in the file (the header is line 1).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    pub line: u64,
    /// How many fields the row has, and the header: a row with another
    /// count is a problem of that row, not the end of the reading.
    pub fields: (usize, usize),
    pub path: String,
    pub label: String,
    pub patient_id: String,
    pub site: Option<String>,
    pub subtype: Option<String>,
    pub age: Option<String>,
    pub sex: Option<String>,
    pub view: Option<String>,
    pub center: Option<String>,
}

/// A problem with one row's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    pub line: u64,
    pub path: String,
    pub field: &'static str,
    pub value: String,
    pub message: String,
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As `dataset check` prints it: where, which field and value, why.
        write!(
            f,
            "line {}: {}: {} = {:?}: {}",
            self.line, self.path, self.field, self.value, self.message
        )
    }
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: malformed CSV: {message}")]
    Csv {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error(
        "{path}: header lacks required column(s) {missing:?} (required: path,label,patient_id)"
    )]
    MissingColumns { path: PathBuf, missing: Vec<String> },
    #[error("{path}: header has unknown column {column:?} (allowed: path,label,patient_id,site,subtype,age,sex,view,center)")]
    UnknownColumn { path: PathBuf, column: String },
    #[error("{path}: header repeats column {column:?}")]
    DuplicateColumn { path: PathBuf, column: String },
    #[error("{path}: no rows")]
    Empty { path: PathBuf },
    #[error("{path}: the file is empty (a manifest starts with the header path,label,patient_id)")]
    NoHeader { path: PathBuf },
    #[error("{path}: the header is one column {header:?}: manifests are comma-separated, and this one seems to use {separator:?}")]
    Separator {
        path: PathBuf,
        header: String,
        separator: char,
    },
    #[error("{path}: {} bad row(s):\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Rows {
        path: PathBuf,
        problems: Vec<RowProblem>,
    },
}

/// A checked manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The directory that relative paths are resolved against.
    pub root: PathBuf,
    pub entries: Vec<Entry>,
}

fn opt(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Read a manifest's rows without judging their values. Fails only when the
/// file cannot be read, is not CSV, or its header is wrong.
pub fn read_raw(path: &Path) -> Result<Vec<RawRow>, ManifestError> {
    let bytes = std::fs::read(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_raw_bytes(path, &bytes)
}

fn read_raw_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<RawRow>, ManifestError> {
    let csv_err = |e: csv::Error| ManifestError::Csv {
        path: path.to_path_buf(),
        line: e
            .position()
            .map(|p| crate::csv_line::line_at(bytes, p.byte()))
            .unwrap_or(0),
        message: e.to_string(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::None)
        .from_reader(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ManifestError::NoHeader {
            path: path.to_path_buf(),
        });
    }
    let headers = reader.headers().map_err(csv_err)?.clone();
    if let (1, Some(only)) = (headers.len(), headers.get(0)) {
        if let Some(separator) = [';', '\t', '|'].into_iter().find(|c| only.contains(*c)) {
            return Err(ManifestError::Separator {
                path: path.to_path_buf(),
                header: only.to_string(),
                separator,
            });
        }
    }
    let mut index: [Option<usize>; 9] = [None; 9];
    let names: Vec<&str> = REQUIRED_COLUMNS
        .iter()
        .chain(OPTIONAL_COLUMNS.iter())
        .copied()
        .collect();
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase();
        match names.iter().position(|n| *n == h) {
            Some(k) if index[k].is_some() => {
                return Err(ManifestError::DuplicateColumn {
                    path: path.to_path_buf(),
                    column: h,
                })
            }
            Some(k) => index[k] = Some(i),
            None => {
                return Err(ManifestError::UnknownColumn {
                    path: path.to_path_buf(),
                    column: h,
                })
            }
        }
    }
    let missing: Vec<String> = REQUIRED_COLUMNS
        .iter()
        .enumerate()
        .filter(|(k, _)| index[*k].is_none())
        .map(|(_, n)| n.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(ManifestError::MissingColumns {
            path: path.to_path_buf(),
            missing,
        });
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        let line = record
            .position()
            .map(|p| crate::csv_line::line_at(bytes, p.byte()))
            .unwrap_or(0);
        let get = |k: usize| index[k].and_then(|i| record.get(i));
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        rows.push(RawRow {
            line,
            fields: (record.len(), headers.len()),
            path: get(0).unwrap_or("").trim().to_string(),
            label: get(1).unwrap_or("").trim().to_string(),
            patient_id: get(2).unwrap_or("").trim().to_string(),
            site: opt(get(3)),
            subtype: opt(get(4)),
            age: opt(get(5)),
            sex: opt(get(6)),
            view: opt(get(7)),
            center: opt(get(8)),
        });
    }
    Ok(rows)
}

/// Check each row's values; every problem is collected.
pub fn check_rows(rows: &[RawRow]) -> (Vec<Entry>, Vec<RowProblem>) {
    let mut entries = Vec::with_capacity(rows.len());
    let mut problems = Vec::new();
    for row in rows {
        let mut problem = |field: &'static str, value: &str, message: &str| {
            problems.push(RowProblem {
                line: row.line,
                path: row.path.clone(),
                field,
                value: value.to_string(),
                message: message.to_string(),
            })
        };
        let mut ok = true;
        let (found, header) = row.fields;
        if found != header {
            problem(
                "fields",
                &found.to_string(),
                &format!("the row has {found} field(s) where the header has {header} (a comma too many or too few?)"),
            );
            // Its other fields are not where the header says: not checked.
            continue;
        }
        // A quote left open takes the following lines (rows) into one
        // field, and the csv reader says nothing at the end of the file.
        let optional = [
            ("site", &row.site),
            ("subtype", &row.subtype),
            ("age", &row.age),
            ("sex", &row.sex),
            ("view", &row.view),
            ("center", &row.center),
        ];
        let broken = [
            ("path", Some(&row.path)),
            ("label", Some(&row.label)),
            ("patient_id", Some(&row.patient_id)),
        ]
        .into_iter()
        .chain(optional.into_iter().map(|(f, v)| (f, v.as_ref())))
        .find_map(|(f, v)| v.filter(|v| v.contains(['\n', '\r'])).map(|v| (f, v)));
        if let Some((field, value)) = broken {
            let start: String = value.chars().take(40).collect();
            problem(
                field,
                &start,
                "holds a line break: a quote (\") opened in this field is not closed, so the \
                 lines after it were read into it",
            );
            continue;
        }
        if row.path.is_empty() {
            problem("path", &row.path, "empty path");
            ok = false;
        }
        let label = match row.label.parse::<Label>() {
            Ok(l) => Some(l),
            Err(e) => {
                problem("label", &row.label, &e.to_string());
                None
            }
        };
        if row.patient_id.is_empty() {
            problem("patient_id", &row.patient_id, "empty patient id");
            ok = false;
        }
        let age = match row.age.as_deref() {
            None => None,
            Some(a) => match a.parse::<f64>() {
                Ok(v) if v.is_finite() && (0.0..=150.0).contains(&v) => Some(v),
                _ => {
                    problem("age", a, "age must be a number of years in 0..150");
                    ok = false;
                    None
                }
            },
        };
        if let (Some(label), true) = (label, ok) {
            let written = row.label.trim();
            entries.push(Entry {
                path: row.path.clone(),
                label,
                label_text: (written != label.as_str()).then(|| written.to_string()),
                patient_id: row.patient_id.clone(),
                site: row.site.clone(),
                subtype: row.subtype.clone(),
                age,
                sex: row.sex.clone(),
                view: row.view.clone(),
                center: row.center.clone(),
            });
        }
    }
    (entries, problems)
}

impl Manifest {
    /// Read and check a manifest; any bad row fails the whole load, with every
    /// bad row listed.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let rows = read_raw(path)?;
        if rows.is_empty() {
            return Err(ManifestError::Empty {
                path: path.to_path_buf(),
            });
        }
        let (entries, mut problems) = check_rows(&rows);
        // One file under two rows would put an image on both sides of a
        // split (and be blamed on its patient): named here as `dataset
        // check` names it.
        let mut seen: HashMap<String, u64> = HashMap::new();
        // (A row with the wrong number of fields is reported as such.)
        for row in rows
            .iter()
            .filter(|r| !r.path.is_empty() && r.fields.0 == r.fields.1)
        {
            let key = crate::dataset::paths::normalise(&row.path);
            match seen.get(&key) {
                Some(&first) => problems.push(RowProblem {
                    line: row.line,
                    path: row.path.clone(),
                    field: "path",
                    value: row.path.clone(),
                    message: format!("same file as line {first}"),
                }),
                None => {
                    seen.insert(key, row.line);
                }
            }
        }
        problems.sort_by_key(|p| p.line);
        if !problems.is_empty() {
            return Err(ManifestError::Rows {
                path: path.to_path_buf(),
                problems,
            });
        }
        Ok(Manifest {
            root: manifest_root(path),
            entries,
        })
    }

    /// Write the manifest as CSV, with the optional columns that any entry uses.
    pub fn write(&self, path: &Path) -> Result<(), ManifestError> {
        let io = |source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::write(path, self.to_csv()).map_err(io)
    }

    pub fn to_csv(&self) -> String {
        let used: Vec<bool> = OPTIONAL_COLUMNS
            .iter()
            .enumerate()
            .map(|(k, _)| self.entries.iter().any(|e| optional_field(e, k).is_some()))
            .collect();
        let mut writer = csv::Writer::from_writer(Vec::new());
        let mut header: Vec<&str> = REQUIRED_COLUMNS.to_vec();
        header.extend(
            OPTIONAL_COLUMNS
                .iter()
                .zip(&used)
                .filter(|(_, u)| **u)
                .map(|(c, _)| *c),
        );
        // Writing to a Vec cannot fail.
        let _ = writer.write_record(&header);
        for e in &self.entries {
            let mut rec = vec![
                e.path.clone(),
                e.label_as_written().to_string(),
                e.patient_id.clone(),
            ];
            for (k, u) in used.iter().enumerate() {
                if *u {
                    rec.push(optional_field(e, k).unwrap_or_default());
                }
            }
            let _ = writer.write_record(&rec);
        }
        String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
    }

    /// The absolute (or root-relative) file path of an entry.
    pub fn resolve(&self, entry: &Entry) -> PathBuf {
        self.root.join(&entry.path)
    }

    /// Number of images per label, in [`Label::ALL`] order.
    pub fn counts(&self) -> [usize; 3] {
        let mut c = [0; 3];
        for e in &self.entries {
            c[Label::ALL.iter().position(|l| *l == e.label).unwrap_or(0)] += 1;
        }
        c
    }
}

fn optional_field(e: &Entry, k: usize) -> Option<String> {
    match k {
        0 => e.site.clone(),
        1 => e.subtype.clone(),
        2 => e.age.map(|a| format!("{a}")),
        3 => e.sex.clone(),
        4 => e.view.clone(),
        _ => e.center.clone(),
    }
}

/// The directory relative paths in a manifest are resolved against.
pub fn manifest_root(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<RawRow>, ManifestError> {
        read_raw_bytes(Path::new("m.csv"), text.as_bytes())
    }

    #[test]
    fn reads_required_and_optional_columns_in_any_order() {
        let rows =
            parse("label,patient_id,path,age\nNormal,p1,a.png,31\nmalignant,p2,b.png,\n").unwrap();
        let (entries, problems) = check_rows(&rows);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(entries[0].label, Label::Normal);
        assert_eq!(entries[0].label_as_written(), "Normal");
        assert_eq!(entries[1].label_text, None);
        assert_eq!(entries[1].label_as_written(), "malignant");
        assert_eq!(entries[0].age, Some(31.0));
        assert_eq!(entries[1].age, None);
        assert_eq!(rows[1].line, 3);
    }

    #[test]
    fn line_numbers_are_the_files_whatever_its_line_endings() {
        // Excel and Python's csv module write CRLF; quoted fields may hold
        // line breaks; blank lines are skipped but counted.
        let lf = "path,label,patient_id\na.png,normal,p1\n\nb.png,benign,p2\n\"c\nd.png\",normal,p3\ne.png,normal,p4\n";
        let crlf = lf.replace('\n', "\r\n");
        for text in [lf, crlf.as_str()] {
            let lines: Vec<u64> = parse(text).unwrap().iter().map(|r| r.line).collect();
            assert_eq!(lines, [2, 4, 5, 7], "{text:?}");
        }
    }

    #[test]
    fn a_quote_left_open_is_found_not_read_as_one_long_field() {
        let text = "path,label,patient_id,subtype\na.png,benign,p1,\"osteochondroma\n\
                    b.png,malignant,p2,osteosarcoma\nc.png,normal,p3,\n";
        let rows = parse(text).unwrap();
        let (entries, problems) = check_rows(&rows);
        assert!(entries.is_empty(), "{entries:?}");
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert_eq!((p.line, p.field), (2, "subtype"));
        assert!(p.message.contains("not closed"), "{}", p.message);
    }

    #[test]
    fn loading_names_a_file_listed_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.csv");
        std::fs::write(
            &path,
            "path,label,patient_id\na.png,normal,p1\nb.png,benign,p2\n./a.png,normal,p3\n",
        )
        .unwrap();
        let err = Manifest::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 4: ./a.png: path = \"./a.png\": same file as line 2"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_file_and_another_separator_are_named() {
        let err = parse("").unwrap_err().to_string();
        assert!(err.contains("the file is empty"), "{err}");
        let err = parse("path;label;patient_id\na.png;normal;p1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("seems to use ';'"), "{err}");
    }

    #[test]
    fn header_errors_name_the_column() {
        let err = parse("path,label\na.png,normal\n").unwrap_err();
        assert!(err.to_string().contains("patient_id"), "{err}");
        let err = parse("path,label,patient\na.png,normal,p\n").unwrap_err();
        assert!(err.to_string().contains("\"patient\""), "{err}");
    }

    #[test]
    fn every_bad_row_is_reported_with_its_line() {
        let rows =
            parse("path,label,patient_id,age\na.png,tumor,p1,\n,normal,p2,\nc.png,benign,,x\n")
                .unwrap();
        let (entries, problems) = check_rows(&rows);
        assert!(entries.is_empty());
        let fields: Vec<_> = problems.iter().map(|p| (p.line, p.field)).collect();
        assert_eq!(
            fields,
            vec![(2, "label"), (3, "path"), (4, "patient_id"), (4, "age")]
        );
        assert!(problems[0].to_string().contains("\"tumor\""));
        assert_eq!(
            problems[0].to_string(),
            "line 2: a.png: label = \"tumor\": unknown label \"tumor\" (expected normal, benign or malignant)"
        );
    }

    #[test]
    fn a_row_with_too_many_or_too_few_fields_is_one_problem_and_reading_goes_on() {
        let rows = parse(
            "path,label,patient_id\na.png,normal,p1\nb,x.png,benign,p2\nc.png,malignant\nd.png,tumor,p4\n",
        )
        .unwrap();
        let (entries, problems) = check_rows(&rows);
        assert_eq!(entries.len(), 1);
        let found: Vec<_> = problems
            .iter()
            .map(|p| (p.line, p.field, p.value.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![
                (3, "fields", "4"),
                (4, "fields", "2"),
                (5, "label", "tumor")
            ]
        );
        assert!(
            problems[0]
                .to_string()
                .contains("4 field(s) where the header has 3"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn csv_round_trip() {
        let mut e = Entry::new("img/a.png", Label::Benign, "p1");
        e.site = Some("distal femur".into());
        e.age = Some(12.0);
        let mut spelled = Entry::new("img/c.png", Label::Malignant, "p3");
        spelled.label_text = Some("Malignant".into());
        let m = Manifest {
            root: PathBuf::from("."),
            entries: vec![e, Entry::new("img/b.png", Label::Normal, "p2"), spelled],
        };
        let rows = parse(&m.to_csv()).unwrap();
        let (entries, problems) = check_rows(&rows);
        assert!(problems.is_empty());
        assert_eq!(entries, m.entries);
    }
}
