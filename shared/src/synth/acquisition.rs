//! How an image is taken: positioning, exposure and detector.
//!
//! Everything here is drawn from the image's own RNG and the acquiring
//! center, never from the label, so none of it is a shortcut to the answer:
//! rotation (+-8 degrees), zoom and shift, exposure (how attenuation maps to
//! brightness), window and gamma, the anode heel effect (a gentle brightness
//! gradient), unsharpness (Gaussian blur), quantum noise (stronger where
//! fewer photons arrive), collimation borders (shutters, light or dark), and
//! the lead L/R marker in a corner. Each center has its own mild habits
//! (noisier, softer, more tightly collimated) that apply equally to every
//! label, since centers are balanced across labels.

use super::font::{draw_text_field, text_width, CELL_HEIGHT};
use super::raster::{gaussian_blur, smoothstep, Field};
use image::GrayImage;
use rand::Rng;
use rand_distr::StandardNormal;

/// Attenuation that maps to full brightness at exposure 1.
const FULL_SCALE: f32 = 2.3;

/// Affine map from pixel indices to anatomy coordinates:
/// `x = x.0 * px + x.1 * py + x.2`, likewise `y`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelMap {
    pub x: (f32, f32, f32),
    pub y: (f32, f32, f32),
}

impl PixelMap {
    #[inline]
    pub fn at(&self, px: usize, py: usize) -> (f32, f32) {
        let (px, py) = (px as f32, py as f32);
        (
            self.x.0 * px + self.x.1 * py + self.x.2,
            self.y.0 * px + self.y.1 * py + self.y.2,
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Acquisition {
    /// Image rotation (radians).
    pub rotation: f32,
    /// Magnification of the anatomy.
    pub zoom: f32,
    /// Position of the joint centre relative to the image centre (widths).
    pub shift: (f32, f32),
    /// Gain on attenuation before the exponential (X-ray exposure).
    pub exposure: f32,
    /// Display window (lower, upper) on normalised brightness.
    pub window: (f32, f32),
    pub gamma: f32,
    /// Gray levels of black and white, 0..1.
    pub levels: (f32, f32),
    /// Noise SD at full brightness.
    pub noise: f32,
    /// Blur SD in pixels of a 256-pixel image.
    pub blur: f32,
    /// Heel effect: relative brightness change across the image, direction.
    pub heel: (f32, f32),
    /// Collimated margins (left, right, top, bottom), fractions of the size.
    pub collimation: [f32; 4],
    /// Brightness of the collimated area.
    pub shutter: f32,
    /// Side marker letter and corner (0 top-left, 1 top-right, 2 bottom-left,
    /// 3 bottom-right); whether it sits on a dark holder.
    pub marker: char,
    pub marker_corner: usize,
    pub marker_holder: bool,
}

impl Acquisition {
    /// Draw the acquisition of one image at `center` (0..3) of a right or
    /// left knee.
    pub fn draw<R: Rng>(rng: &mut R, center: usize, right_knee: bool) -> Acquisition {
        let (noise_f, blur_f, colli_p) = match center {
            0 => (0.8, 0.9, 0.4),
            1 => (1.0, 1.3, 0.55),
            _ => (1.3, 1.0, 0.75),
        };
        let mut u = |lo: f32, hi: f32| rng.random_range(lo..hi);
        let rotation = u(-8.0, 8.0).to_radians();
        let zoom = u(0.85, 1.15);
        let shift = (u(-0.05, 0.05), u(-0.05, 0.05));
        let exposure = u(0.75, 1.3);
        let window = (u(-0.04, 0.08), u(0.82, 1.02));
        let gamma = u(0.75, 1.35);
        let levels = (u(0.0, 0.08), u(0.88, 1.0));
        let noise = u(0.008, 0.035) * noise_f;
        let blur = u(0.35, 1.3) * blur_f;
        let ha = u(0.0, std::f32::consts::TAU);
        let heel = (u(0.0, 0.12), ha);
        let mut collimation = [0.0; 4];
        for c in &mut collimation {
            if u(0.0, 1.0) < colli_p {
                *c = u(0.02, 0.1);
            }
        }
        let shutter = if u(0.0, 1.0) < 0.7 {
            u(0.75, 0.95)
        } else {
            u(0.0, 0.05)
        };
        let marker_corner = (u(0.0, 4.0) as usize).min(3);
        let marker_holder = u(0.0, 1.0) < 0.4;
        Acquisition {
            rotation,
            zoom,
            shift,
            exposure,
            window,
            gamma,
            levels,
            noise,
            blur,
            heel,
            collimation,
            shutter,
            marker: if right_knee { 'R' } else { 'L' },
            marker_corner,
            marker_holder,
        }
    }

    /// Anatomy coordinates seen at pixel (`px`, `py`) of an `n`-pixel image.
    pub fn to_anatomy(&self, px: usize, py: usize, n: usize) -> (f32, f32) {
        self.pixel_map(n).at(px, py)
    }

    /// The affine map from pixels of an `n`-pixel image to anatomy.
    pub fn pixel_map(&self, n: usize) -> PixelMap {
        let (s, c) = self.rotation.sin_cos();
        let (s, c) = (s / self.zoom, c / self.zoom);
        let step = 1.0 / n as f32;
        // Pixel centre (px + 0.5) / n - 0.5 - shift, rotated and scaled.
        let x0 = 0.5 * step - 0.5 - self.shift.0;
        let y0 = 0.5 * step - 0.5 - self.shift.1;
        PixelMap {
            x: (c * step, s * step, c * x0 + s * y0),
            y: (-s * step, c * step, -s * x0 + c * y0),
        }
    }

    /// Turn an attenuation map into the 8-bit image, drawing detector noise
    /// from `rng`.
    pub fn develop<R: Rng>(&self, attenuation: &Field, rng: &mut R) -> GrayImage {
        let n = attenuation.width;
        let nf = n as f32;
        let norm = 1.0 / (1.0 - (-self.exposure * FULL_SCALE).exp());
        let (w0, w1) = self.window;
        let (hs, ha) = self.heel;
        let (hx, hy) = (ha.cos(), ha.sin());
        let [cl, cr, ct, cb] = self.collimation;
        let soft = 1.5 / nf;
        let mut img = Field::new(n, n, 0.0);
        for py in 0..n {
            for px in 0..n {
                let a = attenuation.get(px, py);
                let bright = (1.0 - (-self.exposure * a).exp()) * norm;
                let mut p = ((bright - w0) / (w1 - w0)).clamp(0.0, 1.0).powf(self.gamma);
                let (x, y) = ((px as f32 + 0.5) / nf, (py as f32 + 0.5) / nf);
                p *= 1.0 + hs * ((x - 0.5) * hx + (y - 0.5) * hy);
                let open = smoothstep(cl - soft, cl + soft, x)
                    * smoothstep(1.0 - cr + soft, 1.0 - cr - soft, x)
                    * smoothstep(ct - soft, ct + soft, y)
                    * smoothstep(1.0 - cb + soft, 1.0 - cb - soft, y);
                img.set(px, py, p * open + self.shutter * (1.0 - open));
            }
        }
        self.draw_marker(&mut img);
        let sigma = self.blur * nf / 256.0;
        let mut img = gaussian_blur(&img, sigma, sigma);
        for v in &mut img.data {
            let z: f32 = rng.sample(StandardNormal);
            *v += self.noise * (0.25 + 0.75 * v.max(0.0).sqrt()) * z;
        }
        let (b, w) = self.levels;
        let raw: Vec<u8> = img
            .data
            .iter()
            .map(|v| ((b + (w - b) * v.clamp(0.0, 1.0)) * 255.0).round() as u8)
            .collect();
        GrayImage::from_raw(n as u32, n as u32, raw).unwrap_or_else(|| GrayImage::new(1, 1))
    }

    /// The lead side marker: a bright letter inside the open field.
    fn draw_marker(&self, img: &mut Field) {
        let n = img.width as f32;
        let scale = ((n * 0.045 / CELL_HEIGHT as f32).round() as u32).max(1);
        let text = self.marker.to_string();
        let w = text_width(&text, scale) as f32;
        let h = (CELL_HEIGHT * scale) as f32;
        let inset = 0.035 * n;
        let [cl, cr, ct, cb] = self.collimation;
        let x = if self.marker_corner.is_multiple_of(2) {
            cl * n + inset
        } else {
            n * (1.0 - cr) - inset - w
        };
        let y = if self.marker_corner < 2 {
            ct * n + inset
        } else {
            n * (1.0 - cb) - inset - h
        };
        if self.marker_holder {
            let pad = scale as f32 * 2.0;
            let (x0, y0) = ((x - pad).max(0.0) as usize, (y - pad).max(0.0) as usize);
            let x1 = ((x + w + pad) as usize).min(img.width);
            let y1 = ((y + h + pad) as usize).min(img.height);
            for yy in y0..y1 {
                for xx in x0..x1 {
                    let v = img.get(xx, yy);
                    img.set(xx, yy, v * 0.35);
                }
            }
        }
        draw_text_field(img, x as i64, y as i64, &text, scale, 0.97);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn parameters_stay_in_range_and_marker_follows_side() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for i in 0..200 {
            let a = Acquisition::draw(&mut rng, i % 3, i % 2 == 0);
            assert!(a.rotation.abs() <= 8f32.to_radians() + 1e-6);
            assert!((0.85..=1.15).contains(&a.zoom));
            assert_eq!(a.marker, if i % 2 == 0 { 'R' } else { 'L' });
        }
    }

    #[test]
    fn denser_means_brighter_and_centre_maps_to_the_joint() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let mut a = Acquisition::draw(&mut rng, 0, true);
        a.noise = 0.0;
        a.collimation = [0.0; 4];
        a.marker_holder = false;
        let mut att = Field::new(64, 64, 0.2);
        for x in 0..64 {
            att.set(x, 40, 1.5);
        }
        let img = a.develop(&att, &mut rng);
        assert!(img.get_pixel(32, 40).0[0] > img.get_pixel(32, 20).0[0]);
        let mut b = a.clone();
        b.shift = (0.0, 0.0);
        b.rotation = 0.3;
        let (x, y) = b.to_anatomy(32, 32, 64);
        let d = 0.5 / 64.0;
        let (s, c) = 0.3f32.sin_cos();
        assert!((x - (c * d + s * d) / b.zoom).abs() < 1e-6);
        assert!((y - (c * d - s * d) / b.zoom).abs() < 1e-6);
        let (x, y) = b.to_anatomy(0, 63, 64);
        let (u, v) = (-0.5 + d, 0.5 - d);
        assert!((x - (c * u + s * v) / b.zoom).abs() < 1e-6);
        assert!((y - (c * v - s * u) / b.zoom).abs() < 1e-6);
    }
}
