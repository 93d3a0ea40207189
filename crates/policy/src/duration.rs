//! Go-style durations (`300ms`, `1h30m`, `-2.5s`) parsed to seconds, the
//! format Kyverno uses for duration comparisons in patterns and conditions.

/// Parses a Go duration string into seconds. `"0"` is accepted on its own,
/// every other value needs a unit on each component.
pub fn parse_duration(input: &str) -> Option<f64> {
    let text = input.trim();
    let (sign, mut rest) = match text.as_bytes().first()? {
        b'+' => (1.0, &text[1..]),
        b'-' => (-1.0, &text[1..]),
        _ => (1.0, text),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
            .map_or(rest.len(), |(i, _)| i);
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, remaining) = after.split_at(unit_len);
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * seconds_per_unit;
        rest = remaining;
    }
    Some(sign * total)
}

/// Formats seconds the way Go's `time.Duration.String()` does (`1h2m3s`).
pub fn format_duration(seconds: f64) -> String {
    if seconds == 0.0 {
        return "0s".to_string();
    }
    let negative = seconds < 0.0;
    let mut nanos = (seconds.abs() * 1e9).round() as u128;
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if nanos < 1_000_000_000 {
        // Sub-second durations use the largest fitting small unit.
        let (value, unit) = if nanos < 1_000 {
            (nanos as f64, "ns")
        } else if nanos < 1_000_000 {
            (nanos as f64 / 1e3, "µs")
        } else {
            (nanos as f64 / 1e6, "ms")
        };
        out.push_str(&trim_float(value));
        out.push_str(unit);
        return out;
    }
    let hours = nanos / 3_600_000_000_000;
    nanos %= 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000;
    nanos %= 60_000_000_000;
    let secs = nanos as f64 / 1e9;
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&trim_float(secs));
    out.push('s');
    out
}

fn trim_float(value: f64) -> String {
    let text = format!("{value:.9}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse_duration("1h"), Some(3600.0));
        assert_eq!(parse_duration("1h30m"), Some(5400.0));
        assert_eq!(parse_duration("300ms"), Some(0.3));
        assert_eq!(parse_duration("-2s"), Some(-2.0));
        assert_eq!(parse_duration("0"), Some(0.0));
        assert_eq!(parse_duration("1.5h"), Some(5400.0));
    }

    #[test]
    fn rejects_unitless_and_garbage() {
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("1x"), None);
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_duration(5400.0), "1h30m0s");
        assert_eq!(format_duration(2.5), "2.5s");
        assert_eq!(format_duration(0.0), "0s");
        assert_eq!(format_duration(0.3), "300ms");
    }
}
