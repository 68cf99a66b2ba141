//! The Stanford PTB tokenizer as pycocoevalcap runs it, reimplemented: CoreNLP 3.4.1
//! `PTBTokenizer -preserveLines -lowerCase` over all captions joined by `"\n"`, then pycocoevalcap's
//! removal of punctuation tokens.
//!
//! The lexer follows JFlex semantics: at each position the longest match over all rules wins (a
//! trailing context `r1/r2` counts with its context), ties go to the earlier rule, and the token of a
//! trailing-context rule is the longest `r1` prefix whose remainder matches `r2`. Java lexes UTF-16
//! code units; a supplementary character (e.g. an emoji) is two surrogates that no rule but the
//! "untokenizable" one accepts, so it is split into two stand-in characters here.

use std::sync::OnceLock;

use regex_automata::hybrid::dfa::{Cache, DFA, OverlappingState};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::{Anchored, Input, MatchKind};

use super::error::MetricError;
use super::ptb_rules::{Action, caseless, rules};
use super::python::{py_rstrip, py_split_whitespace};

/// Tokens pycocoevalcap drops after tokenizing (`PUNCTUATIONS` in `ptbtokenizer.py`); the bracket
/// names are upper case there, so the lower-cased `-lrb-` etc. survive.
pub const COCO_PUNCTUATION: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Below this many bytes the tokenizer runs on one thread (each thread warms up its own lazy-DFA
/// cache, which only pays off on large inputs).
const PARALLEL_MIN_BYTES: usize = 4 << 20;

/// Stand-ins for the two UTF-16 surrogates of a supplementary character (private-use characters
/// behave like surrogates: only negated classes and the catch-all rule accept them).
const HIGH_STAND_IN: char = '\u{E000}';
const LOW_STAND_IN: char = '\u{E001}';

/// Longest prefix of `hay[start..]` matched by an anchored lazy DFA built with `MatchKind::All`.
fn longest(
    dfa: &DFA,
    cache: &mut Cache,
    hay: &str,
    start: usize,
    end: usize,
) -> Result<Option<usize>, MetricError> {
    let input = Input::new(hay).range(start..end).anchored(Anchored::Yes);
    let found = dfa
        .try_search_fwd(cache, &input)
        .map_err(|e| MetricError::Tokenizer(format!("lazy DFA search failed: {e}")))?;
    Ok(found.map(|m| m.offset()))
}

/// A trailing-context rule's head and tail, compiled on first use (most never occur in captions).
struct TrailingRule {
    head: String,
    tail: String,
    dfas: OnceLock<Result<(DFA, DFA), String>>,
}

impl TrailingRule {
    fn dfas(&self) -> Result<&(DFA, DFA), MetricError> {
        self.dfas
            .get_or_init(|| {
                let head =
                    build_dfa(std::slice::from_ref(&self.head)).map_err(|e| e.to_string())?;
                let tail =
                    build_dfa(std::slice::from_ref(&self.tail)).map_err(|e| e.to_string())?;
                Ok((head, tail))
            })
            .as_ref()
            .map_err(|e| MetricError::Tokenizer(e.clone()))
    }
}

/// The compiled lexer: one multi-pattern lazy DFA over all rules (each rule with its trailing context)
/// plus, for trailing-context rules, separate head and tail DFAs to find the token boundary.
pub struct PtbLexer {
    all: DFA,
    trailing: Vec<Option<TrailingRule>>,
    actions: Vec<Action>,
}

fn build_dfa(patterns: &[String]) -> Result<DFA, MetricError> {
    DFA::builder()
        .thompson(thompson::Config::new().which_captures(WhichCaptures::None))
        .configure(
            DFA::config()
                .match_kind(MatchKind::All)
                .cache_capacity(32 * 1024 * 1024)
                .minimum_cache_clear_count(None),
        )
        .build_many(patterns)
        .map_err(|e| MetricError::Tokenizer(format!("building the PTB lexer: {e}")))
}

/// Caches of one tokenization run (lazy DFAs fill them as they go).
struct Caches {
    all: Cache,
    trailing: Vec<Option<(Cache, Cache)>>,
}

impl PtbLexer {
    /// Compile the rules of `PTBLexer.flex` 3.4.1.
    pub fn new() -> Result<Self, MetricError> {
        let specs = rules();
        let mut combined = Vec::with_capacity(specs.len());
        let mut trailing = Vec::with_capacity(specs.len());
        let mut actions = Vec::with_capacity(specs.len());
        // The haystack never holds supplementary characters (they become stand-ins), so the
        // Unicode classes can be cut to the BMP: the same matches with a much smaller automaton.
        let bmp = |p: String| {
            p.replace(r"\p{L}", r"[\p{L}&&\x{0}-\x{FFFF}]")
                .replace(r"\p{Nd}", r"[\p{Nd}&&\x{0}-\x{FFFF}]")
                .replace(r"\p{Lu}", r"[\p{Lu}&&\x{0}-\x{FFFF}]")
        };
        for spec in &specs {
            let head = bmp(caseless(&spec.head));
            match &spec.tail {
                Some(tail) => {
                    let tail = bmp(caseless(tail));
                    combined.push(format!("(?:{head})(?:{tail})"));
                    trailing.push(Some(TrailingRule {
                        head,
                        tail,
                        dfas: OnceLock::new(),
                    }));
                }
                None => {
                    combined.push(head);
                    trailing.push(None);
                }
            }
            actions.push(spec.action);
        }
        Ok(Self {
            all: build_dfa(&combined)?,
            trailing,
            actions,
        })
    }

    /// The shared lexer (compiled once per process).
    pub fn shared() -> Result<&'static PtbLexer, MetricError> {
        static LEXER: OnceLock<Result<PtbLexer, String>> = OnceLock::new();
        LEXER
            .get_or_init(|| PtbLexer::new().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| MetricError::Tokenizer(e.clone()))
    }

    fn caches(&self) -> Caches {
        Caches {
            all: self.all.create_cache(),
            trailing: self.trailing.iter().map(|_| None).collect(),
        }
    }

    /// Longest match at `pos` over all rules: (rule, end of the whole match including context).
    fn best_rule(
        &self,
        caches: &mut Caches,
        hay: &str,
        pos: usize,
    ) -> Result<Option<(usize, usize)>, MetricError> {
        let input = Input::new(hay).range(pos..).anchored(Anchored::Yes);
        let mut state = OverlappingState::start();
        let mut best: Option<(usize, usize)> = None;
        loop {
            self.all
                .try_search_overlapping_fwd(&mut caches.all, &input, &mut state)
                .map_err(|e| MetricError::Tokenizer(format!("lazy DFA search failed: {e}")))?;
            let Some(m) = state.get_match() else { break };
            let (rule, end) = (m.pattern().as_usize(), m.offset());
            best = match best {
                Some((r, e)) if e > end || (e == end && r < rule) => Some((r, e)),
                _ => Some((rule, end)),
            };
        }
        Ok(best)
    }

    /// Where the token of trailing-context rule `rule` ends, given the whole match `pos..end`: the
    /// longest head prefix whose remainder matches the tail (JFlex's backward scan).
    fn head_end(
        &self,
        caches: &mut Caches,
        hay: &str,
        rule: usize,
        pos: usize,
        end: usize,
    ) -> Result<usize, MetricError> {
        let Some(rule_dfas) = &self.trailing[rule] else {
            return Ok(end);
        };
        let (head, tail) = rule_dfas.dfas()?;
        let (head_cache, tail_cache) =
            caches.trailing[rule].get_or_insert_with(|| (head.create_cache(), tail.create_cache()));
        let mut k = end;
        while k > pos {
            k -= 1;
            while !hay.is_char_boundary(k) {
                k -= 1;
            }
            if k == pos {
                break;
            }
            if longest(tail, tail_cache, hay, k, end)? == Some(end)
                && longest(head, head_cache, hay, pos, k)? == Some(k)
            {
                return Ok(k);
            }
        }
        Err(MetricError::Tokenizer(format!(
            "no head/trailing-context split for rule {rule} in {:?}",
            &hay[pos..end]
        )))
    }

    /// Tokenize `text` as `PTBTokenizer -preserveLines -lowerCase` prints it: one output line per
    /// input line, tokens joined by single spaces, lines joined by `"\n"`.
    pub fn tokenize_to_text(&self, text: &str) -> Result<String, MetricError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        self.tokenize_to_text_on(text, threads, PARALLEL_MIN_BYTES)
    }

    /// [`Self::tokenize_to_text`] with `threads` threads for inputs of at least `min_bytes`.
    fn tokenize_to_text_on(
        &self,
        text: &str,
        threads: usize,
        min_bytes: usize,
    ) -> Result<String, MetricError> {
        let units = Utf16Units::new(text);
        let hay = units.hay.as_str();
        // Only SGML tokens (`<a b='...'>`, quoted values) can contain a `\n`. Without a `<`, every
        // `\n` ends a token and the next line starts at a token boundary: chunks cut after a `\n`
        // can be tokenized independently (trailing contexts still see the whole text) and joined.
        if threads < 2 || hay.len() < min_bytes || hay.contains('<') {
            return self.tokenize_range(&units, 0, hay.len());
        }
        let mut cuts = vec![0];
        for k in 1..threads {
            let target = hay.len() * k / threads;
            let newline = hay.as_bytes()[target..].iter().position(|&b| b == b'\n');
            let cut = newline.map_or(hay.len(), |i| target + i + 1);
            if cut > *cuts.last().unwrap_or(&0) && cut < hay.len() {
                cuts.push(cut);
            }
        }
        cuts.push(hay.len());
        let parts: Vec<Result<String, MetricError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = cuts
                .windows(2)
                .map(|w| {
                    let units = &units;
                    let (start, end) = (w[0], w[1]);
                    scope.spawn(move || self.tokenize_range(units, start, end))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(MetricError::Tokenizer("a tokenizer thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut out = String::with_capacity(text.len() + text.len() / 4);
        for part in parts {
            out.push_str(&part?);
        }
        Ok(out)
    }

    /// [`Self::tokenize_to_text`] on the calling thread only (the reference for the parallel path).
    pub fn tokenize_to_text_single_thread(&self, text: &str) -> Result<String, MetricError> {
        let units = Utf16Units::new(text);
        self.tokenize_range(&units, 0, units.hay.len())
    }

    /// Tokenize the tokens that start in `units.hay[start..end]` (`start` at a line start).
    fn tokenize_range(
        &self,
        units: &Utf16Units,
        start: usize,
        end: usize,
    ) -> Result<String, MetricError> {
        let hay = units.hay.as_str();
        let mut caches = self.caches();
        let mut out = String::with_capacity((end - start) + (end - start) / 4);
        let mut line_start = true;
        let mut pos = start;
        while pos < end {
            match fast_path(hay.as_bytes(), pos) {
                Some(Fast::Space(next)) => {
                    pos = next;
                    continue;
                }
                Some(Fast::Newline) => {
                    out.push('\n');
                    line_start = true;
                    pos += 1;
                    continue;
                }
                Some(Fast::Token(end)) => {
                    if !line_start {
                        out.push(' ');
                    }
                    line_start = false;
                    out.extend(hay[pos..end].chars().map(|c| c.to_ascii_lowercase()));
                    pos = end;
                    continue;
                }
                None => {}
            }
            let Some((rule, end)) = self.best_rule(&mut caches, hay, pos)? else {
                return Err(MetricError::Tokenizer(format!(
                    "no PTB rule matches at byte {pos}"
                )));
            };
            let mut token_end = self.head_end(&mut caches, hay, rule, pos, end)?;
            let mut next = token_end;
            let action = self.actions[rule];
            let emitted: Option<String> = match action {
                Action::Skip | Action::Delete => None,
                Action::Newline => {
                    out.push('\n');
                    line_start = true;
                    None
                }
                Action::PushBack(n) => {
                    token_end -= n;
                    next = token_end;
                    Some(units.original(pos, token_end))
                }
                Action::AcronymSentenceEnd => {
                    let text = units.original(pos, token_end);
                    if text.chars().count() == 2 {
                        token_end -= 1;
                        next = token_end;
                        Some(units.original(pos, token_end))
                    } else {
                        next = token_end - 1;
                        Some(text)
                    }
                }
                Action::AbbrevSentenceEnd => {
                    next = token_end - 1;
                    Some(units.original(pos, token_end))
                }
                other => Some(normalize(other, &units.original(pos, token_end))),
            };
            if let Some(token) = emitted {
                if !line_start {
                    out.push(' ');
                }
                line_start = false;
                out.push_str(&java_lowercase(&token));
            }
            pos = next;
        }
        Ok(out)
    }

    /// The lower-cased tokens of each input line (for token-level tests against the jar).
    pub fn tokenize_lines(&self, text: &str) -> Result<Vec<Vec<String>>, MetricError> {
        Ok(self
            .tokenize_to_text(text)?
            .split('\n')
            .map(|line| {
                if line.is_empty() {
                    Vec::new()
                } else {
                    line.split(' ').map(str::to_string).collect()
                }
            })
            .collect())
    }
}

/// Java's `String.toLowerCase(Locale.ENGLISH)`: Rust's mapping except for capital sigma, whose final
/// form Java chooses with its word `BreakIterator`: final when a cased letter precedes it anywhere in
/// the same word and none follows it there (Rust only looks at adjacent characters).
fn java_lowercase(token: &str) -> String {
    if !token.contains('\u{3A3}') {
        return token.to_lowercase();
    }
    let chars: Vec<char> = token.chars().collect();
    let cased = |c: char| c.is_lowercase() || c.is_uppercase();
    let mut out = String::with_capacity(token.len());
    for (i, &c) in chars.iter().enumerate() {
        if c != '\u{3A3}' {
            out.extend(c.to_lowercase());
            continue;
        }
        let before = word_scan(chars[..i].iter().rev().copied(), c).any(cased);
        let after = word_scan(chars[i + 1..].iter().copied(), c).any(cased);
        out.push(if before && !after {
            '\u{3C2}'
        } else {
            '\u{3C3}'
        });
    }
    out
}

/// Unicode property tests the word scan needs (compiled once).
fn has_property(c: char, which: usize) -> bool {
    static RES: OnceLock<[regex::Regex; 3]> = OnceLock::new();
    let res = RES.get_or_init(|| {
        [
            r"^\p{M}$",
            r"^\p{Ideographic}$",
            r"^[\p{Pd}\x{AD}\x{2027}\x22'.]$",
        ]
        .map(|p| regex::Regex::new(p).expect("constant pattern"))
    });
    let mut buf = [0u8; 4];
    res[which].is_match(c.encode_utf8(&mut buf))
}

fn is_word_letter(c: char) -> bool {
    (c.is_alphabetic() && !has_property(c, 1)) || has_property(c, 0)
}

fn is_word_char(c: char) -> bool {
    is_word_letter(c) || (c.is_numeric() && !has_property(c, 1))
}

/// The characters of the current word from a starting point (in either direction), following Java's
/// legacy word-break rules: letters (not ideographs), marks and digits continue a word; a dash, soft
/// hyphen, U+2027, `"`, `'`, `.` or `_` continues it only between two letters; ideographs break.
fn word_scan(iter: impl Iterator<Item = char>, start: char) -> impl Iterator<Item = char> {
    let mut prev = start;
    let mut iter = iter.peekable();
    std::iter::from_fn(move || {
        let c = iter.next()?;
        if is_word_char(c) {
            prev = c;
            return Some(c);
        }
        let mid = has_property(c, 2) || c == '_';
        if mid && is_word_letter(prev) && iter.peek().is_some_and(|&n| is_word_letter(n)) {
            prev = c;
            return Some(c);
        }
        None
    })
}

/// What the lexer certainly does at a position, decided without the DFA.
enum Fast {
    /// Spaces: no token; continue at the given offset.
    Space(usize),
    /// A `\n`: end of the output line.
    Newline,
    /// A token `pos..end` whose text is emitted unchanged.
    Token(usize),
}

/// The common cases of caption text, where every rule's outcome is known:
/// - a run of ASCII spaces not followed by another SPACE character (only the whitespace rule
///   starts with a space);
/// - `\n` (only the newline rule starts with it);
/// - a run of ASCII letters followed by a space, `\n` or the end: no rule matches past the space
///   except with the same token text (`{ACRO}/{SPACENL}`, `{ABBREV4}/{SPACE}`), apart from the
///   push-back words `cannot gonna gotta lemme gimme wanna`, which are excluded;
/// - a period followed by the end, `\n`, or a space and then anything but a period (`. . .` would
///   be an ellipsis).
fn fast_path(bytes: &[u8], pos: usize) -> Option<Fast> {
    let at = |i: usize| bytes.get(i).copied();
    match bytes[pos] {
        b' ' => {
            let mut end = pos + 1;
            while at(end) == Some(b' ') {
                end += 1;
            }
            // The whitespace rule takes the whole run of SPACE characters (tab, U+00A0, ...); if the
            // run goes on past the ASCII spaces, leave it to the lexer.
            if at(end).is_some_and(|b| b == b'\t' || b >= 0x80) {
                return None;
            }
            Some(Fast::Space(end))
        }
        b'\n' => Some(Fast::Newline),
        b'.' => match at(pos + 1) {
            None | Some(b'\n') => Some(Fast::Token(pos + 1)),
            Some(b' ') if at(pos + 2) != Some(b'.') => Some(Fast::Token(pos + 1)),
            _ => None,
        },
        // `,` before a space or the end is INSENTP (before a digit it would start a NUMBER).
        b',' => ends_here(at(pos + 1)).then_some(Fast::Token(pos + 1)),
        b'?' | b'!' => {
            let mut end = pos + 1;
            while matches!(at(end), Some(b'?' | b'!')) {
                end += 1;
            }
            ends_here(at(end)).then_some(Fast::Token(end))
        }
        b if b.is_ascii_alphabetic() => {
            let mut end = pos + 1;
            while at(end).is_some_and(|b| b.is_ascii_alphabetic()) {
                end += 1;
            }
            let word = &bytes[pos..end];
            let pushback = ["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"];
            if pushback
                .iter()
                .any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
            {
                return None;
            }
            match at(end) {
                None | Some(b' ' | b'\n') => Some(Fast::Token(end)),
                // `word.` or `word,` then a space or the end: the word alone, unless a rule for
                // abbreviations, acronyms or file names could take the period.
                Some(b'.')
                    if ends_here(at(end + 1)) && end - pos >= 2 && !is_abbreviation(word) =>
                {
                    Some(Fast::Token(end))
                }
                Some(b',') if ends_here(at(end + 1)) => Some(Fast::Token(end)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A space, a newline or the end of the text.
fn ends_here(next: Option<u8>) -> bool {
    matches!(next, None | Some(b' ' | b'\n'))
}

/// Words that some rule of `PTBLexer.flex` matches together with a following period (ABBREV1-4,
/// ABBREV3, the pty./co. rule), compared case-insensitively (a superset of the case-sensitive ones).
fn is_abbreviation(word: &[u8]) -> bool {
    const WORDS: &[&str] = &[
        // ABMONTH, ABDAYS
        "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mon",
        "tue", "tues", "wed", "thu", "thurs", "fri", // ABSTATE
        "ala", "ariz", "az", "ark", "calif", "colo", "conn", "ct", "dak", "del", "fla", "ga",
        "ill", "ind", "kan", "kans", "ky", "la", "mass", "md", "mich", "minn", "miss", "mo",
        "mont", "neb", "nev", "okla", "ore", "pa", "penn", "tenn", "tex", "va", "vt", "wash",
        "wis", "wisc", "wyo", // ABCOMP
        "inc", "co", "cos", "corp", "pty", "ptys", "pte", "ptes", "ppty", "pptys", "ppte", "pptes",
        "ltd", "plc", "rt", "bancorp", "bhd", "assn", "univ", "intl",
        "sys", // ABNUM, ABPTIT, others of ABBREV1
        "tel", "est", "ext", "sq", "jr", "sr", "bros", "blvd", "rd", "esq", "etc", "al", "seq",
        "bldg", // ABTITLE
        "mr", "mrs", "ms", "dr", "drs", "prof", "profs", "sen", "sens", "rep", "reps", "atty",
        "attys", "lt", "col", "gen", "messrs", "gov", "govs", "adm", "rev", "maj", "sgt", "cpl",
        "pvt", "capt", "st", "ste", "ave", "pres", "lieut", "hon", "brig", "mdr", "comdr", "cmdr",
        "pfc", "spc", "supt", "supts", "det", "mt", "ft", "adj", "adv", "asst", "assoc", "ens",
        "insp", "mlle", "mme", "msgr", "sfc", // rest of ABBREV4, ABCOMP2
        "vs", "alex", "wm", "jos", "cie", "cf", "treas", "ph", "invt", "elec", "natl", "mfg",
        "mtg", "dept", // ABBREV3
        "ca", "fig", "figs", "prop", "no", "nos", "art", "pp", "op",
    ];
    WORDS
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
}

/// The action blocks that rewrite token text.
fn normalize(action: Action, text: &str) -> String {
    match action {
        Action::NbspSpaces => text.replace(' ', "\u{A0}"),
        Action::MDash => "--".to_string(),
        Action::NormalizeAmp => replace_caseless_amp(text),
        Action::RemoveSoftHyphens => remove_soft_hyphens(text),
        Action::Quotes { probably_left } => latex_quotes(text, probably_left),
        Action::Fractions => text
            .replace('\u{BC}', "1/4")
            .replace('\u{BD}', "1/2")
            .replace('\u{BE}', "3/4")
            .replace('\u{2153}', "1/3")
            .replace('\u{2154}', "2/3"),
        Action::Currency => text
            .replace('\u{A2}', "cents")
            .replace('\u{A3}', "#")
            .replace(['\u{80}', '\u{A4}', '\u{20A0}', '\u{20AC}'], "$"),
        Action::Phone => text
            .replace(' ', "\u{A0}")
            .replace('(', "-LRB-")
            .replace(')', "-RRB-"),
        Action::Parens => text.replace('(', "-LRB-").replace(')', "-RRB-"),
        Action::Replace(s) => s.to_string(),
        Action::Hyphens => {
            if (3..=4).contains(&text.len()) {
                "--".to_string()
            } else {
                text.to_string()
            }
        }
        Action::Ellipsis => "...".to_string(),
        _ => text.to_string(),
    }
}

/// `(?i:&amp;)` → `&`.
fn replace_caseless_amp(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.len() >= 5 && tail.is_char_boundary(5) && tail[..5].eq_ignore_ascii_case("&amp;") {
            out.push('&');
            rest = &tail[5..];
        } else {
            out.push('&');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn remove_soft_hyphens(text: &str) -> String {
    if !text.contains('\u{AD}') {
        return text.to_string();
    }
    let out: String = text.chars().filter(|&c| c != '\u{AD}').collect();
    if out.is_empty() { "-".to_string() } else { out }
}

/// `PTBLexer.latexQuotes`.
fn latex_quotes(text: &str, probably_left: bool) -> String {
    let (single, double) = if probably_left {
        ("`", "``")
    } else {
        ("'", "''")
    };
    let s = text.replace("&apos;", single).replace('\'', single);
    let s = s.replace('"', double).replace("&quot;", double);
    s.replace(['\u{91}', '\u{2018}', '\u{201B}', '\u{2039}'], "`")
        .replace(['\u{92}', '\u{2019}', '\u{203A}'], "'")
        .replace(['\u{93}', '\u{201C}', '\u{AB}'], "``")
        .replace(['\u{94}', '\u{201D}', '\u{BB}'], "''")
}

/// The input as the Java lexer sees it: supplementary characters become two stand-ins, with a map
/// back to the original text.
struct Utf16Units {
    hay: String,
    /// Byte offsets in `hay` of high stand-ins, with the original character.
    supplementary: Vec<(usize, char)>,
}

impl Utf16Units {
    fn new(text: &str) -> Self {
        // Supplementary characters are the 4-byte UTF-8 sequences (lead byte 0xF0..=0xF4).
        if !text.bytes().any(|b| b >= 0xF0) {
            return Self {
                hay: text.to_string(),
                supplementary: Vec::new(),
            };
        }
        let mut hay = String::with_capacity(text.len());
        let mut supplementary = Vec::new();
        for c in text.chars() {
            if (c as u32) > 0xFFFF {
                supplementary.push((hay.len(), c));
                hay.push(HIGH_STAND_IN);
                hay.push(LOW_STAND_IN);
            } else {
                hay.push(c);
            }
        }
        Self { hay, supplementary }
    }

    /// The original text of `hay[start..end]`; a lone surrogate half prints as `?` (Java's UTF-8
    /// encoder replacement).
    fn original(&self, start: usize, end: usize) -> String {
        let slice = &self.hay[start..end];
        if self.supplementary.is_empty() || !slice.contains([HIGH_STAND_IN, LOW_STAND_IN]) {
            return slice.to_string();
        }
        let mut out = String::with_capacity(slice.len());
        let mut iter = slice.char_indices().peekable();
        while let Some((i, c)) = iter.next() {
            let at = start + i;
            let high = self
                .supplementary
                .binary_search_by_key(&at, |&(o, _)| o)
                .ok();
            let low = at >= HIGH_STAND_IN.len_utf8()
                && self
                    .supplementary
                    .binary_search_by_key(&(at - HIGH_STAND_IN.len_utf8()), |&(o, _)| o)
                    .is_ok();
            match (c, high) {
                (HIGH_STAND_IN, Some(k)) => {
                    if iter.peek().is_some() {
                        iter.next();
                        out.push(self.supplementary[k].1);
                    } else {
                        out.push('?');
                    }
                }
                (LOW_STAND_IN, _) if low => out.push('?'),
                _ => out.push(c),
            }
        }
        out
    }
}

/// pycocoevalcap's `PTBTokenizer.tokenize` for a list of captions, in order: newlines inside a
/// caption become spaces, the captions are joined by `"\n"`, tokenized, split on `"\n"`, and each line
/// is right-stripped, split on single spaces and cleared of [`COCO_PUNCTUATION`]. Returns the words of
/// each caption as CIDEr's `str.split()` sees them.
///
/// Like the reference, a caption holding another line break the lexer honours (`\r`, U+2028, U+2029,
/// U+000B, U+000C, U+0085) shifts the lines of every later caption by one; this is reproduced.
pub fn tokenize_captions(captions: &[&str]) -> Result<Vec<Vec<String>>, MetricError> {
    let tokenized = TokenizedCaptions::new(captions)?;
    Ok((0..tokenized.len())
        .map(|i| tokenized.words(i).into_iter().map(str::to_string).collect())
        .collect())
}

/// The tokenizer output of a caption list, with each caption's line (words are borrowed from it).
pub struct TokenizedCaptions {
    text: String,
    lines: Vec<std::ops::Range<usize>>,
}

impl TokenizedCaptions {
    /// Tokenize `captions` as [`tokenize_captions`] does.
    pub fn new(captions: &[&str]) -> Result<Self, MetricError> {
        let lexer = PtbLexer::shared()?;
        let joined = captions
            .iter()
            .map(|c| c.replace('\n', " "))
            .collect::<Vec<_>>()
            .join("\n");
        let text = lexer.tokenize_to_text(&joined)?;
        let mut lines = Vec::with_capacity(captions.len());
        let mut start = 0;
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                lines.push(start..i);
                start = i + 1;
            }
        }
        lines.push(start..text.len());
        if lines.len() < captions.len() {
            return Err(MetricError::Tokenizer(format!(
                "the PTB tokenizer produced {} lines for {} captions",
                lines.len(),
                captions.len()
            )));
        }
        lines.truncate(captions.len());
        Ok(Self { text, lines })
    }

    /// Number of captions.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when there are no captions.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The words of caption `i` as CIDEr sees them.
    pub fn words(&self, i: usize) -> Vec<&str> {
        coco_words(&self.text[self.lines[i].clone()])
    }
}

/// pycocoevalcap's per-line clean-up (`rstrip`, split on `' '`, drop [`COCO_PUNCTUATION`], join),
/// followed by the `str.split()` of CIDEr's `precook`.
fn coco_words(line: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for token in py_rstrip(line).split(' ') {
        // Every dropped token starts with ASCII punctuation.
        let maybe_punct = token
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_punctuation());
        if maybe_punct && COCO_PUNCTUATION.contains(&token) {
            continue;
        }
        // ASCII whitespace for Python: \t \n \x0b \x0c \r, \x1c..\x1f and the space.
        let plain = token.is_ascii() && !token.bytes().any(|b| matches!(b, 9..=13 | 28..=32));
        if plain {
            if !token.is_empty() {
                words.push(token);
            }
        } else {
            words.extend(py_split_whitespace(token));
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        PtbLexer::shared()
            .unwrap()
            .tokenize_lines(s)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn contractions_numbers_and_brackets() {
        assert_eq!(
            toks("A man's dog can't go (quickly)."),
            [
                "a", "man", "'s", "dog", "ca", "n't", "go", "-lrb-", "quickly", "-rrb-", "."
            ]
        );
        assert_eq!(
            toks("Cannot gonna 3.5 $5 100% 1,000 1/2"),
            [
                "can", "not", "gon", "na", "3.5", "$", "5", "100", "%", "1,000", "1/2"
            ]
        );
        assert_eq!(
            toks("U.S. The end etc. Then"),
            ["u.s.", ".", "the", "end", "etc.", ".", "then"]
        );
    }

    #[test]
    fn parallel_chunks_match_one_thread() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/metrics/ptb_tokens.json"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let texts: Vec<&str> = json["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap())
            .filter(|t| !t.contains('<'))
            .collect();
        let text = texts.join("\n");
        let lexer = PtbLexer::shared().unwrap();
        let single = lexer.tokenize_to_text_single_thread(&text).unwrap();
        for threads in [2, 3, 7] {
            assert!(
                lexer.tokenize_to_text_on(&text, threads, 0).unwrap() == single,
                "{threads} threads"
            );
        }
    }

    #[test]
    fn supplementary_characters_are_deleted() {
        assert_eq!(toks("emoji \u{1F600} here"), ["emoji", "here"]);
    }

    #[test]
    fn captions_keep_alignment_and_drop_punctuation() {
        let out = tokenize_captions(&["A dog.", "", "He said \"hi\" -- ok..."]).unwrap();
        assert_eq!(
            out,
            vec![vec!["a", "dog"], vec![], vec!["he", "said", "hi", "ok"]]
        );
    }
}
