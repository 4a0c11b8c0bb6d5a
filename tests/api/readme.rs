//! Keeps README.md true: every setting callgate reads is in its configuration table.

#[test]
fn readme_documents_every_setting() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for setting in callgate::config::SETTINGS {
        let row = format!("| `{}` |", setting.var);
        assert!(
            readme.contains(&row),
            "README.md has no row for {}",
            setting.var
        );
    }
    assert!(readme.contains("./scripts/test"), "the test command");
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(
        ci.contains("./scripts/test"),
        ".ci/run runs the README's test command"
    );
}
