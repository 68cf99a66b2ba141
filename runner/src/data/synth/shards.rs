//! Training shards in WebDataset tars: LAION-like pairs (`KEY.png` + `KEY.txt`), MMC4-like
//! interleaved documents (`KEY.json`: `text_list`, `image_info` with base64 images,
//! `similarity_matrix`) and ChatGPT-like sequences (`KEY.json`: `is_gpt`, `example` with
//! `_!_IMAGE<k>_!_` placeholders, `image_map`).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::corpus::Corpus;
use super::language::{coco_captions, flickr_captions, knowledge_fact, laion_caption};
use super::output::OutDir;
use super::render::scene_png_at_least;
use super::scene::{Scene, SceneSpec, item_rng, pick, sample_scene};
use super::webdataset::{Sample, sample_key, shard_path, shard_pattern, tar_bytes};
use super::{IMAGE_NOISE, SynthError, SynthOptions, WorldCounts, WorldSummary, par_map, png};

/// Smallest MMC4 image the reference loader keeps (`len(bytes) // 1000 > 10`).
pub const MMC4_MIN_IMAGE_BYTES: usize = 11_000;
/// The reference similarity threshold (paper and README: 0.24).
pub const MMC4_SIM_THRESHOLD: f64 = 0.24;

/// One generated training sample with the text it contributes to the corpus.
struct Generated {
    sample: Sample,
    corpus: Vec<String>,
    images: usize,
}

/// Writes `n` samples in shards of `per_shard`, generating each shard's samples in parallel
/// (each from its own random stream), adding their text to the corpus in sample order.
/// Returns (number of shards, number of images).
fn write_shards(
    out: &mut OutDir,
    corpus: &mut Corpus,
    prefix: &str,
    n: usize,
    per_shard: usize,
    make: impl Fn(usize) -> Result<Generated, SynthError> + Sync,
) -> Result<(usize, usize), SynthError> {
    let per_shard = per_shard.max(1);
    let shards = n.div_ceil(per_shard);
    let mut images = 0;
    for s in 0..shards {
        let first = s * per_shard;
        let generated = par_map(n.min(first + per_shard) - first, |k| make(first + k))?;
        let mut samples = Vec::with_capacity(generated.len());
        for g in generated {
            corpus.extend(g.corpus);
            images += g.images;
            samples.push(g.sample);
        }
        let rel = shard_path(prefix, s);
        let bytes = tar_bytes(&out.path(&rel), &samples)?;
        out.write(&rel, &bytes)?;
    }
    Ok((shards, images))
}

/// Writes LAION-like pairs to `laion/{000..}.tar`.
pub fn write_laion(
    out: &mut OutDir,
    opts: &SynthOptions,
    counts: &WorldCounts,
    summary: &mut WorldSummary,
    corpus: &mut Corpus,
) -> Result<(), SynthError> {
    let (shards, _) = write_shards(
        out,
        corpus,
        "laion",
        counts.laion_samples,
        counts.laion_per_shard,
        |i| {
            let mut rng = item_rng(opts.seed, "laion", i as u64);
            let scene = sample_scene(&mut rng, &SceneSpec::GENERAL);
            let caption = laion_caption(&mut rng, &scene);
            let key = sample_key(i);
            let item = format!("laion sample {key}");
            let image = png(&scene, opts.image_size, IMAGE_NOISE, &item)?;
            Ok(Generated {
                sample: Sample {
                    key,
                    members: vec![("png", image), ("txt", caption.clone().into_bytes())],
                },
                corpus: vec![caption],
                images: 1,
            })
        },
    )?;
    summary.path("laion.shards", &shard_pattern("laion", shards));
    summary.count("laion.samples", counts.laion_samples);
    summary.count("laion.shards", shards);
    Ok(())
}

/// One `image_info` entry of an MMC4 document.
#[derive(Serialize)]
struct ImageInfo {
    image_name: String,
    raw_url: String,
    matched_text_index: usize,
    matched_sim: f64,
    image_base64: String,
}

/// An MMC4 document (the original jsonl fields plus `image_base64`, as `convert_mmc4_to_wds.py`
/// writes them).
#[derive(Serialize)]
struct Mmc4Doc {
    url: String,
    text_list: Vec<String>,
    image_info: Vec<ImageInfo>,
    similarity_matrix: Vec<Vec<f64>>,
    could_have_url_duplicate: u8,
}

/// What a sentence of an interleaved document is.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    /// Describes image `i` well.
    Describes(usize),
    /// Mentions image `i` only vaguely (its similarity stays under the threshold).
    Vague(usize),
    /// About something else (introductions, facts).
    Filler,
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn shares_attribute(a: &Scene, b: &Scene) -> bool {
    a.groups.iter().any(|g| {
        b.groups
            .iter()
            .any(|h| g.shape == h.shape || g.color == h.color)
    })
}

/// A caption of either eval style, for interleaved text.
fn describe(rng: &mut ChaCha8Rng, scene: &Scene) -> String {
    let captions = if rng.random_bool(0.5) {
        coco_captions(rng, scene)
    } else {
        flickr_captions(rng, scene)
    };
    let i = rng.random_range(0..captions.len().max(1));
    captions.into_iter().nth(i).unwrap_or_default()
}

fn mmc4_doc(opts: &SynthOptions, index: usize) -> Result<(Mmc4Doc, Vec<String>), SynthError> {
    let mut rng = item_rng(opts.seed, "mmc4", index as u64);
    let n_images = pick(&mut rng, &[1usize, 2, 2, 3, 3, 4]);
    let scenes: Vec<Scene> = (0..n_images)
        .map(|_| sample_scene(&mut rng, &SceneSpec::GENERAL))
        .collect();
    let mut text_list = Vec::new();
    let mut roles = Vec::new();
    text_list.push(
        pick(
            &mut rng,
            &[
                "Welcome to my little gallery of shapes.",
                "Here are some drawings from our art class.",
                "I made a few pictures this week.",
                "Today we look at shapes and colors.",
            ],
        )
        .to_string(),
    );
    roles.push(Role::Filler);
    for (i, scene) in scenes.iter().enumerate() {
        if rng.random_bool(0.4) {
            text_list.push(knowledge_fact(&mut rng));
            roles.push(Role::Filler);
        }
        if rng.random_bool(0.15) {
            text_list.push(
                pick(
                    &mut rng,
                    &[
                        "Here is another picture from the set.",
                        "This one took me a while to finish.",
                        "The next one is my favourite.",
                    ],
                )
                .to_string(),
            );
            roles.push(Role::Vague(i));
        } else {
            text_list.push(describe(&mut rng, scene));
            roles.push(Role::Describes(i));
        }
    }
    if rng.random_bool(0.5) {
        text_list.push(knowledge_fact(&mut rng));
        roles.push(Role::Filler);
    }

    // Similarities: high for a sentence describing its image, under the threshold for vague
    // ones, middling between images and captions of look-alike scenes, low otherwise.
    let mut sim = vec![vec![0.0; text_list.len()]; n_images];
    for (i, row) in sim.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            let x = match roles[j] {
                Role::Describes(k) if k == i => rng.random_range(0.27..0.38),
                Role::Vague(k) if k == i => rng.random_range(0.16..0.235),
                Role::Describes(k) if shares_attribute(&scenes[i], &scenes[k]) => {
                    rng.random_range(0.12..0.2)
                }
                Role::Describes(_) => rng.random_range(0.03..0.12),
                Role::Vague(_) | Role::Filler => rng.random_range(0.0..0.1),
            };
            *cell = round4(x);
        }
    }

    // 1.5x the eval size plus the lightest noise that reaches the size filter (~12 kB files).
    let side = opts.image_size * 3 / 2;
    let mut image_info = Vec::with_capacity(n_images);
    for (i, scene) in scenes.iter().enumerate() {
        let bytes = scene_png_at_least(scene, side, MMC4_MIN_IMAGE_BYTES)
            .map_err(|e| SynthError::Encode(format!("mmc4 document {index} image {i}: {e}")))?;
        let (matched_text_index, matched_sim) =
            sim[i]
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f64::MIN),
                    |best, (j, s)| if s > best.1 { (j, s) } else { best },
                );
        image_info.push(ImageInfo {
            image_name: format!("{:016x}.png", rng.random::<u64>()),
            raw_url: format!("https://synthetic.invalid/mmc4/{index}/{i}.png"),
            matched_text_index,
            matched_sim,
            image_base64: BASE64.encode(&bytes),
        });
    }
    let corpus_lines = text_list.clone();
    Ok((
        Mmc4Doc {
            url: format!("https://synthetic.invalid/mmc4/{index}"),
            text_list,
            image_info,
            similarity_matrix: sim,
            could_have_url_duplicate: 0,
        },
        corpus_lines,
    ))
}

fn json_bytes(value: &impl Serialize, what: &str) -> Result<Vec<u8>, SynthError> {
    serde_json::to_vec(value).map_err(|source| SynthError::Json {
        path: what.into(),
        source,
    })
}

/// Writes MMC4-like documents to `mmc4/{000..}.tar`; images are PNGs at 1.5 times the image
/// size, each at least 11,000 bytes.
pub fn write_mmc4(
    out: &mut OutDir,
    opts: &SynthOptions,
    counts: &WorldCounts,
    summary: &mut WorldSummary,
    corpus: &mut Corpus,
) -> Result<(), SynthError> {
    let (shards, images) = write_shards(
        out,
        corpus,
        "mmc4",
        counts.mmc4_docs,
        counts.mmc4_per_shard,
        |i| {
            let (doc, lines) = mmc4_doc(opts, i)?;
            let key = sample_key(i);
            let json = json_bytes(&doc, &format!("mmc4 document {key}"))?;
            Ok(Generated {
                images: doc.image_info.len(),
                sample: Sample {
                    key,
                    members: vec![("json", json)],
                },
                corpus: vec![lines.join(" ")],
            })
        },
    )?;
    summary.path("mmc4.shards", &shard_pattern("mmc4", shards));
    summary.count("mmc4.documents", counts.mmc4_docs);
    summary.count("mmc4.images", images);
    summary.count("mmc4.shards", shards);
    Ok(())
}

#[derive(Serialize)]
struct GptImage {
    base64_image: String,
}

/// A ChatGPT-generated sequence as the reference loader reads it.
#[derive(Serialize)]
struct GptDoc {
    is_gpt: bool,
    example: String,
    image_map: BTreeMap<String, GptImage>,
}

/// One image segment of a ChatGPT-style sequence, written in the format of one of the evaluation
/// tasks (caption, the four VQA styles, the meme question), so that training on these sequences
/// teaches the interleaved prompt formats the evaluation uses, `<|endofchunk|>` after each answer
/// included (the placeholders become `<|endofchunk|><image>`).
fn chatgpt_segment(rng: &mut impl rand::Rng, kind: u32) -> (Scene, String) {
    use super::language::{coco_captions, meme, okvqa_qa, textvqa_qa, vizwiz_qa, vqav2_qa};
    let spec = match kind {
        3 => &SceneSpec::TEXT,
        5 => &SceneSpec::MEME,
        _ => &SceneSpec::GENERAL,
    };
    let scene = sample_scene(rng, spec);
    let qa = |q: super::language::Qa| format!("Question:{} Short answer:{}", q.question, q.answer);
    let text = match kind {
        0 => {
            let caps = coco_captions(rng, &scene);
            format!("Output:{}", caps[rng.random_range(0..caps.len())])
        }
        1 => qa(vqav2_qa(rng, &scene)),
        2 => qa(okvqa_qa(rng, &scene)),
        3 => match textvqa_qa(rng, &scene) {
            Some(q) => qa(q),
            None => qa(vqav2_qa(rng, &scene)),
        },
        4 => qa(vizwiz_qa(rng, &scene)),
        _ => {
            let hateful = rng.random_bool(0.5);
            let m = meme(rng, &scene, hateful);
            format!(
                "is an image with: '{}' written on it. Is it hateful? Answer:{}",
                m.text,
                if m.label == 1 { "yes" } else { "no" }
            )
        }
    };
    (scene, text)
}

/// Task formats of [`chatgpt_segment`]: caption, VQAv2, OK-VQA, TextVQA, VizWiz, meme.
const SEGMENT_KINDS: u32 = 6;
/// Most images in a one-task episode.
const MAX_EPISODE_IMAGES: usize = 16;

fn chatgpt_doc(opts: &SynthOptions, index: usize) -> Result<(GptDoc, String), SynthError> {
    let mut rng = item_rng(opts.seed, "chatgpt", index as u64);
    // Half the sequences are episodes of one task with many images (the shape of a few-shot
    // prompt, so that training sees long contexts); the others mix tasks over a few images.
    let episode = rng
        .random_bool(0.5)
        .then(|| rng.random_range(0..SEGMENT_KINDS));
    let n_images = match episode {
        Some(_) => rng.random_range(4..=MAX_EPISODE_IMAGES),
        None => rng.random_range(2..=5usize),
    };
    let mut example = pick(
        &mut rng,
        &[
            "Let me walk you through a few pictures.",
            "Here is a short story told with shapes.",
            "Look closely at each picture and what it shows.",
        ],
    )
    .to_string();
    let mut plain = example.clone();
    let mut image_map = BTreeMap::new();
    for k in 1..=n_images {
        let kind = episode.unwrap_or_else(|| rng.random_range(0..SEGMENT_KINDS));
        let (scene, segment) = chatgpt_segment(&mut rng, kind);
        let placeholder = format!("_!_IMAGE{k}_!_");
        example.push_str(&format!(" {placeholder} {segment}"));
        plain.push_str(&format!(" {segment}"));
        let bytes = png(
            &scene,
            opts.image_size,
            IMAGE_NOISE,
            &format!("chatgpt sequence {index} image {k}"),
        )?;
        image_map.insert(
            placeholder,
            GptImage {
                base64_image: BASE64.encode(&bytes),
            },
        );
    }
    Ok((
        GptDoc {
            is_gpt: true,
            example,
            image_map,
        },
        plain,
    ))
}

/// Writes ChatGPT-like sequences to `chatgpt/{000..}.tar`.
pub fn write_chatgpt(
    out: &mut OutDir,
    opts: &SynthOptions,
    counts: &WorldCounts,
    summary: &mut WorldSummary,
    corpus: &mut Corpus,
) -> Result<(), SynthError> {
    let (shards, images) = write_shards(
        out,
        corpus,
        "chatgpt",
        counts.chatgpt_docs,
        counts.chatgpt_per_shard,
        |i| {
            let (doc, plain) = chatgpt_doc(opts, i)?;
            let key = sample_key(i);
            let json = json_bytes(&doc, &format!("chatgpt sequence {key}"))?;
            Ok(Generated {
                images: doc.image_map.len(),
                sample: Sample {
                    key,
                    members: vec![("json", json)],
                },
                corpus: vec![plain],
            })
        },
    )?;
    summary.path("chatgpt.shards", &shard_pattern("chatgpt", shards));
    summary.count("chatgpt.sequences", counts.chatgpt_docs);
    summary.count("chatgpt.images", images);
    summary.count("chatgpt.shards", shards);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::WorldSize;

    /// Best one-to-one assignment of images to sentences by brute force (docs are small).
    fn best_assignment(sim: &[Vec<f64>]) -> Vec<usize> {
        fn go(
            sim: &[Vec<f64>],
            i: usize,
            used: &mut Vec<bool>,
            cur: &mut Vec<usize>,
            best: &mut (f64, Vec<usize>),
        ) {
            if i == sim.len() {
                let total: f64 = cur.iter().enumerate().map(|(k, &j)| sim[k][j]).sum();
                if total > best.0 {
                    *best = (total, cur.clone());
                }
                return;
            }
            for j in 0..sim[i].len() {
                if !used[j] {
                    used[j] = true;
                    cur.push(j);
                    go(sim, i + 1, used, cur, best);
                    cur.pop();
                    used[j] = false;
                }
            }
        }
        let mut best = (f64::MIN, Vec::new());
        go(
            sim,
            0,
            &mut vec![false; sim[0].len()],
            &mut Vec::new(),
            &mut best,
        );
        best.1
    }

    #[test]
    fn mmc4_similarities_pick_the_describing_sentence() {
        let opts = SynthOptions::new(5, WorldSize::Tiny);
        let (mut below, mut total) = (0, 0);
        for index in 0..40 {
            let (doc, _) = mmc4_doc(&opts, index).unwrap();
            assert!(doc.similarity_matrix.len() <= doc.text_list.len());
            let assignment = best_assignment(&doc.similarity_matrix);
            for (i, info) in doc.image_info.iter().enumerate() {
                total += 1;
                if info.matched_sim < MMC4_SIM_THRESHOLD {
                    below += 1;
                } else {
                    // A confidently matched image keeps its sentence under the reference's
                    // one-to-one assignment.
                    assert_eq!(assignment[i], info.matched_text_index, "document {index}");
                }
                assert!(BASE64.decode(&info.image_base64).unwrap().len() >= MMC4_MIN_IMAGE_BYTES);
            }
        }
        assert!(
            below > 0 && below * 4 < total,
            "{below} of {total} below the threshold"
        );
    }

    #[test]
    fn chatgpt_sequences_mix_tasks_or_repeat_one_over_many_images() {
        let opts = SynthOptions::new(5, WorldSize::Tiny);
        let prefixes = ["Output:", "Question:", "is an image with:"];
        let mut longest = 0;
        for index in 0..40 {
            let (doc, plain) = chatgpt_doc(&opts, index).unwrap();
            let n = doc.image_map.len();
            assert!(
                (2..=MAX_EPISODE_IMAGES).contains(&n),
                "sequence {index}: {n} images"
            );
            assert_eq!(doc.example.matches("_!_IMAGE").count(), n);
            longest = longest.max(n);
            if n > 5 {
                // Only a one-task episode has more than five images: every segment has the
                // same prompt format (the caption, VQA or meme prefix).
                let kinds: std::collections::BTreeSet<_> =
                    prefixes.iter().filter(|p| plain.contains(*p)).collect();
                assert_eq!(kinds.len(), 1, "sequence {index}: {plain}");
            }
        }
        assert!(longest > 5, "no long episode in 40 sequences");
    }
}
