//! The proxy's Kubernetes mode against the fake API server, over real loopback connections:
//! the fake puts pods on 127.79.0.0/16, and each client socket is bound to its pod's address
//! before connecting, so the proxy sees exactly the peer a pod's connection would have. A pod
//! gets its own policy by naming itself as the proxy user, and nobody else's.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use mcp_egress_proxy::{PodPolicy, Proxy, REFUSAL_HEADER, StaticResolver};
use mcp_k8s_fake::{FakeKubeOptions, FakeKubeServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const NS: &str = "mcpctl";
const WAIT: Duration = Duration::from_secs(10);

/// A pod of the fake: `managed` gives it `mcpctl.io/managed=true`, `egress` its annotation.
fn pod(name: &str, managed: bool, egress: Option<&str>) -> Pod {
    let labels =
        managed.then(|| BTreeMap::from([("mcpctl.io/managed".to_owned(), "true".to_owned())]));
    let annotations =
        egress.map(|e| BTreeMap::from([("mcpctl.io/egress".to_owned(), e.to_owned())]));
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels,
            annotations,
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "mcp-server".into(),
                image: Some("mcp-test-server:fixture".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

struct Cluster {
    server: FakeKubeServer,
    pods: Api<Pod>,
}

impl Cluster {
    async fn start() -> Self {
        let server = FakeKubeServer::with_options(FakeKubeOptions {
            pod_network: [127, 79],
            ..FakeKubeOptions::default()
        })
        .await;
        let pods = Api::namespaced(server.client().await, NS);
        Self { server, pods }
    }

    /// Creates the pod and returns its address once the kubelet gave it one.
    async fn run(&self, pod: Pod) -> IpAddr {
        let name = pod.metadata.name.clone().unwrap();
        self.pods
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        let running = self
            .server
            .handle()
            .wait_for_pod(NS, &name, WAIT, |p| {
                p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
            })
            .await
            .expect("the pod gets an address");
        running.status.unwrap().pod_ip.unwrap().parse().unwrap()
    }

    /// How many times the pod was read.
    fn reads_of(&self, name: &str) -> usize {
        let path = format!("/api/v1/namespaces/{NS}/pods/{name}");
        self.server
            .handle()
            .requests()
            .iter()
            .filter(|r| r.method == http::Method::GET && r.path == path)
            .count()
    }
}

/// A TCP echo server standing in for the destination.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    address
}

/// Starts the proxy in Kubernetes mode; `allowed.test` and `other.test` resolve to loopback.
async fn proxy(cluster: &Cluster, ttl: Duration) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let policy = PodPolicy::new(cluster.server.client().await, NS).with_cache_ttl(ttl);
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let resolver = StaticResolver::new([
        ("allowed.test", vec![loopback]),
        ("other.test", vec![loopback]),
    ]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        Proxy::new(Arc::new(policy), Arc::new(resolver)).serve(listener, async {
            let _ = stopped.await;
        }),
    );
    (address, stop)
}

/// What the proxy answered a CONNECT: status, refusal reason, and the tunnel when admitted.
struct Answer {
    status: u16,
    refusal: Option<String>,
    tunnel: Option<TcpStream>,
}

/// Sends `CONNECT target` from `from` (a pod's address) with `user` as the proxy user.
async fn connect(from: IpAddr, proxy: SocketAddr, user: Option<&str>, target: &str) -> Answer {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(user) = user {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
        request.push_str("Proxy-Authorization: Basic ");
        request.push_str(&credentials);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "the proxy closed before answering: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let refusal = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case(REFUSAL_HEADER)
            .then(|| value.trim().to_owned())
    });
    Answer {
        status,
        refusal,
        tunnel: (status == 200).then_some(stream),
    }
}

async fn echoes(mut tunnel: TcpStream) {
    tunnel.write_all(b"ping\n").await.unwrap();
    let mut got = [0u8; 5];
    tokio::time::timeout(WAIT, tunnel.read_exact(&mut got))
        .await
        .expect("the echo in time")
        .unwrap();
    assert_eq!(&got, b"ping\n");
}

#[tokio::test]
async fn each_pod_gets_its_own_policy_and_nobody_elses() {
    let cluster = Cluster::start().await;
    let echo = echo_server().await;
    let port = echo.port();
    let allow = format!(r#"{{"allow":[{{"host":"allowed.test","ports":[{port}]}}]}}"#);
    let a = cluster
        .run(pod("mcp-a-0000000001", true, Some(&allow)))
        .await;
    let b = cluster
        .run(pod("mcp-b-0000000002", true, Some("\"none\"")))
        .await;
    let stray = cluster.run(pod("stray", false, Some("\"open\""))).await;
    let silent = cluster.run(pod("mcp-c-0000000003", true, None)).await;
    assert!(a.is_loopback() && a != b, "{a} {b}");
    let (proxy, _stop) = proxy(&cluster, Duration::from_secs(5)).await;
    let allowed = format!("allowed.test:{port}");

    // Its own policy, from its own address: admitted, and the tunnel carries bytes.
    let answer = connect(a, proxy, Some("mcp-a-0000000001"), &allowed).await;
    assert_eq!(answer.status, 200, "{:?}", answer.refusal);
    echoes(answer.tunnel.unwrap()).await;
    // The policy still decides what it may reach.
    let answer = connect(
        a,
        proxy,
        Some("mcp-a-0000000001"),
        &format!("other.test:{port}"),
    )
    .await;
    assert_eq!(answer.status, 403);
    assert!(answer.refusal.unwrap().contains("host not allowed"));

    // Another pod claiming a's identity is refused, and so is b under its own.
    let answer = connect(b, proxy, Some("mcp-a-0000000001"), &allowed).await;
    assert_eq!(answer.status, 403);
    assert!(
        answer
            .refusal
            .unwrap()
            .contains("does not come from that instance's pod")
    );
    let answer = connect(b, proxy, Some("mcp-b-0000000002"), &allowed).await;
    assert_eq!(answer.status, 403);
    assert!(answer.refusal.unwrap().contains("egress is none"));

    // No user, a user that is no pod name, no such pod, a pod we do not manage, a pod
    // stating no policy.
    let answer = connect(a, proxy, None, &allowed).await;
    assert_eq!(answer.status, 407);
    assert!(answer.refusal.unwrap().contains("name the instance"));
    let answer = connect(a, proxy, Some("Not A Pod"), &allowed).await;
    assert_eq!(answer.status, 407);
    let answer = connect(a, proxy, Some("mcp-gone-0000000009"), &allowed).await;
    assert_eq!(answer.status, 403);
    assert!(answer.refusal.unwrap().contains("no instance of that name"));
    let answer = connect(stray, proxy, Some("stray"), &allowed).await;
    assert_eq!(answer.status, 403);
    assert!(answer.refusal.unwrap().contains("not an instance"));
    let answer = connect(silent, proxy, Some("mcp-c-0000000003"), &allowed).await;
    assert_eq!(answer.status, 403);
    assert!(answer.refusal.unwrap().contains("states no egress policy"));
}

#[tokio::test]
async fn pods_are_read_once_per_ttl_and_a_deleted_pod_loses_its_policy() {
    let cluster = Cluster::start().await;
    let echo = echo_server().await;
    let port = echo.port();
    let allow = format!(r#"{{"allow":[{{"host":"allowed.test","ports":[{port}]}}]}}"#);
    let name = "mcp-d-0000000004";
    let d = cluster.run(pod(name, true, Some(&allow))).await;
    let other = cluster
        .run(pod("mcp-e-0000000005", true, Some("\"open\"")))
        .await;
    let ttl = Duration::from_millis(1500);
    let (proxy, _stop) = proxy(&cluster, ttl).await;
    let allowed = format!("allowed.test:{port}");
    let before = cluster.reads_of(name);
    for _ in 0..3 {
        assert_eq!(connect(d, proxy, Some(name), &allowed).await.status, 200);
    }
    assert_eq!(
        cluster.reads_of(name) - before,
        1,
        "one read serves the TTL"
    );
    // A wrong address within the first second does not read again (no amplification) ...
    assert_eq!(
        connect(other, proxy, Some(name), &allowed).await.status,
        403
    );
    assert_eq!(cluster.reads_of(name) - before, 1);
    // ... and the pod, once gone, is refused after the TTL.
    cluster
        .pods
        .delete(name, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert!(
        cluster
            .server
            .handle()
            .wait_for_pod_gone(NS, name, WAIT)
            .await
    );
    tokio::time::sleep(ttl).await;
    let answer = connect(d, proxy, Some(name), &allowed).await;
    assert_eq!(answer.status, 403);
    assert!(answer.refusal.unwrap().contains("no instance of that name"));
}
