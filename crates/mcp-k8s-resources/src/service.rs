//! The ClusterIP Service in front of an HTTP-transport instance.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mcp_types::{InstanceId, McpServer, ValidationErrors};

use crate::meta::Checked;
use crate::names::service_name;
use crate::{BuildOptions, PORT_NAME};

/// Builds the ClusterIP Service selecting instance `instance`'s pod, or `None` for transports
/// without a port (stdio).
///
/// # Errors
/// As [`crate::build_pod`].
pub fn build_service(
    spec: &McpServer,
    instance: &InstanceId,
    opts: &BuildOptions,
) -> Result<Option<Service>, ValidationErrors> {
    Checked::new(spec, instance, opts).map(service)
}

pub(crate) fn service(c: Checked<'_>) -> Option<Service> {
    let port = c.spec.port.filter(|_| c.spec.transport.is_http())?;
    Some(Service {
        metadata: c.object_meta(service_name(c.instance)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(c.selector()),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.to_owned()),
                port: i32::from(port),
                target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}
