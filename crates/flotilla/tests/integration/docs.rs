//! The README's configuration table lists exactly the settings the code declares.

#[test]
fn readme_lists_every_coordinator_setting_with_its_default() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for setting in flotilla_coordinator::SETTINGS {
        let row = format!("| `{}` | `{}` | {} |", setting.name, setting.default, setting.doc);
        let row_plain_default = format!("| `{}` | {} | {} |", setting.name, setting.default, setting.doc);
        assert!(readme.contains(&row) || readme.contains(&row_plain_default), "README lacks the row: {row}");
    }
}
