//! Log retrieval options and log lines.

use std::collections::VecDeque;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        })
    }
}

/// Which streams to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamSelector {
    /// Both, interleaved in time order.
    #[default]
    All,
    /// Only stdout.
    Stdout,
    /// Only stderr.
    Stderr,
}

impl StreamSelector {
    /// Whether lines of `stream` are wanted.
    pub fn includes(self, stream: LogStream) -> bool {
        match self {
            Self::All => true,
            Self::Stdout => stream == LogStream::Stdout,
            Self::Stderr => stream == LogStream::Stderr,
        }
    }
}

/// How to read logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    /// Only the last N lines (of the selected streams) that exist at the time of the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
    /// Only lines written at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// Fill [`LogLine::timestamp`].
    #[serde(default)]
    pub timestamps: bool,
    /// Keep the stream open and yield new lines until the instance stops.
    #[serde(default)]
    pub follow: bool,
    /// Which streams.
    #[serde(default)]
    pub stream: StreamSelector,
    /// The previous run's logs after a restart (where the backend keeps them).
    #[serde(default)]
    pub previous: bool,
}

impl LogOptions {
    /// The last `n` lines.
    pub fn tail(n: u64) -> Self {
        Self {
            tail: Some(n),
            ..Self::default()
        }
    }

    /// Following, from now on plus what exists.
    pub fn follow() -> Self {
        Self {
            follow: true,
            ..Self::default()
        }
    }
}

/// One line of output, without its trailing newline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// Stream of origin (backends that cannot tell report stdout).
    pub stream: LogStream,
    /// When it was written; `Some` exactly when [`LogOptions::timestamps`] was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    /// The text.
    pub text: String,
}

impl LogOptions {
    /// The per-line part of these options (stream, `since`, timestamps, tail) as a filter.
    pub fn filter(&self) -> LogFilter {
        LogFilter::new(self)
    }
}

/// The line semantics of [`LogOptions`], written once for every backend: which lines are
/// kept (stream selection and an exact `since`), how they are returned (timestamps on or off)
/// and how many of the last ones a non-following read returns (`tail`, counted on the kept
/// lines only, so it applies *after* stream selection and `since`).
///
/// A backend feeds it the lines it has in write order: [`LogFilter::accept`] for each line
/// (following reads), or [`LogFilter::select`] / a [`TailBuffer`] for what exists now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Which streams are kept.
    pub stream: StreamSelector,
    /// Lines written before this instant are dropped (compared to the nanosecond).
    pub since: Option<Timestamp>,
    /// Whether returned lines carry their timestamp.
    pub timestamps: bool,
    /// How many of the last kept lines a read of the existing log returns (`None`: all).
    pub tail: Option<usize>,
}

impl LogFilter {
    /// The filter for `options` (`follow` and `previous` choose the source, not the lines).
    pub fn new(options: &LogOptions) -> Self {
        Self {
            stream: options.stream,
            since: options.since,
            timestamps: options.timestamps,
            tail: options
                .tail
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }

    /// Whether a line of `stream` written at `time` is kept. A line whose time the backend
    /// could not read (`None`) passes `since`: dropping it would lose output silently.
    pub fn keeps(&self, stream: LogStream, time: Option<Timestamp>) -> bool {
        self.stream.includes(stream)
            && self
                .since
                .is_none_or(|since| time.is_none_or(|t| t >= since))
    }

    /// The line as returned to the caller: its timestamp kept only when asked for.
    pub fn line(&self, stream: LogStream, time: Option<Timestamp>, text: String) -> LogLine {
        LogLine {
            stream,
            timestamp: if self.timestamps { time } else { None },
            text,
        }
    }

    /// [`LogFilter::line`] for a kept line, `None` for a dropped one.
    pub fn accept(
        &self,
        stream: LogStream,
        time: Option<Timestamp>,
        text: String,
    ) -> Option<LogLine> {
        self.keeps(stream, time)
            .then(|| self.line(stream, time, text))
    }

    /// An empty buffer keeping the last [`LogFilter::tail`] items pushed into it.
    pub fn tail_buffer<T>(&self) -> TailBuffer<T> {
        TailBuffer::new(self.tail)
    }

    /// The lines a non-following read returns from `lines` (in write order, as
    /// `(stream, time, text)`): the kept ones, then the last `tail` of those.
    pub fn select<I>(&self, lines: I) -> Vec<LogLine>
    where
        I: IntoIterator<Item = (LogStream, Option<Timestamp>, String)>,
    {
        let mut out = self.tail_buffer();
        out.extend(
            lines
                .into_iter()
                .filter_map(|(stream, time, text)| self.accept(stream, time, text)),
        );
        out.into_vec()
    }
}

/// Keeps the last `limit` items pushed into it (all of them without a limit), in push order,
/// holding at most `limit` at any time: reading a long log for its tail stays bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailBuffer<T> {
    limit: Option<usize>,
    items: VecDeque<T>,
}

impl<T> TailBuffer<T> {
    /// A buffer keeping the last `limit` items (`None`: every item).
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            items: VecDeque::new(),
        }
    }

    /// Adds an item, dropping the oldest one when the buffer is over its limit.
    pub fn push(&mut self, item: T) {
        if self.limit == Some(0) {
            return;
        }
        self.items.push_back(item);
        if self.limit.is_some_and(|n| self.items.len() > n) {
            self.items.pop_front();
        }
    }

    /// How many items are held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The held items, oldest first.
    pub fn into_vec(self) -> Vec<T> {
        self.items.into()
    }
}

impl<T> Extend<T> for TailBuffer<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for item in iter {
            self.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const T1: &str = "2025-01-01T00:00:01.100000000Z";
    const T2: &str = "2025-01-01T00:00:01.900000000Z";
    const T3: &str = "2025-01-01T00:00:02.500000000Z";
    const T4: &str = "2025-01-01T00:00:03.000000001Z";

    /// stdout and stderr interleaved so that every order of "tail" and "select" differs:
    /// the last two lines of all are stderr, stdout, the last two of stdout are 3 and 4.
    fn log() -> Vec<(LogStream, Option<Timestamp>, String)> {
        use LogStream::{Stderr, Stdout};
        [
            (Stdout, T1, "out-1"),
            (Stderr, T1, "err-1"),
            (Stdout, T2, "out-2"),
            (Stdout, T3, "out-3"),
            (Stderr, T3, "err-2"),
            (Stdout, T4, "out-4"),
        ]
        .into_iter()
        .map(|(s, t, x)| (s, Some(ts(t)), x.to_owned()))
        .collect()
    }

    fn texts(lines: &[LogLine]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[rstest]
    #[case::all(LogOptions::default(), &["out-1", "err-1", "out-2", "out-3", "err-2", "out-4"])]
    #[case::stdout(LogOptions { stream: StreamSelector::Stdout, ..LogOptions::default() }, &["out-1", "out-2", "out-3", "out-4"])]
    #[case::stderr(LogOptions { stream: StreamSelector::Stderr, ..LogOptions::default() }, &["err-1", "err-2"])]
    // Tail first would give the last 3 of all (out-3, err-2, out-4), then out-3, out-4.
    #[case::tail_after_stream(LogOptions { stream: StreamSelector::Stdout, tail: Some(3), ..LogOptions::default() }, &["out-2", "out-3", "out-4"])]
    // Tail first would give out-4 alone, then nothing.
    #[case::tail_after_stream_stderr(LogOptions { stream: StreamSelector::Stderr, tail: Some(1), ..LogOptions::default() }, &["err-2"])]
    // 1.5 s lies between T1 and T2, in the same second: since is exact, not rounded.
    #[case::since_sub_second(LogOptions { since: Some(ts("2025-01-01T00:00:01.5Z")), ..LogOptions::default() }, &["out-2", "out-3", "err-2", "out-4"])]
    #[case::since_is_inclusive(LogOptions { since: Some(ts(T3)), ..LogOptions::default() }, &["out-3", "err-2", "out-4"])]
    #[case::since_one_nanosecond_after(LogOptions { since: Some(ts("2025-01-01T00:00:03.000000002Z")), ..LogOptions::default() }, &[])]
    // Tail first would give err-2 and out-4, then out-4 alone after since and stdout.
    #[case::tail_after_since_and_stream(LogOptions { since: Some(ts("2025-01-01T00:00:01.5Z")), stream: StreamSelector::Stdout, tail: Some(2), ..LogOptions::default() }, &["out-3", "out-4"])]
    #[case::tail_zero(LogOptions::tail(0), &[])]
    #[case::tail_more_than_exist(LogOptions::tail(100), &["out-1", "err-1", "out-2", "out-3", "err-2", "out-4"])]
    #[case::tail_huge(LogOptions::tail(u64::MAX), &["out-1", "err-1", "out-2", "out-3", "err-2", "out-4"])]
    fn select(#[case] options: LogOptions, #[case] want: &[&str]) {
        assert_eq!(texts(&options.filter().select(log())), want);
    }

    #[test]
    fn timestamps_are_kept_only_when_asked_for() {
        let without = LogOptions::default().filter().select(log());
        assert!(without.iter().all(|l| l.timestamp.is_none()));
        let with = LogOptions {
            timestamps: true,
            ..LogOptions::default()
        }
        .filter()
        .select(log());
        assert_eq!(with[0].timestamp, Some(ts(T1)));
        assert_eq!(with[5].timestamp, Some(ts(T4)));
        assert_eq!(with[5].stream, LogStream::Stdout);
    }

    #[test]
    fn undated_lines_pass_since_but_not_stream_selection() {
        let f = LogOptions {
            since: Some(ts(T4)),
            stream: StreamSelector::Stdout,
            ..LogOptions::default()
        }
        .filter();
        assert!(f.keeps(LogStream::Stdout, None));
        assert!(!f.keeps(LogStream::Stderr, None));
        assert!(!f.keeps(LogStream::Stdout, Some(ts(T3))));
        assert_eq!(f.accept(LogStream::Stdout, Some(ts(T3)), "x".into()), None);
        assert_eq!(
            f.accept(LogStream::Stdout, Some(ts(T4)), "x".into()),
            Some(LogLine {
                stream: LogStream::Stdout,
                timestamp: None,
                text: "x".into()
            })
        );
    }

    #[test]
    fn tail_buffer_holds_at_most_its_limit() {
        let mut b = TailBuffer::new(Some(2));
        for i in 0..5 {
            b.push(i);
            assert!(b.len() <= 2);
        }
        assert_eq!(b.into_vec(), [3, 4]);
        let mut none = TailBuffer::new(Some(0));
        none.extend(0..3);
        assert!(none.is_empty());
        let mut all = TailBuffer::new(None);
        all.extend(0..3);
        assert_eq!(all.into_vec(), [0, 1, 2]);
    }
}
