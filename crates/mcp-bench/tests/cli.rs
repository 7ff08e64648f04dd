//! The `mcp-bench` binary's command line: every benchmark is listed, unknown names and options
//! are refused. (Building this test also makes `cargo test --workspace` build the binary that
//! `cargo xtask bench --smoke` runs, with the same features as the test build.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-bench");

#[test]
fn lists_every_benchmark() {
    let out = Command::new(BIN).arg("--list").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        [
            "process",
            "k8s-list",
            "docker-start",
            "docker-burst",
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
