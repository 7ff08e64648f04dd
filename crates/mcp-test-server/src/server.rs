//! The MCP server itself: a handful of tools on rmcp's tool router, and the stdio transport.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ProtocolVersion, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;

use crate::signals::Signals;

/// The name the server reports in `initialize`.
pub(crate) const SERVER_NAME: &str = "mcp-test-server";

/// Arguments of `echo`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub(crate) struct EchoArgs {
    /// The text to send back.
    text: String,
}

/// Arguments of `add`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub(crate) struct AddArgs {
    /// Left operand.
    a: i64,
    /// Right operand.
    b: i64,
}

/// Arguments of `env`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub(crate) struct EnvArgs {
    /// The environment variable to read.
    name: String,
}

/// The test server: stateless tools that make transport and environment behaviour visible.
#[derive(Debug, Clone)]
pub(crate) struct TestServer {
    tool_router: ToolRouter<Self>,
    /// Speaks only the stateless 2026-07-28 revision (refuses `initialize`).
    stateless_only: bool,
}

impl TestServer {
    pub(crate) fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
            stateless_only: false,
        }
    }

    /// A server that supports only 2026-07-28: `server/discover` and per-request metadata;
    /// rmcp answers `initialize` with "unsupported protocol version".
    pub(crate) fn stateless_only() -> Self {
        Self {
            stateless_only: true,
            ..Self::new()
        }
    }
}

#[tool_router]
impl TestServer {
    /// `echo {text}` -> text.
    #[tool(description = "Returns `text` unchanged.")]
    #[allow(clippy::unused_self)] // the tool router calls every tool as a method
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    /// `add {a, b}` -> a + b, as decimal text; overflow is a tool error.
    #[tool(description = "Adds two 64-bit integers and returns the sum as decimal text.")]
    #[allow(clippy::unused_self)]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> Result<String, String> {
        a.checked_add(b)
            .map(|sum| sum.to_string())
            .ok_or_else(|| format!("{a} + {b} overflows a 64-bit integer"))
    }

    /// `env {name}` -> the value of that variable in the server process; unset is a tool error.
    #[tool(
        description = "Returns the value of an environment variable of the server process (a tool error when it is unset)."
    )]
    #[allow(clippy::unused_self)]
    fn env(&self, Parameters(EnvArgs { name }): Parameters<EnvArgs>) -> Result<String, String> {
        std::env::var(&name).map_err(|e| format!("{name}: {e}"))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION")))
            .with_instructions("A test server: echo, add and env tools.")
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        if self.stateless_only {
            std::borrow::Cow::Borrowed(&[ProtocolVersion::V_2026_07_28])
        } else {
            std::borrow::Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
        }
    }
}

/// Serves MCP over stdin/stdout until the client closes stdin or a stop signal arrives.
pub(crate) async fn serve_stdio(mut signals: Signals, stateless_only: bool) -> Result<(), String> {
    let server = if stateless_only {
        TestServer::stateless_only()
    } else {
        TestServer::new()
    };
    let running = tokio::select! {
        r = server.serve(rmcp::transport::stdio()) => {
            r.map_err(|e| format!("stdio: MCP initialization failed: {e}"))?
        }
        _ = signals.recv() => return Ok(()),
    };
    tokio::select! {
        r = running.waiting() => r.map(drop).map_err(|e| format!("stdio: server task failed: {e}")),
        _ = signals.recv() => Ok(()),
    }
}
