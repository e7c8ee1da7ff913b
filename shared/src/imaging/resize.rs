//! Resizing a [`GrayImage`] to the network's square input.

use super::GrayImage;

/// How a non-square image is fitted into the square.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResizeMode {
    /// Keep the aspect ratio: scale the long side to the square's side, centre
    /// the image and fill the rest with black (0).
    Pad,
    /// Scale each axis independently to fill the square.
    Stretch,
}

/// Resize `img` to `size × size` bytes, row-major, each `round(v * 255)`
/// clamped to `0..=255`.
///
/// Each axis is resampled on its own: area averaging when it shrinks,
/// bilinear interpolation (pixel centres aligned) when it grows, a copy when
/// its length is unchanged. In [`ResizeMode::Pad`] the short side becomes
/// `round(short * size / long)` (at least 1) and the image is centred, any odd
/// leftover pixel going to the right or bottom margin.
///
/// An image with no pixels, or whose `pixels` does not hold `width * height`
/// values, gives an all-black square.
pub fn resize_to_square(img: &GrayImage, size: u32, mode: ResizeMode) -> Vec<u8> {
    let side = size as usize;
    let mut out = vec![0u8; side * side];
    let (w, h) = (img.width as usize, img.height as usize);
    if side == 0 || w == 0 || h == 0 || img.pixels.len() != w * h {
        debug_assert_eq!(
            img.pixels.len(),
            w * h,
            "GrayImage with a wrong pixel count"
        );
        return out;
    }
    let (nw, nh) = match mode {
        ResizeMode::Stretch => (side, side),
        ResizeMode::Pad if w >= h => (side, scaled_side(h, w, side)),
        ResizeMode::Pad => (scaled_side(w, h, side), side),
    };
    let scaled = resample(&img.pixels, w, h, nw, nh);
    let (x0, y0) = ((side - nw) / 2, (side - nh) / 2);
    for (row, dst) in scaled
        .chunks_exact(nw)
        .zip(out.chunks_exact_mut(side).skip(y0))
    {
        for (d, &v) in dst[x0..x0 + nw].iter_mut().zip(row) {
            *d = quantise(v);
        }
    }
    out
}

/// `round(v * 255)` clamped to a byte; NaN becomes 0.
#[inline]
fn quantise(v: f32) -> u8 {
    // `as` saturates, and maps NaN to 0.
    (v * 255.0).round() as u8
}

/// The short side after scaling the long side to `side`: `round(short * side / long)`,
/// between 1 and `side`.
fn scaled_side(short: usize, long: usize, side: usize) -> usize {
    let (short, long, side) = (short as u128, long as u128, side as u128);
    let n = (2 * short * side + long) / (2 * long);
    n.clamp(1, side) as usize
}

/// The source pixels that make one output pixel, and their weights (summing to 1).
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

/// Weights to resample an axis of `src` pixels to `dst` pixels.
fn axis_taps(src: usize, dst: usize) -> Vec<Taps> {
    if src == dst {
        return (0..dst)
            .map(|i| Taps {
                start: i,
                weights: vec![1.0],
            })
            .collect();
    }
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|i| {
            if dst < src {
                // Area averaging: output pixel i covers [i*scale, (i+1)*scale)
                // of the source; each source pixel weighs by its overlap.
                let lo = i as f64 * scale;
                let hi = ((i + 1) as f64 * scale).min(src as f64);
                let first = lo.floor() as usize;
                let last = (hi.ceil() as usize).clamp(first + 1, src);
                let mut weights: Vec<f64> = (first..last)
                    .map(|j| (hi.min((j + 1) as f64) - lo.max(j as f64)).max(0.0))
                    .collect();
                let total: f64 = weights.iter().sum();
                if total > 0.0 {
                    weights.iter_mut().for_each(|w| *w /= total);
                } else {
                    weights = vec![1.0];
                }
                Taps {
                    start: first,
                    weights: weights.into_iter().map(|w| w as f32).collect(),
                }
            } else {
                // Bilinear: the output centre mapped back into the source.
                let x = ((i as f64 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f64);
                let j = (x.floor() as usize).min(src - 1);
                let f = x - j as f64;
                if j + 1 < src && f > 0.0 {
                    Taps {
                        start: j,
                        weights: vec![(1.0 - f) as f32, f as f32],
                    }
                } else {
                    Taps {
                        start: j,
                        weights: vec![1.0],
                    }
                }
            }
        })
        .collect()
}

/// Resample a `w × h` row-major image to `nw × nh`: rows first, then columns.
fn resample(src: &[f32], w: usize, h: usize, nw: usize, nh: usize) -> Vec<f32> {
    // Horizontal pass: h rows of nw.
    let xtaps = axis_taps(w, nw);
    let mut tmp = vec![0f32; h * nw];
    for (row, out) in src.chunks_exact(w).zip(tmp.chunks_exact_mut(nw)) {
        for (o, t) in out.iter_mut().zip(&xtaps) {
            *o = row[t.start..t.start + t.weights.len()]
                .iter()
                .zip(&t.weights)
                .map(|(v, wt)| v * wt)
                .sum();
        }
    }
    // Vertical pass: whole rows weighted and accumulated.
    let ytaps = axis_taps(h, nh);
    let mut out = vec![0f32; nh * nw];
    for (dst, t) in out.chunks_exact_mut(nw).zip(&ytaps) {
        for (k, &wt) in t.weights.iter().enumerate() {
            let row = &tmp[(t.start + k) * nw..(t.start + k + 1) * nw];
            for (d, &v) in dst.iter_mut().zip(row) {
                *d += v * wt;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_sum_to_one_and_stay_in_range() {
        for (src, dst) in [
            (10, 3),
            (2000, 64),
            (7, 7),
            (3, 10),
            (1, 5),
            (5, 1),
            (256, 224),
        ] {
            for t in axis_taps(src, dst) {
                let sum: f32 = t.weights.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{src}->{dst}: {sum}");
                assert!(t.start + t.weights.len() <= src);
                assert!(t.weights.iter().all(|&w| w >= 0.0));
            }
        }
    }

    #[test]
    fn area_average_of_an_exact_factor() {
        // 4 -> 2: each output is the mean of two inputs.
        let t = axis_taps(4, 2);
        assert_eq!((t[0].start, t[0].weights.clone()), (0, vec![0.5, 0.5]));
        assert_eq!((t[1].start, t[1].weights.clone()), (2, vec![0.5, 0.5]));
        // 3 -> 2: output 0 covers [0, 1.5): 2/3 of pixel 0 and 1/3 of pixel 1.
        let t = axis_taps(3, 2);
        assert_eq!(t[0].start, 0);
        assert!((t[0].weights[0] - 2.0 / 3.0).abs() < 1e-6);
        assert!((t[0].weights[1] - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn bilinear_when_enlarging() {
        // 2 -> 4: centres at 0.25, 0.75, 1.25, 1.75 map to -0.25, 0.25, 0.75, 1.25.
        let t = axis_taps(2, 4);
        assert_eq!((t[0].start, t[0].weights.clone()), (0, vec![1.0]));
        assert_eq!((t[1].start, t[1].weights.clone()), (0, vec![0.75, 0.25]));
        assert_eq!((t[2].start, t[2].weights.clone()), (0, vec![0.25, 0.75]));
        assert_eq!((t[3].start, t[3].weights.clone()), (1, vec![1.0]));
    }

    #[test]
    fn scaled_side_rounds() {
        assert_eq!(scaled_side(50, 100, 64), 32);
        assert_eq!(scaled_side(1, 1000, 64), 1);
        assert_eq!(scaled_side(3, 4, 10), 8); // 7.5 rounds up
    }
}
