//! Java-style `.properties` files as Trino reads them: `key=value` or `key: value` lines,
//! `#` and `!` comments, surrounding white space ignored; `${ENV:NAME}` in a value is the
//! environment variable `NAME` (Trino's syntax, so secrets need not sit in the file), and an
//! unset one is an error naming the file and line.

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
        let value = environment_substituted(line[at + 1..].trim()).map_err(|message| CatalogError::Environment {
            path: path.to_path_buf(),
            line: index + 1,
            message,
        })?;
        properties.insert(key.to_string(), value);
    }
    Ok(properties)
}

/// `value` with every `${ENV:NAME}` replaced by the environment variable (also for
/// `--set KEY=VALUE` flags); an unset one is an error naming it.
pub fn environment_substituted(value: &str) -> Result<String, String> {
    substitute_environment(value, |name| std::env::var(name).ok())
}

/// Replaces every `${ENV:NAME}` in `value` with `lookup(NAME)` (`NAME`: letters, digits and
/// `_`); other text, `$` included, stays as it is.
fn substitute_environment(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    const OPEN: &str = "${ENV:";
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after.find('}').ok_or_else(|| format!("unterminated ${{ENV:...}} in '{value}'"))?;
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("invalid environment variable name '{name}' in '{value}'"));
        }
        let resolved = lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&resolved);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
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
    fn environment_variables_are_substituted_and_unset_ones_refused() {
        let lookup = |name: &str| match name {
            "SECRET" => Some("s3cr3t".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(substitute_environment("${ENV:SECRET}", lookup).unwrap(), "s3cr3t");
        assert_eq!(substitute_environment("a-${ENV:SECRET}-${ENV:EMPTY}-b", lookup).unwrap(), "a-s3cr3t--b");
        // A value with a `$` that is not a reference, and a substituted `${ENV:...}`, stay.
        assert_eq!(substitute_environment("pa$$word ${other}", lookup).unwrap(), "pa$$word ${other}");
        for (bad, expected) in [
            ("${ENV:MISSING}", "MISSING is not set"),
            ("${ENV:SECRET", "unterminated"),
            ("${ENV:}", "invalid environment variable name"),
            ("${ENV:A B}", "invalid environment variable name"),
        ] {
            let error = substitute_environment(bad, lookup).unwrap_err();
            assert!(error.contains(expected), "{bad}: {error}");
        }
        let error =
            parse_properties(Path::new("t.properties"), "a=1\nb=${ENV:FLOTILLA_SURELY_UNSET_42}\n").unwrap_err();
        assert_eq!(error.to_string(), "t.properties:2: environment variable FLOTILLA_SURELY_UNSET_42 is not set");
    }

    #[test]
    fn a_line_without_separator_names_file_and_line() {
        let error = parse_properties(Path::new("t.properties"), "a=1\nbroken\n").unwrap_err();
        assert_eq!(error.to_string(), "t.properties:2: expected key=value, got 'broken'");
    }
}
