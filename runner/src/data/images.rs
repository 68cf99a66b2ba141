//! Image bytes to model-ready tensors: decoding by content (not by file extension) and the
//! pluggable CLIP preprocessing, plus the random horizontal flip of the reference trainer.
//!
//! Preprocessing is `model::preprocess::ImageProcessor` (shortest-side PIL-exact bicubic resize,
//! centre crop, CLIP mean/std) via [`ImageTransform::from_processor`], or any closure
//! `Fn(&DynamicImage) -> candle_core::Result<Tensor>` returning `(3, S, S)` via
//! [`ImageTransform::new`]. The only augmentation is OpenFlamingo's `RandomHorizontalFlip(p=0.5)`
//! applied to the stacked images of one call of `preprocess_image`: one decision per interleaved
//! document (all its images flip together) and one per batch for pairs (spec §4.1); it can be
//! switched off with [`ImageTransform::with_hflip`].

use std::io::Cursor;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use image::{DynamicImage, ImageReader};
use model::preprocess::ImageProcessor;

/// The preprocessing function type: a decoded image to a `(3, S, S)` f32 tensor.
pub type PreprocessFn = dyn Fn(&DynamicImage) -> candle_core::Result<Tensor> + Send + Sync;

/// Decodes image bytes, guessing the format from the content, and converts to RGB (PIL
/// `Image.open(...).convert("RGB")`: alpha dropped, grey replicated).
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage, String> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read image header: {e}"))?;
    if reader.format().is_none() {
        return Err(format!("unknown image format ({} bytes)", bytes.len()));
    }
    let img = reader
        .decode()
        .map_err(|e| format!("cannot decode image: {e}"))?;
    Ok(DynamicImage::ImageRgb8(img.to_rgb8()))
}

/// Image preprocessing for training: the CLIP transform plus the optional flip.
#[derive(Clone)]
pub struct ImageTransform {
    f: Arc<PreprocessFn>,
    size: usize,
    hflip: bool,
}

impl std::fmt::Debug for ImageTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageTransform")
            .field("size", &self.size)
            .field("hflip", &self.hflip)
            .finish()
    }
}

impl ImageTransform {
    /// A transform from a closure producing `(3, size, size)` tensors; the flip is on.
    pub fn new(
        size: usize,
        f: impl Fn(&DynamicImage) -> candle_core::Result<Tensor> + Send + Sync + 'static,
    ) -> Self {
        Self {
            f: Arc::new(f),
            size,
            hflip: true,
        }
    }

    /// The vision encoder's preprocessing (CPU tensors); the flip is on.
    pub fn from_processor(p: ImageProcessor) -> Self {
        let size = p.image_size;
        Self::new(size, move |img| p.preprocess(img, &Device::Cpu))
    }

    /// Turns the random horizontal flip on (the reference) or off.
    pub fn with_hflip(mut self, on: bool) -> Self {
        self.hflip = on;
        self
    }

    /// Whether the flip is on.
    pub fn hflip(&self) -> bool {
        self.hflip
    }

    /// Output side `S`.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Preprocesses one image, flipping it horizontally when `flip` (and the flip is on).
    pub fn apply(&self, img: &DynamicImage, flip: bool) -> Result<Tensor, String> {
        let t = (self.f)(img).map_err(|e| format!("preprocessing failed: {e}"))?;
        if t.dims() != [3, self.size, self.size] {
            return Err(format!(
                "preprocessing gave shape {:?}, expected [3, {s}, {s}]",
                t.dims(),
                s = self.size
            ));
        }
        let t = t
            .to_dtype(DType::F32)
            .map_err(|e| format!("preprocessing dtype: {e}"))?;
        if flip && self.hflip {
            t.flip(&[2]).map_err(|e| format!("flip failed: {e}"))
        } else {
            Ok(t)
        }
    }

    /// A zero image `(3, S, S)` used to pad image slots.
    pub fn zeros(&self) -> candle_core::Result<Tensor> {
        Tensor::zeros((3, self.size, self.size), DType::F32, &Device::Cpu)
    }
}
