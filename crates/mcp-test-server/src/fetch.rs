//! The fixture's `--fetch URL` step: one HTTP/1.1 GET of an `http://` URL, through the proxy
//! in `HTTP_PROXY` / `http_proxy` unless `NO_PROXY` / `no_proxy` names the host, as most HTTP
//! clients do. Blocking std IO with timeouts; names resolve like the probe's (the resolver in
//! `/etc/resolv.conf`, so it works in a `FROM scratch` image). Prints the status, whoever
//! answered, and a proxy's refusal reason.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mcp_orchestrator_api::fixture::fetch_line;

use crate::probe::resolve;

const TIMEOUT: Duration = Duration::from_secs(5);
/// The header the egress proxy puts its refusal reason in.
const REFUSAL_HEADER: &str = "mcp-egress-refused";

/// Fetches `url` and returns the line to print.
pub(crate) fn fetch(url: &str) -> String {
    let env = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    let proxy = env(["HTTP_PROXY", "http_proxy"]);
    let no_proxy = env(["NO_PROXY", "no_proxy"]).unwrap_or_default();
    let target = match split_url(url) {
        Ok(t) => t,
        Err(e) => return fetch_line(url, Err(&e), "(not sent)"),
    };
    let via = proxy.filter(|_| !bypasses(&no_proxy, &target.0));
    let (connect_host, connect_port, note) = match &via {
        Some(p) => match proxy_address(p) {
            Ok((h, port)) => (h.clone(), port, format!("(via proxy {h}:{port})")),
            Err(e) => return fetch_line(url, Err(&e), "(not sent)"),
        },
        None => (target.0.clone(), target.1, "(direct)".to_owned()),
    };
    let request_target = if via.is_some() {
        format!("http://{}:{}{}", target.0, target.1, target.2)
    } else {
        target.2.clone()
    };
    let request = format!(
        "GET {request_target} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: mcp-test-server\r\nConnection: close\r\n\r\n",
        target.0, target.1
    );
    match exchange(&connect_host, connect_port, &request) {
        Ok((status, refusal)) => {
            let note = match refusal {
                Some(reason) => format!("{note} refused: {reason}"),
                None => note,
            };
            fetch_line(url, Ok(status), &note)
        }
        Err(e) => fetch_line(url, Err(&e), &note),
    }
}

/// `http://host[:port][/path]` -> (host, port, path).
fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| "only http:// URLs are fetched".to_owned())?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| format!("bad port {p:?}"))?),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    Ok((host.to_ascii_lowercase(), port, path))
}

/// `http://host:port[/]` or `host:port` -> (host, port).
fn proxy_address(proxy: &str) -> Result<(String, u16), String> {
    let rest = proxy.strip_prefix("http://").unwrap_or(proxy);
    let rest = rest.trim_end_matches('/');
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("proxy {proxy:?} has no port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("proxy {proxy:?}: bad port"))?;
    Ok((host.to_owned(), port))
}

/// Whether `NO_PROXY` (comma-separated names, `.suffix`es, `*`) names `host`.
fn bypasses(no_proxy: &str, host: &str) -> bool {
    no_proxy.split(',').map(str::trim).any(|entry| {
        let entry = entry.to_ascii_lowercase();
        entry == "*"
            || entry == host
            || entry
                .strip_prefix('.')
                .is_some_and(|suffix| host.ends_with(&format!(".{suffix}")) || host == suffix)
    })
}

/// Sends `request` to `host:port` and returns the status and any refusal reason.
fn exchange(host: &str, port: u16, request: &str) -> Result<(u16, Option<String>), String> {
    let ip = resolve(host)?;
    let addr = SocketAddr::new(ip, port);
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read from {addr}: {e}")),
        }
    }
    parse_head(&String::from_utf8_lossy(&head)).ok_or_else(|| format!("{addr}: no HTTP answer"))
}

fn parse_head(text: &str) -> Option<(u16, Option<String>)> {
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let refusal = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(REFUSAL_HEADER))
        .map(|(_, v)| v.trim().to_owned());
    Some((status, refusal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_proxies_and_no_proxy() {
        assert_eq!(
            split_url("http://Target:8080/health").unwrap(),
            ("target".into(), 8080, "/health".into())
        );
        assert_eq!(split_url("http://t").unwrap(), ("t".into(), 80, "/".into()));
        assert!(split_url("https://t/").is_err());
        assert_eq!(
            proxy_address("http://mcp-x-egress:3128/").unwrap(),
            ("mcp-x-egress".into(), 3128)
        );
        assert_eq!(proxy_address("p:1").unwrap(), ("p".into(), 1));
        assert!(proxy_address("http://p").is_err());
        assert!(bypasses("a, .example.com", "x.example.com"));
        assert!(bypasses("a,b", "b") && bypasses("*", "z"));
        assert!(!bypasses("a,.example.com", "example.org"));
        assert!(!bypasses("", "a"));
    }

    #[test]
    fn heads() {
        assert_eq!(
            parse_head(
                "HTTP/1.1 403 Forbidden\r\nMcp-Egress-Refused: x:80: host not allowed\r\n\r\n"
            ),
            Some((403, Some("x:80: host not allowed".into())))
        );
        assert_eq!(parse_head("HTTP/1.1 200 OK\r\n\r\nbody"), Some((200, None)));
        assert_eq!(parse_head("garbage"), None);
    }
}
