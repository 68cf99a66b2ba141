//! VQA accuracy exactly as open_flamingo's `eval/vqa_metric.py` computes it (the official VQA
//! evaluation with one change: ground-truth answers are always normalised), and the answer
//! post-processing of open_flamingo's evaluation loop (spec §5.8).

use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::python::{py_round, py_split_whitespace, py_strip};

/// `VQAEval.punct`, in the reference's order (the order matters: replacements are sequential).
const PUNCT: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

/// `VQAEval.manualMap`: number words to digits.
const NUMBER_WORDS: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

/// `VQAEval.articles`.
const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// `VQAEval.contractions`, verbatim (keys with capitals can never match after lower-casing; kept as
/// the reference has them).
const CONTRACTIONS: &[(&str, &str)] = &[
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// The reference applies its period rule with `re.sub(..., count=re.UNICODE)`, i.e. to the first 32
/// periods only.
const PERIOD_SUB_COUNT: usize = 32;

fn comma_strip() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // `(\d)(\,)(\d)`; `\d` is Unicode Nd in both Python 3 `re` and the regex crate.
    RE.get_or_init(|| Regex::new(r"\d,\d").expect("constant pattern"))
}

fn is_decimal_digit(c: char) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    let mut buf = [0u8; 4];
    RE.get_or_init(|| Regex::new(r"^\d$").expect("constant pattern"))
        .is_match(c.encode_utf8(&mut buf))
}

/// `VQAEval.processPunctuation`: each punctuation mark is deleted when the original text has it next
/// to a space (or has a digit,digit comma anywhere), otherwise replaced by a space; then up to 32
/// periods not followed by a digit are deleted.
pub fn process_punctuation(in_text: &str) -> String {
    let has_comma_number = comma_strip().is_match(in_text);
    let mut out = in_text.to_string();
    for p in PUNCT {
        if !out.contains(p) {
            continue;
        }
        let mut buf = [0u8; 4];
        let ps = p.encode_utf8(&mut buf);
        let delete = in_text.contains(&format!("{ps} "))
            || in_text.contains(&format!(" {ps}"))
            || has_comma_number;
        out = out.replace(p, if delete { "" } else { " " });
    }
    // `(?!<=\d)(\.)(?!\d)`: the first lookahead can never fail at a '.', so this is "a period not
    // followed by a decimal digit".
    let chars: Vec<char> = out.chars().collect();
    let mut result = String::with_capacity(out.len());
    let mut removed = 0;
    for (i, &c) in chars.iter().enumerate() {
        if c == '.'
            && removed < PERIOD_SUB_COUNT
            && !chars.get(i + 1).is_some_and(|&n| is_decimal_digit(n))
        {
            removed += 1;
            continue;
        }
        result.push(c);
    }
    result
}

/// `VQAEval.processDigitArticle`: lower-case, split on (Python) whitespace, number words to digits,
/// drop articles, expand contractions, join with single spaces.
pub fn process_digit_article(in_text: &str) -> String {
    let lower = in_text.to_lowercase();
    let words: Vec<&str> = py_split_whitespace(&lower)
        .into_iter()
        .map(|w| {
            NUMBER_WORDS
                .iter()
                .find(|(k, _)| *k == w)
                .map_or(w, |(_, v)| *v)
        })
        .filter(|w| !ARTICLES.contains(w))
        .map(|w| {
            CONTRACTIONS
                .iter()
                .find(|(k, _)| *k == w)
                .map_or(w, |(_, v)| *v)
        })
        .collect();
    words.join(" ")
}

/// The full normalisation the reference applies to a prediction and to every ground-truth answer:
/// `\n` and `\t` to spaces, Python `strip()`, punctuation, then digits/articles/contractions.
pub fn normalize_answer(answer: &str) -> String {
    let s = answer.replace(['\n', '\t'], " ");
    process_digit_article(&process_punctuation(py_strip(&s)))
}

/// One ground-truth answer object of a VQA annotation. The reference's leave-one-out compares whole
/// answer dicts, so two objects are "the same annotator" only if every field is equal.
#[derive(Debug, Clone, PartialEq)]
pub struct GtAnswer {
    /// The `answer` text (raw; normalised when scored).
    pub answer: String,
    /// The other fields (`answer_id`, `answer_confidence`, ...), compared with Python equality.
    pub other_fields: Map<String, Value>,
}

impl GtAnswer {
    /// An answer with no other fields (identical texts then count as the same annotator).
    pub fn text(answer: impl Into<String>) -> Self {
        Self {
            answer: answer.into(),
            other_fields: Map::new(),
        }
    }
}

/// Python `==` on JSON values: numbers compare by value (1 == 1.0), and booleans equal 0/1.
fn py_eq(a: &Value, b: &Value) -> bool {
    fn num(v: &Value) -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_i64() && y.is_i64() => {
            x.as_i64() == y.as_i64()
        }
        (Value::Number(x), Value::Number(y)) if x.is_u64() && y.is_u64() => {
            x.as_u64() == y.as_u64()
        }
        (Value::Number(_) | Value::Bool(_), Value::Number(_) | Value::Bool(_)) => num(a) == num(b),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Accuracy of one question in [0, 1]: for each ground-truth answer, `min(1, matches / 3)` where
/// matches counts the *other* answer objects equal to the normalised prediction; averaged with a
/// left-to-right float sum.
pub fn question_accuracy(prediction: &str, answers: &[GtAnswer]) -> f64 {
    let pred = normalize_answer(prediction);
    // Annotators often agree: normalise each distinct text once.
    let mut normalized: Vec<String> = Vec::with_capacity(answers.len());
    for (i, a) in answers.iter().enumerate() {
        let earlier = answers[..i].iter().position(|b| b.answer == a.answer);
        let norm = match earlier {
            Some(k) => normalized[k].clone(),
            None => normalize_answer(&a.answer),
        };
        normalized.push(norm);
    }
    let same = |i: usize, j: usize| {
        normalized[i] == normalized[j]
            && py_eq_maps(&answers[i].other_fields, &answers[j].other_fields)
    };
    let mut sum = 0.0;
    for i in 0..answers.len() {
        let matches = (0..answers.len())
            .filter(|&j| normalized[j] == pred && !same(i, j))
            .count();
        sum += (matches as f64 / 3.0).min(1.0);
    }
    sum / answers.len() as f64
}

fn py_eq_maps(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| py_eq(v, w)))
}

/// Overall accuracy as the reference reports it: `round(100 * sum / n, 2)` with a left-to-right sum
/// (Python 3.11's `sum`; 3.12+ compensates, which can move a result by one ulp before rounding).
/// NaN for an empty slice (the reference divides by zero).
pub fn accuracy(per_question: &[f64]) -> f64 {
    let mut sum = 0.0;
    for &a in per_question {
        sum += a;
    }
    py_round(100.0 * sum / per_question.len() as f64, 2)
}

/// `postprocess_vqa_generation`: cut at the first "Question", "Answer" or "Short", then at the first
/// ", ".
pub fn postprocess_generation(output: &str) -> String {
    let cut = ["Question", "Answer", "Short"]
        .iter()
        .filter_map(|m| output.find(m))
        .min()
        .unwrap_or(output.len());
    let answer = &output[..cut];
    answer
        .split_once(", ")
        .map_or(answer, |(a, _)| a)
        .to_string()
}

/// Captioning post-processing: `out.split("Output", 1)[0]` then every `"` removed.
pub fn postprocess_caption(output: &str) -> String {
    output
        .split_once("Output")
        .map_or(output, |(a, _)| a)
        .replace('"', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(list: &[&str]) -> Vec<GtAnswer> {
        list.iter()
            .enumerate()
            .map(|(i, a)| {
                let mut m = Map::new();
                m.insert("answer_id".into(), Value::from(i + 1));
                GtAnswer {
                    answer: a.to_string(),
                    other_fields: m,
                }
            })
            .collect()
    }

    #[test]
    fn normalisation_rules() {
        assert_eq!(normalize_answer("Two dogs."), "2 dogs");
        assert_eq!(normalize_answer("the  Dont"), "don't");
        assert_eq!(normalize_answer("1,000"), "1000");
        assert_eq!(normalize_answer("yes!"), "yes");
        assert_eq!(normalize_answer("x-y"), "x y");
        assert_eq!(normalize_answer("x - y"), "x y");
        assert_eq!(normalize_answer("3.5"), "3.5");
    }

    #[test]
    fn leave_one_out() {
        let gt = answers(&["yes"; 10]);
        assert_eq!(question_accuracy("yes", &gt), 1.0);
        let gt = answers(&["yes", "yes", "no", "no", "no", "no", "no", "no", "no", "no"]);
        // Each "yes" annotator sees 1 other yes (1/3); each "no" annotator sees 2 (2/3).
        let expected = (2.0 * (1.0 / 3.0) + 8.0 * (2.0 / 3.0)) / 10.0;
        assert!((question_accuracy("Yes", &gt) - expected).abs() < 1e-15);
    }

    #[test]
    fn postprocessing() {
        assert_eq!(postprocess_generation("red, blue Question: x"), "red");
        assert_eq!(postprocess_generation("two dogsShort answer"), "two dogs");
        assert_eq!(postprocess_caption("A \"dog\" Output: x"), "A dog ");
    }
}
