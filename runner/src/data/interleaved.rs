//! Interleaved image-text documents in the MMC4 layout (spec §4.2).
//!
//! A sample's `json` member holds `text_list` (sentences), `similarity_matrix` (images x
//! sentences) and `image_info[k].image_base64`. A document carrying an `is_gpt` key is a ChatGPT
//! sequence and goes to [`super::sequences`], as in the reference. The rules, in order:
//!
//! 1. keep images that have `image_base64` and at least 11,000 raw bytes (`len // 1000 > 10`);
//!    all of them are decoded (one undecodable image rejects the document); none left: reject;
//! 2. one-to-one image-sentence assignment maximising similarity over the kept images' rows
//!    (`linear_sum_assignment(-sim)`, [`super::assignment`]);
//! 3. drop pairs with similarity below the threshold (0.24); none left: reject;
//! 4. keep the first `max_images` (6) pairs in ascending image index;
//! 5. prefix each matched sentence with `<|endofchunk|><image>`, join sentences with `" "`, apply
//!    the whitespace rules ([`super::prepared::clean_chunks`]), append `<|endofchunk|>{eos}`;
//! 6. tokenize with truncation to `max_tokens` (256; the batcher right-pads to the batch's longest
//!    row, which the masked loss cannot tell from padding to 256);
//! 7. reject if fewer than `min_images` (1) `<image>` tokens survived truncation; reject a
//!    single-image document with probability 0.5 (a seeded draw per sample); reject it as well if
//!    its only `<image>` is the very last token.
//!
//! **Image order (fixed quirk):** the reference stacks the kept images in ascending *image* index
//! while the `<image>` tokens appear in ascending *sentence* index, so a non-monotone assignment
//! gives a token the wrong image. Here the images are ordered by their matched sentence: the k-th
//! image tensor is always the image of the k-th `<image>` token. Images whose token was truncated
//! away stay in the tensor after the attended ones, as in the reference.
//!
//! Literal `<image>` / `<|endofchunk|>` strings inside sentences are removed (see
//! [`super::prepared::strip_special`]).

use base64::Engine;
use image::DynamicImage;
use serde_json::{Map, Value};

use super::assignment::linear_sum_assignment;
use super::images::decode_image;
use super::prepared::{PrepareContext, Prepared, clean_chunks, field, strip_special};
use super::sequences;
use super::skip::{Skip, SkipReason};
use super::webdataset::Sample;
use model::tokenizer::{END_OF_CHUNK, IMAGE};

/// Images of at most this many kilobytes (`len // 1000`) are dropped (the reference's `MIN_KB`).
pub const MIN_KB: usize = 10;

/// Settings of the interleaved rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InterleavedOptions {
    /// Minimum image-sentence similarity of a kept pair (paper: 0.24).
    pub sim_threshold: f64,
    /// Images kept per document (6).
    pub max_images: usize,
    /// Minimum `<image>` tokens after truncation (1).
    pub min_images: usize,
}

impl Default for InterleavedOptions {
    fn default() -> Self {
        Self {
            sim_threshold: 0.24,
            max_images: 6,
            min_images: 1,
        }
    }
}

/// The outcome of steps 1-5: the text and the images in `<image>`-token order.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The text before tokenization (with `<|endofchunk|>{eos}` appended).
    pub text: String,
    /// Indices into `image_info` of the placed images, in `<image>`-token order.
    pub image_indices: Vec<usize>,
    /// The decoded images, in the same order.
    pub images: Vec<DynamicImage>,
}

fn wrong(detail: impl Into<String>) -> Skip {
    Skip::new(SkipReason::WrongType, detail)
}

/// Parses the `json` member into an object.
pub fn parse_json(sample: &Sample) -> Result<Map<String, Value>, Skip> {
    let bytes = field(sample, "json")?;
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(wrong("`json` is not an object")),
        Err(e) => Err(Skip::new(SkipReason::BadJson, e.to_string())),
    }
}

/// Decodes standard base64 (with padding), as Python's `base64.b64decode` on clean input.
pub fn decode_base64(s: &str, what: &str) -> Result<Vec<u8>, Skip> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| Skip::new(SkipReason::BadImage, format!("{what}: bad base64: {e}")))
}

/// Steps 1-5 of the module docs on a parsed MMC4 document.
pub fn place(
    doc: &Map<String, Value>,
    opts: &InterleavedOptions,
    eos: &str,
) -> Result<Placement, Skip> {
    let get = |k: &str| {
        doc.get(k)
            .ok_or_else(|| Skip::new(SkipReason::MissingField, format!("no `{k}` key")))
    };
    let sentences: Vec<String> = get("text_list")?
        .as_array()
        .ok_or_else(|| wrong("`text_list` is not a list"))?
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.as_str()
                .map(strip_special)
                .ok_or_else(|| wrong(format!("`text_list[{i}]` is not a string")))
        })
        .collect::<Result<_, _>>()?;
    let image_info = get("image_info")?
        .as_array()
        .ok_or_else(|| wrong("`image_info` is not a list"))?;
    let matrix = get("similarity_matrix")?
        .as_array()
        .ok_or_else(|| wrong("`similarity_matrix` is not a list"))?;
    let rows: Vec<Vec<f64>> = matrix
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row.as_array()
                .ok_or_else(|| wrong(format!("`similarity_matrix[{i}]` is not a list")))?
                .iter()
                .map(|x| {
                    x.as_f64().ok_or_else(|| {
                        wrong(format!("`similarity_matrix[{i}]` holds a non-number"))
                    })
                })
                .collect()
        })
        .collect::<Result<_, _>>()?;
    let cols = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != cols) {
        return Err(wrong("`similarity_matrix` is ragged"));
    }

    // 1. Size filter and decoding.
    let mut valid: Vec<(usize, DynamicImage)> = Vec::new();
    for (i, info) in image_info.iter().enumerate() {
        let Some(b64) = info.get("image_base64") else {
            continue;
        };
        let b64 = b64
            .as_str()
            .ok_or_else(|| wrong(format!("`image_info[{i}].image_base64` is not a string")))?;
        let raw = decode_base64(b64, &format!("image_info[{i}]"))?;
        if raw.len() / 1000 <= MIN_KB {
            continue;
        }
        let img = decode_image(&raw)
            .map_err(|e| Skip::new(SkipReason::BadImage, format!("image_info[{i}]: {e}")))?;
        valid.push((i, img));
    }
    if valid.is_empty() {
        return Err(Skip::new(
            SkipReason::NoImages,
            "no image of at least 11 kB",
        ));
    }

    // 2. Assignment over the valid images' rows.
    let mut cost = Vec::with_capacity(valid.len() * cols);
    for (i, _) in &valid {
        let row = rows.get(*i).ok_or_else(|| {
            wrong(format!(
                "`similarity_matrix` has {} rows, image {i} has none",
                rows.len()
            ))
        })?;
        cost.extend(row.iter().map(|s| -s));
    }
    let pairs = linear_sum_assignment(&cost, valid.len(), cols)
        .map_err(|e| wrong(format!("`similarity_matrix`: {e}")))?;

    // 3. Threshold; 4. first `max_images` in image order.
    let mut kept: Vec<(usize, usize)> = pairs
        .into_iter()
        .filter(|&(r, c)| -cost[r * cols + c] >= opts.sim_threshold)
        .take(opts.max_images)
        .collect();
    if kept.is_empty() {
        return Err(Skip::new(
            SkipReason::BelowThreshold,
            format!(
                "no image-sentence pair reaches similarity {}",
                opts.sim_threshold
            ),
        ));
    }
    if let Some(&(_, s)) = kept.iter().find(|&&(_, s)| s >= sentences.len()) {
        return Err(wrong(format!(
            "`similarity_matrix` column {s} but `text_list` has {} sentences",
            sentences.len()
        )));
    }

    // The order fix: images in the order their `<image>` tokens appear (by sentence).
    kept.sort_by_key(|&(_, s)| s);

    // 5. Placement and whitespace rules.
    let mut sentences = sentences;
    for &(_, s) in &kept {
        sentences[s] = format!("{END_OF_CHUNK}{IMAGE}{}", sentences[s]);
    }
    let text = format!("{}{END_OF_CHUNK}{eos}", clean_chunks(&sentences.join(" ")));
    let mut valid: Vec<Option<(usize, DynamicImage)>> = valid.into_iter().map(Some).collect();
    let mut image_indices = Vec::with_capacity(kept.len());
    let mut images = Vec::with_capacity(kept.len());
    for &(r, _) in &kept {
        if let Some((i, img)) = valid[r].take() {
            image_indices.push(i);
            images.push(img);
        }
    }
    Ok(Placement {
        text,
        image_indices,
        images,
    })
}

/// The whole interleaved pipeline for one sample. `single_image_draw` is a uniform draw in
/// `[0, 1)` for the single-image rejection; `flip` flips all the document's images.
pub fn prepare_interleaved(
    sample: &Sample,
    ctx: &PrepareContext,
    opts: &InterleavedOptions,
    single_image_draw: f64,
    flip: bool,
) -> Result<Prepared, Skip> {
    let doc = parse_json(sample)?;
    if doc.contains_key("is_gpt") {
        return sequences::prepare_doc(&doc, &sample.key, ctx, opts, flip);
    }
    let placement = place(&doc, opts, ctx.eos)?;
    let ids = ctx.tokenize(&placement.text)?;
    let n = ctx.count_images(&ids);
    if n < opts.min_images {
        return Err(Skip::new(
            SkipReason::TooFewImageTokens,
            format!(
                "{n} <image> tokens after truncation, need {}",
                opts.min_images
            ),
        ));
    }
    if n == 1 && single_image_draw <= 0.5 {
        return Err(Skip::new(
            SkipReason::SingleImage,
            "single-image document (p = 0.5)",
        ));
    }
    if n == 1 && ids.len() == ctx.max_tokens && ids.last() == Some(&ctx.tokenizer.image_id()) {
        return Err(Skip::new(
            SkipReason::TrailingImage,
            "the only <image> is the last token",
        ));
    }
    let images = placement
        .images
        .iter()
        .map(|img| ctx.transform.apply(img, flip))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Skip::new(SkipReason::BadImage, e))?;
    Ok(Prepared {
        key: sample.key.clone(),
        ids,
        images,
    })
}
