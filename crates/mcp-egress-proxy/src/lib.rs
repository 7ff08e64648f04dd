//! `mcp-egress-proxy`: an HTTP/1.1 forward proxy that lets a server reach only what its
//! [`mcp_types::Egress`] policy allows. Clients use it through `HTTP_PROXY` / `HTTPS_PROXY`:
//! `CONNECT host:port` for TLS (a byte tunnel after the 200) and absolute-form requests
//! (`GET http://host/path`) for plain HTTP.
//!
//! Every request is judged on its own ([`policy::admit`]): the client's policy comes from a
//! [`PolicySource`] (one policy for all: [`StaticPolicy`]; a source may tell clients apart by
//! their address or their `Proxy-Authorization: Basic` user name), host names must be allowed
//! by name and are resolved by the proxy, every resolved address is checked against the
//! link-local/metadata ranges, and the proxy connects to exactly the addresses it checked.
//! Refusals are answered 403 with the reason in the [`REFUSAL_HEADER`] and the body, and
//! logged at info with the client and the target (never a path, a body or a credential).
//!
//! ```no_run
//! use std::sync::Arc;
//! use mcp_egress_proxy::{StaticPolicy, serve};
//! use mcp_types::egress::{Egress, EgressRule};
//!
//! # async fn run() -> std::io::Result<()> {
//! let policy = Egress::Allow(vec![EgressRule::host("api.github.com", [443])]);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3128").await?;
//! serve(listener, Arc::new(StaticPolicy::new(policy)), std::future::pending()).await
//! # }
//! ```
//!
//! The binary (`mcp-egress-proxy --listen 0.0.0.0:3128 --allow api.github.com:443`) is what the
//! Docker backend runs as an instance's companion container. With `--kubernetes` it is the
//! per-namespace proxy of the Kubernetes backend: each client names its instance as the proxy
//! user, and the policy is read from that instance's pod ([`PodPolicy`], module [`kubernetes`]).

pub mod connect;
pub mod kubernetes;
pub mod policy;
pub mod resolve;
mod server;

pub use connect::{Connect, TcpConnector};
pub use kubernetes::PodPolicy;
pub use policy::{ERROR_HEADER, PolicySource, REFUSAL_HEADER, Refusal, StaticPolicy};
pub use resolve::{Resolve, StaticResolver, SystemResolver};
pub use server::{Limits, MIN_HEADER_BYTES, Proxy, serve};

/// The port the proxy listens on in the images and companions this project runs.
pub const DEFAULT_PORT: u16 = 3128;
