//! Image-caption pairs in the LAION/img2dataset layout (spec §4.1).
//!
//! A sample needs a `txt` member and an image member (`jpg`, else `png`, else `jpeg`, decoded by
//! content); text is `<image>{caption.strip()}<|endofchunk|>{eos}`, truncated to `max_tokens`
//! (32 by default: eoc and eos can be cut off), right-padded to the longest row of the batch by
//! the batcher. The horizontal flip is one decision per batch, applied by the batcher. Literal
//! `<image>` / `<|endofchunk|>` strings in captions are removed
//! ([`super::prepared::strip_special`]).

use super::images::decode_image;
use super::prepared::{PrepareContext, Prepared, field, py_strip, strip_special};
use super::skip::{Skip, SkipReason};
use super::webdataset::Sample;
use model::tokenizer::{END_OF_CHUNK, IMAGE};

/// Image extensions in the order the reference's `to_tuple("jpg;png;jpeg", "txt")` tries them.
pub const IMAGE_EXTS: [&str; 3] = ["jpg", "png", "jpeg"];

/// The training text of a caption.
pub fn pair_text(caption: &str, eos: &str) -> String {
    format!(
        "{IMAGE}{}{END_OF_CHUNK}{eos}",
        strip_special(py_strip(caption))
    )
}

/// Turns one pair sample into tokens and its (unflipped) image.
pub fn prepare_pair(sample: &Sample, ctx: &PrepareContext) -> Result<Prepared, Skip> {
    let caption = field(sample, "txt")?;
    let image_bytes = IMAGE_EXTS
        .iter()
        .find_map(|ext| sample.fields.get(*ext))
        .ok_or_else(|| Skip::new(SkipReason::MissingField, "no `jpg`/`png`/`jpeg` member"))?;
    let caption = std::str::from_utf8(caption)
        .map_err(|e| Skip::new(SkipReason::BadText, format!("`txt` is not UTF-8: {e}")))?;
    let img = decode_image(image_bytes).map_err(|e| Skip::new(SkipReason::BadImage, e))?;
    let ids = ctx.tokenize(&pair_text(caption, ctx.eos))?;
    let image = ctx
        .transform
        .apply(&img, false)
        .map_err(|e| Skip::new(SkipReason::BadImage, e))?;
    Ok(Prepared {
        key: sample.key.clone(),
        ids,
        images: vec![image],
    })
}
