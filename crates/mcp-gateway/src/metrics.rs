//! Prometheus metrics (`prometheus-client`): requests, errors and latency per instance and
//! method, handshake latency, active clients.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-request series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabels {
    pub(crate) instance: String,
    pub(crate) method: String,
}

/// Labels of per-instance series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct InstanceLabels {
    pub(crate) instance: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every series the gateway exports.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<MethodLabels, Counter>,
    pub(crate) errors: Family<MethodLabels, Counter>,
    pub(crate) latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pub(crate) handshake: Family<InstanceLabels, Histogram, fn() -> Histogram>,
    pub(crate) active_clients: Family<InstanceLabels, Gauge>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("mcp_gateway");
        let requests = Family::<MethodLabels, Counter>::default();
        let errors = Family::<MethodLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let handshake =
            Family::<InstanceLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let active_clients = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "requests",
            "JSON-RPC messages received from clients",
            requests.clone(),
        );
        registry.register(
            "errors",
            "Requests answered with a JSON-RPC or HTTP error",
            errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a client's request to its response",
            latency.clone(),
        );
        registry.register(
            "handshake_duration_seconds",
            "Time from connecting to an instance to the end of its MCP handshake (Ready)",
            handshake.clone(),
        );
        registry.register(
            "active_clients",
            "Client sessions and streams open per instance",
            active_clients.clone(),
        );
        Self {
            registry,
            requests,
            errors,
            latency,
            handshake,
            active_clients,
        }
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

pub(crate) fn method_labels(instance: &str, method: &str) -> MethodLabels {
    MethodLabels {
        instance: instance.to_owned(),
        method: method.to_owned(),
    }
}
