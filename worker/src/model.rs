//! ResNet18/34/50 for one-channel radiographs and two classes.
//!
//! The layer names follow torchvision (`conv1`, `bn1`, `layer1.0.conv1`,
//! ..., `fc`), so weights converted from torchvision load directly
//! ([`crate::weights`] reads them, folding a 3-channel stem to one
//! channel).

use crossfold_shared::spec::Arch;
use tch::nn::{self, ModuleT};

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

/// A CPU store holding the freshly initialised weights of `arch` with
/// `classes` outputs (the network itself not kept): for reading weight
/// files into, or writing them from.
pub fn weights_of(arch: Arch, classes: i64) -> nn::VarStore {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let _net = resnet(&vs.root(), arch, classes);
    vs
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

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
}
