//! Writing a job's outputs: predictions.csv, history.csv, metrics.json,
//! result.json, and the checkpoint (model.safetensors + model.json).

use crate::job::{JobError, JobResult, ModelCard};
use std::path::Path;
use tch::nn;

fn write(path: &Path, text: &str) -> Result<(), JobError> {
    std::fs::write(path, text).map_err(|source| JobError::Io {
        path: path.to_path_buf(),
        source,
    })
}

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
    let mut csv = String::from("image,patient,label,score,predicted,predicted_youden\n");
    for p in &result.predictions {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            quote(&p.image),
            quote(&p.patient),
            p.label,
            p.score,
            p.predicted as u8,
            p.predicted_youden as u8
        ));
    }
    write(&out.join("predictions.csv"), &csv)?;
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
    write(&out.join("history.csv"), &hist)?;
    let metrics = serde_json::json!({
        "task": result.task,
        "round": result.round,
        "at_threshold": result.stats,
        "youden_threshold": result.youden_threshold,
        "at_youden_threshold": result.stats_youden,
    });
    write(&out.join("metrics.json"), &pretty(&metrics))?;
    let summary = serde_json::json!({
        "task": result.task,
        "round": result.round,
        "n_fit": result.n_fit,
        "n_validation": result.n_validation,
        "n_test": result.n_test,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "images_per_second": result.images_per_second,
        "timing_seconds": result.timing,
        "provenance": result.provenance,
    });
    write(&out.join("result.json"), &pretty(&summary))?;
    save_weights(vs, &out.join("model.safetensors"))?;
    write(
        &out.join("model.json"),
        &pretty(&serde_json::to_value(card).unwrap_or_default()),
    )?;
    Ok(())
}

/// Save every variable as a contiguous NCHW CPU copy: weights trained
/// channels-last are strided, which safetensors cannot hold.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<(), tch::TchError> {
    let mut named: Vec<(String, tch::Tensor)> = tch::no_grad(|| {
        vs.variables()
            .into_iter()
            .map(|(name, t)| {
                let t = t.f_to_device(tch::Device::Cpu)?.f_contiguous()?;
                Ok((name, t))
            })
            .collect::<Result<_, tch::TchError>>()
    })?;
    named.sort_by(|a, b| a.0.cmp(&b.0));
    tch::Tensor::write_safetensors(&named, path)
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// CSV-quote a field when it needs it.
fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
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
    fn channels_last_weights_are_saved_and_read_back() {
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = vs.root() / "conv";
        let w = conv.randn("weight", &[4, 3, 3, 3], 0.0, 1.0);
        let b = conv.zeros("bias", &[4]);
        crate::precision::to_channels_last(&w).unwrap();
        assert!(crate::precision::is_channels_last(&w));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        save_weights(&vs, &path).unwrap();
        let back = Tensor::read_safetensors(&path).unwrap();
        assert_eq!(back.len(), 2);
        for (name, t) in back {
            let orig = if name == "conv.weight" { &w } else { &b };
            assert_eq!(t.kind(), Kind::Float);
            assert!(t.equal(&orig.to_device(Device::Cpu)), "{name}");
        }
    }
}
