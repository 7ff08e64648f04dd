//! Benchmark 9: `tools/call` round trips through the MCP gateway (`mcp-orch serve` in front of a
//! stdio server on the process backend) against (a) PyPI's `mcp-proxy` in front of the same
//! server, (b) the server speaking streamable HTTP itself and (c) a direct stdio client, all
//! driven by the same compiled client (rmcp) in the same run, interleaved (the order rotates
//! every repetition). Each answer is checked by content (an `echo` of a text unique to the
//! client and call); a wrong or failed answer is an error.
//!
//! Also in the same run: the client alone (the same rmcp client against a trivial in-process
//! server, and the client's own CPU time while it drives the gateway) to show it is not the
//! bottleneck; the gateway process's RSS while 16 clients send continuously; and the Python SDK
//! client through the gateway and to the server's own HTTP (what users see).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rmcp::RoleClient;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::Peer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::gateway_peers::{Peers, Programs, Way, http_client, rss_bytes};
use crate::report::{Row, timing, timing_row};
use crate::stats::{Samples, Target, bytes, number};

const BENCH: &str = "9 gateway";
/// The Python SDK client's timing loop (`python gateway_bench.py URL CALLS`).
const PY_SCRIPT: &str = include_str!("gateway_bench.py");

/// Sizes of benchmark 9.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// Measured repetitions (after one warm-up).
    pub(crate) reps: usize,
    /// Sequential calls of the one client per repetition.
    pub(crate) calls_one: usize,
    /// Concurrent clients of the throughput runs.
    pub(crate) clients: usize,
    /// Calls each of them makes per repetition.
    pub(crate) calls_each: usize,
    /// How long the clients send continuously while the gateway's RSS is sampled.
    pub(crate) soak: Duration,
    /// Sequential calls of the Python client.
    pub(crate) py_calls: usize,
}

impl Sizes {
    pub(crate) fn full() -> Self {
        Self {
            reps: 5,
            calls_one: 400,
            clients: 16,
            calls_each: 100,
            soak: Duration::from_secs(60),
            py_calls: 300,
        }
    }

    pub(crate) fn smoke() -> Self {
        Self {
            reps: 1,
            calls_one: 30,
            clients: 16,
            calls_each: 5,
            soak: Duration::from_secs(3),
            py_calls: 20,
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "gateway: {} reps of {} sequential calls and of {} clients x {} calls per way; \
             {} s soak; Python client {} calls",
            self.reps,
            self.calls_one,
            self.clients,
            self.calls_each,
            self.soak.as_secs(),
            self.py_calls
        )
    }
}

/// One repetition's figures for one way.
#[derive(Debug, Default, Clone)]
struct Figures {
    p50_one: Samples,
    p99_one: Samples,
    p50_many: Samples,
    p99_many: Samples,
    throughput: Samples,
}

/// Runs benchmark 9.
pub(crate) async fn run(
    server: &Path,
    programs: &Programs,
    sizes: Sizes,
) -> Result<(Vec<Row>, Vec<String>)> {
    let peers = Peers::start(server, programs).await?;
    let outcome = measure(&peers, programs, sizes).await;
    let teardown = peers.teardown().await;
    let (rows, mut notes) = outcome?;
    teardown?;
    notes.push(
        "gateway: no process of the run was left (each process group checked empty, the \
         instance stopped and its directory removed)"
            .to_owned(),
    );
    Ok((rows, notes))
}

#[allow(clippy::too_many_lines)] // the rows in the order the report shows them
async fn measure(
    peers: &Peers,
    programs: &Programs,
    sizes: Sizes,
) -> Result<(Vec<Row>, Vec<String>)> {
    let mut ways = vec![Way::Gateway, Way::Http, Way::Stdio];
    let mut notes = Vec::new();
    if peers.proxy_url.is_some() {
        ways.push(Way::McpProxy);
    } else {
        notes.push(
            "gateway: mcp-proxy rows skipped: no mcp-proxy venv (`cargo xtask bench` creates \
             target/mcp-proxy-venv from xtask/mcp-proxy-requirements.txt)"
                .to_owned(),
        );
    }
    let mut figures: Vec<Figures> = vec![Figures::default(); ways.len()];
    let mut client_cpu = Samples::new();
    for rep in 0..=sizes.reps {
        for k in 0..ways.len() {
            let i = (rep + k) % ways.len();
            let lat = one_client(peers, ways[i], sizes.calls_one, rep).await?;
            if rep > 0 {
                figures[i].p50_one.push(percentile(&lat, 0.50));
                figures[i].p99_one.push(percentile(&lat, 0.99));
            }
        }
        for k in 0..ways.len() {
            let i = (rep + k) % ways.len();
            let cpu_before = own_cpu_seconds();
            let (lat, wall) =
                many_clients(peers, ways[i], sizes.clients, sizes.calls_each, rep).await?;
            let cpu = own_cpu_seconds() - cpu_before;
            if rep > 0 {
                figures[i].p50_many.push(percentile(&lat, 0.50));
                figures[i].p99_many.push(percentile(&lat, 0.99));
                #[allow(clippy::cast_precision_loss)]
                figures[i].throughput.push(lat.len() as f64 / wall);
                if ways[i] == Way::Gateway {
                    client_cpu.push(cpu / wall);
                }
            }
        }
    }
    let at = |w: Way| ways.iter().position(|x| *x == w);
    let g = &figures[at(Way::Gateway).context("gateway way")?];
    let http = &figures[at(Way::Http).context("http way")?];
    let stdio = &figures[at(Way::Stdio).context("stdio way")?];
    let n = sizes.clients;
    let mut rows = vec![timing_row(
        BENCH,
        "tools/call p50, 1 client: gateway (stdio server) vs (b) the server's own HTTP",
        &g.p50_one,
        &http.p50_one,
        Target::AtMost(1.3),
    )];
    let proxy = at(Way::McpProxy).map(|i| &figures[i]);
    if let Some(proxy) = proxy {
        rows.push(timing_row(
            BENCH,
            "tools/call p50, 1 client: gateway vs (a) mcp-proxy, same stdio server",
            &g.p50_one,
            &proxy.p50_one,
            Target::AtMost(0.3),
        ));
        // The floor of that ratio: no HTTP front (ours included) answers faster than the
        // server's own HTTP endpoint, so the gateway's ratio to mcp-proxy cannot go below it.
        rows.push(timing_row(
            BENCH,
            "floor: tools/call p50, 1 client: (b) the server's own HTTP vs (a) mcp-proxy",
            &http.p50_one,
            &proxy.p50_one,
            Target::Info,
        ));
    }
    rows.push(timing_row(
        BENCH,
        "tools/call p99, 1 client: gateway vs (b) the server's own HTTP",
        &g.p99_one,
        &http.p99_one,
        Target::Info,
    ));
    rows.push(timing_row(
        BENCH,
        "tools/call p50, 1 client: gateway vs (c) direct stdio (the HTTP hop's cost)",
        &g.p50_one,
        &stdio.p50_one,
        Target::Info,
    ));
    if let Some(proxy) = proxy {
        rows.push(throughput_row(
            &format!("throughput, {n} clients: gateway vs (a) mcp-proxy"),
            &g.throughput,
            &proxy.throughput,
            Target::AtLeast(5.0),
        ));
        // The ceiling: one stdio session answers one line at a time, so no front of it (ours
        // included) serves more calls per second than 16 tasks on the session itself.
        rows.push(throughput_row(
            &format!("ceiling: throughput, {n} clients: (c) direct stdio vs (a) mcp-proxy"),
            &stdio.throughput,
            &proxy.throughput,
            Target::Info,
        ));
    }
    rows.push(throughput_row(
        &format!("throughput, {n} clients: gateway vs (b) the server's own HTTP"),
        &g.throughput,
        &http.throughput,
        Target::Info,
    ));
    rows.push(throughput_row(
        &format!("throughput, {n} clients: gateway vs (c) direct stdio ({n} tasks, one session)"),
        &g.throughput,
        &stdio.throughput,
        Target::Info,
    ));
    rows.push(timing_row(
        BENCH,
        &format!("tools/call p50, {n} clients: gateway vs (b) the server's own HTTP"),
        &g.p50_many,
        &http.p50_many,
        Target::Info,
    ));
    rows.push(timing_row(
        BENCH,
        &format!("tools/call p99, {n} clients: gateway vs (b) the server's own HTTP"),
        &g.p99_many,
        &http.p99_many,
        Target::Info,
    ));
    if let Some(proxy) = proxy {
        notes.push(format!(
            "gateway: mcp-proxy p50 {} (1 client), {} calls/s ({n} clients); direct stdio p50 \
             {}; {n} clients through the gateway p50 {}",
            timing(&proxy.p50_one),
            number(proxy.throughput.median()),
            timing(&stdio.p50_one),
            timing(&g.p50_many),
        ));
    }

    // The client alone: the same rmcp client and load against a server that costs nothing.
    let alone = client_alone(n, sizes.calls_each * 4).await?;
    rows.push(Row {
        bench: BENCH.to_owned(),
        metric: format!(
            "client alone: rmcp, {n} tasks vs a trivial in-process server, headroom over the \
             gateway's {n}-client throughput"
        ),
        ours: format!("{} calls/s", number(alone)),
        baseline: format!("{} calls/s", number(g.throughput.median())),
        value: alone / g.throughput.median(),
        shown: format!("{}x", number(alone / g.throughput.median())),
        target: Target::Info,
    });
    rows.push(Row {
        bench: BENCH.to_owned(),
        metric: format!(
            "client CPU while {n} clients drive the gateway (cores of {}; the rest is free for \
             the gateway and server)",
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        ),
        ours: format!("{} cores", number(client_cpu.median())),
        baseline: "-".to_owned(),
        value: client_cpu.median(),
        shown: format!(
            "{} ({}-{})",
            number(client_cpu.median()),
            number(client_cpu.min()),
            number(client_cpu.max())
        ),
        target: Target::Info,
    });

    let (rss_row, rss_note) = soak(peers, n, sizes.soak).await?;
    rows.push(rss_row);
    notes.push(rss_note);

    match &programs.python {
        Some(python) => rows.push(python_row(python, peers, sizes.py_calls).await?),
        None => notes.push(
            "gateway: Python-client row skipped: no target/python-tools venv with the MCP SDK"
                .to_owned(),
        ),
    }
    Ok((rows, notes))
}

fn throughput_row(metric: &str, ours: &Samples, base: &Samples, target: Target) -> Row {
    let paired = ours.pairs_with(base, |a, b| a / b);
    Row {
        bench: BENCH.to_owned(),
        metric: metric.to_owned(),
        ours: format!(
            "{} ({}-{}) calls/s",
            number(ours.median()),
            number(ours.min()),
            number(ours.max())
        ),
        baseline: format!(
            "{} ({}-{}) calls/s",
            number(base.median()),
            number(base.min()),
            number(base.max())
        ),
        value: paired.median(),
        shown: format!(
            "{}x ({}-{})",
            number(paired.median()),
            number(paired.min()),
            number(paired.max())
        ),
        target,
    }
}

/// The `q` quantile of latencies (nearest rank), in seconds.
fn percentile(latencies: &[f64], q: f64) -> f64 {
    let mut v = latencies.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// This process's user + system CPU time, in seconds.
fn own_cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    #[allow(clippy::cast_precision_loss)]
    let seconds = t.tv_sec as f64 + t.tv_nsec as f64 / 1e9;
    seconds
}

/// One `echo` whose answer must be exactly `text`; returns its round trip in seconds.
async fn echo(peer: &Peer<RoleClient>, text: String) -> Result<f64> {
    let mut args = serde_json::Map::new();
    args.insert("text".into(), Value::String(text.clone()));
    let started = Instant::now();
    let result: CallToolResult = peer
        .call_tool(CallToolRequestParams::new("echo").with_arguments(args))
        .await
        .context("tools/call echo")?;
    let elapsed = started.elapsed().as_secs_f64();
    let got: String = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    if got != text {
        bail!("wrong answer: asked to echo {text:?}, got {got:?}");
    }
    Ok(elapsed)
}

/// A client session of `way`: a new one per HTTP way (its handshake not timed), the shared
/// session for direct stdio.
async fn session(
    peers: &Peers,
    way: Way,
) -> Result<(
    Peer<RoleClient>,
    Option<rmcp::service::RunningService<RoleClient, ()>>,
)> {
    match peers.url(way) {
        Some(url) => {
            let client = http_client(url).await?;
            Ok((client.peer().clone(), Some(client)))
        }
        None => Ok((peers.stdio_peer(), None)),
    }
}

async fn one_client(peers: &Peers, way: Way, calls: usize, rep: usize) -> Result<Vec<f64>> {
    let (peer, client) = session(peers, way).await?;
    let mut out = Vec::with_capacity(calls);
    for k in 0..calls {
        out.push(
            echo(&peer, format!("{} rep {rep} call {k}", way.name()))
                .await
                .with_context(|| way.name())?,
        );
    }
    if let Some(client) = client {
        let _ = client.cancel().await;
    }
    Ok(out)
}

/// `n` clients (sessions already open) each making `calls` calls at once; all latencies and the
/// wall time from the first call to the last answer.
async fn many_clients(
    peers: &Peers,
    way: Way,
    n: usize,
    calls: usize,
    rep: usize,
) -> Result<(Vec<f64>, f64)> {
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(session(peers, way).await?);
    }
    let started = Instant::now();
    let tasks = sessions.iter().enumerate().map(|(c, (peer, _))| {
        let peer = peer.clone();
        async move {
            let mut out = Vec::with_capacity(calls);
            for k in 0..calls {
                out.push(
                    echo(
                        &peer,
                        format!("{} rep {rep} client {c} call {k}", way.name()),
                    )
                    .await?,
                );
            }
            Ok::<_, anyhow::Error>(out)
        }
    });
    let results = futures::future::join_all(tasks).await;
    let wall = started.elapsed().as_secs_f64();
    for (_, client) in sessions {
        if let Some(client) = client {
            let _ = client.cancel().await;
        }
    }
    let mut all = Vec::with_capacity(n * calls);
    for r in results {
        all.extend(r.with_context(|| way.name())?);
    }
    Ok((all, wall))
}

/// The rmcp client's own ceiling: `n` tasks on one session against a server in this process
/// that answers from a byte pipe with no work (a minimal JSON-RPC loop, not rmcp, so the figure
/// is the client's cost). Returns calls per second.
async fn client_alone(n: usize, calls_each: usize) -> Result<f64> {
    let (client_side, server_side) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(trivial_server(server_side));
    let (read, write) = tokio::io::split(client_side);
    let client = ().serve((read, write)).await.context("client-alone handshake")?;
    let peer = client.peer().clone();
    // Warm-up.
    echo(&peer, "warm-up".into()).await?;
    let started = Instant::now();
    let tasks = (0..n).map(|c| {
        let peer = peer.clone();
        async move {
            for k in 0..calls_each {
                echo(&peer, format!("alone client {c} call {k}")).await?;
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    for r in futures::future::join_all(tasks).await {
        r.context("client alone")?;
    }
    let wall = started.elapsed().as_secs_f64();
    let _ = client.cancel().await;
    server.abort();
    #[allow(clippy::cast_precision_loss)]
    Ok((n * calls_each) as f64 / wall)
}

/// Answers `initialize` and echoes `tools/call`, one JSON line each, nothing else.
async fn trivial_server(io: tokio::io::DuplexStream) -> Result<()> {
    let (read, mut write) = tokio::io::split(io);
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let msg: Value = serde_json::from_str(&line)?;
        let Some(id) = msg.get("id").cloned() else {
            continue;
        };
        let result = match msg.get("method").and_then(Value::as_str) {
            Some("initialize") => json!({
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "trivial", "version": "0"},
            }),
            Some("tools/call") => json!({
                "content": [{"type": "text", "text": msg["params"]["arguments"]["text"]}],
            }),
            _ => json!({}),
        };
        let mut out = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
        out.push('\n');
        write.write_all(out.as_bytes()).await?;
    }
    Ok(())
}

/// `n` clients sending continuously through the gateway for `duration` while the `mcp-orch
/// serve` process's RSS is sampled: the last quarter's peak against the first quarter's.
async fn soak(peers: &Peers, n: usize, duration: Duration) -> Result<(Row, String)> {
    let pid = peers.gateway.pid().context("gateway pid")?;
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let mut clients = Vec::new();
    for c in 0..n {
        let client = http_client(&peers.gateway_url).await?;
        let peer = client.peer().clone();
        clients.push(client);
        let (stop, calls) = (Arc::clone(&stop), Arc::clone(&calls));
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                echo(&peer, format!("soak client {c} call {k}")).await?;
                calls.fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    let interval = (duration / 40).max(Duration::from_millis(100));
    let started = Instant::now();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    while started.elapsed() < duration {
        samples.push((started.elapsed().as_secs_f64(), rss_bytes(pid)?));
        tokio::time::sleep(interval).await;
    }
    samples.push((started.elapsed().as_secs_f64(), rss_bytes(pid)?));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.context("soak client")??;
    }
    for client in clients {
        let _ = client.cancel().await;
    }
    let total = calls.load(Ordering::Relaxed);
    let quarter = (samples.len() / 4).max(1);
    #[allow(clippy::cast_precision_loss)]
    let peak = |s: &[(f64, u64)]| s.iter().map(|x| x.1).max().unwrap_or(0) as f64;
    let first = peak(&samples[..quarter]);
    let last = peak(&samples[samples.len() - quarter..]);
    let overall = peak(&samples);
    #[allow(clippy::cast_precision_loss)]
    let rate = total as f64 / duration.as_secs_f64();
    let row = Row {
        bench: BENCH.to_owned(),
        metric: format!(
            "gateway RSS, {n} clients sending for {} s: last quarter's peak vs first quarter's",
            duration.as_secs()
        ),
        ours: bytes(last),
        baseline: bytes(first),
        value: last / first,
        shown: format!("{}x", number(last / first)),
        target: Target::AtMost(1.1),
    };
    let note = format!(
        "gateway soak: {total} calls in {} s ({} calls/s), RSS of `mcp-orch serve` sampled {} \
         times every {} ms, peak {}",
        number(duration.as_secs_f64()),
        number(rate),
        samples.len(),
        interval.as_millis(),
        bytes(overall)
    );
    Ok((row, note))
}

/// The Python SDK client (what users run) through the gateway vs to the server's own HTTP.
async fn python_row(python: &Path, peers: &Peers, calls: usize) -> Result<Row> {
    let dir = tempfile::tempdir().context("script directory")?;
    let script = dir.path().join("gateway_bench.py");
    std::fs::write(&script, PY_SCRIPT).context("writing the Python script")?;
    let mut ours = Samples::new();
    let mut base = Samples::new();
    for (k, url) in [
        &peers.gateway_url,
        &peers.http_url,
        &peers.http_url,
        &peers.gateway_url,
    ]
    .iter()
    .enumerate()
    {
        let out = tokio::process::Command::new(python)
            .arg(&script)
            .arg(url)
            .arg(calls.to_string())
            .kill_on_drop(true)
            .output()
            .await
            .context("running the Python client")?;
        if !out.status.success() {
            bail!(
                "the Python client failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout).context("the Python client's output")?;
        let lat: Vec<f64> = v["latencies"]
            .as_array()
            .context("latencies")?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        if lat.len() != calls {
            bail!("the Python client made {} calls, not {calls}", lat.len());
        }
        if k == 0 || k == 3 {
            ours.push(percentile(&lat, 0.5));
        } else {
            base.push(percentile(&lat, 0.5));
        }
    }
    Ok(timing_row(
        BENCH,
        "tools/call p50, Python SDK client (what users see): gateway vs (b) the server's own HTTP",
        &ours,
        &base,
        Target::Info,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&v, 0.5) - 50.0).abs() < f64::EPSILON);
        assert!((percentile(&v, 0.99) - 99.0).abs() < f64::EPSILON);
        assert!((percentile(&[3.0], 0.99) - 3.0).abs() < f64::EPSILON);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[tokio::test]
    async fn the_client_alone_runs_against_the_trivial_server() {
        let rate = client_alone(4, 10).await.unwrap();
        assert!(rate > 0.0 && rate.is_finite(), "{rate}");
    }
}
