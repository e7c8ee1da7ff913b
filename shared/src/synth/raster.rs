//! Raster primitives: a float image ([`Field`]), filtered noise, Gaussian
//! blur, and the shape helpers (signed distances, smooth minimum,
//! smoothstep) that the anatomy and the lesions are built from.
//!
//! Shapes are described by signed distance functions (SDF): negative inside,
//! positive outside, approximately the Euclidean distance to the outline near
//! it. Unions are smooth minima, so joints between parts (shaft and condyles)
//! are rounded like real bone.

use rand::Rng;
use rand_distr::StandardNormal;

/// A single-channel float image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Field {
    pub fn new(width: usize, height: usize, value: f32) -> Field {
        Field {
            width,
            height,
            data: vec![value; width * height],
        }
    }

    /// Independent standard-normal values, one per pixel.
    pub fn white_noise<R: Rng>(rng: &mut R, width: usize, height: usize) -> Field {
        let data = (0..width * height)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect();
        Field {
            width,
            height,
            data,
        }
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    #[inline]
    pub fn set(&mut self, x: usize, y: usize, v: f32) {
        self.data[y * self.width + x] = v;
    }

    /// Shift and scale to zero mean and unit standard deviation (a constant
    /// field becomes all zeros).
    pub fn normalize(&mut self) {
        let n = self.data.len().max(1) as f64;
        let mean = self.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = self
            .data
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let inv = if var > 1e-20 { 1.0 / var.sqrt() } else { 0.0 };
        for v in &mut self.data {
            *v = ((*v as f64 - mean) * inv) as f32;
        }
    }

    /// Mean of all pixels.
    pub fn mean(&self) -> f32 {
        let n = self.data.len().max(1) as f64;
        (self.data.iter().map(|&v| v as f64).sum::<f64>() / n) as f32
    }
}

/// Separable Gaussian blur with its own standard deviation (in pixels) along
/// each axis; borders are clamped. A sigma below 0.2 leaves that axis alone.
pub fn gaussian_blur(field: &Field, sigma_x: f32, sigma_y: f32) -> Field {
    let tmp = blur_axis(field, sigma_x, true);
    blur_axis(&tmp, sigma_y, false)
}

fn kernel(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as usize;
    let mut k: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let d = i as f32 - radius as f32;
            (-0.5 * d * d / (sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = k.iter().sum();
    for v in &mut k {
        *v /= sum;
    }
    k
}

fn blur_axis(field: &Field, sigma: f32, horizontal: bool) -> Field {
    if sigma < 0.2 {
        return field.clone();
    }
    if sigma >= 1.5 {
        // Three box passes approximate a Gaussian at a cost independent of
        // sigma: a pass of odd width w has variance (w^2 - 1) / 12; `m`
        // passes of width wl and the rest of wl + 2 match sigma^2.
        let ideal = (4.0 * sigma * sigma + 1.0).sqrt();
        let mut wl = ideal.floor() as i64;
        if wl % 2 == 0 {
            wl -= 1;
        }
        let wlf = wl as f32;
        let m = ((12.0 * sigma * sigma - 3.0 * wlf * wlf - 12.0 * wlf - 9.0) / (-4.0 * wlf - 4.0))
            .round()
            .clamp(0.0, 3.0) as usize;
        let rl = ((wl - 1) / 2).max(0) as usize;
        let mut out = field.clone();
        for pass in 0..3 {
            let r = if pass < m { rl } else { rl + 1 };
            out = box_axis(&out, r, horizontal);
        }
        return out;
    }
    let k = kernel(sigma);
    let r = (k.len() / 2) as isize;
    let (w, h) = (field.width, field.height);
    let mut out = Field::new(w, h, 0.0);
    let (len, lines) = if horizontal { (w, h) } else { (h, w) };
    let mut line = vec![0.0f32; len + 2 * r as usize];
    for j in 0..lines {
        for (i, slot) in line.iter_mut().enumerate() {
            let p = (i as isize - r).clamp(0, len as isize - 1) as usize;
            *slot = if horizontal {
                field.get(p, j)
            } else {
                field.get(j, p)
            };
        }
        for i in 0..len {
            let acc: f32 = k.iter().zip(&line[i..]).map(|(a, b)| a * b).sum();
            if horizontal {
                out.set(i, j, acc);
            } else {
                out.set(j, i, acc);
            }
        }
    }
    out
}

/// Moving average of width `2 r + 1` along one axis, borders clamped.
fn box_axis(field: &Field, r: usize, horizontal: bool) -> Field {
    let (w, h) = (field.width, field.height);
    let (len, lines) = if horizontal { (w, h) } else { (h, w) };
    let mut out = Field::new(w, h, 0.0);
    let inv = 1.0 / (2 * r + 1) as f32;
    let at = |j: usize, i: isize| -> f32 {
        let p = i.clamp(0, len as isize - 1) as usize;
        if horizontal {
            field.get(p, j)
        } else {
            field.get(j, p)
        }
    };
    let r = r as isize;
    for j in 0..lines {
        let mut acc: f32 = (-r..=r).map(|i| at(j, i)).sum();
        for i in 0..len {
            if horizontal {
                out.set(i, j, acc * inv);
            } else {
                out.set(j, i, acc * inv);
            }
            let i = i as isize;
            acc += at(j, i + r + 1) - at(j, i - r);
        }
    }
    out
}

/// Band-limited noise: white noise blurred with the given sigmas, minus a
/// coarser blur (`sigma_low`, 0 for none), normalised to unit variance.
pub fn band_noise<R: Rng>(
    rng: &mut R,
    (width, height): (usize, usize),
    sigma_x: f32,
    sigma_y: f32,
    sigma_low: f32,
) -> Field {
    let white = Field::white_noise(rng, width, height);
    let mut fine = gaussian_blur(&white, sigma_x, sigma_y);
    if sigma_low > 0.0 {
        let coarse = gaussian_blur(&white, sigma_low, sigma_low);
        for (f, c) in fine.data.iter_mut().zip(&coarse.data) {
            *f -= c;
        }
    }
    fine.normalize();
    fine
}

/// Hermite smoothstep from 0 at `e0` to 1 at `e1` (either order).
#[inline]
pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

#[inline]
pub fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// Polynomial smooth minimum of two distances with blend radius `k`.
#[inline]
pub fn smin(a: f32, b: f32, k: f32) -> f32 {
    if k <= 0.0 {
        return a.min(b);
    }
    let h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0);
    lerp(b, a, h) - k * h * (1.0 - h)
}

/// Smooth maximum (intersection) of two distances.
#[inline]
pub fn smax(a: f32, b: f32, k: f32) -> f32 {
    -smin(-a, -b, k)
}

/// Approximate signed distance to an axis-aligned ellipse centred at the
/// origin with half-axes `a` (x) and `b` (y): first-order, exact on the axes.
#[inline]
pub fn ellipse_sdf(x: f32, y: f32, a: f32, b: f32) -> f32 {
    let (ia, ib) = (1.0 / a, 1.0 / b);
    let (qx, qy) = (x * ia, y * ib);
    let e = (qx * qx + qy * qy).sqrt();
    if e < 1e-6 {
        return -a.min(b);
    }
    let gx = qx * ia;
    let gy = qy * ib;
    let g = (gx * gx + gy * gy).sqrt() / e;
    (e - 1.0) / g.max(1e-6)
}

/// Approximate signed distance to a superellipse `|x/a|^p + |y/b|^p = 1`
/// (p = 2 is an ellipse; larger p is squarer).
#[inline]
pub fn superellipse_sdf(x: f32, y: f32, a: f32, b: f32, p: i32) -> f32 {
    let (u, v) = ((x / a).abs().max(1e-6), (y / b).abs().max(1e-6));
    let (up, vp) = (u.powi(p), v.powi(p));
    let sum = up + vp;
    let f = match p {
        2 => sum.sqrt(),
        3 => sum.cbrt(),
        4 => sum.sqrt().sqrt(),
        _ => sum.powf(1.0 / p as f32),
    };
    // Gradient of f: f^(1-p) * (u^(p-1)/a, v^(p-1)/b).
    let k = f / sum;
    let gx = k * up / u / a;
    let gy = k * vp / v / b;
    (f - 1.0) / (gx * gx + gy * gy).sqrt().max(1e-6)
}

/// Signed distance to a capsule (segment from `a` to `b`, radius `r`).
#[inline]
pub fn capsule_sdf(p: (f32, f32), a: (f32, f32), b: (f32, f32), r: f32) -> f32 {
    let (px, py) = (p.0 - a.0, p.1 - a.1);
    let (bx, by) = (b.0 - a.0, b.1 - a.1);
    let t = ((px * bx + py * by) / (bx * bx + by * by).max(1e-12)).clamp(0.0, 1.0);
    let (dx, dy) = (px - bx * t, py - by * t);
    (dx * dx + dy * dy).sqrt() - r
}

/// Path lengths of a ray through a tube (a cylinder with a shell): outer
/// radius `radius`, shell (cortex) thickness `cortex`, at `depth` inside the
/// projected outline. Returns (shell path, core path). The shell path peaks
/// just inside the outline, which is why cortical bone shows as a bright rim
/// around a darker medullary canal.
#[inline]
pub fn tube_paths(depth: f32, radius: f32, cortex: f32) -> (f32, f32) {
    if depth <= 0.0 {
        return (0.0, 0.0);
    }
    let d = depth.min(radius);
    let outer = 2.0 * (d * (2.0 * radius - d)).max(0.0).sqrt();
    let inner_r = (radius - cortex).max(0.0);
    let di = (depth - cortex).min(inner_r);
    let inner = if di > 0.0 {
        2.0 * (di * (2.0 * inner_r - di)).max(0.0).sqrt()
    } else {
        0.0
    };
    ((outer - inner).max(0.0), inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn blur_preserves_mean_and_reduces_variance() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let white = Field::white_noise(&mut rng, 64, 64);
        let blurred = gaussian_blur(&white, 2.0, 2.0);
        assert!((white.mean() - blurred.mean()).abs() < 0.02);
        let var = |f: &Field| f.data.iter().map(|v| v * v).sum::<f32>() / f.data.len() as f32;
        assert!(var(&blurred) < 0.2 * var(&white));
    }

    #[test]
    fn box_blur_approximates_the_gaussian() {
        let mut impulse = Field::new(41, 1, 0.0);
        impulse.set(20, 0, 1.0);
        let boxed = gaussian_blur(&impulse, 3.0, 0.0);
        let var: f32 = (0..41)
            .map(|i| boxed.get(i, 0) * (i as f32 - 20.0).powi(2))
            .sum();
        assert!((boxed.data.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert!((var.sqrt() - 3.0).abs() < 0.3, "sd {}", var.sqrt());
    }

    #[test]
    fn ellipse_and_capsule_distances_have_the_right_sign_and_size() {
        assert!((ellipse_sdf(2.0, 0.0, 1.0, 0.5) - 1.0).abs() < 1e-5);
        assert!((ellipse_sdf(0.0, 0.25, 1.0, 0.5) + 0.25).abs() < 1e-5);
        assert!((capsule_sdf((0.5, 1.0), (0.0, 0.0), (1.0, 0.0), 0.5) - 0.5).abs() < 1e-5);
        assert!(smin(1.0, 1.0, 0.5) < 1.0);
        assert!((superellipse_sdf(2.0, 0.0, 1.0, 0.5, 3) - 1.0).abs() < 1e-4);
        assert!((superellipse_sdf(0.0, 0.25, 1.0, 0.5, 3) + 0.25).abs() < 0.05);
        assert!(
            (superellipse_sdf(0.0, 0.5, 1.0, 0.5, 2) - ellipse_sdf(0.0, 0.5, 1.0, 0.5)).abs()
                < 1e-4
        );
    }

    #[test]
    fn tube_shell_is_brightest_near_the_edge() {
        let (edge, _) = tube_paths(0.02, 0.1, 0.02);
        let (centre, core) = tube_paths(0.1, 0.1, 0.02);
        assert!(edge > centre);
        assert!(core > 0.0);
        assert_eq!(tube_paths(-0.01, 0.1, 0.02), (0.0, 0.0));
    }
}
