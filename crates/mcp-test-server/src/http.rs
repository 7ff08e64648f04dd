//! The same MCP server over streamable HTTP (rmcp's tower service on axum) at `/mcp`, and
//! `GET /health` (200 `ok`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::TestServer;
use crate::signals::Signals;

/// How long open connections (SSE streams) may take to close after a stop signal.
const DRAIN: Duration = Duration::from_secs(3);

/// Binds `addr`, prints `listening on HOST:PORT` (the bound address, so port 0 works), serves
/// until SIGTERM/SIGINT, then shuts down.
pub(crate) async fn serve(addr: SocketAddr, mut signals: Signals) -> Result<(), String> {
    let stop = CancellationToken::new();
    // Containers and pods are reached by names and IPs this server cannot know in advance, so
    // the Host-header allow list (a DNS-rebinding guard for desktop servers) is off.
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_cancellation_token(stop.child_token());
    let service = StreamableHttpService::new(
        || Ok(TestServer::new()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    // `/health` answers 200 `ok`: a plain target for HTTP clients (the fixture's fetch step).
    let router = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .nest_service("/mcp", service);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("http: binding {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("http: reading the bound address: {e}"))?;
    let mut stdout = tokio::io::stdout();
    let announce = async {
        stdout
            .write_all(format!("listening on {bound}\n").as_bytes())
            .await?;
        stdout.flush().await
    };
    announce
        .await
        .map_err(|e| format!("http: writing to stdout: {e}"))?;

    let server = axum::serve(listener, router).with_graceful_shutdown({
        let stop = stop.clone();
        async move { stop.cancelled().await }
    });
    let server = async { server.await.map_err(|e| format!("http: serving: {e}")) };
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        _ = signals.recv() => stop.cancel(),
    }
    // Graceful shutdown waits for open connections; a client holding a stream open must not
    // keep us past the orchestrator's grace period.
    match tokio::time::timeout(DRAIN, server).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}
