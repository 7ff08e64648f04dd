//! The `mcp-egress-proxy` binary: bad flags name the flag and exit 2; a running proxy on
//! loopback tunnels to an address its `--allow` CIDR admits, refuses another, and stops on
//! SIGTERM with exit code 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-egress-proxy");

fn refused(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_flags_name_what_is_wrong() {
    assert!(refused(&[]).contains("give the policy: --allow RULE"));
    let e = refused(&["--allow", "bad_name:80"]);
    assert!(e.contains("invalid policy: policy.allow[0].host"), "{e}");
    let e = refused(&["--allow", "a.example:http"]);
    assert!(
        e.contains("--allow") && e.contains("is not a number"),
        "{e}"
    );
    let e = refused(&["--policy-json", "{\"allow\":[]}"]);
    assert!(e.contains("empty allow-list"), "{e}");
    let e = refused(&["--policy-json", "closed"]);
    assert!(e.contains("--policy-json"), "{e}");
    let e = refused(&["--allow", "a.example", "--max-header-bytes", "100"]);
    assert!(e.contains("max_header_bytes"), "{e}");
}

/// The running binary, killed if the test fails before stopping it.
struct Proxy(std::process::Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn serves_its_allow_list_and_stops_on_sigterm() {
    // A one-shot echo server on loopback: the only destination of this test.
    let echo = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    let echoing = std::thread::spawn(move || {
        let (mut s, _) = echo.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });

    let mut proxy = Proxy(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--allow"])
            .arg(format!("127.0.0.0/8:{echo_port}"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut proxy.0;
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    log.read_line(&mut line).unwrap();
    let addr = line
        .split(mcp_egress_proxy::LISTENING_MESSAGE)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no listening line: {line}"))
        .to_owned();

    let mut client = TcpStream::connect(&addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        client,
        "CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
    }
    client.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    reader.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    echoing.join().unwrap();

    let mut other = TcpStream::connect(&addr).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        other,
        "CONNECT 127.0.0.1:{} HTTP/1.1\r\nHost: x\r\n\r\n",
        echo_port ^ 1
    )
    .unwrap();
    let mut status = String::new();
    BufReader::new(other).read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");

    let pid = i32::try_from(child.id()).unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    let mut rest = String::new();
    log.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("egress refused"), "{rest}");
}
