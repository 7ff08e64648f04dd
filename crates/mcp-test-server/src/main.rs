//! The `mcp-test-server` binary: a real MCP server over stdio or streamable HTTP, and the runner
//! for the conformance kit's fixture scripts. Bad arguments print one line and exit with code 2.

mod cli;
mod fetch;
mod fixture;
mod http;
mod probe;
mod server;
mod signals;

use std::process::ExitCode;

use cli::Command;
use signals::Signals;

/// Exit code for arguments the binary does not understand.
const USAGE_EXIT: u8 = 2;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("mcp-test-server: {e} (try --help)");
            return ExitCode::from(USAGE_EXIT);
        }
    };
    match command {
        Command::Help => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("mcp-test-server {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        // Blocking std IO only: no runtime, no signal handlers needed.
        Command::Probe { target, attempts } => {
            return if probe::run(&target, attempts) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Command::BuildImage { tag } => return build_image(&tag),
        Command::Stdio { .. } | Command::Http { .. } | Command::Fixture(_) => {}
    }
    // One thread is plenty for a test server, and keeps it light when dozens run at once.
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let code = runtime.block_on(run(command));
    // Blocking stdin readers (stdio mode) must not keep the process alive after we are done.
    runtime.shutdown_background();
    code
}

/// The single-threaded runtime every async command runs on; `None` (after saying why) when it
/// cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("mcp-test-server: starting the tokio runtime: {e}");
            None
        }
    }
}

/// `build-image`: the library's `ensure_docker_image` on the local engine.
#[cfg(feature = "docker")]
fn build_image(tag: &str) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let built = runtime.block_on(async {
        let docker = bollard::Docker::connect_with_local_defaults()
            .map_err(|e| format!("connecting to the Docker engine: {e}"))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| format!("the Docker engine did not answer: {e}"))?;
        mcp_test_server::ensure_docker_image(&docker, tag)
            .await
            .map_err(|e| format!("building {tag}: {e}"))
    });
    match built {
        Ok(id) => {
            println!("{tag} {id}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcp-test-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `build-image` in a binary built without the `docker` feature.
#[cfg(not(feature = "docker"))]
fn build_image(_tag: &str) -> ExitCode {
    eprintln!(
        "mcp-test-server: build-image needs the `docker` feature \
         (cargo install mcp-test-server --features docker)"
    );
    ExitCode::FAILURE
}

async fn run(command: Command) -> ExitCode {
    // Handlers first: as PID 1 in a container a signal that arrives before they are installed
    // is dropped (PID 1 has no default actions), and the server could then never be stopped.
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-test-server: installing signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        Command::Stdio { stateless_only } => server::serve_stdio(signals, stateless_only).await,
        Command::Http { addr } => http::serve(addr, signals).await,
        Command::Fixture(script) => {
            let code = fixture::run(&script, signals).await;
            // Exit codes outside 0..=255 wrap like they do for any process.
            std::process::exit(code);
        }
        Command::Help | Command::Version | Command::Probe { .. } | Command::BuildImage { .. } => {
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-test-server: {e}");
            ExitCode::FAILURE
        }
    }
}
