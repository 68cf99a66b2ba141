//! The lexical rules of Stanford CoreNLP 3.4.1's `PTBLexer.flex`, the tokenizer jar that pycocoevalcap
//! runs (`PTBTokenizer -preserveLines -lowerCase`), transcribed into `regex-automata` syntax.
//!
//! Transcription conventions (so the rules read like the flex file):
//! - macros are expanded by `format!`; every JFlex group becomes a non-capturing group;
//! - JFlex `%caseless` makes literal letters match both cases but leaves character classes alone;
//!   [`caseless`] applies exactly that to a finished pattern;
//! - `[:letter:]` is `\p{L}`, `[:digit:]` is `\p{Nd}`, `[:uppercase:]` is `\p{Lu}`; the lexer works on
//!   UTF-16 code units (BMP only), which [`super::ptb`] emulates by splitting supplementary characters;
//! - the option defaults are those `PTBTokenizer.main` passes: PTB3 escaping on, `americanize` off,
//!   `tokenizeNLs` on, not strict Treebank 3 (so `FRAC` rather than `FRACSTB3`).

/// What the lexer does with a matched token (the action blocks of the flex rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Emit the text unchanged.
    Keep,
    /// Emit the first `len - n` characters and lex the last `n` again (`yypushback(n)`).
    PushBack(usize),
    /// Replace spaces by U+00A0 (`normalizeSpace`).
    NbspSpaces,
    /// Emit `--` (`ptb3Dashes`).
    MDash,
    /// Replace `&amp;` by `&` (case-insensitive).
    NormalizeAmp,
    /// Remove soft hyphens (U+00AD); an all-soft-hyphen token becomes `-`.
    RemoveSoftHyphens,
    /// `latexQuotes(text, probablyLeft)`.
    Quotes { probably_left: bool },
    /// `normalizeFractions`: the five vulgar fractions ¼ ½ ¾ ⅓ ⅔ become `1/4` etc.
    Fractions,
    /// `normalizeCurrency`: ¢ → `cents`, £ → `#`, generic currency and euro → `$`.
    Currency,
    /// The acronym-before-sentence-start rule: `I.` loses its period, longer acronyms keep it and the
    /// period is lexed again.
    AcronymSentenceEnd,
    /// ABBREV1 before a sentence end: emit with the period, then lex the period again.
    AbbrevSentenceEnd,
    /// PHONE: spaces to U+00A0, parentheses to `-LRB-`/`-RRB-`.
    Phone,
    /// SMILEY/ASIANSMILEY: parentheses to `-LRB-`/`-RRB-`.
    Parens,
    /// Emit this fixed text.
    Replace(&'static str),
    /// `{HYPHENS}`: three or four hyphens become `--`.
    Hyphens,
    /// `{LDOTS}`: `...`.
    Ellipsis,
    /// No token (whitespace, DEL, `&nbsp;`).
    Skip,
    /// A line break: with `-preserveLines` it ends the output line.
    Newline,
    /// An untokenizable character: deleted (`untokenizable=firstDelete`).
    Delete,
}

/// One flex rule: `head` or `head/tail` (trailing context), in priority order.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    /// The token part of the rule.
    pub head: String,
    /// The trailing context (matched for the longest-match comparison, then given back).
    pub tail: Option<String>,
    /// The action block.
    pub action: Action,
}

/// JFlex `%caseless`: an ASCII letter outside a character class and outside an escape matches both
/// cases. Escapes `\p{..}`, `\P{..}` and `\x{..}` are skipped whole.
pub fn caseless(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut i = 0;
    let mut in_class = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            out.push(c);
            if let Some(&next) = chars.get(i + 1) {
                out.push(next);
                i += 2;
                if matches!(next, 'p' | 'P' | 'x') && chars.get(i) == Some(&'{') {
                    while i < chars.len() {
                        out.push(chars[i]);
                        i += 1;
                        if chars[i - 1] == '}' {
                            break;
                        }
                    }
                }
            } else {
                i += 1;
            }
            continue;
        }
        if in_class {
            if c == ']' {
                in_class = false;
            }
            out.push(c);
        } else if c == '[' {
            in_class = true;
            out.push(c);
            // A leading `^` belongs to the class syntax.
            if chars.get(i + 1) == Some(&'^') {
                out.push('^');
                i += 1;
            }
        } else if c == '{' {
            // Repetition counts `{m,n}` contain no letters; copy through.
            out.push(c);
        } else if c.is_ascii_alphabetic() {
            out.push('[');
            out.push(c.to_ascii_lowercase());
            out.push(c.to_ascii_uppercase());
            out.push(']');
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

/// The macros of `PTBLexer.flex` (3.4.1) in regex syntax.
struct Macros {
    sgml: String,
    space: String,
    spaces: String,
    newline: String,
    spacenl: String,
    spacenls: String,
    sentend: String,
    digit: String,
    letter: String,
    word: String,
    apos: String,
    apos_etc: String,
    acro: String,
    abbrev1: String,
    insentp: String,
}

fn macros() -> Macros {
    let sgml = r#"<(?:[!?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*(?:[ ]+(?:[A-Za-z][A-Za-z0-9_:.\-]*|[A-Za-z][A-Za-z0-9_:.\-]*[ ]*=[ ]*(?:'[^']*'|"[^"]*")))*[ ]*/?|/[A-Za-z][A-Za-z0-9_:.\-]*)[ ]*>"#.to_string();
    let space = r"[ \t\x{A0}\x{2000}-\x{200A}\x{3000}]".to_string();
    let spaces = format!("{space}+");
    let newline = r"(?:\r|\r?\n|\x{2028}|\x{2029}|\x{0B}|\x{0C}|\x{85})".to_string();
    let spacenl = format!("(?:{space}|{newline})");
    let spacenls = format!("{spacenl}+");
    let sentend = format!(r"{spacenl}(?:{spacenl}|\p{{Lu}}|{sgml})");
    let digit = r"(?:\p{Nd}|[\x{7C0}-\x{7C9}])".to_string();
    let splet = r"&[aeiouAEIOU](?:acute|grave|uml);";
    let letter = format!(
        r"(?:\p{{L}}|{splet}|[\x{{00AD}}\x{{0237}}-\x{{024F}}\x{{02C2}}-\x{{02C5}}\x{{02D2}}-\x{{02DF}}\x{{02E5}}-\x{{02FF}}\x{{0300}}-\x{{036F}}\x{{0370}}-\x{{037D}}\x{{0384}}\x{{0385}}\x{{03CF}}\x{{03F6}}\x{{03FC}}-\x{{03FF}}\x{{0483}}-\x{{0487}}\x{{04CF}}\x{{04F6}}-\x{{04FF}}\x{{0510}}-\x{{0525}}\x{{055A}}-\x{{055F}}\x{{0591}}-\x{{05BD}}\x{{05BF}}\x{{05C1}}\x{{05C2}}\x{{05C4}}\x{{05C5}}\x{{05C7}}\x{{0615}}-\x{{061A}}\x{{063B}}-\x{{063F}}\x{{064B}}-\x{{065E}}\x{{0670}}\x{{06D6}}-\x{{06EF}}\x{{06FA}}-\x{{06FF}}\x{{070F}}\x{{0711}}\x{{0730}}-\x{{074F}}\x{{0750}}-\x{{077F}}\x{{07A6}}-\x{{07B1}}\x{{07CA}}-\x{{07F5}}\x{{07FA}}\x{{0900}}-\x{{0903}}\x{{093C}}\x{{093E}}-\x{{094E}}\x{{0951}}-\x{{0955}}\x{{0962}}-\x{{0963}}\x{{0981}}-\x{{0983}}\x{{09BC}}-\x{{09C4}}\x{{09C7}}\x{{09C8}}\x{{09CB}}-\x{{09CD}}\x{{09D7}}\x{{09E2}}\x{{09E3}}\x{{0A01}}-\x{{0A03}}\x{{0A3C}}\x{{0A3E}}-\x{{0A4F}}\x{{0A81}}-\x{{0A83}}\x{{0ABC}}-\x{{0ACF}}\x{{0B82}}\x{{0BBE}}-\x{{0BC2}}\x{{0BC6}}-\x{{0BC8}}\x{{0BCA}}-\x{{0BCD}}\x{{0C01}}-\x{{0C03}}\x{{0C3E}}-\x{{0C56}}\x{{0D3E}}-\x{{0D44}}\x{{0D46}}-\x{{0D48}}\x{{0E30}}-\x{{0E3A}}\x{{0E47}}-\x{{0E4E}}\x{{0EB1}}-\x{{0EBC}}\x{{0EC8}}-\x{{0ECD}}])"
    );
    let word = format!("{letter}(?:{letter}|{digit})*(?:[.!?]{letter}(?:{letter}|{digit})*)*");
    let apos = r"(?:['\x{92}\x{2019}]|&apos;)".to_string();
    let apos_etc = format!(r"(?:{apos}|[`\x{{91}}\x{{2018}}\x{{201B}}])");
    let acro = r"(?:[A-Za-z](?:\.[A-Za-z])*|(?:Canada|Sino|Korean|EU|Japan|non)-U\.S|U\.S\.-(?:U\.K|U\.S\.S\.R))".to_string();
    let abmonth = "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec";
    let abdays = "Mon|Tue|Tues|Wed|Thu|Thurs|Fri";
    let abstate = "Ala|Ariz|[A]z|[A]rk|Calif|Colo|Conn|Ct|Dak|[D]el|Fla|Ga|[I]ll|Ind|Kans?|Ky|[L]a|[M]ass|Md|Mich|Minn|[M]iss|Mo|Mont|Neb|Nev|Okla|[O]re|[P]a|Penn|Tenn|[T]ex|Va|Vt|[W]ash|Wisc?|Wyo";
    let abcomp = "Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys";
    let abnum = "tel|est|ext|sq";
    let abptit = r"Jr|Sr|Bros|(?:Ed|Ph)\.D|Blvd|Rd|Esq";
    let abbrev1 =
        format!(r"(?:{abmonth}|{abdays}|{abstate}|{abcomp}|{abnum}|{abptit}|etc|al|seq|Bldg)\.");
    let insentp = r"[,;:\x{3001}]".to_string();
    Macros {
        sgml,
        space,
        spaces,
        newline,
        spacenl,
        spacenls,
        sentend,
        digit,
        letter,
        word,
        apos,
        apos_etc,
        acro,
        abbrev1,
        insentp,
    }
}

/// The rules of `PTBLexer.flex` in their priority order (earlier wins among equally long matches).
pub fn rules() -> Vec<RuleSpec> {
    let m = macros();
    let Macros {
        sgml,
        space,
        spaces,
        newline,
        spacenl,
        spacenls,
        sentend,
        digit,
        letter,
        word,
        apos,
        apos_etc,
        acro,
        abbrev1,
        insentp,
    } = &m;

    let spmdash = r"&(?:MD|mdash|ndash);|[\x{96}\x{97}\x{2013}\x{2014}\x{2015}]";
    let spamp = "&amp;";
    let sppunc = "&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);";
    let date = format!(r"{digit}{{1,2}}[\-/]{digit}{{1,2}}[\-/]{digit}{{2,4}}");
    let num = format!(r"(?:{digit}+|{digit}*(?:[.:,\x{{AD}}\x{{66B}}\x{{66C}}]{digit}+)+)");
    let number = format!(r"[\-+]?{num}");
    let subsupnum = r"[\x{207A}\x{207B}\x{208A}\x{208B}]?(?:[\x{2070}\x{B9}\x{B2}\x{B3}\x{2074}-\x{2079}]+|[\x{2080}-\x{2089}]+)";
    let frac =
        format!(r"(?:{digit}{{1,4}}[\- \x{{A0}}])?{digit}{{1,4}}(?:\\?/|\x{{2044}}){digit}{{1,4}}");
    let frac2 = r"[\x{BC}\x{BD}\x{BE}\x{2153}-\x{215E}]";
    let dolsign = r"(?:[A-Z]*\$|#)";
    let dolsign2 = r"[\x{A2}\x{A3}\x{A4}\x{A5}\x{80}\x{20A0}\x{20AC}\x{60B}\x{E3F}\x{20A4}\x{FFE0}\x{FFE1}\x{FFE5}\x{FFE6}]";
    let filename_ext = "bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip";
    let filename =
        format!(r"(?:{letter}|{digit})+(?:[.](?:{letter}|{digit})+)*(?:[.](?:{filename_ext}))");
    let hyphen = r"[\-_\x{58A}\x{2010}\x{2011}]";
    let ld = r"(?:\p{L}|\p{Nd})";
    let thing =
        format!(r"(?:[dDoOlL]{apos_etc}{ld})?{ld}+(?:{hyphen}(?:[dDoOlL]{apos_etc}{ld})?{ld}+)*");
    let thinga = format!(r"[A-Z]+(?:(?:[+&]|{spamp})[A-Z]+)+");
    let thing3 = r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}";
    let acro2 = r"(?:[A-Za-z](?:\.[A-Za-z])+|(?:Canada|Sino|Korean|EU|Japan|non)-U\.S|U\.S\.-(?:U\.K|U\.S\.S\.R))";
    let hthing =
        format!(r"[A-Za-z0-9][A-Za-z0-9.,\x{{AD}}]*(?:-(?:[A-Za-z0-9\x{{AD}}]+|{acro2}\.))+");
    let redaux = format!("{apos}(?:[msdMSD]|re|ve|ll)");
    let sword = r"[A-Za-z\x{AD}]*[A-MO-Za-mo-z]\x{AD}*";
    let sredaux = format!("n{apos_etc}t");
    let apoword = format!(
        r"{apos}n{apos}?|[lLdDjJ]{apos}|Dunkin{apos}|somethin{apos}|ol{apos}|{apos}em|[A-HJ-XZn]{apos_etc}\p{{L}}{{2}}\p{{L}}*|{apos}[2-9]0s|{apos}till?|\p{{L}}\p{{L}}*[aeiouyAEIOUY]{apos_etc}[aeiouA-Z]\p{{L}}*|{apos}cause|cont'd\.?|'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l|O{apos_etc}o"
    );
    let apoword2 = format!("y{apos}");
    let fullurl = r#"https?://[^ \t\n\f\r"<>|(){}]+[^ \t\n\f\r"<>|.!?(){},\-]"#;
    // `,-_` in the second class is a range (0x2C-0x5F) in JFlex as in regex syntax: kept as written.
    let likelyurl = r#"(?:(?:www\.(?:[^ \t\n\f\r"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})|(?:(?:[^ \t\n\f\r"`'<>|.!?(){},-_$]+\.)+(?:com|net|org|edu)))(?:/[^ \t\n\f\r"<>|()]+[^ \t\n\f\r"<>|.!?(){},\-])?"#;
    let email = r#"(?:&lt;|<)?[a-zA-Z0-9][^ \t\n\f\r"<>|()\x{A0}{}]*@(?:[^ \t\n\f\r"<>|(){}.\x{A0}]+\.)*(?:[^ \t\n\f\r"<>|(){}.\x{A0}]+)(?:&gt;|>)?"#;
    let twitter = format!(r"@[a-zA-Z_][a-zA-Z_0-9]*|#{letter}+");
    let abtitle = "Mr|Mrs|Ms|[M]iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|Mlle|Mme|Msgr|Sfc";
    let abcomp2 = "Invt|Elec|Natl|M[ft]g|Dept";
    let abbrev4 = format!(r"(?:{abtitle}|vs|Alex|Wm|Jos|Cie|a\.k\.a|cf|TREAS|Ph|{acro}|{abcomp2})");
    let abbrev2 = format!(r"{abbrev4}\.");
    let acronym = format!(r"{acro}\.");
    let abbrev3 = r"(?:ca|figs?|prop|nos?|art|bldg|prop|pp|op)\.";
    let phone = r"(?:\([0-9]{2,3}\)[ \x{A0}]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \x{A0}])?[0-9]{2,4}[\- \x{A0}])[0-9]{3,4}[\- \x{A0}]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}";
    let hyphens = r"\-+";
    let ldots = r"\.{3,5}|(?:\.[ \x{A0}]){2,4}\.|[\x{85}\x{2026}]";
    let fnmarks = "@+|#+|_+";
    let asts = r"\*+|(?:\\\*){1,3}";
    let quotes = format!(
        r"{apos}|''|[`\x{{2018}}\x{{2019}}\x{{201A}}\x{{201B}}\x{{201C}}\x{{201D}}\x{{91}}\x{{92}}\x{{93}}\x{{94}}\x{{201E}}\x{{201F}}\x{{2039}}\x{{203A}}\x{{AB}}\x{{BB}}]{{1,2}}"
    );
    let dblquot = r#"(?:"|&quot;)"#;
    let tbspec = format!(
        r"-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\.D\.s|pro-|anti-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls|Cap{apos}n|c{apos}est"
    );
    let tbspec2 = format!("{apos}[0-9][0-9]");
    let smiley = r"[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]]";
    // The first alternative is what JFlex reads: after the escaped `\[` the rest is literal text.
    let asiansmiley = r"[\^x=~<>]\.\[\^x=~<>\]|[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)|\([\^x=~<>']-[\^x=~<>'`]\)";
    let miscsymbol = r"[+%&~\^|\\¦\x{00A7}¨\x{00A9}\x{00AC}\x{00AE}¯\x{00B0}-\x{00B3}\x{00B4}-\x{00BA}\x{00D7}\x{00F7}\x{0387}\x{05BE}\x{05C0}\x{05C3}\x{05C6}\x{05F3}\x{05F4}\x{0600}-\x{0603}\x{0606}-\x{060A}\x{060C}\x{0614}\x{061B}\x{061E}\x{066A}\x{066D}\x{0703}-\x{070D}\x{07F6}\x{07F7}\x{07F8}\x{0964}\x{0965}\x{0E4F}\x{1FBD}\x{2016}\x{2017}\x{2020}-\x{2023}\x{2030}-\x{2038}\x{203B}\x{203E}-\x{2042}\x{2044}\x{207A}-\x{207F}\x{208A}-\x{208E}\x{2100}-\x{214F}\x{2190}-\x{21FF}\x{2200}-\x{2BFF}\x{3012}\x{30FB}\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF20}\x{FF3B}-\x{FF40}\x{FF5B}-\x{FF65}\x{FF65}]";
    let acronym_followers = format!(
        "(?:[A]bout|[A]ccording|[A]dditionally|[A]fter|[A]n|[A]|[A]s|[A]t|[B]ut|[E]arlier|[H]e|[H]er|[H]ere|[H]owever|[I]f|[I]n|[I]t|[L]ast|[M]any|[M]ore|[M]r\\.|[M]s\\.|[N]ow|[O]nce|[O]ne|[O]ther|[O]ur|[S]he|[S]ince|[S]o|[S]ome|[S]uch|[T]hat|[T]he|[T]heir|[T]hen|[T]here|[T]hese|[T]hey|[T]his|[W]e|[W]hen|[W]hile|[W]hat|[Y]et|[Y]ou|{sgml})"
    );
    let any = r"[\s\S]";

    use Action::*;
    let r = |head: &str, action: Action| RuleSpec {
        head: head.to_string(),
        tail: None,
        action,
    };
    let t = |head: &str, tail: &str, action: Action| RuleSpec {
        head: head.to_string(),
        tail: Some(tail.to_string()),
        action,
    };
    vec![
        r("c[+][+]", Keep),
        r("(?:c|f)#", Keep),
        r("cannot", PushBack(3)),
        r("'twas", PushBack(3)),
        r("'tis", PushBack(2)),
        r("gonna|gotta|lemme|gimme|wanna", PushBack(2)),
        r(sgml, NbspSpaces),
        r(spmdash, MDash),
        r(spamp, NormalizeAmp),
        r(sppunc, Keep),
        t(word, &redaux, RemoveSoftHyphens),
        t(sword, &sredaux, RemoveSoftHyphens),
        r(word, RemoveSoftHyphens),
        r(&apoword, Keep),
        t(&apoword2, r"\p{L}", Keep),
        r(fullurl, Keep),
        r(likelyurl, Keep),
        r(email, Keep),
        r(&twitter, Keep),
        t(
            &redaux,
            "[^A-Za-z]",
            Quotes {
                probably_left: false,
            },
        ),
        t(
            &sredaux,
            "[^A-Za-z]",
            Quotes {
                probably_left: false,
            },
        ),
        r(&date, Keep),
        r(&number, RemoveSoftHyphens),
        r(subsupnum, Keep),
        r(&frac, NbspSpaces),
        r(frac2, Fractions),
        r(&tbspec, NormalizeAmp),
        r(thing3, Keep),
        r(dolsign, Keep),
        r(dolsign2, Currency),
        t(
            &acronym,
            &format!("{spacenls}{acronym_followers}{spacenl}"),
            AcronymSentenceEnd,
        ),
        t(abbrev3, &format!(r"{spacenl}?\p{{Nd}}"), Keep),
        t(r"(?:pt[eyEY]|co)\.", &format!("{space}(?:ltd|lim)"), Keep),
        t(abbrev1, sentend, AbbrevSentenceEnd),
        t(abbrev1, &format!("{any}{any}"), Keep),
        r(abbrev1, AbbrevSentenceEnd),
        r(&abbrev2, Keep),
        t(&abbrev4, space, Keep),
        t(acro, spacenl, Keep),
        t(&tbspec2, spacenl, Keep),
        t(&filename, &format!("(?:{spacenl}|[.?!,])"), Keep),
        t(&format!(r"{word}\."), insentp, RemoveSoftHyphens),
        r(phone, Phone),
        t(
            dblquot,
            "[A-Za-z0-9$]",
            Quotes {
                probably_left: true,
            },
        ),
        r(
            dblquot,
            Quotes {
                probably_left: false,
            },
        ),
        r(r"\x{7F}", Skip),
        r("<|&lt;", Replace("<")),
        r(">|&gt;", Replace(">")),
        t(smiley, "[^A-Za-z0-9]", Parens),
        r(asiansmiley, Parens),
        r(r"\{", Replace("-LCB-")),
        r(r"\}", Replace("-RCB-")),
        r(r"\[", Replace("-LSB-")),
        r(r"\]", Replace("-RSB-")),
        r(r"\(", Replace("-LRB-")),
        r(r"\)", Replace("-RRB-")),
        r(hyphens, Hyphens),
        r(ldots, Ellipsis),
        r(fnmarks, Keep),
        r(asts, Keep),
        r(insentp, Keep),
        r("[?!]+", Keep),
        r(
            r"[.¡¿\x{37E}\x{589}\x{61F}\x{6D4}\x{700}-\x{702}\x{7FA}\x{3002}]",
            Keep,
        ),
        r("=", Keep),
        r("/", Keep),
        t(&format!(r"{hthing}\."), insentp, RemoveSoftHyphens),
        r(&hthing, RemoveSoftHyphens),
        t(&format!(r"{thing}\."), insentp, Keep),
        r(&thing, Keep),
        t(&format!(r"{thinga}\."), insentp, NormalizeAmp),
        r(&thinga, NormalizeAmp),
        t(
            "'",
            r"[A-Za-z][^ \t\n\r\x{A0}]",
            Quotes {
                probably_left: true,
            },
        ),
        r(
            &redaux,
            Quotes {
                probably_left: false,
            },
        ),
        r(
            &sredaux,
            Quotes {
                probably_left: false,
            },
        ),
        r(
            &quotes,
            Quotes {
                probably_left: false,
            },
        ),
        r("<<|>>", Keep),
        r(miscsymbol, Keep),
        r(
            &format!(r"\x{{0}}|{spaces}|[\x{{200B}}\x{{200E}}-\x{{200F}}\x{{FEFF}}]"),
            Skip,
        ),
        r(newline, Newline),
        r("&nbsp;", Skip),
        r(r"[^\n]", Delete),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caseless_touches_literals_only() {
        assert_eq!(
            caseless(r"ab[cd]\p{L}\x{41}e{1,2}"),
            r"[aA][bB][cd]\p{L}\x{41}[eE]{1,2}"
        );
        assert_eq!(caseless(r"[^a]b\.c"), r"[^a][bB]\.[cC]");
    }
}
