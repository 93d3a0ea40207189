//! The operator prefix of a string pattern (`>`, `<=`, `!`, ranges `a-b`
//! and `a!-b`), parsed once so the value matcher can dispatch on it.

/// How a scalar string pattern compares against a resource value.
#[derive(Debug, Clone, PartialEq)]
pub enum PatternOperator {
    Equal,
    NotEqual,
    More,
    MoreEqual,
    Less,
    LessEqual,
    /// `low-high`: inclusive range.
    InRange(String, String),
    /// `low!-high`: outside the inclusive range.
    NotInRange(String, String),
}

impl PatternOperator {
    /// Splits a pattern into its operator and the operand that follows it.
    pub fn parse(pattern: &str) -> (PatternOperator, &str) {
        if pattern.len() < 2 {
            return (PatternOperator::Equal, pattern);
        }
        // Most patterns (`false`, `RuntimeDefault`, `*:latest`) have no
        // operator and no range: one look at the bytes decides, where the
        // prefix list and the range search cost ~100 instructions for each
        // scalar compared.
        let bytes = pattern.as_bytes();
        if !matches!(bytes[0], b'>' | b'<' | b'!') && !bytes.contains(&b'-') {
            return (PatternOperator::Equal, pattern);
        }
        for (prefix, op) in [
            (">=", PatternOperator::MoreEqual),
            ("<=", PatternOperator::LessEqual),
            (">", PatternOperator::More),
            ("<", PatternOperator::Less),
            ("!", PatternOperator::NotEqual),
        ] {
            if let Some(rest) = pattern.strip_prefix(prefix) {
                return (op, rest.trim());
            }
        }
        if let Some((low, high)) = split_range(pattern, "!-") {
            return (PatternOperator::NotInRange(low, high), pattern);
        }
        if let Some((low, high)) = split_range(pattern, "-") {
            return (PatternOperator::InRange(low, high), pattern);
        }
        (PatternOperator::Equal, pattern)
    }
}

/// Splits `low<sep>high` where both ends are numbers with an optional unit
/// suffix (`5000-6000`, `1Gi-2Gi`, `-5!-5`).
fn split_range(pattern: &str, separator: &str) -> Option<(String, String)> {
    // Every scalar comparison asks; most patterns hold no `-` at all.
    if !pattern.as_bytes().contains(&b'-') {
        return None;
    }
    // Try each occurrence so a leading negative sign is not taken as the separator.
    let mut search_from = 0;
    while let Some(found) = pattern[search_from..].find(separator) {
        let at = search_from + found;
        let (low, high) = (&pattern[..at], &pattern[at + separator.len()..]);
        if is_range_endpoint(low) && is_range_endpoint(high) {
            return Some((low.to_string(), high.to_string()));
        }
        search_from = at + separator.len();
    }
    None
}

fn is_range_endpoint(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let digits_end = unsigned
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(unsigned.len(), |(i, _)| i);
    let (number, unit) = unsigned.split_at(digits_end);
    let valid_number = !number.is_empty()
        && !number.starts_with('.')
        && !number.ends_with('.')
        && number.matches('.').count() <= 1;
    valid_number && unit.chars().all(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefix_operators() {
        assert_eq!(
            PatternOperator::parse(">=10"),
            (PatternOperator::MoreEqual, "10")
        );
        assert_eq!(
            PatternOperator::parse("<= 1Gi"),
            (PatternOperator::LessEqual, "1Gi")
        );
        assert_eq!(PatternOperator::parse(">0"), (PatternOperator::More, "0"));
        assert_eq!(PatternOperator::parse("<5"), (PatternOperator::Less, "5"));
        assert_eq!(
            PatternOperator::parse("!default"),
            (PatternOperator::NotEqual, "default")
        );
        assert_eq!(PatternOperator::parse("!"), (PatternOperator::Equal, "!"));
    }

    #[test]
    fn parses_ranges() {
        assert_eq!(
            PatternOperator::parse("5000-6000").0,
            PatternOperator::InRange("5000".into(), "6000".into())
        );
        assert_eq!(
            PatternOperator::parse("1Gi!-2Gi").0,
            PatternOperator::NotInRange("1Gi".into(), "2Gi".into())
        );
        assert_eq!(
            PatternOperator::parse("-5-5").0,
            PatternOperator::InRange("-5".into(), "5".into())
        );
        assert_eq!(PatternOperator::parse("a-b").0, PatternOperator::Equal);
    }
}
