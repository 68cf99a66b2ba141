//! HatefulMemes: `hatefulmemes/img/{id:05}.png` and JSONL files (`train.jsonl`,
//! `test_seen.jsonl`) with lines `{"id","img","label","text"}`. Exactly half of each split is
//! labelled 1, in shuffled order.

use rand::seq::SliceRandom;
use serde::Serialize;

use super::corpus::Corpus;
use super::language::meme;
use super::output::OutDir;
use super::scene::{SceneSpec, item_rng, sample_scene};
use super::{IMAGE_NOISE, SynthError, SynthOptions, WorldCounts, WorldSummary, par_map, png};

/// First meme id of the train split.
pub const TRAIN_ID0: u64 = 10_000;
/// First meme id of the test_seen split.
pub const TEST_ID0: u64 = 80_000;

/// One JSONL line, fields in the real dataset's order.
#[derive(Serialize)]
struct Line {
    id: u64,
    img: String,
    label: u8,
    text: String,
}

/// Writes the memes of both splits.
pub fn write_hateful(
    out: &mut OutDir,
    opts: &SynthOptions,
    counts: &WorldCounts,
    summary: &mut WorldSummary,
    corpus: &mut Corpus,
) -> Result<(), SynthError> {
    for (split, file, n, id0) in [
        ("train", "train.jsonl", counts.hateful_train, TRAIN_ID0),
        ("test", "test_seen.jsonl", counts.hateful_test, TEST_ID0),
    ] {
        let rendered = par_map(n, |i| {
            let id = id0 + i as u64;
            let mut rng = item_rng(opts.seed, &format!("hatefulmemes/{split}"), i as u64);
            let scene = sample_scene(&mut rng, &SceneSpec::MEME);
            let m = meme(&mut rng, &scene, i % 2 == 1);
            let img = format!("img/{id:05}.png");
            let rel = format!("hatefulmemes/{img}");
            let bytes = png(&scene, opts.image_size, IMAGE_NOISE, &rel)?;
            Ok((id, img, m, rel, bytes))
        })?;
        let mut lines = Vec::with_capacity(n);
        for (id, img, m, rel, bytes) in rendered {
            out.write(&rel, &bytes)?;
            if split == "train" {
                corpus.meme(&m.text, m.label == 1);
            }
            lines.push(Line {
                id,
                img,
                label: m.label,
                text: m.text,
            });
        }
        // Labels alternate by construction; shuffle so that file order carries no signal.
        let mut rng = item_rng(opts.seed, &format!("hatefulmemes/{split}/order"), 0);
        lines.shuffle(&mut rng);
        let rel = format!("hatefulmemes/{file}");
        out.jsonl(&rel, &lines)?;
        summary.path(&format!("hatefulmemes.{split}_annotations"), &rel);
        summary.count(&format!("hatefulmemes.{split}_memes"), n);
    }
    summary.path("hatefulmemes.images", "hatefulmemes/img");
    Ok(())
}
