//! Rendering scenes into RGB images (imageproc drawing, ab_glyph text) and encoding them as PNG.
//!
//! The layout is resolution independent: the same scene rendered at 64 px and at 128 px shows
//! the same picture, so larger renderings (used where a training filter wants bigger files)
//! resize back to what the eval images look like.

use std::sync::OnceLock;

use ab_glyph::{FontRef, PxScale};
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};
use imageproc::drawing::{draw_filled_circle_mut, draw_polygon_mut, draw_text_mut, text_size};
use imageproc::point::Point;

use super::SynthError;
use super::scene::{Band, COLUMNS, Degradation, Scene, Shape, Size};

/// DejaVu Sans Mono Bold (Bitstream Vera licence, see `runner/assets/`): legible at 18 px.
const FONT_BYTES: &[u8] = include_bytes!("../../../assets/DejaVuSansMono-Bold.ttf");

/// Fraction of the canvas height taken by the word band.
const BAND: f32 = 0.28;
/// Color of rendered words.
const INK: Rgb<u8> = Rgb([240, 240, 235]);

fn font() -> Result<&'static FontRef<'static>, SynthError> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_BYTES).ok())
        .as_ref()
        .ok_or_else(|| SynthError::Font("embedded DejaVuSansMono-Bold.ttf does not parse".into()))
}

/// Renders `scene` on a `side` x `side` canvas with uniform pixel noise of +-`noise` levels.
pub fn render(scene: &Scene, side: u32, noise: u8) -> Result<RgbImage, SynthError> {
    let mut img = RgbImage::from_pixel(side, side, Rgb(scene.background));
    let s = side as f32;
    let band_h = BAND * s;
    // The object area: the canvas minus the word band (centered when there is no word).
    let (area_y0, area_h) = match &scene.word {
        Some(w) if w.band == Band::Top => (band_h, s - band_h),
        Some(_) => (0.0, s - band_h),
        None => (band_h / 2.0, s - band_h),
    };
    let cell_w = s / COLUMNS as f32;
    let cell_h = area_h / 2.0;
    let cell = cell_w.min(cell_h);

    let mut jitter = scene.jitter.iter();
    for group in &scene.groups {
        // Shapes fill most of their cell: at 0.28 / 0.44 of a cell (12 and 19 pixels across on a
        // 64-pixel image) the tiny ViT learned colours but not shapes (a linear probe on its
        // pooled embedding read the main shape 26% of the time, against 40% now; chance 18%).
        let radius = match group.size {
            Size::Small => 0.36 * cell,
            Size::Large => 0.48 * cell,
        };
        let slack = (0.5 * cell - radius).max(0.0) * 0.8;
        let fill = Rgb(group.color.rgb());
        for &c in &group.cells {
            let (jx, jy) = jitter.next().copied().unwrap_or((0.0, 0.0));
            let cx = ((c % COLUMNS) as f32 + 0.5) * cell_w + jx * slack;
            let cy = area_y0 + ((c / COLUMNS) as f32 + 0.5) * cell_h + jy * slack;
            draw_shape(&mut img, group.shape, cx, cy, radius, fill);
        }
    }

    if let Some(word) = &scene.word {
        let font = font()?;
        let scale = PxScale::from(band_h);
        let (w, _) = text_size(scale, font, &word.text);
        let x = ((s - w as f32) / 2.0).round() as i32;
        let y = match word.band {
            Band::Top => 0,
            Band::Bottom => (s - band_h).round() as i32,
        };
        draw_text_mut(&mut img, INK, x, y, scale, font, &word.text);
    }

    let mut img = match scene.degradation {
        Degradation::None => img,
        Degradation::Blur => image::imageops::blur(&img, 0.09 * s),
        Degradation::Dark => {
            for p in img.pixels_mut() {
                for ch in p.0.iter_mut() {
                    *ch = (f32::from(*ch) * 0.1) as u8;
                }
            }
            img
        }
    };
    add_noise(&mut img, scene.noise_seed, noise);
    Ok(img)
}

/// Fills one shape centered at (cx, cy) with circumradius `r`.
fn draw_shape(img: &mut RgbImage, shape: Shape, cx: f32, cy: f32, r: f32, fill: Rgb<u8>) {
    use std::f32::consts::{FRAC_PI_2, PI};
    let regular = |n: usize, r: f32, phase: f32| -> Vec<(f32, f32)> {
        (0..n)
            .map(|k| {
                let a = phase + 2.0 * PI * k as f32 / n as f32;
                (cx + r * a.cos(), cy + r * a.sin())
            })
            .collect()
    };
    let corners = match shape {
        Shape::Circle => {
            draw_filled_circle_mut(
                img,
                (cx.round() as i32, cy.round() as i32),
                r.round() as i32,
                fill,
            );
            return;
        }
        // A square of the same visual weight as the circle (half side = 0.85 r).
        Shape::Square => {
            let h = 0.85 * r;
            vec![
                (cx - h, cy - h),
                (cx + h, cy - h),
                (cx + h, cy + h),
                (cx - h, cy + h),
            ]
        }
        Shape::Triangle => regular(3, r, -FRAC_PI_2),
        Shape::Diamond => vec![
            (cx, cy - r),
            (cx + 0.7 * r, cy),
            (cx, cy + r),
            (cx - 0.7 * r, cy),
        ],
        Shape::Star => (0..10)
            .map(|k| {
                let rr = if k % 2 == 0 { r } else { 0.45 * r };
                let a = -FRAC_PI_2 + PI * k as f32 / 5.0;
                (cx + rr * a.cos(), cy + rr * a.sin())
            })
            .collect(),
        Shape::Hexagon => regular(6, r, 0.0),
    };
    let mut poly: Vec<Point<i32>> = Vec::with_capacity(corners.len());
    for (x, y) in corners {
        let p = Point::new(x.round() as i32, y.round() as i32);
        if poly.last() != Some(&p) {
            poly.push(p);
        }
    }
    // imageproc rejects a closed path (first == last point).
    while poly.len() > 1 && poly.first() == poly.last() {
        poly.pop();
    }
    if poly.len() >= 3 {
        draw_polygon_mut(img, &poly, fill);
    }
}

/// Adds uniform noise in [-amplitude, amplitude] to every channel. A SplitMix64 stream keyed by
/// the scene's noise seed: cheap enough for every pixel even in unoptimised builds.
fn add_noise(img: &mut RgbImage, seed: u64, amplitude: u8) {
    if amplitude == 0 {
        return;
    }
    let span = 2 * u64::from(amplitude) + 1;
    let mut state = seed;
    let mut bits = 0u64;
    for (k, ch) in img.as_mut().iter_mut().enumerate() {
        if k % 8 == 0 {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            bits = z ^ (z >> 31);
        }
        let offset = ((bits & 0xFF) % span) as i16 - i16::from(amplitude);
        bits >>= 8;
        *ch = (i16::from(*ch) + offset).clamp(0, 255) as u8;
    }
}

/// Encodes an image as PNG bytes (deterministic for a given image).
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>, SynthError> {
    let mut bytes = Vec::new();
    PngEncoder::new(&mut bytes)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(|e| SynthError::Encode(e.to_string()))?;
    Ok(bytes)
}

/// Renders and encodes a scene as PNG.
pub fn scene_png(scene: &Scene, side: u32, noise: u8) -> Result<Vec<u8>, SynthError> {
    encode_png(&render(scene, side, noise)?)
}

/// Renders a scene as a PNG of at least `min_bytes` bytes, raising the pixel noise step by step
/// (deterministically) until the file is large enough: MMC4's loader drops images under 11 kB.
pub fn scene_png_at_least(
    scene: &Scene,
    side: u32,
    min_bytes: usize,
) -> Result<Vec<u8>, SynthError> {
    // Noise 2 suffices for almost every 96 px scene; start there to encode once.
    let mut noise = 2u8;
    loop {
        let png = scene_png(scene, side, noise)?;
        if png.len() >= min_bytes || noise >= 120 {
            return if png.len() >= min_bytes {
                Ok(png)
            } else {
                Err(SynthError::Encode(format!(
                    "cannot reach {min_bytes} PNG bytes at {side} px (got {})",
                    png.len()
                )))
            };
        }
        noise = noise.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::super::scene::{SceneSpec, item_rng, sample_scene};
    use super::*;

    #[test]
    fn renders_shapes_and_words_deterministically() {
        let mut rng = item_rng(3, "render", 0);
        let mut scene = sample_scene(&mut rng, &SceneSpec::TEXT);
        scene.degradation = Degradation::None;
        let a = scene_png(&scene, 64, 3).unwrap();
        let b = scene_png(&scene, 64, 3).unwrap();
        assert_eq!(a, b);
        let img = render(&scene, 64, 0).unwrap();
        // Some pixel carries the main group's color and some the word's ink.
        let fill = scene.main().color.rgb();
        assert!(img.pixels().any(|p| p.0 == fill));
        assert!(img.pixels().any(|p| p.0 == INK.0));
    }

    #[test]
    fn at_least_reaches_the_size() {
        let mut rng = item_rng(3, "render", 1);
        let scene = sample_scene(&mut rng, &SceneSpec::GENERAL);
        let png = scene_png_at_least(&scene, 128, 11_000).unwrap();
        assert!(png.len() >= 11_000);
    }
}
