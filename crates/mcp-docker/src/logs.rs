//! Container logs as [`LogLine`]s: frames from the engine, lines re-assembled per stream,
//! `since`, `tail` and the stream selection applied exactly on the client side, and `follow`
//! continued from where the snapshot ended.
//!
//! Why the client does the work:
//! - the engine's `since` has one-second precision, so the engine is asked for the floor of
//!   `since` (always with timestamps) and the lines are filtered here to the nanosecond;
//! - the engine's `tail` counts log entries of both streams, and a line longer than the
//!   engine's buffer arrives as several entries, so `tail` is computed here on whole, selected
//!   lines (the engine is only asked for a bounded tail that grows until it holds enough);
//! - a line may arrive in several frames, so each stream keeps its own partial line.
//!
//! Follow without `tail` is ONE following request from the floor of `since` (the engine sends
//! what exists, then what comes), filtered here like a snapshot. Follow with `tail` is a
//! snapshot (the lines that exist now, with `tail` applied) followed by a following request
//! that starts at the second of the snapshot's last entry and skips the entries the snapshot
//! already had: the engine's log is append-only and both requests apply the same filter, so
//! the first entries of the second request are exactly those.

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use mcp_orchestrator_api::{LogLines, Result};
use mcp_types::{LogFilter, LogLine, LogOptions, LogStream, StreamSelector, Timestamp};

use crate::error::{Target, map_error};

/// First engine tail asked for when the caller wants the last N lines (grows by 4x).
const MIN_ENGINE_TAIL: u64 = 256;

/// One entry of the engine's log: one frame of the multiplexed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Which stream.
    pub(crate) stream: LogStream,
    /// The engine's timestamp for the entry.
    pub(crate) ts: Option<Timestamp>,
    /// The bytes after the timestamp; a whole line ends with `\n`, a partial one does not.
    pub(crate) content: Bytes,
}

/// Splits a frame written with `timestamps=1` (`2025-01-02T03:04:05.123456789Z text\n`).
/// Frames of other streams (stdin, TTY console) are reported as stdout.
pub(crate) fn parse_frame(out: LogOutput) -> Frame {
    let stream = match out {
        LogOutput::StdErr { .. } => LogStream::Stderr,
        _ => LogStream::Stdout,
    };
    let bytes = out.into_bytes();
    let (ts, content) = match bytes.iter().position(|b| *b == b' ') {
        Some(sp) => match std::str::from_utf8(&bytes[..sp])
            .ok()
            .and_then(|s| s.parse::<Timestamp>().ok())
        {
            Some(ts) => (Some(ts), bytes.slice(sp + 1..)),
            None => (None, bytes),
        },
        None => match std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.trim_end().parse::<Timestamp>().ok())
        {
            // An empty entry: the timestamp alone.
            Some(ts) => (Some(ts), Bytes::new()),
            None => (None, bytes),
        },
    };
    Frame {
        stream,
        ts,
        content,
    }
}

/// A line being assembled: the time of its first piece and its bytes so far.
#[derive(Debug, Default, Clone)]
struct Partial {
    ts: Option<Timestamp>,
    bytes: Vec<u8>,
}

/// Re-assembles lines from frames, one partial line per stream.
#[derive(Debug, Default, Clone)]
pub(crate) struct LineAssembler {
    stdout: Option<Partial>,
    stderr: Option<Partial>,
}

/// A complete line with its engine timestamp (always kept; dropped at output if not wanted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawLine {
    pub(crate) stream: LogStream,
    pub(crate) ts: Option<Timestamp>,
    pub(crate) text: String,
}

impl LineAssembler {
    fn slot(&mut self, stream: LogStream) -> &mut Option<Partial> {
        match stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
        }
    }

    /// Adds a frame, appending the lines it completes to `out`.
    pub(crate) fn push(&mut self, frame: &Frame, out: &mut Vec<RawLine>) {
        let slot = self.slot(frame.stream);
        let mut rest: &[u8] = &frame.content;
        while !rest.is_empty() {
            let partial = slot.get_or_insert_with(|| Partial {
                ts: frame.ts,
                bytes: Vec::new(),
            });
            if let Some(nl) = rest.iter().position(|b| *b == b'\n') {
                partial.bytes.extend_from_slice(&rest[..nl]);
                rest = &rest[nl + 1..];
                if let Some(done) = slot.take() {
                    out.push(finish(frame.stream, done));
                }
            } else {
                partial.bytes.extend_from_slice(rest);
                rest = &[];
            }
        }
    }

    /// Ends both partial lines (the stream is over), appending them to `out`.
    pub(crate) fn flush(&mut self, out: &mut Vec<RawLine>) {
        let mut ends: Vec<RawLine> = [
            (LogStream::Stdout, self.stdout.take()),
            (LogStream::Stderr, self.stderr.take()),
        ]
        .into_iter()
        .filter_map(|(s, p)| p.map(|p| finish(s, p)))
        .collect();
        ends.sort_by_key(|l| l.ts);
        out.extend(ends);
    }
}

fn finish(stream: LogStream, p: Partial) -> RawLine {
    RawLine {
        stream,
        ts: p.ts,
        text: String::from_utf8(p.bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn to_log_line(filter: &LogFilter, line: RawLine) -> LogLine {
    filter.line(line.stream, line.ts, line.text)
}

/// The `since` sent to the engine: the floor of the caller's, in whole seconds.
pub(crate) fn engine_since(since: Option<Timestamp>) -> i32 {
    since.map_or(0, |t| {
        i32::try_from(t.as_second().max(0)).unwrap_or(i32::MAX)
    })
}

/// The engine entries of one non-following request.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) frames: Vec<Frame>,
    /// False when the engine's tail cut entries off the front.
    pub(crate) complete: bool,
}

/// Lines of a snapshot that the caller wants, with `tail` applied, and the assembler holding
/// the partial lines at its end (flushed unless the caller follows).
pub(crate) fn select_lines(
    snapshot: &Snapshot,
    opts: &LogOptions,
    flush: bool,
) -> (Vec<RawLine>, LineAssembler) {
    let mut asm = LineAssembler::default();
    let mut lines = Vec::new();
    for f in &snapshot.frames {
        asm.push(f, &mut lines);
    }
    if flush {
        asm.flush(&mut lines);
    }
    if !snapshot.complete && !lines.is_empty() {
        // The first entry may continue a line that began before the cut.
        lines.remove(0);
    }
    // Lines complete in arrival order; a long line split into entries completes after a line
    // of the other stream that began later. Time order is by the first entry (stable sort).
    lines.sort_by_key(|l| l.ts);
    let filter = opts.filter();
    let mut kept = filter.tail_buffer();
    kept.extend(lines.into_iter().filter(|l| filter.keeps(l.stream, l.ts)));
    let lines = kept.into_vec();
    (lines, asm)
}

/// Where a following request resumes after a snapshot: the engine `since` (whole seconds)
/// and how many of its first entries the snapshot already holds. `None` when the snapshot
/// was cut inside that second, so the count is unknown.
pub(crate) fn resume_point(snapshot: &Snapshot, since: i32) -> Option<(i32, usize)> {
    let Some(last) = snapshot.frames.last() else {
        return Some((since, 0));
    };
    let Some(ts) = last.ts else {
        // Without timestamps only a complete snapshot can be counted.
        return snapshot.complete.then_some((since, snapshot.frames.len()));
    };
    let second = engine_since(Some(ts)).max(since);
    let in_window = |f: &Frame| f.ts.is_none_or(|t| t.as_second() >= i64::from(second));
    if !snapshot.complete && snapshot.frames.first().is_some_and(in_window) {
        return None;
    }
    Some((
        second,
        snapshot.frames.iter().filter(|f| in_window(f)).count(),
    ))
}

/// Engine options for the caller's stream selection.
fn base_options(opts: &LogOptions, since: i32, follow: bool) -> LogsOptionsBuilder {
    LogsOptionsBuilder::new()
        .stdout(opts.stream != StreamSelector::Stderr)
        .stderr(opts.stream != StreamSelector::Stdout)
        .timestamps(true)
        .since(since)
        .follow(follow)
}

/// Reads a container's logs with the semantics of `McpOrchestrator::get_logs`; the caller
/// has checked that the container exists and is managed.
pub(crate) async fn read_logs(
    docker: &Docker,
    id: &str,
    opts: &LogOptions,
    endpoint: &str,
) -> Result<LogLines> {
    let since = engine_since(opts.since);
    let filter = opts.filter();
    if opts.follow && opts.tail.is_none() {
        // Nothing to cut from the end: one request carries the existing lines and the new ones.
        let follow_opts = base_options(opts, since, true).tail("all").build();
        let endpoint = endpoint.to_owned();
        let owned_id = id.to_owned();
        let frames = docker.logs(id, Some(follow_opts)).map(move |r| {
            r.map(parse_frame)
                .map_err(|e| map_error(e, Target::Container(&owned_id), &endpoint))
        });
        return Ok(follow_lines(frames, LineAssembler::default(), filter)
            .map_ok(move |l| to_log_line(&filter, l))
            .boxed());
    }
    let fetch = |engine_tail: Option<u64>| {
        let tail = engine_tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
        let options = base_options(opts, since, false).tail(&tail).build();
        let docker = docker.clone();
        async move {
            let frames: Vec<Frame> = docker
                .logs(id, Some(options))
                .map_ok(parse_frame)
                .try_collect()
                .await
                .map_err(|e| map_error(e, Target::Container(id), endpoint))?;
            let complete =
                engine_tail.is_none_or(|n| u64::try_from(frames.len()).unwrap_or(u64::MAX) < n);
            Ok::<_, mcp_orchestrator_api::OrchestratorError>(Snapshot { frames, complete })
        }
    };

    // The snapshot: everything, or a growing engine tail until it holds the last N lines.
    let mut engine_tail = opts.tail.map(|n| n.saturating_add(1).max(MIN_ENGINE_TAIL));
    let (mut snapshot, mut lines, mut asm) = loop {
        let snapshot = fetch(engine_tail).await?;
        let (lines, asm) = select_lines(&snapshot, opts, !opts.follow);
        let enough = opts
            .tail
            .is_none_or(|n| u64::try_from(lines.len()).unwrap_or(u64::MAX) >= n);
        if snapshot.complete || enough {
            break (snapshot, lines, asm);
        }
        engine_tail = engine_tail.map(|t| t.saturating_mul(4));
    };
    if !opts.follow {
        let head = lines.into_iter().map(move |l| Ok(to_log_line(&filter, l)));
        return Ok(futures::stream::iter(head).boxed());
    }
    let resume = if let Some(r) = resume_point(&snapshot, since) {
        r
    } else {
        // The cut fell inside the last second: take the whole log once to count exactly.
        snapshot = fetch(None).await?;
        (lines, asm) = select_lines(&snapshot, opts, false);
        resume_point(&snapshot, since).unwrap_or((since, snapshot.frames.len()))
    };
    let (resume_since, skip) = resume;
    let follow_opts = base_options(opts, resume_since, true).tail("all").build();
    let endpoint = endpoint.to_owned();
    let owned_id = id.to_owned();
    let frames = docker.logs(id, Some(follow_opts)).skip(skip).map(move |r| {
        r.map(parse_frame)
            .map_err(|e| map_error(e, Target::Container(&owned_id), &endpoint))
    });
    let head = futures::stream::iter(lines.into_iter().map(Ok));
    let tail = follow_lines(frames, asm, filter);
    Ok(head
        .chain(tail)
        .map_ok(move |l| to_log_line(&filter, l))
        .boxed())
}

/// Turns following frames into wanted lines, flushing partial lines when the stream ends.
fn follow_lines(
    frames: impl Stream<Item = Result<Frame>> + Send + 'static,
    asm: LineAssembler,
    filter: LogFilter,
) -> impl Stream<Item = Result<RawLine>> + Send + 'static {
    struct St<S> {
        frames: S,
        asm: LineAssembler,
        ready: std::collections::VecDeque<RawLine>,
        ended: bool,
    }
    let st = St {
        frames: Box::pin(frames),
        asm,
        ready: std::collections::VecDeque::new(),
        ended: false,
    };
    futures::stream::unfold(st, move |mut st| async move {
        loop {
            if let Some(line) = st.ready.pop_front() {
                return Some((Ok(line), st));
            }
            if st.ended {
                return None;
            }
            let mut out = Vec::new();
            match st.frames.next().await {
                Some(Ok(frame)) => st.asm.push(&frame, &mut out),
                Some(Err(e)) => {
                    st.ended = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.asm.flush(&mut out);
                    st.ended = true;
                }
            }
            st.ready
                .extend(out.into_iter().filter(|l| filter.keeps(l.stream, l.ts)));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn frame(stream: LogStream, t: &str, content: &str) -> Frame {
        Frame {
            stream,
            ts: Some(ts(t)),
            content: Bytes::copy_from_slice(content.as_bytes()),
        }
    }

    fn out(s: &str) -> LogOutput {
        LogOutput::StdOut {
            message: Bytes::copy_from_slice(s.as_bytes()),
        }
    }

    fn texts(lines: &[RawLine]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    const A: &str = "2025-01-01T00:00:01.100000000Z";
    const B: &str = "2025-01-01T00:00:01.900000000Z";
    const C: &str = "2025-01-01T00:00:02.500000000Z";
    const D: &str = "2025-01-01T00:00:03.000000001Z";

    #[test]
    fn frames_split_timestamp_and_content() {
        let f = parse_frame(out("2025-01-01T00:00:01.1Z hello world\n"));
        assert_eq!(f.ts, Some(ts("2025-01-01T00:00:01.1Z")));
        assert_eq!(&f.content[..], b"hello world\n");
        let f = parse_frame(LogOutput::StdErr {
            message: Bytes::from_static(b"2025-01-01T00:00:01Z \n"),
        });
        assert_eq!((f.stream, &f.content[..]), (LogStream::Stderr, &b"\n"[..]));
        let f = parse_frame(out("no timestamp here\n"));
        assert_eq!((f.ts, &f.content[..]), (None, &b"no timestamp here\n"[..]));
    }

    #[test]
    fn lines_split_across_frames_keep_their_first_timestamp_per_stream() {
        let mut asm = LineAssembler::default();
        let mut lines = Vec::new();
        for f in [
            frame(LogStream::Stdout, A, "hel"),
            frame(LogStream::Stderr, B, "err "),
            frame(LogStream::Stdout, B, "lo\nwor"),
            frame(LogStream::Stderr, C, "line\n"),
            frame(LogStream::Stdout, C, "ld"),
        ] {
            asm.push(&f, &mut lines);
        }
        assert_eq!(texts(&lines), ["hello", "err line"]);
        assert_eq!(lines[0].ts, Some(ts(A)));
        assert_eq!(lines[1].stream, LogStream::Stderr);
        asm.flush(&mut lines);
        assert_eq!(texts(&lines), ["hello", "err line", "world"]);
        assert_eq!(lines[2].ts, Some(ts(B)));
    }

    #[test]
    fn snapshots_are_in_time_order_of_each_line_start() {
        let snapshot = Snapshot {
            frames: vec![
                frame(LogStream::Stdout, A, "long-"),
                frame(LogStream::Stderr, B, "err\n"),
                frame(LogStream::Stdout, C, "line\n"),
            ],
            complete: true,
        };
        let (lines, _) = select_lines(&snapshot, &LogOptions::default(), true);
        assert_eq!(texts(&lines), ["long-line", "err"]);
    }

    #[test]
    fn empty_lines_and_several_lines_per_frame() {
        let mut asm = LineAssembler::default();
        let mut lines = Vec::new();
        asm.push(&frame(LogStream::Stdout, A, "\n\na\nb\n"), &mut lines);
        asm.flush(&mut lines);
        assert_eq!(texts(&lines), ["", "", "a", "b"]);
    }

    fn snap(complete: bool) -> Snapshot {
        Snapshot {
            frames: vec![
                frame(LogStream::Stdout, A, "one\n"),
                frame(LogStream::Stderr, B, "two\n"),
                frame(LogStream::Stdout, C, "three\n"),
                frame(LogStream::Stdout, D, "four"),
            ],
            complete,
        }
    }

    #[rstest]
    #[case::all(LogOptions::default(), true, &["one", "two", "three", "four"])]
    // The last 3 entries are two (stderr), three, four: a tail taken before the selection
    // would answer ["three", "four"].
    #[case::tail_applies_after_selection(LogOptions { stream: StreamSelector::Stdout, tail: Some(3), ..LogOptions::default() }, true, &["one", "three", "four"])]
    #[case::tail_zero(LogOptions::tail(0), true, &[])]
    #[case::tail_more(LogOptions::tail(9), true, &["one", "two", "three", "four"])]
    #[case::since_is_exact(LogOptions { since: Some(ts("2025-01-01T00:00:01.5Z")), ..LogOptions::default() }, true, &["two", "three", "four"])]
    #[case::since_then_tail(LogOptions { since: Some(ts(B)), tail: Some(1), stream: StreamSelector::Stderr, ..LogOptions::default() }, true, &["two"])]
    #[case::cut_snapshot_drops_first(LogOptions::default(), false, &["two", "three", "four"])]
    #[case::following_keeps_partial(LogOptions::follow(), true, &["one", "two", "three"])]
    fn selection(#[case] opts: LogOptions, #[case] complete: bool, #[case] want: &[&str]) {
        let (lines, _) = select_lines(&snap(complete), &opts, !opts.follow);
        assert_eq!(texts(&lines), want);
    }

    #[test]
    fn resume_point_counts_entries_of_the_last_second() {
        // Last entry at second 3: one entry (D) is in that second.
        assert_eq!(resume_point(&snap(true), 0), Some((1_735_689_603, 1)));
        let mut s = snap(true);
        s.frames.truncate(2);
        // Last entry at second 1: A and B.
        assert_eq!(resume_point(&s, 0), Some((1_735_689_601, 2)));
        // Cut inside that second: unknown.
        s.complete = false;
        assert_eq!(resume_point(&s, 0), None);
        // Empty snapshot: follow from the caller's since.
        assert_eq!(resume_point(&Snapshot::default(), 42), Some((42, 0)));
    }

    #[test]
    fn engine_since_is_the_floor_in_seconds() {
        assert_eq!(engine_since(None), 0);
        assert_eq!(engine_since(Some(ts(B))), 1_735_689_601);
        assert_eq!(engine_since(Some(ts("1960-01-01T00:00:00Z"))), 0);
    }

    #[tokio::test]
    async fn following_flushes_the_last_partial_line_and_filters() {
        let frames = futures::stream::iter(vec![
            Ok(frame(LogStream::Stdout, A, "par")),
            Ok(frame(LogStream::Stderr, B, "skip me\n")),
            Ok(frame(LogStream::Stdout, C, "tial\nlast")),
        ]);
        let opts = LogOptions {
            stream: StreamSelector::Stdout,
            ..LogOptions::follow()
        };
        let lines: Vec<RawLine> = follow_lines(frames, LineAssembler::default(), opts.filter())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(texts(&lines), ["partial", "last"]);
        assert_eq!(lines[0].ts, Some(ts(A)));
    }
}
