//! The in-memory backend's MCP server: a real rmcp server run in-process on one end of a duplex
//! pipe, so a client reaching an in-memory stdio instance through `connect` completes the real
//! protocol (`initialize` or `server/discover`, `tools/list`, `tools/call`, `ping`).
//!
//! It offers one tool, `echo {text}`, like the workspace's test server, and reports the
//! instance's server name.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use tokio::io::DuplexStream;
use tokio_util::sync::CancellationToken;

/// The fixture MCP server of one in-memory instance.
#[derive(Debug, Clone)]
struct EchoServer {
    name: String,
}

fn echo_tool() -> Tool {
    let schema = serde_json::json!({
        "type": "object",
        "properties": { "text": { "type": "string", "description": "The text to send back." } },
        "required": ["text"],
    });
    let serde_json::Value::Object(schema) = schema else {
        unreachable!("a JSON object literal")
    };
    Tool::new("echo", "Returns `text` unchanged.", schema)
}

impl ServerHandler for EchoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(&self.name, env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(vec![echo_tool()]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if request.name != "echo" {
            return Err(McpError::invalid_params(
                format!("unknown tool {:?}", request.name),
                None,
            ));
        }
        let text = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("text"))
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| McpError::invalid_params("echo needs a string `text`", None))?;
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(text),
        ])))
    }
}

/// Serves MCP on `io` until the client closes it or `stop` fires (the instance stopped).
pub(super) fn spawn(name: String, io: DuplexStream, stop: CancellationToken) {
    tokio::spawn(async move {
        let serve = async {
            // A client that goes away mid-handshake ends the session: nothing to report.
            if let Ok(running) = (EchoServer { name }).serve(io).await {
                let _ = running.waiting().await;
            }
        };
        tokio::select! {
            () = serve => {}
            () = stop.cancelled() => {}
        }
    });
}
