//! HTTP servers: requests are forwarded as they are, and the health probe keeps its own MCP
//! session, so it never touches a client's session.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::TryStreamExt;
use http::{HeaderMap, HeaderName, Method, StatusCode};
use serde_json::{Value, json};

use crate::health::{ReadyInfo, ready_info};
use crate::jsonrpc;
use crate::mux::UPSTREAM_PROTOCOL;

/// Request headers a streamable HTTP client sends that the server needs.
const REQUEST_HEADERS: [&str; 7] = [
    "accept",
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "mcp-method",
    "mcp-name",
];
/// Response headers the client needs back.
const RESPONSE_HEADERS: [&str; 3] = ["content-type", "mcp-session-id", "mcp-protocol-version"];

/// Forwards one request to `url` and streams the answer back.
pub(crate) async fn forward(
    client: &reqwest::Client,
    url: &str,
    method: Method,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, String> {
    let mut request = client.request(method, url).body(body);
    for name in REQUEST_HEADERS {
        for value in headers.get_all(name) {
            request = request.header(name, value);
        }
    }
    let upstream = request
        .send()
        .await
        .map_err(|e| format!("the server at {url} did not answer: {e}"))?;
    let mut response = Response::builder().status(upstream.status());
    for name in RESPONSE_HEADERS {
        for value in upstream.headers().get_all(name) {
            response = response.header(HeaderName::from_static(name), value);
        }
    }
    let stream = upstream.bytes_stream().map_err(std::io::Error::other);
    response
        .body(Body::from_stream(stream))
        .map_err(|e| format!("building the response: {e}"))
}

/// The probe's own session with an HTTP server.
#[derive(Debug, Default)]
pub(crate) struct HttpProbe {
    session: Option<String>,
    info: Option<ReadyInfo>,
    next_id: i64,
}

impl HttpProbe {
    /// Handshakes when there is no session yet, else pings in the probe's session.
    pub(crate) async fn check(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        timeout: Duration,
    ) -> Result<ReadyInfo, String> {
        if let Some(info) = self.info.clone() {
            match self.rpc(client, url, "ping", json!({}), timeout).await {
                Ok(_) => return Ok(info),
                Err(e) => {
                    self.session = None;
                    self.info = None;
                    return Err(e);
                }
            }
        }
        let started = Instant::now();
        self.session = None;
        let init = self
            .rpc(
                client,
                url,
                "initialize",
                json!({
                    "protocolVersion": UPSTREAM_PROTOCOL,
                    "capabilities": {},
                    "clientInfo": { "name": "mcp-gateway-probe", "version": env!("CARGO_PKG_VERSION") },
                }),
                timeout,
            )
            .await?;
        let version = init
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(UPSTREAM_PROTOCOL)
            .to_owned();
        self.post(
            client,
            url,
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            &version,
            timeout,
        )
        .await?;
        let mut tools = Vec::new();
        if init
            .get("capabilities")
            .and_then(|c| c.get("tools"))
            .is_some()
        {
            let page = self
                .rpc(client, url, "tools/list", json!({}), timeout)
                .await?;
            if let Some(items) = page.get("tools").and_then(Value::as_array) {
                tools.extend(items.iter().cloned());
            }
        }
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let info = ready_info(&init, &version, &tools, ms);
        self.info = Some(info.clone());
        Ok(info)
    }

    async fn rpc(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let version = self
            .info
            .as_ref()
            .map_or(UPSTREAM_PROTOCOL, |i| i.protocol_version.as_str())
            .to_owned();
        let response = self.post(client, url, &message, &version, timeout).await?;
        let answer = response
            .into_iter()
            .find(|m| m.get("id") == Some(&json!(id)))
            .ok_or_else(|| format!("{method}: no response in the answer"))?;
        match (answer.get("result"), answer.get("error")) {
            (Some(result), _) => Ok(result.clone()),
            (_, Some(error)) => Err(format!("{method} failed: {error}")),
            _ => Err(format!("{method}: malformed answer")),
        }
    }

    async fn post(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        message: &Value,
        version: &str,
        timeout: Duration,
    ) -> Result<Vec<Value>, String> {
        let mut request = client
            .post(url)
            .timeout(timeout)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", version)
            .body(message.to_string());
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{url} did not answer: {e}"))?;
        let status = response.status();
        if let Some(session) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.session = Some(session.to_owned());
        }
        let sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let text = response
            .text()
            .await
            .map_err(|e| format!("reading the answer of {url}: {e}"))?;
        if status == StatusCode::ACCEPTED {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(format!("{url} answered HTTP {status}: {text}"));
        }
        let bodies: Vec<String> = if sse { sse_data(&text) } else { vec![text] };
        Ok(bodies
            .iter()
            .filter_map(|b| serde_json::from_str::<Value>(b).ok())
            .filter(|v| jsonrpc::classify(v.clone()).is_ok())
            .collect())
    }
}

/// The `data` of each server-sent event in `text`.
pub(crate) fn sse_data(text: &str) -> Vec<String> {
    let mut events = Vec::new();
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            if !data.is_empty() {
                events.push(data.join("\n"));
                data.clear();
            }
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    if !data.is_empty() {
        events.push(data.join("\n"));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_and_joined() {
        let text = "event: message\ndata: {\"a\":1}\n\nid: 3\ndata: x\ndata: y\n\n: comment\n";
        assert_eq!(
            sse_data(text),
            vec!["{\"a\":1}".to_owned(), "x\ny".to_owned()]
        );
    }
}
