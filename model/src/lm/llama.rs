//! LLaMA (`model_type: llama`) as HF transformers v4.33 `LlamaForCausalLM`.
//!
//! RMSNorm, rotary embedding on the whole head (`rope_theta`, optional `linear` `rope_scaling`), grouped-query
//! attention (`num_key_value_heads`), scores divided by `sqrt(head_dim)`, SiLU-gated MLP, untied `lm_head`
//! unless `tie_word_embeddings`.

use candle_core::{Result, Tensor};
use serde::Deserialize;

use super::ops::{self, Activation, Linear, RmsNorm, Scale};
use super::{AttnCtx, FamilyBody, LayerCache, LmConfig, LoadCtx, LoadedFamily};
use crate::error::Result as LoadResult;

fn default_act() -> String {
    "silu".into()
}
fn default_theta() -> f64 {
    10000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_std() -> f64 {
    0.02
}

/// `config.json` of a LLaMA model.
#[derive(Debug, Clone, Deserialize)]
struct LlamaConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f64,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "default_std")]
    initializer_range: f64,
}

#[derive(Debug)]
struct Layer {
    input_norm: RmsNorm,
    post_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
}

#[derive(Debug)]
struct Llama {
    c: LlamaConfig,
    kv_heads: usize,
    act: Activation,
    /// Linear rope scaling factor (positions are divided by it).
    rope_factor: f32,
    layers: Vec<Layer>,
    norm: RmsNorm,
}

pub(crate) fn load(ctx: &LoadCtx) -> LoadResult<LoadedFamily> {
    let c: LlamaConfig = ctx.parse()?;
    let rope_factor = match &c.rope_scaling {
        None | Some(serde_json::Value::Null) => 1.0,
        Some(v) => {
            let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let factor = v.get("factor").and_then(|f| f.as_f64());
            match (kind, factor) {
                ("linear", Some(f)) if f > 0.0 => f as f32,
                _ => {
                    return Err(
                        ctx.config_error(format!("unsupported rope_scaling {v} (only linear)"))
                    );
                }
            }
        }
    };
    let act = Activation::from_hf(&c.hidden_act)
        .ok_or_else(|| ctx.config_error(format!("unsupported hidden_act `{}`", c.hidden_act)))?;
    let d = c.hidden_size;
    let h = c.num_attention_heads;
    let kvh = c.num_key_value_heads.unwrap_or(h);
    if h == 0 || !d.is_multiple_of(h) || kvh == 0 || !h.is_multiple_of(kvh) {
        return Err(ctx.config_error(format!(
            "hidden_size {d}, num_attention_heads {h} and num_key_value_heads {kvh} are inconsistent"
        )));
    }
    let hd = d / h;
    let w = ctx.weights;
    let linear = |p: &str, out: usize, inp: usize, bias: bool| -> LoadResult<Linear> {
        let b = if bias {
            Some(w.get(&format!("{p}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear::new(w.get(&format!("{p}.weight"), &[out, inp])?, b))
    };
    let norm = |p: &str| -> LoadResult<RmsNorm> {
        Ok(RmsNorm::new(
            w.get(&format!("{p}.weight"), &[d])?,
            c.rms_norm_eps,
        ))
    };
    let ab = c.attention_bias;
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        layers.push(Layer {
            input_norm: norm(&format!("{p}.input_layernorm"))?,
            post_norm: norm(&format!("{p}.post_attention_layernorm"))?,
            q: linear(&format!("{p}.self_attn.q_proj"), h * hd, d, ab)?,
            k: linear(&format!("{p}.self_attn.k_proj"), kvh * hd, d, ab)?,
            v: linear(&format!("{p}.self_attn.v_proj"), kvh * hd, d, ab)?,
            o: linear(&format!("{p}.self_attn.o_proj"), d, h * hd, ab)?,
            gate: linear(&format!("{p}.mlp.gate_proj"), c.intermediate_size, d, false)?,
            up: linear(&format!("{p}.mlp.up_proj"), c.intermediate_size, d, false)?,
            down: linear(&format!("{p}.mlp.down_proj"), d, c.intermediate_size, false)?,
        });
    }
    let final_norm = norm("model.norm")?;
    let table = w.get("model.embed_tokens.weight", &[c.vocab_size, d])?;
    let head = if c.tie_word_embeddings {
        None
    } else {
        Some(w.get("lm_head.weight", &[c.vocab_size, d])?)
    };
    let config = LmConfig {
        family: ctx.family,
        hidden_size: d,
        num_layers: c.num_hidden_layers,
        num_heads: h,
        vocab_size: c.vocab_size,
        embed_dim: d,
        initializer_range: c.initializer_range,
        tie_word_embeddings: c.tie_word_embeddings,
        head_key: (!c.tie_word_embeddings).then(|| "lm_head.weight".to_string()),
        config_path: ctx.config_path.to_path_buf(),
    };
    Ok(LoadedFamily {
        config,
        body: Box::new(Llama {
            c,
            kv_heads: kvh,
            act,
            rope_factor,
            layers,
            norm: final_norm,
        }),
        table,
        head,
        logit_scale: None,
    })
}

impl FamilyBody for Llama {
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
        let q = ops::split_heads(&l.q.forward(&a)?, h)?;
        let k = ops::split_heads(&l.k.forward(&a)?, self.kv_heads)?;
        let v = ops::split_heads(&l.v.forward(&a)?, self.kv_heads)?;
        let (cos, sin) = ctx.rotary(b, t, hd, self.c.rope_theta, self.rope_factor)?;
        let (cos, sin) = (
            cos.to_device(x.device())?.to_dtype(x.dtype())?,
            sin.to_device(x.device())?.to_dtype(x.dtype())?,
        );
        let q = ops::apply_rotary(&q, &cos, &sin)?;
        let k = ops::apply_rotary(&k, &cos, &sin)?;
        let (k, v) = match cache {
            Some(c) => c.append(&k, &v)?,
            None => (k, v),
        };
        let n_rep = h / self.kv_heads;
        let k = ops::repeat_kv(&k, n_rep)?;
        let v = ops::repeat_kv(&v, n_rep)?;
        let bias = ctx.bias(b, t)?.to_device(x.device())?.to_dtype(x.dtype())?;
        let attn = ops::attention(&q, &k, &v, &bias, Scale::DivScores((hd as f64).sqrt()))?;
        let x = (x + l.o.forward(&ops::merge_heads(&attn)?)?)?;
        let m = l.post_norm.forward(&x)?;
        let m = l
            .down
            .forward(&(self.act.forward(&l.gate.forward(&m)?)? * l.up.forward(&m)?)?)?;
        x + m
    }

    fn finish(&self, x: &Tensor) -> Result<Tensor> {
        self.norm.forward(x)
    }
}
