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
