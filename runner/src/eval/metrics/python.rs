//! Python semantics the references depend on: `str.isspace`, `str.split()`, `str.strip()`,
//! `round(x, n)` and numpy's pairwise summation.

/// Python's `str.isspace` for one character: Rust's `char::is_whitespace` plus the four ASCII
/// separators U+001C..U+001F, which Python also treats as whitespace.
pub fn is_py_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

/// Python's `s.split()` (no argument).
pub fn py_split_whitespace(s: &str) -> Vec<&str> {
    s.split(is_py_whitespace)
        .filter(|w| !w.is_empty())
        .collect()
}

/// Python's `s.strip()` (no argument).
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_whitespace)
}

/// Python's `s.rstrip()` (no argument).
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_whitespace)
}

/// Python's `round(x, ndigits)` for floats: the decimal closest to the exact binary value of `x`,
/// exact ties to even, returned as the nearest double.
pub fn py_round(x: f64, ndigits: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    // 1100 fractional digits print every double exactly (no rounding in the formatter).
    let exact = format!("{:.1100}", x.abs());
    let (int_part, frac_part) = exact.split_once('.').unwrap_or((exact.as_str(), ""));
    let mut digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes().take(ndigits))
        .map(|b| b - b'0')
        .collect();
    let rest = &frac_part.as_bytes()[ndigits.min(frac_part.len())..];
    let round_up = match rest.first() {
        Some(b'5') => {
            let beyond_half = rest[1..].iter().any(|&b| b != b'0');
            let last_odd = digits.last().is_some_and(|d| d % 2 == 1);
            beyond_half || last_odd
        }
        Some(&b) => b > b'5',
        None => false,
    };
    if round_up {
        let mut i = digits.len();
        loop {
            if i == 0 {
                digits.insert(0, 1);
                break;
            }
            i -= 1;
            if digits[i] == 9 {
                digits[i] = 0;
            } else {
                digits[i] += 1;
                break;
            }
        }
    }
    let split = digits.len() - ndigits;
    let text: String = digits[..split]
        .iter()
        .map(|d| char::from(b'0' + d))
        .collect::<String>()
        + "."
        + &digits[split..]
            .iter()
            .map(|d| char::from(b'0' + d))
            .collect::<String>();
    let value: f64 = text.parse().unwrap_or(f64::NAN);
    if x.is_sign_negative() { -value } else { value }
}

/// numpy's pairwise summation (`add.reduce` on a contiguous float64 array), so sums over many values
/// round exactly as `np.mean` / `np.trapz` do.
pub fn np_pairwise_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= BLOCK {
        let mut r = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]];
        let mut i = 8;
        while i < n - (n % 8) {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        np_pairwise_sum(&a[..n2]) + np_pairwise_sum(&a[n2..])
    }
}

/// `np.mean` of a float64 array.
pub fn np_mean(a: &[f64]) -> f64 {
    np_pairwise_sum(a) / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_matches_python() {
        assert_eq!(py_round(0.125, 2), 0.12);
        assert_eq!(py_round(0.375, 2), 0.38);
        assert_eq!(py_round(2.675, 2), 2.67); // 2.675 is 2.67499999... in binary
        assert_eq!(py_round(66.66666666666667, 2), 66.67);
        assert_eq!(py_round(99.995, 2), 100.0); // 99.99500000000000454...
        assert_eq!(py_round(1.005, 2), 1.0); // 1.00499999999999989...
        assert_eq!(py_round(99.9951, 2), 100.0);
        assert_eq!(py_round(0.0, 2), 0.0);
    }

    #[test]
    fn whitespace_is_pythons() {
        assert_eq!(
            py_split_whitespace("a\u{1F}b\u{A0}c  d"),
            ["a", "b", "c", "d"]
        );
        assert_eq!(py_strip("\u{1C} x \u{2028}"), "x");
    }
}
