//! The data pipeline of one job: every image decoded once into one uint8
//! tensor that lives on the training device, then batches are gathered,
//! augmented and normalised there, so no epoch waits on the CPU.

mod augment;
mod cache;

pub use augment::Augmenter;
pub use cache::{CacheUse, DecodedCache};

use crossfold_shared::dataset::Squares;
use crossfold_shared::imaging::{load_square, ImagingError, Reading};
use crossfold_shared::manifest::{Entry, Manifest};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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
    /// How many came from the worker's cache rather than their files.
    pub from_cache: usize,
}

/// Where a job's images come from besides their files.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// CPU threads for decoding.
    pub threads: usize,
    /// Images already decoded and resized (by the data set's check): those
    /// found here at the job's size are taken out and not decoded again;
    /// the rest are let go once the job's images are loaded.
    pub squares: Option<&'a Squares>,
    /// When it becomes true, decoding stops within one image per thread.
    pub cancel: Option<&'a AtomicBool>,
    /// Counts the images made ready (decoded, or taken as they were): the
    /// job's progress while it prepares.
    pub done: Option<&'a AtomicU64>,
    /// Images decoded by this worker's earlier jobs, kept for later ones:
    /// used, and filled with what is decoded here.
    pub cache: Option<CacheUse<'a>>,
}

/// Decode and resize `entries` (on `sources.threads` CPU threads) unless
/// `sources.squares` has them, then move them to `device` in one transfer.
/// Any unreadable image fails the job, naming it.
pub fn load_images(
    manifest: &Manifest,
    entries: &[&Entry],
    reading: Reading,
    device: Device,
    sources: Sources,
) -> Result<ImageSet, DataError> {
    let Sources {
        threads,
        squares,
        cancel,
        done,
        cache,
    } = sources;
    let one_more = || {
        if let Some(d) = done {
            d.fetch_add(1, Ordering::Relaxed);
        }
    };
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    let size = reading.size;
    let _hold = cache.map(|c| c.cache.hold(c.dataset, reading));
    let per = (size as usize) * (size as usize);
    let threads = threads.max(1).min(entries.len().max(1));
    let chunk = entries.len().div_ceil(threads).max(1);
    let results: Vec<Result<(Vec<u8>, usize), DataError>> = std::thread::scope(|s| {
        let handles: Vec<_> = entries
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    let mut buf = Vec::with_capacity(c.len() * per);
                    let mut from_cache = 0;
                    for e in c {
                        if cancelled() {
                            return Err(DataError::Cancelled);
                        }
                        one_more();
                        if let Some(pixels) = squares.and_then(|sq| sq.take(&e.path, reading)) {
                            buf.extend(pixels);
                            continue;
                        }
                        let kept = cache.and_then(|c| c.cache.get(c.dataset, reading, &e.path));
                        match kept {
                            Some(pixels) => {
                                buf.extend_from_slice(&pixels);
                                from_cache += 1;
                            }
                            None => {
                                let pixels = load_square(&manifest.resolve(e), reading)?;
                                buf.extend_from_slice(&pixels);
                                if let Some(c) = cache {
                                    c.cache.put(c.dataset, reading, &e.path, Arc::new(pixels));
                                }
                            }
                        }
                    }
                    Ok((buf, from_cache))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    if let Some(sq) = squares {
        // What the job does not use (say, the normal images of a
        // malignancy round) is not kept through training.
        sq.clear();
    }
    let mut all = Vec::with_capacity(entries.len() * per);
    let mut from_cache = 0;
    for r in results {
        let (buf, n) = r?;
        all.extend(buf);
        from_cache += n;
    }
    let s = size as i64;
    let images = Tensor::f_from_slice(&all)?
        .f_reshape([entries.len() as i64, 1, s, s])?
        .f_to_device(device)?;
    Ok(ImageSet {
        images,
        size: s,
        from_cache,
    })
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
mod load_tests {
    use super::*;
    use crossfold_shared::dataset::{check_keeping, Keep};
    use crossfold_shared::imaging::{Gray16Scale, ResizeMode};

    /// Read at `size` px, padded, 16-bit images per image.
    fn at(size: u32) -> Reading {
        Reading {
            size,
            mode: ResizeMode::Pad,
            gray16: Gray16Scale::Auto,
        }
    }

    /// Three gradient PNGs and their manifest in `dir`.
    fn data_set(dir: &std::path::Path) -> Manifest {
        let mut csv = String::from("path,label,patient_id\n");
        for i in 0..3u8 {
            let img = image::GrayImage::from_fn(20, 12, |x, y| {
                image::Luma([(x as u8 * 7).wrapping_add(y as u8 * 3 + i * 40)])
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
            csv.push_str(&format!("./{i}.png,normal,p{i}\n"));
        }
        std::fs::write(dir.join("manifest.csv"), csv).unwrap();
        Manifest::load(&dir.join("manifest.csv")).unwrap()
    }

    fn sources(squares: Option<&Squares>) -> Sources<'_> {
        Sources {
            threads: 2,
            squares,
            cancel: None,
            done: None,
            cache: None,
        }
    }

    #[test]
    fn images_kept_by_the_check_are_not_decoded_again() {
        let dir = tempfile::tempdir().unwrap();
        let m = data_set(dir.path());
        let entries: Vec<&Entry> = m.entries.iter().collect();
        let done = AtomicU64::new(0);
        let counted = Sources {
            done: Some(&done),
            ..sources(None)
        };
        let decoded = load_images(&m, &entries, at(16), Device::Cpu, counted)
            .unwrap()
            .images;
        // Each image made ready is counted (the job's progress meanwhile).
        assert_eq!(done.load(Ordering::Relaxed), entries.len() as u64);
        let keep = Keep {
            reading: at(16),
            task: None,
        };
        let (report, squares) =
            check_keeping(&dir.path().join("manifest.csv"), None, keep).unwrap();
        assert!(report.ok());
        // At another size, mode or 16-bit scale the kept images do not serve.
        let stretched = Reading {
            mode: ResizeMode::Stretch,
            ..at(16)
        };
        let sixteen = Reading {
            gray16: Gray16Scale::Bits16,
            ..at(16)
        };
        for other in [stretched, at(32), sixteen] {
            assert!(squares.take("0.png", other).is_none());
        }
        // The files are spoiled after the check: the job still loads the
        // same pixels, so it did not read them again.
        for i in 0..3 {
            std::fs::write(dir.path().join(format!("{i}.png")), b"spoiled").unwrap();
        }
        let kept = load_images(
            &m,
            &entries[1..],
            at(16),
            Device::Cpu,
            sources(Some(&squares)),
        )
        .unwrap()
        .images;
        assert!(kept.equal(&decoded.narrow(0, 1, 2)));
        // What the job did not use is let go as well.
        assert!(squares.is_empty());
        // Without them, a spoiled file fails the job, naming it.
        let err = load_images(&m, &entries, at(16), Device::Cpu, sources(Some(&squares)))
            .err()
            .expect("spoiled files");
        assert!(err.to_string().contains(".png"), "{err}");
    }

    #[test]
    fn a_later_job_on_the_same_data_set_takes_the_cached_images() {
        let dir = tempfile::tempdir().unwrap();
        let m = data_set(dir.path());
        let entries: Vec<&Entry> = m.entries.iter().collect();
        let cache = DecodedCache::new(1 << 20);
        let with = |dataset: &'static str| Sources {
            cache: Some(CacheUse {
                cache: &cache,
                dataset,
            }),
            ..sources(None)
        };
        let first = load_images(&m, &entries, at(16), Device::Cpu, with("d1"))
            .unwrap()
            .images;
        assert!(cache.bytes() >= 3 * 16 * 16);
        // The files are spoiled: a later job of the same data set and size,
        // in another order, still loads the same pixels from the cache.
        for i in 0..3 {
            std::fs::write(dir.path().join(format!("{i}.png")), b"spoiled").unwrap();
        }
        let reversed: Vec<&Entry> = entries.iter().rev().copied().collect();
        let later = load_images(&m, &reversed, at(16), Device::Cpu, with("d1")).unwrap();
        assert!(later.images.equal(&first.flip([0])));
        assert_eq!(later.from_cache, 3);
        // Another size, or another data set (fingerprint), reads the files.
        for (size, dataset) in [(20, "d1"), (16, "d2")] {
            let err = load_images(&m, &entries, at(size), Device::Cpu, with(dataset));
            assert!(err.is_err(), "{size} {dataset}");
        }
    }
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
