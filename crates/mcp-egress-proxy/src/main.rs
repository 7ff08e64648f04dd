//! The `mcp-egress-proxy` binary: `--listen ADDR` and a policy (`--allow RULE`... or
//! `--policy-json JSON`), served until SIGTERM or SIGINT. Bad arguments print one line naming
//! the flag and exit with code 2.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mcp_egress_proxy::{Limits, Proxy, StaticPolicy, SystemResolver};
use mcp_types::egress::{Egress, parse_rule};

/// An HTTP/1.1 forward proxy (CONNECT and absolute-form requests) admitting only what an
/// egress policy allows.
#[derive(Debug, Parser)]
#[command(name = "mcp-egress-proxy", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:3128")]
    listen: SocketAddr,
    /// An allowed destination in the short form: `10.0.0.0/8`, `api.github.com:443`,
    /// `*.pypi.org`, `[fd00::/8]:53`. Repeat for more.
    #[arg(long = "allow", value_name = "RULE", conflicts_with = "policy_json")]
    allow: Vec<String>,
    /// The whole policy as JSON: `"open"`, `"none"` or `{"allow":[...]}`.
    #[arg(long, value_name = "JSON")]
    policy_json: Option<String>,
    /// Seconds a connection to a destination may take.
    #[arg(long, default_value_t = 10)]
    connect_timeout_secs: u64,
    /// Seconds without traffic after which a connection or tunnel is closed.
    #[arg(long, default_value_t = 300)]
    idle_timeout_secs: u64,
    /// Client connections served at once (more are answered 503).
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Largest request head accepted (at least 8192).
    #[arg(long, default_value_t = 16 * 1024)]
    max_header_bytes: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let policy = match policy(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mcp-egress-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let limits = Limits {
        max_header_bytes: args.max_header_bytes,
        header_timeout: Limits::default().header_timeout,
        connect_timeout: Duration::from_secs(args.connect_timeout_secs),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        max_connections: args.max_connections,
    };
    if let Err(e) = limits.check() {
        eprintln!("mcp-egress-proxy: {e}");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-egress-proxy: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.listen, policy, limits)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-egress-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The policy from the flags, validated like a spec's `egress`.
fn policy(args: &Args) -> Result<Egress, String> {
    let policy = match (&args.policy_json, args.allow.is_empty()) {
        (Some(json), _) => {
            serde_json::from_str::<Egress>(json).map_err(|e| format!("--policy-json: {e}"))?
        }
        (None, false) => Egress::Allow(
            args.allow
                .iter()
                .map(|r| parse_rule(r).map_err(|e| format!("--allow: {e}")))
                .collect::<Result<_, _>>()?,
        ),
        (None, true) => {
            return Err("give the policy: --allow RULE (repeatable) or --policy-json JSON".into());
        }
    };
    let mut errors = Vec::new();
    policy.check("policy", &mut errors);
    if let Some(first) = errors.first() {
        return Err(format!("invalid policy: {first}"));
    }
    Ok(policy)
}

async fn run(listen: SocketAddr, policy: Egress, limits: Limits) -> Result<(), String> {
    let resolver = SystemResolver::from_system_conf().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("--listen {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(policy = %policy.summary(), "{} {local}", mcp_egress_proxy::LISTENING_MESSAGE);
    Proxy::new(Arc::new(StaticPolicy::new(policy)), Arc::new(resolver))
        .with_limits(limits)
        .serve(listener, stop_signal())
        .await
        .map_err(|e| e.to_string())
}

/// SIGTERM or SIGINT (as PID 1 in a container the handlers must be installed: PID 1 has no
/// default actions).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("mcp-egress-proxy: cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
