//! Benchmark 3: following the log of a container that printed a large, known volume, through
//! `get_logs(follow)` vs `docker logs -f` on the same container. Both must deliver exactly
//! the lines and bytes the fixture printed.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use mcp_docker::DockerOrchestrator;
use mcp_orchestrator_api::McpOrchestrator;
use mcp_orchestrator_api::fixture::FixtureScript;
use mcp_types::{InstanceId, LogOptions, RestartPolicy};
use tokio::io::AsyncReadExt;

use crate::docker_env::{DockerEnv, unrotated_log};
use crate::report::{Row, spread, timing, timing_row};
use crate::stats::{Samples, Target, number};

/// Length of the line prefix: lines of about 200 bytes, a common size for structured logs.
const PREFIX_LEN: usize = 190;
/// How long the container may take to print everything.
const PRINT_TIMEOUT: Duration = Duration::from_secs(900);

/// Lines and bytes (each line with its `\n`) of one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Volume {
    pub(crate) lines: u64,
    pub(crate) bytes: u64,
}

/// What `fixture --lines count:prefix` prints: `prefix-1` .. `prefix-count`, one per line.
pub(crate) fn expected(prefix_len: usize, count: u64) -> Volume {
    let prefix = prefix_len as u64 + 1; // "prefix-"
    let mut bytes = 0;
    let mut width = 1;
    let mut from = 1u64;
    while from <= count {
        let to = (from.saturating_mul(10) - 1).min(count);
        bytes += (to - from + 1) * (prefix + width + 1);
        from = from.saturating_mul(10);
        width += 1;
    }
    Volume {
        lines: count,
        bytes,
    }
}

/// The line count whose output is closest to (at least) `bytes`.
pub(crate) fn lines_for(bytes: u64, prefix_len: usize) -> u64 {
    // The output grows with the count: the smallest count that reaches `bytes`.
    let (mut lo, mut hi) = (1, bytes.max(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if expected(prefix_len, mid).bytes >= bytes {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Runs the benchmark on about `bytes` of output, `reps` interleaved reads each.
pub(crate) async fn follow(env: &DockerEnv, bytes: u64, reps: usize) -> Result<(Vec<Row>, String)> {
    let count = lines_for(bytes, PREFIX_LEN);
    let want = expected(PREFIX_LEN, count);
    let script = FixtureScript::new()
        .stdout_lines("x".repeat(PREFIX_LEN), count)
        .exit(0);
    let mut spec = env.spec(&script);
    spec.restart_policy = RestartPolicy::Never;
    let (id, mut body) = env.plan(&spec)?;
    unrotated_log(&mut body, want.bytes);
    let printing = Instant::now();
    env.raw_start(&id, body).await?;
    let result = async {
        let code = env.wait_exited(&id, PRINT_TIMEOUT).await?;
        if code != 0 {
            bail!("the log fixture exited with {code}");
        }
        let printed = printing.elapsed();
        let id = InstanceId::new(id.clone());
        let samples = read_all(env, &id, want, reps).await?;
        let [ours, cli, raw, main_thread] = samples;
        Ok((ours, cli, raw, main_thread, printed))
    }
    .await;
    env.remove(&id).await?;
    env.assert_clean("logs").await?;
    let (ours, cli, raw, main_thread, printed) = result?;
    let rows = rows(count, want.bytes, &[ours, cli, raw, main_thread]);
    let note = format!(
        "logs: {count} lines of {} bytes ({} bytes in all) printed in {:.1} s; all readers \
         delivered exactly that many lines and bytes on every repetition",
        PREFIX_LEN + 8,
        want.bytes,
        printed.as_secs_f64()
    );
    Ok((rows, note))
}

/// Reads the log `reps` + 1 times with each reader (the first round is a warm-up), checking
/// every read: [ours, docker logs -f, one raw bollard request, ours on the block_on thread].
async fn read_all(
    env: &DockerEnv,
    id: &InstanceId,
    want: Volume,
    reps: usize,
) -> Result<[Samples; 4]> {
    // [ours, docker logs -f, one raw bollard request, ours on the block_on thread]
    let mut samples = [
        Samples::new(),
        Samples::new(),
        Samples::new(),
        Samples::new(),
    ];
    let names = [
        "get_logs",
        "docker logs -f",
        "raw bollard follow",
        "get_logs on the block_on thread",
    ];
    for rep in 0..=reps {
        for k in 0..samples.len() {
            let i = (rep + k) % samples.len();
            let started = Instant::now();
            // Readers run as spawned tasks, as in a daemon serving logs: on a worker
            // thread, next to the connection task that feeds them.
            let got = match i {
                0 => {
                    let (o, id) = (env.orchestrator.clone(), id.clone());
                    tokio::spawn(async move { read_ours(&o, &id).await }).await??
                }
                1 => read_cli(id.as_str()).await?,
                // As `mcp-orch logs -f` does: the stream polled by the future that the
                // runtime's `block_on` drives, outside the worker threads.
                3 => read_ours(&env.orchestrator, id).await?,
                _ => {
                    let (docker, id) = (env.raw.clone(), id.to_string());
                    tokio::spawn(async move { read_raw(&docker, &id).await }).await??
                }
            };
            let elapsed = started.elapsed();
            if got != want {
                bail!("{} read {got:?}, the fixture printed {want:?}", names[i]);
            }
            if rep > 0 {
                samples[i].push_duration(elapsed);
            }
        }
    }
    Ok(samples)
}

/// The rows from the samples of [`read_all`].
fn rows(count: u64, total: u64, samples: &[Samples; 4]) -> Vec<Row> {
    let [ours, cli, raw, main_thread] = samples;
    let mb = as_f64(total) / 1e6;
    let tput = |s: &Samples| {
        let mut t = Samples::new();
        for secs in s.values() {
            t.push(mb / secs);
        }
        t
    };
    let metric = |vs: &str| {
        format!(
            "follow {} lines / {} MB: throughput vs {vs}",
            number(as_f64(count)),
            number(mb)
        )
    };
    let mut rows = vec![
        timing_row(
            "3 docker logs",
            &metric("`docker logs -f`"),
            &tput(ours),
            &tput(cli),
            Target::Info,
        ),
        timing_row(
            "3 docker logs",
            &metric("one raw bollard follow request (timestamps on)"),
            &tput(ours),
            &tput(raw),
            Target::AtLeast(0.9),
        ),
        timing_row(
            "3 docker logs",
            &metric("`docker logs -f`, stream polled on the block_on thread"),
            &tput(main_thread),
            &tput(cli),
            Target::Info,
        ),
    ];
    for (row, (us, base)) in
        rows.iter_mut()
            .zip([(&ours, &cli), (&ours, &raw), (&main_thread, &cli)])
    {
        row.ours = format!("{} / {}", spread(&tput(us), "MB/s"), timing(us));
        row.baseline = format!("{} / {}", spread(&tput(base), "MB/s"), timing(base));
    }
    rows
}

/// A count as a float, for rates (exact below 2^53, far above any volume here).
#[allow(clippy::cast_precision_loss)]
pub(crate) fn as_f64(n: u64) -> f64 {
    n as f64
}

async fn read_ours(orchestrator: &DockerOrchestrator, id: &InstanceId) -> Result<Volume> {
    let mut stream = orchestrator
        .get_logs(id, &LogOptions::follow())
        .await
        .context("get_logs")?;
    let mut v = Volume { lines: 0, bytes: 0 };
    while let Some(line) = stream.try_next().await.context("log stream")? {
        v.lines += 1;
        v.bytes += line.text.len() as u64 + 1;
    }
    Ok(v)
}

/// The engine's own cost of what `get_logs` must deliver: one following request with
/// timestamps, frames counted (each json-file entry is one line, `<timestamp> <text>\n`).
async fn read_raw(docker: &bollard::Docker, id: &str) -> Result<Volume> {
    let options = bollard::query_parameters::LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .follow(true)
        .tail("all")
        .build();
    let mut frames = docker.logs(id, Some(options));
    let mut v = Volume { lines: 0, bytes: 0 };
    while let Some(frame) = frames.try_next().await.context("raw log stream")? {
        let bytes = frame.into_bytes();
        let text = bytes
            .iter()
            .position(|b| *b == b' ')
            .map_or(&bytes[..], |sp| &bytes[sp + 1..]);
        v.bytes += text.len() as u64;
        #[allow(clippy::naive_bytecount)]
        let lines = text.iter().filter(|b| **b == b'\n').count();
        v.lines += lines as u64;
    }
    Ok(v)
}

async fn read_cli(id: &str) -> Result<Volume> {
    let mut child = tokio::process::Command::new("docker")
        .args(["logs", "-f", id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running docker logs")?;
    let mut stdout = child.stdout.take().context("docker logs stdout")?;
    let mut stderr = child.stderr.take().context("docker logs stderr")?;
    let count = async {
        let mut buf = vec![0u8; 1 << 20];
        let mut v = Volume { lines: 0, bytes: 0 };
        loop {
            let n = stdout.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(v);
            }
            v.bytes += n as u64;
            // A plain count: fast enough next to the pipe, and no extra dependency.
            #[allow(clippy::naive_bytecount)]
            let lines = buf[..n].iter().filter(|b| **b == b'\n').count();
            v.lines += lines as u64;
        }
    };
    let mut err = Vec::new();
    let (v, _) = tokio::try_join!(count, stderr.read_to_end(&mut err))?;
    let status = child.wait().await?;
    if !status.success() || !err.is_empty() {
        bail!(
            "docker logs -f {id}: {status}: {}",
            String::from_utf8_lossy(&err)
        );
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_volume_counts_digits() {
        // "ab-1\n" .. "ab-9\n" = 9 * 5, "ab-10\n" .. "ab-12\n" = 3 * 6
        assert_eq!(
            expected(2, 12),
            Volume {
                lines: 12,
                bytes: 63
            }
        );
        let script = FixtureScript::new().stdout_lines("ab", 12);
        let printed: u64 = script
            .expected_lines()
            .iter()
            .map(|(_, l)| l.len() as u64 + 1)
            .sum();
        assert_eq!(printed, 63);
    }

    #[test]
    fn line_count_reaches_the_volume() {
        let n = lines_for(1_000_000, 190);
        assert!(expected(190, n).bytes >= 1_000_000);
        assert!(expected(190, n - 1).bytes < 1_000_000);
    }
}
