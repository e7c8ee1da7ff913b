//! Decoded images kept across a worker's jobs. The rounds of an experiment
//! train on the same data set at the same size, so a worker decodes each
//! image once for all its jobs rather than once per job (on a cohort of
//! large images, decoding can take as long as a short job's training).
//!
//! Images are keyed by the data set's fingerprint (which covers every
//! file's content and path), the side and the resize mode, and by the path
//! as the manifest writes it. One data set at one size is kept; a job on
//! another one replaces it. Nothing is added past the byte limit.

use crossfold_shared::imaging::ResizeMode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Which images a cache holds: data-set fingerprint, side, resize mode.
type Key = (String, u32, ResizeMode);

/// Decoded, resized images (`side * side` bytes each) shared by a
/// worker's jobs.
#[derive(Debug)]
pub struct DecodedCache {
    limit_bytes: usize,
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    key: Option<Key>,
    images: HashMap<String, Arc<Vec<u8>>>,
    bytes: usize,
}

/// One job's use of the cache: its data set at its size.
#[derive(Clone, Copy, Debug)]
pub struct CacheUse<'a> {
    pub cache: &'a DecodedCache,
    /// The data set's fingerprint (SHA-256).
    pub dataset: &'a str,
}

impl DecodedCache {
    /// A cache of at most `limit_bytes` of pixels (0: keeps nothing).
    pub fn new(limit_bytes: usize) -> Self {
        DecodedCache {
            limit_bytes,
            kept: Mutex::new(Kept::default()),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        // A panic while holding the lock leaves the map whole.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The image at `path` of `dataset` at `size` and `mode`, if kept.
    pub fn get(
        &self,
        dataset: &str,
        size: u32,
        mode: ResizeMode,
        path: &str,
    ) -> Option<Arc<Vec<u8>>> {
        let kept = self.kept();
        match &kept.key {
            Some((d, s, m)) if d == dataset && *s == size && *m == mode => {
                kept.images.get(path).cloned()
            }
            _ => None,
        }
    }

    /// Keep `pixels` as the image at `path`; a different data set, size or
    /// mode replaces everything kept. Over the limit, nothing is added.
    pub fn put(
        &self,
        dataset: &str,
        size: u32,
        mode: ResizeMode,
        path: &str,
        pixels: Arc<Vec<u8>>,
    ) {
        let mut kept = self.kept();
        let key = (dataset.to_string(), size, mode);
        if kept.key.as_ref() != Some(&key) {
            *kept = Kept {
                key: Some(key),
                ..Kept::default()
            };
        }
        if kept.images.contains_key(path) || kept.bytes + pixels.len() > self.limit_bytes {
            return;
        }
        kept.bytes += pixels.len();
        kept.images.insert(path.to_string(), pixels);
    }

    /// Bytes of pixels kept.
    pub fn bytes(&self) -> usize {
        self.kept().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_data_set_at_one_size_is_kept_within_the_limit() {
        let cache = DecodedCache::new(10);
        let px = |n: usize| Arc::new(vec![7u8; n]);
        cache.put("d1", 2, ResizeMode::Pad, "a.png", px(4));
        cache.put("d1", 2, ResizeMode::Pad, "b.png", px(4));
        assert_eq!(
            cache.get("d1", 2, ResizeMode::Pad, "a.png").as_deref(),
            Some(&vec![7u8; 4])
        );
        // Another size, mode or data set is not the same image.
        assert!(cache.get("d1", 3, ResizeMode::Pad, "a.png").is_none());
        assert!(cache.get("d1", 2, ResizeMode::Stretch, "a.png").is_none());
        assert!(cache.get("d2", 2, ResizeMode::Pad, "a.png").is_none());
        // Past the limit nothing more is kept.
        cache.put("d1", 2, ResizeMode::Pad, "c.png", px(4));
        assert!(cache.get("d1", 2, ResizeMode::Pad, "c.png").is_none());
        assert_eq!(cache.bytes(), 8);
        // Another data set replaces what was kept.
        cache.put("d2", 2, ResizeMode::Pad, "a.png", px(4));
        assert!(cache.get("d1", 2, ResizeMode::Pad, "b.png").is_none());
        assert_eq!(cache.bytes(), 4);
        // A limit of 0 keeps nothing.
        let off = DecodedCache::new(0);
        off.put("d1", 2, ResizeMode::Pad, "a.png", px(4));
        assert!(off.get("d1", 2, ResizeMode::Pad, "a.png").is_none());
    }
}
