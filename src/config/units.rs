//! Durations and sizes as the configuration contract writes them: a number and a unit
//! ("500ms", "10s", "5m", "64KiB", "1MiB"). A bare number is refused so that nobody has to
//! guess whether `timeout = 2` meant seconds or milliseconds.

use std::time::Duration;

/// Parses "250ms", "10s", "5m", "1h" (whole numbers only).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!("\"{text}\" has no unit; write e.g. \"500ms\", \"10s\" or \"5m\"")
    })?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" does not start with a whole number"))?;
    let millis = match unit {
        "ms" => Some(value),
        "s" => value.checked_mul(1_000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        _ => {
            return Err(format!(
                "\"{text}\" has an unknown unit \"{unit}\" (use ms, s, m or h)"
            ))
        }
    }
    .ok_or_else(|| format!("\"{text}\" is too large"))?;
    Ok(Duration::from_millis(millis))
}

/// Parses "512B", "64KiB", "1MiB", "1GiB" (binary units only: "KB" or "MB" could mean 1000
/// or 1024, so they are refused with the unit to write instead).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("\"{text}\" has no unit; write e.g. \"64KiB\" or \"1MiB\""))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" does not start with a whole number"))?;
    let factor: u64 = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" | "MB" | "GB" => {
            let binary = format!("{}iB", &unit[..1].to_ascii_uppercase());
            return Err(format!(
                "\"{text}\" is ambiguous (1000 or 1024?); write \"{number}{binary}\""
            ));
        }
        _ => {
            return Err(format!(
                "\"{text}\" has an unknown unit \"{unit}\" (use B, KiB, MiB or GiB)"
            ))
        }
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("\"{text}\" is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hi_units_ambiguous_decimal_sizes_are_refused_with_the_binary_unit_to_write() {
        assert_eq!(
            parse_size("64KB"),
            Err("\"64KB\" is ambiguous (1000 or 1024?); write \"64KiB\"".to_string())
        );
        assert_eq!(
            parse_size("1MB"),
            Err("\"1MB\" is ambiguous (1000 or 1024?); write \"1MiB\"".to_string())
        );
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "10",
            "",
            "s",
            "1.5s",
            "10 parsecs",
            "-1s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn sizes_need_a_unit() {
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("100B"), Ok(100));
        for bad in ["64", "1TiB", "KiB", "1.5MiB"] {
            assert!(parse_size(bad).is_err(), "{bad} accepted");
        }
    }
}
