//! The server specs under `examples/servers/` are valid, and the README's main job (the
//! echo-http example on the embedded default backend) runs.

mod common;

use std::path::PathBuf;

use common::{Env, stdout_of};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/servers")
}

#[test]
fn every_example_spec_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            mcp_factory::load_server_spec(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 5, "only {seen} examples found");
}

#[test]
fn readme_main_job_runs_on_the_process_backend() {
    // The example names ./target/debug/mcp-test-server relative to the repository root; run it
    // with the statically built test server in that place of a scratch directory instead.
    let env = Env::process();
    let bin_dir = env.dir.path().join("target/debug");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::copy(common::test_server(), bin_dir.join("mcp-test-server")).unwrap();
    let spec = examples_dir().join("echo-http.yaml");
    // A free port instead of the fixed 8765, so parallel runs cannot collide.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("8765", &port);
    let spec = env.spec("echo-http.yaml", &text);
    let id = stdout_of(
        env.cmd(&["run", spec.to_str().unwrap()])
            .current_dir(env.dir.path()),
    );
    let result = std::panic::catch_unwind(|| {
        let mut logs = String::new();
        for _ in 0..100 {
            logs = stdout_of(env.cmd(&["logs", &id]));
            if logs.contains("listening") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(logs.trim(), format!("listening on 127.0.0.1:{port}"));
        let ps = stdout_of(env.cmd(&["ps", "-l", "example=echo-http"]));
        assert!(ps.contains(&format!("http://127.0.0.1:{port}")), "{ps}");
        std::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .expect("the server accepts connections");
    });
    stdout_of(env.cmd(&["stop", &id]));
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
