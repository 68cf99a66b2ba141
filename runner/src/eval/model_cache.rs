//! The evaluation model, loaded once per weights identity per process and shared by every cell
//! of that variant (the reference reloads it for every `evaluate.py` run).
//!
//! The cache keeps the most recently used models up to [`MAX_LOADED`], so a sweep over variants
//! holds at most that many copies of the backbones in memory.

use std::sync::{Arc, Mutex, OnceLock};

use candle_core::Device;
use model::{Flamingo, FlamingoTokenizer, ImageProcessor, LoadReport};

use crate::train::assemble::{ModelSpec, load_model};

/// Models kept loaded at once.
pub const MAX_LOADED: usize = 2;

/// A loaded Flamingo with what evaluating it needs.
pub struct EvalModel {
    /// Identity of the weights (the media cache and RICES features are keyed by it).
    pub identity: String,
    /// The network.
    pub flamingo: Flamingo,
    /// Its tokenizer (with `<image>`, `<|endofchunk|>` and the pad token).
    pub tokenizer: FlamingoTokenizer,
    /// The image preprocessing of its vision encoder.
    pub processor: ImageProcessor,
    /// What the checkpoint provided.
    pub report: LoadReport,
}

impl std::fmt::Debug for EvalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalModel")
            .field("identity", &self.identity)
            .field("flamingo", &self.flamingo)
            .finish()
    }
}

fn loaded() -> &'static Mutex<Vec<Arc<EvalModel>>> {
    static LOADED: OnceLock<Mutex<Vec<Arc<EvalModel>>>> = OnceLock::new();
    LOADED.get_or_init(|| Mutex::new(Vec::new()))
}

/// Number of models [`load`] has loaded from disk in this process (cache misses), for tests.
pub fn loads() -> usize {
    LOADS.load(std::sync::atomic::Ordering::SeqCst)
}

static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The model of `identity`: the cached one, or loaded with `spec()` (called only on a miss).
/// The lock is held while loading, so concurrent cells of one variant load it once.
pub fn load(
    identity: &str,
    spec: impl FnOnce() -> anyhow::Result<ModelSpec>,
    device: &Device,
) -> anyhow::Result<Arc<EvalModel>> {
    let mut cache = loaded()
        .lock()
        .map_err(|_| anyhow::anyhow!("the model cache lock is poisoned"))?;
    if let Some(i) = cache.iter().position(|m| m.identity == identity) {
        // Most recently used last.
        let m = cache.remove(i);
        cache.push(m.clone());
        return Ok(m);
    }
    let spec = spec()?;
    let (flamingo, tokenizer, processor, report) = load_model(&spec, device).map_err(|e| {
        anyhow::anyhow!(
            "loading the model (vision {}, language {}, checkpoint {}): {e}",
            spec.vision_dir.display(),
            spec.language_dir.display(),
            spec.checkpoint
                .as_ref()
                .map_or("none".to_string(), |c| c.display().to_string())
        )
    })?;
    LOADS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let m = Arc::new(EvalModel {
        identity: identity.to_string(),
        flamingo,
        tokenizer,
        processor,
        report,
    });
    if cache.len() >= MAX_LOADED {
        cache.remove(0);
    }
    cache.push(m.clone());
    Ok(m)
}
