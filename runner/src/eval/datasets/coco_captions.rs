//! COCO-format caption annotations (`captions_val2014.json`, `dataset_flickr30k_coco_style.json`):
//! what CIDEr scores against. Read here only to check that every test image has references.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::json_id::JsonId;
use super::{DatasetError, read_json};

#[derive(Deserialize)]
struct CocoFile {
    annotations: Vec<CocoCaption>,
}

#[derive(Deserialize)]
struct CocoCaption {
    image_id: JsonId,
    // Required so that a reference without text is reported as malformed; the text itself is
    // read by the CIDEr scorer.
    #[allow(dead_code)]
    caption: String,
}

/// The image ids (as strings, numbers in decimal) that have at least one reference caption.
pub fn captioned_image_ids(path: &Path) -> Result<HashSet<String>, DatasetError> {
    let file: CocoFile = read_json(path)?;
    Ok(file
        .annotations
        .into_iter()
        .map(|a| a.image_id.to_string())
        .collect())
}
