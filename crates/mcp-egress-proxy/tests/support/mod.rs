//! Loopback fixtures for the proxy tests: a proxy with an injected resolver and a connector
//! that records every address it is asked to dial (and dials only loopback), a TCP echo
//! server, a tiny HTTP origin, and a raw HTTP/1.1 client.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use mcp_egress_proxy::{Connect, Limits, PolicySource, Proxy, Resolve, TcpConnector};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Dials loopback addresses only, and remembers every address it was asked for.
#[derive(Default, Clone)]
pub struct RecordingConnector {
    pub dialed: Arc<Mutex<Vec<SocketAddr>>>,
}

impl RecordingConnector {
    pub fn dialed(&self) -> Vec<SocketAddr> {
        self.dialed.lock().unwrap().clone()
    }
}

impl Connect for RecordingConnector {
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<TcpStream>> {
        self.dialed.lock().unwrap().push(addr);
        if addr.ip().is_loopback() {
            TcpConnector.connect(addr)
        } else {
            // Never send traffic anywhere else, whatever the proxy decides.
            Box::pin(async move { Err(io::Error::other(format!("test refuses to dial {addr}"))) })
        }
    }
}

/// A resolver whose answers can change between calls (for the rebinding test): each name has
/// a list of answers, the last one repeating.
#[derive(Default, Clone)]
pub struct ScriptedResolver {
    answers: Arc<Mutex<BTreeMap<String, Vec<Vec<IpAddr>>>>>,
    pub asked: Arc<Mutex<Vec<String>>>,
}

impl ScriptedResolver {
    pub fn with(self, name: &str, answers: Vec<Vec<IpAddr>>) -> Self {
        self.answers
            .lock()
            .unwrap()
            .insert(name.to_owned(), answers);
        self
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Resolve for ScriptedResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        self.asked.lock().unwrap().push(name.to_owned());
        let mut answers = self.answers.lock().unwrap();
        let found = match answers.get_mut(name) {
            Some(list) if list.len() > 1 => Ok(list.remove(0)),
            Some(list) => Ok(list[0].clone()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such name")),
        };
        Box::pin(async move { found })
    }
}

/// A running proxy; stopped when dropped.
pub struct RunningProxy {
    pub addr: SocketAddr,
    pub connector: RecordingConnector,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

pub async fn start_proxy(
    policy: Arc<dyn PolicySource>,
    resolver: ScriptedResolver,
    limits: Limits,
) -> RunningProxy {
    start_proxy_with(policy, resolver, limits, None).await
}

pub async fn start_proxy_with(
    policy: Arc<dyn PolicySource>,
    resolver: ScriptedResolver,
    limits: Limits,
    connector: Option<Arc<dyn Connect>>,
) -> RunningProxy {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recording = RecordingConnector::default();
    let connector = connector.unwrap_or_else(|| Arc::new(recording.clone()));
    let (stop, stopped) = oneshot::channel::<()>();
    let proxy = Proxy::new(policy, Arc::new(resolver))
        .with_connector(connector)
        .with_limits(limits);
    let task = tokio::spawn(proxy.serve(listener, async {
        let _ = stopped.await;
    }));
    RunningProxy {
        addr,
        connector: recording,
        stop: Some(stop),
        task,
    }
}

/// A TCP echo server on loopback; returns its port.
pub async fn echo_server() -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// What the origin saw of one request: its request line and headers.
#[derive(Debug, Clone)]
pub struct Seen {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

/// A tiny HTTP origin on loopback: `/redirect?to=URL` answers 302 to URL, anything else 200
/// with `hello <name>`. Returns its port and what it saw.
pub async fn origin(name: &'static str) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(s);
                loop {
                    let Some((line, headers)) = read_head(&mut reader).await else {
                        return;
                    };
                    let length: usize = header(&headers, "content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let target = line.split(' ').nth(1).unwrap_or("/").to_owned();
                    log.lock().unwrap().push(Seen { line, headers });
                    let answer = if let Some(to) = target.strip_prefix("/redirect?to=") {
                        format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")
                    } else {
                        let body = format!("hello {name}");
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    if reader.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a request or response head: the first line and the headers.
pub async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Option<(String, Vec<(String, String)>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let first = line.trim_end().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).await.ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    Some((first, headers))
}

/// A response as the raw client saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// One connection to the proxy that sends raw requests and reads answers.
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub async fn connect(proxy: SocketAddr) -> Self {
        Self {
            reader: BufReader::new(TcpStream::connect(proxy).await.unwrap()),
        }
    }

    pub async fn send(&mut self, raw: &str) {
        self.reader
            .get_mut()
            .write_all(raw.as_bytes())
            .await
            .unwrap();
    }

    /// Reads one answer; a CONNECT's 200 has no body.
    pub async fn answer(&mut self, connect: bool) -> Answer {
        let (line, headers) = read_head(&mut self.reader).await.expect("an answer");
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let length: usize = header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; if connect && status == 200 { 0 } else { length }];
        self.reader.read_exact(&mut body).await.unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn connect_to(&mut self, authority: &str) -> Answer {
        self.send(&format!(
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
        ))
        .await;
        self.answer(true).await
    }

    pub async fn get(&mut self, url: &str, extra: &str) -> Answer {
        self.send(&format!(
            "GET {url} HTTP/1.1\r\nHost: ignored\r\n{extra}\r\n"
        ))
        .await;
        self.answer(false).await
    }
}
