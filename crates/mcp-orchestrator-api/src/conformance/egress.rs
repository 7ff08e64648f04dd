//! Kit check of the egress posture a backend reports ([`Harness::with_egress_posture`]): every
//! instance's status states the policy it runs with (its spec's, or the backend's default) and
//! what enforces it, `none` always blocks the metadata ranges, and a listing states the same
//! posture as `get_status`.

use mcp_types::egress::{Egress, EgressPosture, EgressRule};
use mcp_types::{InstanceId, InstanceStatus};

use super::{Capability, CheckResult, Failure, Harness, Run, Support, idle, op, with_run};

const C: &str = "egress_posture";

/// For a backend that declares [`Harness::with_egress_posture`] and honours
/// [`Capability::Egress`] (others pass at once): a spec without `egress` runs with the declared
/// default, `egress: none` and a CIDR allow-list run with exactly that policy; each posture
/// names what enforces it, `none` reports the metadata ranges blocked; the listing's status
/// carries the same posture as `get_status`.
pub async fn egress_posture(h: &Harness<'_>) -> CheckResult {
    let Some(default) = h.egress_default.clone() else {
        return Ok(());
    };
    if h.support(Capability::Egress) != Some(Support::Honoured) {
        return Ok(());
    }
    with_run(h, C, |h, run| async move {
        let allow = Egress::Allow(vec![EgressRule::cidr("10.0.0.0/8", [443])]);
        let mut started = Vec::new();
        for (base, egress, want) in [
            ("egress-default", None, default.clone()),
            ("egress-none", Some(Egress::None), Egress::None),
            ("egress-allow", Some(allow.clone()), allow),
        ] {
            let mut spec = h.servers.server(&run.name(base), &idle());
            spec.egress = egress;
            let id = run.start_spec(&spec, &[]).await?;
            run.running(&id).await?;
            started.push((id, want));
        }
        for (id, want) in &started {
            let status = op(C, "get_status", h.orchestrator.get_status(id).await)?;
            let posture = posture_of(id, &status)?;
            ensure!(
                C,
                posture.policy == *want,
                "{id}: the status reports policy {} where the instance runs with {}",
                posture.policy.summary(),
                want.summary()
            );
            ensure!(
                C,
                !posture.enforced_by.trim().is_empty(),
                "{id}: the posture does not say what enforces {}",
                want.summary()
            );
            ensure!(
                C,
                posture.policy != Egress::None || posture.metadata_blocked,
                "{id}: egress none reported with the metadata ranges reachable"
            );
        }
        listed_postures_agree(h, &run, &started).await
    })
    .await
}

fn posture_of<'s>(
    id: &InstanceId,
    status: &'s InstanceStatus,
) -> Result<&'s EgressPosture, Failure> {
    status.egress.as_ref().ok_or_else(|| Failure {
        check: C,
        message: format!("{id}: the status states no egress posture"),
    })
}

async fn listed_postures_agree(
    h: &Harness<'_>,
    run: &Run<'_, '_>,
    started: &[(InstanceId, Egress)],
) -> CheckResult {
    let page = run.list_run().await?;
    for (id, _) in started {
        let Some(listed) = page.items.iter().find(|i| &i.id == id) else {
            return Err(Failure {
                check: C,
                message: format!("{id} is missing from the listing"),
            });
        };
        let status = op(C, "get_status", h.orchestrator.get_status(id).await)?;
        ensure!(
            C,
            listed.status.egress == status.egress,
            "{id}: the listing reports posture {:?}, get_status {:?}",
            listed.status.egress,
            status.egress
        );
    }
    Ok(())
}
