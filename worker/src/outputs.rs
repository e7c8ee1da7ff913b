//! Writing a job's outputs: predictions.csv, history.csv, metrics.json,
//! result.json, and the checkpoint (model.safetensors + model.json).
//!
//! Every file is first written under a hidden temporary name beside its
//! final one, and only when all are written are they renamed into place:
//! a write that fails (a full disk) leaves an earlier run's outputs whole,
//! not new predictions beside an old checkpoint. `result.json` marks a
//! complete set: an earlier one is removed before the renames and the new
//! one renamed last, so a process killed among them leaves a folder
//! without `result.json`, never one whose `result.json` sits beside
//! another run's files. [`lock`] keeps two runs out of one folder.

use crate::job::{JobError, JobResult, ModelCard};
use std::path::{Path, PathBuf};
use tch::nn;

/// The files of one output folder, written under temporary names until
/// [`Staged::commit`]; dropped before it, they are removed.
struct Staged<'a> {
    out: &'a Path,
    names: Vec<&'static str>,
}

impl<'a> Staged<'a> {
    fn temporary(&self, name: &str) -> PathBuf {
        self.out
            .join(format!(".{name}.{}.partial", std::process::id()))
    }

    /// Where to write `name` for now.
    fn file(&mut self, name: &'static str) -> PathBuf {
        self.names.push(name);
        self.temporary(name)
    }

    /// Write `text` as `name` for now; an error names the final file.
    fn write(&mut self, name: &'static str, text: &str) -> Result<(), JobError> {
        let path = self.file(name);
        std::fs::write(path, text).map_err(|source| JobError::Io {
            path: self.out.join(name),
            source,
        })
    }

    /// Rename every file into place, [`MARKER`] last (an earlier one
    /// removed first). A rename that fails leaves the files not yet renamed
    /// to be removed on drop.
    fn commit(mut self) -> Result<(), JobError> {
        let marker = self.out.join(MARKER);
        match std::fs::remove_file(&marker) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(JobError::Io {
                    path: marker,
                    source: e,
                })
            }
            _ => {}
        }
        // Stable: the marker moves to the end, the rest keep their order.
        self.names.sort_by_key(|&n| n == MARKER);
        while let Some(&name) = self.names.first() {
            let target = self.out.join(name);
            std::fs::rename(self.temporary(name), &target).map_err(|source| JobError::Io {
                path: target,
                source,
            })?;
            self.names.remove(0);
        }
        Ok(())
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = std::fs::remove_file(self.temporary(name));
        }
    }
}

/// The file whose presence says the folder holds one run's whole outputs.
const MARKER: &str = "result.json";

/// An output folder held by this process until dropped (an advisory lock
/// on its `.crossfold.lock`, which the system lets go when the process
/// ends, however it ends).
pub struct OutLock(#[allow(dead_code)] Option<std::fs::File>);

/// Hold `out` for one run's outputs; refused while another process holds
/// it. On a file system that cannot lock (some network mounts) the folder
/// is used unheld, with a warning. Temporary files a killed run left there
/// are removed once it is held.
pub fn lock(out: &Path) -> Result<OutLock, JobError> {
    let path = out.join(".crossfold.lock");
    let io = |source| JobError::Io {
        path: path.clone(),
        source,
    };
    // For writing (NFS emulates flock with locks that need it), or
    // read-only when another user's leftover lock file is not writable.
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            std::fs::File::open(&path).map_err(io)?
        }
        Err(e) => return Err(io(e)),
    };
    match crossfold_shared::flock::try_lock(&file, true) {
        Ok(true) => {}
        Ok(false) => return Err(io(std::io::Error::other(
            "another crossfold-worker is writing its outputs into this folder; give another --out",
        ))),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot lock the output folder here; two runs writing into it at once would mix their files");
            return Ok(OutLock(None));
        }
    }
    remove_partials(out);
    Ok(OutLock(Some(file)))
}

/// Remove the temporary files ([`Staged`]'s) a killed run left in `out`.
fn remove_partials(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".partial"))
            .and_then(|n| n.rsplit_once('.'))
            .is_some_and(|(file, pid)| {
                OUTPUT_FILES.contains(&file) && pid.bytes().all(|b| b.is_ascii_digit())
            });
        if ours {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Every file [`write_all`] writes.
pub const OUTPUT_FILES: [&str; 6] = [
    "predictions.csv",
    "history.csv",
    "metrics.json",
    "result.json",
    "model.safetensors",
    "model.json",
];

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x}")).unwrap_or_default()
}

pub fn write_all(
    out: &Path,
    result: &JobResult,
    card: &ModelCard,
    vs: &nn::VarStore,
) -> Result<(), JobError> {
    std::fs::create_dir_all(out).map_err(|source| JobError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut staged = Staged {
        out,
        names: Vec::new(),
    };
    let mut csv = String::from("image,patient,label,score,predicted,predicted_youden\n");
    for p in &result.predictions {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            quote(&p.image),
            quote(&p.patient),
            quote(&p.label),
            p.score,
            p.predicted as u8,
            // Blank when no threshold was chosen (no validation set).
            if result.youden_threshold.is_some() {
                (p.predicted_youden as u8).to_string()
            } else {
                String::new()
            }
        ));
    }
    staged.write("predictions.csv", &csv)?;
    let mut hist =
        String::from("epoch,train_loss,validation_loss,validation_auc,learning_rate,seconds\n");
    for h in &result.history {
        hist.push_str(&format!(
            "{},{},{},{},{},{}\n",
            h.epoch,
            h.train_loss,
            opt(h.validation_loss),
            opt(h.validation_auc),
            h.learning_rate,
            h.seconds
        ));
    }
    staged.write("history.csv", &hist)?;
    let metrics = serde_json::json!({
        "task": result.task,
        "round": result.round,
        "at_threshold": result.stats,
        "youden_threshold": result.youden_threshold,
        "at_youden_threshold": result.stats_youden,
    });
    staged.write("metrics.json", &pretty(&metrics))?;
    let summary = serde_json::json!({
        "task": result.task,
        "round": result.round,
        "n_fit": result.n_fit,
        "n_validation": result.n_validation,
        "n_test": result.n_test,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "warnings": result.warnings,
        "images_per_second": result.images_per_second,
        "timing_seconds": result.timing,
        "provenance": result.provenance,
    });
    staged.write("result.json", &pretty(&summary))?;
    let card_json = serde_json::to_string(card).map_err(|e| JobError::Io {
        path: out.join("model.json"),
        source: std::io::Error::other(e),
    })?;
    let weights = staged.file("model.safetensors");
    save_weights(vs, &weights, Some(&card_json)).map_err(|e| JobError::Io {
        path: out.join("model.safetensors"),
        source: std::io::Error::other(e.to_string()),
    })?;
    staged.write(
        "model.json",
        &pretty(&serde_json::to_value(card).unwrap_or_default()),
    )?;
    staged.commit()
}

/// The safetensors metadata key under which a checkpoint carries its model
/// card (resolved spec, normalisation, thresholds, provenance) as JSON.
pub const CARD_KEY: &str = "crossfold.model_card";

/// Save every variable as a contiguous NCHW CPU copy (weights trained
/// channels-last are strided, which safetensors cannot hold), with the
/// model card, when given, in the file's metadata under [`CARD_KEY`].
pub fn save_weights(
    vs: &nn::VarStore,
    path: &Path,
    card_json: Option<&str>,
) -> Result<(), SaveError> {
    let mut named: Vec<(String, Bytes)> = tch::no_grad(|| {
        vs.variables()
            .into_iter()
            .map(|(name, t)| {
                let bytes = Bytes::of(&t).map_err(|e| SaveError::Write(format!("{name}: {e}")))?;
                Ok((name, bytes))
            })
            .collect::<Result<_, SaveError>>()
    })?;
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    if let Some(card) = card_json {
        metadata.insert(CARD_KEY.to_string(), card.to_string());
    }
    safetensors::serialize_to_file(named, &Some(metadata), path)
        .map_err(|e| SaveError::Write(format!("{}: {e}", path.display())))
}

/// The model card stored in a checkpoint's metadata, if it has one.
pub fn read_card(path: &Path) -> Result<Option<String>, SaveError> {
    use std::io::Read;
    // The header is an 8-byte little-endian length, then that much JSON.
    let mut f = std::fs::File::open(path)
        .map_err(|e| SaveError::Write(format!("{}: {e}", path.display())))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| {
        SaveError::Write(format!("{}: not a safetensors file: {e}", path.display()))
    })?;
    let n = u64::from_le_bytes(len);
    if n > 100 * 1024 * 1024 {
        return Err(SaveError::Write(format!(
            "{}: not a safetensors file (header of {n} bytes)",
            path.display()
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| SaveError::Write(format!("{}: truncated header: {e}", path.display())))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| SaveError::Write(format!("{}: bad header: {e}", path.display())))?;
    Ok(header["__metadata__"][CARD_KEY]
        .as_str()
        .map(str::to_string))
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Write(String),
}

/// One tensor's bytes for safetensors (a contiguous CPU copy).
struct Bytes {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Bytes {
    fn of(t: &tch::Tensor) -> Result<Bytes, SaveError> {
        let t = t.f_to_device(tch::Device::Cpu)?.f_contiguous()?;
        let dtype = match t.kind() {
            tch::Kind::Float => safetensors::Dtype::F32,
            tch::Kind::Double => safetensors::Dtype::F64,
            tch::Kind::Half => safetensors::Dtype::F16,
            tch::Kind::BFloat16 => safetensors::Dtype::BF16,
            tch::Kind::Int64 => safetensors::Dtype::I64,
            other => {
                return Err(SaveError::Write(format!(
                    "cannot save a tensor of kind {other:?}"
                )))
            }
        };
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        Ok(Bytes { dtype, shape, data })
    }
}

impl safetensors::View for Bytes {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// CSV-quote a field when it needs it.
pub fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn staged_files_replace_the_old_ones_only_all_together() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::write(out.join("predictions.csv"), "old").unwrap();
        std::fs::write(out.join("model.json"), "old").unwrap();
        let listing = || {
            let mut names: Vec<String> = std::fs::read_dir(out)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        // A failure before the commit: the old files stay, no temporary one.
        {
            let mut staged = Staged {
                out,
                names: Vec::new(),
            };
            staged.write("predictions.csv", "new").unwrap();
            let err = staged.write("no-such-folder/x", "new").unwrap_err();
            assert!(err.to_string().contains("no-such-folder/x"), "{err}");
        }
        assert_eq!(listing(), ["model.json", "predictions.csv"]);
        assert_eq!(
            std::fs::read_to_string(out.join("predictions.csv")).unwrap(),
            "old"
        );
        // All written: all renamed into place.
        let mut staged = Staged {
            out,
            names: Vec::new(),
        };
        staged.write("predictions.csv", "new").unwrap();
        staged.write("model.json", "new").unwrap();
        staged.commit().unwrap();
        assert_eq!(listing(), ["model.json", "predictions.csv"]);
        for name in ["predictions.csv", "model.json"] {
            assert_eq!(std::fs::read_to_string(out.join(name)).unwrap(), "new");
        }
        // A rename that fails (a folder in the way) leaves no temporary
        // file behind, neither its own nor those after it.
        std::fs::create_dir_all(out.join("history.csv").join("in-the-way")).unwrap();
        let mut staged = Staged {
            out,
            names: Vec::new(),
        };
        for name in ["history.csv", "metrics.json"] {
            staged.write(name, "new").unwrap();
        }
        let err = staged.commit().unwrap_err();
        assert!(err.to_string().contains("history.csv"), "{err}");
        assert_eq!(listing(), ["history.csv", "model.json", "predictions.csv"]);
    }

    #[test]
    fn result_json_goes_first_and_comes_back_last() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::write(out.join("result.json"), "old").unwrap();
        std::fs::write(out.join("predictions.csv"), "old").unwrap();
        // A commit that fails after the predictions are in place: the old
        // result.json is gone and the new one not there, so the folder no
        // longer says it holds a whole run.
        std::fs::create_dir_all(out.join("metrics.json").join("in-the-way")).unwrap();
        let mut staged = Staged {
            out,
            names: Vec::new(),
        };
        for name in ["result.json", "predictions.csv", "metrics.json"] {
            staged.write(name, "new").unwrap();
        }
        assert!(staged.commit().is_err());
        assert!(!out.join("result.json").exists());
        assert_eq!(
            std::fs::read_to_string(out.join("predictions.csv")).unwrap(),
            "new"
        );
        // One that succeeds renames result.json last, whatever the order
        // of writing.
        std::fs::remove_dir_all(out.join("metrics.json")).unwrap();
        let mut staged = Staged {
            out,
            names: Vec::new(),
        };
        for name in ["result.json", "metrics.json"] {
            staged.write(name, "newer").unwrap();
        }
        staged.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("result.json")).unwrap(),
            "newer"
        );
    }

    #[test]
    fn one_output_folder_is_held_by_one_run_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let err = lock(dir.path()).err().expect("held");
        assert!(
            err.to_string()
                .contains("another crossfold-worker is writing its outputs"),
            "{err}"
        );
        drop(first);
        // Held again, a killed run's temporary files go; others stay.
        let left = dir.path().join(".model.safetensors.4242.partial");
        std::fs::write(&left, "half").unwrap();
        std::fs::write(dir.path().join(".notes.4242.partial"), "mine").unwrap();
        assert!(lock(dir.path()).is_ok());
        assert!(!left.exists());
        assert!(dir.path().join(".notes.4242.partial").exists());
    }

    #[test]
    fn channels_last_weights_are_saved_and_read_back() {
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = vs.root() / "conv";
        let w = conv.randn("weight", &[4, 3, 3, 3], 0.0, 1.0);
        let b = conv.zeros("bias", &[4]);
        crate::precision::to_channels_last(&w).unwrap();
        assert!(crate::precision::is_channels_last(&w));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        save_weights(&vs, &path, Some("{\"card\": 1}")).unwrap();
        assert_eq!(read_card(&path).unwrap().as_deref(), Some("{\"card\": 1}"));
        let back = Tensor::read_safetensors(&path).unwrap();
        assert_eq!(back.len(), 2);
        for (name, t) in back {
            let orig = if name == "conv.weight" { &w } else { &b };
            assert_eq!(t.kind(), Kind::Float);
            assert!(t.equal(&orig.to_device(Device::Cpu)), "{name}");
        }
    }
}
