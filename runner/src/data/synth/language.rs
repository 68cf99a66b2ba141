//! Text about scenes: captions in three styles, questions with ten annotator answers for four
//! VQA flavours, meme texts with their labels, and the small body of "world knowledge" that the
//! OK-VQA-like questions rely on.
//!
//! Every answer is lowercase and free of punctuation, so the VQA answer normalisation leaves the
//! canonical answers unchanged.

use rand::Rng;
use rand::seq::SliceRandom;

use super::scene::{Band, Color, Column, Degradation, Group, Scene, Shape, Size, pick};

/// An English number word for 0..=10.
pub fn number_word(n: usize) -> &'static str {
    const WORDS: [&str; 11] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    WORDS.get(n).copied().unwrap_or("many")
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn size_word(rng: &mut impl Rng, size: Size) -> &'static str {
    match size {
        Size::Small => pick(rng, &["small", "small", "little", "tiny"]),
        Size::Large => pick(rng, &["large", "big", "big", "large"]),
    }
}

/// "a red circle", "two small blue squares", ...: a group with its count, optionally its size.
pub fn group_phrase(rng: &mut impl Rng, g: &Group, with_size: bool) -> String {
    let size = if with_size {
        format!("{} ", size_word(rng, g.size))
    } else {
        String::new()
    };
    if g.count() == 1 {
        let article = if with_size || !matches!(g.color, Color::Orange) {
            "a"
        } else {
            "an"
        };
        format!("{article} {size}{} {}", g.color.name(), g.shape.name())
    } else {
        format!(
            "{} {size}{} {}",
            number_word(g.count()),
            g.color.name(),
            g.shape.plural()
        )
    }
}

/// All groups of a scene joined as an English list ("a, b and c").
fn list_groups(rng: &mut impl Rng, scene: &Scene) -> String {
    let parts: Vec<String> = scene
        .groups
        .iter()
        .map(|g| {
            let with_size = rng.random_bool(0.5);
            group_phrase(rng, g, with_size)
        })
        .collect();
    join_list(&parts)
}

fn join_list(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn verb(g: &Group, singular: &'static str, plural: &'static str) -> &'static str {
    if g.count() == 1 { singular } else { plural }
}

fn column_phrase(g: &Group) -> Option<&'static str> {
    g.column().map(|c| match c {
        Column::Left => "on the left",
        Column::Right => "on the right",
        Column::Middle => "in the middle",
    })
}

/// Five COCO-style reference captions: short, plain, one sentence each, all different.
pub fn coco_captions(rng: &mut impl Rng, scene: &Scene) -> Vec<String> {
    let mut ids: Vec<usize> = (0..8).collect();
    ids.shuffle(rng);
    ids.into_iter()
        .take(5)
        .map(|id| coco_caption(rng, scene, id))
        .collect()
}

fn coco_caption(rng: &mut impl Rng, scene: &Scene, template: usize) -> String {
    let main = scene.main();
    let main_with_size = rng.random_bool(0.5);
    let m = group_phrase(rng, main, main_with_size);
    let all = list_groups(rng, scene);
    let others: Vec<String> = scene.groups[1..]
        .iter()
        .map(|g| group_phrase(rng, g, false))
        .collect();
    let background = pick(
        rng,
        &[
            "on a dark background",
            "on a black background",
            "against a gray background",
        ],
    );
    let word = scene.word.as_ref();
    let text = match template {
        0 => format!("{all} {background}"),
        1 => format!("a picture of {all}"),
        2 if !others.is_empty() => format!("{m} next to {}", join_list(&others)),
        2 => format!("{m} by itself {background}"),
        3 => {
            let be = verb(main, "is", "are");
            match word {
                Some(w) => format!("there {be} {m} and the word {} in the image", w.text),
                None => format!("there {be} {m} in the image"),
            }
        }
        4 => match word {
            Some(w) => format!("an image with {all} and the text {}", w.text),
            None => format!("an image with {all} and no text"),
        },
        5 => match word {
            Some(w) => format!("the word {} written {} {}", w.text, above_below(w.band), m),
            None => format!("simple shapes: {all}"),
        },
        6 => match column_phrase(main) {
            Some(p) => format!("a drawing of {m} {p}"),
            None => format!("a drawing of {all}"),
        },
        _ => {
            format!(
                "{} {} {background}",
                number_word(scene.object_count()),
                if scene.object_count() == 1 {
                    "shape"
                } else {
                    "shapes"
                }
            ) + &format!(" including {m}")
        }
    };
    format!("{}.", capitalise(&text))
}

fn above_below(band: Band) -> &'static str {
    match band {
        Band::Top => "above",
        Band::Bottom => "below",
    }
}

/// Five Flickr30K-style reference captions: longer and narrative, with verbs of position.
pub fn flickr_captions(rng: &mut impl Rng, scene: &Scene) -> Vec<String> {
    let mut ids: Vec<usize> = (0..7).collect();
    ids.shuffle(rng);
    ids.into_iter()
        .take(5)
        .map(|id| flickr_caption(rng, scene, id))
        .collect()
}

fn flickr_caption(rng: &mut impl Rng, scene: &Scene, template: usize) -> String {
    let main = scene.main();
    let m = group_phrase(rng, main, true);
    let all = list_groups(rng, scene);
    let others: Vec<String> = scene.groups[1..]
        .iter()
        .map(|g| group_phrase(rng, g, true))
        .collect();
    let sit = verb(main, "sits", "sit");
    let word = scene.word.as_ref();
    let text = match template {
        0 => {
            let place = column_phrase(main).unwrap_or("in the picture");
            if others.is_empty() {
                format!("{m} {sit} alone {place}")
            } else {
                format!(
                    "{m} {sit} {place} while {} {} nearby",
                    join_list(&others),
                    {
                        if scene.groups.len() == 2 && scene.groups[1].count() == 1 {
                            "waits"
                        } else {
                            "wait"
                        }
                    }
                )
            }
        }
        1 => match word {
            Some(w) => format!("someone has drawn {all} and written the word {}", w.text),
            None => format!("someone has drawn {all} on a dark screen"),
        },
        2 => match word {
            Some(w) => format!(
                "the word {} is printed at the {}, {} {all}",
                w.text,
                w.band.name(),
                match w.band {
                    Band::Top => "above",
                    Band::Bottom => "under",
                }
            ),
            None => format!("nothing is written here, only {all} can be seen"),
        },
        3 if !others.is_empty() => format!("{m} can be seen alongside {}", join_list(&others)),
        3 => format!("{m} {} the whole dark frame", verb(main, "fills", "fill")),
        4 => format!("here we see {all} against a dark backdrop"),
        5 => format!(
            "{m}, drawn in {}, {} on a dark screen",
            main.color.name(),
            verb(main, "floats", "float")
        ),
        _ => {
            format!(
                "a dark picture showing {} {} shape{}",
                number_word(scene.object_count()),
                if scene.groups.len() == 1 {
                    "similar"
                } else {
                    "colorful"
                },
                if scene.object_count() == 1 { "" } else { "s" }
            ) + &match word {
                Some(w) => format!(" and the word {}", w.text),
                None => String::new(),
            }
        }
    };
    format!("{}.", capitalise(&text))
}

/// One LAION-style alt text: terse, web-like, sometimes with boilerplate.
pub fn laion_caption(rng: &mut impl Rng, scene: &Scene) -> String {
    let main = scene.main();
    let shape = if main.count() == 1 {
        main.shape.name()
    } else {
        main.shape.plural()
    };
    let word = scene.word.as_ref().map(|w| w.text.as_str());
    match rng.random_range(0..7) {
        0 => format!("{} {shape} clipart", main.color.name()),
        1 => format!("{} {} {shape} icon", main.count(), main.color.name()),
        2 => match word {
            Some(w) => format!("{w} sign with {}", group_phrase(rng, main, false)),
            None => format!("{} {shape} on dark background", main.color.name()),
        },
        3 => format!("stock illustration: {}", list_groups(rng, scene)),
        4 => format!(
            "{} {} Vector Shape | Free Download",
            capitalise(main.color.name()),
            capitalise(shape)
        ),
        5 => format!(
            "{} - simple geometric art",
            capitalise(&list_groups(rng, scene))
        ),
        _ => match word {
            Some(w) => format!("the word {w} and {}", group_phrase(rng, main, true)),
            None => group_phrase(rng, main, true),
        },
    }
}

/// Colors paired with things of that color, for the knowledge questions.
#[derive(Clone, Copy, Debug)]
pub struct ColorKnowledge {
    /// A fruit of this color (most common answer, alternative), if there is a well-known one.
    pub fruit: Option<(&'static str, &'static str)>,
    /// An animal of this color.
    pub animal: (&'static str, &'static str),
    /// Something in nature or daily life of this color.
    pub thing: (&'static str, &'static str),
}

/// What the world "knows" about a color.
pub fn color_knowledge(color: Color) -> ColorKnowledge {
    let (fruit, animal, thing) = match color {
        Color::Red => (
            Some(("apple", "strawberry")),
            ("ladybug", "cardinal"),
            ("tomato", "fire truck"),
        ),
        Color::Green => (
            Some(("lime", "kiwi")),
            ("frog", "turtle"),
            ("grass", "leaf"),
        ),
        Color::Blue => (
            Some(("blueberry", "plum")),
            ("whale", "bluebird"),
            ("sky", "ocean"),
        ),
        Color::Yellow => (
            Some(("banana", "lemon")),
            ("chick", "canary"),
            ("sun", "corn"),
        ),
        Color::Orange => (
            Some(("orange", "tangerine")),
            ("tiger", "fox"),
            ("pumpkin", "carrot"),
        ),
        Color::Purple => (
            Some(("grape", "plum")),
            ("jellyfish", "octopus"),
            ("eggplant", "lavender"),
        ),
        Color::Pink => (
            Some(("watermelon", "grapefruit")),
            ("flamingo", "pig"),
            ("bubblegum", "candy"),
        ),
        Color::Cyan => (None, ("dolphin", "parrot"), ("swimming pool", "ice")),
    };
    ColorKnowledge {
        fruit,
        animal,
        thing,
    }
}

/// An everyday object with this shape (most common answer, alternative).
pub fn shape_object(shape: Shape) -> (&'static str, &'static str) {
    match shape {
        Shape::Circle => ("ball", "wheel"),
        Shape::Square => ("box", "window"),
        Shape::Triangle => ("pyramid", "tent"),
        Shape::Diamond => ("kite", "gem"),
        Shape::Star => ("starfish", "badge"),
        Shape::Hexagon => ("honeycomb", "bolt"),
    }
}

/// How many corners a shape has.
pub fn shape_corners(shape: Shape) -> usize {
    match shape {
        Shape::Circle => 0,
        Shape::Square | Shape::Diamond => 4,
        Shape::Triangle => 3,
        Shape::Star => 10,
        Shape::Hexagon => 6,
    }
}

fn plural_fruit(fruit: &str) -> String {
    match fruit {
        "strawberry" | "blueberry" => format!("{}ies", &fruit[..fruit.len() - 1]),
        "tomato" => "tomatoes".to_string(),
        "peach" => "peaches".to_string(),
        _ => format!("{fruit}s"),
    }
}

/// One sentence of world knowledge (for the text corpus and interleaved documents).
pub fn knowledge_fact(rng: &mut impl Rng) -> String {
    let color = pick(rng, &Color::ALL);
    let shape = pick(rng, &Shape::ALL);
    let k = color_knowledge(color);
    let c = color.name();
    let text = match rng.random_range(0..7) {
        0 => match k.fruit {
            Some((f, g)) => format!("{} and {} are {c}", plural_fruit(f), plural_fruit(g)),
            None => format!("there is no common {c} fruit"),
        },
        1 => match k.fruit {
            Some((f, _)) => format!("a {c} fruit is the {f}"),
            None => format!("a {c} animal is the {}", k.animal.0),
        },
        2 => format!(
            "the {} is a {c} animal, and so is the {}",
            k.animal.0, k.animal.1
        ),
        3 => format!("the {} is {c}, like the {}", k.thing.0, k.thing.1),
        4 => {
            let (o, p) = shape_object(shape);
            format!("a {o} looks like a {}, and so does a {p}", shape.name())
        }
        5 => format!(
            "a {} has {} corners",
            shape.name(),
            number_word(shape_corners(shape))
        ),
        _ => format!("{} is the color of the {}", c, k.thing.0),
    };
    format!("{}.", capitalise(&text))
}

/// A question with its ten annotator answers, in the fields the VQA annotation files need.
#[derive(Clone, Debug, PartialEq)]
pub struct Qa {
    /// The question text.
    pub question: String,
    /// The majority answer (`multiple_choice_answer`).
    pub answer: String,
    /// Ten annotator answers; the majority (at least 7) equal `answer`.
    pub answers: Vec<String>,
    /// Official VQA answer type: "yes/no", "number", "other" (VizWiz adds "unanswerable").
    pub answer_type: &'static str,
    /// The question's type (its opening words in VQAv2, a category elsewhere).
    pub question_type: &'static str,
}

/// Ten answers: the canonical one at least seven times, the rest drawn from `alternatives`.
fn ten_answers(rng: &mut impl Rng, canonical: &str, alternatives: &[String]) -> Vec<String> {
    let mut answers = vec![canonical.to_string(); 10];
    if alternatives.is_empty() {
        return answers;
    }
    let disagree = pick(rng, &[0usize, 0, 0, 1, 1, 1, 2, 2, 3]);
    let mut slots: Vec<usize> = (0..10).collect();
    slots.shuffle(rng);
    for &slot in &slots[..disagree] {
        answers[slot] = alternatives[rng.random_range(0..alternatives.len())].clone();
    }
    answers
}

fn qa(
    rng: &mut impl Rng,
    question: String,
    answer: &str,
    alternatives: &[&str],
    answer_type: &'static str,
    question_type: &'static str,
) -> Qa {
    let alts: Vec<String> = alternatives.iter().map(|s| s.to_string()).collect();
    Qa {
        question,
        answer: answer.to_string(),
        answers: ten_answers(rng, answer, &alts),
        answer_type,
        question_type,
    }
}

fn neighbour_color(c: Color) -> Color {
    match c {
        Color::Red => Color::Orange,
        Color::Orange => Color::Yellow,
        Color::Yellow => Color::Orange,
        Color::Green => Color::Cyan,
        Color::Cyan => Color::Blue,
        Color::Blue => Color::Purple,
        Color::Purple => Color::Pink,
        Color::Pink => Color::Purple,
    }
}

fn shape_alternatives(shape: Shape) -> &'static [&'static str] {
    match shape {
        Shape::Circle => &["round", "oval"],
        Shape::Square => &["rectangle", "box"],
        Shape::Triangle => &["pyramid"],
        Shape::Diamond => &["rhombus", "kite"],
        Shape::Star => &["starfish"],
        Shape::Hexagon => &["octagon", "pentagon"],
    }
}

/// "the circle", "the red circles", "the red shape": a unique reference to a group, naming
/// its shape (when `by_shape`) or its color.
fn reference(g: &Group, by_shape: bool) -> String {
    let plural = g.count() > 1;
    if by_shape {
        format!(
            "the {}",
            if plural {
                g.shape.plural()
            } else {
                g.shape.name()
            }
        )
    } else {
        format!(
            "the {} {}",
            g.color.name(),
            if plural { "shapes" } else { "shape" }
        )
    }
}

fn be(g: &Group) -> &'static str {
    if g.count() > 1 { "are" } else { "is" }
}

/// A VQAv2-like question about color, shape, count, size, position or presence.
pub fn vqav2_qa(rng: &mut impl Rng, scene: &Scene) -> Qa {
    let g = &scene.groups[rng.random_range(0..scene.groups.len())];
    match rng.random_range(0..8) {
        0 => {
            let q = match rng.random_range(0..3) {
                0 => format!("what color {} {}?", be(g), reference(g, true)),
                1 => format!("which color does {} have?", reference(g, true)),
                _ => format!("what is the color of {}?", reference(g, true)),
            };
            let near = neighbour_color(g.color).name();
            let dark = format!("dark {}", g.color.name());
            qa(
                rng,
                q,
                g.color.name(),
                &[near, &dark],
                "other",
                "what color is the",
            )
        }
        1 => {
            let q = match rng.random_range(0..3) {
                0 => format!("what shape {} {}?", be(g), reference(g, false)),
                1 => format!("what is {}?", reference(g, false)),
                _ => format!("which shape is {}?", g.color.name()),
            };
            qa(
                rng,
                q,
                g.shape.name(),
                shape_alternatives(g.shape),
                "other",
                "what shape is the",
            )
        }
        2 | 3 => {
            let (q, n) = if rng.random_bool(0.1) {
                let absent = Shape::ALL
                    .iter()
                    .copied()
                    .find(|s| scene.group_with_shape(*s).is_none())
                    .unwrap_or(g.shape);
                let n = scene.group_with_shape(absent).map_or(0, Group::count);
                (format!("how many {} are there?", absent.plural()), n)
            } else {
                let q = match rng.random_range(0..3) {
                    0 => format!("how many {} are there?", g.shape.plural()),
                    1 => format!("how many {} shapes can you see?", g.color.name()),
                    _ => format!("what is the number of {}?", g.shape.plural()),
                };
                (q, g.count())
            };
            let canonical = n.to_string();
            let word = number_word(n);
            let more = (n + 1).to_string();
            let less = n.saturating_sub(1).to_string();
            qa(
                rng,
                q,
                &canonical,
                &[word, &more, &less],
                "number",
                "how many",
            )
        }
        4 => {
            let q = match rng.random_range(0..2) {
                0 => format!("is {} big or small?", reference(g, true)),
                _ => format!("what size {} {}?", be(g), reference(g, false)),
            };
            let alts: &[&str] = match g.size {
                Size::Small => &["tiny", "little"],
                Size::Large => &["big", "huge"],
            };
            qa(rng, q, g.size.name(), alts, "other", "what size is the")
        }
        5 if g.column().is_some() || scene.word.is_some() => match g.column() {
            Some(col) if scene.word.is_none() || rng.random_bool(0.6) => {
                let q = match rng.random_range(0..2) {
                    0 => format!("where is {}?", reference(g, rng.random_bool(0.5))),
                    _ => format!("on which side is {}?", reference(g, true)),
                };
                let alts: &[&str] = match col {
                    Column::Left => &["on left", "left side"],
                    Column::Right => &["on right", "right side"],
                    Column::Middle => &["center", "middle one"],
                };
                qa(rng, q, col.name(), alts, "other", "where is the")
            }
            _ => {
                let band = scene.word.as_ref().map_or(Band::Top, |w| w.band);
                let q = "is the text at the top or at the bottom?".to_string();
                qa(rng, q, band.name(), &["up", "down"], "other", "is the")
            }
        },
        _ => {
            let yes = rng.random_bool(0.5);
            let (shape, color) = if yes {
                (g.shape, g.color)
            } else {
                // An absent combination: a color no group has, or a shape no group has.
                let color = Color::ALL
                    .iter()
                    .copied()
                    .filter(|c| scene.group_with_color(*c).is_none())
                    .nth(rng.random_range(0..3))
                    .unwrap_or(g.color);
                (g.shape, color)
            };
            let present = scene
                .groups
                .iter()
                .any(|h| h.shape == shape && h.color == color);
            let q = match rng.random_range(0..2) {
                0 => format!("is there a {} {}?", color.name(), shape.name()),
                _ => format!("are there any {} {}?", color.name(), shape.plural()),
            };
            let (answer, other) = if present {
                ("yes", "no")
            } else {
                ("no", "yes")
            };
            qa(rng, q, answer, &[other], "yes/no", "is there a")
        }
    }
}

/// An OK-VQA-like question: the answer needs a fact about the seen color or shape.
pub fn okvqa_qa(rng: &mut impl Rng, scene: &Scene) -> Qa {
    let g = &scene.groups[rng.random_range(0..scene.groups.len())];
    let k = color_knowledge(g.color);
    let by_shape = reference(g, true);
    match rng.random_range(0..5) {
        0 if k.fruit.is_some() => {
            let (f, alt) = k.fruit.unwrap_or(("", ""));
            let q = match rng.random_range(0..3) {
                0 => format!("which fruit has the same color as {by_shape}?"),
                1 => format!("name a fruit that is the color of {by_shape}."),
                _ => format!("what fruit would be the same color as {by_shape}?"),
            };
            qa(rng, q, f, &[alt], "other", "food")
        }
        0 | 1 => {
            let q = match rng.random_range(0..2) {
                0 => format!("what animal has the color of {by_shape}?"),
                _ => format!("which animal is usually the same color as {by_shape}?"),
            };
            qa(rng, q, k.animal.0, &[k.animal.1], "other", "animals")
        }
        2 => {
            let q = match rng.random_range(0..2) {
                0 => format!("what in nature has the same color as {by_shape}?"),
                _ => format!("name something that is the color of {by_shape}."),
            };
            qa(rng, q, k.thing.0, &[k.thing.1], "other", "nature")
        }
        3 => {
            let by_color = reference(g, false);
            let (o, alt) = shape_object(g.shape);
            let q = match rng.random_range(0..2) {
                0 => format!("what everyday object is shaped like {by_color}?"),
                _ => format!("what common thing looks like {by_color}?"),
            };
            qa(rng, q, o, &[alt], "other", "objects")
        }
        _ => {
            let by_color = reference(g, false);
            let n = shape_corners(g.shape);
            let q = match rng.random_range(0..2) {
                0 => format!("how many corners does {by_color} have?"),
                _ => format!("how many points does {by_color} have?"),
            };
            let canonical = n.to_string();
            qa(rng, q, &canonical, &[number_word(n)], "number", "math")
        }
    }
}

/// A misreading of a word: two neighbouring letters swapped (or the word itself when too short).
fn misreading(rng: &mut impl Rng, word: &str) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.len() >= 2 {
        let i = rng.random_range(0..chars.len() - 1);
        chars.swap(i, i + 1);
    }
    chars.into_iter().collect()
}

/// A TextVQA-like question: read the rendered word. `None` when the scene shows no word.
pub fn textvqa_qa(rng: &mut impl Rng, scene: &Scene) -> Option<Qa> {
    let word = scene.word.as_ref()?;
    let g = &scene.groups[rng.random_range(0..scene.groups.len())];
    let q = match rng.random_range(0..5) {
        0 => "what word is written in the image?".to_string(),
        1 => "what does the text say?".to_string(),
        2 => format!("what is written at the {}?", word.band.name()),
        3 => format!(
            "what word appears {} the shapes?",
            match word.band {
                Band::Top => "above",
                Band::Bottom => "below",
            }
        ),
        _ => format!(
            "what is the word next to {}?",
            reference(g, rng.random_bool(0.5))
        ),
    };
    let typo = misreading(rng, &word.text);
    let answer = word.text.clone();
    Some(qa(rng, q, &answer, &[&typo], "other", "reading"))
}

/// A VizWiz-like question: conversational, about the one group in view; badly captured images
/// and questions about absent text are answered "unanswerable".
pub fn vizwiz_qa(rng: &mut impl Rng, scene: &Scene) -> Qa {
    let g = scene.main();
    let kind = rng.random_range(0..5);
    let asked_shape = if rng.random_bool(0.5) {
        g.shape
    } else {
        pick(rng, &Shape::ALL)
    };
    let q = match kind {
        0 => pick(
            rng,
            &["What color is this?", "Can you tell me what color this is?"],
        )
        .to_string(),
        1 => pick(rng, &["What shape is this?", "What is this shape please?"]).to_string(),
        2 => pick(
            rng,
            &[
                "How many are there?",
                "How many things are in this picture?",
            ],
        )
        .to_string(),
        3 => pick(
            rng,
            &["What does this say?", "Can you read what is written here?"],
        )
        .to_string(),
        _ => format!("Is this a {}?", asked_shape.name()),
    };
    let unreadable = scene.degradation != Degradation::None || (kind == 3 && scene.word.is_none());
    if unreadable {
        let alts: &[&str] = match scene.degradation {
            Degradation::Dark => &["unsuitable image", "too dark"],
            Degradation::Blur => &["unsuitable image", "blurry"],
            Degradation::None => &["unsuitable image", "nothing"],
        };
        return qa(rng, q, "unanswerable", alts, "unanswerable", "unanswerable");
    }
    match kind {
        0 => {
            let near = neighbour_color(g.color).name();
            qa(rng, q, g.color.name(), &[near], "other", "other")
        }
        1 => qa(
            rng,
            q,
            g.shape.name(),
            shape_alternatives(g.shape),
            "other",
            "other",
        ),
        2 => {
            let n = g.count().to_string();
            qa(rng, q, &n, &[number_word(g.count())], "number", "number")
        }
        3 => {
            let word = scene
                .word
                .as_ref()
                .map_or(String::new(), |w| w.text.clone());
            let typo = misreading(rng, &word);
            qa(rng, q, &word, &[&typo], "other", "other")
        }
        _ => {
            let yes = asked_shape == g.shape;
            let (answer, other) = if yes { ("yes", "no") } else { ("no", "yes") };
            qa(rng, q, answer, &[other], "yes/no", "yes/no")
        }
    }
}

/// A meme: its overlaid text and its label (1 = "hateful").
#[derive(Clone, Debug, PartialEq)]
pub struct Meme {
    /// The meme text (lowercase, like the real dataset's OCR text).
    pub text: String,
    /// 1 when the text is hostile towards something the picture shows, else 0.
    pub label: u8,
}

/// Writes a meme text for `scene` with the requested label. The label depends on text and image
/// together: a meme is hateful (1) exactly when its text is hostile AND the group it names is in
/// the picture. Benign memes are split evenly between friendly texts about what is shown,
/// friendly texts about something absent and hostile texts about something absent.
pub fn meme(rng: &mut impl Rng, scene: &Scene, hateful: bool) -> Meme {
    let (hostile, present) = if hateful {
        (true, true)
    } else {
        match rng.random_range(0..3) {
            0 => (false, true),
            1 => (false, false),
            _ => (true, false),
        }
    };
    let g = scene.main();
    let target = if present {
        match rng.random_range(0..3) {
            0 => format!("{} things", g.color.name()),
            1 => g.shape.plural().to_string(),
            _ => format!("{} {}", g.color.name(), g.shape.plural()),
        }
    } else {
        let colors: Vec<Color> = Color::ALL
            .iter()
            .copied()
            .filter(|c| scene.group_with_color(*c).is_none())
            .collect();
        let shapes: Vec<Shape> = Shape::ALL
            .iter()
            .copied()
            .filter(|s| scene.group_with_shape(*s).is_none())
            .collect();
        if rng.random_bool(0.5) {
            format!("{} things", pick(rng, &colors).name())
        } else {
            pick(rng, &shapes).plural().to_string()
        }
    };
    let text = if hostile {
        match rng.random_range(0..5) {
            0 => format!("nobody wants {target} around here"),
            1 => format!("get rid of all the {target}"),
            2 => format!("{target} ruin everything"),
            3 => format!("i can't stand {target}"),
            _ => format!("keep those {target} away from us"),
        }
    } else {
        match rng.random_range(0..5) {
            0 => format!("everyone loves {target}"),
            1 => format!("{target} make my day"),
            2 => format!("what a lovely bunch of {target}"),
            3 => format!("i could look at {target} all day"),
            _ => format!("more {target} please"),
        }
    };
    Meme {
        text,
        label: u8::from(hateful),
    }
}

#[cfg(test)]
mod tests {
    use super::super::scene::{SceneSpec, item_rng, sample_scene};
    use super::*;

    #[test]
    fn answers_have_a_clear_majority() {
        for i in 0..300 {
            let mut rng = item_rng(5, "lang", i);
            let scene = sample_scene(&mut rng, &SceneSpec::GENERAL);
            for q in [vqav2_qa(&mut rng, &scene), okvqa_qa(&mut rng, &scene)] {
                assert_eq!(q.answers.len(), 10);
                let agree = q.answers.iter().filter(|a| **a == q.answer).count();
                assert!(agree >= 7, "{q:?}");
                assert!(
                    q.answer
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == ' '),
                    "{q:?}"
                );
            }
        }
    }

    #[test]
    fn captions_differ_and_name_the_main_group() {
        let mut rng = item_rng(5, "cap", 0);
        let scene = sample_scene(&mut rng, &SceneSpec::GENERAL);
        for caps in [
            coco_captions(&mut rng, &scene),
            flickr_captions(&mut rng, &scene),
        ] {
            assert_eq!(caps.len(), 5);
            let mut unique = caps.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), 5, "{caps:?}");
        }
    }

    #[test]
    fn hateful_means_hostile_and_present() {
        for i in 0..200 {
            let mut rng = item_rng(9, "meme", i);
            let scene = sample_scene(&mut rng, &SceneSpec::MEME);
            let m = meme(&mut rng, &scene, i % 2 == 1);
            assert_eq!(m.label, u8::from(i % 2 == 1));
            let g = scene.main();
            let names_main = m.text.contains(g.shape.plural())
                || m.text.contains(&format!("{} things", g.color.name()));
            let hostile = ["nobody", "rid", "ruin", "stand", "away"]
                .iter()
                .any(|w| m.text.contains(w));
            assert_eq!(m.label == 1, hostile && names_main, "{m:?} {scene:?}");
        }
    }
}
