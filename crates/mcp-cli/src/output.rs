//! Rendering instances and statuses as tables, JSON or YAML.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use mcp_factory::mcp_types::{Instance, InstanceStatus, Timestamp};
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

/// A `docker ps`-like table.
pub(crate) fn instance_table(items: &[Instance], now: Timestamp) -> String {
    let rows: Vec<[String; 7]> = items
        .iter()
        .map(|i| {
            [
                i.id.to_string(),
                i.server.clone(),
                i.status.phase.to_string(),
                i.status.reason.clone().unwrap_or_else(|| "-".into()),
                i.status.restart_count.to_string(),
                i.created_at.map_or_else(|| "-".into(), |t| age(t, now)),
                i.endpoint.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "ID", "SERVER", "PHASE", "REASON", "RESTARTS", "AGE", "ENDPOINT",
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
