//! Kubernetes resource quantities (`100Mi`, `500m`, `1e3`, `2Gi`) parsed to a
//! plain number so they can be compared numerically, as Kyverno does.

/// Parses a Kubernetes quantity string into its numeric value.
///
/// Returns `None` for anything that is not a quantity, so callers can fall
/// back to string comparison.
pub fn parse_quantity(input: &str) -> Option<f64> {
    let text = input.trim();
    if text.is_empty() {
        return None;
    }
    let (sign, rest) = match text.as_bytes()[0] {
        b'+' => (1.0, &text[1..]),
        b'-' => (-1.0, &text[1..]),
        _ => (1.0, text),
    };
    let number_len = rest
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(rest.len(), |(i, _)| i);
    let (number, suffix) = rest.split_at(number_len);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let mantissa: f64 = number.parse().ok()?;
    let multiplier = suffix_multiplier(suffix)?;
    Some(sign * mantissa * multiplier)
}

fn suffix_multiplier(suffix: &str) -> Option<f64> {
    let value = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return exponent_multiplier(suffix),
    };
    Some(value)
}

/// Decimal exponent suffixes such as `e3` or `E-2`.
fn exponent_multiplier(suffix: &str) -> Option<f64> {
    let exponent = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))?;
    let digits = exponent.trim_start_matches(['+', '-']);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let power: i32 = exponent.parse().ok()?;
    Some(10f64.powi(power))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_suffixes() {
        assert_eq!(parse_quantity("1Gi"), Some(1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("100Mi"), Some(100.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2k"), Some(2000.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("0"), Some(0.0));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
    }

    #[test]
    fn comparisons_are_numeric() {
        let gi = parse_quantity("1Gi").unwrap();
        let mi = parse_quantity("1000Mi").unwrap();
        assert!(gi > mi);
        assert!(parse_quantity("500m").unwrap() < parse_quantity("1").unwrap());
    }

    #[test]
    fn rejects_non_quantities() {
        assert_eq!(parse_quantity("default"), None);
        assert_eq!(parse_quantity("RuntimeDefault"), None);
        assert_eq!(parse_quantity("1.2.3"), None);
        assert_eq!(parse_quantity("5000-6000"), None);
        assert_eq!(parse_quantity(""), None);
        assert_eq!(parse_quantity("10Xi"), None);
    }
}
