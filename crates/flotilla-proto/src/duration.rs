//! Durations as Trino writes them in config and session properties: `500ms`, `10s`, `1.5m`,
//! `2h`, `1d` (a bare number is rejected: the unit is part of the value).

use std::time::Duration;

/// Parses a Trino duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("invalid duration '{text}'"))?;
    let seconds_per_unit = match unit.trim() {
        "ns" => 1e-9,
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("invalid duration '{text}': the unit must be one of ns, us, ms, s, m, h, d")),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|e| format!("invalid duration '{text}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trino_durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("100d").unwrap(), Duration::from_secs(8_640_000));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }
}
