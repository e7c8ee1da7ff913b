//! Split protocols and the split plan.
//!
//! # Grouping algorithm (deterministic, documented)
//! For repetition `r` (0-based) the seed is `seed + r`. Images are gathered by
//! patient; a patient whose images carry different labels is refused. Each
//! patient gets the key `SHA-256("<seed>:<patient_id>")` (hex). Then, for each
//! label in the order normal, benign, malignant, the label's patients are
//! taken in order of (image count descending, key ascending) and each goes to
//! the group with, in this order of preference, the fewest images of that
//! label, the fewest images overall, the lowest index. So every patient's
//! images share one group, each group gets an equal share of every label
//! (within one patient's images when the counts do not divide), and nothing
//! depends on hash-map order, thread count or platform.
//!
//! # Rounds
//! - `kfold`: k rounds per task; round i tests group i-1 (1-based rounds).
//! - `leave-p-groups-out`: one round for every p-subset of the k groups, in
//!   lexicographic order ((0,1), (0,2), ... for p = 2).
//! - `paper`: screening by k-fold, malignancy by leave-p-groups-out (k = 5,
//!   p = 2 gives the paper's 5 + 10 rounds).
//!
//! A task keeps only its own images (malignancy: tumours). With repeats,
//! rounds are numbered on across repetitions and carry their `repeat`.
//!
//! Every list of paths (groups, training and test sets) is in canonical
//! order, by patient id then path, so a manifest whose rows were reordered
//! gives the same plan, the same hash and the same training order.
//!
//! # The plan document
//! JSON with `plan_sha256` = SHA-256 of the compact JSON of every other
//! field, in the order written (see [`SplitPlan::compute_hash`]).

mod assign;
mod plan;
mod validation;

pub use assign::assign_groups;
pub use plan::{make_plan, Repeat, Round, SplitPlan, PLAN_VERSION};
pub use validation::carve_validation;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldsError {
    #[error("patient {patient:?} has images labelled {first} ({first_path}) and {second} ({second_path}); a patient must have one label")]
    ConflictingLabels {
        patient: String,
        first: String,
        first_path: String,
        second: String,
        second_path: String,
    },
    #[error("protocol.tasks includes {task}, but the data set has no {class} image: a {task} round needs both {negative} and {positive} images; leave {task} out of protocol.tasks, or add {class} images")]
    ClassMissing {
        task: String,
        class: &'static str,
        negative: &'static str,
        positive: &'static str,
    },
    #[error("protocol.groups = {groups} but the cohort has only {patients} patient(s)")]
    TooFewPatients { groups: usize, patients: usize },
    #[error("task {task}, round {round}: the {side} set is empty (the cohort is too small for protocol.groups = {groups})")]
    EmptySide {
        task: String,
        round: u32,
        side: &'static str,
        groups: usize,
    },
    #[error("task {task}, round {round}: the training set has no {missing} image (the cohort has too few {missing} patients for protocol.groups = {groups}); a round cannot train on one class; protocol.tasks can leave the task out")]
    OneClassTraining {
        task: String,
        round: u32,
        missing: &'static str,
        groups: usize,
    },
    #[error("split plan: task {task}, round {round}: patient {patient:?} is in both the training and the test set")]
    Leak {
        task: String,
        round: u32,
        patient: String,
    },
    #[error("split plan: task {task}, round {round}: image {path:?} is not in the manifest")]
    UnknownImage {
        task: String,
        round: u32,
        path: String,
    },
    #[error("split plan: plan_sha256 is {stated} but the plan hashes to {actual}; it was edited or damaged")]
    HashMismatch { stated: String, actual: String },
    #[error("split plan: {0}: it is not the plan its own protocol (kind, groups, seed, repeats, tasks) gives on this manifest, so it was edited (and its hash made again) or made from another data set")]
    NotRebuilt(String),
    #[error("split plan: not valid JSON: {0}")]
    Json(String),
    #[error("split plan: version {0} is not supported (this build reads {PLAN_VERSION})")]
    Version(u32),
}

impl FoldsError {
    /// The task whose rounds could not be built, where the error is about
    /// one task's rounds rather than the whole cohort.
    pub fn task(&self) -> Option<&str> {
        match self {
            FoldsError::EmptySide { task, .. }
            | FoldsError::OneClassTraining { task, .. }
            | FoldsError::Leak { task, .. }
            | FoldsError::UnknownImage { task, .. } => Some(task),
            _ => None,
        }
    }
}
