//! `mcp-k8s-probe`: the kind integration tests' probe, run as a pod from a `FROM scratch` image.
//!
//! - `http IP PORT [--attempts N] [--timeout-ms MS]`: sends an MCP `initialize` request to
//!   `http://IP:PORT/mcp`; prints `reachable: <status line>` and exits 0 as soon as any HTTP
//!   response arrives, or prints `unreachable` and exits 1 after N failed attempts (one second
//!   apart). Reachability, not the answer, is what a NetworkPolicy decides.
//! - `persist PATH TOKEN`: when PATH exists, prints `found <content>` and exits 0; otherwise
//!   writes TOKEN there, prints `wrote <TOKEN>` and exits 3, so that a pod with restart policy
//!   `OnFailure` restarts it and the second run finds the file (data survives a restart).
//! - `hog MIB`: allocates and touches MIB mebibytes, then idles; under a smaller memory limit the
//!   kernel kills it (`OOMKilled`).
//! - `sleep SECONDS`: prints `sleeping` and sleeps. It installs no signal handler, so as PID 1 in
//!   a container it ignores SIGTERM and its pod stays `Terminating` for the whole grace period.
//!
//! Only IP addresses are accepted: a static glibc binary cannot load the NSS modules that name
//! resolution needs. Bad arguments print one line and exit 2.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// Exit code of `persist` after writing the marker: non-zero, so `OnFailure` restarts the pod.
const WROTE_EXIT: u8 = 3;
const USAGE_EXIT: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("http") => parse_http(&args[1..]).map(|(addr, attempts, timeout)| {
            if http(addr, attempts, timeout) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Some("persist") => match &args[1..] {
            [path, token] => Ok(persist(path, token)),
            _ => Err("persist takes PATH TOKEN".to_owned()),
        },
        Some("hog") => match &args[1..] {
            [mib] => mib
                .parse()
                .map(hog)
                .map_err(|_| format!("hog: {mib:?} is not a number of MiB")),
            _ => Err("hog takes MIB".to_owned()),
        },
        Some("sleep") => match &args[1..] {
            [secs] => secs
                .parse()
                .map(|s| {
                    println!("sleeping");
                    std::thread::sleep(Duration::from_secs(s));
                    ExitCode::SUCCESS
                })
                .map_err(|_| format!("sleep: {secs:?} is not a number of seconds")),
            _ => Err("sleep takes SECONDS".to_owned()),
        },
        Some("--help" | "-h") => {
            println!(
                "usage: mcp-k8s-probe http IP PORT [--attempts N] [--timeout-ms MS] \
                 | persist PATH TOKEN | hog MIB | sleep SECONDS"
            );
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!(
            "unknown command {other:?} (expected http or persist)"
        )),
    };
    result.unwrap_or_else(|e| {
        eprintln!("mcp-k8s-probe: {e}");
        ExitCode::from(USAGE_EXIT)
    })
}

fn parse_http(args: &[String]) -> Result<(SocketAddr, u32, Duration), String> {
    let [ip, port, rest @ ..] = args else {
        return Err("http takes IP PORT".to_owned());
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address (names are not resolved)"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port"))?;
    let (mut attempts, mut timeout_ms) = (1_u32, 3000_u64);
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--attempts" => {
                attempts = value.parse().map_err(|_| format!("bad {flag} {value:?}"))?;
            }
            "--timeout-ms" => {
                timeout_ms = value.parse().map_err(|_| format!("bad {flag} {value:?}"))?;
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok((
        SocketAddr::new(ip, port),
        attempts.max(1),
        Duration::from_millis(timeout_ms),
    ))
}

/// Whether any attempt got an HTTP response; prints one line per attempt.
fn http(addr: SocketAddr, attempts: u32, timeout: Duration) -> bool {
    for attempt in 1..=attempts {
        match request(addr, timeout) {
            Ok(status_line) => {
                println!("reachable: {status_line}");
                return true;
            }
            Err(e) => println!("attempt {attempt}/{attempts}: {addr}: {e}"),
        }
        if attempt < attempts {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    println!("unreachable");
    false
}

fn request(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"mcp-k8s-probe","version":"0"}}}"#;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut head = [0_u8; 256];
    let n = stream.read(&mut head)?;
    let text = String::from_utf8_lossy(&head[..n]);
    let line = text.lines().next().unwrap_or_default().to_owned();
    if line.starts_with("HTTP/") {
        Ok(line)
    } else {
        Err(std::io::Error::other(format!(
            "not an HTTP response: {line:?}"
        )))
    }
}

/// Touches every page of `mib` MiB so the memory is really used, then idles.
fn hog(mib: usize) -> ExitCode {
    let mut chunks = Vec::with_capacity(mib);
    for i in 0..mib {
        let mut chunk = vec![0_u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        chunks.push(chunk);
        if (i + 1) % 16 == 0 {
            println!("allocated {} MiB", i + 1);
        }
    }
    println!("holding {mib} MiB");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
        std::hint::black_box(&chunks);
    }
}

fn persist(path: &str, token: &str) -> ExitCode {
    match std::fs::read_to_string(path) {
        Ok(content) => {
            println!("found {content}");
            ExitCode::SUCCESS
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let written = std::fs::File::create(path).and_then(|mut f| {
                f.write_all(token.as_bytes())?;
                f.sync_all()
            });
            match written {
                Ok(()) => {
                    println!("wrote {token}");
                    ExitCode::from(WROTE_EXIT)
                }
                Err(e) => {
                    println!("cannot write {path}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            println!("cannot read {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn http_arguments() {
        let (addr, attempts, timeout) = parse_http(&s(&[
            "10.0.0.1",
            "8080",
            "--attempts",
            "5",
            "--timeout-ms",
            "200",
        ]))
        .unwrap();
        assert_eq!(addr, "10.0.0.1:8080".parse().unwrap());
        assert_eq!((attempts, timeout), (5, Duration::from_millis(200)));
        assert!(parse_http(&s(&["svc.ns", "80"])).is_err());
        assert!(parse_http(&s(&["::1", "x"])).is_err());
        assert!(parse_http(&s(&["::1", "1", "--bogus", "1"])).is_err());
    }

    #[test]
    fn http_sees_a_local_http_server_and_not_a_closed_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            // Other tests of this binary probe ports that were just closed; one may land here
            // first. Answer only the probe's request.
            loop {
                let Ok((mut conn, _)) = listener.accept() else {
                    return;
                };
                // The whole request first (it may come in several writes): answering and closing
                // while the client still writes would break its pipe.
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut got = Vec::new();
                let mut buf = [0_u8; 1024];
                while !got.ends_with(b"}}}") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if got.starts_with(b"POST /mcp") {
                    let _ =
                        conn.write_all(b"HTTP/1.1 406 Not Acceptable\r\ncontent-length: 0\r\n\r\n");
                    return;
                }
            }
        });
        assert_eq!(
            request(addr, Duration::from_secs(5)).unwrap(),
            "HTTP/1.1 406 Not Acceptable"
        );
        server.join().unwrap();
        // Nothing listens there any more.
        assert!(!http(addr, 1, Duration::from_millis(500)));
    }

    #[test]
    fn persist_writes_then_finds() {
        let dir = std::env::temp_dir().join(format!("mcp-k8s-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("marker");
        let path = path.to_str().unwrap();
        let _ = std::fs::remove_file(path);
        assert_eq!(persist(path, "tok-1"), ExitCode::from(WROTE_EXIT));
        assert_eq!(std::fs::read_to_string(path).unwrap(), "tok-1");
        assert_eq!(persist(path, "tok-2"), ExitCode::SUCCESS);
        assert_eq!(std::fs::read_to_string(path).unwrap(), "tok-1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
