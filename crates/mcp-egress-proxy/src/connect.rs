//! How the proxy opens a connection to an admitted address: a pluggable [`Connect`] (tests
//! wrap [`TcpConnector`] to see every address the proxy dials), plain TCP by default.

use std::io;
use std::net::SocketAddr;

use futures::future::BoxFuture;
use tokio::net::TcpStream;

/// Opens a TCP connection to an address the policy admitted.
pub trait Connect: Send + Sync + 'static {
    /// A connected stream to `addr` (the proxy applies its connect timeout around this).
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<TcpStream>>;
}

/// `TcpStream::connect` with `TCP_NODELAY` (a tunnel forwards small TLS records promptly).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connect for TcpConnector {
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<TcpStream>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}
