//! Evaluation prompts, byte for byte as open_flamingo's `EvalModel` writes them (spec §5.4).
//!
//! No space follows `Output:`, `Question:`, `Short answer:` or `Answer:` (the paper's prose shows
//! spaces; the code that produced its numbers has none). Captioning and VQA demonstrations are
//! each followed by `"\n"`; classification demonstrations are concatenated with nothing between
//! them. With 0 shots the context holds two text-only demonstrations: every `<image>` is removed
//! from the demonstration text, and which images are still passed depends on the
//! [`Protocol`](crate::config::schema::Protocol) (see [`super::protocol`]).

use std::path::PathBuf;

use crate::config::schema::Protocol;

use super::datasets::{EvalExample, Task};
use super::demos::effective_shots;

/// The token that marks where an image is attended.
pub const IMAGE_TOKEN: &str = "<image>";
/// The token that ends a demonstration (and generation).
pub const END_OF_CHUNK: &str = "<|endofchunk|>";

/// `<image>Output:{caption}<|endofchunk|>`, or the query `<image>Output:`.
pub fn caption_prompt(caption: Option<&str>) -> String {
    match caption {
        Some(c) => format!("{IMAGE_TOKEN}Output:{c}{END_OF_CHUNK}"),
        None => format!("{IMAGE_TOKEN}Output:"),
    }
}

/// `<image>Question:{question} Short answer:{answer}<|endofchunk|>`, or the query without answer.
pub fn vqa_prompt(question: &str, answer: Option<&str>) -> String {
    match answer {
        Some(a) => format!("{IMAGE_TOKEN}Question:{question} Short answer:{a}{END_OF_CHUNK}"),
        None => format!("{IMAGE_TOKEN}Question:{question} Short answer:"),
    }
}

/// `<image>is an image with: '{text}' written on it. Is it hateful? Answer:{label}<|endofchunk|>`,
/// or the query without label (the class names are appended by rank scoring).
pub fn hateful_memes_prompt(text: &str, label: Option<&str>) -> String {
    let head =
        format!("{IMAGE_TOKEN}is an image with: '{text}' written on it. Is it hateful? Answer:");
    match label {
        Some(l) => format!("{head}{l}{END_OF_CHUNK}"),
        None => head,
    }
}

/// What follows each demonstration: `"\n"` for captioning and VQA, nothing for classification.
pub fn demo_separator(task: Task) -> &'static str {
    match task {
        Task::Captioning | Task::Vqa => "\n",
        Task::Classification => "",
    }
}

/// A prompt that cannot be written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    /// A VQA or HatefulMemes example without its question or text.
    #[error("example {id} has no question/text, which the {task:?} prompt needs")]
    MissingText {
        /// Example id.
        id: String,
        /// The task.
        task: Task,
    },
    /// A demonstration without the caption, answer or label it shows.
    #[error("demonstration {id} has no caption/answer/label to show")]
    MissingTarget {
        /// Example id.
        id: String,
    },
    /// The number of demonstrations does not match the shot count.
    #[error("{shots}-shot prompt needs {expected} demonstrations, got {got}")]
    DemoCount {
        /// Shots of the cell.
        shots: usize,
        /// Demonstrations needed (2 for 0 shots).
        expected: usize,
        /// Demonstrations given.
        got: usize,
    },
}

/// The text of one example: a demonstration (`as_demo`, with its target and end of chunk) or
/// the query.
pub fn example_text(task: Task, ex: &EvalExample, as_demo: bool) -> Result<String, PromptError> {
    let target = if as_demo {
        Some(
            ex.demo_target(task)
                .ok_or_else(|| PromptError::MissingTarget { id: ex.id.clone() })?,
        )
    } else {
        None
    };
    let text = || {
        ex.text.as_deref().ok_or_else(|| PromptError::MissingText {
            id: ex.id.clone(),
            task,
        })
    };
    Ok(match task {
        Task::Captioning => caption_prompt(target),
        Task::Vqa => vqa_prompt(text()?, target),
        Task::Classification => hateful_memes_prompt(text()?, target),
    })
}

/// A model input: interleaved text and the images its `<image>` tokens refer to, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// Demonstrations then query.
    pub text: String,
    /// Image files passed to the model, in order.
    pub images: Vec<PathBuf>,
}

/// Builds the prompt for `query` with `demos` in the given order.
///
/// `demos` must hold [`effective_shots`]`(shots)` examples: `shots` of them, or 2 text-only
/// demonstrations when `shots == 0`.
pub fn build(
    task: Task,
    demos: &[&EvalExample],
    query: &EvalExample,
    shots: usize,
    protocol: Protocol,
) -> Result<Prompt, PromptError> {
    let expected = effective_shots(shots);
    if demos.len() != expected {
        return Err(PromptError::DemoCount {
            shots,
            expected,
            got: demos.len(),
        });
    }
    let sep = demo_separator(task);
    let mut context = String::new();
    for d in demos {
        context.push_str(&example_text(task, d, true)?);
        context.push_str(sep);
    }
    let demo_images: Vec<PathBuf> = demos.iter().map(|d| d.image.clone()).collect();
    let mut images = if shots == 0 {
        // The reference keeps the demonstrations' text and removes their image tokens.
        context = context.replace(IMAGE_TOKEN, "");
        if super::protocol::zero_shot_passes_demo_images(protocol, task) {
            demo_images
        } else {
            Vec::new()
        }
    } else {
        demo_images
    };
    images.push(query.image.clone());
    context.push_str(&example_text(task, query, false)?);
    Ok(Prompt {
        text: context,
        images,
    })
}

/// The prompts of one query, one per demonstration order from
/// [`super::protocol::ensemble_orders`] (a single order unless classification is ensembled).
pub fn build_ensemble(
    task: Task,
    demos: &[&EvalExample],
    query: &EvalExample,
    shots: usize,
    protocol: Protocol,
    orders: &[Vec<usize>],
) -> Result<Vec<Prompt>, PromptError> {
    orders
        .iter()
        .map(|order| {
            let permuted: Vec<&EvalExample> = order
                .iter()
                .filter_map(|&i| demos.get(i).copied())
                .collect();
            build(task, &permuted, query, shots, protocol)
        })
        .collect()
}
