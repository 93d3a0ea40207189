//! Kubernetes resource quantities (`100Mi`, `500m`, `1e3`, `2Gi`): parsed to a
//! plain number so patterns can compare them numerically, as Kyverno does,
//! and to an exact [`Quantity`] for the CEL `quantity` library, whose
//! `isInteger`, `asInteger` and `compareTo` must not lose precision.

use std::cmp::Ordering;

/// Parses a Kubernetes quantity string into its numeric value.
///
/// Returns `None` for anything that is not a quantity, so callers can fall
/// back to string comparison.
pub fn parse_quantity(input: &str) -> Option<f64> {
    let parts = QuantityParts::split(input.trim())?;
    let mantissa: f64 = parts.number.parse().ok()?;
    let sign = if parts.negative { -1.0 } else { 1.0 };
    Some(sign * mantissa * parts.suffix.multiplier())
}

/// A quantity's text cut into sign, number and suffix, before any
/// arithmetic: the float and the exact readings share it.
struct QuantityParts<'a> {
    negative: bool,
    /// Digits with at most one `.`, at least one digit.
    number: &'a str,
    suffix: Suffix,
}

#[derive(Clone, Copy)]
enum Suffix {
    /// Times ten to this power: SI suffixes (`m`, `k`, `G`...) and `e3`.
    Decimal(i32),
    /// Times 1024 to this power: `Ki` to `Ei`.
    Binary(u32),
}

impl Suffix {
    fn parse(suffix: &str) -> Option<Suffix> {
        let suffix = match suffix {
            "" => Suffix::Decimal(0),
            "n" => Suffix::Decimal(-9),
            "u" => Suffix::Decimal(-6),
            "m" => Suffix::Decimal(-3),
            "k" => Suffix::Decimal(3),
            "M" => Suffix::Decimal(6),
            "G" => Suffix::Decimal(9),
            "T" => Suffix::Decimal(12),
            "P" => Suffix::Decimal(15),
            "E" => Suffix::Decimal(18),
            "Ki" => Suffix::Binary(1),
            "Mi" => Suffix::Binary(2),
            "Gi" => Suffix::Binary(3),
            "Ti" => Suffix::Binary(4),
            "Pi" => Suffix::Binary(5),
            "Ei" => Suffix::Binary(6),
            _ => return exponent(suffix).map(Suffix::Decimal),
        };
        Some(suffix)
    }

    fn multiplier(self) -> f64 {
        match self {
            Suffix::Decimal(power) => 10f64.powi(power),
            // At most 6, so the cast is exact.
            Suffix::Binary(power) => 1024f64.powi(power as i32),
        }
    }
}

/// Decimal exponent suffixes such as `e3` or `E-2`.
fn exponent(suffix: &str) -> Option<i32> {
    let exponent = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))?;
    let digits = exponent.trim_start_matches(['+', '-']);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    exponent.parse().ok()
}

impl<'a> QuantityParts<'a> {
    fn split(text: &'a str) -> Option<QuantityParts<'a>> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'+' => (false, &text[1..]),
            b'-' => (true, &text[1..]),
            _ => (false, text),
        };
        let number_len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
            .map_or(rest.len(), |(i, _)| i);
        let (number, suffix) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        Some(QuantityParts {
            negative,
            number,
            suffix: Suffix::parse(suffix)?,
        })
    }
}

/// Why a text is not a quantity this engine can hold exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "not a quantity: expected a number with an optional sign and suffix (m, k, Mi, Gi, e3, ...)"
    )]
    Format,
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
}

/// Billionths in one unit: Kubernetes keeps no finer precision.
const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// A quantity's exact value, counted in billionths of a unit.
///
/// Kubernetes keeps quantities as arbitrary-precision decimals rounded (away
/// from zero) to a billionth; an `i128` of billionths holds every value up
/// to about 1.7e29 units, far past anything a resource field carries. Larger
/// ones are an error here rather than a silently wrong number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    nanos: i128,
}

impl Quantity {
    /// Parses `text` as the API server does: no surrounding spaces, a
    /// non-zero value finer than a billionth rounds away from zero, and a
    /// binary-suffixed value is capped at 2^63-1 units.
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let parts = QuantityParts::split(text).ok_or(QuantityError::Format)?;
        let too_large = || QuantityError::TooLarge(text.to_string());
        let (whole, fraction) = parts.number.split_once('.').unwrap_or((parts.number, ""));
        // The digits as one integer, scaled down by the fraction's length.
        let digits = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        let unscaled: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| too_large())?
        };
        // More fraction digits than an i128 holds already failed above.
        let fraction_len = i32::try_from(fraction.len()).map_err(|_| too_large())?;
        let magnitude = match parts.suffix {
            Suffix::Decimal(power) => power
                .checked_add(9 - fraction_len)
                .and_then(|power| scale_by_ten(unscaled, power)),
            Suffix::Binary(power) => {
                let factor = 1024i128.pow(power);
                let scaled = unscaled.checked_mul(factor).ok_or_else(too_large)?;
                scale_by_ten(scaled, 9 - fraction_len)
                    .map(|nanos| nanos.min(i128::from(i64::MAX) * NANOS_PER_UNIT))
            }
        }
        .ok_or_else(too_large)?;
        Ok(Quantity {
            nanos: if parts.negative {
                -magnitude
            } else {
                magnitude
            },
        })
    }

    /// `value` units.
    pub fn from_int(value: i64) -> Quantity {
        Quantity {
            nanos: i128::from(value) * NANOS_PER_UNIT,
        }
    }

    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        self.nanos
            .checked_add(other.nanos)
            .map(|nanos| Quantity { nanos })
    }

    pub fn checked_sub(self, other: Quantity) -> Option<Quantity> {
        self.nanos
            .checked_sub(other.nanos)
            .map(|nanos| Quantity { nanos })
    }

    /// The value as a whole number, when it is one that fits an `i64`.
    pub fn as_i64(self) -> Option<i64> {
        if self.nanos % NANOS_PER_UNIT != 0 {
            return None;
        }
        i64::try_from(self.nanos / NANOS_PER_UNIT).ok()
    }

    /// The nearest float; whole units and billionths are converted apart so
    /// the float keeps the precision a single division would lose.
    pub fn as_f64(self) -> f64 {
        let whole = (self.nanos / NANOS_PER_UNIT) as f64;
        let fraction = (self.nanos % NANOS_PER_UNIT) as f64 / 1e9;
        whole + fraction
    }

    /// -1, 0 or 1.
    pub fn sign(self) -> i64 {
        match self.nanos.cmp(&0) {
            Ordering::Less => -1,
            Ordering::Equal => 0,
            Ordering::Greater => 1,
        }
    }
}

/// `value` times ten to `power`, rounding a dropped non-zero remainder up
/// (away from zero, `value` being a magnitude); `None` on overflow.
fn scale_by_ten(value: i128, power: i32) -> Option<i128> {
    if power >= 0 {
        return value.checked_mul(10i128.checked_pow(power.unsigned_abs())?);
    }
    // A divisor past i128 leaves nothing of a magnitude below 10^39 but a
    // remainder.
    let Some(divisor) = 10i128.checked_pow(power.unsigned_abs()) else {
        return Some(i128::from(value != 0));
    };
    let quotient = value / divisor;
    Some(if value % divisor == 0 {
        quotient
    } else {
        quotient + 1
    })
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

    #[test]
    fn exact_quantities_keep_what_floats_lose() {
        let q = |text: &str| Quantity::parse(text).unwrap();
        assert_eq!(q("1Gi").as_i64(), Some(1 << 30));
        assert_eq!(q("200M"), q("0.2G"));
        assert!(q("50M") < q("50Mi"));
        assert_eq!(q("1.5").as_i64(), None);
        assert_eq!(q("1500m").as_f64(), 1.5);
        assert_eq!(q("-2k").sign(), -1);
        assert_eq!(q("0").sign(), 0);
        assert_eq!(q("1e3").as_i64(), Some(1000));
        // 2^63 - 1 and one more: the second is a quantity, not an int.
        assert_eq!(q("9223372036854775807").as_i64(), Some(i64::MAX));
        assert_eq!(q("9223372036854775808").as_i64(), None);
        assert_eq!(q("50000000G").as_i64(), Some(50_000_000_000_000_000));
        assert_eq!(q("9999999999999999999G").as_i64(), None);
    }

    #[test]
    fn exact_quantities_round_and_cap_as_the_api_server_does() {
        let q = |text: &str| Quantity::parse(text).unwrap();
        // Finer than a billionth rounds away from zero.
        assert_eq!(q("0.1n"), q("1n"));
        assert_eq!(q("-0.1n"), q("-1n"));
        assert_eq!(q("1e-30"), q("1n"));
        assert_eq!(q("0.0000000000000000000000000000000000000000001"), q("1n"));
        // Binary suffixes stop at 2^63-1.
        assert_eq!(q("16Ei").as_i64(), Some(i64::MAX));
        assert_eq!(q("+1"), Quantity::from_int(1));
        assert_eq!(
            q("1").checked_add(q("500m")).map(Quantity::as_f64),
            Some(1.5)
        );
    }

    #[test]
    fn exact_parsing_rejects_what_is_no_quantity() {
        for text in [
            "", " 1", "1 ", "200K", "Three", "Mi", "1,3G", "1.2.3", "e3", "1e",
        ] {
            assert_eq!(
                Quantity::parse(text),
                Err(QuantityError::Format),
                "{text:?}"
            );
        }
        for text in [
            "1e2147483647",
            "1e40",
            "99999999999999999999999999999999999999999",
        ] {
            assert!(
                matches!(Quantity::parse(text), Err(QuantityError::TooLarge(_))),
                "{text:?}"
            );
        }
    }
}
