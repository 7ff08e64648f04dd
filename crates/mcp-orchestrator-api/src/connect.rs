//! The MCP channel of a running instance, as [`McpOrchestrator::connect`] returns it.
//!
//! - A stdio server yields a [`StdioChannel`]: a byte stream whose reads are exactly the
//!   server's stdout and whose writes reach exactly its stdin. Nothing of ours is added (no
//!   greeting, no framing); stderr stays in the logs. MCP's stdio transport is newline-delimited
//!   JSON-RPC, so writes are passed on a whole line at a time: a client that disconnects in the
//!   middle of a message leaves no half line in the server's stdin to corrupt the next client's
//!   first message. Dropping the channel detaches; the server keeps running.
//! - An HTTP server yields an [`HttpEndpoint`]: the URL a client uses, path included.
//!
//! Backends build a [`StdioChannel`] from their engine's reader and writer with
//! [`StdioChannel::new`], and keep at most one attached client per instance with
//! [`StdioClaims`] (or their engine's own exclusivity, as the process backend's bridge has).
//!
//! [`McpOrchestrator::connect`]: crate::McpOrchestrator::connect

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use mcp_types::{InstanceId, Transport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::OrchestratorError;

/// The longest single line (one JSON-RPC message) a [`StdioChannel`] passes to a server's stdin:
/// 64 MiB. A longer write fails with [`io::ErrorKind::InvalidData`] and reaches the server not at
/// all.
pub const MAX_STDIO_MESSAGE_BYTES: usize = 64 << 20;

/// How a client reaches a running instance's MCP channel.
#[derive(Debug)]
#[non_exhaustive]
pub enum McpChannel {
    /// A stdio server's stdin/stdout.
    Stdio(StdioChannel),
    /// An HTTP server's URL.
    Http(HttpEndpoint),
}

impl McpChannel {
    /// The transport this channel speaks.
    pub fn transport(&self) -> Transport {
        match self {
            Self::Stdio(_) => Transport::Stdio,
            Self::Http(endpoint) => endpoint.transport,
        }
    }
}

/// Where an HTTP transport listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpEndpoint {
    /// The URL a client uses, path included (`http://127.0.0.1:8765/mcp`).
    pub url: String,
    /// Streamable HTTP or SSE.
    pub transport: Transport,
}

/// Something kept alive as long as a [`StdioChannel`] (an engine's attach handle, a claim).
pub trait ChannelGuard: Send + Sync + 'static {}
impl<T: Send + Sync + 'static> ChannelGuard for T {}

type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

/// A stdio server's stdin (write) and stdout (read) as one byte stream.
///
/// Writes are held back until a newline completes the message, then passed on whole; the bytes
/// of an incomplete last message are dropped with the channel (see the module docs). `flush`
/// sends every complete message.
pub struct StdioChannel {
    reader: BoxRead,
    writer: BoxWrite,
    /// Complete lines not yet accepted by the writer.
    out: Vec<u8>,
    /// How much of `out` the writer has taken.
    sent: usize,
    /// The incomplete last line.
    partial: Vec<u8>,
    max_message: usize,
    /// Never read: held so that they drop with the channel.
    guards: Vec<Box<dyn ChannelGuard>>,
}

impl fmt::Debug for StdioChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdioChannel")
            .field("pending_bytes", &(self.out.len() - self.sent))
            .field("partial_bytes", &self.partial.len())
            .finish_non_exhaustive()
    }
}

impl StdioChannel {
    /// A channel reading the server's stdout from `reader` and writing its stdin to `writer`.
    pub fn new(
        reader: impl AsyncRead + Send + 'static,
        writer: impl AsyncWrite + Send + 'static,
    ) -> Self {
        Self {
            reader: Box::pin(reader),
            writer: Box::pin(writer),
            out: Vec::new(),
            sent: 0,
            partial: Vec::new(),
            max_message: MAX_STDIO_MESSAGE_BYTES,
            guards: Vec::new(),
        }
    }

    /// One stream used both ways (a Unix socket, a duplex pipe).
    pub fn from_stream(stream: impl AsyncRead + AsyncWrite + Send + 'static) -> Self {
        let (r, w) = tokio::io::split(stream);
        Self::new(r, w)
    }

    /// Keeps `guard` alive until the channel is dropped (an attach handle, a [`StdioClaim`]).
    pub fn with_guard(mut self, guard: impl ChannelGuard) -> Self {
        self.guards.push(Box::new(guard));
        self
    }

    /// Overrides [`MAX_STDIO_MESSAGE_BYTES`].
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message = max;
        self
    }

    /// Hands queued complete lines to the writer until it has all or blocks.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(self.writer.as_mut().poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the server's stdin accepts no more bytes",
                )));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for StdioChannel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().reader.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for StdioChannel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Back-pressure: accept nothing new while earlier lines are still queued.
        ready!(this.poll_drain(cx))?;
        match buf.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                let line_len = this.partial.len() + last + 1;
                if line_len > this.max_message {
                    this.partial.clear();
                    return Poll::Ready(Err(too_long(this.max_message)));
                }
                this.out.append(&mut this.partial);
                this.out.extend_from_slice(&buf[..=last]);
                this.partial.extend_from_slice(&buf[last + 1..]);
            }
            None => this.partial.extend_from_slice(buf),
        }
        if this.partial.len() > this.max_message {
            this.partial.clear();
            return Poll::Ready(Err(too_long(this.max_message)));
        }
        // Start sending at once; what the writer cannot take now waits for the next call.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.partial.clear();
        this.writer.as_mut().poll_shutdown(cx)
    }
}

fn too_long(max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("an MCP message longer than {max} bytes was not sent to the server"),
    )
}

/// At most one attached stdio client per instance, within one orchestrator value.
///
/// Backends whose engine lets several clients attach to the same stdin (Docker, Kubernetes)
/// use it so that two clients never interleave messages on one server.
#[derive(Debug, Clone)]
pub struct StdioClaims {
    backend: &'static str,
    held: Arc<Mutex<BTreeSet<InstanceId>>>,
}

impl StdioClaims {
    /// No claims yet, for the backend named `backend` (it appears in errors).
    pub fn new(backend: &'static str) -> Self {
        Self {
            backend,
            held: Arc::default(),
        }
    }

    /// Claims `id`'s stdio until the returned claim is dropped.
    ///
    /// # Errors
    /// [`OrchestratorError::Unavailable`] naming the instance when another client holds it.
    pub fn claim(&self, id: &InstanceId) -> Result<StdioClaim, OrchestratorError> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if !held.insert(id.clone()) {
            return Err(busy(self.backend, id));
        }
        Ok(StdioClaim {
            held: Arc::clone(&self.held),
            id: id.clone(),
        })
    }
}

/// How [`busy`]'s message starts; [`is_busy`] recognizes it.
const BUSY_PREFIX: &str = "another client is attached to the stdio of ";

/// The error every backend gives when another client holds an instance's stdio.
pub fn busy(backend: &'static str, id: &InstanceId) -> OrchestratorError {
    OrchestratorError::unavailable(
        backend,
        format!(
            "{BUSY_PREFIX}{id}; a stdio server serves one client at a time (detach that client \
             first)"
        ),
        None,
    )
}

/// Whether `error` is [`busy`]'s: the instance runs, but its stdio serves another client
/// (what `mcp-orch ps` shows as `busy` rather than a readiness it cannot check). Written next to
/// [`busy`] so that the message is recognized in one place only.
pub fn is_busy(error: &OrchestratorError) -> bool {
    matches!(error, OrchestratorError::Unavailable { message, .. } if message.starts_with(BUSY_PREFIX))
}

/// The error every backend gives for connecting to an instance that is not running.
pub fn not_running(
    backend: &'static str,
    id: &InstanceId,
    phase: impl fmt::Display,
) -> OrchestratorError {
    OrchestratorError::unavailable(
        backend,
        format!(
            "{id} is not running (phase {phase}); its MCP channel can be reached only while it runs"
        ),
        None,
    )
}

/// The error every backend gives for a stdio connection it cannot make at all.
pub fn http_not_reachable(backend: &'static str, transport: Transport) -> OrchestratorError {
    OrchestratorError::NotSupported {
        backend,
        what: format!("connecting to a {transport} server (it has no network to serve on)"),
    }
}

/// A held claim; dropping it releases the instance's stdio.
#[derive(Debug)]
pub struct StdioClaim {
    held: Arc<Mutex<BTreeSet<InstanceId>>>,
    id: InstanceId,
}

impl Drop for StdioClaim {
    fn drop(&mut self) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn whole_lines_pass_and_a_partial_line_never_does() {
        let (client_side, mut server_side) = tokio::io::duplex(1024);
        let mut channel = StdioChannel::from_stream(client_side);
        channel.write_all(b"{\"a\":1}\n{\"b\"").await.unwrap();
        channel.flush().await.unwrap();
        channel.write_all(b":2}\n{\"c\":").await.unwrap();
        channel.flush().await.unwrap();
        drop(channel);
        let mut got = Vec::new();
        server_side.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[tokio::test]
    async fn reads_are_the_servers_bytes_untouched() {
        let (client_side, mut server_side) = tokio::io::duplex(64);
        let mut channel = StdioChannel::from_stream(client_side);
        server_side.write_all(b"no newline yet").await.unwrap();
        let mut buf = [0u8; 14];
        channel.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"no newline yet");
    }

    #[tokio::test]
    async fn back_pressure_holds_lines_until_the_server_reads() {
        let (client_side, mut server_side) = tokio::io::duplex(8);
        let mut channel = StdioChannel::from_stream(client_side);
        let line = b"0123456789abcdef0123456789\n";
        let writer = tokio::spawn(async move {
            channel.write_all(line).await.unwrap();
            channel.write_all(line).await.unwrap();
            channel.flush().await.unwrap();
        });
        let mut got = vec![0u8; line.len() * 2];
        server_side.read_exact(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(&got[..line.len()], line);
        assert_eq!(&got[line.len()..], line);
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_and_not_sent() {
        let (client_side, mut server_side) = tokio::io::duplex(1024);
        let mut channel = StdioChannel::from_stream(client_side).with_max_message_bytes(8);
        let err = channel.write_all(b"0123456789\n").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("longer than 8 bytes"), "{err}");
        channel.write_all(b"ok\n").await.unwrap();
        channel.flush().await.unwrap();
        drop(channel);
        let mut got = Vec::new();
        server_side.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ok\n");
    }

    #[test]
    fn one_claim_per_instance_until_dropped() {
        let claims = StdioClaims::new("test");
        let id = InstanceId::new("mcp-a-0123456789");
        let first = claims.claim(&id).unwrap();
        let err = claims.claim(&id).unwrap_err();
        assert!(is_busy(&err), "{err}");
        assert!(!is_busy(&not_running("test", &id, "Exited")));
        let other = InstanceId::new("mcp-b-0123456789");
        let _b = claims.clone().claim(&other).unwrap();
        drop(first);
        claims.claim(&id).unwrap();
    }
}
