//! A byte-level BPE tokenizer trained with the `tokenizers` crate on the synthetic corpus, saved
//! as a standard `tokenizer.json` (GPT-2 / GPT-NeoX style: byte-level pre-tokenizer and decoder,
//! `<|endoftext|>` as end of text, no BOS), so the LM directory looks like any HF model's.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, TokenizerBuilder};

/// The end-of-text token (also the LM's `eos` and `bos`).
pub const EOS: &str = "<|endoftext|>";

/// Errors of tokenizer training, naming the files.
#[derive(Debug, thiserror::Error)]
#[error("tokenizer {path}: {message}")]
pub struct TokenizerError {
    /// Corpus or output file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// Trains a BPE of `vocab_size` entries (special token and byte alphabet included) on the text
/// files and writes `out/tokenizer.json`. Deterministic for the same corpus.
pub fn train_bpe(corpus: &[&Path], vocab_size: usize, out: &Path) -> Result<(), TokenizerError> {
    let err = |path: &Path, e: &dyn std::fmt::Display| TokenizerError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(EOS, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok = TokenizerBuilder::<
        BPE,
        tokenizers::NormalizerWrapper,
        PreTokenizerWrapper,
        tokenizers::PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default())
    .with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, true, true,
    ))))
    .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())))
    .build()
    .map_err(|e| err(out, &e))?;
    let files: Vec<String> = corpus.iter().map(|p| p.display().to_string()).collect();
    for p in corpus {
        if !p.is_file() {
            return Err(err(p, &"no such corpus file"));
        }
    }
    tok.train_from_files(&mut trainer, files)
        .map_err(|e| err(corpus.first().copied().unwrap_or(out), &e))?;
    std::fs::create_dir_all(out).map_err(|e| err(out, &e))?;
    let path = out.join("tokenizer.json");
    tok.save(&path, false).map_err(|e| err(&path, &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trains_a_loadable_deterministic_bpe() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("c.txt");
        let text = "a red circle on the left. two blue squares at the top.\n".repeat(50);
        std::fs::write(&corpus, text).unwrap();
        train_bpe(&[&corpus], 300, &dir.path().join("a")).unwrap();
        train_bpe(&[&corpus], 300, &dir.path().join("b")).unwrap();
        let a = std::fs::read(dir.path().join("a/tokenizer.json")).unwrap();
        assert_eq!(
            a,
            std::fs::read(dir.path().join("b/tokenizer.json")).unwrap()
        );
        let tok = tokenizers::Tokenizer::from_file(dir.path().join("a/tokenizer.json")).unwrap();
        let enc = tok.encode("a red circle", false).unwrap();
        assert!(
            enc.get_ids().len() <= 4,
            "merges learned: {:?}",
            enc.get_tokens()
        );
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "a red circle");
        assert!(tok.token_to_id(EOS).is_some());
    }
}
