//! Everything one instance needs, built in one call.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use mcp_types::{InstanceId, McpServer, ValidationErrors};

use crate::meta::Checked;
use crate::{
    BuildOptions, EgressProxyResources, Manifest, build_egress_proxy, network_policy, pod, service,
    storage,
};

/// The objects of one instance. Each carries the instance's labels, so
/// [`crate::names::instance_selector`] finds them all.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceResources {
    /// The server's pod, named after the instance id.
    pub pod: Pod,
    /// Its NetworkPolicy, unless [`BuildOptions::network_policy`] is off.
    pub network_policy: Option<NetworkPolicy>,
    /// One claim per per-instance spec volume, in spec order; the pod becomes their owner.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// One claim per persistent spec volume ([`mcp_types::VolumeSpec::persistent`]), shared by
    /// every instance of the server: labelled with the server, not the instance, and never
    /// owned by a pod. Creating one that exists is not an error.
    pub persistent_pvcs: Vec<PersistentVolumeClaim>,
    /// The ClusterIP Service of HTTP transports.
    pub service: Option<Service>,
    /// The namespace's egress proxy, when the effective egress policy names hosts: shared by
    /// every such instance of the namespace, created when missing (an existing one is used as
    /// it is) and never removed with an instance.
    pub egress_proxy: Option<EgressProxyResources>,
}

impl InstanceResources {
    /// The objects in the order to create them: the egress proxy first, then claims and policy
    /// before the pod that uses them, so the pod never runs unisolated or waits on a missing
    /// claim.
    pub fn manifests(&self) -> Vec<Manifest> {
        let mut out: Vec<Manifest> = self
            .egress_proxy
            .as_ref()
            .map(EgressProxyResources::manifests)
            .unwrap_or_default();
        out.extend(
            self.persistent_pvcs
                .iter()
                .chain(&self.pvcs)
                .cloned()
                .map(Manifest::from),
        );
        out.extend(self.network_policy.clone().map(Manifest::from));
        out.extend(self.service.clone().map(Manifest::from));
        out.push(Manifest::from(self.pod.clone()));
        out
    }
}

/// Builds every object instance `instance` of `spec` needs in `opts.namespace`.
///
/// # Errors
/// Nothing is built from invalid input: the spec's errors from
/// [`McpServer::validate_spec`], plus `instanceId` when the id is not a DNS-1123 label and
/// `options.*` for invalid options, all reported together.
pub fn build_instance(
    spec: &McpServer,
    instance: &InstanceId,
    opts: &BuildOptions,
) -> Result<InstanceResources, ValidationErrors> {
    let c = Checked::new(spec, instance, opts)?;
    Ok(InstanceResources {
        pod: pod::pod(c),
        network_policy: opts
            .network_policy
            .then(|| network_policy::network_policy(c)),
        pvcs: storage::pvcs(c),
        persistent_pvcs: storage::persistent_pvcs(c),
        service: service::service(c),
        egress_proxy: if c.egress().needs_proxy() {
            Some(build_egress_proxy(opts)?)
        } else {
            None
        },
    })
}
