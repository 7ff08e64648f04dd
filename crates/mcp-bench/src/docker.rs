//! Benchmarks 1, 2 and 4b: Docker start-to-Running latency, a burst of concurrent starts and
//! stops, and listing many containers, each against the engine's own cost.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use mcp_orchestrator_api::fixture::FixtureScript;
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorExt};
use mcp_types::{InstanceFilters, LabelSelector, StartOptions};

use crate::docker_env::DockerEnv;
use crate::report::{Row, timing_row};
use crate::stats::{Samples, Target};

/// How long any one instance may take to reach Running.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(120);
/// Grace period of the stops in the burst (the test server exits on SIGTERM at once).
const GRACE: Duration = Duration::from_secs(10);

/// The three ways of starting a container that benchmark 1 compares.
#[derive(Debug, Clone, Copy)]
enum Starter {
    Ours,
    Raw,
    Cli,
}

/// Benchmark 1: `start_server` + `wait_until_running` vs raw create+start of the same body vs
/// `docker run -d` with the same options. One warm-up round, then `reps` interleaved rounds.
pub(crate) async fn start_latency(env: &DockerEnv, reps: usize) -> Result<Vec<Row>> {
    let spec = env.spec(&FixtureScript::new());
    let starters = [Starter::Ours, Starter::Raw, Starter::Cli];
    let mut samples = [Samples::new(), Samples::new(), Samples::new()];
    for rep in 0..=reps {
        for k in 0..starters.len() {
            let i = (rep + k) % starters.len();
            let started = Instant::now();
            let id = match starters[i] {
                Starter::Ours => {
                    let id = env
                        .orchestrator
                        .start_server(&spec, &StartOptions::default())
                        .await
                        .context("start_server")?;
                    env.orchestrator
                        .wait_until_running(&id, RUNNING_TIMEOUT)
                        .await
                        .context("wait_until_running")?;
                    id.to_string()
                }
                Starter::Raw => {
                    let (id, body) = env.plan(&spec)?;
                    env.raw_start(&id, body).await?;
                    id
                }
                Starter::Cli => {
                    let (id, body) = env.plan(&spec)?;
                    env.cli_run(&id, &body).await?;
                    id
                }
            };
            let elapsed = started.elapsed();
            if rep > 0 {
                samples[i].push_duration(elapsed);
            }
            env.remove(&id).await?;
        }
    }
    env.assert_clean("docker start").await?;
    let [ours, raw, cli] = samples;
    Ok(vec![
        timing_row(
            "1 docker start",
            "start_server+Running vs raw bollard create+start",
            &ours,
            &raw,
            Target::AtMost(1.10),
        ),
        timing_row(
            "1 docker start",
            "start_server+Running vs `docker run -d`",
            &ours,
            &cli,
            Target::AtMost(0.80),
        ),
        timing_row(
            "1 docker start",
            "floor: raw bollard create+start vs `docker run -d`",
            &raw,
            &cli,
            Target::Info,
        ),
    ])
}

/// Benchmark 2: `n` concurrent starts (to Running), then `n` concurrent stops, vs the same
/// with raw bollard calls; nothing may be left after either.
pub(crate) async fn burst(env: &DockerEnv, n: usize, reps: usize) -> Result<Vec<Row>> {
    let spec = env.spec(&FixtureScript::new());
    // [ours, raw] x [start phase, stop phase, total]
    let mut start = [Samples::new(), Samples::new()];
    let mut stop = [Samples::new(), Samples::new()];
    let mut total = [Samples::new(), Samples::new()];
    for rep in 0..reps {
        for k in 0..2 {
            let i = (rep + k) % 2;
            let (up, down) = if i == 0 {
                burst_ours(env, &spec, n).await?
            } else {
                burst_raw(env, &spec, n).await?
            };
            env.assert_clean("docker burst").await?;
            start[i].push_duration(up);
            stop[i].push_duration(down);
            total[i].push_duration(up + down);
        }
    }
    let metric = |what: &str| format!("{n} concurrent {what} vs raw bollard");
    Ok(vec![
        timing_row(
            "2 docker burst",
            &metric("starts + stops (total)"),
            &total[0],
            &total[1],
            Target::AtMost(1.25),
        ),
        timing_row(
            "2 docker burst",
            &metric("starts (to Running)"),
            &start[0],
            &start[1],
            Target::AtMost(1.25),
        ),
        timing_row(
            "2 docker burst",
            &metric("stops (and removal)"),
            &stop[0],
            &stop[1],
            Target::AtMost(1.25),
        ),
    ])
}

async fn burst_ours(
    env: &DockerEnv,
    spec: &mcp_types::McpServer,
    n: usize,
) -> Result<(Duration, Duration)> {
    let o = &env.orchestrator;
    let started = Instant::now();
    let ids = futures::future::join_all((0..n).map(|_| async {
        let id = o.start_server(spec, &StartOptions::default()).await?;
        o.wait_until_running(&id, RUNNING_TIMEOUT).await?;
        Ok::<_, mcp_orchestrator_api::OrchestratorError>(id)
    }))
    .await;
    let up = started.elapsed();
    let ids = collect(ids, "burst start_server")?;
    let stopping = Instant::now();
    let stopped = futures::future::join_all(ids.iter().map(|id| o.stop_server(id, GRACE))).await;
    let down = stopping.elapsed();
    collect(stopped, "burst stop_server")?;
    Ok((up, down))
}

async fn burst_raw(
    env: &DockerEnv,
    spec: &mcp_types::McpServer,
    n: usize,
) -> Result<(Duration, Duration)> {
    let plans = (0..n).map(|_| env.plan(spec)).collect::<Result<Vec<_>>>()?;
    let ids: Vec<String> = plans.iter().map(|(id, _)| id.clone()).collect();
    let started = Instant::now();
    let results = futures::future::join_all(
        plans
            .into_iter()
            .map(|(id, body)| async move { env.raw_start(&id, body).await }),
    )
    .await;
    let up = started.elapsed();
    collect(results, "burst raw start")?;
    let stopping = Instant::now();
    let stopped = futures::future::join_all(ids.iter().map(|id| env.raw_stop(id, GRACE))).await;
    let down = stopping.elapsed();
    collect(stopped, "burst raw stop")?;
    Ok((up, down))
}

/// Every value, or the first error (with how many failed).
fn collect<T, E>(results: Vec<Result<T, E>>, what: &str) -> Result<Vec<T>>
where
    E: Into<anyhow::Error>,
{
    let failed = results.iter().filter(|r| r.is_err()).count();
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(v) => out.push(v),
            Err(e) => return Err(e.into().context(format!("{what}: {failed} failed"))),
        }
    }
    Ok(out)
}

/// Benchmark 4b: `list_instances` of `n` running containers (selected by the run's label) vs
/// `docker ps -a --filter label=...`; both must see all `n`.
pub(crate) async fn list(env: &DockerEnv, n: usize, reps: usize) -> Result<Vec<Row>> {
    let spec = env.spec(&FixtureScript::new());
    let plans = (0..n)
        .map(|_| env.plan(&spec))
        .collect::<Result<Vec<_>>>()?;
    let created = futures::stream::iter(
        plans
            .into_iter()
            .map(|(id, body)| async move { env.raw_start(&id, body).await }),
    )
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    collect(created, "creating containers to list")?;
    let selector = env.run_selector();
    let filters = InstanceFilters {
        label_selector: Some(LabelSelector::parse(&selector).context("run selector")?),
        ..InstanceFilters::default()
    };
    let label = format!("label={selector}");
    // [ours, docker ps, raw list + inspect 8 at a time (the old design), raw list alone]
    let mut samples = [
        Samples::new(),
        Samples::new(),
        Samples::new(),
        Samples::new(),
    ];
    for rep in 0..=reps {
        for k in 0..samples.len() {
            let i = (rep + k) % samples.len();
            let started = Instant::now();
            let seen = match i {
                0 => env
                    .orchestrator
                    .list_instances(&filters)
                    .await
                    .context("list_instances")?
                    .items
                    .len(),
                1 => DockerEnv::cli_output(&["ps", "-a", "--filter", &label])
                    .await?
                    .lines()
                    .count()
                    .saturating_sub(1),
                2 => raw_list_inspect(env, 8).await?,
                _ => raw_list_inspect(env, 0).await?,
            };
            let elapsed = started.elapsed();
            if rep > 0 {
                samples[i].push_duration(elapsed);
            }
            if seen != n {
                bail!("docker list: saw {seen} containers, expected {n}");
            }
        }
    }
    let left = env.leftovers().await?;
    futures::stream::iter(
        left.iter()
            .map(|name| env.remove(name.trim_start_matches('/'))),
    )
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<Vec<()>>>()?;
    env.assert_clean("docker list").await?;
    let [ours, cli, inspect8, list_only] = samples;
    Ok(vec![
        timing_row(
            "4 docker list",
            &format!("list_instances of {n} vs `docker ps -a --filter label=`"),
            &ours,
            &cli,
            Target::AtMost(1.0),
        ),
        timing_row(
            "4 docker list",
            "list_instances vs one raw bollard list (the floor: what the listing answers from)",
            &ours,
            &list_only,
            Target::Info,
        ),
        timing_row(
            "4 docker list",
            "raw list + inspect each, 8 at a time (the design before the listing answered) vs \
             `docker ps`",
            &inspect8,
            &cli,
            Target::Info,
        ),
    ])
}

/// One labelled list, then an inspect of every container, `concurrency` at a time (none with
/// 0: the list alone). Returns how many containers were listed (and inspected).
async fn raw_list_inspect(env: &DockerEnv, concurrency: usize) -> Result<usize> {
    let filters = std::collections::HashMap::from([(
        "label",
        vec![
            format!("{}=true", mcp_types::labels::MANAGED),
            env.run_selector(),
        ],
    )]);
    let listed = env
        .raw
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .context("raw list")?;
    if concurrency == 0 {
        return Ok(listed.len());
    }
    let inspected = futures::stream::iter(listed.iter().filter_map(|c| c.id.clone()).map(
        |id| async move {
            env.raw
                .inspect_container(&id, None)
                .await
                .with_context(|| format!("raw inspect {id}"))
        },
    ))
    .buffer_unordered(concurrency)
    .collect::<Vec<_>>()
    .await;
    Ok(collect(inspected, "raw inspect")?.len())
}
