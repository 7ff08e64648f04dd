//! Reading a server's logs through the pod `log` subresource.
//!
//! Kubernetes keeps one log per container in which stdout and stderr are merged, and its API
//! does not say which stream a line came from. Every line is therefore reported as
//! [`LogStream::Stdout`] (as [`mcp_types::LogLine`] documents for backends that cannot tell), and
//! selecting a single stream ([`StreamSelector::Stdout`] or [`StreamSelector::Stderr`]) is refused
//! with `NotSupported` rather than answered with lines that may belong to the other stream.
//!
//! `sinceTime` has one-second precision on the wire (RFC 3339 seconds). The backend always asks
//! for `timestamps=true`, sends `since` rounded *down* to the second, and filters exactly on the
//! client, stripping the timestamps again unless the caller asked for them. `tailLines` counts
//! the lines the server returns, so it is sent only when the server's `since` filter is exact
//! (no `since`, or a whole-second `since`); otherwise the tail is taken on the client after the
//! exact filter. A follow with both a tail and a sub-second `since` reads the existing lines
//! first, then follows from the last of them (skipping the lines it already returned).
//!
//! Which lines are kept and how they are returned is the shared [`LogFilter`] of `mcp-types`.
//!
//! `sinceSeconds` is never sent: it is relative to the server's clock, while `since` is an
//! absolute time, and an absolute `sinceTime` stays the same when a request is retried.

use std::pin::Pin;

use futures::io::AsyncBufReadExt;
use futures::stream::{self, BoxStream};
use futures::{AsyncBufRead, StreamExt};
use jiff::{RoundMode, TimestampRound, Unit};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use mcp_orchestrator_api::{LogLines, OrchestratorError, Result};
use mcp_types::{LogFilter, LogLine, LogOptions, LogStream, StreamSelector, Timestamp};

use crate::error::{BACKEND, Target, idempotent, map_error};

/// What the client does on top of the server's answer.
#[derive(Debug, Clone)]
pub(crate) struct LogPlan {
    /// Sent to the server.
    pub(crate) params: LogParams,
    /// The caller's exact `since`, timestamps on or off, and the lines kept from the end after
    /// filtering when the server cannot count them (`tail`); every stream, as the log is merged.
    pub(crate) filter: LogFilter,
}

/// Refuses stream selections a merged log cannot honour.
///
/// # Errors
/// `NotSupported` for anything but [`StreamSelector::All`].
pub(crate) fn check_stream(selector: StreamSelector) -> Result<()> {
    match selector {
        StreamSelector::All => Ok(()),
        StreamSelector::Stdout | StreamSelector::Stderr => Err(OrchestratorError::NotSupported {
            backend: BACKEND,
            what: format!(
                "selecting the {} stream alone: the container log merges stdout and stderr, \
                 so only StreamSelector::All can be read",
                if selector == StreamSelector::Stdout {
                    "stdout"
                } else {
                    "stderr"
                }
            ),
        }),
    }
}

/// The request to send and the filtering to do for `options` (the follow flag included).
pub(crate) fn plan(options: &LogOptions) -> LogPlan {
    let floor = options.since.map(floor_second);
    let server_since_exact = options.since == floor;
    let filter = options.filter();
    LogPlan {
        params: LogParams {
            container: Some(mcp_k8s_resources::CONTAINER_NAME.to_owned()),
            follow: options.follow,
            previous: options.previous,
            since_time: floor,
            tail_lines: options
                .tail
                .filter(|_| server_since_exact)
                .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            timestamps: true,
            ..LogParams::default()
        },
        filter: LogFilter {
            // Every line is reported as stdout; `check_stream` refuses single streams.
            stream: StreamSelector::All,
            tail: filter.tail.filter(|_| !server_since_exact),
            ..filter
        },
    }
}

/// `ts` rounded down to the whole second (what `sinceTime` can express).
pub(crate) fn floor_second(ts: Timestamp) -> Timestamp {
    ts.round(
        TimestampRound::new()
            .smallest(Unit::Second)
            .mode(RoundMode::Floor),
    )
    .unwrap_or(ts)
}

/// Splits `<RFC 3339 time> <text>` as written with `timestamps=true`. A line without a
/// parseable time keeps all its text.
pub(crate) fn split_timestamp(raw: &str) -> (Option<Timestamp>, &str) {
    raw.split_once(' ')
        .and_then(|(time, text)| time.parse::<Timestamp>().ok().map(|t| (Some(t), text)))
        .unwrap_or((None, raw))
}

impl LogPlan {
    /// The line for one raw line of the answer, or `None` when it is before `since`.
    pub(crate) fn line(&self, raw: &str) -> Option<LogLine> {
        let (time, text) = split_timestamp(raw);
        self.filter.accept(LogStream::Stdout, time, text.to_owned())
    }

    /// Every kept line of a complete (non-follow) answer, the client-side tail applied.
    pub(crate) fn lines(&self, body: &str) -> Vec<LogLine> {
        self.filter.select(body.lines().map(|raw| {
            let (time, text) = split_timestamp(raw);
            (LogStream::Stdout, time, text.to_owned())
        }))
    }

    /// Whether a follow needs the two-step read (a tail the server cannot count).
    pub(crate) fn needs_resume(&self) -> bool {
        self.params.follow && self.filter.tail.is_some()
    }
}

/// Reads the whole answer of a non-follow request.
pub(crate) async fn read_all(pods: &Api<Pod>, id: &str, plan: &LogPlan) -> Result<Vec<LogLine>> {
    let params = LogParams {
        follow: false,
        ..plan.params.clone()
    };
    let target = Target::pod("read logs of pod", id).with_argument("log options");
    let body = idempotent(&target, || Box::pin(pods.logs(id, &params))).await?;
    Ok(plan.lines(&body))
}

/// Follows the log: the existing lines the plan selects, then new lines until the container
/// ends (the server closes the stream then).
pub(crate) async fn follow(pods: Api<Pod>, id: String, plan: LogPlan) -> Result<LogLines> {
    let target = Target::pod("follow logs of pod", &id).with_argument("log options");
    if !plan.needs_resume() {
        let reader = idempotent(&target, || Box::pin(pods.log_stream(&id, &plan.params))).await?;
        let lines = raw_lines(Box::pin(reader), id)
            .filter_map(move |raw| std::future::ready(raw.map(|r| plan.line(&r)).transpose()));
        return Ok(lines.boxed());
    }
    // The tail must count lines after the exact `since` filter, which the server cannot do:
    // read what exists, keep its tail, then follow from the second of its last line on,
    // skipping the lines of that second that were already read.
    let snapshot = LogParams {
        follow: false,
        tail_lines: None,
        ..plan.params.clone()
    };
    let body = idempotent(&target, || Box::pin(pods.logs(&id, &snapshot))).await?;
    let existing = plan.lines(&body);
    let last_time = body
        .lines()
        .filter_map(|l| split_timestamp(l).0)
        .next_back();
    let (resume_from, skip) = match last_time.map(floor_second) {
        Some(second) => {
            let seen = body
                .lines()
                .filter(|l| split_timestamp(l).0.is_some_and(|t| t >= second))
                .count();
            (Some(second), seen)
        }
        None => (plan.params.since_time, 0),
    };
    let params = LogParams {
        since_time: resume_from,
        tail_lines: None,
        ..plan.params.clone()
    };
    let reader = idempotent(&target, || Box::pin(pods.log_stream(&id, &params))).await?;
    let new = raw_lines(Box::pin(reader), id)
        .skip(skip)
        .filter_map(move |raw| std::future::ready(raw.map(|r| plan.line(&r)).transpose()));
    Ok(stream::iter(existing.into_iter().map(Ok))
        .chain(new)
        .boxed())
}

type Reader = Pin<Box<dyn AsyncBufRead + Send>>;

/// The lines of a streamed answer, invalid UTF-8 replaced; a read error ends the stream after
/// being reported.
fn raw_lines(reader: Reader, id: String) -> BoxStream<'static, Result<String>> {
    stream::unfold(Some((reader, id)), |state| async move {
        let (mut reader, id) = state?;
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) => None,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                let line = String::from_utf8_lossy(&buf).into_owned();
                Some((Ok(line), Some((reader, id))))
            }
            Err(e) => {
                let target = Target::pod("follow logs of pod", &id);
                Some((Err(map_error(e, &target)), None))
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn only_all_streams_can_be_read() {
        assert!(check_stream(StreamSelector::All).is_ok());
        for s in [StreamSelector::Stdout, StreamSelector::Stderr] {
            let e = check_stream(s).unwrap_err();
            assert!(matches!(e, OrchestratorError::NotSupported { .. }), "{e:?}");
            assert!(e.to_string().contains("merges stdout and stderr"), "{e}");
        }
    }

    #[rstest]
    // No since: the server counts the tail exactly.
    #[case(None, Some(3), None, Some(3), None)]
    // A whole-second since is exact on the server too.
    #[case(
        Some("2025-01-01T00:00:05Z"),
        Some(3),
        Some("2025-01-01T00:00:05Z"),
        Some(3),
        None
    )]
    // A sub-second since is sent rounded down; the tail moves to the client.
    #[case(
        Some("2025-01-01T00:00:05.7Z"),
        Some(3),
        Some("2025-01-01T00:00:05Z"),
        None,
        Some(3)
    )]
    #[case(
        Some("2025-01-01T00:00:05.7Z"),
        None,
        Some("2025-01-01T00:00:05Z"),
        None,
        None
    )]
    fn plans(
        #[case] since: Option<&str>,
        #[case] tail: Option<u64>,
        #[case] sent_since: Option<&str>,
        #[case] sent_tail: Option<i64>,
        #[case] client_tail: Option<usize>,
    ) {
        let p = plan(&LogOptions {
            since: since.map(ts),
            tail,
            ..LogOptions::default()
        });
        assert_eq!(p.params.since_time, sent_since.map(ts));
        assert_eq!(p.params.tail_lines, sent_tail);
        assert_eq!(p.filter.tail, client_tail);
        assert!(p.params.timestamps, "timestamps are always requested");
        assert_eq!(p.params.container.as_deref(), Some("mcp-server"));
        assert_eq!(p.params.since_seconds, None);
    }

    #[test]
    fn huge_tails_saturate() {
        let p = plan(&LogOptions::tail(u64::MAX));
        assert_eq!(p.params.tail_lines, Some(i64::MAX));
    }

    #[test]
    fn lines_are_filtered_exactly_and_stripped() {
        let body = "2025-01-01T00:00:05.100000000Z early\n\
                    2025-01-01T00:00:05.900000000Z late one\n\
                    2025-01-01T00:00:06Z  indented\n\
                    not a timestamped line\n";
        let p = plan(&LogOptions {
            since: Some(ts("2025-01-01T00:00:05.5Z")),
            ..LogOptions::default()
        });
        let lines = p.lines(body);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["late one", " indented", "not a timestamped line"]);
        assert!(
            lines
                .iter()
                .all(|l| l.timestamp.is_none() && l.stream == LogStream::Stdout)
        );

        let p = plan(&LogOptions {
            since: Some(ts("2025-01-01T00:00:05.5Z")),
            tail: Some(1),
            timestamps: true,
            ..LogOptions::default()
        });
        let lines = p.lines(body);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "not a timestamped line");
        let p = plan(&LogOptions {
            since: Some(ts("2025-01-01T00:00:05.5Z")),
            tail: Some(2),
            timestamps: true,
            ..LogOptions::default()
        });
        let lines = p.lines(body);
        assert_eq!(lines[0].timestamp, Some(ts("2025-01-01T00:00:06Z")));
    }

    #[test]
    fn resume_is_needed_only_for_follow_with_a_client_tail() {
        let since = Some(ts("2025-01-01T00:00:05.5Z"));
        let follow = |tail| LogOptions {
            since,
            tail,
            follow: true,
            ..LogOptions::default()
        };
        assert!(plan(&follow(Some(2))).needs_resume());
        assert!(!plan(&follow(None)).needs_resume());
        assert!(
            !plan(&LogOptions {
                follow: false,
                ..follow(Some(2))
            })
            .needs_resume()
        );
    }

    #[test]
    fn floor_keeps_whole_seconds() {
        assert_eq!(
            floor_second(ts("2025-01-01T00:00:05.999Z")),
            ts("2025-01-01T00:00:05Z")
        );
        assert_eq!(
            floor_second(ts("2025-01-01T00:00:05Z")),
            ts("2025-01-01T00:00:05Z")
        );
    }

    #[tokio::test]
    async fn raw_lines_handle_crlf_invalid_utf8_and_a_missing_final_newline() {
        let data: &[u8] = b"one\r\ntw\xffo\nthree";
        let reader: Reader = Box::pin(futures::io::Cursor::new(data.to_vec()));
        let lines: Vec<String> = raw_lines(reader, "x".into())
            .map(|l| l.unwrap())
            .collect()
            .await;
        assert_eq!(lines, ["one", "tw\u{fffd}o", "three"]);
    }

    #[tokio::test]
    async fn a_broken_stream_ends_with_unavailable() {
        use futures::TryStreamExt;
        let chunks: Vec<std::io::Result<Vec<u8>>> = vec![
            Ok(b"first\n".to_vec()),
            Err(std::io::Error::other("connection reset")),
            Ok(b"never\n".to_vec()),
        ];
        let reader: Reader = Box::pin(stream::iter(chunks).into_async_read());
        let items: Vec<Result<String>> = raw_lines(reader, "x".into()).collect().await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(items[0].as_ref().unwrap(), "first");
        let error = items[1].as_ref().unwrap_err();
        assert!(
            error.is_transient() && error.to_string().contains("connection reset"),
            "{error}"
        );
    }
}
