//! Reading a spec: TOML parsing, `--set key=value` overrides, and collecting
//! every problem before giving up.
//!
//! Structural checks work key by key: each key of each section is
//! deserialised alone into its section's type (every field has a default), so
//! one wrong key does not hide the next. Semantic checks (ranges, combinations)
//! follow in [`super::validate`].

use super::Spec;
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::Path;
use toml::{Table, Value};

/// One problem in a spec, naming the field (dotted path) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    pub field: String,
    pub value: Option<String>,
    pub message: String,
}

impl SpecProblem {
    pub fn new(
        field: impl Into<String>,
        value: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        SpecProblem {
            field: field.into(),
            value,
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{} = {}: {}", self.field, v, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read spec {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: not UTF-8 text (a spec is a UTF-8 TOML file)")]
    NotUtf8 { path: String, line: usize },
    #[error("{source_name}: not valid TOML: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    #[error("--set {0:?}: expected key=value, e.g. --set train.epochs=5")]
    BadOverride(String),
    #[error("{source_name}: {what} is nested {depth} levels deep; a spec's keys are at most {MAX_KEY_DEPTH} (e.g. train.cpu.epochs is 3)")]
    TooDeep {
        source_name: String,
        what: String,
        depth: usize,
    },
    #[error("{source_name}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        source_name: String,
        problems: Vec<SpecProblem>,
    },
}

impl SpecError {
    /// The problems, when the spec parsed but was invalid.
    pub fn problems(&self) -> &[SpecProblem] {
        match self {
            SpecError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// A `--set key=value` override. The value is read as a TOML value when it
/// parses as one (`5`, `1e-4`, `true`, `["screening"]`), else as a string.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub key: String,
    pub value: Value,
}

/// The deepest a spec's keys may nest (its own go 3 deep); far more than
/// any spec needs, far less than would overflow a stack.
pub const MAX_KEY_DEPTH: usize = 32;

/// How deep tables and arrays nest in `table` (its own keys are level 1),
/// counted without recursion.
fn nesting(table: &Table) -> usize {
    let mut deepest = 0;
    let mut left: Vec<(&Value, usize)> = table.values().map(|v| (v, 1)).collect();
    while let Some((v, depth)) = left.pop() {
        deepest = deepest.max(depth);
        match v {
            Value::Table(t) => left.extend(t.values().map(|c| (c, depth + 1))),
            Value::Array(a) => left.extend(a.iter().map(|c| (c, depth + 1))),
            _ => {}
        }
    }
    deepest
}

/// `key`, cut to 60 characters for a message.
fn shorten(key: &str) -> String {
    match key.char_indices().nth(60) {
        Some((at, _)) => format!("{}...", &key[..at]),
        None => key.to_string(),
    }
}

/// The line and an upper bound of the nesting of the deepest dotted key or
/// table header in TOML `text` (its dots plus one, quoted dots counted too),
/// found before the text is parsed; `None` for text without keys. Only
/// lines that look like a header or a `key =` count, so prose in a
/// multi-line string does not.
fn deepest_key(text: &str) -> Option<(usize, usize)> {
    let key_like = |k: &str| {
        !k.trim().is_empty()
            && k.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\'' | ' ' | '\t')
            })
    };
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.trim_start();
            let key = match line.strip_prefix('[') {
                Some(header) => header.trim_start_matches('[').split(']').next()?,
                None => line.split_once('=')?.0,
            };
            key_like(key).then(|| (i + 1, key.matches('.').count() + 1))
        })
        .max_by_key(|&(_, depth)| depth)
}

impl std::str::FromStr for Override {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (key, raw) = s
            .split_once('=')
            .ok_or_else(|| SpecError::BadOverride(s.to_string()))?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(SpecError::BadOverride(s.to_string()));
        }
        // A key thousands of levels deep would be built, checked and
        // dropped by recursion deep enough to overflow the stack.
        let depth = key.split('.').count();
        if depth > MAX_KEY_DEPTH {
            return Err(SpecError::TooDeep {
                source_name: "--set".into(),
                what: format!("key {:?}", shorten(key)),
                depth,
            });
        }
        let raw = raw.trim();
        let value = toml::from_str::<Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(raw.to_string()));
        Ok(Override {
            key: key.to_string(),
            value,
        })
    }
}

impl Spec {
    /// Read a spec file, apply overrides, and check it. Relative paths in the
    /// spec are resolved against the file's directory, except a manifest
    /// given by an override (`--set dataset.manifest=...`, typed at a
    /// prompt): against the current directory. A manifest given so is the
    /// data set to use: a `[dataset.synthetic]` in the file is not generated
    /// in its place when it is missing. (Relative `train.pretrained` stays
    /// against the file's directory, and must exist there: a path that
    /// does not is named before anything is submitted.)
    pub fn load(path: &Path, overrides: &[Override]) -> Result<Spec, SpecError> {
        let bytes = std::fs::read(path).map_err(|source| SpecError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            SpecError::NotUtf8 {
                path: path.display().to_string(),
                line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
            }
        })?;
        let mut spec = Spec::parse(&text, &path.display().to_string(), overrides)?;
        spec.base_dir = crate::manifest::manifest_root(path);
        let given = |key: &str| overrides.iter().any(|o| o.key == key);
        let from_here = |p: &mut String| {
            if Path::new(p.as_str()).is_relative() {
                if let Ok(abs) = std::path::absolute(p.as_str()) {
                    *p = abs.display().to_string();
                }
            }
        };
        if given("dataset.manifest") {
            from_here(&mut spec.dataset.manifest);
            if !overrides
                .iter()
                .any(|o| o.key.starts_with("dataset.synthetic"))
            {
                spec.dataset.synthetic = None;
            }
        }
        Ok(spec)
    }

    /// Parse spec text; `source_name` names it in messages.
    pub fn parse(text: &str, source_name: &str, overrides: &[Override]) -> Result<Spec, SpecError> {
        Spec::parse_with(text, source_name, overrides, false)
    }

    /// Parse a spec that was accepted and stored earlier (by the
    /// coordinator, or leased to a worker): rules tightened since then
    /// ([`TIGHTENED`]) are not applied, so an upgrade never strands an
    /// experiment already submitted.
    pub fn parse_stored(text: &str, source_name: &str) -> Result<Spec, SpecError> {
        Spec::parse_with(text, source_name, &[], true)
    }

    fn parse_with(
        text: &str,
        source_name: &str,
        overrides: &[Override],
        stored: bool,
    ) -> Result<Spec, SpecError> {
        if let Some((line, depth)) = deepest_key(text).filter(|&(_, d)| d > MAX_KEY_DEPTH) {
            return Err(SpecError::TooDeep {
                source_name: source_name.to_string(),
                what: format!("the key on line {line}"),
                depth,
            });
        }
        let mut table: Table = toml::from_str(text).map_err(|e| SpecError::Syntax {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        for o in overrides {
            if let Err(p) = apply_override(&mut table, o) {
                problems.push(p);
            }
            follow_on_cpu(&mut table, o, overrides);
        }
        // Nesting the line scan cannot see (inline tables within inline
        // tables, an override's value), measured without recursion before
        // anything recursive (checks, clones) walks it.
        let depth = nesting(&table);
        if depth > MAX_KEY_DEPTH {
            return Err(SpecError::TooDeep {
                source_name: source_name.to_string(),
                what: "a value".into(),
                depth,
            });
        }
        default_warmup_fits(&mut table);
        let structural = structural_problems(&table);
        // Drop the keys that failed so the rest can still be range-checked:
        // one run reports every problem.
        for p in &structural {
            remove_key(&mut table, &p.field);
        }
        problems.extend(structural);
        // A problem with a value given by --set is the command line's, not the file's.
        let invalid = |problems: Vec<SpecProblem>| {
            // The warm-up hint helps only when train.epochs itself is fine.
            let epochs_bad = problems.iter().any(|p| p.field == "train.epochs");
            // A --set train.K the spec's [train.cpu] K followed is one
            // problem, the command line's, not also one in the file.
            let fields: Vec<String> = problems.iter().map(|p| p.field.clone()).collect();
            let given = |key: &str| overrides.iter().any(|o| o.key == key);
            let followed = |field: &str| {
                field.strip_prefix("train.cpu.").is_some_and(|k| {
                    let key = format!("train.{k}");
                    !given(field) && given(&key) && fields.contains(&key)
                })
            };
            SpecError::Invalid {
                source_name: source_name.to_string(),
                problems: problems
                    .into_iter()
                    .filter(|p| !followed(&p.field))
                    .map(|mut p| {
                        let given = |key: &str| overrides.iter().any(|o| o.key == key);
                        if given(&p.field) && p.message.contains("expected a string") {
                            p.message.push_str(&format!(
                                " (given by --set; quote text: --set '{}=\"...\"')",
                                p.field
                            ));
                        } else if given(&p.field) {
                            p.message.push_str(" (given by --set)");
                        } else if p.field == "train.warmup_epochs"
                            && given("train.epochs")
                            && !epochs_bad
                        {
                            p.message.push_str(
                                " (train.epochs given by --set; add --set train.warmup_epochs=0)",
                            );
                        }
                        p
                    })
                    .collect(),
            }
        };
        let spec: Spec = match Value::Table(table).try_into() {
            Ok(spec) => spec,
            Err(e) => {
                let e: toml::de::Error = e;
                problems.push(SpecProblem::new("(spec)", None, e.message().to_string()));
                return Err(invalid(problems));
            }
        };
        problems.extend(
            super::validate::problems(&spec)
                .into_iter()
                .filter(|p| !(stored && TIGHTENED.contains(&p.field.as_str()))),
        );
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        Ok(spec)
    }
}

/// Fields whose rule became stricter after specs using the old one could
/// be stored: `resources.devices_per_job` was accepted up to 64 (and
/// ignored) before it had to be 1; a batch size of 1 was accepted before
/// it had to be at least 2 (stored jobs run as before, and fail where
/// batch norm cannot cope).
pub const TIGHTENED: &[&str] = &[
    "resources.devices_per_job",
    "train.batch_size",
    // The 10,000-round limit, newer than `serve --max-jobs` above it.
    "protocol",
    "train.cpu.batch_size",
];

fn remove_key(table: &mut Table, dotted: &str) {
    match dotted.split_once('.') {
        None => {
            table.remove(dotted);
        }
        Some((head, rest)) => {
            if let Some(Value::Table(t)) = table.get_mut(head) {
                remove_key(t, rest);
            }
        }
    }
}

fn apply_override(table: &mut Table, o: &Override) -> Result<(), SpecProblem> {
    let parts: Vec<&str> = o.key.split('.').collect();
    let mut cur = table;
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            cur.insert(part.to_string(), o.value.clone());
            return Ok(());
        }
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = match entry {
            Value::Table(t) => t,
            other => {
                return Err(SpecProblem::new(
                    parts[..=i].join("."),
                    Some(other.to_string()),
                    format!("is not a table, so --set {} cannot apply", o.key),
                ))
            }
        };
    }
    Ok(())
}

/// Keys `[train.cpu]` can set instead of `[train]`'s on a CPU.
pub const CPU_KEYS: [&str; 5] = ["arch", "image_size", "epochs", "batch_size", "lr"];

/// `--set train.K=V` is the user's latest word on every device: where the
/// spec's `[train.cpu]` also sets K, it is set to V there too (otherwise a
/// CPU run would silently keep the file's `[train.cpu]` value), unless an
/// override sets `train.cpu.K` itself, which then holds on the CPU whatever
/// the order of the two.
fn follow_on_cpu(table: &mut Table, o: &Override, all: &[Override]) {
    let Some(key) = o.key.strip_prefix("train.") else {
        return;
    };
    if !CPU_KEYS.contains(&key) || all.iter().any(|a| a.key == format!("train.cpu.{key}")) {
        return;
    }
    let cpu = table
        .get_mut("train")
        .and_then(Value::as_table_mut)
        .and_then(|t| t.get_mut("cpu"))
        .and_then(Value::as_table_mut);
    if let Some(cpu) = cpu {
        if cpu.contains_key(key) {
            cpu.insert(key.to_string(), o.value.clone());
        }
    }
}

/// The default warm-up (1 epoch) shortened to fit a run of fewer epochs
/// (`--set train.epochs=1` needs no `train.warmup_epochs=0` beside it); a
/// warm-up the spec sets itself is checked as written.
fn default_warmup_fits(table: &mut Table) {
    let Some(train) = table.get_mut("train").and_then(Value::as_table_mut) else {
        return;
    };
    if train.contains_key("warmup_epochs") {
        return;
    }
    let default = super::TrainSpec::default().warmup_epochs as i64;
    if let Some(epochs) = train.get("epochs").and_then(Value::as_integer) {
        if (1..=default).contains(&epochs) {
            train.insert("warmup_epochs".into(), Value::Integer(epochs - 1));
        }
    }
}

/// Check every key alone against its section's type.
fn structural_problems(table: &Table) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    for (key, value) in table {
        let nested: Option<fn(&Table, &str) -> Vec<SpecProblem>> = match key.as_str() {
            "dataset" => Some(check_section::<super::DatasetSpec>),
            "protocol" => Some(check_section::<super::ProtocolSpec>),
            "train" => Some(check_section::<super::TrainSpec>),
            "resources" => Some(check_section::<super::ResourcesSpec>),
            "retry" => Some(check_section::<super::RetrySpec>),
            _ => None,
        };
        match (nested, value) {
            (Some(check), Value::Table(t)) => problems.extend(check(t, key)),
            _ => problems.extend(check_key::<Spec>(key, value, "")),
        }
    }
    problems
}

fn check_section<T: DeserializeOwned>(table: &Table, prefix: &str) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    for (key, value) in table {
        let nested: Option<fn(&Table, &str) -> Vec<SpecProblem>> = match (prefix, key.as_str()) {
            ("train", "augment") => Some(check_section::<super::AugmentSpec>),
            ("train", "cpu") => Some(check_section::<super::CpuSpec>),
            ("dataset", "synthetic") => Some(check_section::<super::SyntheticSpec>),
            _ => None,
        };
        match (nested, value) {
            (Some(check), Value::Table(t)) => {
                // The section itself must accept the key before its members are checked.
                problems.extend(check(t, &format!("{prefix}.{key}")))
            }
            _ => problems.extend(check_key::<T>(key, value, prefix)),
        }
    }
    problems
}

/// serde's Rust type names in words a spec's author knows.
fn plain_types(message: &str) -> String {
    let mut text = message.to_string();
    for (rust, words) in [
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number of at least 0"),
        ("expected usize", "expected a whole number of at least 0"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        (
            "expected a sequence",
            "expected a list in brackets, e.g. [\"screening\"]",
        ),
    ] {
        if let Some(rest) = text.strip_suffix(rust) {
            text = format!("{rest}{words}");
        }
    }
    if let Some(at) = text.find("expected struct ") {
        text = format!("{}expected a table of settings", &text[..at]);
    }
    text
}

fn check_key<T: DeserializeOwned>(key: &str, value: &Value, prefix: &str) -> Option<SpecProblem> {
    let mut single = Table::new();
    single.insert(key.to_string(), value.clone());
    let field = if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    };
    match Value::Table(single).try_into::<T>() {
        Ok(_) => None,
        Err(e) => {
            let message = e.message().replace("unknown field", "unknown key");
            let message = message
                .split(", expected")
                .next()
                .filter(|_| message.starts_with("unknown key"))
                .map(|m| {
                    format!(
                        "{m} (not a key of [{}])",
                        if prefix.is_empty() {
                            "top level"
                        } else {
                            prefix
                        }
                    )
                })
                .unwrap_or(message);
            Some(SpecProblem::new(
                field,
                Some(value.to_string()),
                plain_types(&message),
            ))
        }
    }
}
