//! Memory quantities as bytes. Parsing is the policy engine's (one parser
//! for every quantity the project reads); this adds what a memory limit
//! needs: whole, non-negative bytes, and the shortest exact way to write
//! them back.
use aiops_policy::quantity::parse_quantity;

/// Bytes in a Kubernetes memory quantity ("16Mi", "1G", "1.5Gi",
/// "128974848", "129e6"), rounded up; None for what a memory limit cannot be.
pub fn parse_memory(quantity: &str) -> Option<u64> {
    let bytes = parse_quantity(quantity)?.ceil();
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// The shortest exact quantity for `bytes`: binary units first ("32Mi"),
/// then decimal ("200M"), else plain bytes.
pub fn format_memory(bytes: u64) -> String {
    const UNITS: &[(u64, &str)] = &[
        (1024 * 1024 * 1024 * 1024, "Ti"),
        (1024 * 1024 * 1024, "Gi"),
        (1024 * 1024, "Mi"),
        (1024, "Ki"),
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1_000, "k"),
    ];
    if bytes == 0 {
        return "0".into();
    }
    UNITS
        .iter()
        .find(|(unit, _)| bytes.is_multiple_of(*unit))
        .map(|(unit, suffix)| format!("{}{suffix}", bytes / unit))
        .unwrap_or_else(|| bytes.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1024 * 1024 * 1024;

    #[test]
    fn memory_quantities_read_and_write_back_exactly() {
        assert_eq!(parse_memory("16Mi"), Some(16 * 1024 * 1024));
        assert_eq!(parse_memory("1.5Gi"), Some(1536 * 1024 * 1024));
        assert_eq!(parse_memory("100M"), Some(100_000_000));
        assert_eq!(parse_memory("129e6"), Some(129_000_000));
        assert_eq!(parse_memory("128974848"), Some(128_974_848));
        assert_eq!(parse_memory("lots"), None);
        assert_eq!(parse_memory("5Xi"), None);
        assert_eq!(parse_memory("-1Mi"), None);
        assert_eq!(format_memory(32 * 1024 * 1024), "32Mi");
        assert_eq!(format_memory(2 * GI), "2Gi");
        assert_eq!(format_memory(200_000_000), "200M");
        assert_eq!(format_memory(1536 * 1024 * 1024), "1536Mi");
        assert_eq!(format_memory(1001), "1001");
    }
}
