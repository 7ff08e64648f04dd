//! `static_binary()` gives a fully static executable (no ELF interpreter, no needed shared
//! libraries) that runs fixtures and serves MCP.

use std::path::Path;

use mcp_orchestrator_api::fixture::FixtureScript;
use rmcp::ServiceExt;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use tokio::process::Command;

use crate::common::{TIMEOUT, assert_gone, exercise};
use crate::fixture::run_to_end;

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NEEDED: u64 = 1;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn usize_at(b: &[u8], at: usize) -> usize {
    usize::try_from(u64_at(b, at)).unwrap()
}

/// Program header types, and the DT_NEEDED count of the dynamic section (if any), of a
/// little-endian ELF64 file.
fn elf_segments_and_needed(elf: &[u8]) -> (Vec<u32>, usize) {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64");
    assert_eq!(elf[5], 1, "not little-endian");
    let phoff = usize_at(elf, 0x20);
    let phentsize = usize::from(u16_at(elf, 0x36));
    let phnum = usize::from(u16_at(elf, 0x38));
    let mut types = Vec::new();
    let mut needed = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = u32_at(elf, ph);
        types.push(p_type);
        if p_type == PT_DYNAMIC {
            let (offset, size) = (usize_at(elf, ph + 0x08), usize_at(elf, ph + 0x20));
            needed += elf[offset..offset + size]
                .chunks_exact(16)
                .filter(|d| u64_at(d, 0) == DT_NEEDED)
                .count();
        }
    }
    (types, needed)
}

#[tokio::test]
async fn static_binary_is_static_and_runs() {
    let binary = tokio::task::spawn_blocking(mcp_test_server::static_binary)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("static build failed: {e}"));
    assert!(
        binary.ends_with("static-test-server/x86_64-unknown-linux-gnu/test-static/mcp-test-server")
    );
    // Once per process: the second call is the cached path.
    assert_eq!(mcp_test_server::static_binary().unwrap(), binary);

    let elf = std::fs::read(&binary).unwrap();
    let (segments, needed) = elf_segments_and_needed(&elf);
    assert!(!segments.is_empty());
    assert!(
        !segments.contains(&PT_INTERP),
        "{} has an ELF interpreter",
        binary.display()
    );
    assert_eq!(needed, 0, "{} needs shared libraries", binary.display());
    report_file(&binary).await;

    let script = FixtureScript::new()
        .stdout("static hello")
        .stderr("static err")
        .exit(7);
    let (code, out, err) = run_to_end(binary.to_str().unwrap(), &script.to_args()).await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (Some(7), "static hello\n", "static err\n")
    );

    // The static build serves MCP too (no NSS, no dlopen needed).
    let cmd = Command::new(&binary).configure(|c| {
        c.arg("stdio").env("MCP_STATIC_VAR", "static env");
    });
    let transport = TokioChildProcess::new(cmd).unwrap();
    let pid = transport.id().unwrap();
    let client = tokio::time::timeout(TIMEOUT, ().serve(transport))
        .await
        .unwrap()
        .unwrap();
    exercise(&client, ("MCP_STATIC_VAR", "static env")).await;
    client.cancel().await.unwrap();
    assert_gone(pid);
}

/// Prints what `file(1)` says, for humans reading the test log (not every machine has it).
async fn report_file(binary: &Path) {
    if let Ok(out) = Command::new("file").arg(binary).output().await {
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    }
}
