//! The local-process backend of [`McpOrchestrator`](mcp_orchestrator_api::McpOrchestrator):
//! runs MCP servers as local commands (`npx ...`, `uvx mcp-server-time`, a binary) with no
//! Docker and no cluster.
//!
//! # Design
//!
//! Instances outlive the program that started them, the way containers outlive the `docker`
//! CLI: `start_server` starts a small detached **supervisor** per
//! instance (the `mcp-process-supervisor` binary, or the embedding program itself, see
//! [`supervisor::run`]) which owns the server process and records everything in the instance's
//! directory under the **state directory** (see [`ProcessConfig`]). Every other operation
//! (status, logs, list, stop) reads that directory, so a later invocation, or another program,
//! sees the same instances.
//!
//! - **Identity** survives pid reuse: supervisor and server are recorded as pid + start time
//!   ([`ProcIdentity`]) and both are checked before any signal or "alive" verdict.
//! - **Stop** writes the grace period to `stop.json` and sends SIGTERM to the supervisor, which
//!   sends SIGTERM to the server's process group, closes its stdin, waits the grace period,
//!   sends SIGKILL to the group, records the exit and exits; the stopper then deletes the
//!   directory. A supervisor that does not exit in time is killed, and the stopper finishes the
//!   job itself.
//! - **Orphans**: when a supervisor dies (kill -9), status and list report the instance as
//!   `Unknown` (server still running) or `Failed` (server gone) with reason `Orphaned`, and stop
//!   kills the server's process group (verified by pid + start time) and cleans up.
//! - **Logs** are JSON lines (`ts`, `stream`, `run`, `text`) in `logs.jsonl`; reads show the
//!   current run (`previous` the one before), `follow` polls the file and ends when the
//!   instance finishes, loses its supervisor or is removed.
//! - **stdio servers**: stdout is the MCP channel. The supervisor keeps the server's stdin and
//!   stdout and bridges them to one client at a time over `<instance dir>/stdio.sock`
//!   ([`ProcessOrchestrator::attach_stdio`]). Stdout is logged only while no client is
//!   attached (unsolicited output, such as banners or fixture scripts); while one is, it is
//!   protocol traffic and goes to the client only (unless `logStdioTraffic`). Stderr is always
//!   logged.
//! - **HTTP servers** get the endpoint `http://127.0.0.1:PORT/PATH` (`/mcp` unless the spec names a path); stdin is `/dev/null`.
//! - **Environment**: the server gets `PATH`, `HOME` and `LANG` from the starting process
//!   (configurable) plus the spec's `env`, with `secretRef`s read from `secretsDir`. Values are
//!   handed to the supervisor over a pipe: they are never written to the state directory,
//!   never put in the supervisor's own environment and never logged. A `secretRef` value is
//!   still in the server's environment, which `/proc/<pid>/environ` shows to the same user
//!   (and root). `secretFiles` avoid that: each value is written, mode 0400, to
//!   `<instance dir>/secrets/` and the file's `env` variable names it; `path` is not honoured
//!   (no mount namespace), so servers read the file through the variable. The files are
//!   deleted with the instance directory (stop, a failed start, orphan collection).
//! - **Resources**: a memory limit becomes `RLIMIT_DATA` (set by the supervisor on itself
//!   before launching, so the server and its children inherit it), applied only when the spec
//!   says anything about resources (`ResourceRequirements::effective()` then gives the limit).
//!   `RLIMIT_DATA` caps each process's data segment and private writable mappings (heap,
//!   anonymous `mmap`), per process, not per group, and an allocation over it fails rather than
//!   triggering an OOM kill; `RLIMIT_AS` was not chosen because it counts reserved virtual
//!   address space, which runtimes such as V8, the JVM and Go reserve by the gigabyte. CPU
//!   limits are not honoured (an rlimit on CPU time is not a rate). GPUs are refused with
//!   `NotSupported`. `securityContext` and `image` are ignored; servers run as the calling user.
//! - **Volumes and egress** (`sandbox.rs`): a server with volumes or `egress: none` runs in
//!   unprivileged namespaces its supervisor enters before launching it: a user namespace
//!   mapping the caller to itself, a mount namespace with each volume's directory bind-mounted
//!   at its `mountPath` (any absolute path; the host's files are never changed), a network
//!   namespace with only loopback. Per-instance volumes are directories in the instance
//!   directory; persistent ones live under `<stateDir>/volumes/` until `remove_volume`
//!   (`volumes.rs`). Egress is the spec's or `defaultEgress`: `open` runs on the host network,
//!   `none` in the namespace; allow-lists are refused (`egress.rs`). Hosts without
//!   unprivileged user namespaces get `NotSupported` for volumes and `none`.
//! - **Working directory**: `workingDir`, else the starting process's current directory. The
//!   program (`command[0]`) is resolved at start against that directory (if it contains a `/`)
//!   or the server's `PATH`; a missing program is an `InvalidSpec` error on `command`.
//! - **Concurrency**: instance directories are created with `create_dir` (atomic, unique),
//!   every document has a single writer and is replaced by temp file + rename, stops of one
//!   instance are serialized by `flock` on `stop.lock`, and deletion renames the directory into
//!   `trash/` first.

//!
//! # State directory
//!
//! ```text
//! <stateDir>/instances/<id>/
//!   meta.json        server, labels, createdAt, endpoint, what to run (no environment values)
//!   supervisor.json  supervisor pid + start time (written by the starter right after spawning)
//!   state.json       status, run number, server pid + start time (written by the supervisor)
//!   logs.jsonl       {"ts":"2024-01-02T03:04:05.123456789Z","stream":"stdout","run":0,"text":"..."}
//!   supervisor.log   the supervisor's own diagnostics
//!   stop.json        grace period of a pending stop; stop.lock serializes stoppers
//!   stdio.sock       the stdio bridge (stdio servers)
//!   volumes/<name>/  per-instance volumes
//!   secrets/         the secret files, mode 0400 in a 0700 directory
//!   sandbox/         the supervisor's staging directory for its mount namespace
//! <stateDir>/volumes/<mcp-server-volume>/{volume.json,data/}  persistent volumes
//! <stateDir>/volumes.lock  shared by starts mounting them, exclusive for a removal
//! <stateDir>/trash/  directories being deleted
//! ```
//!
//! Left out for now: log rotation (a crash-looping server's `logs.jsonl` grows until the
//! instance is stopped), CPU limits, and an MCP-level multiplexer on top of the single-client
//! stdio bridge.

mod bridge;
mod config;
mod egress;
mod error;
mod files;
mod layout;
mod lifecycle;
mod logs;
mod orchestrator;
mod procfs;
mod sandbox;
mod secret_files;
mod status;
mod stdio;
pub mod supervisor;
mod volumes;
mod watch;

pub use config::{
    DEFAULT_INHERITED_ENV, MAX_LOG_FILES, MIN_BACKOFF_INITIAL_MS, MIN_BACKOFF_MAX_MS,
    MIN_LOG_MAX_BYTES, ProcessConfig, SUPERVISOR_BINARY, default_state_dir,
};
pub use orchestrator::ProcessOrchestrator;
pub use procfs::ProcIdentity;
pub use status::{InstanceProcesses, STATE_UNREADABLE};
pub use watch::{RESCAN as WATCH_RESCAN, WatchBreaker};
