//! The Flamingo tokenizer: an HF `tokenizer.json` plus `<|endofchunk|>`, `<image>` and (when the tokenizer
//! has no pad token) `<PAD>`, added as special tokens in that order (spec §1.9), with the behaviour of HF
//! `PreTrainedTokenizerFast` for encoding, batching with left or right padding, truncation and decoding.
//!
//! Special-token roles (bos/eos/pad/unk) and `clean_up_tokenization_spaces` come, as in HF, from the
//! `tokenizer_config.json` and `special_tokens_map.json` next to `tokenizer.json` when present (the latter
//! wins); without them the tokenizer has no eos/bos and gets `<PAD>`.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tokenizers::{AddedToken, Tokenizer, TruncationDirection};

use crate::error::{ModelError, Result};

/// The end-of-chunk token that closes every text chunk following an image.
pub const END_OF_CHUNK: &str = "<|endofchunk|>";
/// The media token marking where an image occurs.
pub const IMAGE: &str = "<image>";
/// The pad token added when the tokenizer has none.
pub const PAD: &str = "<PAD>";

/// Which side padding goes on (HF `padding_side`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingSide {
    /// Pads before the tokens (generation / evaluation).
    Left,
    /// Pads after the tokens (training).
    Right,
}

/// Padding strategy of a batch (HF `padding=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// No padding: all rows must then have the same length.
    None,
    /// Pad to the longest row (`padding="longest"`).
    Longest,
    /// Pad every row to this length (`padding="max_length"`).
    MaxLength(usize),
}

/// Options of [`FlamingoTokenizer::encode_batch`].
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Whether the post-processor adds its special tokens (e.g. LLaMA's `<s>`): HF's `add_special_tokens`.
    pub add_special_tokens: bool,
    /// Padding strategy.
    pub padding: Padding,
    /// Padding side.
    pub side: PaddingSide,
    /// Truncate each row (special tokens included) to this many tokens, keeping the start.
    pub max_length: Option<usize>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            add_special_tokens: true,
            padding: Padding::Longest,
            side: PaddingSide::Left,
            max_length: None,
        }
    }
}

/// A padded batch of token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEncoding {
    /// `(B, L)` token ids.
    pub ids: Vec<Vec<u32>>,
    /// `(B, L)`: 1 for tokens, 0 for padding.
    pub attention_mask: Vec<Vec<u32>>,
}

impl BatchEncoding {
    /// The ids and mask as `(B, L)` u32 tensors; fails if rows differ in length ([`Padding::None`]).
    pub fn to_tensors(&self, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let b = self.ids.len();
        let l = self.ids.first().map_or(0, Vec::len);
        if self.ids.iter().any(|r| r.len() != l) {
            candle_core::bail!("rows of the batch differ in length: pad them first");
        }
        let ids = Tensor::from_vec(self.ids.concat(), (b, l), device)?;
        let mask = Tensor::from_vec(self.attention_mask.concat(), (b, l), device)?;
        Ok((ids, mask))
    }
}

/// An HF tokenizer with Flamingo's special tokens.
#[derive(Clone)]
pub struct FlamingoTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    eoc_id: u32,
    image_id: u32,
    pad_id: u32,
    pad_token: String,
    eos: Option<(String, u32)>,
    bos: Option<(String, u32)>,
    clean_up_spaces: bool,
}

impl std::fmt::Debug for FlamingoTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlamingoTokenizer")
            .field("path", &self.path)
            .field("len", &self.len())
            .field("eoc_id", &self.eoc_id)
            .field("image_id", &self.image_id)
            .field("pad_id", &self.pad_id)
            .field("eos", &self.eos)
            .field("bos", &self.bos)
            .finish()
    }
}

/// A special token in a tokenizer config: a string or `{"content": ...}`.
fn token_content(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(m) => m
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// Special-token roles read from the HF side files.
#[derive(Debug, Default)]
struct Roles {
    bos: Option<String>,
    eos: Option<String>,
    pad: Option<String>,
    clean_up_spaces: Option<bool>,
}

fn read_roles(dir: &Path) -> Result<Roles> {
    let mut roles = Roles::default();
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ModelError::Json {
                path: path.clone(),
                source,
            })?;
        let get = |key: &str| v.get(key).and_then(token_content);
        if let Some(t) = get("bos_token") {
            roles.bos = Some(t);
        }
        if let Some(t) = get("eos_token") {
            roles.eos = Some(t);
        }
        if let Some(t) = get("pad_token") {
            roles.pad = Some(t);
        }
        if let Some(b) = v
            .get("clean_up_tokenization_spaces")
            .and_then(|b| b.as_bool())
        {
            roles.clean_up_spaces = Some(b);
        }
    }
    Ok(roles)
}

/// HF `PreTrainedTokenizerBase.clean_up_tokenization`.
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

impl FlamingoTokenizer {
    /// Loads `tokenizer.json` (and its sibling HF config files) and adds Flamingo's special tokens.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let err = |message: String| ModelError::Tokenizer {
            path: path.clone(),
            message,
        };
        if !path.is_file() {
            return Err(ModelError::Io {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "tokenizer file not found",
                ),
            });
        }
        let mut inner = Tokenizer::from_file(&path).map_err(|e| err(e.to_string()))?;
        // Padding and truncation are per call (as HF's `__call__` resets them), never from the file.
        inner
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?;
        inner.with_padding(None);
        let roles = read_roles(path.parent().unwrap_or(Path::new(".")))?;
        inner
            .add_special_tokens([
                AddedToken::from(END_OF_CHUNK, true),
                AddedToken::from(IMAGE, true),
            ])
            .map_err(|e| err(e.to_string()))?;
        let pad_token = match roles.pad {
            Some(p) => p,
            None => {
                inner
                    .add_special_tokens([AddedToken::from(PAD, true)])
                    .map_err(|e| err(e.to_string()))?;
                PAD.to_string()
            }
        };
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| err(format!("token `{t}` is not in the vocabulary")))
        };
        let eoc_id = id(END_OF_CHUNK)?;
        let image_id = id(IMAGE)?;
        let pad_id = id(&pad_token)?;
        let eos = match roles.eos {
            Some(t) => Some((t.clone(), id(&t)?)),
            None => None,
        };
        let bos = match roles.bos {
            Some(t) => Some((t.clone(), id(&t)?)),
            None => None,
        };
        Ok(Self {
            inner,
            path,
            eoc_id,
            image_id,
            pad_id,
            pad_token,
            eos,
            bos,
            clean_up_spaces: roles.clean_up_spaces.unwrap_or(true),
        })
    }

    /// Loads `dir/tokenizer.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(dir.as_ref().join("tokenizer.json"))
    }

    /// Vocabulary size including added tokens (HF `len(tokenizer)`): the LM's embedding rows after resizing.
    pub fn len(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether the vocabulary is empty (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Id of `<|endofchunk|>`.
    pub fn eoc_id(&self) -> u32 {
        self.eoc_id
    }

    /// Id of `<image>`.
    pub fn image_id(&self) -> u32 {
        self.image_id
    }

    /// Id of the pad token (`<PAD>` unless the tokenizer had one).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The pad token string.
    pub fn pad_token(&self) -> &str {
        &self.pad_token
    }

    /// Id of the eos token, if the tokenizer config names one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos.as_ref().map(|e| e.1)
    }

    /// The eos token string, if any.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos.as_ref().map(|e| e.0.as_str())
    }

    /// Id of the bos token, if the tokenizer config names one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|b| b.1)
    }

    /// The ids whose embedding rows OpenFlamingo trains: `<image>` and `<|endofchunk|>` (never `<PAD>`).
    pub fn trainable_token_ids(&self) -> [u32; 2] {
        [self.image_id, self.eoc_id]
    }

    /// Id of a token string, if in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` tokenizer (with the added tokens).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    fn tok_err(&self, e: impl std::fmt::Display) -> ModelError {
        ModelError::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Encodes one text (HF `tokenizer(text, add_special_tokens=..., truncation=..., max_length=...)`).
    pub fn encode_with(
        &self,
        text: &str,
        add_special_tokens: bool,
        max_length: Option<usize>,
    ) -> Result<Vec<u32>> {
        let mut enc = self
            .inner
            .encode(text, false)
            .map_err(|e| self.tok_err(e))?;
        if let Some(max) = max_length {
            let added = if add_special_tokens {
                self.inner.get_post_processor().map_or(0, |p| {
                    use tokenizers::PostProcessor;
                    p.added_tokens(false)
                })
            } else {
                0
            };
            enc.truncate(max.saturating_sub(added), 0, TruncationDirection::Right);
        }
        let enc = self
            .inner
            .post_process(enc, None, add_special_tokens)
            .map_err(|e| self.tok_err(e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes one text with the post-processor's special tokens (HF default `add_special_tokens=True`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true, None)
    }

    /// Encodes a batch with truncation and padding as HF `tokenizer(texts, padding=..., truncation=True,
    /// max_length=...)` with the given `padding_side`.
    pub fn encode_batch(&self, texts: &[&str], opts: &BatchOptions) -> Result<BatchEncoding> {
        let rows: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.encode_with(t, opts.add_special_tokens, opts.max_length))
            .collect::<Result<_>>()?;
        let target = match opts.padding {
            Padding::None => None,
            Padding::Longest => Some(rows.iter().map(Vec::len).max().unwrap_or(0)),
            Padding::MaxLength(n) => Some(n),
        };
        let mut ids = Vec::with_capacity(rows.len());
        let mut mask = Vec::with_capacity(rows.len());
        for row in rows {
            let pad = target.map_or(0, |n| n.saturating_sub(row.len()));
            let ones = vec![1u32; row.len()];
            let (r, m) = match opts.side {
                PaddingSide::Left => (
                    [vec![self.pad_id; pad], row].concat(),
                    [vec![0u32; pad], ones].concat(),
                ),
                PaddingSide::Right => (
                    [row, vec![self.pad_id; pad]].concat(),
                    [ones, vec![0u32; pad]].concat(),
                ),
            };
            ids.push(r);
            mask.push(m);
        }
        Ok(BatchEncoding {
            ids,
            attention_mask: mask,
        })
    }

    /// Decodes ids as HF `decode(ids, skip_special_tokens=...)`, including `clean_up_tokenization_spaces`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = self
            .inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.tok_err(e))?;
        Ok(if self.clean_up_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }
}
