//! What the three layouts produce from one raw sample, the context they need, and the text rules
//! they share.

use candle_core::Tensor;
use model::FlamingoTokenizer;
use model::tokenizer::{END_OF_CHUNK, IMAGE};

use super::images::ImageTransform;
use super::skip::{Skip, SkipReason};
use super::webdataset::Sample;

/// One accepted sample, ready for batching.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The sample key (for messages).
    pub key: String,
    /// Token ids after truncation, before padding.
    pub ids: Vec<u32>,
    /// Preprocessed `(3, S, S)` images; the k-th is the image of the k-th `<image>` token
    /// (except for the documented quirks of the sequences layout).
    pub images: Vec<Tensor>,
}

/// What the layouts need besides the sample.
#[derive(Debug, Clone, Copy)]
pub struct PrepareContext<'a> {
    /// The Flamingo tokenizer.
    pub tokenizer: &'a FlamingoTokenizer,
    /// The eos string appended after the final `<|endofchunk|>`.
    pub eos: &'a str,
    /// Image preprocessing.
    pub transform: &'a ImageTransform,
    /// Token budget (truncation length, special tokens included).
    pub max_tokens: usize,
}

impl PrepareContext<'_> {
    /// Tokenizes with truncation to `max_tokens` (HF `truncation=True, max_length=...`).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, Skip> {
        self.tokenizer
            .encode_with(text, true, Some(self.max_tokens))
            .map_err(|e| Skip::new(SkipReason::Tokenize, e.to_string()))
    }

    /// Number of `<image>` tokens in `ids`.
    pub fn count_images(&self, ids: &[u32]) -> usize {
        let image = self.tokenizer.image_id();
        ids.iter().filter(|&&t| t == image).count()
    }
}

/// The bytes of member `ext` of a sample, or a `missing_field` skip.
pub fn field<'s>(sample: &'s Sample, ext: &str) -> Result<&'s [u8], Skip> {
    sample
        .fields
        .get(ext)
        .map(Vec::as_slice)
        .ok_or_else(|| Skip::new(SkipReason::MissingField, format!("no `{ext}` member")))
}

/// Removes literal `<image>` / `<|endofchunk|>` strings from source text.
///
/// Deviation from the reference, which keeps them: they would tokenize to media/chunk tokens
/// without an image and break the rule that the k-th `<image>` token has the k-th image.
pub fn strip_special(text: &str) -> String {
    if text.contains(IMAGE) || text.contains(END_OF_CHUNK) {
        text.replace(IMAGE, "").replace(END_OF_CHUNK, "")
    } else {
        text.to_string()
    }
}

/// The shared whitespace rules of interleaved text (spec §4.2/§4.3): drop the first
/// `<|endofchunk|>`, then `" <|endofchunk|>"→"<|endofchunk|>"`, `"<image> "→"<image>"`,
/// `" <image>"→"<image>"` (each Python `str.replace`, all occurrences, left to right).
pub fn clean_chunks(text: &str) -> String {
    text.replacen(END_OF_CHUNK, "", 1)
        .replace(&format!(" {END_OF_CHUNK}"), END_OF_CHUNK)
        .replace(&format!("{IMAGE} "), IMAGE)
        .replace(&format!(" {IMAGE}"), IMAGE)
}

/// Python `str.strip()`: Unicode whitespace plus the ASCII separators `\x1c`-`\x1f`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_cleanup_rules() {
        let t = "<|endofchunk|><image>A cat. B <|endofchunk|><image> dog <image> x";
        assert_eq!(
            clean_chunks(t),
            "<image>A cat. B<|endofchunk|><image>dog<image>x"
        );
        assert_eq!(strip_special("a<image>b<|endofchunk|>c"), "abc");
        assert_eq!(py_strip("\x1c a b\n\t"), "a b");
    }
}
