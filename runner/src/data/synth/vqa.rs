//! VQA datasets in the official question / annotation JSON format: VQAv2 and OK-VQA (about the
//! COCO images), TextVQA and VizWiz (their own images, in their own naming schemes).
//!
//! The annotation list is deliberately in a different order from the question list: readers
//! must join the two files on `question_id`.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::Value;

use super::corpus::Corpus;
use super::karpathy::CocoImages;
use super::language::{Qa, okvqa_qa, textvqa_qa, vizwiz_qa, vqav2_qa};
use super::output::OutDir;
use super::scene::{Scene, SceneSpec, item_rng, sample_scene};
use super::{IMAGE_NOISE, SynthError, SynthOptions, WorldCounts, WorldSummary, par_map, png};

/// One question of a split, ready to be written.
struct Item {
    image_id: Value,
    question_id: u64,
    qa: Qa,
}

#[derive(Serialize)]
struct Info {
    description: String,
    version: String,
}

#[derive(Serialize)]
struct License {
    name: String,
    url: String,
}

#[derive(Serialize)]
struct Question<'a> {
    image_id: &'a Value,
    question: &'a str,
    question_id: u64,
}

#[derive(Serialize)]
struct QuestionsFile<'a> {
    info: Info,
    task_type: &'static str,
    data_type: &'a str,
    license: License,
    data_subtype: &'a str,
    questions: Vec<Question<'a>>,
}

#[derive(Serialize)]
struct Answer<'a> {
    answer: &'a str,
    answer_confidence: &'static str,
    answer_id: usize,
}

#[derive(Serialize)]
struct Annotation<'a> {
    question_type: &'a str,
    multiple_choice_answer: &'a str,
    answers: Vec<Answer<'a>>,
    image_id: &'a Value,
    answer_type: &'a str,
    question_id: u64,
}

#[derive(Serialize)]
struct AnnotationsFile<'a> {
    info: Info,
    license: License,
    data_type: &'a str,
    data_subtype: &'a str,
    annotations: Vec<Annotation<'a>>,
}

fn info(dataset: &str) -> Info {
    Info {
        description: format!("runner synthetic world: {dataset}-like questions"),
        version: super::FORMAT_VERSION.to_string(),
    }
}

fn license() -> License {
    License {
        name: "synthetic data, no restrictions".to_string(),
        url: "https://example.invalid/synthetic".to_string(),
    }
}

/// A permutation of 0..n that differs from the identity whenever n >= 2.
fn shuffled_order(rng: &mut impl Rng, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    if n >= 2 && order.iter().enumerate().all(|(i, &j)| i == j) {
        order.reverse();
    }
    order
}

/// Where one split's two files go and how they are labelled.
struct SplitFiles<'a> {
    dataset: &'a str,
    data_type: &'a str,
    data_subtype: &'a str,
    questions: &'a str,
    annotations: &'a str,
}

fn write_split(
    out: &mut OutDir,
    seed: u64,
    files: &SplitFiles,
    items: &[Item],
) -> Result<(), SynthError> {
    let questions = items
        .iter()
        .map(|it| Question {
            image_id: &it.image_id,
            question: &it.qa.question,
            question_id: it.question_id,
        })
        .collect();
    out.json(
        files.questions,
        &QuestionsFile {
            info: info(files.dataset),
            task_type: "Open-Ended",
            data_type: files.data_type,
            license: license(),
            data_subtype: files.data_subtype,
            questions,
        },
    )?;
    let mut rng = item_rng(seed, &format!("{}/shuffle", files.annotations), 0);
    let annotations = shuffled_order(&mut rng, items.len())
        .into_iter()
        .map(|i| {
            let it = &items[i];
            Annotation {
                question_type: it.qa.question_type,
                multiple_choice_answer: &it.qa.answer,
                answers: it
                    .qa
                    .answers
                    .iter()
                    .enumerate()
                    .map(|(k, a)| Answer {
                        answer: a,
                        answer_confidence: if *a == it.qa.answer { "yes" } else { "maybe" },
                        answer_id: k + 1,
                    })
                    .collect(),
                image_id: &it.image_id,
                answer_type: it.qa.answer_type,
                question_id: it.question_id,
            }
        })
        .collect();
    out.json(
        files.annotations,
        &AnnotationsFile {
            info: info(files.dataset),
            license: license(),
            data_type: files.data_type,
            data_subtype: files.data_subtype,
            annotations,
        },
    )
}

/// Draws a question, avoiding repeats of questions already asked about the same image.
fn fresh_qa(rng: &mut ChaCha8Rng, scene: &Scene, asked: &[String], ask: AskFn) -> Qa {
    let mut qa = ask(rng, scene);
    for _ in 0..8 {
        if !asked.contains(&qa.question) {
            break;
        }
        qa = ask(rng, scene);
    }
    qa
}

/// A question generator of [`super::language`].
type AskFn = fn(&mut ChaCha8Rng, &Scene) -> Qa;

fn add_train_corpus(corpus: &mut Corpus, items: &[Item]) {
    for it in items {
        corpus.qa(&it.qa.question, &it.qa.answer);
    }
}

fn coco_questions(
    seed: u64,
    domain: &str,
    images: &[(u64, Scene)],
    per_image: usize,
    ask: AskFn,
) -> Vec<Item> {
    let mut items = Vec::with_capacity(images.len() * per_image);
    for (cocoid, scene) in images {
        let mut asked = Vec::new();
        for k in 0..per_image {
            let question_id = cocoid * 10 + k as u64;
            let mut rng = item_rng(seed, domain, question_id);
            let qa = fresh_qa(&mut rng, scene, &asked, ask);
            asked.push(qa.question.clone());
            items.push(Item {
                image_id: Value::from(*cocoid),
                question_id,
                qa,
            });
        }
    }
    items
}

/// Writes VQAv2: questions about the COCO images, `train2014` for train and `val2014` for test.
pub fn write_vqav2(
    out: &mut OutDir,
    opts: &SynthOptions,
    counts: &WorldCounts,
    coco: &CocoImages,
    summary: &mut WorldSummary,
    corpus: &mut Corpus,
) -> Result<(), SynthError> {
    let train = coco_questions(
        opts.seed,
        "vqav2/train",
        &coco.train,
        counts.vqav2_questions_per_train_image,
        vqav2_qa,
    );
    let test = coco_questions(opts.seed, "vqav2/val", &coco.val, 1, vqav2_qa);
    let splits = [("train2014", &train, "train"), ("val2014", &test, "test")];
    for (subtype, items, split) in splits {
        let questions = format!("vqav2/v2_OpenEnded_mscoco_{subtype}_questions.json");
        let annotations = format!("vqav2/v2_mscoco_{subtype}_annotations.json");
        write_split(
            out,
            opts.seed,
            &SplitFiles {
                dataset: "VQAv2",
                data_type: "mscoco",
                data_subtype: subtype,
                questions: &questions,
                annotations: &annotations,
            },
            items,
        )?;
        summary.path(&format!("vqav2.{split}_questions"), &questions);
        summary.path(&format!("vqav2.{split}_annotations"), &annotations);
        summary.path(&format!("vqav2.{split}_images"), &format!("coco/{subtype}"));
        summary.count(&format!("vqav2.{split}_questions"), items.len());
    }
    add_train_corpus(corpus, &train);
    Ok(())
}

/// Writes OK-VQA: knowledge questions about the COCO images (one per image).
pub fn write_okvqa(
    out: &mut OutDir,
    opts: &SynthOptions,
    counts: &WorldCounts,
    coco: &CocoImages,
    summary: &mut WorldSummary,
    corpus: &mut Corpus,
) -> Result<(), SynthError> {
    let n_train = counts.okvqa_train.min(coco.train.len());
    let n_test = counts.okvqa_test.min(coco.val.len());
    let train = coco_questions(
        opts.seed,
        "okvqa/train",
        &coco.train[..n_train],
        1,
        okvqa_qa,
    );
    let test = coco_questions(opts.seed, "okvqa/val", &coco.val[..n_test], 1, okvqa_qa);
    for (subtype, items, split) in [("train2014", &train, "train"), ("val2014", &test, "test")] {
        let questions = format!("okvqa/OpenEnded_mscoco_{subtype}_questions.json");
        let annotations = format!("okvqa/mscoco_{subtype}_annotations.json");
        write_split(
            out,
            opts.seed,
            &SplitFiles {
                dataset: "OK-VQA",
                data_type: "mscoco",
                data_subtype: subtype,
                questions: &questions,
                annotations: &annotations,
            },
            items,
        )?;
        summary.path(&format!("okvqa.{split}_questions"), &questions);
        summary.path(&format!("okvqa.{split}_annotations"), &annotations);
        summary.path(&format!("okvqa.{split}_images"), &format!("coco/{subtype}"));
        summary.count(&format!("okvqa.{split}_questions"), items.len());
    }
    add_train_corpus(corpus, &train);
    Ok(())
}

/// Writes TextVQA: scenes that always show a word, images `textvqa/train_images/{image_id}.jpg`
/// (both splits, as in the real dataset), 16-hex-digit string image ids.
pub fn write_textvqa(
    out: &mut OutDir,
    opts: &SynthOptions,
    counts: &WorldCounts,
    summary: &mut WorldSummary,
    corpus: &mut Corpus,
) -> Result<(), SynthError> {
    let mut next_qid = 0u64;
    for (split, subtype, n) in [
        ("train", "train", counts.textvqa_train),
        ("test", "val", counts.textvqa_test),
    ] {
        let rendered = par_map(n, |i| {
            let mut rng = item_rng(opts.seed, &format!("textvqa/{subtype}"), i as u64);
            let image_id = format!("{:016x}", rng.random::<u64>());
            let scene = sample_scene(&mut rng, &SceneSpec::TEXT);
            let rel = format!("textvqa/train_images/{image_id}.jpg");
            let bytes = png(&scene, opts.image_size, IMAGE_NOISE, &rel)?;
            Ok((image_id, textvqa_qa(&mut rng, &scene), rel, bytes))
        })?;
        let mut items = Vec::with_capacity(n);
        for (image_id, qa, rel, bytes) in rendered {
            out.write(&rel, &bytes)?;
            // SceneSpec::TEXT always renders a word, so a question always exists.
            if let Some(qa) = qa {
                items.push(Item {
                    image_id: Value::from(image_id),
                    question_id: next_qid,
                    qa,
                });
                next_qid += 1;
            }
        }
        let questions = format!("textvqa/{subtype}_questions_vqa_format.json");
        let annotations = format!("textvqa/{subtype}_annotations_vqa_format.json");
        write_split(
            out,
            opts.seed,
            &SplitFiles {
                dataset: "TextVQA",
                data_type: "textvqa",
                data_subtype: subtype,
                questions: &questions,
                annotations: &annotations,
            },
            &items,
        )?;
        summary.path(&format!("textvqa.{split}_questions"), &questions);
        summary.path(&format!("textvqa.{split}_annotations"), &annotations);
        summary.path(&format!("textvqa.{split}_images"), "textvqa/train_images");
        summary.count(&format!("textvqa.{split}_questions"), items.len());
        if split == "train" {
            add_train_corpus(corpus, &items);
        }
    }
    Ok(())
}

/// Writes VizWiz: one question per image; `image_id` is the file name
/// (`VizWiz_train_00000000.jpg` in `vizwiz/train/`, `VizWiz_val_00000000.jpg` in `vizwiz/val/`).
pub fn write_vizwiz(
    out: &mut OutDir,
    opts: &SynthOptions,
    counts: &WorldCounts,
    summary: &mut WorldSummary,
    corpus: &mut Corpus,
) -> Result<(), SynthError> {
    let mut next_qid = 0u64;
    for (split, subtype, n) in [
        ("train", "train", counts.vizwiz_train),
        ("test", "val", counts.vizwiz_test),
    ] {
        let rendered = par_map(n, |i| {
            let mut rng = item_rng(opts.seed, &format!("vizwiz/{subtype}"), i as u64);
            let scene = sample_scene(&mut rng, &SceneSpec::CAPTURE);
            let file = format!("VizWiz_{subtype}_{i:08}.jpg");
            let rel = format!("vizwiz/{subtype}/{file}");
            let bytes = png(&scene, opts.image_size, IMAGE_NOISE, &rel)?;
            Ok((file, vizwiz_qa(&mut rng, &scene), rel, bytes))
        })?;
        let mut items = Vec::with_capacity(n);
        for (file, qa, rel, bytes) in rendered {
            out.write(&rel, &bytes)?;
            items.push(Item {
                image_id: Value::from(file),
                question_id: next_qid,
                qa,
            });
            next_qid += 1;
        }
        let questions = format!("vizwiz/{subtype}_questions_vqa_format.json");
        let annotations = format!("vizwiz/{subtype}_annotations_vqa_format.json");
        write_split(
            out,
            opts.seed,
            &SplitFiles {
                dataset: "VizWiz",
                data_type: "vizwiz",
                data_subtype: subtype,
                questions: &questions,
                annotations: &annotations,
            },
            &items,
        )?;
        summary.path(&format!("vizwiz.{split}_questions"), &questions);
        summary.path(&format!("vizwiz.{split}_annotations"), &annotations);
        summary.path(
            &format!("vizwiz.{split}_images"),
            &format!("vizwiz/{subtype}"),
        );
        summary.count(&format!("vizwiz.{split}_questions"), items.len());
        if split == "train" {
            add_train_corpus(corpus, &items);
        }
    }
    Ok(())
}
