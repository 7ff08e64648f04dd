//! `mcp-orch serve`: the MCP gateway (`mcp-gateway`) in front of the configured backend.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use mcp_factory::mcp_orchestrator_api::DynOrchestrator;
use mcp_gateway::{CancellationToken, Gateway, GatewayConfig, TokenSource};

/// `serve` arguments.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on. Anything but loopback needs a token.
    #[arg(long, default_value = mcp_gateway::DEFAULT_LISTEN)]
    pub(crate) listen: SocketAddr,
    /// Require `Authorization: Bearer <token>`, the token read from the first line of FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "token_env")]
    pub(crate) token_file: Option<PathBuf>,
    /// Require `Authorization: Bearer <token>`, the token read from the variable VAR.
    #[arg(long, value_name = "VAR")]
    pub(crate) token_env: Option<String>,
    /// Accept browser requests from this Origin besides loopback ones, repeatable.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub(crate) allow_origins: Vec<String>,
    /// Largest JSON-RPC message accepted, in bytes.
    #[arg(long, default_value_t = mcp_gateway::DEFAULT_MAX_MESSAGE_BYTES)]
    pub(crate) max_message_bytes: usize,
    /// How often each instance is pinged.
    #[arg(long, default_value = "10s", value_parser = crate::time::parse_duration)]
    pub(crate) ping_interval: Duration,
    /// Failed pings in a row that mark an instance Unhealthy.
    #[arg(long, default_value_t = 3)]
    pub(crate) failure_threshold: u32,
}

/// Serves until Ctrl-C.
pub(crate) async fn serve(args: ServeArgs, orchestrator: Arc<DynOrchestrator>) -> Result<ExitCode> {
    let token = match (&args.token_file, &args.token_env) {
        (Some(file), _) => Some(TokenSource::File(file.clone()).load()?),
        (None, Some(var)) => Some(TokenSource::Env(var.clone()).load()?),
        (None, None) => None,
    };
    let config = GatewayConfig {
        listen: args.listen,
        token,
        allowed_origins: args.allow_origins,
        max_message_bytes: args.max_message_bytes,
        ping_interval: args.ping_interval,
        failure_threshold: args.failure_threshold,
        ..GatewayConfig::default()
    };
    let gateway = Gateway::new(orchestrator, config)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "serving MCP on http://{addr}/servers/<id>/mcp (instances: http://{addr}/servers, metrics: http://{addr}/metrics)"
    );
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    gateway.serve_on(listener, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
