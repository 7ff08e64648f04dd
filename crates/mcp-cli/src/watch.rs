//! `mcp-orch ps --watch`: the backend's instance events as they come. Table output prints a
//! header and then one line per change (the current state first, as `Added` lines, then a
//! `-- synced --` line, then changes); JSON prints one event object per line (NDJSON,
//! `{"type":"Added","instance":{...}}` and `{"type":"Synced"}`); YAML one document per event.
//! It runs until interrupted, and fails (exit 1) when the backend ends the stream with an error.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result};
use futures::StreamExt;
use mcp_factory::mcp_orchestrator_api::McpOrchestrator;
use mcp_factory::mcp_types::{InstanceEvent, InstanceFilters};

use crate::cli::Output;

const HEADER: [&str; 7] = [
    "EVENT", "ID", "SERVER", "PHASE", "REASON", "RESTARTS", "EXIT",
];
const WIDTHS: [usize; 6] = [9, 32, 20, 10, 18, 9];

/// One table line (fixed widths: a stream cannot be aligned after the fact).
pub(crate) fn event_line(event: &InstanceEvent) -> String {
    let Some(i) = event.instance() else {
        return "-- synced --".to_owned();
    };
    let exit = i
        .status
        .exit_code
        .or(i.status.last_exit_code)
        .map_or_else(|| "-".to_owned(), |c| c.to_string());
    row(&[
        event.kind().to_string(),
        i.id.to_string(),
        i.server.clone(),
        i.status.phase.to_string(),
        i.status.reason.clone().unwrap_or_else(|| "-".into()),
        i.status.restart_count.to_string(),
        exit,
    ])
}

fn row(cells: &[String; 7]) -> String {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(WIDTHS) {
        // Writing to a String cannot fail.
        let _ = write!(line, "{cell:<width$} ");
    }
    line.push_str(&cells[6]);
    line
}

/// Prints `o`'s events for `filters` until interrupted or the stream fails.
pub(crate) async fn watch(
    o: &dyn McpOrchestrator,
    filters: &InstanceFilters,
    format: Output,
) -> Result<ExitCode> {
    let mut events = o.watch(filters).await?;
    if format == Output::Table {
        print_line(&row(&HEADER.map(str::to_owned)))?;
    }
    while let Some(event) = events.next().await {
        let event = event?;
        let text = match format {
            Output::Table => event_line(&event),
            Output::Json => serde_json::to_string(&event).context("rendering JSON")?,
            Output::Yaml => format!(
                "---\n{}",
                serde_saphyr::to_string(&event)
                    .context("rendering YAML")?
                    .trim_end()
            ),
        };
        print_line(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One line, flushed at once (a pipe would otherwise hold events back).
fn print_line(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mcp_factory::mcp_types::{Instance, InstanceId, InstanceStatus, Phase};

    use super::*;

    #[test]
    fn lines_name_the_event_and_the_status() {
        let mut status = InstanceStatus::phase(Phase::Pending).with_reason("CrashLoopBackOff");
        status.restart_count = 2;
        status.exit_code = Some(3);
        let event = InstanceEvent::Modified(Instance {
            id: InstanceId::new("mcp-a-0123456789"),
            server: "a".into(),
            labels: BTreeMap::new(),
            created_at: None,
            status,
            endpoint: None,
        });
        let line = event_line(&event);
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "Modified",
                "mcp-a-0123456789",
                "a",
                "Pending",
                "CrashLoopBackOff",
                "2",
                "3"
            ]
        );
        assert_eq!(event_line(&InstanceEvent::Synced), "-- synced --");
    }
}
