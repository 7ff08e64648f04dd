//! The `mcp-bench` binary's command line: every benchmark is listed, unknown names and options
//! are refused. (Building this test also makes `cargo test --workspace` build the binary that
//! `cargo xtask bench --smoke` runs, with the same features as the test build.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-bench");

/// The quoted strings of `text` that directly follow `before` (e.g. `step(report, "` -> names).
fn quoted_after<'a>(text: &'a str, before: &str) -> Vec<&'a str> {
    text.match_indices(before)
        .filter_map(|(at, _)| {
            let rest = &text[at + before.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

#[test]
fn lists_every_benchmark() {
    let out = Command::new(BIN).arg("--list").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();

    // The registry in the source, in order, is what --list prints.
    let main =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/main.rs")).unwrap();
    let start = main.find("const BENCHMARKS: &[(&str, &str)] = &[").unwrap();
    let registry_text = &main[start..start + main[start..].find("\n];").unwrap()];
    // One tuple per benchmark, opening a line: `("name", "what")` or `(` then `"name",`.
    let lines: Vec<&str> = registry_text.lines().map(str::trim).collect();
    let registry: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| match *line {
            "(" => lines.get(i + 1)?.split('"').nth(1),
            l if l.starts_with("(\"") => l.split('"').nth(1),
            _ => None,
        })
        .collect();
    assert_eq!(names, registry, "--list against the BENCHMARKS registry");

    // Every benchmark the run dispatches (each announces itself with `step`) is listed, and
    // every listed one is dispatched.
    let mut dispatched = quoted_after(&main, "step(&mut report, \"");
    dispatched.extend(quoted_after(&main, "step(report, \""));
    dispatched.sort_unstable();
    let mut listed = names.clone();
    listed.sort_unstable();
    assert_eq!(listed, dispatched, "listed against run by src/main.rs");

    assert_eq!(
        names,
        [
            "process",
            "ready",
            "gateway",
            "k8s-ready",
            "k8s-list",
            "docker-start",
            "docker-burst",
            "docker-ready",
            "logs",
            "docker-list",
            "footprint"
        ]
    );
}

#[test]
fn refuses_unknown_benchmarks_and_options() {
    let out = Command::new(BIN).args(["--only", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown benchmark \"nope\""),
        "{out:?}"
    );
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn the_list_child_refuses_bad_arguments() {
    let out = Command::new(BIN).arg("__k8s-list").output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("usage"),
        "{out:?}"
    );
}
