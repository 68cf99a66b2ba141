//! CIDEr-D exactly as pycocoevalcap's `cider_scorer.py` computes it (the score the paper reports,
//! before its x100): n = 1..4, sigma = 6, document frequencies over the scored image set,
//! clipped tf-idf cosine per n-gram order, the Gaussian length penalty on the reference code's
//! "length" (which counts bigrams, not words), mean over orders, divided by the number of references,
//! times 10, mean over images.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

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

/// Multiply-rotate hasher for the interning maps (SipHash dominated the run time).
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(buf));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // The product's low bits only see the input's low bits; hash tables index by low bits.
        self.0.rotate_left(26)
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Term frequencies of one sentence: (n-gram id, order index n-1, count) in first-occurrence order,
/// the order Python's dict iterates (it fixes the order of the float sums).
type Counts = Vec<(u32, usize, f64)>;

/// Assigns ids to n-grams and counts them per sentence. An n-gram's id is interned from (id of its
/// first n-1 words, last word), so no n-gram is hashed as a whole.
#[derive(Default)]
struct GramTable {
    ids: FxMap<u64, u32>,
    /// Per n-gram id: the sentence that last saw it and its index in that sentence's counts.
    seen_in: Vec<(u32, u32)>,
    sentence: u32,
}

impl GramTable {
    fn intern(&mut self, prefix: u32, word: u32) -> u32 {
        let next = self.ids.len() as u32;
        let id = *self
            .ids
            .entry((u64::from(prefix) << 32) | u64::from(word))
            .or_insert(next);
        if id as usize == self.seen_in.len() {
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

fn counts_to_vec(counts: &Counts, df: &[f64], ref_len: f64) -> Vector {
    let mut weights = Vec::with_capacity(counts.len());
    let mut norm = [0.0; N];
    let mut length = 0.0;
    for &(id, n, tf) in counts {
        let d = df[id as usize].max(1.0).ln();
        let w = tf * (ref_len - d);
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
    let mut vocab: FxMap<&'a str, u32> = FxMap::default();
    let mut table = GramTable::default();
    let mut cook = |words: &'a [S]| -> Counts {
        let ids: Vec<u32> = words
            .iter()
            .map(|w| {
                let next = vocab.len() as u32;
                *vocab.entry(w.as_ref()).or_insert(next)
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
    let mut df = vec![0.0; table.len()];
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

    let score_images = |range: std::ops::Range<usize>| -> Vec<f64> {
        let mut dense = vec![0.0; df.len()];
        range
            .map(|i| {
                let hyp = counts_to_vec(&test[i], &df, ref_len);
                let mut score = [0.0; N];
                for r in &crefs[i] {
                    let rv = counts_to_vec(r, &df, ref_len);
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
