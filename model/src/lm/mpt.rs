//! MPT in both released layouts: MPT-7B (`model_type: mpt`, `MPTForCausalLM`) and the older MosaicGPT of
//! MPT-1B (`model_type: mosaic_gpt`, llm-foundry's `examples/llm` code of April 2023).
//!
//! Both: pre-LN blocks, fused `Wqkv` split in thirds (q | k | v), optional LayerNorm on the full q and k
//! (`attn_qk_ln` / `attn_config.qk_ln`), ALiBi bias `slope_h · (j − (S−1))` on key `j`, key-padding and causal
//! masks with `finfo.min`, exact-GELU MLP, `no_bias` removing every bias (LayerNorms included), and logits
//! tied to `transformer.wte`. Only the key names and config layout differ.

use candle_core::{Result, Tensor};
use serde::Deserialize;

use super::ops::{self, LayerNorm, Linear, Scale};
use super::{AttnCtx, FamilyBody, LayerCache, LmConfig, LmFamily, LoadCtx, LoadedFamily};
use crate::error::Result as LoadResult;

/// `attn_config` of an `mpt` config.json. Defaults are HF's `MptAttentionConfig` (ALiBi on), because HF's
/// native MPT writes only the values that differ from them; MPT-7B's remote-code config lists every key.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
struct MptAttnConfig {
    attn_type: Option<String>,
    qk_ln: bool,
    clip_qkv: Option<f64>,
    softmax_scale: Option<f64>,
    prefix_lm: Option<bool>,
    alibi: bool,
    alibi_bias_max: f64,
}

impl Default for MptAttnConfig {
    fn default() -> Self {
        Self {
            attn_type: None,
            qk_ln: false,
            clip_qkv: None,
            softmax_scale: None,
            prefix_lm: None,
            alibi: true,
            alibi_bias_max: 8.0,
        }
    }
}

fn default_alibi_max() -> f64 {
    8.0
}
fn default_ratio() -> usize {
    4
}

/// `init_config` of an `mpt` config.json (only the std matters here).
#[derive(Debug, Clone, Deserialize, Default)]
struct MptInitConfig {
    #[serde(default)]
    init_std: Option<f64>,
}

/// `config.json` of MPT-7B (`model_type: mpt`).
#[derive(Debug, Clone, Deserialize)]
struct MptConfig {
    d_model: usize,
    n_heads: usize,
    n_layers: usize,
    #[serde(default = "default_ratio")]
    expansion_ratio: usize,
    max_seq_len: usize,
    vocab_size: usize,
    #[serde(default)]
    no_bias: bool,
    #[serde(default)]
    attn_config: MptAttnConfig,
    #[serde(default)]
    logit_scale: Option<serde_json::Value>,
    #[serde(default)]
    learned_pos_emb: Option<bool>,
    #[serde(default)]
    init_config: MptInitConfig,
    #[serde(default)]
    norm_type: Option<String>,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
}

fn default_eps() -> f64 {
    1e-5
}

/// `config.json` of MosaicGPT (`model_type: mosaic_gpt`).
#[derive(Debug, Clone, Deserialize)]
struct MosaicGptConfig {
    d_model: usize,
    n_heads: usize,
    n_layers: usize,
    #[serde(default = "default_ratio")]
    mlp_ratio: usize,
    max_seq_len: usize,
    vocab_size: usize,
    #[serde(default)]
    attn_qk_ln: bool,
    #[serde(default)]
    attn_clip_qkv: Option<f64>,
    #[serde(default)]
    softmax_scale: Option<f64>,
    #[serde(default)]
    prefix_lm: Option<bool>,
    #[serde(default)]
    alibi: bool,
    #[serde(default = "default_alibi_max")]
    alibi_bias_max: f64,
    #[serde(default)]
    logit_scale: Option<serde_json::Value>,
    #[serde(default)]
    no_bias: bool,
    #[serde(default)]
    init_std: Option<f64>,
}

/// The settings both layouts share.
#[derive(Debug, Clone)]
struct Settings {
    d_model: usize,
    n_heads: usize,
    n_layers: usize,
    ratio: usize,
    max_seq_len: usize,
    vocab_size: usize,
    qk_ln: bool,
    clip_qkv: Option<f64>,
    softmax_scale: Option<f64>,
    alibi: bool,
    alibi_bias_max: f64,
    learned_pos: bool,
    no_bias: bool,
    logit_scale: Option<f64>,
    init_std: f64,
    eps: f64,
}

/// HF key names of one layout.
struct Names {
    norm_1: &'static str,
    norm_2: &'static str,
    up: &'static str,
    down: &'static str,
    norm_f: &'static str,
}

const MPT_NAMES: Names = Names {
    norm_1: "norm_1",
    norm_2: "norm_2",
    up: "ffn.up_proj",
    down: "ffn.down_proj",
    norm_f: "transformer.norm_f",
};
const MOSAIC_NAMES: Names = Names {
    norm_1: "ln_1",
    norm_2: "ln_2",
    up: "mlp.mlp_up",
    down: "mlp.mlp_down",
    norm_f: "transformer.ln_f",
};

fn parse_logit_scale(
    ctx: &LoadCtx,
    v: &Option<serde_json::Value>,
    d: usize,
) -> LoadResult<Option<f64>> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => Ok(n.as_f64()),
        Some(serde_json::Value::String(s)) if s == "inv_sqrt_d_model" => {
            Ok(Some(1.0 / (d as f64).sqrt()))
        }
        Some(other) => Err(ctx.config_error(format!("unsupported logit_scale {other}"))),
    }
}

fn settings(ctx: &LoadCtx) -> LoadResult<Settings> {
    let s = if ctx.family == LmFamily::Mpt {
        let c: MptConfig = ctx.parse()?;
        let a = &c.attn_config;
        if let Some(t) = &a.attn_type
            && t != "multihead_attention"
        {
            return Err(ctx.config_error(format!(
                "attn_config.attn_type `{t}` is not supported (only multihead_attention)"
            )));
        }
        if a.prefix_lm == Some(true) {
            return Err(ctx.config_error("attn_config.prefix_lm = true is not supported"));
        }
        if let Some(n) = &c.norm_type
            && !n.ends_with("layernorm")
        {
            return Err(ctx.config_error(format!("norm_type `{n}` is not supported")));
        }
        Settings {
            d_model: c.d_model,
            n_heads: c.n_heads,
            n_layers: c.n_layers,
            ratio: c.expansion_ratio,
            max_seq_len: c.max_seq_len,
            vocab_size: c.vocab_size,
            qk_ln: a.qk_ln,
            clip_qkv: a.clip_qkv,
            softmax_scale: a.softmax_scale,
            alibi: a.alibi,
            alibi_bias_max: a.alibi_bias_max,
            learned_pos: !a.alibi && c.learned_pos_emb.unwrap_or(true),
            no_bias: c.no_bias,
            logit_scale: parse_logit_scale(ctx, &c.logit_scale, c.d_model)?,
            init_std: c.init_config.init_std.unwrap_or(0.02),
            eps: c.layer_norm_epsilon,
        }
    } else {
        let c: MosaicGptConfig = ctx.parse()?;
        if c.prefix_lm == Some(true) {
            return Err(ctx.config_error("prefix_lm = true is not supported"));
        }
        Settings {
            d_model: c.d_model,
            n_heads: c.n_heads,
            n_layers: c.n_layers,
            ratio: c.mlp_ratio,
            max_seq_len: c.max_seq_len,
            vocab_size: c.vocab_size,
            qk_ln: c.attn_qk_ln,
            clip_qkv: c.attn_clip_qkv,
            softmax_scale: c.softmax_scale,
            alibi: c.alibi,
            alibi_bias_max: c.alibi_bias_max,
            learned_pos: !c.alibi,
            no_bias: c.no_bias,
            logit_scale: parse_logit_scale(ctx, &c.logit_scale, c.d_model)?,
            init_std: c.init_std.unwrap_or(0.02),
            eps: EPS,
        }
    };
    if s.n_heads == 0 || s.d_model % s.n_heads != 0 {
        return Err(ctx.config_error(format!(
            "d_model {} is not divisible by n_heads {}",
            s.d_model, s.n_heads
        )));
    }
    Ok(s)
}

/// ALiBi slopes as llm-foundry's `gen_slopes`.
fn alibi_slopes(n_heads: usize, bias_max: f64) -> Vec<f32> {
    let n2 = n_heads.next_power_of_two();
    let slopes: Vec<f32> = (1..=n2)
        .map(|i| {
            let m = i as f32 * (bias_max / n2 as f64) as f32;
            1.0f32 / 2f32.powf(m)
        })
        .collect();
    if n2 == n_heads {
        return slopes;
    }
    let odd = slopes.iter().skip(1).step_by(2);
    let even = slopes.iter().step_by(2);
    odd.chain(even).take(n_heads).copied().collect()
}

#[derive(Debug)]
struct Block {
    norm_1: LayerNorm,
    wqkv: Linear,
    q_ln: Option<LayerNorm>,
    k_ln: Option<LayerNorm>,
    out_proj: Linear,
    norm_2: LayerNorm,
    up: Linear,
    down: Linear,
}

/// A loaded MPT / MosaicGPT body.
#[derive(Debug)]
struct Mpt {
    s: Settings,
    blocks: Vec<Block>,
    norm_f: LayerNorm,
    wpe: Option<Tensor>,
    slopes: Vec<f32>,
}

const EPS: f64 = 1e-5;

pub(crate) fn load(ctx: &LoadCtx) -> LoadResult<LoadedFamily> {
    let s = settings(ctx)?;
    let names = if ctx.family == LmFamily::Mpt {
        &MPT_NAMES
    } else {
        &MOSAIC_NAMES
    };
    let w = ctx.weights;
    let d = s.d_model;
    let bias = |name: &str, n: usize| -> LoadResult<Option<Tensor>> {
        // HF's native MPT drops every bias whatever `no_bias` says, so a bias is optional.
        if s.no_bias {
            Ok(None)
        } else {
            w.get_opt(name, &[n])
        }
    };
    let norm = |p: &str| -> LoadResult<LayerNorm> {
        Ok(LayerNorm::new(
            Some(w.get(&format!("{p}.weight"), &[d])?),
            bias(&format!("{p}.bias"), d)?,
            s.eps,
        ))
    };
    let linear = |p: &str, out: usize, inp: usize| -> LoadResult<Linear> {
        Ok(Linear::new(
            w.get(&format!("{p}.weight"), &[out, inp])?,
            bias(&format!("{p}.bias"), out)?,
        ))
    };
    // HF's native MPT (transformers >= 4.33) builds a 4·d MLP whatever `expansion_ratio` says; accept the
    // width of the stored weights when it is 4·d.
    let ffn = match ctx.family {
        LmFamily::Mpt => {
            let up = format!("transformer.blocks.0.{}.weight", names.up);
            match w.get_any_shape(&up).ok().map(|t| t.dims().to_vec()) {
                Some(dims) if dims == [4 * d, d] => 4 * d,
                _ => s.ratio * d,
            }
        }
        _ => s.ratio * d,
    };
    let mut blocks = Vec::with_capacity(s.n_layers);
    for i in 0..s.n_layers {
        let p = format!("transformer.blocks.{i}");
        blocks.push(Block {
            norm_1: norm(&format!("{p}.{}", names.norm_1))?,
            wqkv: linear(&format!("{p}.attn.Wqkv"), 3 * d, d)?,
            q_ln: if s.qk_ln {
                Some(norm(&format!("{p}.attn.q_ln"))?)
            } else {
                None
            },
            k_ln: if s.qk_ln {
                Some(norm(&format!("{p}.attn.k_ln"))?)
            } else {
                None
            },
            out_proj: linear(&format!("{p}.attn.out_proj"), d, d)?,
            norm_2: norm(&format!("{p}.{}", names.norm_2))?,
            up: linear(&format!("{p}.{}", names.up), ffn, d)?,
            down: linear(&format!("{p}.{}", names.down), d, ffn)?,
        });
    }
    let norm_f = norm(names.norm_f)?;
    let wpe = if s.learned_pos {
        Some(w.get("transformer.wpe.weight", &[s.max_seq_len, d])?)
    } else {
        None
    };
    let table = w.get_any_shape("transformer.wte.weight")?;
    if table.dim(1)? != d {
        return Err(crate::error::ModelError::Tensor {
            path: ctx.config_path.to_path_buf(),
            name: "transformer.wte.weight".into(),
            message: format!("expected width {d}, found shape {:?}", table.dims()),
        });
    }
    let config = LmConfig {
        family: ctx.family,
        hidden_size: d,
        num_layers: s.n_layers,
        num_heads: s.n_heads,
        vocab_size: s.vocab_size,
        embed_dim: d,
        initializer_range: s.init_std,
        tie_word_embeddings: true,
        head_key: None,
        config_path: ctx.config_path.to_path_buf(),
    };
    let logit_scale = s.logit_scale;
    let slopes = alibi_slopes(s.n_heads, s.alibi_bias_max);
    Ok(LoadedFamily {
        config,
        body: Box::new(Mpt {
            s,
            blocks,
            norm_f,
            wpe,
            slopes,
        }),
        table,
        head: None,
        logit_scale,
    })
}

impl FamilyBody for Mpt {
    fn embed(&self, tokens: &Tensor, ctx: &AttnCtx) -> Result<Tensor> {
        let Some(wpe) = &self.wpe else {
            return Ok(tokens.clone());
        };
        let (b, t, _) = tokens.dims3()?;
        if ctx.past_len + t > self.s.max_seq_len {
            candle_core::bail!(
                "sequence of {} positions exceeds max_seq_len {}",
                ctx.past_len + t,
                self.s.max_seq_len
            );
        }
        let pos = ctx.mpt_positions(b, t)?;
        let pos = Tensor::from_vec(pos, b * t, tokens.device())?;
        let pe = wpe.index_select(&pos, 0)?.reshape((b, t, self.s.d_model))?;
        tokens + pe
    }

    fn layer(
        &self,
        i: usize,
        x: &Tensor,
        ctx: &AttnCtx,
        cache: Option<&mut LayerCache>,
    ) -> Result<Tensor> {
        let blk = &self.blocks[i];
        let (b, t, d) = x.dims3()?;
        let h = self.s.n_heads;
        let a = blk.norm_1.forward(x)?;
        let mut qkv = blk.wqkv.forward(&a)?;
        if let Some(c) = self.s.clip_qkv {
            qkv = qkv.clamp(-c, c)?;
        }
        let mut q = qkv.narrow(2, 0, d)?;
        let mut k = qkv.narrow(2, d, d)?;
        let v = qkv.narrow(2, 2 * d, d)?;
        if let (Some(qln), Some(kln)) = (&blk.q_ln, &blk.k_ln) {
            q = qln.forward(&q)?;
            k = kln.forward(&k)?;
        }
        let q = ops::split_heads(&q, h)?;
        let k = ops::split_heads(&k, h)?;
        let v = ops::split_heads(&v, h)?;
        let (k, v) = match cache {
            Some(c) => c.append(&k, &v)?,
            None => (k, v),
        };
        let bias = if self.s.alibi {
            ctx.alibi_bias(b, t, &self.slopes)?
        } else {
            ctx.bias(b, t)?
        };
        let bias = bias.to_device(x.device())?.to_dtype(x.dtype())?;
        let scale = self
            .s
            .softmax_scale
            .unwrap_or(1.0 / ((d / h) as f64).sqrt());
        let ctx_out = ops::attention(&q, &k, &v, &bias, Scale::Scores(scale))?;
        let x = (x + blk.out_proj.forward(&ops::merge_heads(&ctx_out)?)?)?;
        let m = blk.norm_2.forward(&x)?;
        let n = blk.down.forward(&blk.up.forward(&m)?.gelu_erf()?)?;
        x + n
    }

    fn finish(&self, x: &Tensor) -> Result<Tensor> {
        self.norm_f.forward(x)
    }
}
