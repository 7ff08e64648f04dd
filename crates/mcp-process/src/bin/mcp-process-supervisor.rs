//! `mcp-process-supervisor <instance-dir>`: the per-instance supervisor that `ProcessOrchestrator`
//! starts for every local server (see `mcp_process::supervisor`).

fn main() -> std::process::ExitCode {
    mcp_process::supervisor::run(std::env::args_os().skip(1))
}
