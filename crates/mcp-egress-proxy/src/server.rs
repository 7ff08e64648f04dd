//! The proxy itself: an accept loop with a bound on concurrent connections, one hyper HTTP/1.1
//! connection per client, CONNECT tunnels and absolute-form forwarding, each request admitted
//! by the client's policy first.
//!
//! | request                         | answer                                                    |
//! |---------------------------------|-----------------------------------------------------------|
//! | `CONNECT host:port`, admitted   | 200, then bytes both ways until either side closes or the idle timeout |
//! | `GET http://host:port/...`, admitted | the destination's response, hop-by-hop headers removed (a 3xx passes as-is: its `Location` is the client's next request, judged on its own) |
//! | refused by the policy           | 403 (407 when the source wants credentials), [`REFUSAL_HEADER`] |
//! | not a proxy request, `https://` absolute form, bad target | 400, [`ERROR_HEADER`]  |
//! | name does not resolve, connection refused | 502, [`ERROR_HEADER`]                 |
//! | connect timeout                 | 504, [`ERROR_HEADER`]                                     |
//! | headers larger than the limit   | 431 (hyper)                                               |
//! | more connections than the limit | 503 and the connection is closed                         |

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::activity::{Activity, Tracked};
use crate::connect::{Connect, TcpConnector};
use crate::policy::{
    ERROR_HEADER, PolicySource, REFUSAL_HEADER, Refusal, Target, admit, basic_user,
};
use crate::resolve::{Resolve, SystemResolver};

/// Bytes buffered per direction of a tunnel: 64 KiB moves bulk transfers with a quarter of
/// the copies of tokio's 8 KiB default (measured on loopback: see docs/EGRESS.md).
const TUNNEL_BUFFER: usize = 64 * 1024;

/// The smallest header limit hyper accepts.
pub const MIN_HEADER_BYTES: usize = 8192;

/// The proxy's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers) read from a client; at least
    /// [`MIN_HEADER_BYTES`]. Larger heads are answered 431.
    pub max_header_bytes: usize,
    /// How long a client may take to send a request head.
    pub header_timeout: Duration,
    /// How long connecting to a destination may take (all its addresses together).
    pub connect_timeout: Duration,
    /// A connection (or tunnel) with no bytes in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Client connections served at once; more are answered 503.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 512,
        }
    }
}

impl Limits {
    /// Checks the values.
    ///
    /// # Errors
    /// A message naming the field that is out of range.
    pub fn check(&self) -> Result<(), String> {
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(format!(
                "max_header_bytes: {} is below the minimum of {MIN_HEADER_BYTES}",
                self.max_header_bytes
            ));
        }
        for (name, d) in [
            ("header_timeout", self.header_timeout),
            ("connect_timeout", self.connect_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name}: must be more than zero"));
            }
        }
        if self.max_connections == 0 {
            return Err("max_connections: must be at least 1".into());
        }
        Ok(())
    }
}

/// A configured proxy, ready to [`Proxy::serve`].
pub struct Proxy {
    policy: Arc<dyn PolicySource>,
    resolver: Arc<dyn Resolve>,
    connector: Arc<dyn Connect>,
    limits: Limits,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Serves `listener` with the system resolver, plain TCP and the default [`Limits`] until
/// `shutdown` completes; then stops accepting and closes every connection and tunnel.
///
/// # Errors
/// When the DNS configuration cannot be read.
pub async fn serve(
    listener: TcpListener,
    policy: Arc<dyn PolicySource>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let resolver = SystemResolver::from_system_conf()?;
    Proxy::new(policy, Arc::new(resolver))
        .serve(listener, shutdown)
        .await
}

impl Proxy {
    /// A proxy asking `policy` about each request and `resolver` about names, connecting over
    /// plain TCP with the default limits.
    pub fn new(policy: Arc<dyn PolicySource>, resolver: Arc<dyn Resolve>) -> Self {
        Self {
            policy,
            resolver,
            connector: Arc::new(TcpConnector),
            limits: Limits::default(),
        }
    }

    /// Another way to open connections (tests record the addresses dialed).
    pub fn with_connector(mut self, connector: Arc<dyn Connect>) -> Self {
        self.connector = connector;
        self
    }

    /// Other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Accepts and serves clients until `shutdown` completes; then stops accepting and closes
    /// every connection and tunnel.
    ///
    /// # Errors
    /// When the limits are invalid ([`Limits::check`]).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        self.limits
            .check()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            proxy: self,
            stop: stop.clone(),
        });
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: wait for connections to end.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            if let Ok(permit) = slots.clone().try_acquire_owned() {
                let shared = shared.clone();
                tokio::spawn(async move { shared.connection(stream, peer, permit).await });
            } else {
                info!(%peer, "connection refused: too many connections");
                tokio::spawn(too_busy(stream));
            }
        }
        stop.cancel();
        debug!("egress proxy stopped");
        Ok(())
    }
}

/// Answers 503 to a client over the connection limit and closes.
async fn too_busy(mut stream: TcpStream) {
    let body = "too many connections\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\n{ERROR_HEADER}: too many connections\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

struct Shared {
    proxy: Proxy,
    stop: CancellationToken,
}

impl Shared {
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let permit = Arc::new(permit);
        let io = TokioIo::new(Tracked::new(stream, activity.clone()));
        let shared = self.clone();
        let service_activity = activity.clone();
        let service = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            let activity = service_activity.clone();
            let permit = permit.clone();
            async move { Ok::<_, Infallible>(shared.request(req, peer, activity, permit).await) }
        });
        let limits = &self.proxy.limits;
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .max_buf_size(limits.max_header_bytes)
            .header_read_timeout(limits.header_timeout)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::select! {
            result = conn => {
                if let Err(e) = result {
                    debug!(%peer, error = %e, "client connection ended with an error");
                }
            }
            () = activity.idle(limits.idle_timeout) => debug!(%peer, "idle connection closed"),
            () = self.stop.cancelled() => {}
        }
    }

    async fn request(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        activity: Activity,
        permit: Arc<OwnedSemaphorePermit>,
    ) -> Response<ProxyBody> {
        let method = req.method().clone();
        let shown = shown_target(&req);
        match self.clone().try_request(req, peer, activity, permit).await {
            Ok(response) => response,
            Err(refusal) => {
                if refusal.is_policy_refusal() {
                    info!(%peer, %method, target = %shown, status = refusal.status.as_u16(), reason = %refusal.reason, "egress refused");
                } else {
                    info!(%peer, %method, target = %shown, status = refusal.status.as_u16(), reason = %refusal.reason, "egress request failed");
                }
                refusal_response(&refusal)
            }
        }
    }

    async fn try_request(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        activity: Activity,
        permit: Arc<OwnedSemaphorePermit>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let user = match req.headers().get(header::PROXY_AUTHORIZATION) {
            Some(value) => {
                let text = value.to_str().map_err(|_| {
                    Refusal::bad_request("Proxy-Authorization: not printable ASCII")
                })?;
                basic_user(text)?
            }
            None => None,
        };
        let target = request_target(&req)?;
        let policy = self.proxy.policy.policy(peer, user.as_deref()).await?;
        let addrs = admit(&policy, &target, self.proxy.resolver.as_ref()).await?;
        let upstream = self.connect(&target, &addrs).await?;
        debug!(%peer, method = %req.method(), %target, addr = ?upstream.peer_addr().ok(), "egress admitted");
        let upstream = Tracked::new(upstream, activity.clone());
        if req.method() == Method::CONNECT {
            self.clone()
                .tunnel(req, upstream, activity, permit, peer, target);
            Ok(Response::new(empty()))
        } else {
            self.forward(req, upstream, &target).await
        }
    }

    /// Connects to the first admitted address that answers, within the connect timeout.
    async fn connect(&self, target: &Target, addrs: &[SocketAddr]) -> Result<TcpStream, Refusal> {
        let attempt = async {
            let mut last = None;
            for addr in addrs {
                match self.proxy.connector.connect(*addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = Some(format!("{addr}: {e}")),
                }
            }
            Err(last.unwrap_or_else(|| "no address".to_owned()))
        };
        match tokio::time::timeout(self.proxy.limits.connect_timeout, attempt).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(Refusal::bad_gateway(format!(
                "{target}: cannot connect: {e}"
            ))),
            Err(_) => Err(Refusal::gateway_timeout(format!(
                "{target}: no connection within {:?}",
                self.proxy.limits.connect_timeout
            ))),
        }
    }

    /// After the 200 is sent, copies bytes both ways on the upgraded connection.
    fn tunnel(
        self: Arc<Self>,
        req: Request<Incoming>,
        mut upstream: Tracked<TcpStream>,
        activity: Activity,
        permit: Arc<OwnedSemaphorePermit>,
        peer: SocketAddr,
        target: Target,
    ) {
        let idle = self.proxy.limits.idle_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    debug!(%peer, %target, error = %e, "CONNECT upgrade failed");
                    return;
                }
            };
            let mut client = TokioIo::new(upgraded);
            tokio::select! {
                copied = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut upstream,
                    TUNNEL_BUFFER,
                    TUNNEL_BUFFER,
                ) => {
                    if let Ok((up, down)) = copied {
                        debug!(%peer, %target, up, down, "tunnel closed");
                    }
                }
                () = activity.idle(idle) => debug!(%peer, %target, "idle tunnel closed"),
                () = self.stop.cancelled() => {}
            }
        });
    }

    /// Sends the request on its own connection to the destination and returns the response.
    async fn forward(
        &self,
        req: Request<Incoming>,
        upstream: Tracked<TcpStream>,
        target: &Target,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(upstream))
            .await
            .map_err(|e| Refusal::bad_gateway(format!("{target}: {e}")))?;
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        parts.uri = path
            .parse::<Uri>()
            .map_err(|_| Refusal::bad_request("the request path is not valid"))?;
        strip_hop_by_hop(&mut parts.headers);
        let host = match &target.host {
            crate::policy::Host::Name(n) => format!("{n}:{}", target.port),
            crate::policy::Host::Ip(_) => target.to_string(),
        };
        let host = HeaderValue::from_str(&host)
            .map_err(|_| Refusal::bad_request("the target is not a valid Host"))?;
        parts.headers.insert(header::HOST, host);
        let response = sender
            .send_request(Request::from_parts(parts, body))
            .await
            .map_err(|e| Refusal::bad_gateway(format!("{target}: {e}")))?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body.boxed()))
    }
}

/// The destination of a request: the CONNECT authority, or the host of an absolute `http://`
/// URI (port 80 unless given).
fn request_target(req: &Request<Incoming>) -> Result<Target, Refusal> {
    if req.method() == Method::CONNECT {
        let authority = req
            .uri()
            .authority()
            .ok_or_else(|| Refusal::bad_request("CONNECT needs host:port"))?;
        return Target::parse_authority(authority.as_str());
    }
    let uri = req.uri();
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(Refusal::bad_request(
                "https:// URLs go through CONNECT (set HTTPS_PROXY)",
            ));
        }
        Some(other) => {
            return Err(Refusal::bad_request(format!(
                "scheme {other:?} is not proxied (http:// and CONNECT only)"
            )));
        }
        None => {
            return Err(Refusal::bad_request(
                "not a proxy request: send an absolute http:// URL or CONNECT host:port",
            ));
        }
    }
    let host = uri
        .host()
        .ok_or_else(|| Refusal::bad_request("the URL has no host"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(Refusal::bad_request(
            "credentials in the URL are not proxied",
        ));
    }
    Target::from_parts(host, uri.port_u16().unwrap_or(80))
        .map_err(|why| Refusal::bad_request(format!("target {host:?}: {why}")))
}

/// The target as logged: the authority only (never the path or query, which may carry
/// tokens).
fn shown_target(req: &Request<Incoming>) -> String {
    req.uri().authority().map_or_else(
        || "-".to_owned(),
        |a| a.as_str().rsplit('@').next().unwrap_or("-").to_owned(),
    )
}

/// Removes the headers that belong to one hop (RFC 9110 section 7.6.1), the proxy's
/// credentials included, and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
    headers.remove("keep-alive");
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

fn refusal_response(refusal: &Refusal) -> Response<ProxyBody> {
    let text = refusal.header_text();
    let body = Full::new(Bytes::from(format!("{text}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = refusal.status;
    let headers = response.headers_mut();
    let name = if refusal.is_policy_refusal() {
        REFUSAL_HEADER
    } else {
        ERROR_HEADER
    };
    if let Ok(value) = HeaderValue::from_str(&text) {
        headers.insert(name, value);
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if refusal.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        headers.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"mcp-egress\""),
        );
    }
    response
}
