//! Table 1 of the study as data: the subtypes, sites and sexes of each
//! label with their counts, the age moments, and the prior on age at
//! presentation for each subtype (which the cohort rescales to the table).

use crate::label::Label;

/// Where a tumour sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Site {
    DistalFemur,
    ProximalTibia,
    ProximalFibula,
}

impl Site {
    pub const ALL: [Site; 3] = [Site::DistalFemur, Site::ProximalTibia, Site::ProximalFibula];

    pub fn as_str(self) -> &'static str {
        match self {
            Site::DistalFemur => "distal_femur",
            Site::ProximalTibia => "proximal_tibia",
            Site::ProximalFibula => "proximal_fibula",
        }
    }
}

/// Histological subtype of a tumour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subtype {
    Osteosarcoma,
    Chondrosarcoma,
    EwingSarcoma,
    OtherMalignant,
    GiantCellTumour,
    NonOssifyingFibroma,
    Chondroma,
    OtherBenign,
}

impl Subtype {
    pub const ALL: [Subtype; 8] = [
        Subtype::Osteosarcoma,
        Subtype::Chondrosarcoma,
        Subtype::EwingSarcoma,
        Subtype::OtherMalignant,
        Subtype::GiantCellTumour,
        Subtype::NonOssifyingFibroma,
        Subtype::Chondroma,
        Subtype::OtherBenign,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Subtype::Osteosarcoma => "osteosarcoma",
            Subtype::Chondrosarcoma => "chondrosarcoma",
            Subtype::EwingSarcoma => "ewing_sarcoma",
            Subtype::OtherMalignant => "other_malignant",
            Subtype::GiantCellTumour => "giant_cell_tumour",
            Subtype::NonOssifyingFibroma => "non_ossifying_fibroma",
            Subtype::Chondroma => "chondroma",
            Subtype::OtherBenign => "other_benign",
        }
    }

    pub fn label(self) -> Label {
        match self {
            Subtype::Osteosarcoma
            | Subtype::Chondrosarcoma
            | Subtype::EwingSarcoma
            | Subtype::OtherMalignant => Label::Malignant,
            _ => Label::Benign,
        }
    }

    /// Prior for the age at presentation (mean, SD in years) before the
    /// per-label rescaling; osteosarcoma has a second, elderly peak.
    pub(super) fn age_prior(self) -> (f64, f64) {
        match self {
            Subtype::Osteosarcoma => (17.0, 7.0),
            Subtype::Chondrosarcoma => (48.0, 14.0),
            Subtype::EwingSarcoma => (14.0, 5.0),
            Subtype::OtherMalignant => (42.0, 18.0),
            Subtype::GiantCellTumour => (31.0, 9.0),
            Subtype::NonOssifyingFibroma => (14.0, 4.0),
            Subtype::Chondroma => (36.0, 14.0),
            Subtype::OtherBenign => (24.0, 15.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sex {
    Male,
    Female,
}

impl Sex {
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Male => "M",
            Sex::Female => "F",
        }
    }
}

/// The acquiring centers; assigned independently of the label.
pub const CENTERS: [&str; 3] = ["center_a", "center_b", "center_c"];

/// Youngest and oldest age drawn, in years.
pub const AGE_RANGE: (f64, f64) = (5.0, 85.0);

/// Table 1 for one label: counts per subtype, site and sex, and age moments.
pub(super) struct Table {
    pub(super) subtypes: &'static [(Subtype, f64)],
    pub(super) sites: &'static [(Site, f64)],
    pub(super) sexes: [f64; 2],
    pub(super) age_mean: f64,
    pub(super) age_sd: f64,
}

pub(super) fn table(label: Label) -> Table {
    match label {
        Label::Malignant => Table {
            subtypes: &[
                (Subtype::Osteosarcoma, 133.0),
                (Subtype::Chondrosarcoma, 20.0),
                (Subtype::EwingSarcoma, 5.0),
                (Subtype::OtherMalignant, 22.0),
            ],
            sites: &[
                (Site::DistalFemur, 91.0),
                (Site::ProximalTibia, 76.0),
                (Site::ProximalFibula, 13.0),
            ],
            sexes: [88.0, 92.0],
            age_mean: 24.5,
            age_sd: 17.8,
        },
        Label::Benign => Table {
            subtypes: &[
                (Subtype::GiantCellTumour, 36.0),
                (Subtype::NonOssifyingFibroma, 15.0),
                (Subtype::Chondroma, 10.0),
                (Subtype::OtherBenign, 19.0),
            ],
            sites: &[
                (Site::DistalFemur, 29.0),
                (Site::ProximalTibia, 43.0),
                (Site::ProximalFibula, 8.0),
            ],
            sexes: [41.0, 39.0],
            age_mean: 29.4,
            age_sd: 16.3,
        },
        Label::Normal => Table {
            subtypes: &[],
            sites: &[],
            sexes: [122.0, 138.0],
            age_mean: 36.1,
            age_sd: 15.6,
        },
    }
}
