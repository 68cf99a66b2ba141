//! Which training examples become each query's demonstrations, and which test examples are
//! queries (spec §5.5, §5.6).
//!
//! Random mode follows open_flamingo's structure: a query set of `eval.query_set_size` training
//! examples drawn once per (dataset, seed) without replacement, then for every test example an
//! independent sample of k demonstrations from it. The draws use ChaCha8 streams derived from
//! (dataset, seed, purpose[, query id, k]) by SHA-256, so a query's demonstrations depend only on
//! the seed and the query itself: not on the batch, the order of evaluation, the other queries in
//! the subset, or a resume after a kill. RICES ranks the whole training split by cosine similarity
//! of image embeddings and puts the most similar demonstration last, next to the query.

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest, Sha256};

use super::features::FeatureBank;

/// Demonstrations in a prompt for a shot count: `shots`, or 2 text-only ones for 0 shots
/// (following Flamingo, as open_flamingo's `compute_effective_num_shots`).
pub fn effective_shots(shots: usize) -> usize {
    if shots == 0 { 2 } else { shots }
}

/// A demonstration request that cannot be met.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DemoError {
    /// Fewer candidates than demonstrations asked for.
    #[error("{dataset}: {k} demonstrations asked for, but the {pool} holds only {available}")]
    TooFew {
        /// Dataset name.
        dataset: String,
        /// Demonstrations asked for.
        k: usize,
        /// `query set` or `training split`.
        pool: &'static str,
        /// Candidates available.
        available: usize,
    },
    /// The similarity matrix product failed.
    #[error("RICES similarity: {0}")]
    Compute(String),
    /// A query embedding of another width than the demonstration bank's.
    #[error("query embedding has {got} dimensions, the demonstration features have {expected}")]
    Dimension {
        /// Bank width.
        expected: usize,
        /// Query width.
        got: usize,
    },
}

/// A ChaCha8 stream for one purpose, derived from the dataset and seed (and any further parts).
pub fn derive_rng(dataset: &str, seed: u64, parts: &[&str]) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(b"runner/eval-demos/v1");
    for part in [dataset, &seed.to_string()]
        .into_iter()
        .chain(parts.iter().copied())
    {
        // Length-prefixed so that no two part lists hash alike.
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    ChaCha8Rng::from_seed(h.finalize().into())
}

/// A uniform integer in `0..n` (n > 0) by rejection, stable across `rand` versions.
pub fn uniform_below<R: RngCore + ?Sized>(rng: &mut R, n: usize) -> usize {
    let n = n as u64;
    // Largest multiple of n that fits; values at or above it are redrawn to avoid bias.
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return (x % n) as usize;
        }
    }
}

/// Fisher–Yates shuffle in place.
pub fn shuffle<T, R: RngCore + ?Sized>(items: &mut [T], rng: &mut R) {
    for i in (1..items.len()).rev() {
        let j = uniform_below(rng, i + 1);
        items.swap(i, j);
    }
}

/// `k` distinct indices of `0..n`, in the order drawn (partial Fisher–Yates); `k <= n`.
pub fn sample_indices<R: RngCore + ?Sized>(n: usize, k: usize, rng: &mut R) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..n).collect();
    let k = k.min(n);
    for i in 0..k {
        let j = i + uniform_below(rng, n - i);
        pool.swap(i, j);
    }
    pool.truncate(k);
    pool
}

/// The test examples a cell evaluates: `num_samples` indices drawn with the seed, or the whole
/// split in file order when `num_samples` is absent or at least the split's size.
pub fn test_subset(
    dataset: &str,
    seed: u64,
    n_test: usize,
    num_samples: Option<usize>,
) -> Vec<usize> {
    match num_samples {
        Some(m) if m < n_test => {
            sample_indices(n_test, m, &mut derive_rng(dataset, seed, &["test-subset"]))
        }
        _ => (0..n_test).collect(),
    }
}

/// Random demonstrations of one (dataset, seed): the query set and the per-query draws.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomDemos {
    dataset: String,
    seed: u64,
    /// Indices into the training split (the whole split when it is not larger than the size).
    query_set: Vec<usize>,
}

impl RandomDemos {
    /// Draws the query set: `query_set_size` training indices without replacement.
    pub fn new(dataset: &str, seed: u64, n_train: usize, query_set_size: usize) -> Self {
        let query_set = if query_set_size < n_train {
            sample_indices(
                n_train,
                query_set_size,
                &mut derive_rng(dataset, seed, &["query-set"]),
            )
        } else {
            (0..n_train).collect()
        };
        RandomDemos {
            dataset: dataset.to_string(),
            seed,
            query_set,
        }
    }

    /// The query set, as indices into the training split.
    pub fn query_set(&self) -> &[usize] {
        &self.query_set
    }

    /// `k` demonstrations for the query `query_id` (indices into the training split), drawn
    /// without replacement from the query set, from a stream of their own.
    pub fn for_query(&self, query_id: &str, k: usize) -> Result<Vec<usize>, DemoError> {
        if k > self.query_set.len() {
            return Err(DemoError::TooFew {
                dataset: self.dataset.clone(),
                k,
                pool: "query set",
                available: self.query_set.len(),
            });
        }
        let mut rng = derive_rng(
            &self.dataset,
            self.seed,
            &["query", query_id, &k.to_string()],
        );
        Ok(sample_indices(self.query_set.len(), k, &mut rng)
            .into_iter()
            .map(|i| self.query_set[i])
            .collect())
    }
}

/// RICES: the `k` training examples whose features are most similar (cosine, i.e. dot product
/// of L2-normalised vectors) to `query`, least similar first and most similar last. Ties go to
/// the lower index, which then sits later. `query` is normalised here; `bank` rows already are.
pub fn rices(
    dataset: &str,
    query: &[f32],
    bank: &FeatureBank,
    k: usize,
) -> Result<Vec<usize>, DemoError> {
    if query.len() != bank.dim() {
        return Err(DemoError::Dimension {
            expected: bank.dim(),
            got: query.len(),
        });
    }
    if k > bank.len() {
        return Err(DemoError::TooFew {
            dataset: dataset.to_string(),
            k,
            pool: "training split",
            available: bank.len(),
        });
    }
    let mut q = query.to_vec();
    super::features::l2_normalize(&mut q);
    let sims: Vec<f32> = (0..bank.len())
        .map(|i| bank.row(i).iter().zip(&q).map(|(a, b)| a * b).sum())
        .collect();
    Ok(top_k_most_similar_last(&sims, k))
}

/// Queries per matrix product in [`rices_batch`] (bounds the `[chunk, N]` similarity matrix).
const RICES_CHUNK: usize = 256;

/// [`rices`] for many queries (row-major `[Q, D]`) with one matrix product per chunk of queries
/// (candle's CPU gemm), for demonstration banks of real size (COCO: 82,783 rows of 768).
pub fn rices_batch(
    dataset: &str,
    queries: &[f32],
    bank: &FeatureBank,
    k: usize,
) -> Result<Vec<Vec<usize>>, DemoError> {
    use candle_core::{Device, Tensor};
    let d = bank.dim();
    if !queries.len().is_multiple_of(d) {
        return Err(DemoError::Dimension {
            expected: d,
            got: queries.len(),
        });
    }
    if k > bank.len() {
        return Err(DemoError::TooFew {
            dataset: dataset.to_string(),
            k,
            pool: "training split",
            available: bank.len(),
        });
    }
    let compute = |e: candle_core::Error| DemoError::Compute(e.to_string());
    let bank_t = Tensor::from_slice(bank.as_slice(), (bank.len(), d), &Device::Cpu)
        .and_then(|t| t.t())
        .map_err(compute)?;
    let mut out = Vec::with_capacity(queries.len() / d);
    for chunk in queries.chunks(RICES_CHUNK * d) {
        let mut q = chunk.to_vec();
        q.chunks_mut(d).for_each(super::features::l2_normalize);
        let sims = Tensor::from_vec(q, (chunk.len() / d, d), &Device::Cpu)
            .and_then(|q| q.matmul(&bank_t))
            .and_then(|s| s.to_vec2::<f32>())
            .map_err(compute)?;
        out.extend(sims.iter().map(|row| top_k_most_similar_last(row, k)));
    }
    Ok(out)
}

/// Indices of the `k` largest similarities, least similar first (ties: lower index later).
fn top_k_most_similar_last(sims: &[f32], k: usize) -> Vec<usize> {
    // Most similar first: descending similarity, then ascending index.
    let order = |a: &usize, b: &usize| sims[*b].total_cmp(&sims[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..sims.len()).collect();
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
    }
    idx.truncate(k);
    idx.sort_by(order);
    idx.reverse();
    idx
}
