//! Token embeddings whose added special-token rows may be trained while every other row stays frozen.
//!
//! OpenFlamingo trains only the `<image>` and `<|endofchunk|>` rows of the LM's input embedding (spec §1.9:
//! the gradient of all other rows is masked to zero). Here the table is split instead: a frozen base table
//! (a plain [`Tensor`], never handed to an optimizer) plus one trainable [`Var`] holding only the special rows.
//! Frozen rows therefore cannot change, whatever the optimizer or its weight decay does.

use candle_core::{DType, Device, Result, Tensor, Var};

/// Whether the added special-token rows are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialEmbeddingMode {
    /// The special rows live in a [`Var`] returned by [`TokenEmbeddings::trainable_vars`].
    #[default]
    Trainable,
    /// Every row is frozen; [`TokenEmbeddings::trainable_vars`] is empty.
    Frozen,
}

/// A token embedding table: frozen base rows plus (optionally) trainable rows for the special tokens.
#[derive(Debug, Clone)]
pub struct TokenEmbeddings {
    /// The full table `(vocab, dim)`; in trainable mode its special rows are stale and overridden by `special`.
    base: Tensor,
    /// Ids whose rows are trainable, in the row order of `special`.
    special_ids: Vec<u32>,
    /// `(special_ids.len(), dim)` trainable rows; `None` when frozen or when there are no special ids.
    special: Option<Var>,
    /// `(vocab, 1)`: 0 on special rows, 1 elsewhere (trainable mode only).
    keep_rows: Option<Tensor>,
    /// `(k, vocab)` one-hot placement of the special rows (trainable mode only).
    placement: Option<Tensor>,
    /// `(vocab, k)`: the transposed placement, contiguous for row lookups.
    placement_t: Option<Tensor>,
}

impl TokenEmbeddings {
    /// Builds the embeddings from a full table `(vocab, dim)`. In [`SpecialEmbeddingMode::Trainable`] the rows
    /// of `special_ids` are copied into a fresh [`Var`]; duplicate ids are ignored.
    pub fn new(table: Tensor, mode: SpecialEmbeddingMode, special_ids: &[u32]) -> Result<Self> {
        let (vocab, _dim) = table.dims2()?;
        let mut ids: Vec<u32> = Vec::new();
        for &id in special_ids {
            if id as usize >= vocab {
                candle_core::bail!(
                    "special token id {id} is outside the embedding table of {vocab} rows"
                );
            }
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let mut emb = Self {
            base: table.detach(),
            special_ids: ids,
            special: None,
            keep_rows: None,
            placement: None,
            placement_t: None,
        };
        if mode == SpecialEmbeddingMode::Trainable && !emb.special_ids.is_empty() {
            let idx = Tensor::new(emb.special_ids.as_slice(), table.device())?;
            let rows = emb.base.index_select(&idx, 0)?;
            emb.special = Some(Var::from_tensor(&rows)?);
            let mut keep = vec![1f32; vocab];
            let mut placement = vec![0f32; emb.special_ids.len() * vocab];
            for (k, &id) in emb.special_ids.iter().enumerate() {
                keep[id as usize] = 0.0;
                placement[k * vocab + id as usize] = 1.0;
            }
            let dev = table.device();
            emb.keep_rows = Some(Tensor::from_vec(keep, (vocab, 1), dev)?.to_dtype(table.dtype())?);
            let placement = Tensor::from_vec(placement, (emb.special_ids.len(), vocab), dev)?
                .to_dtype(table.dtype())?;
            emb.placement_t = Some(placement.t()?.contiguous()?);
            emb.placement = Some(placement);
        }
        Ok(emb)
    }

    /// Number of rows (the tokenizer length after resizing).
    pub fn vocab_size(&self) -> usize {
        self.base.dim(0).unwrap_or(0)
    }

    /// Width of one embedding row.
    pub fn dim(&self) -> usize {
        self.base.dim(1).unwrap_or(0)
    }

    /// The ids whose rows are trainable (empty when frozen).
    pub fn trainable_ids(&self) -> &[u32] {
        if self.special.is_some() {
            &self.special_ids
        } else {
            &[]
        }
    }

    /// The mode these embeddings were built with.
    pub fn mode(&self) -> SpecialEmbeddingMode {
        if self.special.is_some() {
            SpecialEmbeddingMode::Trainable
        } else {
            SpecialEmbeddingMode::Frozen
        }
    }

    /// The tensors an optimizer may update: only the special rows (empty when frozen).
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.special.iter().cloned().collect()
    }

    /// The frozen base table `(vocab, dim)`; its special rows are stale in trainable mode.
    pub fn base_table(&self) -> &Tensor {
        &self.base
    }

    /// Looks up `ids` (any integer dtype, any shape) → `ids.shape ++ [dim]`, differentiable w.r.t. the
    /// trainable rows.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let shape = ids.dims().to_vec();
        let flat = ids.flatten_all()?.to_dtype(DType::U32)?;
        let mut out = self.base.index_select(&flat, 0)?;
        if let (Some(special), Some(keep), Some(placement_t)) =
            (&self.special, &self.keep_rows, &self.placement_t)
        {
            // keep: 1 for ordinary tokens; onehot (N, k) selects the trainable row of special tokens.
            let keep = keep.index_select(&flat, 0)?;
            let onehot = placement_t.index_select(&flat, 0)?;
            out = out
                .broadcast_mul(&keep)?
                .add(&onehot.matmul(special.as_tensor())?)?;
        }
        let mut out_shape = shape;
        out_shape.push(self.dim());
        out.reshape(out_shape)
    }

    /// Tied output head: `x (.., dim) @ tableᵀ → (.., vocab)`, differentiable w.r.t. the trainable rows.
    pub fn tied_logits(&self, x: &Tensor) -> Result<Tensor> {
        let (Some(special), Some(keep), Some(placement)) =
            (&self.special, &self.keep_rows, &self.placement)
        else {
            return crate::frozen::matmul_t(x, &self.base);
        };
        let rows = x.elem_count() / self.dim().max(1);
        if rows >= self.dim() {
            // Many rows (prefill, training): assembling the table is cheaper than patching the logits.
            return x.broadcast_matmul(&self.full_table()?.t()?);
        }
        // Few rows (decoding): patch the special columns of the base logits.
        let logits = x.broadcast_matmul(&self.base.t()?)?;
        let special_logits = x.broadcast_matmul(&special.as_tensor().t()?)?;
        logits
            .broadcast_mul(&keep.t()?)?
            .add(&special_logits.broadcast_matmul(placement)?)
    }

    /// The full table `(vocab, dim)` with the current special rows in place (for saving under the LM's HF
    /// embedding key).
    pub fn full_table(&self) -> Result<Tensor> {
        match (&self.special, &self.keep_rows, &self.placement_t) {
            (Some(special), Some(keep), Some(placement_t)) => self
                .base
                .broadcast_mul(keep)?
                .add(&placement_t.matmul(special.as_tensor())?),
            _ => Ok(self.base.clone()),
        }
    }

    /// Replaces the whole table (e.g. from an OpenFlamingo checkpoint): base rows and trainable rows alike.
    /// The shape must equal the current one.
    pub fn set_full_table(&mut self, table: &Tensor) -> Result<()> {
        if table.dims() != self.base.dims() {
            candle_core::bail!(
                "embedding table shape {:?} does not match the LM's {:?}",
                table.dims(),
                self.base.dims()
            );
        }
        let table = table
            .to_dtype(self.base.dtype())?
            .to_device(self.base.device())?;
        if let Some(special) = &self.special {
            let idx = Tensor::new(self.special_ids.as_slice(), table.device())?;
            special.set(&table.index_select(&idx, 0)?)?;
        }
        self.base = table.detach();
        Ok(())
    }

    /// Device of the table.
    pub fn device(&self) -> &Device {
        self.base.device()
    }
}
