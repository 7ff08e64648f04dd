//! A unix-socket relay to the Docker engine's socket that a test can sever: every connection
//! that carried an events request (`GET /v1.xx/events?...`) is cut by
//! [`SocketRelay::sever_events`], as an engine restart or a proxy's idle timeout would cut it,
//! while the other requests of a concurrently running test pass untouched. Dropping the relay
//! ends every connection and removes the socket.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{AbortHandle, JoinHandle};

type Connections = Arc<Mutex<Vec<(Arc<AtomicBool>, AbortHandle)>>>;

pub(crate) struct SocketRelay {
    path: PathBuf,
    _dir: tempfile::TempDir,
    connections: Connections,
    accept: JoinHandle<()>,
}

impl SocketRelay {
    /// Listens on a fresh socket and relays each connection to `target`.
    pub(crate) fn start(target: &Path) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path)?;
        let connections: Connections = Arc::default();
        let target = target.to_owned();
        let accept = tokio::spawn({
            let connections = connections.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let events = Arc::new(AtomicBool::new(false));
                    let task = tokio::spawn(relay(client, target.clone(), events.clone()));
                    let mut all = connections.lock().unwrap();
                    all.retain(|(_, t)| !t.is_finished());
                    all.push((events, task.abort_handle()));
                }
            }
        });
        Ok(Self {
            path,
            _dir: dir,
            connections,
            accept,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Cuts every connection that carried an events request; returns how many.
    pub(crate) fn sever_events(&self) -> usize {
        let all = self.connections.lock().unwrap();
        let mut cut = 0;
        for (events, task) in all.iter() {
            if events.load(Ordering::SeqCst) && !task.is_finished() {
                task.abort();
                cut += 1;
            }
        }
        cut
    }
}

impl Drop for SocketRelay {
    fn drop(&mut self) {
        self.accept.abort();
        for (_, task) in self.connections.lock().unwrap().iter() {
            task.abort();
        }
    }
}

/// Copies both ways, marking the connection once a request line asks for `/events`.
async fn relay(client: UnixStream, target: PathBuf, events: Arc<AtomicBool>) {
    let Ok(engine) = UnixStream::connect(&target).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut engine_read, mut engine_write) = engine.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if chunk.starts_with(b"GET ")
                && chunk.split(|b| *b == b'\n').next().is_some_and(|line| {
                    line.windows(8)
                        .any(|w| w == b"/events?" || w == b"/events ")
                })
            {
                events.store(true, Ordering::SeqCst);
            }
            if engine_write.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = engine_write.shutdown().await;
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut engine_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}
