//! Kubernetes resource quantities (`500m`, `2`, `1.5`, `64Mi`, `1G`, `1e3`) read as numbers in
//! their base unit (cores, bytes), for the comparisons and figures the server makes with them.

use serde_json::Value;

/// `value` (a quantity string, or a plain JSON number) in base units; None if unparseable.
pub(crate) fn quantity(value: &Value) -> Option<f64> {
    if let Some(number) = value.as_f64() {
        return Some(number);
    }
    parse(value.as_str()?)
}

/// A quantity string in base units; None if unparseable.
pub(crate) fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
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
        exponent => 10f64.powi(exponent.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    Some(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_in_base_units() {
        for (text, expected) in [
            ("500m", 0.5),
            ("2", 2.0),
            ("1.5", 1.5),
            ("64Mi", 67_108_864.0),
            ("1G", 1e9),
            ("1e3", 1000.0),
            ("1Ki", 1024.0),
        ] {
            assert_eq!(parse(text), Some(expected), "{text}");
        }
        assert!((parse("250n").unwrap() - 2.5e-7).abs() < 1e-15);
        assert_eq!(parse("12Zi"), None);
        assert_eq!(parse("Mi"), None);
        assert_eq!(quantity(&json!(3)), Some(3.0));
        assert_eq!(quantity(&json!(null)), None);
    }
}
