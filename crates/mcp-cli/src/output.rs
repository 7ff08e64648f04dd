//! Rendering instances and statuses as tables, JSON or YAML.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use mcp_factory::mcp_types::{Instance, InstanceStatus, Timestamp};
use mcp_gateway::Probe;
use serde::Serialize;

use crate::cli::Output;
use crate::time::age;

/// Serializes `value` as JSON or YAML.
pub(crate) fn structured<T: Serialize>(value: &T, format: Output) -> Result<String> {
    match format {
        Output::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .context("rendering JSON"),
        Output::Yaml | Output::Table => serde_saphyr::to_string(value).context("rendering YAML"),
    }
}

/// A `docker ps`-like table; `probes[i]` is the live MCP probe of `items[i]` (`None`: not
/// probed, shown as `-`).
pub(crate) fn instance_table(
    items: &[Instance],
    probes: &[Option<Probe>],
    now: Timestamp,
) -> String {
    let rows: Vec<[String; 9]> = items
        .iter()
        .zip(probes.iter().chain(std::iter::repeat(&None)))
        .map(|(i, probe)| {
            let protocol = match probe {
                Some(Probe::Ready(info)) => info.protocol_version.clone(),
                _ => "-".into(),
            };
            [
                i.id.to_string(),
                i.server.clone(),
                i.status.phase.to_string(),
                probe.as_ref().map_or("-", Probe::label).to_owned(),
                protocol,
                i.status.reason.clone().unwrap_or_else(|| "-".into()),
                i.status.restart_count.to_string(),
                i.created_at.map_or_else(|| "-".into(), |t| age(t, now)),
                i.endpoint.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "ID", "SERVER", "PHASE", "READY", "PROTOCOL", "REASON", "RESTARTS", "AGE", "ENDPOINT",
        ],
        &rows,
    )
}

/// Key/value lines for one status.
pub(crate) fn status_lines(id: &str, s: &InstanceStatus, endpoint: Option<&str>) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows = [
        ["ID".to_owned(), id.to_owned()],
        ["PHASE".into(), s.phase.to_string()],
        ["REASON".into(), opt(s.reason.clone())],
        ["MESSAGE".into(), opt(s.message.clone())],
        ["RESTARTS".into(), s.restart_count.to_string()],
        ["EXIT CODE".into(), opt(s.exit_code.map(|c| c.to_string()))],
        ["STARTED".into(), opt(s.started_at.map(|t| t.to_string()))],
        ["FINISHED".into(), opt(s.finished_at.map(|t| t.to_string()))],
        match endpoint {
            Some(url) => ["ENDPOINT".into(), url.to_owned()],
            None => ["CONNECT".into(), format!("mcp-orch attach {id}  (stdio)")],
        },
    ];
    let mut out = String::new();
    for [k, v] in rows {
        let _ = writeln!(out, "{k:<10} {v}");
        // After a restart the current run has no exit code yet; the previous run's follows it.
        if k == "EXIT CODE"
            && let Some(code) = s.last_exit_code
        {
            let _ = writeln!(
                out,
                "{:<10} {code} (the run before the last restart)",
                "LAST EXIT"
            );
        }
    }
    out
}

fn table<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let last = cells.len() - 1;
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                let _ = write!(out, "{cell}");
            } else {
                let _ = write!(out, "{cell:<w$}   ");
            }
        }
        out.push('\n');
    };
    line(&mut out, headers.to_vec());
    for row in rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use mcp_factory::mcp_types::{InstanceStatus, Phase};

    use super::status_lines;

    #[test]
    fn status_shows_the_last_exit_code_after_a_restart() {
        let mut s = InstanceStatus::phase(Phase::Running);
        s.restart_count = 1;
        s.last_exit_code = Some(4);
        let text = status_lines("mcp-x-1", &s, Some("http://127.0.0.1:1/mcp"));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&"EXIT CODE  -"), "{text}");
        assert!(
            lines.contains(&"LAST EXIT  4 (the run before the last restart)"),
            "{text}"
        );
        assert!(
            lines.contains(&"ENDPOINT   http://127.0.0.1:1/mcp"),
            "{text}"
        );
        let first = status_lines("mcp-x-1", &InstanceStatus::phase(Phase::Running), None);
        assert!(!first.contains("LAST EXIT"), "{first}");
    }
}
