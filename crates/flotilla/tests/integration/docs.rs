//! The README's configuration table is exactly the settings the code declares, in order:
//! a setting added, removed or changed in code without the README fails here.

fn expected_table() -> String {
    let mut table = String::from("| property | default | roles | meaning |\n|---|---|---|---|\n");
    for setting in flotilla::etc::all_settings() {
        let default = if setting.default.starts_with('(') {
            setting.default.to_string()
        } else {
            format!("`{}`", setting.default)
        };
        table.push_str(&format!("| `{}` | {} | {} | {} |\n", setting.name, default, setting.roles, setting.doc));
    }
    table
}

#[test]
fn readme_configuration_table_matches_the_declared_settings() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let expected = expected_table();
    assert!(readme.contains(&expected), "README's configuration table should read:\n{expected}");
}
