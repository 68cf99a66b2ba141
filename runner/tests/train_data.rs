//! The training data pipeline on small tar shards generated here, in the three layouts: placement
//! and filtering rules, image order, label masks token by token, skips, determinism and exact
//! resume of the data stream.
//!
//! The tokenizer is byte-level BPE without merges: every ASCII character is one token whose id
//! is its byte value; `<|endoftext|>` = 256 (eos), `<|endofchunk|>` = 257, `<image>` = 258,
//! `<PAD>` = 259. The test image transform maps an image to a `(3, 2, 2)` tensor holding its
//! top-left pixel (plus 0.01 per column, so flips are visible), which identifies each image.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use candle_core::{Device, IndexOp, Tensor};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use model::FlamingoTokenizer;
use runner::config::schema::{DataSource, SourceKind};
use runner::data::DataError;
use runner::data::assignment::linear_sum_assignment;
use runner::data::images::ImageTransform;
use runner::data::interleaved::{InterleavedOptions, place, prepare_interleaved};
use runner::data::labels::IGNORE_INDEX;
use runner::data::mix::{DataMix, MixState, SourceBatcher, SourceSpec};
use runner::data::prepared::PrepareContext;
use runner::data::skip::SkipReason;
use runner::data::webdataset::{Sample, SampleStream, StreamConfig, StreamState};
use serde_json::json;

const EOS: u32 = 256;
const EOC: u32 = 257;
const IMG: u32 = 258;
const PAD: u32 = 259;

// ---------------------------------------------------------------- fixtures

/// GPT-2's byte-to-unicode alphabet.
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        out[*b as usize] = char::from_u32(c).unwrap();
    }
    out
}

fn tokenizer(dir: &Path) -> Arc<FlamingoTokenizer> {
    let vocab: serde_json::Map<String, serde_json::Value> = byte_chars()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), json!(i)))
        .collect();
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 256, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"eos_token": "<|endoftext|>", "clean_up_tokenization_spaces": false}).to_string(),
    )
    .unwrap();
    let t = FlamingoTokenizer::from_dir(dir).unwrap();
    assert_eq!(
        (t.eos_id(), t.eoc_id(), t.image_id(), t.pad_id()),
        (Some(EOS), EOC, IMG, PAD)
    );
    Arc::new(t)
}

/// A PNG whose top-left pixel is `(id, 0, 0)`; `big` images are noise of ~15 kB (they pass the
/// MMC4 size filter), small ones are 8x8 (~100 bytes).
fn png(id: u8, big: bool) -> Vec<u8> {
    let side = if big { 72 } else { 8 };
    let mut state = u64::from(id) * 0x9E37_79B9 + 1;
    let img = RgbImage::from_fn(side, side, |x, y| {
        if x == 0 && y == 0 {
            Rgb([id, 0, 0])
        } else if big {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let v = (state >> 40).to_le_bytes();
            Rgb([v[0], v[1], v[2]])
        } else {
            Rgb([id, id, id])
        }
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn transform() -> ImageTransform {
    ImageTransform::new(2, |img| {
        let p = img.to_rgb8().get_pixel(0, 0).0;
        let mut data = vec![0f32; 12];
        for c in 0..3 {
            for y in 0..2 {
                for x in 0..2 {
                    data[c * 4 + y * 2 + x] = f32::from(p[c]) / 255.0 + 0.01 * x as f32;
                }
            }
        }
        Tensor::from_vec(data, (3, 2, 2), &Device::Cpu)
    })
}

/// The image id held in slot `k` of row `b` (0 for a zero-padded slot).
fn image_id(images: &Tensor, b: usize, k: usize) -> u32 {
    let row: Vec<f32> = images.i((b, k, 0, 0)).unwrap().to_vec1().unwrap();
    let s = row[0] + row[1];
    if s == 0.0 {
        0
    } else {
        ((s - 0.01) * 255.0 / 2.0).round() as u32
    }
}

fn write_tar(path: &Path, members: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.finish().unwrap();
}

fn json_member(key: &str, doc: serde_json::Value) -> (String, Vec<u8>) {
    (format!("{key}.json"), doc.to_string().into_bytes())
}

fn source(kind: SourceKind, shards: &str, batch_size: i64) -> DataSource {
    DataSource {
        kind,
        shards: shards.into(),
        batch_size,
        loss_weight: 1.0,
        max_tokens: None,
        sim_threshold: 0.24,
        max_images: 6,
        resample: false,
        shuffle_buffer: 1,
        no_loss_spans: Vec::new(),
    }
}

fn batcher(dir: &Path, src: DataSource, seed: u64, tok: &Arc<FlamingoTokenizer>) -> SourceBatcher {
    let spec = SourceSpec::from_config(&[src], 0, seed, dir).unwrap();
    SourceBatcher::new(spec, tok.clone(), transform().with_hflip(false)).unwrap()
}

/// Expected ids and labels of a sequence of segments: text (one token per byte), specials.
enum Seg<'a> {
    T(&'a str, bool),
    Img,
    Eoc(bool),
    Eos(bool),
    Pad(usize),
}

fn expected(segs: &[Seg]) -> (Vec<u32>, Vec<i64>) {
    let (mut ids, mut labels) = (Vec::new(), Vec::new());
    let mut push = |id: u32, trained: bool| {
        ids.push(id);
        labels.push(if trained { i64::from(id) } else { IGNORE_INDEX });
    };
    for s in segs {
        match *s {
            Seg::T(t, tr) => t.bytes().for_each(|b| push(u32::from(b), tr)),
            Seg::Img => push(IMG, false),
            Seg::Eoc(tr) => push(EOC, tr),
            Seg::Eos(tr) => push(EOS, tr),
            Seg::Pad(n) => (0..n).for_each(|_| push(PAD, false)),
        }
    }
    (ids, labels)
}

fn row_u32(t: &Tensor, b: usize) -> Vec<u32> {
    t.i(b).unwrap().to_vec1().unwrap()
}
fn row_i64(t: &Tensor, b: usize) -> Vec<i64> {
    t.i(b).unwrap().to_vec1().unwrap()
}

/// The MMC4 document of the placement tests: 5 images, 5 sentences.
/// image 0 -> sentence 2 (0.30), image 1 -> sentence 1 (0.35): a non-monotone assignment;
/// image 2 is under 11 kB (filtered, though it matches sentence 4 at 0.9); image 3's best
/// remaining match is below 0.24; image 4 has no `image_base64`.
fn mmc4_doc() -> serde_json::Value {
    json!({
        "text_list": ["Intro line.", "A red cat.", "A blue dog.", "Some filler.", "A green tree."],
        "image_info": [
            {"image_name": "a.jpg", "image_base64": b64(&png(10, true))},
            {"image_name": "b.jpg", "image_base64": b64(&png(20, true))},
            {"image_name": "c.jpg", "image_base64": b64(&png(30, false))},
            {"image_name": "d.jpg", "image_base64": b64(&png(40, true))},
            {"image_name": "e.jpg"}
        ],
        "similarity_matrix": [
            [0.10, 0.20, 0.30, 0.05, 0.10],
            [0.10, 0.35, 0.25, 0.05, 0.10],
            [0.10, 0.10, 0.10, 0.10, 0.90],
            [0.05, 0.21, 0.20, 0.22, 0.23],
            [0.90, 0.90, 0.90, 0.90, 0.90]
        ]
    })
}

// ---------------------------------------------------------------- assignment

#[test]
fn assignment_matches_scipy_fixture() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lsap.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 100);
    for (n, c) in cases.iter().enumerate() {
        let rows = c["rows"].as_u64().unwrap() as usize;
        let cols = c["cols"].as_u64().unwrap() as usize;
        let cost: Vec<f64> = c["cost"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let want: Vec<(usize, usize)> = c["row"]
            .as_array()
            .unwrap()
            .iter()
            .zip(c["col"].as_array().unwrap())
            .map(|(r, c)| (r.as_u64().unwrap() as usize, c.as_u64().unwrap() as usize))
            .collect();
        assert_eq!(
            linear_sum_assignment(&cost, rows, cols).unwrap(),
            want,
            "case {n}: {rows}x{cols} {cost:?}"
        );
    }
}

// ---------------------------------------------------------------- interleaved

#[test]
fn interleaved_placement_text_order_and_masks() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let doc = mmc4_doc();

    // Placement alone: text and image order (sentence order, not image order).
    let placement = place(
        doc.as_object().unwrap(),
        &InterleavedOptions::default(),
        "<|endoftext|>",
    )
    .unwrap();
    assert_eq!(
        placement.text,
        "Intro line.<image>A red cat.<|endofchunk|><image>A blue dog. Some filler. A green tree.\
         <|endofchunk|><|endoftext|>"
    );
    assert_eq!(
        placement.image_indices,
        vec![1, 0],
        "k-th image = image of k-th <image>"
    );

    // Through a shard and the batcher: tokens, labels token by token, images. A one-row batch is
    // its own longest row, so there is no padding (the reference's pads to 256 are masked anyway).
    write_tar(&dir.path().join("mmc4-0.tar"), &[json_member("doc0", doc)]);
    let mut b = batcher(
        dir.path(),
        source(SourceKind::Interleaved, "mmc4-{0..0}.tar", 1),
        1,
        &tok,
    );
    let batch = b.next_batch().unwrap();
    let body = "A blue dog. Some filler. A green tree.";
    let used = 11 + 1 + 10 + 1 + 1 + body.len() + 1 + 1;
    let (ids, labels) = expected(&[
        Seg::T("Intro line.", false),
        Seg::Img,
        Seg::T("A red cat.", true),
        Seg::Eoc(true),
        Seg::Img,
        Seg::T(body, true),
        Seg::Eoc(true),
        Seg::Eos(false),
    ]);
    assert_eq!(batch.input_ids.dims(), &[1, used]);
    assert_eq!(row_u32(&batch.input_ids, 0), ids);
    assert_eq!(row_i64(&batch.labels, 0), labels);
    let mask = row_u32(&batch.attention_mask, 0);
    assert_eq!(mask.iter().filter(|&&m| m == 1).count(), used);
    assert!(mask[..used].iter().all(|&m| m == 1));
    // Two real images: the batch keeps two slots, not `max_images` (6).
    assert_eq!(batch.images.dims(), &[1, 2, 3, 2, 2]);
    assert_eq!(batch.image_counts, vec![2]);
    let order: Vec<u32> = (0..2).map(|k| image_id(&batch.images, 0, k)).collect();
    assert_eq!(order, vec![20, 10]);
    assert_eq!(
        tok.decode(&ids[..used], false).unwrap(),
        "Intro line.<image>A red cat.<|endofchunk|><image>A blue dog. Some filler. A green tree.\
         <|endofchunk|><|endoftext|>"
    );
}

#[test]
fn interleaved_threshold_and_max_images() {
    let doc = mmc4_doc();
    let doc = doc.as_object().unwrap();
    // A threshold above every surviving pair rejects the document.
    let strict = InterleavedOptions {
        sim_threshold: 0.4,
        ..InterleavedOptions::default()
    };
    assert_eq!(
        place(doc, &strict, "E").unwrap_err().reason,
        SkipReason::BelowThreshold
    );
    // At 0.2, image 3 (assigned sentence 4 at 0.23) is kept too.
    let loose = InterleavedOptions {
        sim_threshold: 0.2,
        ..InterleavedOptions::default()
    };
    let p = place(doc, &loose, "E").unwrap();
    assert_eq!(p.image_indices, vec![1, 0, 3]);
    assert_eq!(
        p.text,
        "Intro line.<image>A red cat.<|endofchunk|><image>A blue dog. Some filler.\
         <|endofchunk|><image>A green tree.<|endofchunk|>E"
    );

    // Eight matched images with max 3: the first 3 by image index, ordered by sentence.
    let n = 8;
    let sentences: Vec<String> = (0..n).map(|i| format!("S{i}.")).collect();
    // image i matches sentence (n-1-i): a fully reversed assignment.
    let sim: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|s| if s == n - 1 - i { 0.5 } else { 0.0 })
                .collect()
        })
        .collect();
    let info: Vec<serde_json::Value> = (0..n)
        .map(|i| json!({"image_base64": b64(&png(i as u8 + 1, true))}))
        .collect();
    let doc = json!({"text_list": sentences, "image_info": info, "similarity_matrix": sim});
    let opts = InterleavedOptions {
        max_images: 3,
        ..InterleavedOptions::default()
    };
    let p = place(doc.as_object().unwrap(), &opts, "E").unwrap();
    assert_eq!(p.image_indices, vec![2, 1, 0]);
    assert_eq!(
        p.text,
        "S0. S1. S2. S3. S4.<image>S5.<|endofchunk|><image>S6.<|endofchunk|><image>S7.<|endofchunk|>E"
    );
}

#[test]
fn single_image_rejection_is_seeded_and_trailing_image_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let img = b64(&png(5, true));
    let members: Vec<(String, Vec<u8>)> = (0..120)
        .map(|i| {
            json_member(
                &format!("d{i:03}"),
                json!({"text_list": ["Hello.", "A cat."], "image_info": [{"image_base64": img}],
                       "similarity_matrix": [[0.1, 0.5]]}),
            )
        })
        .collect();
    write_tar(&dir.path().join("single.tar"), &members);
    let run = |seed: u64| {
        let mut b = batcher(
            dir.path(),
            source(SourceKind::Interleaved, "single.tar", 1),
            seed,
            &tok,
        );
        let keys: Vec<String> = (0..40)
            .map(|_| b.next_batch().unwrap().keys[0].clone())
            .collect();
        (keys, b.skip_counts().get(SkipReason::SingleImage))
    };
    let (k1, s1) = run(3);
    let (k2, s2) = run(3);
    let (k3, _) = run(4);
    assert_eq!((&k1, s1), (&k2, s2), "same seed, same rejections");
    assert_ne!(k1, k3, "another seed rejects other documents");
    // 40 accepted out of 40 + s1 tried: rate near 0.5.
    let rate = s1 as f64 / (40 + s1) as f64;
    assert!((0.3..0.7).contains(&rate), "rejection rate {rate}");

    // The only <image> as the very last token: rejected even when the draw keeps single images.
    let doc = json!({"text_list": ["x".repeat(19), "A cat."], "image_info": [{"image_base64": img}],
                     "similarity_matrix": [[0.1, 0.5]]});
    let sample = Sample {
        key: "t".into(),
        fields: [("json".to_string(), doc.to_string().into_bytes())].into(),
    };
    let tr = transform();
    let mut ctx = PrepareContext {
        tokenizer: &tok,
        eos: "<|endoftext|>",
        transform: &tr,
        max_tokens: 20,
    };
    let opts = InterleavedOptions::default();
    let err = prepare_interleaved(&sample, &ctx, &opts, 0.9, false).unwrap_err();
    assert_eq!(err.reason, SkipReason::TrailingImage);
    // With one more token of budget it is kept (draw 0.9 > 0.5) ...
    ctx.max_tokens = 21;
    let p = prepare_interleaved(&sample, &ctx, &opts, 0.9, false).unwrap();
    assert_eq!(p.ids.len(), 21);
    // ... and a draw <= 0.5 rejects it.
    assert_eq!(
        prepare_interleaved(&sample, &ctx, &opts, 0.5, false)
            .unwrap_err()
            .reason,
        SkipReason::SingleImage
    );
    // Truncation that removes every <image> token.
    ctx.max_tokens = 10;
    assert_eq!(
        prepare_interleaved(&sample, &ctx, &opts, 0.9, false)
            .unwrap_err()
            .reason,
        SkipReason::TooFewImageTokens
    );
}

// ---------------------------------------------------------------- pairs

#[test]
fn pairs_text_truncation_padding_masks_and_skips() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let long = "y".repeat(40);
    write_tar(
        &dir.path().join("laion.tar"),
        &[
            ("p0.jpg".into(), png(11, false)), // a PNG under a .jpg name: decoded by content
            ("p0.txt".into(), b"  A cat.\n".to_vec()),
            ("p1.png".into(), png(12, false)),
            ("p1.txt".into(), long.clone().into_bytes()),
            ("p2.jpg".into(), b"not an image".to_vec()),
            ("p2.txt".into(), b"bad".to_vec()),
            ("p3.txt".into(), b"no image".to_vec()),
            ("p4.jpeg".into(), png(14, false)),
            ("p4.txt".into(), vec![0xff, 0xfe]),
            ("p5.jpeg".into(), png(15, false)),
            ("p5.txt".into(), b"Dog".to_vec()),
        ],
    );
    let mut b = batcher(
        dir.path(),
        source(SourceKind::Pairs, "laion.tar", 3),
        0,
        &tok,
    );
    let batch = b.next_batch().unwrap();
    assert_eq!(batch.keys, vec!["p0", "p1", "p5"]);
    // Padded to the longest row: p1 truncated to 32 tokens (eoc and eos cut off).
    assert_eq!(batch.input_ids.dims(), &[3, 32]);
    let (ids0, lab0) = expected(&[
        Seg::Img,
        Seg::T("A cat.", true),
        Seg::Eoc(true),
        Seg::Eos(true),
        Seg::Pad(32 - 9),
    ]);
    assert_eq!(row_u32(&batch.input_ids, 0), ids0);
    assert_eq!(row_i64(&batch.labels, 0), lab0);
    let (ids1, lab1) = expected(&[Seg::Img, Seg::T(&long[..31], true)]);
    assert_eq!(row_u32(&batch.input_ids, 1), ids1);
    assert_eq!(row_i64(&batch.labels, 1), lab1);
    let (ids2, lab2) = expected(&[
        Seg::Img,
        Seg::T("Dog", true),
        Seg::Eoc(true),
        Seg::Eos(true),
        Seg::Pad(32 - 6),
    ]);
    assert_eq!(row_u32(&batch.input_ids, 2), ids2);
    assert_eq!(row_i64(&batch.labels, 2), lab2);
    assert_eq!(batch.images.dims(), &[3, 1, 3, 2, 2]);
    assert_eq!(
        (0..3)
            .map(|r| image_id(&batch.images, r, 0))
            .collect::<Vec<_>>(),
        vec![11, 12, 15]
    );
    assert_eq!(batch.tokens, 9 + 32 + 6);
    let c = b.skip_counts();
    assert_eq!(c.get(SkipReason::BadImage), 1);
    assert_eq!(c.get(SkipReason::MissingField), 1);
    assert_eq!(c.get(SkipReason::BadText), 1);
    assert_eq!(c.total(), 3);
}

#[test]
fn pairs_flip_is_one_decision_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let members: Vec<(String, Vec<u8>)> = (0..8u8)
        .flat_map(|i| {
            [
                (format!("k{i}.png"), png(i + 1, false)),
                (format!("k{i}.txt"), b"c".to_vec()),
            ]
        })
        .collect();
    write_tar(&dir.path().join("f.tar"), &members);
    let spec = SourceSpec::from_config(&[source(SourceKind::Pairs, "f.tar", 2)], 0, 9, dir.path())
        .unwrap();
    let mut b = SourceBatcher::new(spec, tok.clone(), transform()).unwrap();
    let mut flips = Vec::new();
    for _ in 0..8 {
        let batch = b.next_batch().unwrap();
        // Column 0 of an unflipped image holds pixel/255, column 1 pixel/255 + 0.01.
        let per_row: Vec<bool> = (0..2)
            .map(|r| {
                let v: Vec<f32> = batch.images.i((r, 0, 0, 0)).unwrap().to_vec1().unwrap();
                v[0] > v[1]
            })
            .collect();
        assert_eq!(per_row[0], per_row[1], "both rows flip together");
        flips.push(per_row[0]);
    }
    assert!(flips.contains(&true) && flips.contains(&false), "{flips:?}");
}

// ---------------------------------------------------------------- sequences

/// A ChatGPT-layout `image_map`: `_!_IMAGE<k>_!_` is a small PNG with id `ids[k - 1]`.
fn image_map(ids: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            (
                format!("_!_IMAGE{}_!_", i + 1),
                json!({"base64_image": b64(&png(id, false))}),
            )
        })
        .collect()
}

#[test]
fn sequences_layout_with_its_quirks() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let imgs = image_map(&[10, 20, 30]);
    let good = json!({"is_gpt": true,
        "example": "Look. _!_IMAGE1_!_ A cat. _!_IMAGE2_!_ A dog. _!_IMAGE3_!_ A cow.",
        "image_map": imgs});
    let missing = json!({"example": "_!_IMAGE1_!_ x", "image_map": {"_!_IMAGE2_!_": {"base64_image": "AAAA"}}});
    write_tar(
        &dir.path().join("gpt.tar"),
        &[
            json_member("s0", good.clone()),
            ("s1.json".into(), b"{not json".to_vec()),
            json_member("s2", missing),
            json_member("s3", json!({"example": 5, "image_map": {}})),
            json_member("s4", good),
        ],
    );
    let mut src = source(SourceKind::Sequences, "gpt.tar", 2);
    src.max_images = 2;
    let mut b = batcher(dir.path(), src, 0, &tok);
    let batch = b.next_batch().unwrap();
    assert_eq!(batch.keys, vec!["s0", "s4"]);
    // Three images with max 2: text cut before the 2nd <image> (one <image> token left), while
    // the first two images stay in the tensor (reference quirk).
    let used = 5 + 1 + 6 + 1 + 1 + 1;
    let (ids, labels) = expected(&[
        Seg::T("Look.", false),
        Seg::Img,
        Seg::T("A cat.", true),
        Seg::Eoc(true),
        Seg::Eoc(false),
        Seg::Eos(false),
    ]);
    // "Look.<image>A cat.<|endofchunk|>" + "<|endofchunk|><|endoftext|>": the first eoc closes
    // the chunk (trained), the second follows an eoc (masked).
    assert_eq!(
        tok.decode(&row_u32(&batch.input_ids, 0)[..used], false)
            .unwrap(),
        "Look.<image>A cat.<|endofchunk|><|endofchunk|><|endoftext|>"
    );
    assert_eq!(row_u32(&batch.input_ids, 0), ids);
    assert_eq!(row_i64(&batch.labels, 0), labels);
    assert_eq!(batch.images.dims(), &[2, 2, 3, 2, 2]);
    assert_eq!(batch.image_counts, vec![2, 2]);
    assert_eq!(
        (image_id(&batch.images, 0, 0), image_id(&batch.images, 0, 1)),
        (10, 20)
    );
    let c = b.skip_counts();
    assert_eq!(c.get(SkipReason::BadJson), 1);
    assert_eq!(c.get(SkipReason::MissingField), 1);
    assert_eq!(c.get(SkipReason::WrongType), 1);
}

#[test]
fn no_loss_spans_mask_questions_and_keep_answers_and_captions() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let imgs = image_map(&[1, 2]);
    let doc = json!({"example": "_!_IMAGE1_!_ Question:Red? Short answer:yes _!_IMAGE2_!_ Output:A cat.",
        "image_map": imgs});
    write_tar(&dir.path().join("gpt.tar"), &[json_member("s0", doc)]);
    let mut src = source(SourceKind::Sequences, "gpt.tar", 1);
    src.no_loss_spans = vec![["Question:".into(), " Short answer:".into()]];
    let mut b = batcher(dir.path(), src, 0, &tok);
    let batch = b.next_batch().unwrap();
    let (ids, labels) = expected(&[
        Seg::Img,
        Seg::T("Question:Red? Short answer:", false),
        Seg::T("yes", true),
        Seg::Eoc(true),
        Seg::Img,
        Seg::T("Output:A cat.", true),
        Seg::Eoc(true),
        Seg::Eos(false),
    ]);
    assert_eq!(row_u32(&batch.input_ids, 0), ids);
    assert_eq!(row_i64(&batch.labels, 0), labels);

    let mut bad = source(SourceKind::Sequences, "gpt.tar", 1);
    bad.no_loss_spans = vec![["Question:".into(), String::new()]];
    let err = SourceSpec::from_config(&[bad], 0, 0, dir.path()).unwrap_err();
    assert!(err.to_string().contains("no_loss_spans[0]"), "{err}");
}

// ---------------------------------------------------------------- corrupt interleaved samples

#[test]
fn interleaved_corrupt_samples_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let big = b64(&png(7, true));
    let ok = json!({"text_list": ["A.", "B."], "image_info": [{"image_base64": big}, {"image_base64": big}],
                    "similarity_matrix": [[0.9, 0.1], [0.1, 0.9]]});
    let mut garbage = vec![0u8; 12_000];
    garbage[0] = 0x89;
    write_tar(
        &dir.path().join("c.tar"),
        &[
            ("a.json".into(), b"[1, 2".to_vec()), // bad JSON
            json_member(
                "b",
                json!({"text_list": "x", "image_info": [], "similarity_matrix": []}),
            ), // wrong type
            json_member(
                "c",
                json!({"text_list": ["x"], "image_info": [{"image_base64": "@@"}],
                                    "similarity_matrix": [[0.5]]}),
            ), // bad base64
            json_member(
                "d",
                json!({"text_list": ["x"], "image_info": [{"image_base64": b64(&garbage)}],
                                    "similarity_matrix": [[0.5]]}),
            ), // bad image bytes
            json_member("e", json!({"image_info": [], "similarity_matrix": []})), // missing key
            json_member(
                "f",
                json!({"text_list": ["x"], "image_info": [{"image_base64": b64(&png(1, false))}],
                                    "similarity_matrix": [[0.5]]}),
            ), // too small
            json_member(
                "g",
                json!({"text_list": ["x", "y"], "image_info": [{"image_base64": big}],
                                    "similarity_matrix": [[0.5], [0.5, 0.1]]}),
            ), // ragged
            ("h.txt".into(), b"no json member".to_vec()), // missing member
            json_member("ok", ok),
        ],
    );
    let mut b = batcher(
        dir.path(),
        source(SourceKind::Interleaved, "c.tar", 1),
        0,
        &tok,
    );
    let batch = b.next_batch().unwrap();
    assert_eq!(batch.keys, vec!["ok"]);
    let c = b.skip_counts();
    assert_eq!(c.get(SkipReason::BadJson), 1);
    assert_eq!(c.get(SkipReason::WrongType), 2);
    assert_eq!(c.get(SkipReason::BadImage), 2);
    assert_eq!(c.get(SkipReason::MissingField), 2);
    assert_eq!(c.get(SkipReason::NoImages), 1);
    assert_eq!(c.total(), 8);
}

#[test]
fn unopenable_shard_is_an_error_naming_it_and_broken_tar_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let spec = SourceSpec::from_config(
        &[source(SourceKind::Pairs, "missing-{0..1}.tar", 1)],
        0,
        0,
        dir.path(),
    )
    .unwrap();
    let mut b = SourceBatcher::new(spec, tok.clone(), transform()).unwrap();
    match b.next_batch() {
        Err(e @ DataError::ShardOpen { .. }) => {
            assert!(e.to_string().contains("missing-"), "{e}")
        }
        other => panic!("expected ShardOpen, got {other:?}"),
    }

    // A shard cut in the middle of a member: its readable samples are used, the rest counted.
    let members: Vec<(String, Vec<u8>)> = (0..4u8)
        .flat_map(|i| {
            [
                (format!("k{i}.png"), png(i + 1, false)),
                (format!("k{i}.txt"), b"c".to_vec()),
            ]
        })
        .collect();
    write_tar(&dir.path().join("whole.tar"), &members);
    let bytes = std::fs::read(dir.path().join("whole.tar")).unwrap();
    std::fs::write(dir.path().join("cut.tar"), &bytes[..bytes.len() / 2 + 100]).unwrap();
    let mut b = batcher(dir.path(), source(SourceKind::Pairs, "cut.tar", 1), 0, &tok);
    let keys: Vec<String> = (0..6)
        .map(|_| b.next_batch().unwrap().keys[0].clone())
        .collect();
    assert_eq!(keys[..2], ["k0", "k1"]);
    assert!(b.skip_counts().get(SkipReason::BadTar) >= 2);
}

// ---------------------------------------------------------------- stream determinism and resume

fn pair_shards(dir: &Path, shards: usize, per_shard: usize) -> String {
    for s in 0..shards {
        let members: Vec<(String, Vec<u8>)> = (0..per_shard)
            .flat_map(|i| {
                [
                    (
                        format!("s{s}_{i:02}.png"),
                        png((s * per_shard + i) as u8 + 1, false),
                    ),
                    (
                        format!("s{s}_{i:02}.txt"),
                        format!("caption {s} {i}").into_bytes(),
                    ),
                ]
            })
            .collect();
        write_tar(&dir.join(format!("p-{s}.tar")), &members);
    }
    format!("p-{{0..{}}}.tar", shards - 1)
}

fn stream(
    dir: &Path,
    pattern: &str,
    n_shards: usize,
    resample: bool,
    buffer: usize,
    seed: u64,
) -> SampleStream {
    let shards: Vec<PathBuf> = (0..n_shards)
        .map(|s| dir.join(format!("p-{s}.tar")))
        .collect();
    SampleStream::new(StreamConfig {
        pattern: pattern.into(),
        shards,
        resample,
        shuffle_buffer: buffer,
        seed,
    })
    .unwrap()
}

fn take_keys(s: &mut SampleStream, n: usize) -> Vec<String> {
    let mut broken = 0;
    (0..n)
        .map(|_| s.next_item(&mut broken).unwrap().sample.key)
        .collect()
}

#[test]
fn shard_order_and_shuffle_are_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = pair_shards(dir.path(), 3, 10);
    for resample in [false, true] {
        let a = take_keys(&mut stream(dir.path(), &pattern, 3, resample, 7, 1), 60);
        let b = take_keys(&mut stream(dir.path(), &pattern, 3, resample, 7, 1), 60);
        let c = take_keys(&mut stream(dir.path(), &pattern, 3, resample, 7, 2), 60);
        assert_eq!(a, b, "resample={resample}: same seed, same stream");
        assert_ne!(a, c, "resample={resample}: other seed, other stream");
    }
    // Shuffled epochs without a buffer: each epoch is every sample exactly once, shard by shard,
    // in a fresh shard order.
    let keys = take_keys(&mut stream(dir.path(), &pattern, 3, false, 1, 5), 90);
    let mut epochs = Vec::new();
    for e in 0..3 {
        let mut ep: Vec<String> = keys[e * 30..(e + 1) * 30].to_vec();
        let order: Vec<String> = ep.chunks(10).map(|c| c[0][..2].to_string()).collect();
        ep.sort();
        ep.dedup();
        assert_eq!(ep.len(), 30, "epoch {e} visits every sample once");
        epochs.push(order);
    }
    assert!(epochs.windows(2).any(|w| w[0] != w[1]), "{epochs:?}");
    // Resampling draws shards with replacement: some shard repeats within 3 shard visits over
    // 10 draws of 3.
    let keys = take_keys(&mut stream(dir.path(), &pattern, 3, true, 1, 5), 300);
    let visits: Vec<String> = keys.chunks(10).map(|c| c[0][..2].to_string()).collect();
    assert!(visits.chunks(3).any(|w| {
        let mut w = w.to_vec();
        w.sort();
        w.dedup();
        w.len() < 3
    }));
}

#[test]
fn stream_state_restores_the_same_following_samples() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = pair_shards(dir.path(), 3, 10);
    for (resample, buffer) in [(false, 1), (false, 8), (true, 5)] {
        for k in [0, 3, 17, 31] {
            let mut a = stream(dir.path(), &pattern, 3, resample, buffer, 11);
            take_keys(&mut a, k);
            let saved = serde_json::to_string(&a.state()).unwrap();
            let want = take_keys(&mut a, 45);
            let mut b = stream(dir.path(), &pattern, 3, resample, buffer, 11);
            let state: StreamState = serde_json::from_str(&saved).unwrap();
            b.restore(&state, "pairs").unwrap();
            assert_eq!(
                take_keys(&mut b, 45),
                want,
                "resample={resample} buffer={buffer} k={k}"
            );
        }
    }
    // A state for other shards or another seed is refused.
    let a = stream(dir.path(), &pattern, 3, false, 4, 11);
    let mut other = stream(dir.path(), &pattern, 2, false, 4, 11);
    assert!(matches!(
        other.restore(&a.state(), "pairs"),
        Err(DataError::State { .. })
    ));
    let mut other_seed = stream(dir.path(), &pattern, 3, false, 4, 12);
    assert!(other_seed.restore(&a.state(), "pairs").is_err());
}

/// Two sources: interleaved (resampled, single-image rejection and a corrupt doc per shard) and
/// pairs (shuffled epochs, buffer 6).
fn mix_config(dir: &Path) -> Vec<DataSource> {
    let pattern = pair_shards(dir, 3, 10);
    // Interleaved shards: documents with 1 or 2 images (single-image rejection in play) and a
    // corrupt one per shard.
    let big: Vec<String> = (0..4).map(|i| b64(&png(100 + i, true))).collect();
    for s in 0..2 {
        let mut members = Vec::new();
        for i in 0..6 {
            let two = (s + i) % 2 == 0;
            let n = if two { 2 } else { 1 };
            let info: Vec<_> = (0..n)
                .map(|j| json!({"image_base64": big[(i + j) % 4]}))
                .collect();
            let sim: Vec<Vec<f64>> = (0..n)
                .map(|j| (0..3).map(|t| if t == 2 - j { 0.5 } else { 0.0 }).collect())
                .collect();
            members.push(json_member(
                &format!("m{s}_{i}"),
                json!({"text_list": ["One.", "Two.", "Three."], "image_info": info, "similarity_matrix": sim}),
            ));
        }
        members.push((format!("m{s}_bad.json"), b"{".to_vec()));
        write_tar(&dir.join(format!("m-{s}.tar")), &members);
    }
    let mut pairs = source(SourceKind::Pairs, &pattern, 4);
    pairs.shuffle_buffer = 6;
    pairs.loss_weight = 0.2;
    let mut inter = source(SourceKind::Interleaved, "m-{0..1}.tar", 2);
    inter.shuffle_buffer = 3;
    inter.resample = true;
    vec![inter, pairs]
}

#[test]
fn mix_state_resumes_batches_and_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let cfg = mix_config(dir.path());
    let build = || DataMix::new(&cfg, 42, dir.path(), tok.clone(), transform()).unwrap();

    let mut a = build();
    for _ in 0..3 {
        a.next_step().unwrap();
    }
    let saved = serde_json::to_string(&a.state()).unwrap();
    let want: Vec<_> = (0..4).map(|_| a.next_step().unwrap()).collect();
    let mut b = build();
    b.restore(&serde_json::from_str::<MixState>(&saved).unwrap())
        .unwrap();
    for (step, w) in want.iter().enumerate() {
        let got = b.next_step().unwrap();
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(w) {
            assert_eq!(
                (g.source.as_str(), g.loss_weight),
                (w.source.as_str(), w.loss_weight)
            );
            assert_eq!(g.keys, w.keys, "step {step} {}", g.source);
            for (x, y) in [
                (&g.input_ids, &w.input_ids),
                (&g.attention_mask, &w.attention_mask),
            ] {
                assert_eq!(x.to_vec2::<u32>().unwrap(), y.to_vec2::<u32>().unwrap());
            }
            assert_eq!(
                g.labels.to_vec2::<i64>().unwrap(),
                w.labels.to_vec2::<i64>().unwrap()
            );
            let diff = (&g.images - &w.images)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        }
    }
    assert_eq!(a.skip_counts(), b.skip_counts());
    let names: Vec<String> = a.skip_counts().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["interleaved", "pairs"]);
    let inter_skips = &a.skip_counts()[0].1;
    assert!(inter_skips.get(SkipReason::BadJson) > 0);
    assert!(inter_skips.get(SkipReason::SingleImage) > 0);
}

// ---------------------------------------------------------------- throughput (by hand)

/// Pipeline throughput with the real CLIP preprocessing (224 px, PIL-exact bicubic) on 320x240
/// JPEG images: `cargo test -p runner --test train_data -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput_with_clip_preprocessing() {
    use model::preprocess::ImageProcessor;
    use model::vision::{OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let jpeg = |id: u8| {
        let mut state = u64::from(id) + 7;
        let img = RgbImage::from_fn(320, 240, |x, y| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let n = (state >> 59) as u8;
            Rgb([
                (x as u8).wrapping_add(n),
                (y as u8).wrapping_add(id),
                n.wrapping_mul(9),
            ])
        });
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img)
            .write_to(&mut out, ImageFormat::Jpeg)
            .unwrap();
        out.into_inner()
    };
    let imgs: Vec<Vec<u8>> = (0..8).map(jpeg).collect();
    assert!(imgs.iter().all(|b| b.len() >= 11_000), "{}", imgs[0].len());
    let sentence = "The quick brown fox jumps over the lazy dog near the river bank.";
    let docs: Vec<(String, Vec<u8>)> = (0..48)
        .map(|i| {
            let info: Vec<_> = (0..3)
                .map(|j| json!({"image_base64": b64(&imgs[(i + j) % 8])}))
                .collect();
            let sim: Vec<Vec<f64>> = (0..3)
                .map(|j| (0..6).map(|s| if s == 2 * j { 0.3 } else { 0.1 }).collect())
                .collect();
            json_member(
                &format!("d{i:03}"),
                json!({"text_list": vec![sentence; 6], "image_info": info, "similarity_matrix": sim}),
            )
        })
        .collect();
    write_tar(&dir.path().join("bench-m.tar"), &docs);
    let pairs: Vec<(String, Vec<u8>)> = (0..96)
        .flat_map(|i| {
            [
                (format!("p{i:03}.jpg"), imgs[i % 8].clone()),
                (format!("p{i:03}.txt"), sentence.as_bytes().to_vec()),
            ]
        })
        .collect();
    write_tar(&dir.path().join("bench-p.tar"), &pairs);
    let proc = ImageProcessor {
        image_size: 224,
        mean: OPENAI_CLIP_MEAN,
        std: OPENAI_CLIP_STD,
    };
    for (kind, shards, bs) in [
        (SourceKind::Interleaved, "bench-m.tar", 8),
        (SourceKind::Pairs, "bench-p.tar", 16),
    ] {
        let spec = SourceSpec::from_config(&[source(kind, shards, bs)], 0, 0, dir.path()).unwrap();
        let mut b = SourceBatcher::new(
            spec,
            tok.clone(),
            ImageTransform::from_processor(proc.clone()),
        )
        .unwrap();
        b.next_batch().unwrap();
        let t = std::time::Instant::now();
        let (mut samples, mut images, mut tokens) = (0usize, 0usize, 0usize);
        while t.elapsed().as_secs_f64() < 3.0 {
            let batch = b.next_batch().unwrap();
            samples += batch.keys.len();
            images += batch.image_counts.iter().sum::<usize>();
            tokens += batch.tokens;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{kind:?}: {:.1} samples/s, {:.1} images/s, {:.0} tokens/s (1 thread, dev profile)",
            samples as f64 / s,
            images as f64 / s,
            tokens as f64 / s
        );
    }
}

fn assert_same_batches(a: &[runner::data::Batch], b: &[runner::data::Batch]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!((&x.source, &x.keys), (&y.source, &y.keys));
        assert_eq!(
            x.input_ids.to_vec2::<u32>().unwrap(),
            y.input_ids.to_vec2::<u32>().unwrap()
        );
        assert_eq!(
            x.labels.to_vec2::<i64>().unwrap(),
            y.labels.to_vec2::<i64>().unwrap()
        );
        let diff = (&x.images - &y.images)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }
}

#[test]
fn prefetch_matches_the_plain_mix_and_its_state_resumes() {
    use runner::data::PrefetchMix;
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let cfg = mix_config(dir.path());
    let build = || DataMix::new(&cfg, 7, dir.path(), tok.clone(), transform()).unwrap();
    let mut plain = build();
    let want: Vec<_> = (0..6).map(|_| plain.next_step().unwrap()).collect();

    let mut pre = PrefetchMix::new(build(), 3);
    for w in &want[..2] {
        assert_same_batches(&pre.next_step().unwrap(), w);
    }
    // The state is that of the batches received, although threads have prepared more.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let saved = pre.state();
    drop(pre);
    let mut again = build();
    again.restore(&saved).unwrap();
    let mut resumed = PrefetchMix::new(again, 2);
    for w in &want[2..] {
        assert_same_batches(&resumed.next_step().unwrap(), w);
    }
    assert_eq!(resumed.skip_counts(), plain.skip_counts());
}

#[test]
fn long_names_metadata_directories_and_offsets() {
    use runner::data::webdataset::ShardReader;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.tar");
    let long = format!("{}/sample", "d".repeat(120));
    {
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let mut add = |name: &str, data: &[u8], kind: tar::EntryType| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        };
        add("__meta__", b"ignored", tar::EntryType::Regular);
        add("somedir/", b"", tar::EntryType::Directory);
        add("a.txt", b"first", tar::EntryType::Regular);
        add("a.seg.png", &[1u8; 700], tar::EntryType::Regular);
        add(&format!("{long}.TXT"), b"long", tar::EntryType::Regular);
        add(&format!("{long}.json"), b"{}", tar::EntryType::Regular);
        add("noext", b"x", tar::EntryType::Regular);
        add("b.txt", b"one", tar::EntryType::Regular);
        add("b.txt", b"two", tar::EntryType::Regular); // a repeated extension starts a new sample
        b.finish().unwrap();
    }
    let mut r = ShardReader::open(&path, 0).unwrap();
    let mut got = Vec::new();
    while let Some((s, off)) = r.next_sample().unwrap() {
        got.push((s, off));
    }
    let keys: Vec<(&str, Vec<&str>)> = got
        .iter()
        .map(|(s, _)| {
            (
                s.key.as_str(),
                s.fields.keys().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            ("a", vec!["seg.png", "txt"]),
            (long.as_str(), vec!["json", "txt"]),
            ("b", vec!["txt"]),
            ("b", vec!["txt"]),
        ]
    );
    assert_eq!(got[1].0.fields["txt"], b"long");
    assert_eq!(got[3].0.fields["txt"], b"two");
    // Every sample can be read again from its offset alone.
    for (s, off) in &got {
        let again = ShardReader::open(&path, *off)
            .unwrap()
            .next_sample()
            .unwrap();
        assert_eq!(again.as_ref().map(|x| &x.0), Some(s));
    }
}
