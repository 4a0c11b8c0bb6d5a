//! Keeps README.md true: its configuration table is the settings table, row for row, defaults
//! and help included.

/// The README's configuration table as the settings table writes it.
fn expected_table() -> String {
    let mut table = String::from("| Variable | Default | Meaning |\n|---|---|---|\n");
    for row in callgate::config::SETTINGS {
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            row.var(),
            row.shown_default(),
            row.help()
        ));
    }
    table
}

#[test]
fn readme_documents_every_setting_with_its_default() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = expected_table();
    assert!(
        readme.contains(&table),
        "README.md's configuration table differs from config::SETTINGS; it should read:\n{table}"
    );
    assert!(readme.contains("./scripts/test"), "the test command");
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(
        ci.contains("./scripts/test"),
        ".ci/run runs the README's test command"
    );
}

#[test]
fn the_check_catches_a_wrong_default() {
    let table = expected_table();
    assert!(
        table.contains("| `LISTEN_ADDR` | `127.0.0.1:8080` |"),
        "{table}"
    );
    let wrong = table.replace(
        "| `LISTEN_ADDR` | `127.0.0.1:8080` |",
        "| `LISTEN_ADDR` | `0.0.0.0:8080` |",
    );
    assert!(!wrong.contains(&table));
}
