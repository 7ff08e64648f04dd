//! `mcp-test-server probe URL`: an MCP client small enough for a `FROM scratch` peer container.
//! It resolves the host by asking the resolver in `/etc/resolv.conf` directly (a static glibc
//! binary cannot load the NSS modules that `getaddrinfo` needs), POSTs an MCP `initialize` to the
//! streamable HTTP endpoint, and succeeds when the answer carries this server's `serverInfo`.
//! It proves that a server is reachable by name from another container on the same network.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// What the probe looks for in the answer.
const SERVER_NAME: &str = "\"name\":\"mcp-test-server\"";
const TIMEOUT: Duration = Duration::from_secs(3);

/// A parsed `http://HOST:PORT/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
}

/// Parses the probe URL.
pub(crate) fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("probe: {url:?} must start with http://"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("probe: {url:?} needs a port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("probe: {port:?} is not a port"))?;
    if host.is_empty() {
        return Err(format!("probe: {url:?} has no host"));
    }
    Ok(Target {
        host: host.to_owned(),
        port,
        path,
    })
}

/// Tries up to `attempts` times, a second apart; prints the outcome on stdout.
pub(crate) fn run(target: &Target, attempts: u32) -> bool {
    let mut last = String::new();
    for attempt in 1..=attempts.max(1) {
        match probe_once(target) {
            Ok(addr) => {
                println!(
                    "reachable: MCP initialize answered by mcp-test-server at {}:{} ({addr})",
                    target.host, target.port
                );
                return true;
            }
            Err(e) => last = e,
        }
        if attempt < attempts {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    println!("unreachable: {last}");
    false
}

fn probe_once(target: &Target) -> Result<SocketAddr, String> {
    let ip = resolve(&target.host)?;
    let addr = SocketAddr::new(ip, target.port);
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"mcp-test-server-probe","version":"1"}}}"#;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        target.path,
        target.host,
        target.port,
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + TIMEOUT;
    // The answer may be an event stream that stays open: stop as soon as the server info is in.
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if answer.is_empty() => return Err(format!("read from {addr}: {e}")),
            Err(_) => break,
        }
        if String::from_utf8_lossy(&answer).contains(SERVER_NAME) {
            return Ok(addr);
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let first = text.lines().next().unwrap_or("no answer");
    Err(format!(
        "{addr} answered without mcp-test-server's serverInfo ({first})"
    ))
}

/// An IP literal, a name from `/etc/hosts`, or an A record from the first answering nameserver
/// in `/etc/resolv.conf`.
pub(crate) fn resolve(host: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse() {
        return Ok(ip);
    }
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        for line in hosts.lines().map(|l| l.split('#').next().unwrap_or("")) {
            let mut fields = line.split_whitespace();
            if let Some(ip) = fields.next().and_then(|f| f.parse::<IpAddr>().ok())
                && fields.any(|name| name.eq_ignore_ascii_case(host))
            {
                return Ok(ip);
            }
        }
    }
    let conf = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("resolve {host}: /etc/resolv.conf: {e}"))?;
    let servers: Vec<IpAddr> = conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut last = format!("resolve {host}: no nameserver in /etc/resolv.conf");
    for server in servers {
        match query_a(server, host) {
            Ok(ip) => return Ok(IpAddr::V4(ip)),
            Err(e) => last = format!("resolve {host} via {server}: {e}"),
        }
    }
    Err(last)
}

/// One DNS query for an A record (RFC 1035), over UDP.
fn query_a(server: IpAddr, name: &str) -> Result<Ipv4Addr, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| "bind address")?;
    let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let query = encode_query(0x6d63, name)?;
    socket
        .send_to(&query, SocketAddr::new(server, 53))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).map_err(|e| e.to_string())?;
    decode_first_a(&buf[..n], 0x6d63)
}

pub(crate) fn encode_query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(12 + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // recursion desired, one question
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or_else(|| format!("{name:?} is not a DNS name"))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    Ok(q)
}

pub(crate) fn decode_first_a(msg: &[u8], id: u16) -> Result<Ipv4Addr, String> {
    let short = || "truncated DNS answer".to_owned();
    if msg.len() < 12 || msg[..2] != id.to_be_bytes() {
        return Err("not an answer to our query".into());
    }
    let rcode = msg[3] & 0x0f;
    if rcode != 0 {
        return Err(format!("DNS error code {rcode} (3 = no such name)"));
    }
    let questions = u16::from_be_bytes([msg[4], msg[5]]);
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(msg, pos).ok_or_else(short)? + 4;
    }
    for _ in 0..answers {
        pos = skip_name(msg, pos).ok_or_else(short)?;
        let fixed = msg.get(pos..pos + 10).ok_or_else(short)?;
        let (rtype, len) = (
            u16::from_be_bytes([fixed[0], fixed[1]]),
            usize::from(u16::from_be_bytes([fixed[8], fixed[9]])),
        );
        let data = msg.get(pos + 10..pos + 10 + len).ok_or_else(short)?;
        if rtype == 1 && len == 4 {
            return Ok(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        pos += 10 + len;
    }
    Err("no A record".into())
}

/// The position after a (possibly compressed) name.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xc0 == 0xc0 => return Some(pos + 2),
            l => pos += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://mcp-echo-x:8080/mcp").unwrap(),
            Target {
                host: "mcp-echo-x".into(),
                port: 8080,
                path: "/mcp".into()
            }
        );
        assert_eq!(parse_url("http://10.0.0.1:80").unwrap().path, "/");
        for bad in ["https://x:1/", "http://x/", "http://:1/", "http://x:port/"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns_round_trip() {
        let q = encode_query(7, "peer.example").unwrap();
        assert_eq!(&q[12..], b"\x04peer\x07example\x00\x00\x01\x00\x01");
        // An answer: the question echoed, then one A record with a compressed name.
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 172, 18, 0, 5]);
        assert_eq!(decode_first_a(&a, 7).unwrap(), Ipv4Addr::new(172, 18, 0, 5));
        let mut nx = q;
        nx[3] = 0x83;
        assert!(decode_first_a(&nx, 7).unwrap_err().contains("no such name"));
        assert!(decode_first_a(&a, 8).is_err());
        assert!(decode_first_a(&a[..20], 7).is_err());
    }

    #[test]
    fn rejects_bad_names() {
        assert!(encode_query(1, "a..b").is_err());
        assert!(encode_query(1, &"x".repeat(64)).is_err());
    }
}
