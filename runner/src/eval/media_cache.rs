//! Encoded images (vision encoder + Perceiver latents), shared by every prompt, cell and dataset
//! of a process: each distinct image is encoded once per weights identity for the whole sweep,
//! where the reference encodes every image of every prompt again (a 32-shot prompt encodes 33).
//!
//! Entries are keyed by (weights identity, image path) and evicted least recently used beyond a
//! byte budget ([`DEFAULT_CAPACITY_MB`], or `RUNNER_MEDIA_CACHE_MB`). The cache counts the images
//! it sends through the vision encoder per weights identity, so a sweep can show that the count
//! equals the number of distinct images it used.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use candle_core::{Device, Tensor};

use super::model_cache::EvalModel;

/// Default budget: 4 GiB holds ~16k ViT-L/14 images (64 latents x 1024 x f32 = 256 KiB each).
pub const DEFAULT_CAPACITY_MB: usize = 4096;

/// Images encoded per vision-encoder forward pass.
const ENCODE_CHUNK: usize = 16;

type Key = (String, PathBuf);

#[derive(Default)]
struct Entries {
    map: HashMap<Key, (Tensor, u64)>,
    /// Last use tick -> key, oldest first.
    order: BTreeMap<u64, Key>,
    tick: u64,
    bytes: usize,
    /// Images sent through the vision encoder, per weights identity.
    encoded: HashMap<String, u64>,
}

impl Entries {
    fn touch(&mut self, key: &Key) -> Option<Tensor> {
        self.tick += 1;
        let tick = self.tick;
        let (t, last) = self.map.get_mut(key)?;
        self.order.remove(last);
        *last = tick;
        self.order.insert(tick, key.clone());
        Some(t.clone())
    }
}

/// A byte-bounded LRU of per-image visual latents `(n, D)`.
pub struct MediaCache {
    capacity_bytes: usize,
    entries: Mutex<Entries>,
    /// Held while encoding, so two cells needing one image encode it once.
    encoding: Mutex<()>,
}

/// An image that could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The file could not be read or decoded.
    #[error(transparent)]
    Image(#[from] super::datasets::DatasetError),
    /// Preprocessing or the forward pass failed.
    #[error("encoding {}: {message}", path.display())]
    Encode {
        /// First image of the failing chunk.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A lock was poisoned by a panicking thread.
    #[error("the media cache lock is poisoned")]
    Poisoned,
}

impl MediaCache {
    /// An empty cache holding at most `capacity_bytes` of latents.
    pub fn new(capacity_bytes: usize) -> Self {
        MediaCache {
            capacity_bytes,
            entries: Mutex::new(Entries::default()),
            encoding: Mutex::new(()),
        }
    }

    /// The process-wide cache.
    pub fn global() -> &'static MediaCache {
        static CACHE: OnceLock<MediaCache> = OnceLock::new();
        CACHE.get_or_init(|| {
            let mb = std::env::var("RUNNER_MEDIA_CACHE_MB")
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(DEFAULT_CAPACITY_MB);
            MediaCache::new(mb << 20)
        })
    }

    /// Images sent through the vision encoder so far for weights `identity`.
    pub fn encoded(&self, identity: &str) -> u64 {
        self.entries
            .lock()
            .map(|e| e.encoded.get(identity).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Latents `(n, D)` of each image in `paths` (in order), encoding the ones not cached.
    pub fn latents(&self, model: &EvalModel, paths: &[&Path]) -> Result<Vec<Tensor>, MediaError> {
        let key = |p: &Path| (model.identity.clone(), p.to_path_buf());
        if let Some(found) = self.lookup(paths, &key)? {
            return Ok(found);
        }
        let _guard = self.encoding.lock().map_err(|_| MediaError::Poisoned)?;
        // Another cell may have encoded some of them while this one waited.
        let mut missing: Vec<&Path> = {
            let e = self.entries.lock().map_err(|_| MediaError::Poisoned)?;
            paths
                .iter()
                .copied()
                .filter(|p| !e.map.contains_key(&key(p)))
                .collect()
        };
        missing.sort();
        missing.dedup();
        let mut fresh: HashMap<&Path, Tensor> = HashMap::new();
        for chunk in missing.chunks(ENCODE_CHUNK) {
            let latents = encode(model, chunk)?;
            let mut e = self.entries.lock().map_err(|_| MediaError::Poisoned)?;
            *e.encoded.entry(model.identity.clone()).or_default() += chunk.len() as u64;
            drop(e);
            for (p, t) in chunk.iter().zip(latents) {
                fresh.insert(p, t.clone());
                self.insert(key(p), t)?;
            }
        }
        // Serve this call even if the budget evicted part of it.
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            match fresh.get(p) {
                Some(t) => out.push(t.clone()),
                None => {
                    let mut e = self.entries.lock().map_err(|_| MediaError::Poisoned)?;
                    let t = e.touch(&key(p)).ok_or_else(|| MediaError::Encode {
                        path: p.to_path_buf(),
                        message: "evicted before use: RUNNER_MEDIA_CACHE_MB is too small".into(),
                    })?;
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    fn lookup(
        &self,
        paths: &[&Path],
        key: &dyn Fn(&Path) -> Key,
    ) -> Result<Option<Vec<Tensor>>, MediaError> {
        let mut e = self.entries.lock().map_err(|_| MediaError::Poisoned)?;
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            match e.touch(&key(p)) {
                Some(t) => out.push(t),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    fn insert(&self, key: Key, t: Tensor) -> Result<(), MediaError> {
        let size = t.elem_count() * t.dtype().size_in_bytes();
        let mut e = self.entries.lock().map_err(|_| MediaError::Poisoned)?;
        e.tick += 1;
        let tick = e.tick;
        if let Some((_, last)) = e.map.insert(key.clone(), (t, tick)) {
            e.order.remove(&last);
            e.bytes -= size;
        }
        e.order.insert(tick, key);
        e.bytes += size;
        while e.bytes > self.capacity_bytes && e.map.len() > 1 {
            let Some((_, old)) = e.order.pop_first() else {
                break;
            };
            if let Some((t, _)) = e.map.remove(&old) {
                e.bytes -= t.elem_count() * t.dtype().size_in_bytes();
            }
        }
        Ok(())
    }
}

/// Decodes and preprocesses `paths` on all cores, then runs vision encoder + Perceiver once.
fn encode(model: &EvalModel, paths: &[&Path]) -> Result<Vec<Tensor>, MediaError> {
    let dev = model.flamingo.device().clone();
    let first = paths.first().map(|p| p.to_path_buf()).unwrap_or_default();
    let err = |message: String| MediaError::Encode {
        path: first.clone(),
        message,
    };
    let pixels = preprocess_all(model, paths, &Device::Cpu)?;
    let stacked = Tensor::stack(&pixels, 0)
        .and_then(|t| t.unsqueeze(1))
        .and_then(|t| t.to_device(&dev))
        .map_err(|e| err(e.to_string()))?;
    let latents = model
        .flamingo
        .encode_media_inference(&stacked)
        .map_err(|e| err(e.to_string()))?;
    (0..paths.len())
        .map(|i| {
            latents
                .get(i)
                .and_then(|t| t.squeeze(0))
                .map_err(|e| err(e.to_string()))
        })
        .collect()
}

fn preprocess_all(
    model: &EvalModel,
    paths: &[&Path],
    dev: &Device,
) -> Result<Vec<Tensor>, MediaError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(paths.len())
        .max(1);
    let per = paths.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(per.max(1))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|p| {
                            let img = super::datasets::image::decode(p)?;
                            model
                                .processor
                                .preprocess(&img, dev)
                                .map_err(|e| MediaError::Encode {
                                    path: p.to_path_buf(),
                                    message: e.to_string(),
                                })
                        })
                        .collect::<Result<Vec<_>, MediaError>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(paths.len());
        for h in handles {
            out.extend(h.join().map_err(|_| MediaError::Poisoned)??);
        }
        Ok(out)
    })
}
