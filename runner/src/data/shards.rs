//! Shard lists as WebDataset writes them: brace expansion of `{000..015}` ranges (zero-padded to
//! the width of the bounds) and `{a,b}` alternatives, several groups per pattern.

/// Expands a shard pattern into file names, in order.
///
/// `data/{000..002}.tar` gives `data/000.tar`, `data/001.tar`, `data/002.tar`; `{a,b}/x.tar`
/// gives `a/x.tar`, `b/x.tar`. A pattern without braces is returned as is.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err(format!("unbalanced `}}` in shard pattern `{pattern}`"));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| format!("unbalanced `{{` in shard pattern `{pattern}`"))?;
    let inner = &pattern[open + 1..close];
    if inner.contains('{') {
        return Err(format!("nested braces in shard pattern `{pattern}`"));
    }
    let choices = if let Some((lo, hi)) = inner.split_once("..") {
        let width = lo.len();
        let (a, b) = (
            lo.parse::<u64>()
                .map_err(|_| format!("bad range start `{lo}` in shard pattern `{pattern}`"))?,
            hi.parse::<u64>()
                .map_err(|_| format!("bad range end `{hi}` in shard pattern `{pattern}`"))?,
        );
        if b < a {
            return Err(format!(
                "empty range `{{{inner}}}` in shard pattern `{pattern}`"
            ));
        }
        if b - a > 1_000_000 {
            return Err(format!(
                "range `{{{inner}}}` is too large in shard pattern `{pattern}`"
            ));
        }
        (a..=b).map(|i| format!("{i:0width$}")).collect::<Vec<_>>()
    } else {
        inner.split(',').map(str::to_string).collect()
    };
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let rest = expand_braces(tail)?;
    let mut out = Vec::with_capacity(choices.len() * rest.len());
    for c in &choices {
        for r in &rest {
            out.push(format!("{head}{c}{r}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_alternatives_and_errors() {
        assert_eq!(
            expand_braces("d/{000..002}.tar").unwrap(),
            ["d/000.tar", "d/001.tar", "d/002.tar"]
        );
        assert_eq!(
            expand_braces("{a,b}/{8..10}.tar").unwrap(),
            [
                "a/8.tar", "a/9.tar", "a/10.tar", "b/8.tar", "b/9.tar", "b/10.tar"
            ]
        );
        assert_eq!(expand_braces("x.tar").unwrap(), ["x.tar"]);
        assert!(expand_braces("d/{000..002.tar").is_err());
        assert!(expand_braces("d/{5..2}.tar").is_err());
        assert!(expand_braces("d/{a..2}.tar").is_err());
    }
}
