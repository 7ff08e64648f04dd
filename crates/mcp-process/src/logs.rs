//! Reading an instance's log (`logs.jsonl`, one JSON record per line: ts, stream, run,
//! text): the records of the wanted run through the shared [`LogFilter`] (stream, exact
//! `since`, timestamps, tail after both), and following: polling the file for appended
//! records until the instance finishes, loses its supervisor or is removed.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use mcp_orchestrator_api::{LogLines, OrchestratorError, Result};
use mcp_types::{InstanceId, LogFilter, LogLine, LogOptions, TailBuffer, reasons};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::config::ProcessConfig;
use crate::error::{BACKEND, ProcessError};
use crate::layout::{InstancePaths, LogRecord, State, read_json};
use crate::status::observe;

/// How often a follower looks at the log again.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Reads the log of instance `id` at `paths` with the semantics of `get_logs`.
pub(crate) async fn read_logs(
    config: &ProcessConfig,
    id: &InstanceId,
    paths: InstancePaths,
    options: &LogOptions,
) -> Result<LogLines> {
    let state: Option<State> =
        read_json(&paths.state()).map_err(ProcessError::io("reading", &paths.state()))?;
    let current = state.map_or(0, |s| s.run);
    let run = if options.previous {
        current
            .checked_sub(1)
            .ok_or_else(|| OrchestratorError::InvalidArgument {
                what: "previous",
                message: format!("instance {id} has no previous run"),
            })?
    } else {
        current
    };
    let filter = RunFilter {
        run,
        later_runs: false,
        lines: options.filter(),
    };
    let log_path = paths.logs();
    let (lines, offset) = {
        let path = log_path.clone();
        tokio::task::spawn_blocking(move || read_existing(&path, &filter))
            .await
            .map_err(|e| OrchestratorError::backend(BACKEND, e))?
            .map_err(ProcessError::io("reading", &log_path))?
    };
    let head = futures::stream::iter(lines.into_iter().map(Ok));
    if !options.follow || options.previous {
        return Ok(head.boxed());
    }
    let file = match tokio::fs::File::open(&log_path).await {
        Ok(mut f) => {
            f.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(ProcessError::io("reading", &log_path))?;
            Some(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(ProcessError::io("opening", &log_path)(e).into()),
    };
    let follow = Follow {
        config: config.clone(),
        paths,
        file,
        pending: Vec::new(),
        queue: VecDeque::new(),
        filter: RunFilter {
            later_runs: true,
            ..filter
        },
        finished: false,
    };
    let tail = futures::stream::unfold(follow, |mut f| async move {
        f.next().await.map(|item| (item, f))
    });
    Ok(head.chain(tail).boxed())
}

/// Which records a reader wants: those of one run (or, when following, of that run and the
/// later ones), through the shared line filter.
#[derive(Debug, Clone, Copy)]
struct RunFilter {
    /// Lines of this run (exactly), or of this run and later ones when following.
    run: u32,
    later_runs: bool,
    /// Stream, `since`, timestamps and tail.
    lines: LogFilter,
}

impl RunFilter {
    fn accept(&self, rec: LogRecord) -> Option<LogLine> {
        let run_ok = if self.later_runs {
            rec.run >= self.run
        } else {
            rec.run == self.run
        };
        run_ok
            .then(|| self.lines.accept(rec.stream, Some(rec.ts), rec.text))
            .flatten()
    }

    /// Parses complete lines of `bytes` into the wanted lines, added to `out`; returns how
    /// many bytes were consumed (an unfinished last line is left for later).
    fn parse(&self, bytes: &[u8], out: &mut impl Extend<LogLine>) -> usize {
        let mut consumed = 0;
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            if !chunk.ends_with(b"\n") {
                break;
            }
            consumed += chunk.len();
            match serde_json::from_slice::<LogRecord>(chunk) {
                Ok(rec) => out.extend(self.accept(rec)),
                Err(e) => tracing::warn!("skipping a malformed log line: {e}"),
            }
        }
        consumed
    }
}

/// Reads the existing log: the wanted lines (the last `tail` of them) and the offset after
/// the last complete line.
fn read_existing(path: &Path, filter: &RunFilter) -> std::io::Result<(Vec<LogLine>, u64)> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    let mut out: TailBuffer<LogLine> = filter.lines.tail_buffer();
    let mut offset = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 || !buf.ends_with(b"\n") {
            break;
        }
        offset += filter.parse(&buf, &mut out) as u64;
    }
    Ok((out.into_vec(), offset))
}

/// A follower: reads what is appended to the log until the instance ends.
struct Follow {
    config: ProcessConfig,
    paths: InstancePaths,
    file: Option<tokio::fs::File>,
    pending: Vec<u8>,
    queue: VecDeque<LogLine>,
    filter: RunFilter,
    finished: bool,
}

impl Follow {
    /// Whether no more lines will come: the instance was removed, finished for good, or lost
    /// its supervisor.
    fn ended(&self) -> bool {
        match observe(&self.paths, &self.config) {
            Ok(obs) => {
                obs.status.phase.is_terminal()
                    || obs.status.reason.as_deref() == Some(reasons::ORPHANED)
            }
            Err(_) => true,
        }
    }

    async fn read_more(&mut self) -> std::io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut chunk = Vec::new();
        file.read_to_end(&mut chunk).await?;
        if chunk.is_empty() {
            return Ok(());
        }
        self.pending.extend_from_slice(&chunk);
        let consumed = self.filter.parse(&self.pending, &mut self.queue);
        self.pending.drain(..consumed);
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<LogLine>> {
        loop {
            if let Some(line) = self.queue.pop_front() {
                return Some(Ok(line));
            }
            if self.finished {
                return None;
            }
            // Decide "ended" before reading, so lines written before the end are still read.
            let ended = self.ended();
            if let Err(e) = self.read_more().await {
                self.finished = true;
                return Some(Err(
                    ProcessError::io("reading", &self.paths.logs())(e).into()
                ));
            }
            if !self.queue.is_empty() {
                continue;
            }
            if ended {
                self.finished = true;
                continue;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_types::{StreamSelector, Timestamp};

    fn filter(run: u32) -> RunFilter {
        RunFilter {
            run,
            later_runs: false,
            lines: LogFilter::default(),
        }
    }

    fn with_tail(tail: usize) -> RunFilter {
        RunFilter {
            lines: LogFilter {
                tail: Some(tail),
                ..LogFilter::default()
            },
            ..filter(1)
        }
    }

    fn record(run: u32, stream: mcp_types::LogStream, text: &str) -> String {
        let mut s = serde_json::to_string(&LogRecord {
            ts: Timestamp::now(),
            stream,
            run,
            text: text.into(),
        })
        .unwrap();
        s.push('\n');
        s
    }

    #[test]
    fn parse_keeps_the_wanted_run_and_stream_and_leaves_partial_lines() {
        use mcp_types::LogStream::{Stderr, Stdout};
        let mut text = record(0, Stdout, "old");
        text += &record(1, Stdout, "a");
        text += &record(1, Stderr, "b");
        text += &record(1, Stdout, "c");
        let partial = &record(1, Stdout, "d")[..10];
        text += partial;
        let mut out = VecDeque::new();
        let consumed = filter(1).parse(text.as_bytes(), &mut out);
        assert_eq!(consumed, text.len() - partial.len());
        let texts: Vec<_> = out.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a", "b", "c"]);
        let mut out = VecDeque::new();
        let f = RunFilter {
            lines: LogFilter {
                stream: StreamSelector::Stderr,
                ..LogFilter::default()
            },
            ..filter(1)
        };
        f.parse(text.as_bytes(), &mut out);
        assert_eq!(out.len(), 1);
        let mut out = with_tail(2).lines.tail_buffer();
        with_tail(2).parse(text.as_bytes(), &mut out);
        let out = out.into_vec();
        let texts: Vec<_> = out.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["b", "c"]);
        let mut out = with_tail(0).lines.tail_buffer();
        with_tail(0).parse(text.as_bytes(), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_tail_counts_the_wanted_run_only() {
        use mcp_types::LogStream::Stdout;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.jsonl");
        let mut text = record(1, Stdout, "a");
        text += &record(1, Stdout, "b");
        text += &record(2, Stdout, "later run");
        std::fs::write(&path, &text).unwrap();
        let (lines, offset) = read_existing(&path, &with_tail(2)).unwrap();
        let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a", "b"]);
        assert_eq!(offset, text.len() as u64);
    }
}
