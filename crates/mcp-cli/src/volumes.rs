//! `mcp-orch volumes ls|rm` and `mcp-orch gc`: the trait's volume and orphan calls, printed.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use mcp_factory::mcp_orchestrator_api::{McpOrchestrator, OrchestratorError};
use mcp_factory::mcp_types::{GcReport, InstanceId, PersistentVolume};

use crate::cli::{Output, VolumesAction};
use crate::output;

pub(crate) async fn volumes(action: VolumesAction, o: &dyn McpOrchestrator) -> Result<ExitCode> {
    match action {
        VolumesAction::Ls { server, output } => {
            let listed = o.list_volumes(server.as_deref()).await?;
            match output {
                Output::Table => print!("{}", volume_table(&listed)),
                format => println!("{}", output::structured(&listed, format)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        VolumesAction::Rm { names } => {
            let mut failed = false;
            for name in &names {
                match o.remove_volume(name).await {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        failed = true;
                        eprintln!("error: {}", rm_error(name, &e));
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn rm_error(name: &str, e: &OrchestratorError) -> String {
    match e {
        OrchestratorError::NotFound { .. } => {
            format!("volume {name:?} not found (see `mcp-orch volumes ls`)")
        }
        other => other.to_string(),
    }
}

pub(crate) async fn gc(dry_run: bool, format: Output, o: &dyn McpOrchestrator) -> Result<ExitCode> {
    let report = o.collect_garbage(dry_run).await?;
    match format {
        Output::Table => print!("{}", gc_table(&report)),
        format => println!("{}", output::structured(&report, format)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn volume_table(volumes: &[PersistentVolume]) -> String {
    let mut out = String::from("NAME\tSERVER\tVOLUME\tSIZE\tUSED BY\n");
    for v in volumes {
        let users: Vec<&str> = v.in_use_by.iter().map(InstanceId::as_str).collect();
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            v.name,
            v.server,
            v.volume,
            v.size
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string),
            if users.is_empty() {
                "-".to_owned()
            } else {
                users.join(",")
            }
        );
    }
    out
}

fn gc_table(report: &GcReport) -> String {
    if report.orphans.is_empty() {
        return "no orphans\n".to_owned();
    }
    let mut out = String::from("KIND\tNAME\tREASON\tACTION\n");
    for orphan in &report.orphans {
        let action = if report.dry_run {
            "would remove"
        } else if orphan.removed {
            "removed"
        } else {
            "kept"
        };
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{action}",
            orphan.kind, orphan.name, orphan.reason
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_factory::mcp_types::OrphanKind;

    #[test]
    fn tables_show_users_and_actions() {
        let v = PersistentVolume {
            name: "mcp-cache-data".into(),
            server: "cache".into(),
            volume: "data".into(),
            size: Some(mcp_factory::mcp_types::Quantity::parse("1Gi").unwrap()),
            in_use_by: vec![
                InstanceId::new("mcp-cache-a"),
                InstanceId::new("mcp-cache-b"),
            ],
            created_at: None,
            details: std::collections::BTreeMap::default(),
        };
        assert_eq!(
            volume_table(&[v]),
            "NAME\tSERVER\tVOLUME\tSIZE\tUSED BY\nmcp-cache-data\tcache\tdata\t1Gi\tmcp-cache-a,mcp-cache-b\n"
        );
        let mut report = GcReport::new(true);
        report.push(
            OrphanKind::Network,
            "net",
            "no container is attached to it",
            true,
        );
        assert!(gc_table(&report).contains("net\tno container is attached to it\twould remove"));
        assert_eq!(gc_table(&GcReport::new(false)), "no orphans\n");
    }
}
