//! Splits a script into statements at `;`, ignoring semicolons inside quotes and comments.

/// The statements of `text`, trimmed, empty ones dropped.
pub fn split_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                current.push(c);
                while let Some(inner) = chars.next() {
                    current.push(inner);
                    if inner == c {
                        // A doubled quote is an escaped quote, not the end.
                        if chars.peek() == Some(&c) {
                            current.push(chars.next().unwrap_or(c));
                            continue;
                        }
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for inner in chars.by_ref() {
                    if inner == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                for inner in chars.by_ref() {
                    if previous == '*' && inner == '/' {
                        break;
                    }
                    previous = inner;
                }
                current.push(' ');
            }
            ';' => statements.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }
    statements.push(current);
    statements.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// Whether interactive input ends a statement (a `;` outside quotes and comments).
pub fn is_complete(text: &str) -> bool {
    let trimmed = text.trim_end();
    if trimmed.is_empty() {
        return false;
    }
    // Complete when splitting with a sentinel appended adds no text to the last statement.
    let probe = format!("{trimmed}\n\u{1}");
    split_statements(&probe).last().is_some_and(|last| last == "\u{1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_outside_quotes_and_comments() {
        let statements = split_statements("SELECT 'a;b'; -- c;d\nSELECT \"x;\" /* ; */ ;;");
        assert_eq!(statements, vec!["SELECT 'a;b'", "SELECT \"x;\""]);
        assert_eq!(split_statements("SELECT 'it''s; fine'"), vec!["SELECT 'it''s; fine'"]);
    }

    #[test]
    fn completeness_needs_a_terminating_semicolon() {
        assert!(is_complete("SELECT 1;"));
        assert!(!is_complete("SELECT ';'"));
        assert!(!is_complete("SELECT 1"));
        assert!(is_complete("SELECT 1; -- trailing\n"));
    }
}
