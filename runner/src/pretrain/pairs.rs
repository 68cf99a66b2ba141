//! Image-caption pairs for contrastive pretraining, read from a world's LAION-style WebDataset
//! shards (`KEY.png` + `KEY.txt` members; the shard list is the manifest's `laion.shards` brace
//! pattern) and preprocessed once, as the model crate's [`ImageProcessor`] does for every image the
//! frozen encoder sees later.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use model::preprocess::ImageProcessor;

use super::PretrainError;

/// Decoded pairs: images as one `(N, S, S, 3)` u8 buffer (resized and centre-cropped, not yet
/// normalised) and their captions.
pub struct Pairs {
    /// Image side.
    pub size: usize,
    /// `N * S * S * 3` bytes, HWC per image.
    pub pixels: Vec<u8>,
    /// One caption per image.
    pub captions: Vec<String>,
    /// Samples skipped because a member was missing.
    pub skipped: usize,
}

impl Pairs {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.captions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }

    /// The images `idx` as normalised pixels `(B, 3, S, S)` with the processor's mean and std.
    pub fn batch(
        &self,
        idx: &[usize],
        processor: &ImageProcessor,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let s = self.size;
        let per = s * s * 3;
        let mut out = vec![0f32; idx.len() * per];
        for (b, &i) in idx.iter().enumerate() {
            let img = &self.pixels[i * per..(i + 1) * per];
            let dst = &mut out[b * per..(b + 1) * per];
            for p in 0..s * s {
                for c in 0..3 {
                    let v = img[p * 3 + c] as f32 / 255.0;
                    dst[c * s * s + p] = (v - processor.mean[c]) / processor.std[c];
                }
            }
        }
        Tensor::from_vec(out, (idx.len(), 3, s, s), device)?.to_dtype(DType::F32)
    }
}

/// The shard files of the world's `laion.shards` entry in `manifest.json`.
pub fn laion_shards(world: &Path) -> Result<Vec<PathBuf>, PretrainError> {
    let manifest = world.join(crate::data::synth::MANIFEST_PATH);
    let text = std::fs::read_to_string(&manifest).map_err(|e| PretrainError::io(&manifest, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| PretrainError::data(&manifest, e))?;
    let pattern = v["paths"]["laion.shards"]
        .as_str()
        .ok_or_else(|| PretrainError::data(&manifest, "no string `paths.\"laion.shards\"`"))?;
    let names = crate::data::shards::expand_braces(pattern)
        .map_err(|e| PretrainError::data(&manifest, e))?;
    Ok(names.into_iter().map(|n| world.join(n)).collect())
}

/// One sample's members as read from a tar.
#[derive(Default)]
struct RawSample {
    key: String,
    png: Option<Vec<u8>>,
    txt: Option<String>,
}

/// Reads up to `max` complete samples from the shards in order (consecutive members sharing a key,
/// the key being the member path up to the first dot of its file name).
fn read_raw(
    shards: &[PathBuf],
    max: usize,
) -> Result<(Vec<(PathBuf, RawSample)>, usize), PretrainError> {
    let mut out = Vec::new();
    let mut skipped = 0;
    'shards: for shard in shards {
        let file = std::fs::File::open(shard).map_err(|e| PretrainError::io(shard, e))?;
        let mut archive = tar::Archive::new(file);
        let entries = archive.entries().map_err(|e| PretrainError::io(shard, e))?;
        let mut cur = RawSample::default();
        let mut flush = |cur: RawSample, out: &mut Vec<(PathBuf, RawSample)>| {
            if cur.key.is_empty() {
                return;
            }
            if cur.png.is_some() && cur.txt.is_some() {
                out.push((shard.clone(), cur));
            } else {
                skipped += 1;
            }
        };
        for entry in entries {
            let mut entry = entry.map_err(|e| PretrainError::io(shard, e))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry
                .path()
                .map_err(|e| PretrainError::io(shard, e))?
                .to_string_lossy()
                .to_string();
            let (dir, file) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            let Some((stem, ext)) = file.split_once('.') else {
                continue;
            };
            let key = if dir.is_empty() {
                stem.to_string()
            } else {
                format!("{dir}/{stem}")
            };
            if key != cur.key {
                flush(std::mem::take(&mut cur), &mut out);
                if out.len() >= max {
                    break 'shards;
                }
                cur.key = key;
            }
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| PretrainError::data(shard, format!("member `{path}`: {e}")))?;
            match ext {
                "png" | "jpg" | "jpeg" => cur.png = Some(bytes),
                "txt" => {
                    let text = String::from_utf8(bytes).map_err(|e| {
                        PretrainError::data(shard, format!("member `{path}` is not UTF-8: {e}"))
                    })?;
                    cur.txt = Some(text.trim().to_string());
                }
                _ => {}
            }
        }
        flush(cur, &mut out);
        if out.len() >= max {
            break;
        }
    }
    out.truncate(max);
    Ok((out, skipped))
}

/// Reads and preprocesses up to `max` pairs (decoding on all cores); errors name the shard and key.
pub fn read_pairs(
    world: &Path,
    processor: &ImageProcessor,
    max: usize,
) -> Result<Pairs, PretrainError> {
    let shards = laion_shards(world)?;
    let (raw, skipped) = read_raw(&shards, max)?;
    let s = processor.image_size;
    let per = s * s * 3;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = raw.len().div_ceil(threads).max(1);
    let decoded: Vec<Result<Vec<u8>, PretrainError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = raw
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || -> Result<Vec<u8>, PretrainError> {
                    let mut buf = Vec::with_capacity(part.len() * per);
                    for (shard, sample) in part {
                        let bytes = sample.png.as_deref().unwrap_or_default();
                        let img = image::load_from_memory(bytes).map_err(|e| {
                            PretrainError::data(shard, format!("image of `{}`: {e}", sample.key))
                        })?;
                        buf.extend_from_slice(processor.resize_and_crop(&img).as_raw());
                    }
                    Ok(buf)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(PretrainError::data(
                        world,
                        "an image decoding thread panicked",
                    ))
                })
            })
            .collect()
    });
    let mut pixels = Vec::with_capacity(raw.len() * per);
    for part in decoded {
        pixels.extend(part?);
    }
    let captions = raw
        .into_iter()
        .map(|(_, r)| r.txt.unwrap_or_default())
        .collect();
    Ok(Pairs {
        size: s,
        pixels,
        captions,
        skipped,
    })
}
