//! Synthetic interleaved sequences in the ChatGPT-data layout (spec §4.3, the reference's
//! `preprocess_gpt_interleaved`).
//!
//! The `json` member is `{"example": text with "_!_IMAGE<k>_!_" placeholders, "image_map":
//! {"_!_IMAGE<k>_!_": {"base64_image": ...}}}` (an `is_gpt` key may be present; it is what routes
//! such documents to this code from an interleaved source). The rules, in order:
//!
//! 1. every placeholder `_!_IMAGE<digits>_!_` becomes `<|endofchunk|><image>`;
//! 2. images `_!_IMAGE1_!_` .. `_!_IMAGE<N>_!_` (N = number of `image_map` entries) are decoded in
//!    that numeric order (a missing key or undecodable image rejects the sample); the first
//!    `max_images` (6) are kept; there is no size filter and no similarity threshold;
//! 3. the first `<|endofchunk|>` is removed and the whitespace rules of §4.2 applied;
//! 4. if the text holds more than `max_images` `<image>`, it is cut just before the
//!    `max_images`-th one;
//! 5. `<|endofchunk|>{eos}` is appended, then tokenization with truncation to `max_tokens` (256);
//! 6. fewer than `min_images` (1) `<image>` tokens: reject. No single-image rejection and no
//!    trailing-`<image>` check.
//!
//! Reference quirks kept on purpose (this layout reproduces the reference):
//! - rule 4 is off by one: a text with more than 6 images keeps only 5 `<image>` tokens while
//!   the 6 first images stay in the tensor;
//! - images follow the placeholder *numbers*, not the placeholders' order in the text: the k-th
//!   image is `_!_IMAGE<k>_!_`, which is the image of the k-th `<image>` token only when the text
//!   numbers its placeholders in order (the generated data does);
//! - the image count and the placeholder count are not checked against each other.
//!
//! Literal `<image>` / `<|endofchunk|>` strings in the example text are removed first
//! ([`super::prepared::strip_special`]).

use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::images::decode_image;
use super::interleaved::{InterleavedOptions, decode_base64, parse_json};
use super::prepared::{PrepareContext, Prepared, clean_chunks, strip_special};
use super::skip::{Skip, SkipReason};
use super::webdataset::Sample;
use model::tokenizer::{END_OF_CHUNK, IMAGE};

fn placeholder() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"_!_IMAGE\d+_!_").unwrap_or_else(|e| panic!("static regex: {e}")))
}

/// Rules 1, 3, 4 and the eos suffix of the module docs: the text before tokenization.
pub fn sequence_text(example: &str, max_images: usize, eos: &str) -> String {
    let chunk = format!("{END_OF_CHUNK}{IMAGE}");
    let example = strip_special(example);
    let text = placeholder().replace_all(&example, chunk.as_str());
    let mut text = clean_chunks(&text);
    let starts: Vec<usize> = text.match_indices(IMAGE).map(|(i, _)| i).collect();
    if max_images > 0 && starts.len() > max_images {
        text.truncate(starts[max_images - 1]);
    }
    format!("{text}{END_OF_CHUNK}{eos}")
}

/// The pipeline on a parsed document (also used for `is_gpt` documents of interleaved sources).
pub fn prepare_doc(
    doc: &Map<String, Value>,
    key: &str,
    ctx: &PrepareContext,
    opts: &InterleavedOptions,
    flip: bool,
) -> Result<Prepared, Skip> {
    let example = doc
        .get("example")
        .ok_or_else(|| Skip::new(SkipReason::MissingField, "no `example` key"))?
        .as_str()
        .ok_or_else(|| Skip::new(SkipReason::WrongType, "`example` is not a string"))?;
    let map = doc
        .get("image_map")
        .ok_or_else(|| Skip::new(SkipReason::MissingField, "no `image_map` key"))?
        .as_object()
        .ok_or_else(|| Skip::new(SkipReason::WrongType, "`image_map` is not an object"))?;
    let mut decoded = Vec::with_capacity(map.len());
    for k in 1..=map.len() {
        let name = format!("_!_IMAGE{k}_!_");
        let b64 = map
            .get(&name)
            .ok_or_else(|| Skip::new(SkipReason::MissingField, format!("no `image_map.{name}`")))?
            .get("base64_image")
            .ok_or_else(|| {
                Skip::new(
                    SkipReason::MissingField,
                    format!("no `image_map.{name}.base64_image`"),
                )
            })?
            .as_str()
            .ok_or_else(|| {
                Skip::new(
                    SkipReason::WrongType,
                    format!("`image_map.{name}.base64_image` is not a string"),
                )
            })?;
        let raw = decode_base64(b64, &name)?;
        let img = decode_image(&raw)
            .map_err(|e| Skip::new(SkipReason::BadImage, format!("{name}: {e}")))?;
        decoded.push(img);
    }
    if decoded.is_empty() {
        // The reference fails here (stacking no image tensors).
        return Err(Skip::new(SkipReason::MissingField, "`image_map` is empty"));
    }
    decoded.truncate(opts.max_images);

    let ids = ctx.tokenize(&sequence_text(example, opts.max_images, ctx.eos))?;
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
    let images = decoded
        .iter()
        .map(|img| ctx.transform.apply(img, flip))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Skip::new(SkipReason::BadImage, e))?;
    Ok(Prepared {
        key: key.to_string(),
        ids,
        images,
    })
}

/// The pipeline for one sample of a sequences source.
pub fn prepare_sequence(
    sample: &Sample,
    ctx: &PrepareContext,
    opts: &InterleavedOptions,
    flip: bool,
) -> Result<Prepared, Skip> {
    let doc = parse_json(sample)?;
    prepare_doc(&doc, &sample.key, ctx, opts, flip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_cleanup_and_cut() {
        let ex = "Intro. _!_IMAGE1_!_ A cat. _!_IMAGE2_!_ A dog.";
        assert_eq!(
            sequence_text(ex, 6, "</s>"),
            "Intro.<image>A cat.<|endofchunk|><image>A dog.<|endofchunk|></s>"
        );
        // 3 images with max 2: cut before the 2nd <image>, keeping 1 (the off-by-one quirk).
        let ex = "_!_IMAGE1_!_ a _!_IMAGE2_!_ b _!_IMAGE3_!_ c";
        assert_eq!(
            sequence_text(ex, 2, "</s>"),
            "<image>a<|endofchunk|><|endofchunk|></s>"
        );
    }
}
