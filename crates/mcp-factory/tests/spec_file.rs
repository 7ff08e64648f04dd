//! Server spec files: the errors a user sees name the spec file (not "config file"), the field
//! and the rule, list further errors once each, and never quote source lines that may hold
//! environment values.

use mcp_factory::{ConfigError, load_server_spec};

const SECRET: &str = "ghp_sup3rsecretvalue";

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_missing_spec_is_named_a_spec_file() {
    let err = load_server_spec(std::path::Path::new("/nonexistent/srv.yaml")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot read spec file /nonexistent/srv.yaml"),
        "{msg}"
    );
    assert!(
        matches!(
            err,
            ConfigError::Read {
                what: "spec file",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn yaml_syntax_errors_never_quote_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // An unclosed flow sequence on the line after the secret.
        format!("name: a\ncommand: [x]\nenv:\n  TOKEN: {SECRET}\n  B: [unclosed\n"),
        // A bad indentation on the secret's own line.
        format!("name: a\ncommand: [x]\nenv:\n  A: b\n    TOKEN: {SECRET}: x\n"),
        // A tab where YAML forbids it, next to the secret.
        format!("name: a\ncommand: [x]\nenv:\n\tTOKEN: {SECRET}\n"),
        // An unterminated quoted value holding the secret.
        format!("name: a\ncommand: [x]\nenv:\n  TOKEN: \"{SECRET}\n"),
    ];
    for (i, yaml) in cases.iter().enumerate() {
        let path = write(&dir, &format!("s{i}.yaml"), yaml);
        let err = load_server_spec(&path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{yaml}: {err:?}");
        assert!(!msg.contains(SECRET), "the value leaked:\n{msg}");
        assert!(
            !format!("{err:?}").contains(SECRET),
            "the value leaked:\n{err:?}"
        );
        assert_eq!(msg.lines().count(), 1, "one line, no snippet:\n{msg}");
        assert!(msg.contains("line "), "the position is kept: {msg}");
    }
}

#[test]
fn duplicate_keys_name_the_key_and_the_rule_not_a_library_option() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "dup.yaml",
        &format!("name: a\ncommand: [x]\nenv:\n  TOKEN: {SECRET}\n  TOKEN: other\n"),
    );
    let msg = load_server_spec(&path).unwrap_err().to_string();
    assert!(
        msg.contains("line 5 column 3")
            && msg.contains("key \"TOKEN\" is given twice in the same mapping"),
        "{msg}"
    );
    assert!(
        !msg.contains("DuplicateKeyPolicy") && !msg.contains("Options"),
        "{msg}"
    );
    assert!(!msg.contains(SECRET), "{msg}");
}

#[test]
fn further_errors_are_listed_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "two.yaml", "name: Bad_\ncommand: [x]\nport: 0\n");
    let msg = load_server_spec(&path).unwrap_err().to_string();
    let first = "name: \"Bad_\" contains 'B'";
    assert!(msg.contains(first), "{msg}");
    assert_eq!(
        msg.matches("contains 'B'").count(),
        1,
        "the first error repeated: {msg}"
    );
    assert!(msg.contains("(and 1 more: port: lower than 1)"), "{msg}");
}
