//! A small decoder LM made of trainable candle variables under HF weight names, in one of two
//! families: OPT (`OPTForCausalLM`, learned positions; the family of the paper's Table 5 OPT-125M)
//! or MPT (`MPTForCausalLM`, ALiBi; the family of OpenFlamingo-3B/9B). It is run by the model
//! crate's own implementation of the family ([`DecoderLm::from_weights`]), so that the trained
//! network and the one later loaded from disk are the same code. Saved as an HF directory:
//! `config.json` + `model.safetensors`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Init, VarMap};
use model::lm::weights::Weights;
use model::{DecoderLm, SpecialEmbeddingMode};

use super::PretrainError;
use super::init::seeded_var_builder;
use crate::config::schema::{PretrainLanguage, TinyLmFamily};

/// HF name of OPT's token embedding (also the tied output head).
pub const OPT_EMBED_KEY: &str = "model.decoder.embed_tokens.weight";
/// HF name of MPT's token embedding (also the tied output head).
pub const MPT_EMBED_KEY: &str = "transformer.wte.weight";
/// Standard deviation of initial weights (OPT's `init_std`, MPT's `init_config.init_std`).
pub const INIT_STD: f64 = 0.02;
/// HF `OPTLearnedPositionalEmbedding.offset`: rows before position 0.
const POSITION_OFFSET: usize = 2;
/// MPT's default `alibi_bias_max`: head h of H gets the slope 2^(-8h/H).
const ALIBI_BIAS_MAX: f64 = 8.0;

/// Sizes of the decoder, from `[pretrain.language]` and the trained tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderShape {
    /// Layout and position scheme.
    pub family: TinyLmFamily,
    /// Embedding rows (the tokenizer's vocabulary).
    pub vocab: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width (4 x hidden, as every OPT and MPT size).
    pub ffn: usize,
    /// `max_position_embeddings` (OPT) or `max_seq_len` (MPT).
    pub max_positions: usize,
}

impl DecoderShape {
    /// The shape a preset describes, for a tokenizer of `vocab` entries.
    pub fn new(cfg: &PretrainLanguage, vocab: usize) -> Self {
        let hidden = cfg.hidden_size.max(0) as usize;
        DecoderShape {
            family: cfg.family,
            vocab,
            hidden,
            layers: cfg.layers.max(0) as usize,
            heads: cfg.heads.max(0) as usize,
            ffn: 4 * hidden,
            max_positions: cfg.max_positions.max(0) as usize,
        }
    }

    /// HF name of the token embedding table (tied to the output head in both families).
    pub fn embed_key(&self) -> &'static str {
        match self.family {
            TinyLmFamily::Opt => OPT_EMBED_KEY,
            TinyLmFamily::Mpt => MPT_EMBED_KEY,
        }
    }

    /// The HF `config.json` of this model; `eos_id` serves as bos, eos and pad as in GPT-2-style
    /// vocabularies with a single `<|endoftext|>`.
    pub fn config_json(&self, eos_id: u32) -> serde_json::Value {
        match self.family {
            TinyLmFamily::Opt => serde_json::json!({
                "architectures": ["OPTForCausalLM"],
                "model_type": "opt",
                "vocab_size": self.vocab,
                "hidden_size": self.hidden,
                "word_embed_proj_dim": self.hidden,
                "num_hidden_layers": self.layers,
                "num_attention_heads": self.heads,
                "ffn_dim": self.ffn,
                "max_position_embeddings": self.max_positions,
                "activation_function": "relu",
                "do_layer_norm_before": true,
                "enable_bias": true,
                "layer_norm_elementwise_affine": true,
                "tie_word_embeddings": true,
                "dropout": 0.0,
                "attention_dropout": 0.0,
                "activation_dropout": 0.0,
                "layerdrop": 0.0,
                "init_std": INIT_STD,
                "bos_token_id": eos_id,
                "eos_token_id": eos_id,
                "pad_token_id": eos_id,
                "use_cache": true,
                "torch_dtype": "float32",
            }),
            // MPT-7B's layout: no biases anywhere, ALiBi instead of a position table.
            TinyLmFamily::Mpt => serde_json::json!({
                "architectures": ["MPTForCausalLM"],
                "model_type": "mpt",
                "vocab_size": self.vocab,
                "d_model": self.hidden,
                "n_layers": self.layers,
                "n_heads": self.heads,
                "expansion_ratio": self.ffn / self.hidden.max(1),
                "max_seq_len": self.max_positions,
                "no_bias": true,
                "learned_pos_emb": false,
                "norm_type": "low_precision_layernorm",
                "layer_norm_epsilon": 1e-5,
                "attn_config": {
                    "attn_type": "multihead_attention",
                    "alibi": true,
                    "alibi_bias_max": ALIBI_BIAS_MAX,
                    "qk_ln": false,
                    "clip_qkv": null,
                    "softmax_scale": null,
                    "prefix_lm": false,
                },
                "init_config": { "init_std": INIT_STD },
                "logit_scale": null,
                "tie_word_embeddings": true,
                "bos_token_id": eos_id,
                "eos_token_id": eos_id,
                "pad_token_id": eos_id,
                "use_cache": true,
                "torch_dtype": "float32",
            }),
        }
    }
}

/// The trainable decoder: its variables by HF name and the model crate's network over them.
pub struct TinyDecoder {
    /// The network (every id's embedding row is trainable, see [`TinyDecoder::new`]).
    pub lm: DecoderLm,
    /// `config.json`.
    pub config: serde_json::Value,
    /// Every trainable variable with its HF name (the embedding table under the family's key).
    pub vars: Vec<(String, Var)>,
    embed_key: &'static str,
}

/// Creates every weight of `shape` in `vb` as HF initialises the family: normal(0, `INIT_STD`)
/// matrices and embeddings, zero biases, unit LayerNorms.
fn init_weights(shape: &DecoderShape, vb: &candle_nn::VarBuilder) -> candle_core::Result<()> {
    let (d, f) = (shape.hidden, shape.ffn);
    let normal = Init::Randn {
        mean: 0.0,
        stdev: INIT_STD,
    };
    let bias = shape.family == TinyLmFamily::Opt;
    let linear = |p: &str, out: usize, inp: usize| -> candle_core::Result<()> {
        vb.get_with_hints((out, inp), &format!("{p}.weight"), normal)?;
        if bias {
            vb.get_with_hints(out, &format!("{p}.bias"), Init::Const(0.0))?;
        }
        Ok(())
    };
    let norm = |p: &str| -> candle_core::Result<()> {
        vb.get_with_hints(d, &format!("{p}.weight"), Init::Const(1.0))?;
        if bias {
            vb.get_with_hints(d, &format!("{p}.bias"), Init::Const(0.0))?;
        }
        Ok(())
    };
    vb.get_with_hints((shape.vocab, d), shape.embed_key(), normal)?;
    match shape.family {
        TinyLmFamily::Opt => {
            vb.get_with_hints(
                (shape.max_positions + POSITION_OFFSET, d),
                "model.decoder.embed_positions.weight",
                normal,
            )?;
            for i in 0..shape.layers {
                let p = format!("model.decoder.layers.{i}");
                for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    linear(&format!("{p}.self_attn.{proj}"), d, d)?;
                }
                norm(&format!("{p}.self_attn_layer_norm"))?;
                linear(&format!("{p}.fc1"), f, d)?;
                linear(&format!("{p}.fc2"), d, f)?;
                norm(&format!("{p}.final_layer_norm"))?;
            }
            norm("model.decoder.final_layer_norm")
        }
        TinyLmFamily::Mpt => {
            for i in 0..shape.layers {
                let p = format!("transformer.blocks.{i}");
                norm(&format!("{p}.norm_1"))?;
                linear(&format!("{p}.attn.Wqkv"), 3 * d, d)?;
                linear(&format!("{p}.attn.out_proj"), d, d)?;
                norm(&format!("{p}.norm_2"))?;
                linear(&format!("{p}.ffn.up_proj"), f, d)?;
                linear(&format!("{p}.ffn.down_proj"), d, f)?;
            }
            norm("transformer.norm_f")
        }
    }
}

impl TinyDecoder {
    /// A freshly initialised decoder (see [`init_weights`]), seeded by `seed`. The embedding table
    /// is handed to [`DecoderLm::from_weights`] with every id as a "special" trainable row, so the
    /// whole table is a variable and the tied head trains with it.
    pub fn new(
        shape: DecoderShape,
        eos_id: u32,
        seed: u64,
        device: &Device,
        origin: &Path,
    ) -> Result<Self, PretrainError> {
        let bad = |message: String| PretrainError::Config {
            section: "language",
            message,
        };
        if shape.hidden == 0 || shape.layers == 0 || shape.heads == 0 || shape.max_positions == 0 {
            return Err(bad(format!("sizes must be positive: {shape:?}")));
        }
        if !shape.hidden.is_multiple_of(shape.heads) {
            return Err(bad(format!(
                "`hidden_size` {} is not divisible by `heads` {}",
                shape.hidden, shape.heads
            )));
        }
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, device);
        init_weights(&shape, &vb).map_err(PretrainError::tensor("initialising the decoder"))?;
        let config = shape.config_json(eos_id);
        let mut vars = super::named_vars(&varmap, origin)?;
        let tensors: HashMap<String, Tensor> = vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let weights = Weights::from_tensors(origin, tensors, device, DType::F32);
        let all_ids: Vec<u32> = (0..shape.vocab as u32).collect();
        let lm = DecoderLm::from_weights(
            config.clone(),
            &weights,
            shape.vocab,
            SpecialEmbeddingMode::Trainable,
            &all_ids,
        )?;
        // The table the network reads is the embeddings' own variable, not the one created above.
        let table = lm.trainable_vars().into_iter().next().ok_or_else(|| {
            PretrainError::data(origin, "the decoder exposes no trainable embedding table")
        })?;
        let embed_key = shape.embed_key();
        for (name, var) in vars.iter_mut() {
            if name == embed_key {
                *var = table.clone();
            }
        }
        Ok(TinyDecoder {
            lm,
            config,
            vars,
            embed_key,
        })
    }

    /// The tensors to save under their HF names (the embedding table as the network uses it).
    pub fn state_dict(&self) -> Result<HashMap<String, Tensor>, PretrainError> {
        let mut out: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        let table = self
            .lm
            .embeddings()
            .full_table()
            .map_err(PretrainError::tensor("assembling the embedding table"))?;
        out.insert(self.embed_key.to_string(), table.detach());
        Ok(out)
    }

    /// Writes `config.json` and `model.safetensors` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), PretrainError> {
        std::fs::create_dir_all(dir).map_err(|e| PretrainError::io(dir, e))?;
        let path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&self.config)
            .map_err(|e| PretrainError::data(&path, e))?;
        std::fs::write(&path, text).map_err(|e| PretrainError::io(&path, e))?;
        let path = dir.join(model::lm::weights::SINGLE_FILE);
        super::save_safetensors_pt(&self.state_dict()?, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> DecoderShape {
        DecoderShape {
            family: TinyLmFamily::Opt,
            vocab: 40,
            hidden: 16,
            layers: 2,
            heads: 2,
            ffn: 64,
            max_positions: 32,
        }
    }

    fn assert_every_weight_gets_a_gradient(m: &TinyDecoder) -> Result<(), PretrainError> {
        let dev = Device::Cpu;
        let err = PretrainError::tensor("test");
        let ids = Tensor::new(&[[1u32, 5, 7, 9, 2, 0], [3, 3, 8, 39, 1, 4]], &dev).map_err(err)?;
        let targets = Tensor::new(&[[5u32, 7, 9, 2, 0, 6], [3, 8, 39, 1, 4, 4]], &dev)
            .map_err(PretrainError::tensor("test"))?;
        let loss = super::super::language::lm_loss(&m.lm, &ids, &targets, 0)
            .map_err(PretrainError::tensor("loss"))?;
        let grads = loss.backward().map_err(PretrainError::tensor("backward"))?;
        for (name, var) in &m.vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            let norm = g
                .sqr()
                .and_then(|s| s.sum_all())
                .and_then(|s| s.to_scalar::<f32>())
                .map_err(PretrainError::tensor("norm"))?;
            assert!(norm > 0.0, "{name}: zero gradient");
        }
        Ok(())
    }

    #[test]
    fn every_weight_gets_a_gradient_through_the_model_crate_opt() -> Result<(), PretrainError> {
        let dir = std::env::temp_dir().join("runner-tiny-opt-grad");
        let m = TinyDecoder::new(shape(), 0, 3, &Device::Cpu, &dir)?;
        // 2 layers x (4 attention + 2 mlp linears x 2 + 2 norms x 2) + positions + table + final norm x 2.
        assert_eq!(m.vars.len(), 2 * 16 + 4);
        assert_every_weight_gets_a_gradient(&m)
    }

    #[test]
    fn every_weight_gets_a_gradient_through_the_model_crate_mpt() -> Result<(), PretrainError> {
        let dir = std::env::temp_dir().join("runner-tiny-mpt-grad");
        let mpt = DecoderShape {
            family: TinyLmFamily::Mpt,
            ..shape()
        };
        let m = TinyDecoder::new(mpt, 0, 3, &Device::Cpu, &dir)?;
        // 2 layers x (Wqkv, out_proj, up, down, 2 norm weights) + table + final norm; no biases.
        assert_eq!(m.vars.len(), 2 * 6 + 2);
        assert!(m.vars.iter().all(|(n, _)| !n.ends_with(".bias")));
        assert_every_weight_gets_a_gradient(&m)
    }

    #[test]
    fn saved_weights_use_hf_names_and_the_trained_table() -> Result<(), PretrainError> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().map_err(|e| PretrainError::io(Path::new("tmp"), e))?;
        let m = TinyDecoder::new(shape(), 0, 3, &dev, dir.path())?;
        let table = m
            .vars
            .iter()
            .find(|(n, _)| n == OPT_EMBED_KEY)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| PretrainError::data(dir.path(), "no table"))?;
        table
            .set(
                &table
                    .as_tensor()
                    .ones_like()
                    .map_err(PretrainError::tensor("ones"))?,
            )
            .map_err(PretrainError::tensor("set"))?;
        let state = m.state_dict()?;
        let saved = &state[OPT_EMBED_KEY];
        let total = saved
            .sum_all()
            .and_then(|s| s.to_scalar::<f32>())
            .map_err(PretrainError::tensor("sum"))?;
        assert_eq!(
            total,
            (40 * 16) as f32,
            "the table the network uses is saved"
        );
        assert!(
            !state.contains_key("lm_head.weight"),
            "tied head is not stored"
        );
        Ok(())
    }
}
