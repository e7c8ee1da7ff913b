//! Rendering one view: anatomy plus lesion to an attenuation map, then the
//! acquisition turns it into pixels.
//!
//! Attenuation along a ray is `MU_SOFT * soft-tissue path + sum over bones of
//! (MU_CORTEX * cortical path + MU_MARROW * marrow density * medullary path *
//! (1 + trabecular texture))`, plus whatever a lesion adds. Brightness rises
//! with attenuation (dense = white), as on a radiograph.

use super::acquisition::{Acquisition, PixelMap};
use super::anatomy::{Knee, KneeView};
use super::lesion::LesionPlan;
use super::lesion_render::{Effect, PlacedLesion, Texel};
use super::raster::{band_noise, tube_paths, Field};
use image::GrayImage;
use rand::Rng;

const MU_SOFT: f32 = 0.55;
const MU_CORTEX: f32 = 9.0;
const MU_MARROW: f32 = 1.45;
/// Relative amplitude of the trabecular texture in medullary bone.
const TRABECULAR: f32 = 0.2;

/// View names, in the order views are taken, and their projection angles.
pub const VIEWS: [(&str, f32); 4] = [
    ("ap", 0.0),
    ("lat", std::f32::consts::FRAC_PI_2),
    ("oblique", std::f32::consts::FRAC_PI_4),
    ("ap2", 0.06),
];

/// Noise fields for a lesion's texture (holes, matrix clouds, septa), in
/// pixel space with the grain scaled to the image size, covering only the
/// pixels the lesion can reach. They come from a generator of their own, so
/// the rest of an image is the same whether or not it has a lesion.
pub struct LesionTextures {
    /// Pixel box covered: first column and row, width.
    x0: usize,
    y0: usize,
    width: usize,
    fine: Field,
    coarse: Field,
    cloud: Field,
    ridge: Field,
}

impl LesionTextures {
    pub fn draw<R: Rng>(
        rng: &mut R,
        lesion: &PlacedLesion<'_>,
        map: &PixelMap,
        n: usize,
    ) -> LesionTextures {
        let (mut x0, mut y0, mut x1, mut y1) = (n, n, 0, 0);
        for py in 0..n {
            for px in 0..n {
                let (x, y) = map.at(px, py);
                if lesion.near(x, y) {
                    (x0, y0) = (x0.min(px), y0.min(py));
                    (x1, y1) = (x1.max(px + 1), y1.max(py + 1));
                }
            }
        }
        let size = (x1.saturating_sub(x0).max(1), y1.saturating_sub(y0).max(1));
        let g = n as f32 / 256.0;
        LesionTextures {
            x0: x0.min(n),
            y0: y0.min(n),
            width: size.0,
            fine: band_noise(rng, size, 0.9 * g, 0.9 * g, 3.0 * g),
            coarse: band_noise(rng, size, 2.0 * g, 2.0 * g, 6.0 * g),
            cloud: band_noise(rng, size, 4.5 * g, 4.5 * g, 0.0),
            ridge: band_noise(rng, size, 2.5 * g, 2.5 * g, 10.0 * g),
        }
    }

    #[inline]
    fn texel(&self, px: usize, py: usize) -> Texel {
        let (Some(x), Some(y)) = (px.checked_sub(self.x0), py.checked_sub(self.y0)) else {
            return Texel::default();
        };
        let i = y * self.width + x;
        if x >= self.width || i >= self.fine.data.len() {
            return Texel::default();
        }
        Texel {
            fine: self.fine.data[i],
            coarse: self.coarse.data[i],
            cloud: self.cloud.data[i],
            ridge: self.ridge.data[i],
        }
    }
}

/// Draws for one image, in a fixed order from its own RNG: acquisition,
/// trabecular texture, then (inside [`Acquisition::develop`]) detector noise.
pub struct Shot {
    pub acquisition: Acquisition,
    /// Band-pass noise with vertical grain, modulating medullary bone.
    pub trabecular: Field,
}

impl Shot {
    pub fn draw<R: Rng>(rng: &mut R, n: usize, center: usize, knee: &Knee) -> Shot {
        let acquisition = Acquisition::draw(rng, center, knee.lateral < 0.0);
        let g = n as f32 / 256.0;
        let trabecular = band_noise(rng, (n, n), 0.5 * g, 1.3 * g, 3.0 * g);
        Shot {
            acquisition,
            trabecular,
        }
    }
}

/// The attenuation map of one view.
pub fn attenuation(
    view: &KneeView<'_>,
    lesion: Option<(&PlacedLesion<'_>, &LesionTextures)>,
    shot: &Shot,
    n: usize,
) -> Field {
    let density = view.knee.density;
    let map = shot.acquisition.pixel_map(n);
    let mut out = Field::new(n, n, 0.0);
    for py in 0..n {
        for px in 0..n {
            let i = py * n + px;
            let (x, y) = map.at(px, py);
            let mut sample = view.sample(x, y);
            let mut effect = Effect::NONE;
            let mut host = usize::MAX;
            if let Some((l, tex)) = lesion {
                if l.near(x, y) {
                    host = l.bone as usize;
                    effect = l.apply(x, y, &mut sample.bones[host], &tex.texel(px, py));
                }
            }
            let trab = 1.0 + TRABECULAR * shot.trabecular.data[i];
            let mut a = MU_SOFT * (sample.soft + effect.soft) + effect.extra;
            for (b, bone) in sample.bones.iter().enumerate() {
                if bone.sdf >= 0.0 {
                    continue;
                }
                let (cortical, medullary) = tube_paths(-bone.sdf, bone.radius, bone.cortex);
                let (cm, mm) = if b == host {
                    (effect.cortex, effect.marrow)
                } else {
                    (1.0, 1.0)
                };
                let marrow = MU_MARROW * medullary * (bone.marrow * trab * mm + bone.sclerosis);
                a += density * (1.0 - bone.physis) * (MU_CORTEX * cortical * cm + marrow);
            }
            out.data[i] = a;
        }
    }
    out
}

/// Render one view to 8-bit pixels. `rng` is the image's own generator;
/// `lesion_rng` draws the lesion's textures (only used with a lesion).
pub fn render_view<R: Rng, L: Rng>(
    knee: &Knee,
    lesion: Option<&LesionPlan>,
    center: usize,
    view: usize,
    size: u32,
    rng: &mut R,
    lesion_rng: &mut L,
) -> GrayImage {
    let n = size as usize;
    let phi = VIEWS[view.min(VIEWS.len() - 1)].1;
    let kv = knee.view(phi);
    let shot = Shot::draw(rng, n, center, knee);
    let map = shot.acquisition.pixel_map(n);
    let placed = lesion.map(|p| PlacedLesion::new(p, &kv));
    let textures = placed
        .as_ref()
        .map(|l| LesionTextures::draw(lesion_rng, l, &map, n));
    let att = attenuation(&kv, placed.as_ref().zip(textures.as_ref()), &shot, n);
    shot.acquisition.develop(&att, rng)
}
