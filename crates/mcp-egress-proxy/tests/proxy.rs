//! The proxy against loopback destinations only: tunnels and forwards for admitted targets,
//! refusals (names not listed, IP literals outside the CIDRs, metadata, redirects to other
//! hosts) made before any connection, credentials passed to the policy source and never
//! forwarded or logged, and the limits.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use mcp_egress_proxy::{Connect, Limits, PolicySource, REFUSAL_HEADER, Refusal, StaticPolicy};
use mcp_types::egress::{Egress, EgressRule};
use support::{Client, LOOPBACK, ScriptedResolver, echo_server, origin, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn allow(rules: Vec<EgressRule>) -> Arc<dyn PolicySource> {
    Arc::new(StaticPolicy::new(Egress::Allow(rules)))
}

fn names(entries: &[&str]) -> ScriptedResolver {
    entries.iter().fold(ScriptedResolver::default(), |r, n| {
        r.with(n, vec![vec![LOOPBACK]])
    })
}

const METADATA: &str = "169.254.169.254";

#[tokio::test]
async fn allowed_name_tunnels_to_the_echo_server() {
    let echo = echo_server().await;
    let proxy = start_proxy(
        allow(vec![EgressRule::host("allowed.test", [echo])]),
        names(&["allowed.test"]),
        Limits::default(),
    )
    .await;
    let mut client = Client::connect(proxy.addr).await;
    let answer = client.connect_to(&format!("allowed.test:{echo}")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    client.send("ping through the tunnel").await;
    let mut buf = vec![0; "ping through the tunnel".len()];
    client.reader.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, b"ping through the tunnel");
    assert_eq!(
        proxy.connector.dialed(),
        vec![SocketAddr::new(LOOPBACK, echo)]
    );
}

#[tokio::test]
async fn a_name_not_listed_is_refused_before_any_lookup_or_connection() {
    let echo = echo_server().await;
    let resolver = names(&["allowed.test", "other.test"]);
    let proxy = start_proxy(
        allow(vec![EgressRule::host("allowed.test", [echo])]),
        resolver.clone(),
        Limits::default(),
    )
    .await;
    let mut client = Client::connect(proxy.addr).await;
    for target in [format!("other.test:{echo}"), "allowed.test:1".to_owned()] {
        let answer = client.connect_to(&target).await;
        assert_eq!(answer.status, 403, "{target}: {answer:?}");
        let reason = answer.header(REFUSAL_HEADER).unwrap();
        assert!(reason.contains("host not allowed"), "{reason}");
        assert!(answer.body.contains(&target), "{}", answer.body);
    }
    assert!(resolver.asked().is_empty(), "{:?}", resolver.asked());
    assert!(proxy.connector.dialed().is_empty());
}

#[tokio::test]
async fn ip_literals_must_fall_in_a_cidr_rule() {
    let echo = echo_server().await;
    let hosts_only = start_proxy(
        allow(vec![EgressRule::host("allowed.test", [])]),
        names(&["allowed.test"]),
        Limits::default(),
    )
    .await;
    let mut client = Client::connect(hosts_only.addr).await;
    let answer = client.connect_to(&format!("127.0.0.1:{echo}")).await;
    assert_eq!(answer.status, 403);
    assert!(
        answer
            .header(REFUSAL_HEADER)
            .unwrap()
            .contains("not in the allowed CIDRs")
    );
    assert!(hosts_only.connector.dialed().is_empty());

    let with_cidr = start_proxy(
        allow(vec![EgressRule::cidr("127.0.0.0/8", [echo])]),
        ScriptedResolver::default(),
        Limits::default(),
    )
    .await;
    let mut client = Client::connect(with_cidr.addr).await;
    assert_eq!(
        client.connect_to(&format!("127.0.0.1:{echo}")).await.status,
        200
    );
    let mut client = Client::connect(with_cidr.addr).await;
    assert_eq!(
        client
            .connect_to(&format!("127.0.0.1:{}", echo ^ 1))
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn metadata_is_refused_without_connecting_even_for_open() {
    let resolver = ScriptedResolver::default()
        .with("meta.test", vec![vec![METADATA.parse().unwrap()]])
        .with(
            "mixed.test",
            vec![vec![LOOPBACK, METADATA.parse().unwrap()]],
        );
    let proxy = start_proxy(
        Arc::new(StaticPolicy::new(Egress::Open)),
        resolver,
        Limits::default(),
    )
    .await;
    for target in [
        "meta.test:80",
        "mixed.test:80",
        "169.254.169.254:80",
        "[fe80::1]:80",
    ] {
        let mut client = Client::connect(proxy.addr).await;
        let answer = client.connect_to(target).await;
        assert_eq!(answer.status, 403, "{target}");
        assert!(
            answer
                .header(REFUSAL_HEADER)
                .unwrap()
                .contains("link-local/metadata"),
            "{target}: {answer:?}"
        );
        let mut client = Client::connect(proxy.addr).await;
        let answer = client
            .get(&format!("http://{target}/latest/meta-data/"), "")
            .await;
        assert_eq!(answer.status, 403, "{target}");
    }
    assert!(
        proxy.connector.dialed().is_empty(),
        "{:?}",
        proxy.connector.dialed()
    );
}

#[tokio::test]
async fn the_proxy_connects_to_the_address_it_checked() {
    // First answer loopback (checked, admitted), then the metadata address: a rebinding name.
    let echo = echo_server().await;
    let resolver = ScriptedResolver::default().with(
        "rebind.test",
        vec![vec![LOOPBACK], vec![METADATA.parse().unwrap()]],
    );
    let proxy = start_proxy(
        Arc::new(StaticPolicy::new(Egress::Open)),
        resolver.clone(),
        Limits::default(),
    )
    .await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(
        client
            .connect_to(&format!("rebind.test:{echo}"))
            .await
            .status,
        200
    );
    assert_eq!(
        resolver.asked(),
        vec!["rebind.test"],
        "one lookup per request"
    );
    assert_eq!(
        proxy.connector.dialed(),
        vec![SocketAddr::new(LOOPBACK, echo)]
    );
    // The next request sees the new answer and is refused.
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(
        client
            .connect_to(&format!("rebind.test:{echo}"))
            .await
            .status,
        403
    );
    assert_eq!(proxy.connector.dialed().len(), 1);
}

#[tokio::test]
async fn forwards_plain_http_and_refuses_the_redirect_to_another_host() {
    let (allowed_port, allowed_seen) = origin("allowed").await;
    let (other_port, other_seen) = origin("other").await;
    let proxy = start_proxy(
        allow(vec![EgressRule::host("allowed.test", [allowed_port])]),
        names(&["allowed.test", "other.test"]),
        Limits::default(),
    )
    .await;
    let mut client = Client::connect(proxy.addr).await;
    let answer = client
        .get(&format!("http://allowed.test:{allowed_port}/page?q=1"), "")
        .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "hello allowed")
    );

    // The 3xx passes as-is, on the same client connection.
    let elsewhere = format!("http://other.test:{other_port}/");
    let answer = client
        .get(
            &format!("http://allowed.test:{allowed_port}/redirect?to={elsewhere}"),
            "",
        )
        .await;
    assert_eq!(answer.status, 302);
    assert_eq!(answer.header("location"), Some(elsewhere.as_str()));
    // Following it is a new request, judged on its own.
    let answer = client.get(&elsewhere, "").await;
    assert_eq!(answer.status, 403);
    assert!(
        answer
            .header(REFUSAL_HEADER)
            .unwrap()
            .contains("other.test")
    );
    assert!(
        other_seen.lock().unwrap().is_empty(),
        "the other host saw nothing"
    );

    let seen = allowed_seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].line, "GET /page?q=1 HTTP/1.1",
        "origin-form upstream"
    );
    assert_eq!(
        support::header(&seen[0].headers, "host"),
        Some(format!("allowed.test:{allowed_port}").as_str())
    );
}

/// Admits only clients that identify as `inst-a`, and remembers who asked.
#[derive(Default)]
struct PerUser {
    asked: Mutex<Vec<(SocketAddr, Option<String>)>>,
    port: u16,
}

impl PolicySource for PerUser {
    fn policy<'a>(
        &'a self,
        peer: SocketAddr,
        user: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Egress, Refusal>> {
        self.asked
            .lock()
            .unwrap()
            .push((peer, user.map(str::to_owned)));
        let port = self.port;
        Box::pin(async move {
            match user {
                Some("inst-a") => Ok(Egress::Allow(vec![EgressRule::host(
                    "allowed.test",
                    [port],
                )])),
                Some(other) => Err(Refusal::forbidden(format!("unknown instance {other}"))),
                None => Err(Refusal::authentication_required("identify the instance")),
            }
        })
    }
}

/// A writer the test's tracing subscriber appends to.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn proxy_user_reaches_the_source_and_credentials_go_nowhere_else() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (port, seen) = origin("allowed").await;
    let source = Arc::new(PerUser {
        port,
        ..PerUser::default()
    });
    let proxy = start_proxy(source.clone(), names(&["allowed.test"]), Limits::default()).await;
    let url = format!("http://allowed.test:{port}/x");
    // base64("inst-a:pa55-SECRET") and base64("inst-b:pa55-SECRET")
    let (a, b) = ("aW5zdC1hOnBhNTUtU0VDUkVU", "aW5zdC1iOnBhNTUtU0VDUkVU");

    let mut client = Client::connect(proxy.addr).await;
    let answer = client.get(&url, "").await;
    assert_eq!(answer.status, 407);
    assert!(
        answer
            .header("proxy-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    let answer = client
        .get(
            &url,
            &format!("Proxy-Authorization: Basic {b}\r\nCookie: BODY-SECRET\r\n"),
        )
        .await;
    assert_eq!(answer.status, 403);
    assert!(answer.body.contains("unknown instance inst-b"));
    let answer = client
        .get(&url, &format!("Proxy-Authorization: Basic {a}\r\n"))
        .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "hello allowed")
    );
    let mut client = Client::connect(proxy.addr).await;
    let answer = client.get(&url, "Proxy-Authorization: Basic %%%\r\n").await;
    assert_eq!(answer.status, 400);

    let users: Vec<Option<String>> = source
        .asked
        .lock()
        .unwrap()
        .iter()
        .map(|(_, u)| u.clone())
        .collect();
    assert_eq!(
        users,
        vec![None, Some("inst-b".into()), Some("inst-a".into())]
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        support::header(&seen[0].headers, "proxy-authorization"),
        None
    );

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("egress refused"), "{text}");
    assert!(text.contains(&format!("allowed.test:{port}")), "{text}");
    for secret in ["SECRET", a, b, "/x"] {
        assert!(!text.contains(secret), "{secret} logged:\n{text}");
    }
}

#[tokio::test]
async fn requests_a_forward_proxy_cannot_serve_get_400() {
    let proxy = start_proxy(
        Arc::new(StaticPolicy::new(Egress::Open)),
        ScriptedResolver::default(),
        Limits::default(),
    )
    .await;
    for (request, want) in [
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a proxy request"),
        (
            "GET https://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "CONNECT",
        ),
        (
            "CONNECT a.test HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "host:port",
        ),
        (
            "CONNECT bad_name:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            "bad_name",
        ),
    ] {
        let mut client = Client::connect(proxy.addr).await;
        client.send(request).await;
        let answer = client.answer(false).await;
        assert_eq!(answer.status, 400, "{request}");
        let reason = answer.header(mcp_egress_proxy::ERROR_HEADER).unwrap();
        assert!(reason.contains(want), "{request}: {reason}");
    }
    // `none` refuses everything.
    let none = start_proxy(
        Arc::new(StaticPolicy::new(Egress::None)),
        names(&["a.test"]),
        Limits::default(),
    )
    .await;
    let mut client = Client::connect(none.addr).await;
    assert_eq!(client.connect_to("a.test:443").await.status, 403);
    // An admitted name that does not resolve is a 502, not a refusal.
    let open = start_proxy(
        Arc::new(StaticPolicy::new(Egress::Open)),
        ScriptedResolver::default(),
        Limits::default(),
    )
    .await;
    let mut client = Client::connect(open.addr).await;
    let answer = client.connect_to("nowhere.test:443").await;
    assert_eq!(answer.status, 502);
    assert!(
        answer
            .header(mcp_egress_proxy::ERROR_HEADER)
            .unwrap()
            .contains("cannot resolve")
    );
}

/// Never completes a connection.
struct Blackhole;

impl Connect for Blackhole {
    fn connect(
        &self,
        _addr: SocketAddr,
    ) -> BoxFuture<'static, std::io::Result<tokio::net::TcpStream>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn limits_connect_timeout_idle_timeout_headers_and_connections() {
    let echo = echo_server().await;
    let limits = Limits {
        connect_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(400),
        max_connections: 2,
        ..Limits::default()
    };
    let slow = support::start_proxy_with(
        allow(vec![EgressRule::host("allowed.test", [])]),
        names(&["allowed.test"]),
        limits.clone(),
        Some(Arc::new(Blackhole)),
    )
    .await;
    let mut client = Client::connect(slow.addr).await;
    let answer = client.connect_to("allowed.test:443").await;
    assert_eq!(answer.status, 504, "{answer:?}");

    let proxy = start_proxy(
        allow(vec![EgressRule::host("allowed.test", [])]),
        names(&["allowed.test"]),
        limits,
    )
    .await;
    // An idle tunnel is closed.
    let mut idle = Client::connect(proxy.addr).await;
    assert_eq!(
        idle.connect_to(&format!("allowed.test:{echo}"))
            .await
            .status,
        200
    );
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.reader.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");

    // Two connections held open, the third is answered 503.
    let mut first = Client::connect(proxy.addr).await;
    assert_eq!(
        first
            .connect_to(&format!("allowed.test:{echo}"))
            .await
            .status,
        200
    );
    let mut second = Client::connect(proxy.addr).await;
    assert_eq!(
        second
            .connect_to(&format!("allowed.test:{echo}"))
            .await
            .status,
        200
    );
    let mut third = Client::connect(proxy.addr).await;
    assert_eq!(third.answer(false).await.status, 503);
    drop((first, second));

    // A head over the limit is answered 431 (hyper's own answer).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut client = Client::connect(proxy.addr).await;
    let big = "x".repeat(20 * 1024);
    client
        .reader
        .get_mut()
        .write_all(format!("GET http://allowed.test/ HTTP/1.1\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = client.answer(false).await;
    assert_eq!(answer.status, 431);

    let bad = Limits {
        max_header_bytes: 100,
        ..Limits::default()
    };
    let err = bad.check().unwrap_err();
    assert!(err.starts_with("max_header_bytes"), "{err}");
}
