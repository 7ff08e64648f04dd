//! Benchmark 4: listing thousands of pods page by page through `KubernetesOrchestrator` on the
//! fake API server. The listing runs in a child process (this binary's hidden `__k8s-list`
//! mode) so that its peak RSS (`VmHWM`) and CPU time are the client's alone: the fake server
//! and its store stay in the parent. Memory must not grow with the total (one page at a time):
//! a small and a large namespace are compared.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ObjectList, PostParams};
use mcp_k8s::KubernetesOrchestrator;
use mcp_k8s_fake::FakeKubeServer;
use mcp_k8s_resources::BuildOptions;
use mcp_orchestrator_api::McpOrchestrator;
use mcp_orchestrator_api::fixture::FixtureScript;
use mcp_types::{InstanceFilters, InstanceId, K8sConfig, McpServer, Timestamp, new_instance_name};
use serde::{Deserialize, Serialize};

use crate::logs::as_f64;
use crate::machine::{cpu_time, peak_rss};
use crate::report::{Row, spread};
use crate::stats::{Samples, Target, bytes, number};

/// The hidden subcommand of the child.
pub(crate) const CHILD_COMMAND: &str = "__k8s-list";
/// Concurrent creates while filling the fake.
const CREATE_CONCURRENCY: usize = 32;
/// How long the decode+map measurement runs at least, per decoder, in rounds that alternate
/// between the two decoders (so both see the same machine).
const DECODE_FOR: Duration = Duration::from_millis(500);
const DECODE_ROUNDS: u32 = 5;

/// What the child reports (one JSON line on stdout).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildReport {
    pub(crate) pods: u64,
    pub(crate) pages: u64,
    pub(crate) wall_s: f64,
    pub(crate) cpu_s: f64,
    pub(crate) rss_before: u64,
    pub(crate) rss_after: u64,
    pub(crate) decode_map_pods_per_s: f64,
    /// The same page through `mcp_k8s::decode_page` (the lean decode `list_instances` uses).
    pub(crate) lean_decode_map_pods_per_s: f64,
    /// The same page only parsed, nothing kept (`serde::de::IgnoredAny`): the floor of any
    /// decode of the JSON the server sends.
    #[serde(default)]
    pub(crate) scan_pods_per_s: f64,
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListSizes {
    pub(crate) small: usize,
    pub(crate) large: usize,
    pub(crate) page: u32,
    pub(crate) reps: usize,
}

/// Fills two namespaces of a fresh fake with `small` and `large` instance pods, lists each
/// `reps` times (interleaved) in a child process, and reports rates and memory growth.
pub(crate) async fn list(exe: &Path, sizes: ListSizes) -> Result<(Vec<Row>, String)> {
    let server = FakeKubeServer::try_start()
        .await
        .context("starting the fake API server")?;
    let result = async {
        let client = server.try_client().await.context("fake client")?;
        let filling = Instant::now();
        for (ns, n) in [("bench-small", sizes.small), ("bench-large", sizes.large)] {
            fill(&client, ns, n).await?;
        }
        settle(
            &server,
            &[("bench-small", sizes.small), ("bench-large", sizes.large)],
        )
        .await?;
        let filled = filling.elapsed();
        let mut reports: [Vec<ChildReport>; 2] = [Vec::new(), Vec::new()];
        let namespaces = [("bench-small", sizes.small), ("bench-large", sizes.large)];
        for rep in 0..=sizes.reps {
            for k in 0..2 {
                let i = (rep + k) % 2;
                let (ns, n) = namespaces[i];
                let report = run_child(exe, server.url(), ns, sizes.page, n).await?;
                if rep > 0 {
                    reports[i].push(report);
                }
            }
        }
        Ok::<_, anyhow::Error>((reports, filled))
    }
    .await;
    server.shutdown().await;
    let (reports, filled) = result?;
    let [small, large] = reports;
    let rows = rows(&small, &large, sizes);
    let mut peak = Samples::new();
    for c in &large {
        peak.push(as_f64(c.rss_after));
    }
    let note = format!(
        "k8s list: {} + {} pods created through the client and Running in {:.1} s; client \
         peak RSS after listing {} pods: {} (median); pages per list: {}",
        sizes.small,
        sizes.large,
        filled.as_secs_f64(),
        sizes.large,
        bytes(peak.median()),
        large.first().map_or(0, |c| c.pages)
    );
    Ok((rows, note))
}

/// The rows of benchmark 4 from the children's reports.
fn rows(small: &[ChildReport], large: &[ChildReport], sizes: ListSizes) -> Vec<Row> {
    let growth = |r: &[ChildReport]| {
        let mut s = Samples::new();
        for c in r {
            s.push(as_f64(c.rss_after.saturating_sub(c.rss_before)));
        }
        s
    };
    let (gs, gl) = (growth(small), growth(large));
    let mem_ratio = gl.pairs_with(&gs, |l, s| l / s.max(1.0));
    let e2e = field(large, |c| as_f64(c.pods) / c.wall_s);
    let cpu_rate = field(large, |c| as_f64(c.pods) / c.cpu_s.max(1e-9));
    let page = sizes.page;
    let mut rows = vec![
        Row {
            bench: "4 k8s list".to_owned(),
            metric: format!(
                "client peak-RSS growth, {} vs {} pods (page {page})",
                sizes.large, sizes.small
            ),
            ours: format!(
                "{} ({}-{})",
                bytes(gl.median()),
                bytes(gl.min()),
                bytes(gl.max())
            ),
            baseline: format!(
                "{} ({}-{})",
                bytes(gs.median()),
                bytes(gs.min()),
                bytes(gs.max())
            ),
            value: mem_ratio.median(),
            shown: format!(
                "{}x ({}-{})",
                number(mem_ratio.median()),
                number(mem_ratio.min()),
                number(mem_ratio.max())
            ),
            target: Target::AtMost(1.2),
        },
        Row {
            bench: "4 k8s list".to_owned(),
            metric: format!(
                "list_instances of {} pods, pods per client CPU-second",
                sizes.large
            ),
            ours: spread(&cpu_rate, "pods/s"),
            baseline: "-".to_owned(),
            value: cpu_rate.median(),
            shown: format!("{} pods/s", number(cpu_rate.median())),
            target: Target::Info,
        },
        Row {
            bench: "4 k8s list".to_owned(),
            metric: format!(
                "list_instances of {} pods, wall clock (includes the fake server)",
                sizes.large
            ),
            ours: spread(&e2e, "pods/s"),
            baseline: "-".to_owned(),
            value: e2e.median(),
            shown: format!("{} pods/s", number(e2e.median())),
            target: Target::Info,
        },
    ];
    rows.splice(1..1, decode_rows(large, page));
    rows.retain(|r| r.value.is_finite() || r.target != Target::Info);
    rows
}

/// One figure of every child's report.
fn field(r: &[ChildReport], f: fn(&ChildReport) -> f64) -> Samples {
    let mut s = Samples::new();
    for c in r {
        s.push(f(c));
    }
    s
}

/// The decode+map rows: the whole pod, the lean decode against it, and the parse-only ceiling.
fn decode_rows(large: &[ChildReport], page: u32) -> Vec<Row> {
    let decode = field(large, |c| c.decode_map_pods_per_s);
    let lean = field(large, |c| c.lean_decode_map_pods_per_s);
    let (lean_ratio, lean_shown) = crate::report::ratio(&lean, &decode);
    let scan = field(large, |c| c.scan_pods_per_s);
    let (scan_ratio, scan_shown) = crate::report::ratio(&scan, &decode);
    vec![
        Row {
            bench: "4 k8s list".to_owned(),
            metric: format!("decode+map of a {page}-pod page (ObjectList<Pod> -> Instance)"),
            ours: spread(&decode, "pods/s"),
            baseline: "-".to_owned(),
            value: decode.median(),
            shown: format!("{} pods/s", number(decode.median())),
            target: Target::AtLeast(50_000.0),
        },
        Row {
            bench: "4 k8s list".to_owned(),
            metric: format!(
                "lean decode+map of a {page}-pod page (`decode_page`, what list_instances runs) \
                 vs ObjectList<Pod> -> Instance"
            ),
            ours: spread(&lean, "pods/s"),
            baseline: spread(&decode, "pods/s"),
            value: lean_ratio,
            shown: lean_shown,
            target: Target::AtLeast(3.0),
        },
        Row {
            bench: "4 k8s list".to_owned(),
            metric: format!(
                "ceiling: only parsing the {page}-pod page (serde IgnoredAny, nothing kept) vs \
                 ObjectList<Pod> -> Instance"
            ),
            ours: spread(&scan, "pods/s"),
            baseline: spread(&decode, "pods/s"),
            value: scan_ratio,
            shown: scan_shown,
            target: Target::Info,
        },
    ]
}

/// Creates `n` instance pods (the Pod `mcp-k8s` would create for a fixture server) in `ns`.
async fn fill(client: &kube::Client, ns: &str, n: usize) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut spec = McpServer::new("bench", "mcp-test-server:test");
    spec.args = FixtureScript::new().to_args();
    let options = BuildOptions::new(ns, Timestamp::now());
    let results = futures::stream::iter((0..n).map(|_| {
        let pods = pods.clone();
        let id = InstanceId::new(new_instance_name("bench"));
        let pod = mcp_k8s_resources::build_pod(&spec, &id, &options);
        async move {
            let pod = pod.map_err(|e| anyhow::anyhow!("building a pod: {e}"))?;
            pods.create(&PostParams::default(), &pod)
                .await
                .context("creating a pod")?;
            Ok::<_, anyhow::Error>(())
        }
    }))
    .buffer_unordered(CREATE_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(())
}

/// Waits until every pod runs, so that no update lands in the middle of a paged list.
async fn settle(server: &FakeKubeServer, namespaces: &[(&str, usize)]) -> Result<()> {
    let handle = server.handle();
    let deadline = Instant::now() + Duration::from_secs(300);
    for (ns, n) in namespaces {
        loop {
            let running = handle
                .list::<Pod>(Some(ns))
                .iter()
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .is_some_and(|phase| phase == "Running")
                })
                .count();
            if running == *n {
                break;
            }
            if Instant::now() > deadline {
                bail!("k8s list: only {running} of {n} pods in {ns} are Running after 300 s");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

async fn run_child(exe: &Path, url: &str, ns: &str, page: u32, n: usize) -> Result<ChildReport> {
    let out = tokio::process::Command::new(exe)
        .args([CHILD_COMMAND, url, ns, &page.to_string(), &n.to_string()])
        .kill_on_drop(true)
        .output()
        .await
        .context("running the list child")?;
    if !out.status.success() {
        bail!(
            "the list child failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("the list child printed {text:?}"))
}

/// The child: lists namespace `ns` of the API server at `url` in pages of `page`, checks it
/// saw `expect` instances, measures decode+map on one page, and prints a [`ChildReport`].
pub(crate) fn child(args: &[String]) -> Result<()> {
    let [url, ns, page, expect] = args else {
        bail!("usage: mcp-bench {CHILD_COMMAND} URL NAMESPACE PAGE EXPECT");
    };
    let page: u32 = page.parse().context("page size")?;
    let expect: u64 = expect.parse().context("expected count")?;
    // One thread: the peak RSS is then the client's working set, not per-thread arenas.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    let report = runtime.block_on(child_list(url, ns, page, expect))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn child_list(url: &str, ns: &str, page: u32, expect: u64) -> Result<ChildReport> {
    let mut config = kube::Config::new(url.parse().context("url")?);
    config.default_namespace = ns.to_owned();
    let client = kube::Client::try_from(config).context("kube client")?;
    let orchestrator = KubernetesOrchestrator::with_client(
        client.clone(),
        K8sConfig {
            namespace: ns.to_owned(),
            ..K8sConfig::default()
        },
    )
    .context("orchestrator")?;
    // Warm up the connection and the code paths before the baseline of memory and CPU.
    orchestrator
        .list_instances(&InstanceFilters {
            limit: Some(1),
            ..InstanceFilters::default()
        })
        .await
        .context("warm-up list")?;
    let rss_before = peak_rss().context("VmHWM")?;
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut filters = InstanceFilters {
        limit: Some(page),
        ..InstanceFilters::default()
    };
    let (mut pods, mut pages) = (0u64, 0u64);
    loop {
        let listed = orchestrator
            .list_instances(&filters)
            .await
            .context("list_instances")?;
        pods += listed.items.len() as u64;
        pages += 1;
        match listed.continue_token {
            Some(token) => filters.continue_token = Some(token),
            None => break,
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_s = cpu_time().saturating_sub(cpu_before).as_secs_f64();
    let rss_after = peak_rss().context("VmHWM")?;
    if pods != expect {
        bail!("listed {pods} instances in {ns}, expected {expect}");
    }

    // Decode + map alone, on one page as the server sends it.
    let selector = "mcpctl.io%2Fmanaged%3Dtrue";
    let request = http::Request::get(format!(
        "/api/v1/namespaces/{ns}/pods?limit={page}&labelSelector={selector}"
    ))
    .body(Vec::new())
    .context("request")?;
    let text = client.request_text(request).await.context("raw page")?;
    let whole = || -> Result<u64> {
        let list: ObjectList<Pod> = serde_json::from_str(&text).context("decoding a page")?;
        Ok(list.items.iter().filter_map(mcp_k8s::pod_instance).count() as u64)
    };
    let lean = || -> Result<u64> {
        let page = mcp_k8s::decode_page(&text).context("lean decoding of a page")?;
        Ok(page.items.len() as u64)
    };
    let count = whole()?;
    let scan = || -> Result<u64> {
        serde_json::from_str::<serde::de::IgnoredAny>(&text).context("parsing a page")?;
        Ok(count)
    };
    if whole()? != lean()? || whole()? == 0 {
        bail!("the whole and the lean decode disagree on the page's instance count");
    }
    let (mut whole_rate, mut lean_rate, mut scan_rate) =
        (Samples::new(), Samples::new(), Samples::new());
    for _ in 0..DECODE_ROUNDS {
        whole_rate.push(decode_rate(&whole)?);
        lean_rate.push(decode_rate(&lean)?);
        scan_rate.push(decode_rate(&scan)?);
    }
    let decode_map_pods_per_s = whole_rate.median();
    let lean_decode_map_pods_per_s = lean_rate.median();
    Ok(ChildReport {
        pods,
        pages,
        wall_s,
        cpu_s,
        rss_before,
        rss_after,
        decode_map_pods_per_s,
        lean_decode_map_pods_per_s,
        scan_pods_per_s: scan_rate.median(),
    })
}

/// Pods per second of one decoder, run for `DECODE_FOR / DECODE_ROUNDS` (at least 3 pages).
fn decode_rate(decode: &impl Fn() -> Result<u64>) -> Result<f64> {
    let (mut decoded, mut iterations) = (0u64, 0u32);
    let started = Instant::now();
    while started.elapsed() < DECODE_FOR / DECODE_ROUNDS || iterations < 3 {
        decoded += decode()?;
        iterations += 1;
    }
    Ok(as_f64(decoded) / started.elapsed().as_secs_f64())
}
