//! Parsing of the quantities and durations the resources carry as strings.
//!
//! The CRD schema already refuses strings that do not match Kubernetes'
//! patterns; these functions turn accepted strings into numbers for the
//! controllers, and say precisely what is wrong with one that slipped through.

use std::time::Duration;

/// A quantity or duration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(
        "{value:?} is not a quantity: expected a number with an optional suffix such as 500m, 2, 16Gi or 1e9"
    )]
    Quantity { value: String },
    #[error("{value:?} is out of range for {what}")]
    OutOfRange { value: String, what: &'static str },
    #[error(
        "{value:?} is not a duration: expected a number with a unit (ns, us, ms, s, m, h) such as 90s or 1h30m"
    )]
    Duration { value: String },
}

/// The value of a Kubernetes quantity in base units (bytes, cores).
pub fn parse_quantity(value: &str) -> Result<f64, ParseError> {
    let err = || ParseError::Quantity {
        value: value.to_string(),
    };
    let s = value.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number == "+" || number == "-" {
        return Err(err());
    }
    let base: f64 = number.parse().map_err(|_| err())?;
    let factor = match suffix {
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
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| err())?;
            10f64.powi(e)
        }
        _ => return Err(err()),
    };
    let v = base * factor;
    if !v.is_finite() {
        return Err(err());
    }
    Ok(v)
}

/// A quantity of bytes (memory, shm, quota), rounded up to a whole byte.
pub fn parse_bytes(value: &str) -> Result<u64, ParseError> {
    let v = parse_quantity(value)?;
    if v < 0.0 || v > u64::MAX as f64 {
        return Err(ParseError::OutOfRange {
            value: value.to_string(),
            what: "a size in bytes",
        });
    }
    Ok(v.ceil() as u64)
}

/// A CPU quantity in nano-CPUs, the unit Docker's `NanoCpus` takes.
pub fn parse_nano_cpus(value: &str) -> Result<i64, ParseError> {
    let v = parse_quantity(value)?;
    let nanos = (v * 1e9).round();
    if nanos <= 0.0 || nanos > i64::MAX as f64 {
        return Err(ParseError::OutOfRange {
            value: value.to_string(),
            what: "a CPU limit",
        });
    }
    Ok(nanos as i64)
}

/// A Go-style duration (`90s`, `1h30m`, `1.5h`).
pub fn parse_duration(value: &str) -> Result<Duration, ParseError> {
    let err = || ParseError::Duration {
        value: value.to_string(),
    };
    let mut rest = value.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if n == 0 {
            return Err(err());
        }
        let number: f64 = rest[..n].parse().map_err(|_| err())?;
        rest = &rest[n..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_every_notation() {
        assert_eq!(parse_quantity("2").unwrap(), 2.0);
        assert_eq!(parse_quantity("500m").unwrap(), 0.5);
        assert_eq!(parse_bytes("16Gi").unwrap(), 16 * 1024 * 1024 * 1024);
        assert_eq!(parse_bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("1e3").unwrap(), 1000);
        assert_eq!(parse_bytes("1.5Ki").unwrap(), 1536);
        assert_eq!(parse_nano_cpus("250m").unwrap(), 250_000_000);
    }

    #[test]
    fn bad_quantities_say_what_was_wrong() {
        for bad in ["", "Gi", "12XB", "1.2.3", "-", "abc"] {
            let e = parse_quantity(bad).unwrap_err();
            assert!(e.to_string().contains("is not a quantity"), "{bad}: {e}");
        }
        assert!(matches!(
            parse_bytes("-1Gi"),
            Err(ParseError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_nano_cpus("0"),
            Err(ParseError::OutOfRange { .. })
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "10", "h", "1d", "1h30", "-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn schema_patterns_agree_with_the_parsers() {
        let q = regex_lite_match(crate::schema::QUANTITY_PATTERN);
        for ok in ["2", "500m", "16Gi", "1e3", "1.5Ki"] {
            assert!(q(ok), "{ok}");
            assert!(parse_quantity(ok).is_ok(), "{ok}");
        }
        for bad in ["Gi", "12XB", "abc"] {
            assert!(!q(bad), "{bad}");
        }
        let d = regex_lite_match(crate::schema::DURATION_PATTERN);
        for ok in ["90s", "1h30m", "1.5h", "250ms"] {
            assert!(d(ok), "{ok}");
            assert!(parse_duration(ok).is_ok(), "{ok}");
        }
        for bad in ["10", "1d", "h"] {
            assert!(!d(bad), "{bad}");
        }
    }

    fn regex_lite_match(pattern: &str) -> impl Fn(&str) -> bool {
        let re = regex_lite::Regex::new(pattern).unwrap();
        move |s| re.is_match(s)
    }
}
