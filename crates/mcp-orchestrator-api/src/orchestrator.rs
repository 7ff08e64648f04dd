//! The `McpOrchestrator` trait, its object-safe alias and forwarding impls.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use mcp_types::{
    GcReport, Instance, InstanceFilters, InstanceId, InstanceStatus, LogLine, LogOptions,
    McpServer, Page, PersistentVolume, StartOptions,
};

use crate::connect::McpChannel;
use crate::error::Result;
use crate::watch::InstanceEvents;

/// A stream of log lines; errors end it.
pub type LogLines = BoxStream<'static, Result<LogLine>>;

/// An orchestrator behind a pointer, for callers that pick the backend at run time.
pub type DynOrchestrator = dyn McpOrchestrator;

/// Starts, stops, watches and lists MCP servers on one backend.
///
/// Every method validates its input before touching the engine. Ids are the instance names
/// made by [`mcp_types::new_instance_name`].
#[async_trait]
pub trait McpOrchestrator: Debug + Send + Sync + 'static {
    /// Short backend name: `docker`, `kubernetes`, `process`, `memory`.
    fn backend_name(&self) -> &'static str;

    /// Starts one instance of `spec` with per-instance `options`, returning as soon as the
    /// engine has accepted it (it may still be Pending).
    ///
    /// # Errors
    /// - [`InvalidSpec`](crate::OrchestratorError::InvalidSpec) when the spec or options are
    ///   invalid; nothing is created.
    /// - [`ImageNotAvailable`](crate::OrchestratorError::ImageNotAvailable) when the image is
    ///   missing and cannot be pulled.
    /// - [`Unavailable`](crate::OrchestratorError::Unavailable) when the engine is unreachable.
    /// - [`NotSupported`](crate::OrchestratorError::NotSupported) when the spec asks for
    ///   something the backend cannot provide (e.g. a GPU).
    async fn start_server(&self, spec: &McpServer, options: &StartOptions) -> Result<InstanceId>;

    /// Stops an instance: asks it to terminate, waits up to `grace`, then kills it, and removes
    /// it. Returns when it is gone; stopping an instance that already exited removes it.
    ///
    /// # Errors
    /// - [`NotFound`](crate::OrchestratorError::NotFound) for an unknown id (or one not managed
    ///   by this project).
    /// - [`Unavailable`](crate::OrchestratorError::Unavailable) when the engine is unreachable.
    /// - [`Timeout`](crate::OrchestratorError::Timeout) when the instance is still present well
    ///   after it was killed.
    async fn stop_server(&self, id: &InstanceId, grace: Duration) -> Result<()>;

    /// The current status of an instance.
    ///
    /// # Errors
    /// - [`NotFound`](crate::OrchestratorError::NotFound) for an unknown or stopped id.
    /// - [`Unavailable`](crate::OrchestratorError::Unavailable) when the engine is unreachable.
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus>;

    /// The instance's output as lines. With `follow` the stream stays open, yielding new lines,
    /// until the instance stops or exits.
    ///
    /// # Errors
    /// - [`NotFound`](crate::OrchestratorError::NotFound) for an unknown id.
    /// - [`InvalidArgument`](crate::OrchestratorError::InvalidArgument) for options the backend
    ///   cannot honour (e.g. `previous` where no previous run exists).
    /// - [`NotSupported`](crate::OrchestratorError::NotSupported) for a single-stream selection
    ///   when the engine merges stdout and stderr (Kubernetes); such backends report every line
    ///   as stdout.
    /// - [`Unavailable`](crate::OrchestratorError::Unavailable) when the engine is unreachable.
    async fn get_logs(&self, id: &InstanceId, options: &LogOptions) -> Result<LogLines>;

    /// Managed instances matching `filters`, one page at a time, ordered by id.
    ///
    /// A listed status may be a summary of [`get_status`](Self::get_status)'s: its phase,
    /// reason, message and exit code are the same, but a backend whose engine lists without
    /// them may leave `restartCount` at 0 and `startedAt`/`finishedAt` absent (Docker does for
    /// live containers, to list in one request); ask `get_status` for those.
    ///
    /// # Errors
    /// - [`InvalidArgument`](crate::OrchestratorError::InvalidArgument) for a malformed continue
    ///   token or filter.
    /// - [`ContinueExpired`](crate::OrchestratorError::ContinueExpired) when the token can no
    ///   longer be resumed.
    /// - [`Unavailable`](crate::OrchestratorError::Unavailable) when the engine is unreachable.
    async fn list_instances(&self, filters: &InstanceFilters) -> Result<Page<Instance>>;

    /// Connects to a running instance's MCP channel: for a stdio server a byte stream carrying
    /// exactly its stdin and stdout (see [`StdioChannel`](crate::StdioChannel); dropping it
    /// detaches and the server keeps running), for an HTTP server the URL a client uses, path
    /// included. A stdio server serves one attached client at a time.
    ///
    /// # Errors
    /// - [`NotFound`](crate::OrchestratorError::NotFound) for an unknown or stopped id.
    /// - [`Unavailable`](crate::OrchestratorError::Unavailable) when the instance is not running
    ///   (pending, backing off, exited), when another client is attached to its stdio (the
    ///   message says so), or when the engine is unreachable.
    /// - [`NotSupported`](crate::OrchestratorError::NotSupported) when the backend cannot reach
    ///   the instance's transport at all (the message names the transport).
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel>;

    /// Watches the managed instances matching `filters` (server, phase, label selector): first
    /// an `Added` per instance matching now and one `Synced`, then `Added`/`Modified`/`Removed`
    /// as they change, resuming across transient engine errors without losing or repeating a
    /// change (the order and the rules are `mcp_types::events`'). The stream runs until the
    /// caller drops it, or yields one error and ends.
    ///
    /// Optional: the default answers `NotSupported`, so backends written before it keep
    /// compiling; a backend that implements it declares `Capability::Watch` to the kit.
    ///
    /// # Errors
    /// - [`InvalidArgument`](crate::OrchestratorError::InvalidArgument) for malformed filters
    ///   (a bad selector: `labelSelector`) and for `limit` or `continueToken`, which a watch has
    ///   no use for, before anything is opened ([`crate::watch::validate_watch_filters`]).
    /// - [`NotSupported`](crate::OrchestratorError::NotSupported) when the backend cannot watch.
    /// - [`Unavailable`](crate::OrchestratorError::Unavailable) when the engine is unreachable
    ///   at the call; later, as the stream's last item when it stays unreachable.
    async fn watch(&self, filters: &InstanceFilters) -> Result<InstanceEvents> {
        let _ = filters;
        Err(crate::OrchestratorError::NotSupported {
            backend: self.backend_name(),
            what: "watching instances".into(),
        })
    }

    /// The persistent volumes of this project ([`mcp_types::VolumeSpec::persistent`]), of one
    /// server or of all, ordered by name, each with the instances that mount it now.
    /// Per-instance volumes are not listed: they live and go with their instance.
    ///
    /// Optional capability (`Capability::PersistentVolumes` in the conformance kit): the default
    /// answers `NotSupported`, and so must a backend that refuses persistent volumes in specs.
    ///
    /// # Errors
    /// - [`InvalidArgument`](crate::OrchestratorError::InvalidArgument) (`what: "server"`) for a
    ///   server name that is not a DNS-1123 label.
    /// - [`NotSupported`](crate::OrchestratorError::NotSupported) when the backend has no
    ///   persistent volumes.
    /// - [`Unavailable`](crate::OrchestratorError::Unavailable) when the engine is unreachable.
    async fn list_volumes(&self, server: Option<&str>) -> Result<Vec<PersistentVolume>> {
        let _ = server;
        Err(crate::OrchestratorError::NotSupported {
            backend: self.backend_name(),
            what: "persistent volumes".into(),
        })
    }

    /// Removes a persistent volume and its data, refusing while an instance mounts it.
    ///
    /// # Errors
    /// - [`InUse`](crate::OrchestratorError::InUse) naming the instances that mount it; nothing
    ///   is removed.
    /// - [`NotFound`](crate::OrchestratorError::NotFound) when no persistent volume of this
    ///   project has that name.
    /// - [`InvalidArgument`](crate::OrchestratorError::InvalidArgument) (`what: "volume"`) for a
    ///   name no volume can have ([`mcp_types::names::check_persistent_volume_name`]).
    /// - [`NotSupported`](crate::OrchestratorError::NotSupported) when the backend has no
    ///   persistent volumes.
    /// - [`Unavailable`](crate::OrchestratorError::Unavailable) when the engine is unreachable.
    async fn remove_volume(&self, name: &str) -> Result<()> {
        let _ = name;
        Err(crate::OrchestratorError::NotSupported {
            backend: self.backend_name(),
            what: "persistent volumes".into(),
        })
    }

    /// Finds the managed objects of this project that have no live owner (a container whose
    /// network or volume is gone, a network or per-instance volume without its container, a
    /// Kubernetes companion whose pod is gone, a process instance whose supervisor died) and,
    /// unless `dry_run`, removes them. Persistent volumes are never orphans. Run it at start-up
    /// of a control plane, when no start or stop of this project is in flight: an instance
    /// being created may look like an orphan for a moment.
    ///
    /// Optional capability (`Capability::GarbageCollection` in the conformance kit): the
    /// default answers `NotSupported`.
    ///
    /// # Errors
    /// - [`NotSupported`](crate::OrchestratorError::NotSupported) when the backend cannot.
    /// - [`Unavailable`](crate::OrchestratorError::Unavailable) when the engine is unreachable.
    /// - Other errors of a removal; the objects removed until then stay removed.
    async fn collect_garbage(&self, dry_run: bool) -> Result<GcReport> {
        let _ = dry_run;
        Err(crate::OrchestratorError::NotSupported {
            backend: self.backend_name(),
            what: "orphan collection".into(),
        })
    }
}

macro_rules! forward {
    ($ptr:ident) => {
        #[async_trait]
        impl<T: McpOrchestrator + ?Sized> McpOrchestrator for $ptr<T> {
            fn backend_name(&self) -> &'static str {
                (**self).backend_name()
            }
            async fn start_server(
                &self,
                spec: &McpServer,
                options: &StartOptions,
            ) -> Result<InstanceId> {
                (**self).start_server(spec, options).await
            }
            async fn stop_server(&self, id: &InstanceId, grace: Duration) -> Result<()> {
                (**self).stop_server(id, grace).await
            }
            async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
                (**self).get_status(id).await
            }
            async fn get_logs(&self, id: &InstanceId, options: &LogOptions) -> Result<LogLines> {
                (**self).get_logs(id, options).await
            }
            async fn list_instances(&self, filters: &InstanceFilters) -> Result<Page<Instance>> {
                (**self).list_instances(filters).await
            }
            async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
                (**self).connect(id).await
            }
            async fn watch(&self, filters: &InstanceFilters) -> Result<InstanceEvents> {
                (**self).watch(filters).await
            }
            async fn list_volumes(&self, server: Option<&str>) -> Result<Vec<PersistentVolume>> {
                (**self).list_volumes(server).await
            }
            async fn remove_volume(&self, name: &str) -> Result<()> {
                (**self).remove_volume(name).await
            }
            async fn collect_garbage(&self, dry_run: bool) -> Result<GcReport> {
                (**self).collect_garbage(dry_run).await
            }
        }
    };
}

forward!(Arc);
forward!(Box);
