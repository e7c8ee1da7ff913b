//! The data pipeline of one job: every image decoded once into one uint8
//! tensor that lives on the training device, then batches are gathered,
//! augmented and normalised there, so no epoch waits on the CPU.

mod augment;

pub use augment::Augmenter;

use crossfold_shared::imaging::{load_square, ImagingError, ResizeMode};
use crossfold_shared::manifest::{Entry, Manifest};
use crossfold_shared::spec::Resize;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    Image(#[from] ImagingError),
    #[error("{0}")]
    Torch(#[from] tch::TchError),
    #[error("cancelled while decoding images")]
    Cancelled,
}

/// Images of a job, `[N, 1, S, S]` uint8 on `device`, in the given order.
pub struct ImageSet {
    pub images: Tensor,
    pub size: i64,
}

pub fn resize_mode(r: Resize) -> ResizeMode {
    match r {
        Resize::Pad => ResizeMode::Pad,
        Resize::Stretch => ResizeMode::Stretch,
    }
}

/// Decode and resize `entries` (on `threads` CPU threads), then move them to
/// `device` in one transfer. Any unreadable image fails the job, naming it.
/// When `cancel` becomes true, decoding stops within one image per thread.
pub fn load_images(
    manifest: &Manifest,
    entries: &[&Entry],
    size: u32,
    resize: Resize,
    device: Device,
    threads: usize,
    cancel: Option<&AtomicBool>,
) -> Result<ImageSet, DataError> {
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    let mode = resize_mode(resize);
    let per = (size as usize) * (size as usize);
    let threads = threads.max(1).min(entries.len().max(1));
    let chunk = entries.len().div_ceil(threads).max(1);
    let results: Vec<Result<Vec<u8>, DataError>> = std::thread::scope(|s| {
        let handles: Vec<_> = entries
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    let mut buf = Vec::with_capacity(c.len() * per);
                    for e in c {
                        if cancelled() {
                            return Err(DataError::Cancelled);
                        }
                        buf.extend(load_square(&manifest.resolve(e), size, mode)?);
                    }
                    Ok(buf)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut all = Vec::with_capacity(entries.len() * per);
    for r in results {
        all.extend(r?);
    }
    let s = size as i64;
    let images = Tensor::f_from_slice(&all)?
        .f_reshape([entries.len() as i64, 1, s, s])?
        .f_to_device(device)?;
    Ok(ImageSet { images, size: s })
}

/// Gather `index` (int64 on the device) as float in [0, 1].
pub fn gather(images: &Tensor, index: &Tensor) -> Result<Tensor, tch::TchError> {
    images
        .f_index_select(0, index)?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(255.0)
}

/// Mean and sample standard deviation of the pixels of `index`'s images,
/// for normalisation: computed on the device in chunks of 64 images (sums
/// in float64), so no float copy of the whole training set is ever made.
pub fn pixel_stats(images: &Tensor, index: &Tensor) -> Result<(f64, f64), tch::TchError> {
    const CHUNK: i64 = 64;
    let n_images = index.size()[0];
    let device = images.device();
    let mut sum = Tensor::f_zeros([], (Kind::Double, device))?;
    let mut sum_sq = Tensor::f_zeros([], (Kind::Double, device))?;
    let mut start = 0;
    while start < n_images {
        let len = CHUNK.min(n_images - start);
        let x = gather(images, &index.f_narrow(0, start, len)?)?.f_to_kind(Kind::Double)?;
        sum = sum.f_add(&x.f_sum(Kind::Double)?)?;
        sum_sq = sum_sq.f_add(&x.f_square()?.f_sum(Kind::Double)?)?;
        start += len;
    }
    let n = (n_images * images.size().iter().skip(1).product::<i64>()) as f64;
    let (sum, sum_sq) = (sum.f_double_value(&[])?, sum_sq.f_double_value(&[])?);
    let mean = sum / n.max(1.0);
    let var = ((sum_sq - n * mean * mean) / (n - 1.0).max(1.0)).max(0.0);
    Ok((mean, var.sqrt().max(1e-3)))
}

#[cfg(test)]
mod stats_tests {
    use super::*;
    use tch::Device;

    #[test]
    fn pixel_stats_match_the_whole_set_computed_at_once() {
        let images = Tensor::randint(256, [150, 1, 9, 7], (Kind::Uint8, Device::Cpu));
        // An index that is not in order and leaves images out.
        let index = Tensor::from_slice(&(0..150).rev().step_by(2).collect::<Vec<i64>>());
        let (mean, std) = pixel_stats(&images, &index).unwrap();
        let x = gather(&images, &index).unwrap().to_kind(Kind::Double);
        let want_mean = x.mean(Kind::Double).double_value(&[]);
        let want_std = x.std(true).double_value(&[]);
        assert!((mean - want_mean).abs() < 1e-12, "{mean} vs {want_mean}");
        assert!((std - want_std).abs() < 1e-9, "{std} vs {want_std}");
    }
}
