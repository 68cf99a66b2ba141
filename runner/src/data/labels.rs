//! Training labels from token ids: the loss masks of spec §4.4, token by token.
//!
//! Labels are the input ids (the LM shifts them internally: position `t` predicts `labels[t+1]`)
//! with masked positions set to [`IGNORE_INDEX`]:
//!
//! - pad tokens: masked (all layouts);
//! - `<image>`: masked (all layouts);
//! - tokens before the first `<image>`: masked for interleaved / sequences (pairs start with it);
//! - tokens after each end-of-chunk token up to (excluding) the next `<image>`: masked for
//!   interleaved / sequences, trained for pairs;
//! - the end-of-chunk token itself: trained (all layouts);
//! - eos: trained for pairs (unless truncated away); masked for interleaved / sequences, where it
//!   follows the final end-of-chunk token.
//!
//! A pair's caption is thus trained up to and including its eos; an interleaved document trains
//! the text following each image up to and including that chunk's `<|endofchunk|>`.

/// Label value of positions that do not contribute to the loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// The token ids the masks depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// The pad token.
    pub pad: u32,
    /// `<image>`.
    pub image: u32,
    /// `<|endofchunk|>`.
    pub eoc: u32,
}

/// A span of text without loss, as token ids of its start and end markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpan {
    /// Ids of the start marker.
    pub start: Vec<u32>,
    /// Ids of the end marker.
    pub end: Vec<u32>,
}

/// Sets [`IGNORE_INDEX`] on every token from a span's start marker through the next occurrence of
/// its end marker (both included; an unclosed span runs to the end of the row). Markers are
/// matched as token sequences, so they must tokenize in context as they do alone (true of
/// markers that start a BPE word, such as `Question:` after `<image>` and ` Short answer:`).
pub fn mask_spans(ids: &[u32], labels: &mut [i64], spans: &[TokenSpan]) {
    let mut open: Option<&TokenSpan> = None;
    let mut i = 0;
    while i < ids.len() {
        match open {
            None => match spans.iter().find(|s| ids[i..].starts_with(&s.start)) {
                Some(s) => {
                    open = Some(s);
                    for l in &mut labels[i..i + s.start.len()] {
                        *l = IGNORE_INDEX;
                    }
                    i += s.start.len();
                }
                None => i += 1,
            },
            Some(s) => {
                if ids[i..].starts_with(&s.end) {
                    for l in &mut labels[i..i + s.end.len()] {
                        *l = IGNORE_INDEX;
                    }
                    i += s.end.len();
                    open = None;
                } else {
                    labels[i] = IGNORE_INDEX;
                    i += 1;
                }
            }
        }
    }
}

/// Which masking rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskRule {
    /// Image-caption pairs: pad and `<image>` only.
    Pairs,
    /// Interleaved documents and synthetic sequences: also text outside image-conditioned chunks.
    Interleaved,
}

/// Labels of one row of token ids.
pub fn labels(ids: &[u32], rule: MaskRule, special: SpecialIds) -> Vec<i64> {
    let mut out: Vec<i64> = ids
        .iter()
        .map(|&t| {
            if t == special.pad {
                IGNORE_INDEX
            } else {
                i64::from(t)
            }
        })
        .collect();
    if rule == MaskRule::Interleaved {
        // Until an `<image>` is seen, and again after every `<|endofchunk|>` until the next
        // `<image>`, text is unconditioned on its image and gets no loss.
        let mut masking = true;
        for (label, &t) in out.iter_mut().zip(ids) {
            if t == special.image {
                masking = false;
            } else if masking {
                *label = IGNORE_INDEX;
            } else if t == special.eoc {
                masking = true;
            }
        }
    }
    for (label, &t) in out.iter_mut().zip(ids) {
        if t == special.image {
            *label = IGNORE_INDEX;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: SpecialIds = SpecialIds {
        pad: 0,
        image: 1,
        eoc: 2,
    };
    const M: i64 = IGNORE_INDEX;

    #[test]
    fn spans_mask_from_start_through_end_marker() {
        // <image> Q : what ? S A : yes <eoc> <image> Q : x   (unclosed at the end)
        let ids = [1, 7, 8, 5, 6, 3, 4, 8, 9, 2, 1, 7, 8, 5];
        let spans = [TokenSpan {
            start: vec![7, 8],
            end: vec![3, 4, 8],
        }];
        let mut l = labels(&ids, MaskRule::Interleaved, S);
        mask_spans(&ids, &mut l, &spans);
        assert_eq!(l, vec![M, M, M, M, M, M, M, M, 9, 2, M, M, M, M]);
        // No spans: unchanged.
        let mut plain = labels(&ids, MaskRule::Interleaved, S);
        mask_spans(&ids, &mut plain, &[]);
        assert_eq!(plain, labels(&ids, MaskRule::Interleaved, S));
    }

    #[test]
    fn pairs_mask_pad_and_image_only() {
        // <image> a b <eoc> <eos=9> <pad> <pad>
        let ids = [1, 5, 6, 2, 9, 0, 0];
        assert_eq!(labels(&ids, MaskRule::Pairs, S), vec![M, 5, 6, 2, 9, M, M]);
    }

    #[test]
    fn interleaved_masks_unconditioned_text() {
        // x <image> a <eoc> y <image> b <eoc> <eos> <pad>
        let ids = [7, 1, 5, 2, 8, 1, 6, 2, 9, 0];
        assert_eq!(
            labels(&ids, MaskRule::Interleaved, S),
            vec![M, M, 5, 2, M, M, 6, 2, M, M]
        );
        // No image at all: everything masked.
        assert_eq!(labels(&[5, 2, 6], MaskRule::Interleaved, S), vec![M, M, M]);
        // Consecutive images and an eoc right before an image.
        assert_eq!(
            labels(&[1, 1, 5, 2, 1, 6], MaskRule::Interleaved, S),
            vec![M, M, 5, 2, M, 6]
        );
    }
}
