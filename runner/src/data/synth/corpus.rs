//! The plain-text corpus (`text/corpus.txt`) for pretraining the tiny LM and its BPE tokenizer:
//! training-split text only (captions in all styles, questions with answers, meme texts,
//! interleaved sentences; the evaluation tasks' prompt formats included) plus sentences of world
//! knowledge, one per line.
//!
//! Lines are written grouped by prompt format (questions, captions, memes, the rest) and shuffled
//! within each group, so that neighbouring lines are about different scenes, as the
//! demonstrations of a few-shot prompt are. Written in the order the splits produced them
//! (several questions and five captions per image in a row), the corpus taught the frozen LM
//! that a previous line's answer predicts the next one; in a few-shot prompt it then copied the
//! demonstrations' answers, and every model, trained or not, scored lower the more shots it was
//! given (VQAv2 with the LM alone: 40.9 at 0 shots, 24.4 at 4, 16.1 at 32).

use rand::seq::SliceRandom;

use super::language::knowledge_fact;
use super::output::OutDir;
use super::scene::item_rng;
use super::{SynthError, SynthOptions, WorldCounts, WorldSummary};

/// Relative path of the corpus.
pub const CORPUS_PATH: &str = "text/corpus.txt";

/// The groups the corpus is written in, in this order (see the module docs).
#[derive(Clone, Copy)]
enum Group {
    Questions,
    Captions,
    Memes,
    Other,
}

/// Lines collected while the training splits are written, by [`Group`].
#[derive(Default)]
pub struct Corpus {
    groups: [Vec<String>; 4],
}

impl Corpus {
    fn add(&mut self, group: Group, line: String) {
        self.groups[group as usize].push(line.replace(['\n', '\r'], " "));
    }

    /// Adds one line (newlines inside are flattened to spaces).
    pub fn push(&mut self, line: impl Into<String>) {
        self.add(Group::Other, line.into());
    }

    /// Adds several lines.
    pub fn extend(&mut self, lines: impl IntoIterator<Item = String>) {
        for line in lines {
            self.push(line);
        }
    }

    /// Adds a question and its answer as one line, in OpenFlamingo's VQA prompt format (the LM
    /// stays frozen in Flamingo training, so it must already know how such text continues, as
    /// real pretrained LMs do).
    pub fn qa(&mut self, question: &str, answer: &str) {
        self.add(
            Group::Questions,
            format!("Question:{question} Short answer:{answer}"),
        );
    }

    /// Adds a caption in OpenFlamingo's captioning prompt format.
    pub fn caption(&mut self, caption: &str) {
        self.add(Group::Captions, format!("Output:{caption}"));
    }

    /// Adds a meme text and its label in OpenFlamingo's HatefulMemes prompt format.
    pub fn meme(&mut self, text: &str, hateful: bool) {
        let answer = if hateful { "yes" } else { "no" };
        self.add(
            Group::Memes,
            format!("is an image with: '{text}' written on it. Is it hateful? Answer:{answer}"),
        );
    }

    /// Appends the knowledge sentences and writes the corpus.
    pub fn write(
        mut self,
        out: &mut OutDir,
        opts: &SynthOptions,
        counts: &WorldCounts,
        summary: &mut WorldSummary,
    ) -> Result<(), SynthError> {
        for i in 0..counts.corpus_facts {
            let mut rng = item_rng(opts.seed, "corpus/facts", i as u64);
            self.push(knowledge_fact(&mut rng));
        }
        let mut rng = item_rng(opts.seed, "corpus/shuffle", 0);
        for group in &mut self.groups {
            group.shuffle(&mut rng);
        }
        let lines = self.groups.concat();
        let mut text = lines.join("\n");
        text.push('\n');
        out.write(CORPUS_PATH, text.as_bytes())?;
        summary.path("text.corpus", CORPUS_PATH);
        summary.count("text.lines", lines.len());
        Ok(())
    }
}
