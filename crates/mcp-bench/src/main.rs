//! `mcp-bench`: the benchmarks behind `cargo xtask bench`. Each one runs our code and its
//! baseline in the same run, interleaved, and reports ratios with their targets; a missed
//! target is reported, never an error. Errors (a failed request, a count mismatch, anything
//! left running) exit non-zero.
//!
//! ```text
//! mcp-bench [--smoke] [--footprint] [--only a,b] [--write docs/BENCHMARKS.md]
//! ```

mod chart;
mod docker;
mod docker_env;
mod docker_ready;
mod footprint;
mod gateway;
mod gateway_peers;
mod k8s;
mod k8s_ready;
mod logs;
mod machine;
mod process;
mod ready;
mod report;
mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::docker_env::DockerEnv;
use crate::k8s::ListSizes;
use crate::machine::Machine;
use crate::report::Report;

/// Every benchmark, in the order they run.
const BENCHMARKS: &[(&str, &str)] = &[
    (
        "process",
        "5: process backend spawn-to-Running vs raw tokio spawn",
    ),
    (
        "ready",
        "7: process backend start to MCP-ready (stdio, HTTP) vs raw spawn + same client",
    ),
    (
        "gateway",
        "9: tools/call through the gateway vs mcp-proxy, the server's own HTTP, direct stdio",
    ),
    (
        "k8s-ready",
        "10: Kubernetes (fake API server) start to MCP-ready (stdio, HTTP) vs a pod created directly",
    ),
    (
        "k8s-list",
        "4: list pods page by page on the fake API server (memory, pods/s)",
    ),
    (
        "docker-start",
        "1: Docker start-to-Running vs raw bollard and `docker run -d`",
    ),
    (
        "docker-burst",
        "2: concurrent Docker starts then stops vs raw bollard",
    ),
    (
        "docker-ready",
        "8: Docker start to MCP-ready (stdio, HTTP, a burst) vs raw bollard + same client",
    ),
    ("logs", "3: follow a large Docker log vs `docker logs -f`"),
    (
        "docker-list",
        "4: list Docker containers vs `docker ps --filter label=`",
    ),
    (
        "footprint",
        "6: mcp-orch binary size per backend, clean build time (--footprint builds)",
    ),
];

/// The chart written next to the report (`docs/benchmarks.svg`).
const CHART_FILE: &str = "benchmarks.svg";

/// What the analysis section of `docs/BENCHMARKS.md` says (kept next to the code it explains).
const ANALYSIS: &str = include_str!("analysis.md");

#[derive(Debug, Parser)]
#[command(
    name = "mcp-bench",
    about = "Side-by-side benchmarks of the MCP orchestrators"
)]
struct Cli {
    /// Tiny sizes and one or two repetitions: proves every benchmark works.
    #[arg(long)]
    smoke: bool,
    /// Build the release `mcp-orch` binaries and time clean builds (slow); without it the
    /// footprint benchmark only measures binaries built earlier.
    #[arg(long)]
    footprint: bool,
    /// Run only these benchmarks (comma-separated names, see --list).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Print the benchmark names and exit.
    #[arg(long)]
    list: bool,
    /// Write the Markdown report here (e.g. docs/BENCHMARKS.md).
    #[arg(long)]
    write: Option<PathBuf>,
    /// The workspace root (for footprint builds and the commit id).
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// Override the log volume of benchmark 3, in MB.
    #[arg(long)]
    log_mb: Option<u64>,
    /// `mcp-proxy` from its own venv (benchmark 9's baseline (a)); without it those rows are
    /// skipped with a note.
    #[arg(long)]
    mcp_proxy: Option<PathBuf>,
    /// A Python with the MCP SDK 2.x, for benchmark 9's Python-client row.
    #[arg(long)]
    python: Option<PathBuf>,
    /// `mcp-orch` (default: next to this binary), whose `serve` benchmark 9 measures.
    #[arg(long)]
    mcp_orch: Option<PathBuf>,
    /// How the run was invoked, for the report.
    #[arg(long, default_value = "cargo xtask bench")]
    command: String,
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    start_reps: usize,
    burst: usize,
    burst_reps: usize,
    log_bytes: u64,
    log_reps: usize,
    k8s: ListSizes,
    docker_list: usize,
    docker_list_reps: usize,
    process_reps: usize,
    gateway: gateway::Sizes,
}

impl Sizes {
    fn full() -> Self {
        Self {
            start_reps: 10,
            burst: 50,
            burst_reps: 3,
            log_bytes: 100_000_000,
            log_reps: 3,
            k8s: ListSizes {
                small: 2_000,
                large: 10_000,
                page: 500,
                reps: 3,
            },
            docker_list: 200,
            docker_list_reps: 5,
            process_reps: 20,
            gateway: gateway::Sizes::full(),
        }
    }

    fn smoke() -> Self {
        Self {
            start_reps: 2,
            burst: 3,
            burst_reps: 1,
            log_bytes: 1_000_000,
            log_reps: 1,
            k8s: ListSizes {
                small: 200,
                large: 1_000,
                page: 100,
                reps: 1,
            },
            docker_list: 5,
            docker_list_reps: 1,
            process_reps: 2,
            gateway: gateway::Sizes::smoke(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "sizes: docker start {} reps; burst {} containers x {} reps; logs {} MB x {} reps; \
             k8s list {} vs {} pods, page {}, {} reps; docker list {} containers x {} reps; \
             process {} reps (each after one unmeasured warm-up round, except the burst)",
            self.start_reps,
            self.burst,
            self.burst_reps,
            self.log_bytes / 1_000_000,
            self.log_reps,
            self.k8s.small,
            self.k8s.large,
            self.k8s.page,
            self.k8s.reps,
            self.docker_list,
            self.docker_list_reps,
            self.process_reps
        )
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some(k8s::CHILD_COMMAND) {
        k8s::child(&args[1..])
    } else {
        let cli = Cli::parse();
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("tokio runtime")
            .and_then(|rt| rt.block_on(run(cli)))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    if cli.list {
        for (name, what) in BENCHMARKS {
            println!("{name:14} {what}");
        }
        return Ok(());
    }
    if let Some(unknown) = cli
        .only
        .iter()
        .find(|o| !BENCHMARKS.iter().any(|(n, _)| n == o))
    {
        bail!("unknown benchmark {unknown:?} (see --list)");
    }
    let selected = |name: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == name);
    let workspace = cli.workspace.clone().unwrap_or_else(default_workspace);
    let mut sizes = if cli.smoke {
        Sizes::smoke()
    } else {
        Sizes::full()
    };
    if let Some(mb) = cli.log_mb {
        sizes.log_bytes = mb * 1_000_000;
    }
    let started = Instant::now();
    let mut machine = Machine::probe(&workspace);
    println!("mcp-bench on\n{}", machine.text());
    let mut report = Report::default();
    report.notes.push(sizes.describe());
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_millisecond()
    );
    let exe = std::env::current_exe().context("current executable")?;

    let needs_server = selected("process")
        || selected("ready")
        || selected("gateway")
        || selected("k8s-ready")
        || selected("docker-start")
        || selected("logs");
    let server = if needs_server {
        Some(
            tokio::task::spawn_blocking(mcp_test_server::static_binary)
                .await
                .context("building the test server")??,
        )
    } else {
        None
    };

    if selected("process")
        && let Some(server) = &server
    {
        step(&mut report, "process");
        let (rows, note) = process::spawn_to_running(server, sizes.process_reps).await?;
        report.rows.extend(rows);
        report.notes.push(note);
    }
    if selected("ready")
        && let Some(server) = &server
    {
        step(&mut report, "ready");
        let (rows, note) = ready::process_ready(server, sizes.process_reps).await?;
        report.rows.extend(rows);
        report.notes.push(note);
        report
            .rows
            .extend(ready::process_ready_burst(server, sizes.burst, sizes.burst_reps).await?);
    }
    if selected("gateway")
        && let Some(server) = &server
    {
        gateway_part(&cli, &exe, server, sizes.gateway, &mut report).await?;
    }
    k8s_part(&exe, server.as_deref(), &sizes, &selected, &mut report).await?;
    if let Err(e) = docker_part(&run_id, &sizes, &selected, &mut machine, &mut report).await {
        // The figures measured so far are printed, not lost; the run still fails.
        println!("\nfigures before the error:\n{}\n", report.table());
        return Err(e);
    }
    if selected("footprint") {
        step(&mut report, "footprint");
        let build = cli.footprint && !cli.smoke;
        let (rows, note) = tokio::task::spawn_blocking({
            let workspace = workspace.clone();
            move || footprint::run(&workspace, build)
        })
        .await
        .context("footprint")??;
        report.rows.extend(rows);
        if !note.is_empty() {
            report.notes.push(note);
        }
    }

    machine.load_after = machine::load();
    machine.duration = started.elapsed();
    finish(report, &machine, &cli, &workspace)
}

/// Prints the table and the notes, and writes the report when asked.
fn finish(mut report: Report, machine: &Machine, cli: &Cli, workspace: &Path) -> Result<()> {
    report.notes.push(format!(
        "load average (1 min, {} CPUs) at the start of each benchmark: {}",
        machine.cpus,
        report.loads.join(", ")
    ));
    // Benchmark order in the report; paths relative to the workspace.
    report.rows.sort_by_key(|r| {
        r.bench
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u32>().ok())
    });
    let prefix = format!("{}/", workspace.display());
    for n in &mut report.notes {
        *n = n.replace(&prefix, "");
    }
    println!("\n{}\n", report.table());
    for n in &report.notes {
        println!("note: {n}");
    }
    println!(
        "\n{} figure(s), {} target(s) missed (informational), load {} -> {}, {:.0} s",
        report.rows.len(),
        report.misses(),
        machine.load_before,
        machine.load_after,
        machine.duration.as_secs_f64()
    );
    if let Some(path) = &cli.write {
        let chart = path.with_file_name(CHART_FILE);
        chart::write_svg(&report.rows, &chart)
            .with_context(|| format!("writing {}", chart.display()))?;
        println!("wrote {}", chart.display());
        let doc = report.markdown(machine, &cli.command, ANALYSIS, Some(CHART_FILE));
        std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Benchmark 9 (the gateway).
async fn gateway_part(
    cli: &Cli,
    exe: &Path,
    server: &Path,
    sizes: gateway::Sizes,
    report: &mut Report,
) -> Result<()> {
    step(report, "gateway");
    let programs = gateway_peers::Programs {
        mcp_orch: cli
            .mcp_orch
            .clone()
            .unwrap_or_else(|| exe.with_file_name("mcp-orch")),
        mcp_proxy: cli.mcp_proxy.clone(),
        python: cli.python.clone(),
    };
    report.notes.push(sizes.describe());
    let (rows, notes) = gateway::run(server, &programs, sizes).await?;
    report.rows.extend(rows);
    report.notes.extend(notes);
    Ok(())
}

/// The Kubernetes benchmarks that are selected (on the fake API server).
async fn k8s_part(
    exe: &Path,
    server: Option<&Path>,
    sizes: &Sizes,
    selected: &impl Fn(&str) -> bool,
    report: &mut Report,
) -> Result<()> {
    if selected("k8s-ready")
        && let Some(server) = server
    {
        step(report, "k8s-ready");
        let (rows, note) = k8s_ready::ready(server, sizes.process_reps).await?;
        report.rows.extend(rows);
        report.notes.push(note);
    }
    if selected("k8s-list") {
        step(report, "k8s-list");
        let (rows, note) = k8s::list(exe, sizes.k8s).await?;
        report.rows.extend(rows);
        report.notes.push(note);
    }
    Ok(())
}

/// The Docker benchmarks that are selected, on one environment that is always torn down.
async fn docker_part(
    run_id: &str,
    sizes: &Sizes,
    selected: &impl Fn(&str) -> bool,
    machine: &mut Machine,
    report: &mut Report,
) -> Result<()> {
    let docker_selected = [
        "docker-start",
        "docker-burst",
        "docker-ready",
        "logs",
        "docker-list",
    ]
    .iter()
    .any(|b| selected(b));
    if !docker_selected {
        return Ok(());
    }
    let require = std::env::var("MCPCTL_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let Some(env) = DockerEnv::setup(run_id, require).await? else {
        report.notes.push("docker: skipped (no engine)".to_owned());
        return Ok(());
    };
    machine.docker = format!(
        "{} (storage driver {})",
        env.engine_version, env.storage_driver
    );
    let result = docker_benches(&env, sizes, selected, report).await;
    let teardown = env.teardown().await;
    result?;
    if let Some(note) = teardown? {
        report.notes.push(note);
    }
    report.notes.push(
        "docker: no container of the run was left (asserted after each benchmark and at \
         teardown)"
            .to_owned(),
    );
    Ok(())
}

async fn docker_benches(
    env: &DockerEnv,
    sizes: &Sizes,
    selected: &impl Fn(&str) -> bool,
    report: &mut Report,
) -> Result<()> {
    if selected("docker-start") {
        step(report, "docker-start");
        report
            .rows
            .extend(docker::start_latency(env, sizes.start_reps).await?);
    }
    if selected("docker-burst") {
        step(report, "docker-burst");
        report
            .rows
            .extend(docker::burst(env, sizes.burst, sizes.burst_reps).await?);
    }
    if selected("docker-ready") {
        step(report, "docker-ready");
        report.rows.extend(
            docker_ready::ready(env, sizes.start_reps, sizes.burst, sizes.burst_reps).await?,
        );
    }
    if selected("logs") {
        step(report, "logs");
        let (rows, note) = logs::follow(env, sizes.log_bytes, sizes.log_reps).await?;
        report.rows.extend(rows);
        report.notes.push(note);
    }
    if selected("docker-list") {
        step(report, "docker-list");
        report
            .rows
            .extend(docker::list(env, sizes.docker_list, sizes.docker_list_reps).await?);
    }
    Ok(())
}

/// Announces a benchmark and records the load it starts under.
fn step(report: &mut Report, name: &str) {
    let load = machine::load();
    println!("==> {name} (load {load}) ...");
    let one_minute = load.split_whitespace().next().unwrap_or("?").to_owned();
    report.loads.push(format!("{name} {one_minute}"));
}

/// The workspace this binary was built from.
fn default_workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
