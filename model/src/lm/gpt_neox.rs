//! GPT-NeoX (`model_type: gpt_neox`: Pythia, RedPajama-INCITE) as HF transformers v4.33.
//!
//! Fused `query_key_value` laid out per head as `[q | k | v]` (each `head_size`), rotary embedding on the
//! first `rotary_pct · head_size` features (non-interleaved halves, `rotary_emb_base`), scores scaled by
//! `1/sqrt(head_size)`, parallel or sequential residual (`use_parallel_residual`), untied `embed_out` head.

use candle_core::{Result, Tensor};
use serde::Deserialize;

use super::ops::{self, Activation, LayerNorm, Linear, Scale};
use super::{AttnCtx, FamilyBody, LayerCache, LmConfig, LoadCtx, LoadedFamily};
use crate::error::Result as LoadResult;

fn yes() -> bool {
    true
}
fn default_act() -> String {
    "gelu".into()
}
fn default_pct() -> f64 {
    0.25
}
fn default_base() -> f64 {
    10000.0
}
fn default_eps() -> f64 {
    1e-5
}
fn default_std() -> f64 {
    0.02
}

/// `config.json` of a GPT-NeoX model.
#[derive(Debug, Clone, Deserialize)]
struct NeoxConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_pct")]
    rotary_pct: f64,
    #[serde(default = "default_base")]
    rotary_emb_base: f64,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "yes")]
    use_parallel_residual: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "default_std")]
    initializer_range: f64,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
}

#[derive(Debug)]
struct Layer {
    input_norm: LayerNorm,
    post_norm: LayerNorm,
    qkv: Linear,
    dense: Linear,
    up: Linear,
    down: Linear,
}

#[derive(Debug)]
struct GptNeox {
    c: NeoxConfig,
    act: Activation,
    rotary_dims: usize,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
}

pub(crate) fn load(ctx: &LoadCtx) -> LoadResult<LoadedFamily> {
    let c: NeoxConfig = ctx.parse()?;
    if matches!(&c.rope_scaling, Some(v) if !v.is_null()) {
        return Err(ctx.config_error("rope_scaling is not supported for gpt_neox"));
    }
    if c.tie_word_embeddings {
        return Err(ctx.config_error("tie_word_embeddings = true is not supported for gpt_neox"));
    }
    let act = Activation::from_hf(&c.hidden_act)
        .ok_or_else(|| ctx.config_error(format!("unsupported hidden_act `{}`", c.hidden_act)))?;
    let d = c.hidden_size;
    let h = c.num_attention_heads;
    if h == 0 || !d.is_multiple_of(h) {
        return Err(ctx.config_error(format!(
            "hidden_size {d} is not divisible by num_attention_heads {h}"
        )));
    }
    let hd = d / h;
    let rotary_dims = (hd as f64 * c.rotary_pct) as usize;
    let w = ctx.weights;
    let linear = |p: &str, out: usize, inp: usize| -> LoadResult<Linear> {
        Ok(Linear::new(
            w.get(&format!("{p}.weight"), &[out, inp])?,
            Some(w.get(&format!("{p}.bias"), &[out])?),
        ))
    };
    let norm = |p: &str| -> LoadResult<LayerNorm> {
        Ok(LayerNorm::new(
            Some(w.get(&format!("{p}.weight"), &[d])?),
            Some(w.get(&format!("{p}.bias"), &[d])?),
            c.layer_norm_eps,
        ))
    };
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("gpt_neox.layers.{i}");
        layers.push(Layer {
            input_norm: norm(&format!("{p}.input_layernorm"))?,
            post_norm: norm(&format!("{p}.post_attention_layernorm"))?,
            qkv: linear(&format!("{p}.attention.query_key_value"), 3 * d, d)?,
            dense: linear(&format!("{p}.attention.dense"), d, d)?,
            up: linear(&format!("{p}.mlp.dense_h_to_4h"), c.intermediate_size, d)?,
            down: linear(&format!("{p}.mlp.dense_4h_to_h"), d, c.intermediate_size)?,
        });
    }
    let final_norm = norm("gpt_neox.final_layer_norm")?;
    let table = w.get("gpt_neox.embed_in.weight", &[c.vocab_size, d])?;
    let head = w.get("embed_out.weight", &[c.vocab_size, d])?;
    let config = LmConfig {
        family: ctx.family,
        hidden_size: d,
        num_layers: c.num_hidden_layers,
        num_heads: h,
        vocab_size: c.vocab_size,
        embed_dim: d,
        initializer_range: c.initializer_range,
        tie_word_embeddings: false,
        head_key: Some("embed_out.weight".to_string()),
        config_path: ctx.config_path.to_path_buf(),
    };
    Ok(LoadedFamily {
        config,
        body: Box::new(GptNeox {
            c,
            act,
            rotary_dims,
            layers,
            final_norm,
        }),
        table,
        head: Some(head),
        logit_scale: None,
    })
}

impl FamilyBody for GptNeox {
    fn embed(&self, tokens: &Tensor, _ctx: &AttnCtx) -> Result<Tensor> {
        Ok(tokens.clone())
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
        let hd = d / h;
        let a = l.input_norm.forward(x)?;
        // (B, T, H, 3·hd) → (B, H, T, 3·hd): per head [q | k | v].
        let qkv = l
            .qkv
            .forward(&a)?
            .reshape((b, t, h, 3 * hd))?
            .transpose(1, 2)?;
        let q = qkv.narrow(3, 0, hd)?.contiguous()?;
        let k = qkv.narrow(3, hd, hd)?.contiguous()?;
        let v = qkv.narrow(3, 2 * hd, hd)?.contiguous()?;
        let (q, k) = if self.rotary_dims > 0 {
            let (cos, sin) = ctx.rotary(b, t, self.rotary_dims, self.c.rotary_emb_base, 1.0)?;
            let (cos, sin) = (
                cos.to_device(x.device())?.to_dtype(x.dtype())?,
                sin.to_device(x.device())?.to_dtype(x.dtype())?,
            );
            (
                ops::apply_rotary(&q, &cos, &sin)?,
                ops::apply_rotary(&k, &cos, &sin)?,
            )
        } else {
            (q, k)
        };
        let (k, v) = match cache {
            Some(c) => c.append(&k, &v)?,
            None => (k, v),
        };
        let bias = ctx.bias(b, t)?.to_device(x.device())?.to_dtype(x.dtype())?;
        let scale = 1.0 / (hd as f32).sqrt() as f64;
        let attn = ops::attention(&q, &k, &v, &bias, Scale::Scores(scale))?;
        let attn = l.dense.forward(&ops::merge_heads(&attn)?)?;
        if self.c.use_parallel_residual {
            let m = l
                .down
                .forward(&self.act.forward(&l.up.forward(&l.post_norm.forward(x)?)?)?)?;
            (m + attn)? + x
        } else {
            let attn = (attn + x)?;
            let m = l.down.forward(
                &self
                    .act
                    .forward(&l.up.forward(&l.post_norm.forward(&attn)?)?)?,
            )?;
            m + attn
        }
    }

    fn finish(&self, x: &Tensor) -> Result<Tensor> {
        self.final_norm.forward(x)
    }
}
