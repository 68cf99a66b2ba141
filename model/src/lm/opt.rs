//! OPT (`model_type: opt`) as HF transformers v4.33 `OPTForCausalLM`.
//!
//! Learned positions with offset 2 computed from the attention mask (`cumsum(mask)·mask − 1`), optional
//! `project_in`/`project_out` when `word_embed_proj_dim != hidden_size`, pre- or post-LN blocks
//! (`do_layer_norm_before`), q scaled by `head_dim^-0.5` before `q·kᵀ`, head tied to the input embeddings
//! unless `tie_word_embeddings` is false.

use candle_core::{Result, Tensor};
use serde::Deserialize;

use super::ops::{self, Activation, LayerNorm, Linear, Scale};
use super::{AttnCtx, FamilyBody, LayerCache, LmConfig, LoadCtx, LoadedFamily};
use crate::error::Result as LoadResult;

fn yes() -> bool {
    true
}
fn default_act() -> String {
    "relu".into()
}
fn default_std() -> f64 {
    0.02
}

/// `config.json` of an OPT model.
#[derive(Debug, Clone, Deserialize)]
struct OptConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    ffn_dim: usize,
    max_position_embeddings: usize,
    #[serde(default = "yes")]
    do_layer_norm_before: bool,
    #[serde(default)]
    word_embed_proj_dim: Option<usize>,
    #[serde(default = "default_act")]
    activation_function: String,
    #[serde(default = "yes")]
    enable_bias: bool,
    #[serde(default = "yes")]
    layer_norm_elementwise_affine: bool,
    #[serde(default, rename = "_remove_final_layer_norm")]
    remove_final_layer_norm: bool,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
    #[serde(default = "default_std")]
    init_std: f64,
}

#[derive(Debug)]
struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    attn_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_norm: LayerNorm,
}

#[derive(Debug)]
struct Opt {
    c: OptConfig,
    act: Activation,
    positions: Tensor,
    project_in: Option<Linear>,
    project_out: Option<Linear>,
    layers: Vec<Layer>,
    final_norm: Option<LayerNorm>,
}

/// HF `OPTLearnedPositionalEmbedding.offset`.
const POSITION_OFFSET: usize = 2;
const EPS: f64 = 1e-5;

pub(crate) fn load(ctx: &LoadCtx) -> LoadResult<LoadedFamily> {
    let c: OptConfig = ctx.parse()?;
    let act = Activation::from_hf(&c.activation_function).ok_or_else(|| {
        ctx.config_error(format!(
            "unsupported activation_function `{}`",
            c.activation_function
        ))
    })?;
    let d = c.hidden_size;
    let h = c.num_attention_heads;
    if h == 0 || !d.is_multiple_of(h) {
        return Err(ctx.config_error(format!(
            "hidden_size {d} is not divisible by num_attention_heads {h}"
        )));
    }
    let e = c.word_embed_proj_dim.unwrap_or(d);
    let w = ctx.weights;
    let linear = |p: &str, out: usize, inp: usize, bias: bool| -> LoadResult<Linear> {
        let b = if bias {
            Some(w.get(&format!("{p}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear::new(w.get(&format!("{p}.weight"), &[out, inp])?, b))
    };
    let norm = |p: &str| -> LoadResult<LayerNorm> {
        if c.layer_norm_elementwise_affine {
            Ok(LayerNorm::new(
                Some(w.get(&format!("{p}.weight"), &[d])?),
                Some(w.get(&format!("{p}.bias"), &[d])?),
                EPS,
            ))
        } else {
            Ok(LayerNorm::new(None, None, EPS))
        }
    };
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.decoder.layers.{i}");
        let b = c.enable_bias;
        layers.push(Layer {
            q: linear(&format!("{p}.self_attn.q_proj"), d, d, b)?,
            k: linear(&format!("{p}.self_attn.k_proj"), d, d, b)?,
            v: linear(&format!("{p}.self_attn.v_proj"), d, d, b)?,
            out: linear(&format!("{p}.self_attn.out_proj"), d, d, b)?,
            attn_norm: norm(&format!("{p}.self_attn_layer_norm"))?,
            fc1: linear(&format!("{p}.fc1"), c.ffn_dim, d, b)?,
            fc2: linear(&format!("{p}.fc2"), d, c.ffn_dim, b)?,
            final_norm: norm(&format!("{p}.final_layer_norm"))?,
        });
    }
    let final_norm = if c.do_layer_norm_before && !c.remove_final_layer_norm {
        Some(norm("model.decoder.final_layer_norm")?)
    } else {
        None
    };
    let (project_in, project_out) = if e != d {
        (
            Some(linear("model.decoder.project_in", d, e, false)?),
            Some(linear("model.decoder.project_out", e, d, false)?),
        )
    } else {
        (None, None)
    };
    let positions = w.get(
        "model.decoder.embed_positions.weight",
        &[c.max_position_embeddings + POSITION_OFFSET, d],
    )?;
    let table = w.get("model.decoder.embed_tokens.weight", &[c.vocab_size, e])?;
    // HF ties lm_head to embed_tokens unless told otherwise; checkpoints usually omit lm_head.weight.
    let head = if c.tie_word_embeddings {
        None
    } else {
        Some(w.get("lm_head.weight", &[c.vocab_size, e])?)
    };
    let config = LmConfig {
        family: ctx.family,
        hidden_size: d,
        num_layers: c.num_hidden_layers,
        num_heads: h,
        vocab_size: c.vocab_size,
        embed_dim: e,
        initializer_range: c.init_std,
        tie_word_embeddings: c.tie_word_embeddings,
        head_key: (!c.tie_word_embeddings).then(|| "lm_head.weight".to_string()),
        config_path: ctx.config_path.to_path_buf(),
    };
    Ok(LoadedFamily {
        config,
        body: Box::new(Opt {
            c,
            act,
            positions,
            project_in,
            project_out,
            layers,
            final_norm,
        }),
        table,
        head,
        logit_scale: None,
    })
}

impl FamilyBody for Opt {
    fn embed(&self, tokens: &Tensor, ctx: &AttnCtx) -> Result<Tensor> {
        let (b, t, _) = tokens.dims3()?;
        let x = match &self.project_in {
            Some(p) => p.forward(tokens)?,
            None => tokens.clone(),
        };
        let pos = ctx.opt_positions(b, t)?;
        let rows = self.positions.dim(0)?;
        if let Some(&bad) = pos.iter().find(|&&p| p as usize >= rows) {
            candle_core::bail!(
                "position {} exceeds max_position_embeddings {}",
                bad as usize - POSITION_OFFSET,
                self.c.max_position_embeddings
            );
        }
        let pos = Tensor::from_vec(pos, b * t, tokens.device())?;
        let pe = self
            .positions
            .index_select(&pos, 0)?
            .reshape((b, t, self.c.hidden_size))?;
        x + pe
    }

    fn layer(
        &self,
        i: usize,
        x: &Tensor,
        ctx: &AttnCtx,
        cache: Option<&mut LayerCache>,
    ) -> Result<Tensor> {
        let l = &self.layers[i];
        let (b, t, d) = x.dims3()?;
        let h = self.c.num_attention_heads;
        let pre = self.c.do_layer_norm_before;
        let residual = x;
        let a = if pre {
            l.attn_norm.forward(x)?
        } else {
            x.clone()
        };
        let q = ops::split_heads(&l.q.forward(&a)?, h)?;
        let k = ops::split_heads(&l.k.forward(&a)?, h)?;
        let v = ops::split_heads(&l.v.forward(&a)?, h)?;
        let (k, v) = match cache {
            Some(c) => c.append(&k, &v)?,
            None => (k, v),
        };
        let bias = ctx.bias(b, t)?.to_device(x.device())?.to_dtype(x.dtype())?;
        let scale = ((d / h) as f64).powf(-0.5);
        let attn = ops::attention(&q, &k, &v, &bias, Scale::Query(scale))?;
        let mut x = (residual + l.out.forward(&ops::merge_heads(&attn)?)?)?;
        if !pre {
            x = l.attn_norm.forward(&x)?;
        }
        let residual = &x;
        let f = if pre {
            l.final_norm.forward(&x)?
        } else {
            x.clone()
        };
        let f = l.fc2.forward(&self.act.forward(&l.fc1.forward(&f)?)?)?;
        let mut x = (residual + f)?;
        if !pre {
            x = l.final_norm.forward(&x)?;
        }
        Ok(x)
    }

    fn finish(&self, x: &Tensor) -> Result<Tensor> {
        let x = match &self.final_norm {
            Some(n) => n.forward(x)?,
            None => x.clone(),
        };
        match &self.project_out {
            Some(p) => p.forward(&x),
            None => Ok(x),
        }
    }
}
