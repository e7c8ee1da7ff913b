//! crossfold's common library.
//!
//! Everything here is pure Rust and builds without libtorch, so the CLI and
//! the coordinator can use it on machines with no GPU stack.
//!
//! - [`label`]: the three-way image label and the two classification tasks.
//! - [`spec`]: the versioned TOML experiment spec, its validation and `--set` overrides.
//! - [`manifest`]: the data-set manifest CSV.
//! - [`dataset`]: checking a data set, importing a folder tree, fingerprinting.
//! - [`folds`]: split protocols and the split plan.
//! - [`metrics`]: per-round statistics, ROC/AUC with confidence intervals, summaries.
//! - [`synth`]: the synthetic knee-radiograph cohort.
//! - [`experiment`]: getting a spec's data set and split plan ready.
//! - [`imaging`]: decoding PNG, JPEG and DICOM to grayscale, resizing to the network's square input.
//! - [`hash`]: SHA-256 helpers shared by the modules above.
//! - [`listing`]: the first few of many problems, for error messages.
//! - [`csv_line`]: line numbers of CSV records, whatever the line endings.
//! - [`folder`]: creating output folders, naming a file in the way.
//! - [`flock`]: advisory locks that keep two processes out of one folder.
//! - [`logging`]: the binaries' log set-up (text or JSON, `RUST_LOG`).

pub mod csv_line;
pub mod dataset;
pub mod experiment;
pub mod flock;
pub mod folder;
pub mod folds;
pub mod hash;
pub mod imaging;
pub mod label;
pub mod listing;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod spec;
pub mod synth;
