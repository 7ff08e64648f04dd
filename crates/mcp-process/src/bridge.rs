//! The supervisor's side of the stdio bridge: the current server's stdin and the one attached
//! client, and the accept loop on `<instance dir>/stdio.sock` that greets a client with
//! `mcp-process-attach ok` (or a refusal), then copies its bytes to the server's stdin and the
//! server's stdout lines back (see `ProcessOrchestrator::attach_stdio` for the client side).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::process::ChildStdin;
use tokio::sync::mpsc;

/// First word of the line the stdio bridge sends a client on connecting.
pub(crate) const ATTACH_BANNER: &str = "mcp-process-attach";

/// The stdio bridge: the current server's stdin and the one attached client.
#[derive(Clone, Default)]
pub(crate) struct Attach {
    inner: Arc<Mutex<AttachState>>,
}

#[derive(Default)]
struct AttachState {
    stdin: Option<Arc<tokio::sync::Mutex<ChildStdin>>>,
    client: Option<(u64, mpsc::Sender<Vec<u8>>)>,
    next_client: u64,
}

impl Attach {
    fn lock(&self) -> MutexGuard<'_, AttachState> {
        // Plain data behind the lock stays consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn begin_run(&self, stdin: Option<ChildStdin>) {
        self.lock().stdin = stdin.map(|s| Arc::new(tokio::sync::Mutex::new(s)));
    }

    /// The server is going away: close its stdin and hang up on the client.
    pub(crate) fn end_run(&self) {
        let mut s = self.lock();
        s.stdin = None;
        s.client = None;
    }

    pub(crate) fn sender(&self) -> Option<mpsc::Sender<Vec<u8>>> {
        self.lock().client.as_ref().map(|(_, tx)| tx.clone())
    }

    fn stdin_for(&self, client: u64) -> Option<Arc<tokio::sync::Mutex<ChildStdin>>> {
        let s = self.lock();
        match &s.client {
            Some((id, _)) if *id == client => s.stdin.clone(),
            _ => None,
        }
    }

    fn try_attach(&self) -> Result<(u64, mpsc::Receiver<Vec<u8>>), &'static str> {
        let mut s = self.lock();
        if s.client.is_some() {
            return Err("busy: another client is attached");
        }
        if s.stdin.is_none() {
            return Err("unavailable: the server is not running");
        }
        s.next_client += 1;
        let id = s.next_client;
        let (tx, rx) = mpsc::channel(64);
        s.client = Some((id, tx));
        Ok((id, rx))
    }

    fn detach(&self, client: u64) {
        let mut s = self.lock();
        if s.client.as_ref().is_some_and(|(id, _)| *id == client) {
            s.client = None;
        }
    }
}

/// Accepts bridge connections: the first line sent is `mcp-process-attach ok`, or a refusal
/// (`busy: ...`, `unavailable: ...`) after which the connection is closed. Once accepted, bytes
/// from the client go to the server's stdin and the server's stdout lines go to the client,
/// until either side ends. Accept errors are reported through `diag`.
pub(crate) async fn accept_loop(listener: UnixListener, attach: Attach, diag: fn(&str)) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                diag(&format!("accepting a stdio client: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (mut rd, mut wr) = stream.into_split();
        let (id, mut rx) = match attach.try_attach() {
            Ok(ok) => ok,
            Err(refusal) => {
                let _ = wr
                    .write_all(format!("{ATTACH_BANNER} {refusal}\n").as_bytes())
                    .await;
                continue;
            }
        };
        if wr
            .write_all(format!("{ATTACH_BANNER} ok\n").as_bytes())
            .await
            .is_err()
        {
            attach.detach(id);
            continue;
        }
        let writer_attach = attach.clone();
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            writer_attach.detach(id);
            // Dropping the write half shuts it down: the client reads EOF.
        });
        let reader_attach = attach.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let Some(stdin) = reader_attach.stdin_for(id) else {
                    break;
                };
                let mut stdin = stdin.lock().await;
                if stdin.write_all(&buf[..n]).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
            reader_attach.detach(id);
        });
    }
}
