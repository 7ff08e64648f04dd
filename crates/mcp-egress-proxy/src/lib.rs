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
//! The binary (`mcp-egress-proxy --listen 0.0.0.0:3128 --allow api.github.com:443`, or
//! [`command_args`]) is what the Docker backend runs as an instance's companion container;
//! feature `docker` builds its `FROM scratch` image ([`image::ensure_proxy_image`]).
//!
//! Features: `server` (default) is the proxy; `docker` the image helpers, usable without
//! `server` by a backend that only runs the image.
//!
//! With `--kubernetes` the binary is the per-namespace proxy of the Kubernetes backend: each
//! client names its instance as the proxy user, and the policy is read from that instance's pod
//! ([`PodPolicy`], module [`kubernetes`]).

#[cfg(feature = "server")]
mod activity;
#[cfg(feature = "server")]
pub mod connect;
#[cfg(feature = "docker")]
pub mod image;
#[cfg(feature = "server")]
pub mod kubernetes;
#[cfg(feature = "server")]
pub mod policy;
#[cfg(feature = "server")]
pub mod resolve;
#[cfg(feature = "server")]
mod server;

#[cfg(feature = "server")]
pub use connect::{Connect, TcpConnector};
#[cfg(feature = "docker")]
pub use image::{DEFAULT_IMAGE_TAG, ensure_proxy_image};
#[cfg(feature = "server")]
pub use kubernetes::PodPolicy;
#[cfg(feature = "server")]
pub use policy::{ERROR_HEADER, PolicySource, REFUSAL_HEADER, Refusal, StaticPolicy};
#[cfg(feature = "server")]
pub use resolve::{Resolve, StaticResolver, SystemResolver};
#[cfg(feature = "server")]
pub use server::{Limits, MIN_HEADER_BYTES, Proxy, serve};

use mcp_types::Egress;

/// The binary's name (and the package's).
pub const BINARY_NAME: &str = "mcp-egress-proxy";
/// The port the proxy listens on in the images and companions this project runs.
pub const DEFAULT_PORT: u16 = 3128;

/// The binary's arguments for serving `policy` on `0.0.0.0:port`: what a backend passes as a
/// proxy container's command.
pub fn command_args(policy: &Egress, port: u16) -> Vec<String> {
    vec![
        "--listen".to_owned(),
        format!("0.0.0.0:{port}"),
        "--policy-json".to_owned(),
        // An Egress always serializes (strings and a list of plain rules).
        serde_json::to_string(policy).unwrap_or_else(|_| "\"none\"".to_owned()),
    ]
}

/// The line the binary logs once it listens (a backend may wait for it before starting the
/// clients).
pub const LISTENING_MESSAGE: &str = "mcp-egress-proxy listening on";
