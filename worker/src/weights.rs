//! Reading weights from files into a network: pretrained weights the user
//! supplies (`train.pretrained`) and crossfold's own checkpoints.
//!
//! A file's format is told from its content, not its name: safetensors (an
//! 8-byte header length, then a JSON header), or libtorch's zip archive
//! (tch's `.ot`). Names follow torchvision, as [`crate::model`] does.
//! - **Pretrained weights** need every weight of the network but the
//!   classifier, with the right shapes; a 3-channel stem is folded to one
//!   channel by summing over the colour axis; a classifier for another
//!   class count is replaced.
//! - **A checkpoint** needs exactly the network's weights, classifier
//!   included.
//!
//! Either way a weight the network has no place for (other than batch-norm
//! step counters) means another, usually deeper, architecture: a ResNet34
//! file holds every ResNet18 name with the same shapes, so only the extras
//! tell them apart. Nothing is copied into the network unless all of it
//! fits.

use crate::model::weights_of;
use crossfold_shared::spec::Arch;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("train.pretrained = {path}: cannot read: {message}")]
    Read { path: PathBuf, message: String },
    #[error("train.pretrained = {path}: does not match train.arch = {arch}: {detail}")]
    Mismatch {
        path: PathBuf,
        arch: Arch,
        detail: String,
    },
}

/// What a file is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Pretrained,
    Checkpoint,
}

/// How a weights file is stored, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An 8-byte little-endian header length, then the JSON header's `{`.
    Safetensors,
    /// A zip archive (`PK\x03\x04`): libtorch's own format, tch's `.ot`.
    LibtorchArchive,
    /// Neither.
    Unknown,
}

/// The [`Format`] of the file at `path`. Safetensors is recognised first:
/// its header length's low bytes can read `PK`, but its 9th byte is `{`.
pub fn format_of(path: &Path) -> std::io::Result<Format> {
    use std::io::Read;
    let mut head = Vec::with_capacity(9);
    std::fs::File::open(path)?.take(9).read_to_end(&mut head)?;
    Ok(if head.get(8) == Some(&b'{') {
        Format::Safetensors
    } else if head.starts_with(b"PK\x03\x04") {
        Format::LibtorchArchive
    } else {
        Format::Unknown
    })
}

/// Every tensor of a weights file, by name, on the CPU.
fn read_weights(path: &Path) -> Result<HashMap<String, Tensor>, WeightsError> {
    let read = |message: String| WeightsError::Read {
        path: path.to_path_buf(),
        message,
    };
    // A missing or unreadable file is said plainly, before libtorch's
    // own (C++) messages about it.
    let format = format_of(path).map_err(|e| read(e.to_string()))?;
    let torch = |e: tch::TchError| read(crate::torch_error::weights_message(&e.to_string()));
    let tensors = match format {
        // On the CPU: an archive saved on a GPU would otherwise load back
        // onto it (and fail where there is none).
        Format::LibtorchArchive => {
            Tensor::load_multi_with_device(path, Device::Cpu).map_err(torch)?
        }
        // Anything else is read as safetensors, whose parser says what is wrong.
        Format::Safetensors | Format::Unknown => Tensor::read_safetensors(path).map_err(torch)?,
    };
    Ok(tensors.into_iter().collect())
}

/// Load pretrained weights into `vs` (built for `arch`); returns how many
/// weights were copied. See the module's documentation for what fits.
pub fn load_pretrained(
    vs: &mut nn::VarStore,
    arch: Arch,
    path: &Path,
) -> Result<usize, WeightsError> {
    let mut source = read_weights(path)?;
    if let Some(stem) = source.get("conv1.weight") {
        if stem.size().len() == 4 && stem.size()[1] == 3 {
            let folded = stem
                .f_to_kind(Kind::Float)
                .and_then(|t| t.f_sum_dim_intlist([1i64].as_slice(), true, Kind::Float))
                .map_err(|e| WeightsError::Read {
                    path: path.to_path_buf(),
                    message: format!("conv1.weight: {e}"),
                })?;
            source.insert("conv1.weight".into(), folded);
        }
    }
    copy_into(vs, arch, path, &source, Role::Pretrained)
}

/// Load a checkpoint written by a training run into `vs` (built for the
/// `arch` of its model card): exactly the network's weights.
pub fn load_checkpoint(vs: &mut nn::VarStore, arch: Arch, path: &Path) -> Result<(), WeightsError> {
    let source = read_weights(path)?;
    copy_into(vs, arch, path, &source, Role::Checkpoint).map(|_| ())
}

/// Refuse `train.pretrained` before any image is decoded: read the file
/// into a throwaway network of `arch` on the CPU.
pub fn check_pretrained(arch: Arch, path: &Path) -> Result<(), WeightsError> {
    let mut vs = weights_of(arch, 2);
    load_pretrained(&mut vs, arch, path).map(|_| ())
}

fn copy_into(
    vs: &mut nn::VarStore,
    arch: Arch,
    path: &Path,
    source: &HashMap<String, Tensor>,
    role: Role,
) -> Result<usize, WeightsError> {
    let mismatch = |detail: String| WeightsError::Mismatch {
        path: path.to_path_buf(),
        arch,
        detail,
    };
    let pretrained = role == Role::Pretrained;
    let known: HashSet<String> = vs.variables().into_keys().collect();
    let mut extra: Vec<&String> = source
        .keys()
        .filter(|k| {
            let replaced_head = pretrained && k.starts_with("fc.");
            !(known.contains(*k) || replaced_head || k.ends_with("num_batches_tracked"))
        })
        .collect();
    if !extra.is_empty() {
        extra.sort();
        let shown: Vec<_> = extra.iter().take(5).map(|s| s.as_str()).collect();
        return Err(mismatch(format!(
            "the file has {} weight(s) this network does not, e.g. {} (weights of another architecture?)",
            extra.len(),
            shown.join(", ")
        )));
    }
    // Check every weight before copying any, so a refused file leaves the
    // network as it was.
    let mut missing = Vec::new();
    let mut copies = Vec::new();
    for (name, var) in vs.variables() {
        let optional = pretrained && name.starts_with("fc.");
        match source.get(&name) {
            Some(src) if src.size() == var.size() => copies.push((name, var, src)),
            // A classifier for another number of classes: keep ours.
            Some(_) if optional => {}
            Some(src) => {
                return Err(mismatch(format!(
                    "{name} has shape {:?} in the file but {:?} in the network",
                    src.size(),
                    var.size()
                )))
            }
            None if optional => {}
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        missing.sort();
        let shown: Vec<_> = missing.iter().take(5).cloned().collect();
        return Err(mismatch(format!(
            "{} weight(s) missing from the file, e.g. {}",
            missing.len(),
            shown.join(", ")
        )));
    }
    let loaded = copies.len();
    tch::no_grad(|| -> Result<(), WeightsError> {
        for (name, mut var, src) in copies {
            src.f_to_kind(var.kind())
                .and_then(|t| t.f_to_device(var.device()))
                .and_then(|t| var.f_copy_(&t))
                .map_err(|e| WeightsError::Read {
                    path: path.to_path_buf(),
                    message: format!("{name}: {e}"),
                })?;
        }
        Ok(())
    })?;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretrained_weights_load_and_fold_a_colour_stem() {
        let dir = tempfile::tempdir().unwrap();
        let src = weights_of(Arch::Resnet18, 2);
        // Turn it into a torchvision-like file: 3-channel stem, 1000 classes.
        let mut named: Vec<(String, Tensor)> = src.variables().into_iter().collect();
        for (name, t) in named.iter_mut() {
            if name == "conv1.weight" {
                *t = t.repeat([1, 3, 1, 1]) / 3.0;
            } else if name == "fc.weight" {
                *t = Tensor::zeros([1000, 512], (Kind::Float, Device::Cpu));
            } else if name == "fc.bias" {
                *t = Tensor::zeros([1000], (Kind::Float, Device::Cpu));
            }
        }
        let file = dir.path().join("w.safetensors");
        let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        Tensor::write_safetensors(&refs, &file).unwrap();

        let mut dst = weights_of(Arch::Resnet18, 2);
        let n = load_pretrained(&mut dst, Arch::Resnet18, &file).unwrap();
        assert!(n > 50);
        let a = src.variables()["conv1.weight"].copy();
        let b = dst.variables()["conv1.weight"].copy();
        assert!(a.allclose(&b, 1e-5, 1e-6, false));

        // The wrong architecture is refused with a clear message.
        let mut other = weights_of(Arch::Resnet34, 2);
        let err = load_pretrained(&mut other, Arch::Resnet34, &file).unwrap_err();
        assert!(err.to_string().contains("train.pretrained"), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");

        // A deeper network's file does not load into a shallower one,
        // although every ResNet18 weight is in it with the right shape.
        let deep = weights_of(Arch::Resnet34, 2);
        let deep_file = dir.path().join("r34.safetensors");
        deep.save(&deep_file).unwrap();
        let mut shallow = weights_of(Arch::Resnet18, 2);
        let before = shallow.variables()["conv1.weight"].copy();
        let err = load_pretrained(&mut shallow, Arch::Resnet18, &deep_file).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("r34.safetensors") && msg.contains("train.arch = resnet18"),
            "{msg}"
        );
        assert!(
            msg.contains("layer1.2.") || msg.contains("layer2.2."),
            "{msg}"
        );
        // ... and the network is left as it was.
        assert!(shallow.variables()["conv1.weight"].equal(&before));

        // An unreadable file names the file.
        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"nope").unwrap();
        let err = load_pretrained(&mut dst, Arch::Resnet18, &junk).unwrap_err();
        assert!(err.to_string().contains("junk.safetensors"), "{err}");
    }

    #[test]
    fn a_checkpoint_loads_only_into_the_network_it_was_saved_from() {
        let dir = tempfile::tempdir().unwrap();
        let saved = weights_of(Arch::Resnet18, 2);
        // The format is read from the content: a safetensors file under
        // another name, and a libtorch archive under a .safetensors name.
        let st = dir.path().join("model.ckpt");
        saved.save(dir.path().join("model.safetensors")).unwrap();
        std::fs::rename(dir.path().join("model.safetensors"), &st).unwrap();
        let ot = dir.path().join("model.ot");
        saved.save(&ot).unwrap();
        let ot_renamed = dir.path().join("other.safetensors");
        std::fs::copy(&ot, &ot_renamed).unwrap();
        for file in [&st, &ot, &ot_renamed] {
            let mut vs = weights_of(Arch::Resnet18, 2);
            load_checkpoint(&mut vs, Arch::Resnet18, file).unwrap();
            for (name, t) in saved.variables() {
                assert!(
                    t.equal(&vs.variables()[&name]),
                    "{}: {name}",
                    file.display()
                );
            }
        }
        // A deeper network's checkpoint, whose every ResNet18 weight fits.
        let deep = weights_of(Arch::Resnet34, 2);
        let deep_file = dir.path().join("r34.safetensors");
        deep.save(&deep_file).unwrap();
        let mut vs = weights_of(Arch::Resnet18, 2);
        let err = load_checkpoint(&mut vs, Arch::Resnet18, &deep_file).unwrap_err();
        assert!(
            err.to_string().contains("weights of another architecture"),
            "{err}"
        );
        // A checkpoint without its classifier, or with one for 3 classes.
        for classes in [None, Some(3)] {
            let other = weights_of(Arch::Resnet18, classes.unwrap_or(2));
            let named: Vec<(String, Tensor)> = other
                .variables()
                .into_iter()
                .filter(|(n, _)| classes.is_some() || !n.starts_with("fc."))
                .collect();
            let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let file = dir.path().join("headless.safetensors");
            Tensor::write_safetensors(&refs, &file).unwrap();
            let before = vs.variables()["conv1.weight"].copy();
            let err = load_checkpoint(&mut vs, Arch::Resnet18, &file).unwrap_err();
            assert!(err.to_string().contains("fc."), "{err}");
            assert!(vs.variables()["conv1.weight"].equal(&before));
        }
    }

    #[test]
    fn a_safetensors_file_whose_header_length_reads_pk_is_still_safetensors() {
        // A header of 0x4B50 bytes (mod 65536) makes the file start with
        // "PK"; the length of the model card in the metadata sets it.
        let dir = tempfile::tempdir().unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let _w = vs.root().randn("w", &[3, 2], 0.0, 1.0);
        let file = dir.path().join("model.safetensors");
        let header_len = |card_len: usize| {
            crate::outputs::save_weights(&vs, &file, Some(&"x".repeat(card_len))).unwrap();
            let bytes = std::fs::read(&file).unwrap();
            u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
        };
        let base = header_len(0);
        let card_len = (0x4B50usize.saturating_sub(base + 8)..0x4B50 + 8)
            .find(|&n| header_len(n) == 0x4B50)
            .expect("a card length giving a 0x4B50-byte header");
        header_len(card_len);
        assert!(std::fs::read(&file).unwrap().starts_with(b"PK"));
        assert_eq!(format_of(&file).unwrap(), Format::Safetensors);
        let mut back = nn::VarStore::new(Device::Cpu);
        let _w = back.root().zeros("w", &[3, 2]);
        load_checkpoint(&mut back, Arch::Resnet18, &file).unwrap();
        assert!(back.variables()["w"].equal(&vs.variables()["w"]));
    }

    #[test]
    fn a_pretrained_file_is_checked_without_a_network_at_hand() {
        let dir = tempfile::tempdir().unwrap();
        let src = weights_of(Arch::Resnet18, 2);
        let file = dir.path().join("r18.safetensors");
        src.save(&file).unwrap();
        check_pretrained(Arch::Resnet18, &file).unwrap();
        let err = check_pretrained(Arch::Resnet34, &file).unwrap_err();
        assert!(err.to_string().contains("train.arch = resnet34"), "{err}");
        let err =
            check_pretrained(Arch::Resnet18, &dir.path().join("typo.safetensors")).unwrap_err();
        assert!(err.to_string().contains("typo.safetensors"), "{err}");
    }
}
