//! Flamingo tokenizer tests on a small word-level `tokenizer.json` written by the test.

use std::path::{Path, PathBuf};

use model::tokenizer::{BatchOptions, FlamingoTokenizer, Padding, PaddingSide};

const WORDS: [&str; 10] = [
    "<unk>", "<s>", "</s>", "<pad>", "a", "red", "cat", "sat", ".", "Output:",
];

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("model-tok-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A word-level tokenizer whose post-processor prepends `<s>` (LLaMA/OPT style).
fn write_tokenizer(dir: &Path) -> PathBuf {
    let vocab: serde_json::Map<String, serde_json::Value> = WORDS
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = WORDS[..4]
        .iter()
        .enumerate()
        .map(|(i, w)| {
            serde_json::json!({"id": i, "content": w, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    // Truncation and padding stored in the file must not leak into encoding (HF resets them per call).
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 2, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 9}, "direction": "Left", "pad_to_multiple_of": null,
            "pad_id": 0, "pad_type_id": 0, "pad_token": "<unk>"},
        "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

#[test]
fn adds_flamingo_tokens_and_pad_when_missing() {
    let dir = tmp_dir("nopad");
    let tok = FlamingoTokenizer::from_file(write_tokenizer(&dir)).unwrap();
    let n = WORDS.len() as u32;
    assert_eq!(
        (tok.eoc_id(), tok.image_id(), tok.pad_id()),
        (n, n + 1, n + 2)
    );
    assert_eq!(tok.pad_token(), "<PAD>");
    assert_eq!(tok.len(), WORDS.len() + 3);
    assert_eq!(tok.eos_id(), None);
    assert_eq!(tok.trainable_token_ids(), [n + 1, n]);
    // Special tokens are recognised inside words, as HF does for added tokens.
    let ids = tok
        .encode_with("a red cat<image>sat a<|endofchunk|>", false, None)
        .unwrap();
    assert_eq!(ids, vec![4, 5, 6, n + 1, 7, 4, n]);
    assert_eq!(tok.encode("a cat").unwrap(), vec![1, 4, 6]);
}

#[test]
fn roles_come_from_tokenizer_config() {
    let dir = tmp_dir("config");
    let path = write_tokenizer(&dir);
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": {"content": "</s>", "special": true}, "pad_token": "<pad>",
            "clean_up_tokenization_spaces": false}"#,
    )
    .unwrap();
    let tok = FlamingoTokenizer::from_file(&path).unwrap();
    assert_eq!(tok.pad_id(), 3, "an existing pad token is kept");
    assert_eq!(tok.len(), WORDS.len() + 2, "no <PAD> added");
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.eos_token()),
        (Some(1), Some(2), Some("</s>"))
    );
    // special_tokens_map.json overrides tokenizer_config.json.
    std::fs::write(dir.join("special_tokens_map.json"), r#"{"eos_token": "."}"#).unwrap();
    let tok = FlamingoTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.eos_id(), Some(8));
    assert_eq!(
        tok.decode(&[4, 6, 8], false).unwrap(),
        "a cat .",
        "clean-up disabled by config"
    );
}

#[test]
fn batches_pad_left_or_right_and_truncate() {
    let dir = tmp_dir("batch");
    let tok = FlamingoTokenizer::from_file(write_tokenizer(&dir)).unwrap();
    let pad = tok.pad_id();
    let texts = ["a red cat sat", "cat"];
    let left = tok.encode_batch(&texts, &BatchOptions::default()).unwrap();
    assert_eq!(
        left.ids,
        vec![vec![1, 4, 5, 6, 7], vec![pad, pad, pad, 1, 6]]
    );
    assert_eq!(
        left.attention_mask,
        vec![vec![1, 1, 1, 1, 1], vec![0, 0, 0, 1, 1]]
    );
    let right = tok
        .encode_batch(
            &texts,
            &BatchOptions {
                side: PaddingSide::Right,
                padding: Padding::MaxLength(6),
                add_special_tokens: false,
                max_length: None,
            },
        )
        .unwrap();
    assert_eq!(
        right.ids,
        vec![vec![4, 5, 6, 7, pad, pad], vec![6, pad, pad, pad, pad, pad]]
    );
    assert_eq!(right.attention_mask[1], vec![1, 0, 0, 0, 0, 0]);
    // Truncation counts the post-processor's tokens, keeping the start of the text.
    let cut = tok
        .encode_batch(
            &texts,
            &BatchOptions {
                max_length: Some(3),
                side: PaddingSide::Right,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(cut.ids, vec![vec![1, 4, 5], vec![1, 6, pad]]);
    let (ids, mask) = cut.to_tensors(&candle_core::Device::Cpu).unwrap();
    assert_eq!(ids.dims(), &[2, 3]);
    assert_eq!(
        mask.to_vec2::<u32>().unwrap(),
        vec![vec![1, 1, 1], vec![1, 1, 0]]
    );
    let ragged = tok
        .encode_batch(
            &texts,
            &BatchOptions {
                padding: Padding::None,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(ragged.to_tensors(&candle_core::Device::Cpu).is_err());
}

#[test]
fn decode_skips_special_tokens_and_cleans_spaces() {
    let dir = tmp_dir("decode");
    let tok = FlamingoTokenizer::from_file(write_tokenizer(&dir)).unwrap();
    let ids = tok.encode("a red cat<image>sat .<|endofchunk|>").unwrap();
    let mut padded = vec![tok.pad_id(); 2];
    padded.extend(&ids);
    assert_eq!(tok.decode(&padded, true).unwrap(), "a red cat sat.");
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        "<s> a red cat <image> sat. <|endofchunk|>"
    );
}

#[test]
fn reloading_a_flamingo_tokenizer_keeps_ids() {
    let dir = tmp_dir("reload");
    let tok = FlamingoTokenizer::from_file(write_tokenizer(&dir)).unwrap();
    let saved = dir.join("saved.json");
    tok.inner().save(&saved, false).unwrap();
    let again = FlamingoTokenizer::from_file(&saved).unwrap();
    assert_eq!(
        (again.eoc_id(), again.image_id(), again.pad_id()),
        (tok.eoc_id(), tok.image_id(), tok.pad_id())
    );
    assert_eq!(again.len(), tok.len());
}

#[test]
fn bad_files_name_the_path() {
    let dir = tmp_dir("bad");
    let missing = dir.join("tokenizer.json");
    let err = FlamingoTokenizer::from_file(&missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    std::fs::write(&missing, "{ not json").unwrap();
    let err = FlamingoTokenizer::from_file(&missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    write_tokenizer(&dir);
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": "<nope>"}"#,
    )
    .unwrap();
    let err = FlamingoTokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(
        err.contains("<nope>") && err.contains("tokenizer.json"),
        "{err}"
    );
}
