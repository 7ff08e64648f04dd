//! Kit checks of persistent volumes (`volumes[].persistent`, `list_volumes`, `remove_volume`,
//! and `restart` keeping their data) and of orphan collection (`collect_garbage`), each run
//! as the backend declared on the [`Harness`] ([`Capability::PersistentVolumes`],
//! [`Capability::GarbageCollection`]).

use mcp_types::{
    InstanceId, LogOptions, McpServer, PersistentVolume, VolumeSpec, persistent_volume_name,
};

use super::{Capability, CheckResult, Failure, Harness, Run, Support, idle, op, texts, with_run};
use crate::error::OrchestratorError;
use crate::ext::OrchestratorExt;
use crate::fixture::{FixtureScript, missing_line, write_line};

fn fail(check: &'static str, message: String) -> Failure {
    Failure { check, message }
}

/// Both calls answer `NotSupported` on a backend that declared the capability refused.
async fn refused_volume_calls(h: &Harness<'_>, check: &'static str) -> CheckResult {
    match h.orchestrator.list_volumes(None).await {
        Err(OrchestratorError::NotSupported { .. }) => {}
        other => {
            return Err(fail(
                check,
                format!(
                    "persistent volumes are declared refused: list_volumes gave {other:?}, expected NotSupported"
                ),
            ));
        }
    }
    match h.orchestrator.remove_volume("mcp-ct-none-keep").await {
        Err(OrchestratorError::NotSupported { .. }) => Ok(()),
        other => Err(fail(
            check,
            format!(
                "persistent volumes are declared refused: remove_volume gave {other:?}, expected NotSupported"
            ),
        )),
    }
}

/// The persistent volumes listed for `server`.
async fn volumes_of(
    h: &Harness<'_>,
    check: &'static str,
    server: &str,
) -> Result<Vec<PersistentVolume>, Failure> {
    op(
        check,
        &format!("list the volumes of {server}"),
        h.orchestrator.list_volumes(Some(server)).await,
    )
}

/// Exactly one volume `name` of `server` (spec volume `keep`), mounted by exactly `users`.
async fn expect_listed(
    h: &Harness<'_>,
    check: &'static str,
    server: &str,
    name: &str,
    users: &[&InstanceId],
) -> CheckResult {
    let listed = volumes_of(h, check, server).await?;
    let [v] = listed.as_slice() else {
        return Err(fail(
            check,
            format!("expected exactly the volume {name} for server {server}, got {listed:?}"),
        ));
    };
    let want: Vec<&InstanceId> = users.to_vec();
    let got: Vec<&InstanceId> = v.in_use_by.iter().collect();
    if v.name != name || v.server != server || v.volume != "keep" || got != want {
        return Err(fail(
            check,
            format!(
                "expected volume {name} (server {server}, volume keep) in use by {want:?}, got {v:?}"
            ),
        ));
    }
    Ok(())
}

/// The spec of [`persistent_volumes`]: reads then writes a file on a persistent volume (`keep`)
/// and on a per-instance one (`scratch`), then idles.
fn two_volume_spec(h: &Harness<'_>, server: &str, token: &str) -> Result<McpServer, Failure> {
    const C: &str = "persistent_volumes";
    let (keep, scratch) = (h.mount_path("keep"), h.mount_path("scratch"));
    let (kf, sf) = (format!("{keep}/f"), format!("{scratch}/f"));
    let script = FixtureScript::new()
        .print_file(&kf)
        .print_file(&sf)
        .write_file(&kf, format!("kept-{token}"))
        .write_file(&sf, format!("scratch-{token}"));
    let mut spec = h.servers.server(server, &script);
    let volume = |name: &str, path: String| {
        VolumeSpec::new(name, "16Mi", path).map_err(|e| fail(C, format!("quantity: {e}")))
    };
    spec.volumes = vec![
        volume("keep", keep)?.persistent(),
        volume("scratch", scratch)?,
    ];
    Ok(spec)
}

/// A server with a persistent volume (`keep`) and a per-instance one (`scratch`) writes a file
/// to each; `restart` gives a new instance that finds the persistent file and not the other.
/// While an instance mounts it, the volume is listed as used by it and removing it is refused
/// with [`InUse`](OrchestratorError::InUse) naming the instance; once stopped, it is listed
/// unused, it can be removed, and a second removal is `NotFound`. Malformed arguments are
/// `InvalidArgument`. A backend declaring the capability refused answers `NotSupported`.
pub async fn persistent_volumes(h: &Harness<'_>) -> CheckResult {
    const C: &str = "persistent_volumes";
    match h.support(Capability::PersistentVolumes) {
        None => return Ok(()),
        Some(Support::Refused) => return refused_volume_calls(h, C).await,
        Some(Support::Honoured) => {}
    }
    with_run(h, C, |h, run| async move {
        let server = run.name("volumes");
        let name = persistent_volume_name(&server, "keep");
        let result = persistent_volume_steps(h, &run, &server, &name).await;
        // Instances first (the volume is in use until they are gone), then the volume.
        run.cleanup_now().await;
        match h.orchestrator.remove_volume(&name).await {
            Ok(()) | Err(OrchestratorError::NotFound { .. }) => result,
            Err(e) if result.is_ok() => Err(fail(C, format!("clean-up: remove {name}: {e}"))),
            Err(_) => result,
        }
    })
    .await
}

async fn persistent_volume_steps(
    h: &Harness<'_>,
    run: &Run<'_, '_>,
    server: &str,
    name: &str,
) -> CheckResult {
    const C: &str = "persistent_volumes";
    let token = &run.tag[run.tag.len() - 6..];
    let spec = two_volume_spec(h, server, token)?;
    let (kf, sf) = (
        format!("{}/f", h.mount_path("keep")),
        format!("{}/f", h.mount_path("scratch")),
    );
    let first = run.start_spec(&spec, &[]).await?;
    run.running(&first).await?;
    let lines = run.wait_lines(&first, 4, &LogOptions::default()).await?;
    let want = [
        missing_line(&kf),
        missing_line(&sf),
        write_line(&kf, None),
        write_line(&sf, None),
    ];
    ensure!(
        C,
        texts(&lines) == want,
        "first instance {first}: expected {want:?} (nothing there yet, then both files written), got {:?}",
        texts(&lines)
    );
    expect_listed(h, C, server, name, &[&first]).await?;
    let all = op(
        C,
        "list every volume",
        h.orchestrator.list_volumes(None).await,
    )?;
    ensure!(
        C,
        all.iter().any(|v| v.name == name),
        "{name} is missing from the listing of every server: {all:?}"
    );
    ensure!(
        C,
        all.windows(2).all(|w| w[0].name < w[1].name),
        "the listing is not ordered by name: {:?}",
        all.iter().map(|v| &v.name).collect::<Vec<_>>()
    );
    expect_refused(h, name, &first).await?;
    expect_listed(h, C, server, name, &[&first]).await?;

    let second = op(
        C,
        &format!("restart {first}"),
        h.orchestrator
            .restart(&first, &spec, &run.options(&[]), h.grace)
            .await,
    )?;
    run.forget(&first);
    run.adopt(second.clone());
    ensure!(C, second != first, "restart gave back the old id {first}");
    run.running(&second).await?;
    let lines = run.wait_lines(&second, 4, &LogOptions::default()).await?;
    let want = [
        format!("kept-{token}"),
        missing_line(&sf),
        write_line(&kf, None),
        write_line(&sf, None),
    ];
    ensure!(
        C,
        texts(&lines) == want,
        "restarted instance {second}: expected {want:?} (the persistent file kept, the per-instance one gone), got {:?}",
        texts(&lines)
    );
    expect_listed(h, C, server, name, &[&second]).await?;
    run.stop(&second).await?;
    expect_listed(h, C, server, name, &[]).await?;
    op(
        C,
        &format!("remove {name} once unused"),
        h.orchestrator.remove_volume(name).await,
    )?;
    expect_removed(h, server, name).await
}

/// Removing `name` while `user` mounts it is refused with `InUse` naming `user`.
async fn expect_refused(h: &Harness<'_>, name: &str, first: &InstanceId) -> CheckResult {
    const C: &str = "persistent_volumes";
    match h.orchestrator.remove_volume(name).await {
        Err(e @ OrchestratorError::InUse { .. }) => {
            let OrchestratorError::InUse { users, .. } = &e else {
                unreachable!("matched above")
            };
            ensure!(
                C,
                users == &[first.to_string()] && e.to_string().contains(first.as_str()),
                "the refusal must name the instance {first}: {e} (users {users:?})"
            );
        }
        other => {
            return Err(fail(
                C,
                format!("removing {name} while {first} mounts it: expected InUse, got {other:?}"),
            ));
        }
    }
    Ok(())
}

/// After its removal `name` is no longer listed, a second removal is `NotFound`, and malformed
/// arguments are `InvalidArgument`.
async fn expect_removed(h: &Harness<'_>, server: &str, name: &str) -> CheckResult {
    const C: &str = "persistent_volumes";
    let left = volumes_of(h, C, server).await?;
    ensure!(
        C,
        left.is_empty(),
        "{name} is still listed after its removal: {left:?}"
    );
    match h.orchestrator.remove_volume(name).await {
        Err(OrchestratorError::NotFound { .. }) => {}
        other => {
            return Err(fail(
                C,
                format!("removing {name} a second time: expected NotFound, got {other:?}"),
            ));
        }
    }
    for (what, r) in [
        (
            "list_volumes(\"Not_A_Name\")",
            h.orchestrator
                .list_volumes(Some("Not_A_Name"))
                .await
                .map(drop),
        ),
        (
            "remove_volume(\"data\")",
            h.orchestrator.remove_volume("data").await,
        ),
    ] {
        ensure!(
            C,
            matches!(r, Err(OrchestratorError::InvalidArgument { .. })),
            "{what}: expected InvalidArgument, got {r:?}"
        );
    }
    Ok(())
}

/// A dry run reports without removing, and a running instance (with a per-instance volume when
/// the backend honours volumes) and its companions are never reported as orphans. The kit
/// never collects for real: other checks may be starting instances on the same engine. A
/// backend declaring the capability refused answers `NotSupported`.
pub async fn garbage_collection(h: &Harness<'_>) -> CheckResult {
    const C: &str = "garbage_collection";
    match h.support(Capability::GarbageCollection) {
        None => return Ok(()),
        Some(Support::Refused) => {
            return match h.orchestrator.collect_garbage(true).await {
                Err(OrchestratorError::NotSupported { .. }) => Ok(()),
                other => Err(fail(
                    C,
                    format!(
                        "orphan collection is declared refused: expected NotSupported, got {other:?}"
                    ),
                )),
            };
        }
        Some(Support::Honoured) => {}
    }
    with_run(h, C, |h, run| async move {
        let mut spec = h.servers.server(&run.name("gc"), &idle());
        if h.support(Capability::Volumes) == Some(Support::Honoured) {
            spec.volumes = vec![
                VolumeSpec::new("data", "16Mi", h.mount_path("data"))
                    .map_err(|e| fail(C, format!("quantity: {e}")))?,
            ];
        }
        let id = run.start_spec(&spec, &[]).await?;
        run.running(&id).await?;
        let report = op(
            C,
            "collect garbage (dry run)",
            h.orchestrator.collect_garbage(true).await,
        )?;
        ensure!(
            C,
            report.dry_run,
            "a dry run's report says it was not one: {report:?}"
        );
        ensure!(
            C,
            report.orphans.iter().all(|o| !o.removed),
            "a dry run removed {:?}",
            report
                .orphans
                .iter()
                .filter(|o| o.removed)
                .collect::<Vec<_>>()
        );
        let mine: Vec<_> = report
            .orphans
            .iter()
            .filter(|o| o.name.contains(id.as_str()))
            .collect();
        ensure!(
            C,
            mine.is_empty(),
            "the running instance {id} or its companions were reported as orphans: {mine:?}"
        );
        op(
            C,
            &format!("status of {id} after the collection"),
            h.orchestrator.get_status(&id).await,
        )?;
        run.stop(&id).await
    })
    .await
}
