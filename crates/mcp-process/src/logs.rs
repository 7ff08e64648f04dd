//! Reading an instance's log (`logs.jsonl`, one JSON record per line: ts, stream, run,
//! text, plus the rotated `logs.jsonl.N` ... `logs.jsonl.1` before it): the records of the
//! wanted run, oldest file first, through the shared [`LogFilter`] (stream, exact `since`,
//! timestamps, tail after both), and following: polling the file for appended records until
//! the instance finishes, loses its supervisor or is removed. A follower notices a rotation
//! (`logs.jsonl` is another file than the one it holds), reads its file to the end, then the
//! rotated files newer than it, then the new current file, so nothing kept is skipped.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use mcp_orchestrator_api::{LogLines, OrchestratorError, Result};
use mcp_types::{InstanceId, LogFilter, LogLine, LogOptions, TailBuffer, reasons};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::config::ProcessConfig;
use crate::error::{BACKEND, ProcessError};
use crate::files::read_json;
use crate::layout::{InstancePaths, LogRecord, State};
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
    let (lines, current) = {
        let paths = paths.clone();
        tokio::task::spawn_blocking(move || read_existing(&paths, &filter))
            .await
            .map_err(|e| OrchestratorError::backend(BACKEND, e))?
            .map_err(ProcessError::io("reading", &log_path))?
    };
    let head = futures::stream::iter(lines.into_iter().map(Ok));
    if !options.follow || options.previous {
        return Ok(head.boxed());
    }
    let (file, ino) = match current {
        Some(current) => {
            let mut f = tokio::fs::File::from_std(current.file);
            f.seek(std::io::SeekFrom::Start(current.offset))
                .await
                .map_err(ProcessError::io("reading", &log_path))?;
            (Some(f), Some(current.ino))
        }
        None => (None, None),
    };
    let follow = Follow {
        config: config.clone(),
        paths,
        file,
        ino,
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

/// The current log file as the first read left it.
struct CurrentLog {
    /// The open file (it stays the same file if the log is rotated meanwhile).
    file: std::fs::File,
    /// Its inode, to notice a rotation.
    ino: u64,
    /// The offset after its last complete line.
    offset: u64,
}

/// Reads the existing log: the wanted lines (the last `tail` of them) from the rotated files
/// (oldest first) and the current one, and the current file with the offset after its last
/// complete line. The current file is opened first, so a rotation during the read shows up as
/// a rotated file with its inode, which is then not read twice.
fn read_existing(
    paths: &InstancePaths,
    filter: &RunFilter,
) -> std::io::Result<(Vec<LogLine>, Option<CurrentLog>)> {
    let mut out: TailBuffer<LogLine> = filter.lines.tail_buffer();
    let current = match std::fs::File::open(paths.logs()) {
        Ok(f) => {
            let ino = f.metadata()?.ino();
            Some((f, ino))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    for rotated in paths.rotated_logs() {
        let file = match std::fs::File::open(&rotated) {
            Ok(f) => f,
            // Rotated away meanwhile: the oldest kept file was deleted.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if current
            .as_ref()
            .is_some_and(|(_, ino)| file.metadata().is_ok_and(|m| m.ino() == *ino))
        {
            continue;
        }
        read_lines(file, filter, &mut out)?;
    }
    let Some((file, ino)) = current else {
        return Ok((out.into_vec(), None));
    };
    let (file, offset) = read_lines(file, filter, &mut out)?;
    Ok((out.into_vec(), Some(CurrentLog { file, ino, offset })))
}

/// Parses the complete lines of `file` into `out`; returns the file and the offset after the
/// last complete line.
fn read_lines(
    file: std::fs::File,
    filter: &RunFilter,
    out: &mut TailBuffer<LogLine>,
) -> std::io::Result<(std::fs::File, u64)> {
    let mut reader = BufReader::new(file);
    let mut offset = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 || !buf.ends_with(b"\n") {
            break;
        }
        offset += filter.parse(&buf, out) as u64;
    }
    Ok((reader.into_inner(), offset))
}

/// The inode of the file at `path`, if it exists.
fn ino_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// The whole content of `path` (empty when it is gone).
fn read_all(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(bytes)
}

/// A follower: reads what is appended to the log until the instance ends.
struct Follow {
    config: ProcessConfig,
    paths: InstancePaths,
    file: Option<tokio::fs::File>,
    /// The inode of `file`.
    ino: Option<u64>,
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

    /// Reads what was appended to the file held, then, when the log was rotated, the rest of
    /// the held file, the rotated files newer than it and the new current file.
    async fn read_more(&mut self) -> std::io::Result<()> {
        self.read_held().await?;
        let current = ino_of(&self.paths.logs());
        if current.is_none() || current == self.ino {
            return Ok(());
        }
        // Rotated: the supervisor wrote the held file's last line before renaming it.
        self.read_held().await?;
        self.pending.clear();
        let rotated = self.paths.rotated_logs();
        let newer: Vec<PathBuf> = match self.ino {
            // The held file is among the rotated ones: the files after it are newer.
            Some(ino) => match rotated.iter().position(|p| ino_of(p) == Some(ino)) {
                Some(i) => rotated[i + 1..].to_vec(),
                // The held file was deleted already: every kept rotated file is newer.
                None => rotated,
            },
            None => Vec::new(),
        };
        for path in newer {
            let bytes = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_all(&path))
                    .await
                    .map_err(std::io::Error::other)??
            };
            self.filter.parse(&bytes, &mut self.queue);
        }
        match tokio::fs::File::open(self.paths.logs()).await {
            Ok(f) => {
                self.ino = Some(f.metadata().await?.ino());
                self.file = Some(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.file = None;
                self.ino = None;
            }
            Err(e) => return Err(e),
        }
        self.read_held().await
    }

    /// Reads what was appended to the file held.
    async fn read_held(&mut self) -> std::io::Result<()> {
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
        let paths = InstancePaths::new(dir.path());
        let mut text = record(1, Stdout, "a");
        text += &record(1, Stdout, "b");
        text += &record(2, Stdout, "later run");
        std::fs::write(paths.logs(), &text).unwrap();
        let (lines, current) = read_existing(&paths, &with_tail(2)).unwrap();
        let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a", "b"]);
        assert_eq!(current.unwrap().offset, text.len() as u64);
    }

    #[test]
    fn rotated_files_are_read_oldest_first_before_the_current_one() {
        use mcp_types::LogStream::Stdout;
        let dir = tempfile::tempdir().unwrap();
        let paths = InstancePaths::new(dir.path());
        std::fs::write(
            paths.rotated_log(2),
            record(0, Stdout, "r0") + &record(1, Stdout, "a"),
        )
        .unwrap();
        std::fs::write(paths.rotated_log(1), record(1, Stdout, "b")).unwrap();
        std::fs::write(
            paths.logs(),
            record(1, Stdout, "c") + &record(2, Stdout, "x"),
        )
        .unwrap();
        let (lines, _) = read_existing(&paths, &filter(1)).unwrap();
        let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a", "b", "c"]);
        let (lines, _) = read_existing(&paths, &with_tail(2)).unwrap();
        let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["b", "c"]);
        // A gap in the numbering ends the rotated files (.4 without .3 is not read).
        std::fs::write(paths.rotated_log(4), record(1, Stdout, "stray")).unwrap();
        let (lines, _) = read_existing(&paths, &filter(1)).unwrap();
        assert_eq!(lines.len(), 3);
    }
}
