//! CIDEr-D exactly as pycocoevalcap's `cider_scorer.py` computes it (the score the paper reports,
//! before its x100): n = 1..4, sigma = 6, document frequencies over the scored image set,
//! clipped tf-idf cosine per n-gram order, the Gaussian length penalty on the reference code's
//! "length" (which counts bigrams, not words), mean over orders, divided by the number of references,
//! times 10, mean over images.

use std::collections::HashMap;
use std::hash::Hash;

use super::error::MetricError;
use super::ptb::TokenizedCaptions;
use super::python::np_mean;

/// Highest n-gram order.
const N: usize = 4;
/// Standard deviation of the length penalty.
const SIGMA: f64 = 6.0;

/// CIDEr-D of a set of images.
#[derive(Debug, Clone, PartialEq)]
pub struct CiderResult {
    /// Mean over images (pycocoevalcap's `CIDEr`, e.g. 0.79; the paper prints x100).
    pub mean: f64,
    /// Per-image scores, in the order of the candidates.
    pub per_image: Vec<f64>,
}

/// Open-addressing map from 64-bit keys to dense ids (0, 1, 2, ... in insertion order). Interning
/// dominates CIDEr's run time, and this is several times faster than a general `HashMap` here.
struct IdTable {
    /// (key, id + 1); id 0 marks an empty slot.
    slots: Vec<(u64, u32)>,
    len: usize,
}

impl IdTable {
    fn with_capacity(n: usize) -> Self {
        let size = (n.max(16) * 2).next_power_of_two();
        Self {
            slots: vec![(0, 0); size],
            len: 0,
        }
    }

    fn slot_of(key: u64, mask: usize) -> usize {
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((h ^ (h >> 29)) as usize) & mask
    }

    /// The id of `key`, inserting it with the next id if new; `is_new` tells which.
    fn intern(&mut self, key: u64, matches: impl Fn(u32) -> bool) -> (u32, bool) {
        if self.len * 2 >= self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = Self::slot_of(key, mask);
        loop {
            let (k, id1) = self.slots[i];
            if id1 == 0 {
                let id = self.len as u32;
                self.slots[i] = (key, id + 1);
                self.len += 1;
                return (id, true);
            }
            if k == key && matches(id1 - 1) {
                return (id1 - 1, false);
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![(0, 0); size]);
        let mask = self.slots.len() - 1;
        for (k, id1) in old.into_iter().filter(|&(_, id1)| id1 != 0) {
            let mut i = Self::slot_of(k, mask);
            while self.slots[i].1 != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = (k, id1);
        }
    }
}

/// FNV-1a of a word (the interning table then compares the words themselves on a hit).
fn word_hash(w: &str) -> u64 {
    w.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Term frequencies of one sentence: (n-gram id, order index n-1, count) in first-occurrence order,
/// the order Python's dict iterates (it fixes the order of the float sums).
type Counts = Vec<(u32, usize, f64)>;

/// Assigns ids to n-grams and counts them per sentence. An n-gram's id is interned from (id of its
/// first n-1 words, last word), so no n-gram is hashed as a whole.
struct GramTable {
    ids: IdTable,
    /// Per n-gram id: the sentence that last saw it and its index in that sentence's counts.
    seen_in: Vec<(u32, u32)>,
    sentence: u32,
}

impl GramTable {
    fn new(capacity: usize) -> Self {
        Self {
            ids: IdTable::with_capacity(capacity),
            seen_in: Vec::with_capacity(capacity),
            sentence: 0,
        }
    }

    fn intern(&mut self, prefix: u32, word: u32) -> u32 {
        // The key is unique per (prefix, word), so a key match is a match.
        let (id, is_new) = self
            .ids
            .intern((u64::from(prefix) << 32) | u64::from(word), |_| true);
        if is_new {
            self.seen_in.push((0, 0));
        }
        id
    }

    fn len(&self) -> usize {
        self.seen_in.len()
    }

    fn precook(&mut self, words: &[u32]) -> Counts {
        self.sentence += 1;
        // ids[k-1][i]: id of the k-gram starting at word i.
        let mut ids: [Vec<u32>; N] = Default::default();
        for k in 1..=N {
            let count = (words.len() + 1).saturating_sub(k);
            let mut row = Vec::with_capacity(count);
            for i in 0..count {
                let prefix = if k == 1 { u32::MAX } else { ids[k - 2][i] };
                row.push(self.intern(prefix, words[i + k - 1]));
            }
            ids[k - 1] = row;
        }
        // Python's loop order (n outer, position inner) fixes the first-occurrence order.
        let mut counts: Counts = Vec::with_capacity(words.len() * N);
        for (n, row) in ids.iter().enumerate() {
            for &id in row {
                let slot = &mut self.seen_in[id as usize];
                if slot.0 == self.sentence {
                    counts[slot.1 as usize].2 += 1.0;
                } else {
                    *slot = (self.sentence, counts.len() as u32);
                    counts.push((id, n, 1.0));
                }
            }
        }
        counts
    }
}

/// The tf-idf vector of one sentence (`counts2vec`): weights in count order.
struct Vector {
    weights: Vec<(u32, usize, f64)>,
    norm: [f64; N],
    length: f64,
}

/// `idf[id]` is the reference's `ref_len - log(max(1, df))`, computed once per n-gram.
fn counts_to_vec(counts: &Counts, idf: &[f64]) -> Vector {
    let mut weights = Vec::with_capacity(counts.len());
    let mut norm = [0.0; N];
    let mut length = 0.0;
    for &(id, n, tf) in counts {
        let w = tf * idf[id as usize];
        weights.push((id, n, w));
        norm[n] += w.powi(2);
        if n == 1 {
            length += tf;
        }
    }
    Vector {
        weights,
        norm: norm.map(f64::sqrt),
        length,
    }
}

/// `sim`: `dense` is a zeroed scratch array over n-gram ids, used to look up the reference weights.
fn sim(hyp: &Vector, r: &Vector, dense: &mut [f64]) -> [f64; N] {
    let delta = hyp.length - r.length;
    let mut val = [0.0; N];
    for &(id, _, w) in &r.weights {
        dense[id as usize] = w;
    }
    for &(id, n, h) in &hyp.weights {
        let rv = dense[id as usize];
        val[n] += h.min(rv) * rv;
    }
    for &(id, _, _) in &r.weights {
        dense[id as usize] = 0.0;
    }
    for (n, v) in val.iter_mut().enumerate() {
        if hyp.norm[n] != 0.0 && r.norm[n] != 0.0 {
            *v /= hyp.norm[n] * r.norm[n];
        }
        // `np.e ** x` in the reference: a pow call, not exp.
        *v *= std::f64::consts::E.powf(-(delta * delta) / (2.0 * SIGMA * SIGMA));
    }
    val
}

/// CIDEr-D over already tokenized sentences: `cands[i]` is scored against `refs[i]`.
pub fn cider_d_tokens<'a, S: AsRef<str>>(
    cands: &'a [Vec<S>],
    refs: &'a [Vec<Vec<S>>],
) -> Result<CiderResult, MetricError> {
    if cands.len() != refs.len() {
        return Err(MetricError::Mismatch(format!(
            "{} candidates for {} reference sets",
            cands.len(),
            refs.len()
        )));
    }
    if cands.is_empty() {
        return Err(MetricError::Mismatch("CIDEr over zero images".to_string()));
    }
    if refs.iter().any(Vec::is_empty) {
        return Err(MetricError::Mismatch(
            "an image has no reference captions".to_string(),
        ));
    }
    let total_words: usize = cands.iter().map(Vec::len).sum::<usize>()
        + refs.iter().flatten().map(Vec::len).sum::<usize>();
    let mut vocab = IdTable::with_capacity(1024);
    let mut words_by_id: Vec<&'a str> = Vec::new();
    let mut table = GramTable::new(total_words * 2);
    let mut cook = |words: &'a [S]| -> Counts {
        let ids: Vec<u32> = words
            .iter()
            .map(|w| {
                let w = w.as_ref();
                let (id, is_new) = vocab.intern(word_hash(w), |id| words_by_id[id as usize] == w);
                if is_new {
                    words_by_id.push(w);
                }
                id
            })
            .collect();
        table.precook(&ids)
    };
    let crefs: Vec<Vec<Counts>> = refs
        .iter()
        .map(|rs| rs.iter().map(|r| cook(r)).collect())
        .collect();
    let test: Vec<Counts> = cands.iter().map(|c| cook(c)).collect();

    // Document frequency: the number of images whose references contain the n-gram.
    let mut df: Vec<f64> = vec![0.0; table.len()];
    let mut last_image = vec![usize::MAX; table.len()];
    for (image, rs) in crefs.iter().enumerate() {
        for r in rs {
            for &(id, _, _) in r {
                if last_image[id as usize] != image {
                    last_image[id as usize] = image;
                    df[id as usize] += 1.0;
                }
            }
        }
    }
    let ref_len = (crefs.len() as f64).ln();
    let idf: Vec<f64> = df
        .iter()
        .map(|&d: &f64| ref_len - d.max(1.0).ln())
        .collect();

    let score_images = |range: std::ops::Range<usize>| -> Vec<f64> {
        let mut dense = vec![0.0; df.len()];
        range
            .map(|i| {
                let hyp = counts_to_vec(&test[i], &idf);
                let mut score = [0.0; N];
                for r in &crefs[i] {
                    let rv = counts_to_vec(r, &idf);
                    let s = sim(&hyp, &rv, &mut dense);
                    for n in 0..N {
                        score[n] += s[n];
                    }
                }
                let mut avg = np_mean(&score);
                avg /= crefs[i].len() as f64;
                avg *= 10.0;
                avg
            })
            .collect()
    };
    // Images are independent once df is known: score them on several threads, in order.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let per_image: Vec<f64> = if threads < 2 || test.len() < 512 {
        score_images(0..test.len())
    } else {
        let total = test.len();
        let chunk = total.div_ceil(threads);
        std::thread::scope(|scope| {
            let score_images = &score_images;
            let handles: Vec<_> = (0..total)
                .step_by(chunk)
                .map(|start| scope.spawn(move || score_images(start..(start + chunk).min(total))))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    };
    if per_image.len() != test.len() {
        return Err(MetricError::Mismatch(
            "a CIDEr scoring thread failed".to_string(),
        ));
    }
    Ok(CiderResult {
        mean: np_mean(&per_image),
        per_image,
    })
}

/// CIDEr-D of raw captions, tokenized as pycocoevalcap does (all references in one tokenizer run, all
/// candidates in another, in the order of `cands`). Every candidate key must have references.
pub fn score<K: Eq + Hash + std::fmt::Debug>(
    cands: &[(K, String)],
    refs: &HashMap<K, Vec<String>>,
) -> Result<CiderResult, MetricError> {
    let mut ref_sets = Vec::with_capacity(cands.len());
    for (k, _) in cands {
        match refs.get(k) {
            Some(r) if !r.is_empty() => ref_sets.push(r),
            _ => {
                return Err(MetricError::Mismatch(format!(
                    "image {k:?} has no reference captions"
                )));
            }
        }
    }
    let flat_refs: Vec<&str> = ref_sets
        .iter()
        .flat_map(|r| r.iter().map(String::as_str))
        .collect();
    let tokenized_refs = TokenizedCaptions::new(&flat_refs)?;
    let mut next = 0;
    let refs_tok: Vec<Vec<Vec<&str>>> = ref_sets
        .iter()
        .map(|r| {
            let words = (next..next + r.len())
                .map(|i| tokenized_refs.words(i))
                .collect();
            next += r.len();
            words
        })
        .collect();
    let cand_text: Vec<&str> = cands.iter().map(|(_, c)| c.as_str()).collect();
    let tokenized_cands = TokenizedCaptions::new(&cand_text)?;
    let cands_tok: Vec<Vec<&str>> = (0..tokenized_cands.len())
        .map(|i| tokenized_cands.words(i))
        .collect();
    cider_d_tokens(&cands_tok, &refs_tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn single_image_scores_zero() {
        // df = 1 image for every n-gram and log(1) = 0: all weights vanish.
        let r = cider_d_tokens(&[words("a dog")], &[vec![words("a dog")]]).unwrap();
        assert_eq!(r.mean, 0.0);
    }

    #[test]
    fn identical_captions_score_high() {
        let cands = vec![words("a dog runs on grass"), words("a red car parked")];
        let refs = vec![
            vec![words("a dog runs on grass")],
            vec![words("a red car parked")],
        ];
        let r = cider_d_tokens(&cands, &refs).unwrap();
        assert!((r.per_image[0] - 10.0).abs() < 1e-12, "{r:?}");
    }
}
