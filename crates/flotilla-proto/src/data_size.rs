//! Data sizes as Trino writes them: `512MB`, `4GB`, `1.5TB`, `100B` (binary multiples, as
//! Trino's `DataSize`; a bare number is rejected: the unit is part of the value).

/// Parses a Trino data size into bytes.
pub fn parse_data_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("invalid data size '{text}'"))?;
    let multiplier: f64 = match unit.trim() {
        "B" => 1.0,
        "kB" | "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("invalid data size '{text}': the unit must be one of B, kB, MB, GB, TB")),
    };
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("invalid data size '{text}': too large"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trino_data_sizes() {
        assert_eq!(parse_data_size("100B").unwrap(), 100);
        assert_eq!(parse_data_size("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_data_size("1.5GB").unwrap(), 3 << 29);
        assert!(parse_data_size("10").is_err());
        assert!(parse_data_size("10 parsecs").is_err());
    }
}
