//! Why samples are skipped, and per-source counts of skips by reason.
//!
//! Corrupt samples (bad image bytes, missing fields, bad JSON, wrong types) and samples rejected by
//! the data rules of spec §4.1-4.3 are dropped and counted here; they never stop a training. The
//! trainer records the counts (they are part of the saved data-stream state, so a resumed run
//! continues counting where the killed one stopped).

use serde::{Deserialize, Serialize};

/// The reason a sample was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// A required member (`txt`, an image, `json`) or JSON key is absent.
    MissingField,
    /// The `json` member is not valid JSON (or not UTF-8).
    BadJson,
    /// A JSON value has the wrong type or shape (e.g. a ragged similarity matrix).
    WrongType,
    /// Image bytes (or their base64) could not be decoded or preprocessed.
    BadImage,
    /// A caption is not valid UTF-8.
    BadText,
    /// The text could not be tokenized.
    Tokenize,
    /// The rest of a tar shard was unreadable (truncated or corrupt archive); counted once per shard.
    BadTar,
    /// Interleaved: no image survived the size filter (spec §4.2 step 1).
    NoImages,
    /// Interleaved: no image-sentence pair reached the similarity threshold (§4.2 step 3).
    BelowThreshold,
    /// Fewer `<image>` tokens than required after truncation (§4.2, §4.3).
    TooFewImageTokens,
    /// Interleaved: single-image document rejected with probability 0.5 (§4.2).
    SingleImage,
    /// Interleaved: the only `<image>` token is the last token (all labels would be masked).
    TrailingImage,
}

impl SkipReason {
    /// Every reason, in the order counts are reported.
    pub const ALL: [SkipReason; 12] = [
        SkipReason::MissingField,
        SkipReason::BadJson,
        SkipReason::WrongType,
        SkipReason::BadImage,
        SkipReason::BadText,
        SkipReason::Tokenize,
        SkipReason::BadTar,
        SkipReason::NoImages,
        SkipReason::BelowThreshold,
        SkipReason::TooFewImageTokens,
        SkipReason::SingleImage,
        SkipReason::TrailingImage,
    ];

    /// Stable snake_case name, used as the metric key.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::MissingField => "missing_field",
            SkipReason::BadJson => "bad_json",
            SkipReason::WrongType => "wrong_type",
            SkipReason::BadImage => "bad_image",
            SkipReason::BadText => "bad_text",
            SkipReason::Tokenize => "tokenize",
            SkipReason::BadTar => "bad_tar",
            SkipReason::NoImages => "no_images",
            SkipReason::BelowThreshold => "below_threshold",
            SkipReason::TooFewImageTokens => "too_few_image_tokens",
            SkipReason::SingleImage => "single_image",
            SkipReason::TrailingImage => "trailing_image",
        }
    }

    /// Whether the sample was broken (as opposed to rejected by a data rule).
    pub fn is_corrupt(self) -> bool {
        matches!(
            self,
            SkipReason::MissingField
                | SkipReason::BadJson
                | SkipReason::WrongType
                | SkipReason::BadImage
                | SkipReason::BadText
                | SkipReason::Tokenize
                | SkipReason::BadTar
        )
    }
}

/// One skipped sample: the reason and a human-readable detail naming the field.
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    /// Why it was skipped.
    pub reason: SkipReason,
    /// What exactly was wrong (field, index, decoder message).
    pub detail: String,
}

impl Skip {
    /// A skip with its detail.
    pub fn new(reason: SkipReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Counts of skipped samples of one source, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts {
    /// Per reason, indexed like [`SkipReason::ALL`].
    counts: [u64; 12],
}

impl SkipCounts {
    /// Counts one skip.
    pub fn add(&mut self, reason: SkipReason) {
        self.counts[Self::index(reason)] += 1;
    }

    /// Skips counted for a reason.
    pub fn get(&self, reason: SkipReason) -> u64 {
        self.counts[Self::index(reason)]
    }

    /// All skips.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Skips of broken samples (see [`SkipReason::is_corrupt`]).
    pub fn corrupt(&self) -> u64 {
        SkipReason::ALL
            .iter()
            .filter(|r| r.is_corrupt())
            .map(|&r| self.get(r))
            .sum()
    }

    /// `(reason name, count)` for every reason with a non-zero count, in [`SkipReason::ALL`] order.
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        SkipReason::ALL
            .iter()
            .map(|&r| (r.name(), self.get(r)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    fn index(reason: SkipReason) -> usize {
        SkipReason::ALL
            .iter()
            .position(|&r| r == reason)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let mut c = SkipCounts::default();
        c.add(SkipReason::BadImage);
        c.add(SkipReason::BadImage);
        c.add(SkipReason::SingleImage);
        assert_eq!(c.get(SkipReason::BadImage), 2);
        assert_eq!(c.total(), 3);
        assert_eq!(c.corrupt(), 2);
        assert_eq!(c.nonzero(), vec![("bad_image", 2), ("single_image", 1)]);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<SkipCounts>(&json).unwrap(), c);
    }
}
