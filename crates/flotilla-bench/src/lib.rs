//! What the benchmark binaries share: writing their own section of `BENCHMARKS.md`
//! without touching the others' (each binary owns the text between its markers), and
//! reading a process's CPU time.

use std::path::Path;

/// Replaces (or appends) the section `name` of the markdown file at `path`.
pub fn write_section(path: &Path, name: &str, content: &str) -> Result<(), String> {
    let begin = format!("<!-- begin {name} -->\n");
    let end = format!("<!-- end {name} -->\n");
    let existing = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".to_string());
    let section = format!("{begin}{content}{end}");
    let updated = match (existing.find(&begin), existing.find(&end)) {
        (Some(start), Some(stop)) if stop > start => {
            format!("{}{section}{}", &existing[..start], &existing[stop + end.len()..])
        }
        _ => format!("{}\n{section}", existing.trim_end_matches('\n').to_string() + "\n"),
    };
    std::fs::write(path, updated).map_err(|e| format!("failed to write {}: {e}", path.display()))
}

/// utime + stime of a process, in seconds (Linux, from /proc).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place() {
        let path = std::env::temp_dir().join(format!("flotilla-bench-{}.md", std::process::id()));
        let _ = std::fs::remove_file(&path);
        write_section(&path, "a", "one\n").unwrap();
        write_section(&path, "b", "two\n").unwrap();
        write_section(&path, "a", "three\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(text.starts_with("# Benchmarks\n"));
        assert!(text.contains("three\n") && text.contains("two\n") && !text.contains("one\n"), "{text}");
        assert!(text.find("three").unwrap() < text.find("two").unwrap(), "{text}");
    }
}
