//! Caption datasets: COCO (Karpathy `dataset_coco.json`, `captions_val2014.json`, images in
//! `train2014/` and `val2014/`) and Flickr30K (Karpathy `dataset_flickr30k.json`, COCO-style
//! `dataset_flickr30k_coco_style.json` keyed by file stem, images in `flickr30k-images/`).

use serde::Serialize;

use super::corpus::Corpus;
use super::language::{coco_captions, flickr_captions};
use super::output::OutDir;
use super::scene::{Scene, SceneSpec, item_rng, sample_scene};
use super::{IMAGE_NOISE, SynthError, SynthOptions, WorldCounts, WorldSummary, par_map, png};

/// First `cocoid` of `train2014` images.
pub const COCO_TRAIN_ID0: u64 = 100_000;
/// First `cocoid` of `val2014` images.
pub const COCO_VAL_ID0: u64 = 500_000;
/// First Flickr30K image id (the file stem).
pub const FLICKR_ID0: u64 = 1_000_000;

/// COCO images and their scenes, shared with the VQAv2 and OK-VQA writers (which, as in the
/// real datasets, ask questions about COCO images).
pub struct CocoImages {
    /// `train2014` images: (cocoid, scene).
    pub train: Vec<(u64, Scene)>,
    /// `val2014` images: (cocoid, scene), Karpathy test first, then val, then restval.
    pub val: Vec<(u64, Scene)>,
}

/// The COCO file name of an image: `COCO_{dir}_{id:012}.jpg` (PNG bytes: readers decode by content).
pub fn coco_file_name(dir: &str, id: u64) -> String {
    format!("COCO_{dir}_{id:012}.jpg")
}

/// Karpathy-format caption, `{"tokens","raw","imgid","sentid"}`.
#[derive(Serialize)]
struct Sentence {
    tokens: Vec<String>,
    raw: String,
    imgid: usize,
    sentid: usize,
}

/// Karpathy-format image entry (COCO flavour has `filepath` and `cocoid`; Flickr has neither).
#[derive(Serialize)]
struct KarpathyImage {
    #[serde(skip_serializing_if = "Option::is_none")]
    filepath: Option<String>,
    sentids: Vec<usize>,
    filename: String,
    imgid: usize,
    split: String,
    sentences: Vec<Sentence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cocoid: Option<u64>,
}

#[derive(Serialize)]
struct KarpathyFile {
    images: Vec<KarpathyImage>,
    dataset: String,
}

/// COCO-format caption annotations, as read by pycocotools.
#[derive(Serialize)]
struct CocoCaptions<Id: Serialize> {
    info: CocoInfo,
    images: Vec<CocoImage<Id>>,
    licenses: Vec<()>,
    #[serde(rename = "type")]
    kind: String,
    annotations: Vec<CocoAnnotation<Id>>,
}

#[derive(Serialize)]
struct CocoInfo {
    description: String,
    version: String,
}

#[derive(Serialize)]
struct CocoImage<Id: Serialize> {
    id: Id,
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Serialize)]
struct CocoAnnotation<Id: Serialize> {
    image_id: Id,
    id: usize,
    caption: String,
}

/// Karpathy tokens: lowercase alphanumeric runs.
pub fn tokens(raw: &str) -> Vec<String> {
    raw.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

fn sentences(captions: Vec<String>, imgid: usize, next_sentid: &mut usize) -> Vec<Sentence> {
    captions
        .into_iter()
        .map(|raw| {
            let s = Sentence {
                tokens: tokens(&raw),
                raw,
                imgid,
                sentid: *next_sentid,
            };
            *next_sentid += 1;
            s
        })
        .collect()
}

fn info(what: &str) -> CocoInfo {
    CocoInfo {
        description: format!("runner synthetic world: {what}"),
        version: super::FORMAT_VERSION.to_string(),
    }
}

/// Writes COCO: images, `coco/dataset_coco.json` and `coco/captions_val2014.json`.
pub fn write_coco(
    out: &mut OutDir,
    opts: &SynthOptions,
    counts: &WorldCounts,
    summary: &mut WorldSummary,
    corpus: &mut Corpus,
) -> Result<CocoImages, SynthError> {
    let side = opts.image_size;
    let mut images = Vec::new();
    let mut gt_images = Vec::new();
    let mut gt_annotations = Vec::new();
    let mut sentid = 0;
    let mut pools = CocoImages {
        train: Vec::new(),
        val: Vec::new(),
    };
    let n_val = counts.coco_test + counts.coco_val + counts.coco_restval;
    // (image directory, Karpathy split, index within the directory, cocoid) of item k.
    let plan = |k: usize| {
        if k < counts.coco_train {
            ("train2014", "train", k, COCO_TRAIN_ID0 + k as u64)
        } else {
            let i = k - counts.coco_train;
            let split = if i < counts.coco_test {
                "test"
            } else if i < counts.coco_test + counts.coco_val {
                "val"
            } else {
                "restval"
            };
            ("val2014", split, i, COCO_VAL_ID0 + i as u64)
        }
    };
    let rendered = par_map(counts.coco_train + n_val, |k| {
        let (dir, _, i, cocoid) = plan(k);
        let mut rng = item_rng(opts.seed, &format!("coco/{dir}"), i as u64);
        let scene = sample_scene(&mut rng, &SceneSpec::GENERAL);
        let captions = coco_captions(&mut rng, &scene);
        let rel = format!("coco/{dir}/{}", coco_file_name(dir, cocoid));
        let bytes = png(&scene, side, IMAGE_NOISE, &rel)?;
        Ok((scene, captions, rel, bytes))
    })?;
    for (imgid, (scene, captions, rel, bytes)) in rendered.into_iter().enumerate() {
        let (dir, split, _, cocoid) = plan(imgid);
        let filename = coco_file_name(dir, cocoid);
        out.write(&rel, &bytes)?;
        if split == "train" {
            for c in &captions {
                corpus.caption(c);
            }
        }
        if dir == "val2014" {
            gt_images.push(CocoImage {
                id: cocoid,
                file_name: filename.clone(),
                width: side,
                height: side,
            });
            for c in &captions {
                gt_annotations.push(CocoAnnotation {
                    image_id: cocoid,
                    id: gt_annotations.len() + 1,
                    caption: c.clone(),
                });
            }
        }
        let first = sentid;
        let sentences = sentences(captions, imgid, &mut sentid);
        images.push(KarpathyImage {
            filepath: Some(dir.to_string()),
            sentids: (first..sentid).collect(),
            filename,
            imgid,
            split: split.to_string(),
            sentences,
            cocoid: Some(cocoid),
        });
        if dir == "train2014" {
            pools.train.push((cocoid, scene));
        } else {
            pools.val.push((cocoid, scene));
        }
    }
    out.json(
        "coco/dataset_coco.json",
        &KarpathyFile {
            images,
            dataset: "coco".to_string(),
        },
    )?;
    out.json(
        "coco/captions_val2014.json",
        &CocoCaptions {
            info: info("COCO-like captions"),
            images: gt_images,
            licenses: Vec::new(),
            kind: "captions".to_string(),
            annotations: gt_annotations,
        },
    )?;
    summary.path("coco.train_images", "coco/train2014");
    summary.path("coco.val_images", "coco/val2014");
    summary.path("coco.karpathy_json", "coco/dataset_coco.json");
    summary.path("coco.annotations_json", "coco/captions_val2014.json");
    summary.count("coco.train_images", counts.coco_train);
    summary.count("coco.test_images", counts.coco_test);
    summary.count("coco.val_images", counts.coco_val);
    summary.count("coco.restval_images", counts.coco_restval);
    Ok(pools)
}

/// Writes Flickr30K: images, `flickr30k/dataset_flickr30k.json` and
/// `flickr30k/dataset_flickr30k_coco_style.json` (image ids are the file stems, as strings).
pub fn write_flickr(
    out: &mut OutDir,
    opts: &SynthOptions,
    counts: &WorldCounts,
    summary: &mut WorldSummary,
    corpus: &mut Corpus,
) -> Result<(), SynthError> {
    let side = opts.image_size;
    let n = counts.flickr_train + counts.flickr_val + counts.flickr_test;
    let mut images = Vec::new();
    let mut gt_images = Vec::new();
    let mut gt_annotations = Vec::new();
    let mut sentid = 0;
    let rendered = par_map(n, |i| {
        let mut rng = item_rng(opts.seed, "flickr30k", i as u64);
        let scene = sample_scene(&mut rng, &SceneSpec::GENERAL);
        let captions = flickr_captions(&mut rng, &scene);
        let rel = format!("flickr30k/flickr30k-images/{}.jpg", FLICKR_ID0 + i as u64);
        let bytes = png(&scene, side, IMAGE_NOISE, &rel)?;
        Ok((captions, rel, bytes))
    })?;
    for (i, (captions, rel, bytes)) in rendered.into_iter().enumerate() {
        let split = if i < counts.flickr_train {
            "train"
        } else if i < counts.flickr_train + counts.flickr_val {
            "val"
        } else {
            "test"
        };
        let stem = (FLICKR_ID0 + i as u64).to_string();
        let filename = format!("{stem}.jpg");
        out.write(&rel, &bytes)?;
        if split == "train" {
            for c in &captions {
                corpus.caption(c);
            }
        }
        gt_images.push(CocoImage {
            id: stem.clone(),
            file_name: filename.clone(),
            width: side,
            height: side,
        });
        for c in &captions {
            gt_annotations.push(CocoAnnotation {
                image_id: stem.clone(),
                id: gt_annotations.len() + 1,
                caption: c.clone(),
            });
        }
        let first = sentid;
        let sentences = sentences(captions, i, &mut sentid);
        images.push(KarpathyImage {
            filepath: None,
            sentids: (first..sentid).collect(),
            filename,
            imgid: i,
            split: split.to_string(),
            sentences,
            cocoid: None,
        });
    }
    out.json(
        "flickr30k/dataset_flickr30k.json",
        &KarpathyFile {
            images,
            dataset: "flickr30k".to_string(),
        },
    )?;
    out.json(
        "flickr30k/dataset_flickr30k_coco_style.json",
        &CocoCaptions {
            info: info("Flickr30K-like captions"),
            images: gt_images,
            licenses: Vec::new(),
            kind: "captions".to_string(),
            annotations: gt_annotations,
        },
    )?;
    summary.path("flickr30k.images", "flickr30k/flickr30k-images");
    summary.path(
        "flickr30k.karpathy_json",
        "flickr30k/dataset_flickr30k.json",
    );
    summary.path(
        "flickr30k.annotations_json",
        "flickr30k/dataset_flickr30k_coco_style.json",
    );
    summary.count("flickr30k.train_images", counts.flickr_train);
    summary.count("flickr30k.val_images", counts.flickr_val);
    summary.count("flickr30k.test_images", counts.flickr_test);
    Ok(())
}
