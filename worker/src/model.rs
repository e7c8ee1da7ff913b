//! ResNet18/34/50 for one-channel radiographs and two classes.
//!
//! The layer names follow torchvision (`conv1`, `bn1`, `layer1.0.conv1`,
//! ..., `fc`), so weights converted from torchvision load directly. A
//! pretrained file's 3-channel stem (`conv1.weight` of shape [64, 3, 7, 7])
//! is folded to one channel by summing over the colour axis (a gray image
//! fed as three equal channels gives the same activations); its classifier
//! (`fc`) is replaced when its class count is not 2.

use crossfold_shared::spec::Arch;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

fn conv2d(p: nn::Path, c_in: i64, c_out: i64, k: i64, padding: i64, stride: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, k, cfg)
}

fn downsample(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> nn::SequentialT {
    if stride != 1 || c_in != c_out {
        nn::seq_t()
            .add(conv2d(&p / "0", c_in, c_out, 1, 0, stride))
            .add(nn::batch_norm2d(&p / "1", c_out, Default::default()))
    } else {
        nn::seq_t()
    }
}

fn basic_block(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> impl ModuleT {
    let conv1 = conv2d(&p / "conv1", c_in, c_out, 3, 1, stride);
    let bn1 = nn::batch_norm2d(&p / "bn1", c_out, Default::default());
    let conv2 = conv2d(&p / "conv2", c_out, c_out, 3, 1, 1);
    let bn2 = nn::batch_norm2d(&p / "bn2", c_out, Default::default());
    let down = downsample(&p / "downsample", c_in, c_out, stride);
    nn::func_t(move |xs, train| {
        let ys = xs
            .apply(&conv1)
            .apply_t(&bn1, train)
            .relu()
            .apply(&conv2)
            .apply_t(&bn2, train);
        (xs.apply_t(&down, train) + ys).relu()
    })
}

fn bottleneck_block(p: nn::Path, c_in: i64, c_mid: i64, stride: i64) -> impl ModuleT {
    let c_out = 4 * c_mid;
    let conv1 = conv2d(&p / "conv1", c_in, c_mid, 1, 0, 1);
    let bn1 = nn::batch_norm2d(&p / "bn1", c_mid, Default::default());
    let conv2 = conv2d(&p / "conv2", c_mid, c_mid, 3, 1, stride);
    let bn2 = nn::batch_norm2d(&p / "bn2", c_mid, Default::default());
    let conv3 = conv2d(&p / "conv3", c_mid, c_out, 1, 0, 1);
    let bn3 = nn::batch_norm2d(&p / "bn3", c_out, Default::default());
    let down = downsample(&p / "downsample", c_in, c_out, stride);
    nn::func_t(move |xs, train| {
        let ys = xs
            .apply(&conv1)
            .apply_t(&bn1, train)
            .relu()
            .apply(&conv2)
            .apply_t(&bn2, train)
            .relu()
            .apply(&conv3)
            .apply_t(&bn3, train);
        (xs.apply_t(&down, train) + ys).relu()
    })
}

/// Blocks per stage: ResNet18 [2,2,2,2], ResNet34 [3,4,6,3], ResNet50 [3,4,6,3] (bottleneck).
pub fn stages(arch: Arch) -> [i64; 4] {
    match arch {
        Arch::Resnet18 => [2, 2, 2, 2],
        Arch::Resnet34 | Arch::Resnet50 => [3, 4, 6, 3],
    }
}

/// Build the network under `p`; input [N, 1, H, W] float, output logits [N, classes].
pub fn resnet(p: &nn::Path, arch: Arch, classes: i64) -> nn::FuncT<'static> {
    let bottleneck = arch == Arch::Resnet50;
    let expansion = if bottleneck { 4 } else { 1 };
    let conv1 = conv2d(p / "conv1", 1, 64, 7, 3, 2);
    let bn1 = nn::batch_norm2d(p / "bn1", 64, Default::default());
    let widths = [64, 128, 256, 512];
    let mut layers = Vec::new();
    let mut c_in = 64;
    for (stage, (&blocks, &width)) in stages(arch).iter().zip(&widths).enumerate() {
        let lp = p / format!("layer{}", stage + 1);
        let mut layer = nn::seq_t();
        for b in 0..blocks {
            let stride = if b == 0 && stage > 0 { 2 } else { 1 };
            let bp = &lp / b.to_string();
            layer = if bottleneck {
                layer.add(bottleneck_block(bp, c_in, width, stride))
            } else {
                layer.add(basic_block(bp, c_in, width, stride))
            };
            c_in = width * expansion;
        }
        layers.push(layer);
    }
    let fc = nn::linear(p / "fc", 512 * expansion, classes, Default::default());
    nn::func_t(move |xs, train| {
        let mut h = xs.apply(&conv1).apply_t(&bn1, train).relu().max_pool2d(
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            false,
        );
        for layer in &layers {
            h = h.apply_t(layer, train);
        }
        h.adaptive_avg_pool2d([1, 1]).flat_view().apply(&fc)
    })
}

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

/// Load pretrained weights into `vs` (built for `arch`). Every weight of the
/// network except the classifier must be present with the right shape;
/// extra tensors (e.g. `num_batches_tracked`) are ignored.
pub fn load_pretrained(
    vs: &mut nn::VarStore,
    arch: Arch,
    path: &Path,
) -> Result<usize, WeightsError> {
    let read = |message: String| WeightsError::Read {
        path: path.to_path_buf(),
        message,
    };
    // A missing or unreadable file is said plainly, before libtorch's
    // own (C++) messages about it.
    std::fs::File::open(path).map_err(|e| read(e.to_string()))?;
    let torch = |e: tch::TchError| read(crate::torch_error::weights_message(&e.to_string()));
    let lower = path.to_string_lossy().to_ascii_lowercase();
    let tensors: Vec<(String, Tensor)> = if lower.ends_with(".safetensors") {
        Tensor::read_safetensors(path).map_err(torch)?
    } else {
        Tensor::load_multi(path).map_err(torch)?
    };
    let mut source: HashMap<String, Tensor> = tensors.into_iter().collect();
    if let Some(stem) = source.get("conv1.weight") {
        if stem.size().len() == 4 && stem.size()[1] == 3 {
            let folded = stem
                .f_to_kind(Kind::Float)
                .and_then(|t| t.f_sum_dim_intlist([1i64].as_slice(), true, Kind::Float))
                .map_err(|e| read(format!("conv1.weight: {e}")))?;
            source.insert("conv1.weight".into(), folded);
        }
    }
    let mismatch = |detail: String| WeightsError::Mismatch {
        path: path.to_path_buf(),
        arch,
        detail,
    };
    // Weights in the file that this network has no place for (other than the
    // classifier and batch-norm step counters) mean a different, usually
    // deeper, architecture: a ResNet34 file holds every ResNet18 name with
    // the same shapes, so only the extras tell them apart.
    let known: std::collections::HashSet<String> = vs.variables().into_keys().collect();
    let mut extra: Vec<&String> = source
        .keys()
        .filter(|k| {
            !known.contains(*k) && !k.starts_with("fc.") && !k.ends_with("num_batches_tracked")
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
    let mut loaded = 0;
    let mut missing = Vec::new();
    tch::no_grad(|| -> Result<(), WeightsError> {
        for (name, mut var) in vs.variables() {
            let is_head = name.starts_with("fc.");
            match source.get(&name) {
                Some(src) if src.size() == var.size() => {
                    src.f_to_kind(var.kind())
                        .and_then(|t| t.f_to_device(var.device()))
                        .and_then(|t| var.f_copy_(&t))
                        .map_err(|e| read(format!("{name}: {e}")))?;
                    loaded += 1;
                }
                Some(src) if is_head => {
                    // A classifier for another number of classes: keep ours.
                    let _ = src;
                }
                Some(src) => {
                    return Err(mismatch(format!(
                        "{name} has shape {:?} in the file but {:?} in the network",
                        src.size(),
                        var.size()
                    )))
                }
                None if is_head => {}
                None => missing.push(name),
            }
        }
        Ok(())
    })?;
    if !missing.is_empty() {
        missing.sort();
        let shown: Vec<_> = missing.iter().take(5).cloned().collect();
        return Err(mismatch(format!(
            "{} weight(s) missing from the file, e.g. {}",
            missing.len(),
            shown.join(", ")
        )));
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn params(arch: Arch) -> i64 {
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = resnet(&vs.root(), arch, 2);
        vs.trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    #[test]
    fn parameter_counts_match_torchvision_with_a_one_channel_stem() {
        // torchvision: resnet18 11,689,512 / resnet34 21,797,672 / resnet50
        // 25,557,032 parameters with a 3-channel stem and 1000 classes.
        // One-channel stem: minus 2*64*7*7 = 6,272; two classes: minus
        // 998*(512*e + 1).
        assert_eq!(params(Arch::Resnet18), 11_689_512 - 6_272 - 998 * 513);
        assert_eq!(params(Arch::Resnet34), 21_797_672 - 6_272 - 998 * 513);
        assert_eq!(params(Arch::Resnet50), 25_557_032 - 6_272 - 998 * 2049);
    }

    #[test]
    fn forward_shape() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = resnet(&vs.root(), Arch::Resnet18, 2);
        let x = Tensor::zeros([3, 1, 64, 64], (Kind::Float, Device::Cpu));
        assert_eq!(net.forward_t(&x, false).size(), vec![3, 2]);
    }

    #[test]
    fn pretrained_weights_load_and_fold_a_colour_stem() {
        let dir = tempfile::tempdir().unwrap();
        let src = nn::VarStore::new(Device::Cpu);
        let _ = resnet(&src.root(), Arch::Resnet18, 2);
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

        let mut dst = nn::VarStore::new(Device::Cpu);
        let _ = resnet(&dst.root(), Arch::Resnet18, 2);
        let n = load_pretrained(&mut dst, Arch::Resnet18, &file).unwrap();
        assert!(n > 50);
        let a = src.variables()["conv1.weight"].copy();
        let b = dst.variables()["conv1.weight"].copy();
        assert!(a.allclose(&b, 1e-5, 1e-6, false));

        // The wrong architecture is refused with a clear message.
        let mut other = nn::VarStore::new(Device::Cpu);
        let _ = resnet(&other.root(), Arch::Resnet34, 2);
        let err = load_pretrained(&mut other, Arch::Resnet34, &file).unwrap_err();
        assert!(err.to_string().contains("train.pretrained"), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");

        // A deeper network's file does not load into a shallower one,
        // although every ResNet18 weight is in it with the right shape.
        let deep = nn::VarStore::new(Device::Cpu);
        let _ = resnet(&deep.root(), Arch::Resnet34, 2);
        let deep_file = dir.path().join("r34.safetensors");
        deep.save(&deep_file).unwrap();
        let mut shallow = nn::VarStore::new(Device::Cpu);
        let _ = resnet(&shallow.root(), Arch::Resnet18, 2);
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
}
