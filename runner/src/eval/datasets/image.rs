//! Image files of the evaluation datasets, recognised by their bytes: the reference names every
//! VQAv2 image `.jpg` whatever it holds, so the extension is only a hint.

use std::path::Path;

use ::image::{DynamicImage, ImageReader};

use super::DatasetError;

fn reader(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>, DatasetError> {
    let err = |e: std::io::Error| DatasetError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    ImageReader::open(path)
        .map_err(err)?
        .with_guessed_format()
        .map_err(err)
}

/// Decodes an image file by content.
pub fn decode(path: &Path) -> Result<DynamicImage, DatasetError> {
    reader(path)?.decode().map_err(|e| DatasetError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads only an image's header: whether the file exists, is a known format and its size.
pub fn probe(path: &Path) -> Result<(u32, u32), DatasetError> {
    reader(path)?
        .into_dimensions()
        .map_err(|e| DatasetError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}
