//! The scene model of the synthetic world and its seeded sampling.
//!
//! A scene is a dark canvas with a grid of six cells (3 columns x 2 rows) for shapes and a
//! horizontal band (top or bottom) that may hold one rendered word. Shapes come in groups: all
//! objects of a group share shape, color and size; different groups in a scene differ in both
//! shape and color, so "the circle" or "the red shape" always names exactly one group.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest, Sha256};

/// The shapes a scene can contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
    Star,
    Hexagon,
}

impl Shape {
    /// Every shape, in a fixed order.
    pub const ALL: [Shape; 6] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Diamond,
        Shape::Star,
        Shape::Hexagon,
    ];

    /// The singular English noun.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Diamond => "diamond",
            Shape::Star => "star",
            Shape::Hexagon => "hexagon",
        }
    }

    /// The plural English noun.
    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
            Shape::Diamond => "diamonds",
            Shape::Star => "stars",
            Shape::Hexagon => "hexagons",
        }
    }
}

/// The colors a shape can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Color {
    Red,
    Green,
    Blue,
    Yellow,
    Orange,
    Purple,
    Pink,
    Cyan,
}

impl Color {
    /// Every color, in a fixed order.
    pub const ALL: [Color; 8] = [
        Color::Red,
        Color::Green,
        Color::Blue,
        Color::Yellow,
        Color::Orange,
        Color::Purple,
        Color::Pink,
        Color::Cyan,
    ];

    /// The English adjective.
    pub fn name(self) -> &'static str {
        match self {
            Color::Red => "red",
            Color::Green => "green",
            Color::Blue => "blue",
            Color::Yellow => "yellow",
            Color::Orange => "orange",
            Color::Purple => "purple",
            Color::Pink => "pink",
            Color::Cyan => "cyan",
        }
    }

    /// The fill color, chosen to be distinct from each other and from the dark backgrounds.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [225, 40, 40],
            Color::Green => [40, 185, 60],
            Color::Blue => [55, 95, 240],
            Color::Yellow => [245, 225, 40],
            Color::Orange => [250, 140, 25],
            Color::Purple => [155, 60, 215],
            Color::Pink => [250, 135, 195],
            Color::Cyan => [40, 215, 225],
        }
    }
}

/// The two object sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Size {
    Small,
    Large,
}

impl Size {
    /// The English adjective used in canonical answers.
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

/// The column of the 3 x 2 object grid an object sits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Column {
    Left,
    Middle,
    Right,
}

impl Column {
    /// The canonical answer word for a position question.
    pub fn name(self) -> &'static str {
        match self {
            Column::Left => "left",
            Column::Middle => "middle",
            Column::Right => "right",
        }
    }
}

/// Where the rendered word sits; the object grid takes the rest of the canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Band {
    Top,
    Bottom,
}

impl Band {
    /// The canonical answer word.
    pub fn name(self) -> &'static str {
        match self {
            Band::Top => "top",
            Band::Bottom => "bottom",
        }
    }
}

/// How a photo-like capture went wrong (VizWiz-style); degraded scenes are unanswerable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Degradation {
    /// A clean rendering.
    None,
    /// Heavily blurred: shapes and text can no longer be told apart.
    Blur,
    /// Nearly black: the exposure failed.
    Dark,
}

/// Number of grid cells (3 columns x 2 rows).
pub const CELLS: usize = 6;
/// Number of grid columns.
pub const COLUMNS: usize = 3;

/// The words that scenes may show; at most five letters so they fit the band at 64 px.
pub const WORDS: [&str; 48] = [
    "cat", "dog", "sun", "map", "box", "key", "cup", "hat", "pen", "bus", "egg", "fox", "jam",
    "owl", "pig", "toy", "van", "web", "ink", "bag", "cake", "fish", "bird", "milk", "rain",
    "snow", "lamp", "door", "book", "ship", "tree", "rose", "gold", "salt", "wind", "moon", "park",
    "shop", "open", "stop", "exit", "sale", "taxi", "cafe", "farm", "bank", "zoo", "hotel",
];

/// A group of identical objects.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The shape of every object in the group.
    pub shape: Shape,
    /// The color of every object in the group.
    pub color: Color,
    /// The size of every object in the group.
    pub size: Size,
    /// Grid cells (0..6, row-major) holding the group's objects; its length is the count.
    pub cells: Vec<usize>,
}

impl Group {
    /// How many objects the group has.
    pub fn count(&self) -> usize {
        self.cells.len()
    }

    /// The column of a single-object group; `None` when the group has several objects.
    pub fn column(&self) -> Option<Column> {
        match self.cells.as_slice() {
            [cell] => Some(match cell % COLUMNS {
                0 => Column::Left,
                1 => Column::Middle,
                _ => Column::Right,
            }),
            _ => None,
        }
    }
}

/// A word rendered into the scene.
#[derive(Clone, Debug, PartialEq)]
pub struct Word {
    /// The lowercase text.
    pub text: String,
    /// The band it is drawn in.
    pub band: Band,
}

/// One synthetic scene: everything the renderer and the language generator need.
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    /// Background fill (a dark, slightly tinted gray).
    pub background: [u8; 3],
    /// The object groups; `groups[0]` is the main group, the others are distractors.
    pub groups: Vec<Group>,
    /// The rendered word, if any.
    pub word: Option<Word>,
    /// Capture failure, if any.
    pub degradation: Degradation,
    /// Per-object sub-cell offsets in [-1, 1] (x, y), in group then cell order.
    pub jitter: Vec<(f32, f32)>,
    /// Seed of the pixel noise, so renderings are reproducible.
    pub noise_seed: u64,
}

impl Scene {
    /// The main group (`groups[0]`).
    pub fn main(&self) -> &Group {
        &self.groups[0]
    }

    /// The group with this shape, if the scene has one.
    pub fn group_with_shape(&self, shape: Shape) -> Option<&Group> {
        self.groups.iter().find(|g| g.shape == shape)
    }

    /// The group with this color, if the scene has one.
    pub fn group_with_color(&self, color: Color) -> Option<&Group> {
        self.groups.iter().find(|g| g.color == color)
    }

    /// Total number of objects.
    pub fn object_count(&self) -> usize {
        self.groups.iter().map(Group::count).sum()
    }
}

/// What kind of scenes a dataset draws.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SceneSpec {
    /// Probability that the scene shows a word.
    pub word_prob: f64,
    /// Largest number of distractor groups.
    pub max_distractors: usize,
    /// Largest main-group count (1..=4).
    pub max_count: usize,
    /// Probability of a capture failure (blur or darkness).
    pub degradation_prob: f64,
}

impl SceneSpec {
    /// Everyday scenes: a main group, up to two distractors, a word in most images.
    pub const GENERAL: SceneSpec = SceneSpec {
        word_prob: 0.6,
        max_distractors: 2,
        max_count: 4,
        degradation_prob: 0.0,
    };
    /// Scenes built around text (TextVQA-like): always a word.
    pub const TEXT: SceneSpec = SceneSpec {
        word_prob: 1.0,
        max_distractors: 2,
        max_count: 4,
        degradation_prob: 0.0,
    };
    /// A single group, sometimes with a word, a quarter of them badly captured (VizWiz-like).
    pub const CAPTURE: SceneSpec = SceneSpec {
        word_prob: 0.5,
        max_distractors: 0,
        max_count: 4,
        degradation_prob: 0.25,
    };
    /// Meme pictures: a main group and at most one distractor, no word (the text is separate).
    pub const MEME: SceneSpec = SceneSpec {
        word_prob: 0.0,
        max_distractors: 1,
        max_count: 3,
        degradation_prob: 0.0,
    };
}

/// A reproducible random stream for one item of one dataset: the same (seed, domain, index)
/// always gives the same stream, and different items are independent.
pub fn item_rng(seed: u64, domain: &str, index: u64) -> ChaCha8Rng {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update((domain.len() as u64).to_le_bytes());
    hasher.update(domain.as_bytes());
    hasher.update(index.to_le_bytes());
    ChaCha8Rng::from_seed(hasher.finalize().into())
}

/// Picks one element of a non-empty slice.
pub fn pick<T: Copy>(rng: &mut impl Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// Draws a scene following `spec`.
pub fn sample_scene(rng: &mut impl Rng, spec: &SceneSpec) -> Scene {
    let mut shapes = Shape::ALL.to_vec();
    shapes.shuffle(rng);
    let mut colors = Color::ALL.to_vec();
    colors.shuffle(rng);
    let mut cells: Vec<usize> = (0..CELLS).collect();
    cells.shuffle(rng);

    let count = rng.random_range(1..=spec.max_count.clamp(1, CELLS));
    let room = CELLS - count;
    let distractors = rng.random_range(0..=spec.max_distractors.min(room));
    let mut groups = Vec::with_capacity(1 + distractors);
    let mut next_cell = 0;
    for g in 0..=distractors {
        let n = if g == 0 { count } else { 1 };
        let mut group_cells = cells[next_cell..next_cell + n].to_vec();
        group_cells.sort_unstable();
        next_cell += n;
        groups.push(Group {
            shape: shapes[g],
            color: colors[g],
            size: if rng.random_bool(0.5) {
                Size::Small
            } else {
                Size::Large
            },
            cells: group_cells,
        });
    }

    let word = rng.random_bool(spec.word_prob).then(|| Word {
        text: pick(rng, &WORDS).to_string(),
        band: if rng.random_bool(0.5) {
            Band::Top
        } else {
            Band::Bottom
        },
    });
    let degradation = if rng.random_bool(spec.degradation_prob) {
        if rng.random_bool(0.5) {
            Degradation::Blur
        } else {
            Degradation::Dark
        }
    } else {
        Degradation::None
    };
    let base = rng.random_range(18..=58u8);
    let background = [
        base.saturating_add(rng.random_range(0..=10)),
        base.saturating_add(rng.random_range(0..=10)),
        base.saturating_add(rng.random_range(0..=10)),
    ];
    let objects: usize = groups.iter().map(Group::count).sum();
    let jitter = (0..objects)
        .map(|_| (rng.random_range(-1.0..=1.0), rng.random_range(-1.0..=1.0)))
        .collect();
    Scene {
        background,
        groups,
        word,
        degradation,
        jitter,
        noise_seed: rng.random(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_distinct_and_cells_disjoint() {
        for i in 0..200 {
            let mut rng = item_rng(7, "test", i);
            let scene = sample_scene(&mut rng, &SceneSpec::GENERAL);
            let mut used = Vec::new();
            for (a, g) in scene.groups.iter().enumerate() {
                assert!((1..=4).contains(&scene.main().count()));
                for h in &scene.groups[a + 1..] {
                    assert_ne!(g.shape, h.shape);
                    assert_ne!(g.color, h.color);
                }
                used.extend(g.cells.iter().copied());
            }
            let n = used.len();
            used.sort_unstable();
            used.dedup();
            assert_eq!(used.len(), n);
            assert_eq!(scene.jitter.len(), scene.object_count());
        }
    }

    #[test]
    fn item_rng_is_reproducible_and_item_specific() {
        let a: u64 = item_rng(1, "coco", 3).random();
        let b: u64 = item_rng(1, "coco", 3).random();
        let c: u64 = item_rng(1, "coco", 4).random();
        let d: u64 = item_rng(2, "coco", 3).random();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}
