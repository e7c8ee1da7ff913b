//! Decoded images kept across a worker's jobs. The rounds of an experiment
//! train on the same data set at the same size, so a worker decodes each
//! image once for all its jobs rather than once per job (on a cohort of
//! large images, decoding can take as long as a short job's training).
//!
//! Images are keyed by the data set's fingerprint (which covers every
//! file's content and path), the side and the resize mode, and by the path
//! as the manifest writes it. Several such sets can be kept at once (slots
//! training different experiments side by side); when a new image does not
//! fit under the limit, the sets used longest ago are let go, but never one
//! that a job is loading from at that moment (two jobs whose sets do not fit
//! together would otherwise evict each other image by image); if it still
//! does not fit it is not kept.

use crossfold_shared::imaging::Reading;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Which images a set holds: data-set fingerprint, and how they were read
/// (side, resize mode, 16-bit scale).
type Key = (String, Reading);

/// What an image costs besides its pixels (its path, the map's slot).
const PER_IMAGE: usize = 96;

/// Decoded, resized images (`side * side` bytes each) shared by a
/// worker's jobs.
#[derive(Debug)]
pub struct DecodedCache {
    limit_bytes: usize,
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    sets: HashMap<Key, Set>,
    bytes: usize,
    /// Counts uses, to find the set used longest ago.
    clock: u64,
}

#[derive(Debug, Default)]
struct Set {
    images: HashMap<String, Arc<Vec<u8>>>,
    bytes: usize,
    used: u64,
    /// Jobs loading from this set now ([`DecodedCache::hold`]).
    loading: usize,
}

/// A job's claim on its set while it loads: the set is not let go to make
/// room for another's images meanwhile.
#[must_use]
pub struct Hold<'a> {
    cache: &'a DecodedCache,
    key: Key,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if let Some(set) = self.cache.kept().sets.get_mut(&self.key) {
            set.loading = set.loading.saturating_sub(1);
        }
    }
}

/// One job's use of the cache: its data set at its size.
#[derive(Clone, Copy, Debug)]
pub struct CacheUse<'a> {
    pub cache: &'a DecodedCache,
    /// The data set's fingerprint (SHA-256).
    pub dataset: &'a str,
}

fn cost(path: &str, pixels: &[u8]) -> usize {
    pixels.len() + path.len() + PER_IMAGE
}

impl DecodedCache {
    /// A cache of at most `limit_bytes` (0: keeps nothing).
    pub fn new(limit_bytes: usize) -> Self {
        DecodedCache {
            limit_bytes,
            kept: Mutex::new(Kept::default()),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        // A panic while holding the lock leaves the maps whole.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim the set of `dataset` read as `reading` while loading from it.
    pub fn hold(&self, dataset: &str, reading: Reading) -> Hold<'_> {
        let key = (dataset.to_string(), reading);
        let mut kept = self.kept();
        kept.clock += 1;
        let now = kept.clock;
        let set = kept.sets.entry(key.clone()).or_default();
        set.loading += 1;
        set.used = now;
        Hold { cache: self, key }
    }

    /// The image at `path` of `dataset` read as `reading`, if kept.
    pub fn get(&self, dataset: &str, reading: Reading, path: &str) -> Option<Arc<Vec<u8>>> {
        let mut kept = self.kept();
        kept.clock += 1;
        let now = kept.clock;
        let set = kept.sets.get_mut(&(dataset.to_string(), reading))?;
        set.used = now;
        set.images.get(path).cloned()
    }

    /// Keep `pixels` as the image at `path` of `dataset` read as
    /// `reading`, letting go of the sets used longest ago if it needs room.
    pub fn put(&self, dataset: &str, reading: Reading, path: &str, pixels: Arc<Vec<u8>>) {
        let need = cost(path, &pixels);
        if need > self.limit_bytes {
            return;
        }
        let key = (dataset.to_string(), reading);
        // Sets let go are dropped after the lock is released.
        let mut gone = Vec::new();
        {
            let mut kept = self.kept();
            kept.clock += 1;
            let now = kept.clock;
            if kept
                .sets
                .get(&key)
                .is_some_and(|s| s.images.contains_key(path))
            {
                return;
            }
            while kept.bytes + need > self.limit_bytes {
                let oldest = kept
                    .sets
                    .iter()
                    .filter(|(k, s)| **k != key && s.loading == 0)
                    .min_by_key(|(_, s)| s.used)
                    .map(|(k, _)| k.clone());
                let Some(oldest) = oldest else { break };
                if let Some(set) = kept.sets.remove(&oldest) {
                    kept.bytes -= set.bytes;
                    gone.push(set);
                }
            }
            if kept.bytes + need <= self.limit_bytes {
                kept.bytes += need;
                let set = kept.sets.entry(key).or_default();
                set.used = now;
                set.bytes += need;
                set.images.insert(path.to_string(), pixels);
            }
        }
        drop(gone);
    }

    /// Bytes kept (pixels and their bookkeeping).
    pub fn bytes(&self) -> usize {
        self.kept().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_shared::imaging::{Gray16Scale, ResizeMode};

    /// Read at `size` px with `mode`, 16-bit images per image.
    fn at(size: u32, mode: ResizeMode) -> Reading {
        Reading {
            size,
            mode,
            gray16: Gray16Scale::Auto,
        }
    }

    #[test]
    fn sets_are_kept_within_the_limit_and_the_least_used_go_first() {
        let px = |n: usize| Arc::new(vec![7u8; n]);
        let one = cost("a.png", &[0; 100]);
        let cache = DecodedCache::new(3 * one);
        cache.put("d1", at(2, ResizeMode::Pad), "a.png", px(100));
        cache.put("d1", at(2, ResizeMode::Pad), "b.png", px(100));
        assert_eq!(
            cache.get("d1", at(2, ResizeMode::Pad), "a.png").as_deref(),
            Some(&vec![7u8; 100])
        );
        // Another size, mode, 16-bit scale or data set is not the same image.
        assert!(cache.get("d1", at(3, ResizeMode::Pad), "a.png").is_none());
        assert!(cache
            .get("d1", at(2, ResizeMode::Stretch), "a.png")
            .is_none());
        let sixteen = Reading {
            gray16: Gray16Scale::Bits16,
            ..at(2, ResizeMode::Pad)
        };
        assert!(cache.get("d1", sixteen, "a.png").is_none());
        assert!(cache.get("d2", at(2, ResizeMode::Pad), "a.png").is_none());
        // Two sets side by side (two slots on two experiments).
        cache.put("d2", at(2, ResizeMode::Pad), "a.png", px(100));
        assert!(cache.get("d1", at(2, ResizeMode::Pad), "b.png").is_some());
        assert!(cache.get("d2", at(2, ResizeMode::Pad), "a.png").is_some());
        assert_eq!(cache.bytes(), 3 * one);
        // Full: d1 was used longest ago, so it goes to make room for d2.
        cache.put("d2", at(2, ResizeMode::Pad), "b.png", px(100));
        assert!(cache.get("d1", at(2, ResizeMode::Pad), "a.png").is_none());
        assert!(cache.get("d2", at(2, ResizeMode::Pad), "b.png").is_some());
        assert_eq!(cache.bytes(), 2 * one);
        // A set never evicts itself: past the limit its new images are not kept.
        cache.put("d2", at(2, ResizeMode::Pad), "c.png", px(100));
        cache.put("d2", at(2, ResizeMode::Pad), "d.png", px(100));
        assert!(cache.get("d2", at(2, ResizeMode::Pad), "d.png").is_none());
        assert_eq!(cache.bytes(), 3 * one);
        // A set being loaded from is not let go for another's images: with
        // d2 held, d3's image is not kept rather than evicting d2.
        let held = cache.hold("d2", at(2, ResizeMode::Pad));
        cache.put("d3", at(2, ResizeMode::Pad), "a.png", px(100));
        assert!(cache.get("d3", at(2, ResizeMode::Pad), "a.png").is_none());
        assert!(cache.get("d2", at(2, ResizeMode::Pad), "a.png").is_some());
        drop(held);
        cache.put("d3", at(2, ResizeMode::Pad), "a.png", px(100));
        assert!(cache.get("d3", at(2, ResizeMode::Pad), "a.png").is_some());
        assert!(cache.get("d2", at(2, ResizeMode::Pad), "a.png").is_none());
        // A limit of 0 keeps nothing.
        let off = DecodedCache::new(0);
        off.put("d1", at(2, ResizeMode::Pad), "a.png", px(4));
        assert!(off.get("d1", at(2, ResizeMode::Pad), "a.png").is_none());
        assert_eq!(off.bytes(), 0);
    }
}
