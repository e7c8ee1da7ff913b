//! Image labels and classification tasks.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The three-way label of one image, as written in a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Normal,
    Benign,
    Malignant,
}

impl Label {
    /// All labels in their canonical order (used wherever a stable order matters).
    pub const ALL: [Label; 3] = [Label::Normal, Label::Benign, Label::Malignant];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Normal => "normal",
            Label::Benign => "benign",
            Label::Malignant => "malignant",
        }
    }

    pub fn is_tumour(self) -> bool {
        !matches!(self, Label::Normal)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A label string that is not `normal`, `benign` or `malignant`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown label {0:?} (expected normal, benign or malignant)")]
pub struct UnknownLabel(pub String);

impl FromStr for Label {
    type Err = UnknownLabel;

    /// Case-insensitive, surrounding white space ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "normal" => Ok(Label::Normal),
            "benign" => Ok(Label::Benign),
            "malignant" => Ok(Label::Malignant),
            _ => Err(UnknownLabel(s.to_string())),
        }
    }
}

/// A binary classification task over the cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Normal vs tumour (benign or malignant); all images take part.
    Screening,
    /// Benign vs malignant; tumour images only.
    Malignancy,
}

impl Task {
    pub const ALL: [Task; 2] = [Task::Screening, Task::Malignancy];

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Screening => "screening",
            Task::Malignancy => "malignancy",
        }
    }

    /// Whether an image with this label takes part in the task.
    pub fn includes(self, label: Label) -> bool {
        match self {
            Task::Screening => true,
            Task::Malignancy => label.is_tumour(),
        }
    }

    /// Whether this label is the task's positive class (tumour for screening,
    /// malignant for malignancy). Scores are the positive class's probability.
    pub fn is_positive(self, label: Label) -> bool {
        match self {
            Task::Screening => label.is_tumour(),
            Task::Malignancy => label == Label::Malignant,
        }
    }

    /// Names of the negative and positive class, for reports.
    pub fn class_names(self) -> (&'static str, &'static str) {
        match self {
            Task::Screening => ("normal", "tumour"),
            Task::Malignancy => ("benign", "malignant"),
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Task {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "screening" => Ok(Task::Screening),
            "malignancy" => Ok(Task::Malignancy),
            other => Err(format!(
                "unknown task {other:?} (expected screening or malignancy)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_case_insensitively() {
        assert_eq!("Normal".parse::<Label>(), Ok(Label::Normal));
        assert_eq!(" MALIGNANT ".parse::<Label>(), Ok(Label::Malignant));
        assert_eq!("benign".parse::<Label>(), Ok(Label::Benign));
        assert!("tumour".parse::<Label>().is_err());
    }

    #[test]
    fn positive_classes_follow_the_paper() {
        assert!(Task::Screening.is_positive(Label::Benign));
        assert!(Task::Screening.is_positive(Label::Malignant));
        assert!(!Task::Screening.is_positive(Label::Normal));
        assert!(Task::Malignancy.is_positive(Label::Malignant));
        assert!(!Task::Malignancy.is_positive(Label::Benign));
        assert!(!Task::Malignancy.includes(Label::Normal));
    }
}
