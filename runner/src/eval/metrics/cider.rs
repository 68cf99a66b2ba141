//! CIDEr-D exactly as pycocoevalcap's `cider_scorer.py` computes it (the score the paper reports,
//! before its x100): n = 1..4, sigma = 6, document frequencies over the scored image set,
//! clipped tf-idf cosine per n-gram order, the Gaussian length penalty on the reference code's
//! "length" (which counts bigrams, not words), mean over orders, divided by the number of references,
//! times 10, mean over images.

use std::collections::HashMap;
use std::hash::Hash;

use super::error::MetricError;
use super::ptb::tokenize_captions;
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

/// An n-gram of interned word ids (unused slots are `u32::MAX`).
type Gram = [u32; N];

/// Term frequencies of one sentence, in first-occurrence order (the order Python's dict iterates).
struct Counts {
    grams: Vec<(Gram, usize, f64)>,
}

fn precook(words: &[u32]) -> Counts {
    let mut index: HashMap<Gram, usize> = HashMap::new();
    let mut grams: Vec<(Gram, usize, f64)> = Vec::new();
    for k in 1..=N {
        for i in 0..(words.len() + 1).saturating_sub(k) {
            let mut g = [u32::MAX; N];
            g[..k].copy_from_slice(&words[i..i + k]);
            match index.get(&g) {
                Some(&j) => grams[j].2 += 1.0,
                None => {
                    index.insert(g, grams.len());
                    grams.push((g, k - 1, 1.0));
                }
            }
        }
    }
    Counts { grams }
}

/// The tf-idf vectors of one sentence (`counts2vec`).
struct Vector {
    weights: [HashMap<Gram, f64>; N],
    order: Vec<(Gram, usize)>,
    norm: [f64; N],
    length: f64,
}

fn counts_to_vec(counts: &Counts, df: &HashMap<Gram, f64>, ref_len: f64) -> Vector {
    let mut weights: [HashMap<Gram, f64>; N] = Default::default();
    let mut order = Vec::with_capacity(counts.grams.len());
    let mut norm = [0.0; N];
    let mut length = 0.0;
    for &(g, n, tf) in &counts.grams {
        let d = df.get(&g).copied().unwrap_or(0.0).max(1.0).ln();
        let w = tf * (ref_len - d);
        weights[n].insert(g, w);
        order.push((g, n));
        norm[n] += w.powi(2);
        if n == 1 {
            length += tf;
        }
    }
    Vector {
        weights,
        order,
        norm: norm.map(f64::sqrt),
        length,
    }
}

fn sim(hyp: &Vector, r: &Vector) -> [f64; N] {
    let delta = hyp.length - r.length;
    let mut val = [0.0; N];
    for &(g, n) in &hyp.order {
        let h = hyp.weights[n][&g];
        let rv = r.weights[n].get(&g).copied().unwrap_or(0.0);
        val[n] += h.min(rv) * rv;
    }
    for n in 0..N {
        if hyp.norm[n] != 0.0 && r.norm[n] != 0.0 {
            val[n] /= hyp.norm[n] * r.norm[n];
        }
        val[n] *= std::f64::consts::E.powf(-(delta * delta) / (2.0 * SIGMA * SIGMA));
    }
    val
}

/// CIDEr-D over already tokenized sentences: `cands[i]` is scored against `refs[i]`.
pub fn cider_d_tokens<'a>(
    cands: &'a [Vec<String>],
    refs: &'a [Vec<Vec<String>>],
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
    let mut vocab: HashMap<&'a str, u32> = HashMap::new();
    let mut intern = |words: &'a [String]| -> Vec<u32> {
        words
            .iter()
            .map(|w| {
                let next = vocab.len() as u32;
                *vocab.entry(w.as_str()).or_insert(next)
            })
            .collect()
    };
    let test: Vec<Counts> = cands.iter().map(|c| precook(&intern(c))).collect();
    let crefs: Vec<Vec<Counts>> = refs
        .iter()
        .map(|rs| rs.iter().map(|r| precook(&intern(r))).collect())
        .collect();

    let mut df: HashMap<Gram, f64> = HashMap::new();
    for rs in &crefs {
        let mut seen: std::collections::HashSet<Gram> = std::collections::HashSet::new();
        for r in rs {
            for &(g, _, _) in &r.grams {
                if seen.insert(g) {
                    *df.entry(g).or_insert(0.0) += 1.0;
                }
            }
        }
    }
    let ref_len = (crefs.len() as f64).ln();

    let mut per_image = Vec::with_capacity(test.len());
    for (t, rs) in test.iter().zip(&crefs) {
        if rs.is_empty() {
            return Err(MetricError::Mismatch(
                "an image has no reference captions".to_string(),
            ));
        }
        let hyp = counts_to_vec(t, &df, ref_len);
        let mut score = [0.0; N];
        for r in rs {
            let rv = counts_to_vec(r, &df, ref_len);
            let s = sim(&hyp, &rv);
            for n in 0..N {
                score[n] += s[n];
            }
        }
        let mut avg = np_mean(&score);
        avg /= rs.len() as f64;
        avg *= 10.0;
        per_image.push(avg);
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
    let mut tokenized_refs = tokenize_captions(&flat_refs)?.into_iter();
    let refs_tok: Vec<Vec<Vec<String>>> = ref_sets
        .iter()
        .map(|r| tokenized_refs.by_ref().take(r.len()).collect())
        .collect();
    let cand_text: Vec<&str> = cands.iter().map(|(_, c)| c.as_str()).collect();
    let cands_tok = tokenize_captions(&cand_text)?;
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
