//! Augmentation on the training device: horizontal flip, rotation/scale/
//! translation in one affine resampling, and brightness/contrast/gamma
//! jitter. Every sample has its own parameters, drawn by the caller from the
//! job's own seeded generator (not libtorch's process-wide one, so jobs that
//! run side by side in one process stay deterministic) and passed as one
//! small `[B, 8]` tensor of uniforms in [0, 1).

use crossfold_shared::spec::AugmentSpec;
use tch::{Kind, Tensor};

pub struct Augmenter {
    spec: AugmentSpec,
}

impl Augmenter {
    pub fn new(spec: &AugmentSpec) -> Self {
        Augmenter { spec: spec.clone() }
    }

    /// Uniforms needed per sample.
    pub const PARAMS: usize = 8;

    pub fn enabled(&self) -> bool {
        self.spec.enabled
    }

    /// `x`: float `[B, 1, S, S]` in [0, 1]; `u`: float `[B, 8]` uniforms in
    /// [0, 1) on the same device. Returns the augmented batch, still in
    /// [0, 1]. A no-op when augmentation is off.
    pub fn apply(&self, x: &Tensor, u: &Tensor) -> Result<Tensor, tch::TchError> {
        let a = &self.spec;
        if !a.enabled {
            return Ok(x.shallow_clone());
        }
        let b = x.size()[0];
        // Column k of u, mapped to [-1, 1).
        let sym = |k: i64| -> Result<Tensor, tch::TchError> {
            u.f_select(1, k)?.f_mul_scalar(2.0)?.f_sub_scalar(1.0)
        };
        let mut out = x.shallow_clone();
        if a.hflip {
            let flip = u.f_select(1, 0)?.f_lt(0.5)?.f_view([b, 1, 1, 1])?;
            out = out.f_flip([3])?.f_where_self(&flip, &out)?;
        }
        if a.rotate_degrees > 0.0 || a.scale > 0.0 || a.translate > 0.0 {
            let angle = sym(1)?.f_mul_scalar(a.rotate_degrees.to_radians())?;
            // Zoom factor s in [1 - scale, 1 + scale]; the sampling grid is divided by it.
            let zoom = sym(2)?.f_mul_scalar(a.scale)?.f_add_scalar(1.0)?;
            let tx = sym(3)?.f_mul_scalar(2.0 * a.translate)?;
            let ty = sym(4)?.f_mul_scalar(2.0 * a.translate)?;
            let (cos, sin) = (angle.f_cos()?.f_div(&zoom)?, angle.f_sin()?.f_div(&zoom)?);
            let row0 = Tensor::f_stack(&[cos.shallow_clone(), sin.f_neg()?, tx], 1)?;
            let row1 = Tensor::f_stack(&[sin, cos, ty], 1)?;
            let theta = Tensor::f_stack(&[row0, row1], 1)?; // [B, 2, 3]
            let size = out.size();
            let grid = Tensor::f_affine_grid_generator(&theta, size.as_slice(), false)?;
            // Bilinear, zero padding (black, as outside a radiograph).
            out = out.f_grid_sampler(&grid, 0, 0, false)?;
        }
        if a.gamma > 0.0 {
            let g = sym(5)?
                .f_mul_scalar(a.gamma)?
                .f_exp()?
                .f_view([b, 1, 1, 1])?;
            out = out.f_clamp(1e-6, 1.0)?.f_pow(&g)?;
        }
        if a.contrast > 0.0 {
            let c = sym(6)?
                .f_mul_scalar(a.contrast)?
                .f_add_scalar(1.0)?
                .f_view([b, 1, 1, 1])?;
            let mean = out.f_mean_dim([2i64, 3].as_slice(), true, Kind::Float)?;
            out = out.f_sub(&mean)?.f_mul(&c)?.f_add(&mean)?;
        }
        if a.brightness > 0.0 {
            let d = sym(7)?.f_mul_scalar(a.brightness)?.f_view([b, 1, 1, 1])?;
            out = out.f_add(&d)?;
        }
        out.f_clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn batch() -> Tensor {
        // A left-bright gradient, so flips and rotations show.
        Tensor::f_linspace(1.0, 0.0, 32, (Kind::Float, Device::Cpu))
            .unwrap()
            .view([1, 1, 1, 32])
            .expand([8, 1, 32, 32], false)
            .contiguous()
    }

    fn uniforms(seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let u: Vec<f32> = (0..8 * Augmenter::PARAMS)
            .map(|_| rng.random::<f32>())
            .collect();
        Tensor::from_slice(&u).view([8, Augmenter::PARAMS as i64])
    }

    #[test]
    fn disabled_is_identity_and_enabled_changes_the_batch() {
        let x = batch();
        let off = Augmenter::new(&AugmentSpec {
            enabled: false,
            ..Default::default()
        });
        assert!(off.apply(&x, &uniforms(1)).unwrap().equal(&x));
        let on = Augmenter::new(&AugmentSpec::default());
        let y = on.apply(&x, &uniforms(1)).unwrap();
        assert_eq!(y.size(), x.size());
        assert!(!y.allclose(&x, 1e-3, 1e-3, false));
        let (lo, hi) = (y.min().double_value(&[]), y.max().double_value(&[]));
        assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi));
    }

    #[test]
    fn seeded_augmentation_is_reproducible() {
        let x = batch();
        let aug = Augmenter::new(&AugmentSpec::default());
        let a = aug.apply(&x, &uniforms(7)).unwrap();
        let b = aug.apply(&x, &uniforms(7)).unwrap();
        assert!(a.equal(&b));
        assert!(!a.equal(&aug.apply(&x, &uniforms(8)).unwrap()));
    }

    #[test]
    fn flip_only_mirrors_some_samples() {
        let x = batch();
        let spec = AugmentSpec {
            hflip: true,
            rotate_degrees: 0.0,
            scale: 0.0,
            translate: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            gamma: 0.0,
            enabled: true,
        };
        let y = Augmenter::new(&spec).apply(&x, &uniforms(3)).unwrap();
        let flipped = x.flip([3]);
        let mut n_same = 0;
        let mut n_flip = 0;
        for i in 0..8 {
            if y.get(i).equal(&x.get(i)) {
                n_same += 1;
            } else if y.get(i).equal(&flipped.get(i)) {
                n_flip += 1;
            }
        }
        assert_eq!(n_same + n_flip, 8);
        assert!(n_same > 0 && n_flip > 0, "{n_same} {n_flip}");
    }
}
