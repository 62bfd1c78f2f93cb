//! Java-style `.properties` files as Trino reads them: `key=value` or `key: value` lines,
//! `#` and `!` comments, surrounding white space ignored.

use std::collections::BTreeMap;
use std::path::Path;

use super::CatalogError;

/// Keys to values, in key order.
pub type Properties = BTreeMap<String, String>;

/// Parses `text` (read from `path`, which errors name).
pub fn parse_properties(path: &Path, text: &str) -> Result<Properties, CatalogError> {
    let mut properties = Properties::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let separator = line.find(['=', ':']);
        let Some(at) = separator else {
            return Err(CatalogError::Syntax { path: path.to_path_buf(), line: index + 1, text: line.to_string() });
        };
        let key = line[..at].trim();
        if key.is_empty() {
            return Err(CatalogError::Syntax { path: path.to_path_buf(), line: index + 1, text: line.to_string() });
        }
        properties.insert(key.to_string(), line[at + 1..].trim().to_string());
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_and_both_separators() {
        let text = "# comment\n! also\nconnector.name=tpch\n  tpch.column-naming : STANDARD  \n\n";
        let properties = parse_properties(Path::new("t.properties"), text).unwrap();
        assert_eq!(properties["connector.name"], "tpch");
        assert_eq!(properties["tpch.column-naming"], "STANDARD");
    }

    #[test]
    fn a_line_without_separator_names_file_and_line() {
        let error = parse_properties(Path::new("t.properties"), "a=1\nbroken\n").unwrap_err();
        assert_eq!(error.to_string(), "t.properties:2: expected key=value, got 'broken'");
    }
}
