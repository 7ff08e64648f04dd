//! What each subcommand does, on top of `mcp-factory` and the orchestrator trait.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use mcp_factory::mcp_orchestrator_api::{
    DynOrchestrator, McpChannel, McpOrchestrator, OrchestratorError,
};
use mcp_factory::mcp_types::{
    EnvValue, InstanceFilters, InstanceId, InstanceStatus, LabelSelector, LogLine, LogOptions,
    LogStream, Phase, StartOptions, StreamSelector, Timestamp,
};
use mcp_factory::{BackendKind, OrchestratorConfig};

use crate::cli::{Cli, Command, ConfigAction, LogsArgs, Output, PsArgs, RunArgs, StreamArg};
use crate::output;
use crate::signals::Interrupts;
use crate::usage::usage;

/// Runs the parsed command.
pub(crate) async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Config {
            action: ConfigAction::Check { file },
        } => config_check(file.or(cli.config).as_deref(), cli.backend.as_deref()),
        #[cfg(feature = "kubernetes")]
        Command::Manifests { file, namespace } => {
            let config = load_config(cli.config.as_deref(), cli.backend.as_deref())?;
            manifests(&file, namespace, &config)
        }
        Command::Supervise { .. } => Err(anyhow!(
            "internal error: supervisor mode is handled before the runtime starts"
        )),
        Command::Serve(args) => {
            let config = load_config(cli.config.as_deref(), cli.backend.as_deref())?;
            crate::serve::serve(
                args,
                mcp_factory::create_orchestrator(&config).await?.into(),
            )
            .await
        }
        command => {
            let config = load_config(cli.config.as_deref(), cli.backend.as_deref())?;
            let orchestrator: Arc<DynOrchestrator> =
                mcp_factory::create_orchestrator(&config).await?.into();
            dispatch(command, &orchestrator).await
        }
    }
}

async fn dispatch(command: Command, shared: &Arc<DynOrchestrator>) -> Result<ExitCode> {
    let o = shared.as_ref();
    match command {
        Command::Run(args) => run_server(args, shared).await,
        Command::Ps(args) => ps(args, shared).await,
        Command::Status { id, output } => status(&id, output, o).await,
        Command::Logs(args) => logs(args, o).await,
        Command::Attach { id } => attach(&id, o).await,
        Command::Stop { ids, grace } => stop(&ids, grace, o).await,
        Command::Volumes { action } => crate::volumes::volumes(action, o).await,
        Command::Gc { dry_run, output } => crate::volumes::gc(dry_run, output, o).await,
        _ => Err(anyhow!("internal error: command dispatched twice")),
    }
}

/// The config file to read: `--config`, else `$MCPCTL_CONFIG`, else the user's config when it
/// exists.
fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os("MCPCTL_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("mcpctl/config.yaml")).filter(|p| p.is_file())
}

/// The configuration in effect (file or defaults, environment, `--backend`) and where it came
/// from, for messages.
fn resolve_config(
    explicit: Option<&Path>,
    backend: Option<&str>,
) -> Result<(OrchestratorConfig, String)> {
    let env = |k: &str| std::env::var(k).ok();
    let (mut config, from) = match config_path(explicit) {
        Some(path) => (
            OrchestratorConfig::load(&path, &env)?,
            path.display().to_string(),
        ),
        None => (
            OrchestratorConfig::from_env(&env)?,
            "defaults and environment".to_owned(),
        ),
    };
    if let Some(b) = backend {
        config.orchestrator.backend = b
            .parse::<BackendKind>()
            .map_err(|e| usage(format!("--backend: {e}")))?;
    }
    Ok((config, from))
}

fn load_config(explicit: Option<&Path>, backend: Option<&str>) -> Result<OrchestratorConfig> {
    let (mut config, _) = resolve_config(explicit, backend)?;
    embed_supervisor(&mut config)?;
    Ok(config)
}

/// Points the process backend at this binary's hidden supervisor mode unless the configuration
/// names a supervisor program.
#[cfg(feature = "process")]
fn embed_supervisor(config: &mut OrchestratorConfig) -> Result<()> {
    let section = config
        .orchestrator
        .process
        .get_or_insert_with(mcp_factory::ProcessConfig::default);
    if section.supervisor_path.is_none() {
        section.supervisor_path =
            Some(std::env::current_exe().context("locating the mcp-orch executable")?);
        section.supervisor_args = vec![crate::SUPERVISE.to_owned()];
    }
    Ok(())
}

#[cfg(not(feature = "process"))]
fn embed_supervisor(_: &mut OrchestratorConfig) -> Result<()> {
    Ok(())
}

fn config_check(file: Option<&Path>, backend: Option<&str>) -> Result<ExitCode> {
    let (config, from) = resolve_config(file, backend)?;
    let kind = config.orchestrator.backend;
    if !kind.is_compiled_in() {
        bail!("{from}: backend {kind:?} is not compiled into this binary (cargo feature `{kind}`)");
    }
    eprintln!("config OK ({from}): backend {kind}");
    print!("{}", output::structured(&config, Output::Yaml)?);
    Ok(ExitCode::SUCCESS)
}

fn key_values(items: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| usage(format!("{what} {kv:?}: expected KEY=VALUE")))
        })
        .collect()
}

async fn run_server(args: RunArgs, shared: &Arc<DynOrchestrator>) -> Result<ExitCode> {
    let o = shared.as_ref();
    let spec = mcp_factory::load_server_spec(&args.file)?;
    let options = StartOptions {
        env: key_values(&args.env, "--env")?
            .into_iter()
            .map(|(k, v)| (k, EnvValue::plain(v)))
            .collect(),
        labels: key_values(&args.labels, "--label")?,
        ..StartOptions::default()
    };
    // From here on Ctrl-C no longer kills mcp-orch: an instance being created gets an id first,
    // and is then stopped (or named), so no unnamed instance is left running.
    let mut interrupts = Interrupts::listen()?;
    eprintln!("starting {} on {}", spec.name, o.backend_name());
    let id = start_interruptibly(o, &spec, &options, &mut interrupts, &args).await?;
    // Attached, the logs show a quick exit and the exit code reports it: no settle period.
    let settle = if args.attach {
        Duration::ZERO
    } else {
        args.settle
    };
    let waited = tokio::select! {
        r = wait_running(o, &id, args.timeout, settle) => r,
        () = interrupts.recv() => Err(anyhow!("interrupted before {id} was running")),
    };
    if let Err(e) = waited {
        print_recent_logs(o, &id).await;
        clean_up_failed_run(o, &id, &args, &mut interrupts).await;
        return Err(e);
    }
    if !args.skip_ready {
        // Running only says a process or container exists: Ready is a completed MCP handshake
        // and ping through `connect`, the way a client will reach it.
        let ready = tokio::select! {
            r = mcp_gateway::wait_ready(Arc::clone(shared), &id, args.timeout) => {
                r.map_err(|e| anyhow!("{id} does not answer MCP: {e}"))
            }
            () = interrupts.recv() => Err(anyhow!("interrupted before {id} answered MCP")),
        };
        match ready {
            Ok(info) => eprintln!(
                "ready: {} {} (MCP {}, {} tools)",
                info.server_name, info.server_version, info.protocol_version, info.tool_count
            ),
            Err(e) => {
                print_recent_logs(o, &id).await;
                clean_up_failed_run(o, &id, &args, &mut interrupts).await;
                return Err(e);
            }
        }
    }
    println!("{id}");
    if !args.attach {
        return Ok(ExitCode::SUCCESS);
    }
    let stream = o
        .get_logs(
            &id,
            &LogOptions {
                follow: true,
                ..LogOptions::default()
            },
        )
        .await?;
    let interrupted = print_stream(stream, false, &mut interrupts).await?;
    if interrupted {
        eprintln!("stopping {id} (grace {:?})", args.grace);
        o.stop_server(&id, args.grace).await?;
        return Ok(ExitCode::SUCCESS);
    }
    // The stream ended by itself: the server exited.
    let status = o.get_status(&id).await?;
    eprintln!("{id} exited: {}", describe(&status));
    Ok(if status.phase == Phase::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Starts the server. An interrupt during the start lets the start finish (so the instance has
/// an id) and then stops it; a second interrupt leaves at once, saying how to find the instance.
async fn start_interruptibly(
    o: &dyn McpOrchestrator,
    spec: &mcp_factory::mcp_types::McpServer,
    options: &StartOptions,
    interrupts: &mut Interrupts,
    args: &RunArgs,
) -> Result<InstanceId> {
    let start = o.start_server(spec, options);
    tokio::pin!(start);
    tokio::select! {
        r = &mut start => return Ok(r?),
        () = interrupts.recv() => {}
    }
    eprintln!(
        "interrupted: waiting for the start of {} to finish, to stop it (Ctrl-C again to leave now)",
        spec.name
    );
    tokio::select! {
        r = &mut start => {
            let id = r?;
            clean_up_failed_run(o, &id, args, interrupts).await;
            bail!("interrupted while starting {id}")
        }
        () = interrupts.recv() => bail!(
            "interrupted twice while starting {name}: an instance may have been created; \
             find it with `mcp-orch ps --server {name}` and stop it with `mcp-orch stop <ID>`",
            name = spec.name
        ),
    }
}

/// After a failed or interrupted `run`: stops and removes the instance, unless
/// `--keep-on-failure` asks to keep it, and says on stderr which happened and how to stop it.
async fn clean_up_failed_run(
    o: &dyn McpOrchestrator,
    id: &InstanceId,
    args: &RunArgs,
    interrupts: &mut Interrupts,
) {
    if args.keep_on_failure {
        eprintln!("kept {id} for debugging (--keep-on-failure); stop it with `mcp-orch stop {id}`");
        return;
    }
    eprintln!(
        "stopping and removing {id} (grace {:?}; --keep-on-failure keeps a failed instance)",
        args.grace
    );
    tokio::select! {
        r = o.stop_server(id, args.grace) => match r {
            Ok(()) | Err(OrchestratorError::NotFound { .. }) => eprintln!("removed {id}"),
            Err(e) => eprintln!("could not stop {id} ({e}); stop it with `mcp-orch stop {id}`"),
        },
        () = interrupts.recv() => {
            eprintln!("interrupted: {id} may still be running; stop it with `mcp-orch stop {id}`");
        }
    }
}

/// Waits for Running and then for `settle` more, printing each phase change on stderr.
async fn wait_running(
    o: &dyn McpOrchestrator,
    id: &InstanceId,
    timeout: Duration,
    settle: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut running_since: Option<tokio::time::Instant> = None;
    let mut last = String::new();
    loop {
        let status = o.get_status(id).await?;
        let now = describe(&status);
        if now != last {
            eprintln!("  {id}: {now}");
            last = now;
        }
        match status.phase {
            Phase::Running => {
                let since = *running_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= settle {
                    return Ok(());
                }
            }
            p if p.is_terminal() => {
                bail!("{id} exited before it was running: {}", describe(&status))
            }
            _ if status.is_not_coming_up() => {
                bail!("{id} is not coming up: {}", describe(&status))
            }
            _ => running_since = None,
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{id} was not running after {timeout:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn describe(s: &InstanceStatus) -> String {
    let reason = s
        .reason
        .as_ref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let code = s
        .exit_code
        .map(|c| format!(", exit code {c}"))
        .unwrap_or_default();
    let message = s
        .message
        .as_ref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    format!("{}{reason}{code}{message}", s.phase)
}

async fn print_recent_logs(o: &dyn McpOrchestrator, id: &InstanceId) {
    if let Ok(stream) = o.get_logs(id, &LogOptions::tail(10)).await {
        let lines: Vec<_> = stream.collect().await;
        if !lines.is_empty() {
            eprintln!("last output of {id}:");
            for line in lines.into_iter().flatten() {
                eprintln!("  {}", line.text);
            }
        }
    }
}

/// Prints lines until the stream ends (`false`) or Ctrl-C (`true`). Stdout lines go to stdout,
/// stderr lines to stderr, like `docker logs`.
async fn print_stream(
    mut stream: mcp_factory::mcp_orchestrator_api::LogLines,
    timestamps: bool,
    interrupts: &mut Interrupts,
) -> Result<bool> {
    loop {
        tokio::select! {
            () = interrupts.recv() => return Ok(true),
            next = stream.next() => match next {
                None => return Ok(false),
                Some(line) => print_line(&line?, timestamps)?,
            },
        }
    }
}

fn print_line(line: &LogLine, timestamps: bool) -> Result<()> {
    let text = match (timestamps, line.timestamp) {
        (true, Some(t)) => format!("{t} {}\n", line.text),
        _ => format!("{}\n", line.text),
    };
    let written = match line.stream {
        LogStream::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
        LogStream::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
    };
    match written {
        // A closed pipe (`| head`) ends the output quietly.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing logs"),
    }
}

async fn ps(args: PsArgs, shared: &Arc<DynOrchestrator>) -> Result<ExitCode> {
    let o = shared.as_ref();
    let label_selector = args
        .selector
        .as_deref()
        .map(LabelSelector::parse)
        .transpose()
        .map_err(|e| usage(format!("--selector: {e}")))?;
    let phase = args
        .phase
        .as_deref()
        .map(str::parse::<Phase>)
        .transpose()
        .map_err(|e| usage(format!("--phase: {e}")))?;
    let mut filters = InstanceFilters {
        server: args.server,
        phase,
        label_selector,
        limit: None,
        continue_token: None,
    };
    if args.watch {
        return crate::watch::watch(o, &filters, args.output).await;
    }
    filters.limit = Some(500);
    let mut items = Vec::new();
    loop {
        let page = o.list_instances(&filters).await?;
        items.extend(page.items);
        match page.continue_token {
            Some(t) => filters.continue_token = Some(t),
            None => break,
        }
    }
    match args.output {
        Output::Table => {
            let probes = if args.no_probe {
                vec![None; items.len()]
            } else {
                probe_all(shared, &items, args.probe_timeout).await
            };
            print!(
                "{}",
                output::instance_table(&items, &probes, Timestamp::now())
            );
        }
        format => print!("{}", output::structured(&items, format)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Probes every running instance at once (no backend stores readiness: `ps` asks each one
/// now, through `connect`, as a client would); `None` for the others.
async fn probe_all(
    shared: &Arc<DynOrchestrator>,
    items: &[mcp_factory::mcp_types::Instance],
    timeout: std::time::Duration,
) -> Vec<Option<mcp_gateway::Probe>> {
    futures::future::join_all(items.iter().map(|i| async move {
        if i.status.phase == Phase::Running {
            Some(mcp_gateway::probe(Arc::clone(shared), &i.id, timeout).await)
        } else {
            None
        }
    }))
    .await
}

async fn status(id: &str, format: Output, o: &dyn McpOrchestrator) -> Result<ExitCode> {
    let instance_id = InstanceId::new(id);
    let status = o.get_status(&instance_id).await?;
    match format {
        Output::Table => {
            // The endpoint comes with the listed instance; a stdio server has none.
            let selector =
                LabelSelector::from_equalities([(mcp_factory::mcp_types::labels::INSTANCE, id)]);
            let listed = o
                .list_instances(&InstanceFilters {
                    label_selector: Some(selector),
                    ..InstanceFilters::default()
                })
                .await?;
            let endpoint = listed
                .items
                .iter()
                .find(|i| i.id == instance_id)
                .and_then(|i| i.endpoint.clone());
            print!("{}", output::status_lines(id, &status, endpoint.as_deref()));
        }
        format => print!("{}", output::structured(&status, format)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies stdin to the server's stdin and its stdout to ours until either side ends. Only the
/// server's bytes reach stdout; every message of ours goes to stderr.
async fn attach(id: &str, o: &dyn McpOrchestrator) -> Result<ExitCode> {
    use tokio::io::AsyncWriteExt as _;
    let id = InstanceId::new(id);
    match o.connect(&id).await? {
        McpChannel::Stdio(channel) => {
            let (mut from_server, mut to_server) = tokio::io::split(channel);
            let upstream = async {
                let mut stdin = tokio::io::stdin();
                tokio::io::copy(&mut stdin, &mut to_server).await?;
                to_server.flush().await
            };
            let downstream = async {
                let mut stdout = tokio::io::stdout();
                tokio::io::copy(&mut from_server, &mut stdout).await?;
                stdout.flush().await
            };
            tokio::select! {
                r = upstream => {
                    r.context("forwarding stdin to the server")?;
                    Ok(ExitCode::SUCCESS)
                }
                r = downstream => {
                    r.context("forwarding the server's stdout")?;
                    bail!("{id}: the server closed its stdout (it exited or was stopped)")
                }
            }
        }
        McpChannel::Http(endpoint) => {
            eprintln!(
                "mcp-orch: {id} serves {} at {}: point an HTTP MCP client at that URL \
                 (attach carries stdio servers only)",
                endpoint.transport, endpoint.url
            );
            Ok(ExitCode::FAILURE)
        }
        other => bail!("{id}: unsupported channel {other:?}"),
    }
}

async fn logs(args: LogsArgs, o: &dyn McpOrchestrator) -> Result<ExitCode> {
    let since = args
        .since
        .as_deref()
        .map(|s| crate::time::parse_since(s, Timestamp::now()))
        .transpose()
        .map_err(usage)?;
    let options = LogOptions {
        tail: args.tail,
        since,
        timestamps: args.timestamps,
        follow: args.follow,
        stream: match args.stream {
            StreamArg::All => StreamSelector::All,
            StreamArg::Stdout => StreamSelector::Stdout,
            StreamArg::Stderr => StreamSelector::Stderr,
        },
        previous: args.previous,
    };
    let mut interrupts = Interrupts::listen()?;
    let stream = o.get_logs(&InstanceId::new(&args.id), &options).await?;
    print_stream(stream, args.timestamps, &mut interrupts).await?;
    Ok(ExitCode::SUCCESS)
}

async fn stop(ids: &[String], grace: Duration, o: &dyn McpOrchestrator) -> Result<ExitCode> {
    let mut failed = 0;
    for id in ids {
        match o.stop_server(&InstanceId::new(id), grace).await {
            Ok(()) => println!("{id}"),
            Err(e) => {
                failed += 1;
                eprintln!("error: {}", stop_error(id, &e));
            }
        }
    }
    if failed > 0 && failed == ids.len() && ids.len() == 1 {
        // The message was printed; exit non-zero without repeating it.
        return Ok(ExitCode::FAILURE);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn stop_error(id: &str, e: &OrchestratorError) -> String {
    match e {
        OrchestratorError::NotFound { .. } => {
            format!("instance {id:?} not found (see `mcp-orch ps`)")
        }
        other => other.to_string(),
    }
}

#[cfg(feature = "kubernetes")]
fn manifests(
    file: &Path,
    namespace: Option<String>,
    config: &OrchestratorConfig,
) -> Result<ExitCode> {
    use mcp_k8s_resources::{BuildOptions, build_instance, to_yaml};
    let spec = mcp_factory::load_server_spec(file)?;
    let mut k8s = config.kubernetes();
    if let Some(ns) = namespace {
        k8s.namespace = ns;
    }
    let id = InstanceId::new(mcp_factory::mcp_types::new_instance_name(&spec.name));
    let resources = build_instance(
        &spec,
        &id,
        &BuildOptions::from_config(&k8s, Timestamp::now()),
    )
    .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    print!("{}", to_yaml(&resources.manifests())?);
    Ok(ExitCode::SUCCESS)
}
