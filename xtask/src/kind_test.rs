//! `cargo xtask kind-test`: the Kubernetes integration tests against a real, throw-away kind
//! cluster, or a printed plan (`--dry-run`), or a clear "skipped" when kind, kubectl, a Docker
//! engine or the kind node image is missing.
//!
//! The run is a [`Plan`] (a list of commands, plus the teardown that always follows) handed to
//! one executor, [`execute`]. The real run and `--dry-run` go through the same executor and differ
//! only in the [`Host`] that carries out the commands, so the printed plan is exactly what a real
//! run does.

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Usage of the subcommand.
pub(crate) const USAGE: &str = "\
cargo xtask kind-test [--dry-run] [--keep] [--require]

Creates the kind cluster `mcpctl-test` from tests/integration/kubernetes/kind-config.yaml, builds
and loads the test images, applies examples/k8s/namespace.yaml and rbac.yaml, runs the Kubernetes
integration tests (crate mcp-k8s-integration) as the `mcpctl` service account, and deletes the
cluster again, also when the tests fail.

  --dry-run   print every check and command (with its arguments) without running any
  --keep      leave the cluster running afterwards (delete it with `kind delete cluster --name mcpctl-test`)
  --require   fail instead of skipping when kind, kubectl, Docker or the node image is missing
              (MCPCTL_REQUIRE_KIND=1 does the same)";

/// Name of the kind cluster.
pub(crate) const CLUSTER: &str = "mcpctl-test";
/// kubectl context kind writes for [`CLUSTER`].
pub(crate) const CONTEXT: &str = "kind-mcpctl-test";
/// The kind cluster configuration, relative to the workspace root; it pins the node image.
pub(crate) const KIND_CONFIG: &str = "tests/integration/kubernetes/kind-config.yaml";
/// Namespace the tests run in (created by `examples/k8s/namespace.yaml`).
pub(crate) const NAMESPACE: &str = "mcpctl";
/// Service account of the backend (created by `examples/k8s/rbac.yaml`); the tests' orchestrator
/// authenticates as it, so the Role's verbs are proven sufficient.
pub(crate) const SERVICE_ACCOUNT: &str = "mcpctl";
/// Tag of the test MCP server image loaded into the cluster (not `latest`, so pods use
/// `imagePullPolicy: IfNotPresent` and never try a registry).
pub(crate) const SERVER_IMAGE: &str = "mcp-test-server:kind";
/// Tag of the network/storage probe image loaded into the cluster.
pub(crate) const PROBE_IMAGE: &str = "mcpctl-probe:kind";
/// The integration test crate.
pub(crate) const TEST_PACKAGE: &str = "mcp-k8s-integration";
/// The probe crate, built as a static binary for a `FROM scratch` image.
pub(crate) const PROBE_PACKAGE: &str = "mcp-k8s-probe";
/// Target and profile of the static probe build (the same as the test server's).
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";
const STATIC_PROFILE: &str = "test-static";
/// Working files (kubeconfig, token, static probe build), relative to the workspace root.
const WORK_DIR: &str = "target/kind-test";
/// Turns a missing tool into a failure, like `--require`.
pub(crate) const REQUIRE_ENV: &str = "MCPCTL_REQUIRE_KIND";

/// Parsed command-line options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) dry_run: bool,
    pub(crate) keep: bool,
    pub(crate) require: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Option<Self>> {
        let mut o = Self::default();
        for arg in args {
            match arg.as_str() {
                "--dry-run" => o.dry_run = true,
                "--keep" => o.keep = true,
                "--require" => o.require = true,
                "-h" | "--help" => return Ok(None),
                other => bail!("unknown kind-test option {other:?}\n\n{USAGE}"),
            }
        }
        Ok(Some(o))
    }
}

/// A command line with its environment and, optionally, a file that receives its stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cmd {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) envs: Vec<(String, String)>,
    pub(crate) stdout_to: Option<PathBuf>,
}

impl Cmd {
    fn new(program: impl Into<String>, args: &[&str]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            envs: Vec::new(),
            stdout_to: None,
        }
    }

    fn args_from(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.envs.push((key.to_owned(), value.into()));
        self
    }

    fn stdout_to(mut self, path: PathBuf) -> Self {
        self.stdout_to = Some(path);
        self
    }
}

/// Shell-like rendering: `K=V program arg 'quoted arg' > file`.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = |s: &str| {
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
            {
                s.to_owned()
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        };
        for (k, v) in &self.envs {
            write!(f, "{k}={} ", quote(v))?;
        }
        f.write_str(&quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", quote(a))?;
        }
        if let Some(path) = &self.stdout_to {
            write!(f, " > {}", quote(&path.display().to_string()))?;
        }
        Ok(())
    }
}

/// One step of the plan: what it is for, and the command that does it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) about: &'static str,
    pub(crate) cmd: Cmd,
}

/// Everything a run does: the steps in order (stopping at the first failure), then the
/// teardown, which runs whatever happened unless `--keep` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) steps: Vec<Step>,
    pub(crate) teardown: Vec<Step>,
}

/// Paths and names a plan is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The workspace root (commands run there).
    pub(crate) root: PathBuf,
    /// The cargo that runs xtask.
    pub(crate) cargo: String,
}

impl Layout {
    fn work(&self, name: &str) -> PathBuf {
        self.root.join(WORK_DIR).join(name)
    }

    /// kind writes the cluster's admin credentials here instead of `~/.kube/config`.
    pub(crate) fn kubeconfig(&self) -> PathBuf {
        self.work("kubeconfig")
    }

    /// The `mcpctl` service account's token.
    pub(crate) fn token_file(&self) -> PathBuf {
        self.work("mcpctl.token")
    }

    fn probe_target_dir(&self) -> PathBuf {
        self.work("static-probe")
    }

    pub(crate) fn probe_binary(&self) -> PathBuf {
        self.probe_target_dir()
            .join(STATIC_TARGET)
            .join(STATIC_PROFILE)
            .join(PROBE_PACKAGE)
    }
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// The plan of a run.
pub(crate) fn plan(layout: &Layout) -> Plan {
    let mut steps = vec![
        Step {
            about: "delete a cluster left over from an earlier --keep run (no-op when absent)",
            cmd: delete_cluster(layout),
        },
        Step {
            about: "create the cluster (node image pinned in the config; kindnet enforces NetworkPolicy)",
            cmd: Cmd::new(
                "kind",
                &[
                    "create",
                    "cluster",
                    "--name",
                    CLUSTER,
                    "--config",
                    KIND_CONFIG,
                ],
            )
            .arg("--kubeconfig")
            .arg(path_arg(&layout.kubeconfig()))
            .arg("--wait")
            .arg("180s"),
        },
    ];
    steps.extend(image_steps(layout));
    steps.extend([
        Step {
            about: "apply the generated namespace (restricted Pod Security) and the backend's RBAC",
            cmd: kubectl(
                layout,
                &[
                    "apply",
                    "-f",
                    "examples/k8s/namespace.yaml",
                    "-f",
                    "examples/k8s/rbac.yaml",
                ],
            ),
        },
        Step {
            about: "issue a token for the mcpctl service account (the orchestrator under test uses it)",
            cmd: kubectl(
                layout,
                &[
                    "create",
                    "token",
                    SERVICE_ACCOUNT,
                    "--namespace",
                    NAMESPACE,
                    "--duration",
                    "2h",
                ],
            )
            .stdout_to(layout.token_file()),
        },
        test_step(layout),
    ]);
    let teardown = vec![Step {
        about: "delete the cluster (runs even when a step failed; skipped with --keep)",
        cmd: delete_cluster(layout),
    }];
    Plan { steps, teardown }
}

fn delete_cluster(layout: &Layout) -> Cmd {
    Cmd::new(
        "kind",
        &["delete", "cluster", "--name", CLUSTER, "--kubeconfig"],
    )
    .arg(path_arg(&layout.kubeconfig()))
}

/// kubectl on the kind cluster's own kubeconfig and context, never the user's.
fn kubectl(layout: &Layout, args: &[&str]) -> Cmd {
    Cmd::new("kubectl", &["--kubeconfig"])
        .arg(path_arg(&layout.kubeconfig()))
        .args_from(&["--context", CONTEXT])
        .args_from(args)
}

/// Build the static probe, build both images, load them into the node.
fn image_steps(layout: &Layout) -> [Step; 3] {
    [
        Step {
            about: "build the probe as a static binary (for a FROM scratch image)",
            cmd: Cmd::new(
                layout.cargo.clone(),
                &[
                    "build",
                    "--locked",
                    "--package",
                    PROBE_PACKAGE,
                    "--profile",
                    STATIC_PROFILE,
                    "--target",
                    STATIC_TARGET,
                    "--target-dir",
                ],
            )
            .arg(path_arg(&layout.probe_target_dir()))
            .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static"),
        },
        Step {
            about: "build the test MCP server and probe images in the local Docker engine",
            cmd: Cmd::new(
                layout.cargo.clone(),
                &[
                    "run",
                    "--locked",
                    "--package",
                    TEST_PACKAGE,
                    "--bin",
                    "kind-images",
                    "--",
                    "--server-tag",
                    SERVER_IMAGE,
                    "--probe-tag",
                    PROBE_IMAGE,
                    "--probe-binary",
                ],
            )
            .arg(path_arg(&layout.probe_binary())),
        },
        Step {
            about: "load the images into the cluster's node (nothing is pulled from a registry)",
            cmd: Cmd::new(
                "kind",
                &[
                    "load",
                    "docker-image",
                    "--name",
                    CLUSTER,
                    SERVER_IMAGE,
                    PROBE_IMAGE,
                ],
            ),
        },
    ]
}

/// The integration tests, told where the cluster is through environment variables. Seen at build
/// time, `MCPCTL_KIND_CLUSTER` also turns on the `mcpctl_kind` cfg (the package's `build.rs`)
/// without which every kind test is compiled as ignored.
fn test_step(layout: &Layout) -> Step {
    Step {
        about: "run the Kubernetes integration tests against the cluster",
        cmd: Cmd::new(
            layout.cargo.clone(),
            &[
                "test",
                "--locked",
                "--package",
                TEST_PACKAGE,
                "--test",
                "kind",
                "--",
                "--nocapture",
            ],
        )
        .env("MCPCTL_KIND_CLUSTER", CLUSTER)
        .env("MCPCTL_KIND_KUBECONFIG", path_arg(&layout.kubeconfig()))
        .env("MCPCTL_KIND_CONTEXT", CONTEXT)
        .env("MCPCTL_KIND_NAMESPACE", NAMESPACE)
        .env("MCPCTL_KIND_TOKEN_FILE", path_arg(&layout.token_file()))
        .env("MCPCTL_KIND_IMAGE", SERVER_IMAGE)
        .env("MCPCTL_KIND_PROBE_IMAGE", PROBE_IMAGE)
        .env(REQUIRE_ENV, "1"),
    }
}

/// Something the run needs that is not there, and how to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Missing {
    pub(crate) what: String,
    pub(crate) why: String,
    pub(crate) fix: String,
}

/// Carries out checks and commands: the machine itself, or a dry run that only prints.
pub(crate) trait Host {
    /// The program's path when it is on `PATH`.
    fn find_program(&self, name: &str) -> Option<PathBuf>;
    /// Runs a check quietly; whether it succeeded.
    fn probe(&mut self, cmd: &Cmd) -> bool;
    /// Runs a check quietly and returns what it printed on stdout, `None` if it failed.
    fn capture(&mut self, cmd: &Cmd) -> Option<String>;
    /// Runs a step, failing when the command fails.
    ///
    /// # Errors
    /// The command could not be started or exited non-zero.
    fn run(&mut self, cmd: &Cmd) -> Result<()>;
}

/// The real machine: programs looked up on `path`, commands run in `root`.
#[derive(Debug, Clone)]
pub(crate) struct RealHost {
    pub(crate) root: PathBuf,
    pub(crate) path: OsString,
}

impl RealHost {
    fn command(&self, cmd: &Cmd) -> Command {
        let program = self
            .find_program(&cmd.program)
            .unwrap_or_else(|| PathBuf::from(&cmd.program));
        let mut c = Command::new(program);
        c.args(&cmd.args)
            .current_dir(&self.root)
            .env("PATH", &self.path);
        for (k, v) in &cmd.envs {
            c.env(k, v);
        }
        c
    }
}

impl Host for RealHost {
    fn find_program(&self, name: &str) -> Option<PathBuf> {
        if name.contains('/') {
            let p = PathBuf::from(name);
            return p.is_file().then_some(p);
        }
        std::env::split_paths(&self.path)
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    }

    fn probe(&mut self, cmd: &Cmd) -> bool {
        self.command(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn capture(&mut self, cmd: &Cmd) -> Option<String> {
        let out = self
            .command(cmd)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn run(&mut self, cmd: &Cmd) -> Result<()> {
        let mut c = self.command(cmd);
        c.stdin(Stdio::null());
        if let Some(path) = &cmd.stdout_to {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            c.stdout(file);
        }
        let status = c.status().with_context(|| format!("could not run {cmd}"))?;
        if !status.success() {
            bail!("`{cmd}` failed ({status})");
        }
        Ok(())
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Prints instead of running: `--dry-run`.
#[derive(Debug, Default)]
pub(crate) struct DryRun;

impl Host for DryRun {
    fn find_program(&self, _: &str) -> Option<PathBuf> {
        None
    }

    fn probe(&mut self, _: &Cmd) -> bool {
        true
    }

    fn capture(&mut self, _: &Cmd) -> Option<String> {
        None
    }

    fn run(&mut self, _: &Cmd) -> Result<()> {
        Ok(())
    }
}

/// The oldest kind that can run the pinned node image: from v0.27.0 on, `kind load
/// docker-image` detects the containerd snapshotter of containerd 2.x nodes (older kind fails
/// with "failed to detect containerd snapshotter"), and the image was built by v0.31.0.
pub(crate) const KIND_FLOOR: (u32, u32, u32) = (0, 27, 0);

fn kind_version_cmd() -> Cmd {
    Cmd::new("kind", &["version"])
}

/// The version `kind version` prints (`kind v0.31.0 go1.25.1 linux/amd64`, pre-release
/// suffixes ignored).
pub(crate) fn parse_kind_version(output: &str) -> Option<(u32, u32, u32)> {
    let word = output.split_whitespace().find_map(|w| {
        w.strip_prefix('v')
            .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
    })?;
    let core = word.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Whether kind is new enough, else what is missing and why.
fn check_kind_version(host: &mut dyn Host) -> Option<Missing> {
    let floor = format!("v{}.{}.{}", KIND_FLOOR.0, KIND_FLOOR.1, KIND_FLOOR.2);
    let fix = format!(
        "install kind {floor} or newer (v0.31.0 built the pinned node image): `go install sigs.k8s.io/kind@v0.31.0`, or a release binary"
    );
    let printed = host.capture(&kind_version_cmd());
    match printed.as_deref().map(parse_kind_version) {
        Some(Some(found)) if found >= KIND_FLOOR => None,
        Some(Some((major, minor, patch))) => Some(Missing {
            what: format!("kind {floor} or newer"),
            why: format!(
                "found kind v{major}.{minor}.{patch}: older kind cannot `kind load docker-image` into the pinned node image (containerd 2.x: \"failed to detect containerd snapshotter\")"
            ),
            fix,
        }),
        _ => Some(Missing {
            what: format!("kind {floor} or newer"),
            why: format!(
                "`{}` did not print a version ({:?})",
                kind_version_cmd(),
                printed.unwrap_or_default().trim()
            ),
            fix,
        }),
    }
}

/// The tools the run needs, each with how to install it.
const TOOLS: [(&str, &str); 3] = [
    (
        "kind",
        "install kind v0.27.0 or newer (v0.31.0 built the pinned node image): \
         `go install sigs.k8s.io/kind@v0.31.0`, or a release binary (see the kind quick start, \
         kind.sigs.k8s.io/docs/user/quick-start)",
    ),
    (
        "kubectl",
        "install kubectl 1.33 or newer (see kubernetes.io/docs/tasks/tools), e.g. from the \
         Kubernetes apt repository: `apt-get install kubectl`",
    ),
    (
        "docker",
        "install Docker Engine and its CLI (Debian: `apt-get install docker.io`); kind runs the \
         cluster's node as a Docker container",
    ),
];

/// The node image pinned in the kind config (the first `image:` entry).
///
/// # Errors
/// The config cannot be read or names no image.
pub(crate) fn node_image(root: &Path) -> Result<String> {
    let path = root.join(KIND_CONFIG);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("image:"))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .find(|v| !v.is_empty())
        .with_context(|| format!("{KIND_CONFIG} names no node image"))
}

/// The preflight checks, as printed by `--dry-run`.
fn preflight_description(image: &str) -> Vec<String> {
    let mut lines: Vec<String> = TOOLS
        .iter()
        .map(|(tool, _)| format!("{tool} is on PATH"))
        .collect();
    lines.push(format!(
        "kind is v{}.{}.{} or newer (older kind cannot load images into the containerd 2.x node image): {}",
        KIND_FLOOR.0,
        KIND_FLOOR.1,
        KIND_FLOOR.2,
        kind_version_cmd()
    ));
    lines.push(format!("the Docker engine answers: {}", docker_info_cmd()));
    lines.push(format!(
        "the node image is present: {}, else {}",
        Cmd::new("docker", &["image", "inspect", image]),
        Cmd::new("docker", &["pull", image])
    ));
    lines
}

fn docker_info_cmd() -> Cmd {
    Cmd::new("docker", &["info", "--format", "{{.ServerVersion}}"])
}

/// Everything missing on `host`: each tool by name, then the engine, then the node image (only
/// checked, and pulled when absent, once the tools and the engine are there).
pub(crate) fn preflight(host: &mut dyn Host, image: &str) -> Vec<Missing> {
    let mut missing: Vec<Missing> = TOOLS
        .iter()
        .filter(|(tool, _)| host.find_program(tool).is_none())
        .map(|(tool, fix)| Missing {
            what: (*tool).to_owned(),
            why: "not found on PATH".to_owned(),
            fix: (*fix).to_owned(),
        })
        .collect();
    if host.find_program("kind").is_some() {
        missing.extend(check_kind_version(host));
    }
    if host.find_program("docker").is_some() && !host.probe(&docker_info_cmd()) {
        missing.push(Missing {
            what: "Docker engine".to_owned(),
            why: format!("`{}` failed", docker_info_cmd()),
            fix: "start the Docker daemon (`systemctl start docker`), or point DOCKER_HOST at a \
                  running engine this user may use"
                .to_owned(),
        });
    }
    if missing.is_empty()
        && !host.probe(&Cmd::new("docker", &["image", "inspect", image]))
        && !host.probe(&Cmd::new("docker", &["pull", image]))
    {
        missing.push(Missing {
            what: format!("kind node image {image}"),
            why: "not in the local Docker engine, and `docker pull` failed (no registry access?)"
                .to_owned(),
            fix: format!(
                "pull it where the registry is reachable (`docker pull {image}`), or copy it \
                 over: `docker save {image} -o kindest-node.tar` there and \
                 `docker load -i kindest-node.tar` here"
            ),
        });
    }
    missing
}

/// How a run ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The plan ran (or was printed) to the end.
    Done,
    /// Something was missing; nothing was created.
    Skipped,
}

/// Runs the plan's steps, stopping at the first failure, then the teardown (unless `keep`),
/// printing each command first. Returns the first error, of a step or else of the teardown.
///
/// # Errors
/// The first failing step (the teardown still ran), or a failing teardown.
pub(crate) fn execute(
    plan: &Plan,
    host: &mut dyn Host,
    out: &mut dyn Write,
    keep: bool,
) -> Result<()> {
    let total = plan.steps.len() + plan.teardown.len();
    let mut result = Ok(());
    for (i, step) in plan.steps.iter().enumerate() {
        writeln!(
            out,
            "\n==> [{}/{total}] {}\n    {}",
            i + 1,
            step.about,
            step.cmd
        )?;
        out.flush()?;
        if let Err(e) = host.run(&step.cmd) {
            result = Err(e.context(format!("kind-test step {:?} failed", step.about)));
            break;
        }
    }
    if keep {
        for step in &plan.teardown {
            writeln!(
                out,
                "\n==> --keep: not running `{}`; run it yourself when done",
                step.cmd
            )?;
        }
        return result;
    }
    for (i, step) in plan.teardown.iter().enumerate() {
        let n = plan.steps.len() + i + 1;
        writeln!(out, "\n==> [{n}/{total}] {}\n    {}", step.about, step.cmd)?;
        out.flush()?;
        if let Err(e) = host.run(&step.cmd) {
            if result.is_ok() {
                result = Err(e.context("kind-test teardown failed"));
            } else {
                writeln!(out, "    teardown failed too: {e:#}")?;
            }
        }
    }
    result
}

/// The whole subcommand on `host`, printing to `out`.
///
/// # Errors
/// A failing step or teardown; with `require`, anything missing.
pub(crate) fn run_on(
    opts: Options,
    layout: &Layout,
    host: &mut dyn Host,
    out: &mut dyn Write,
) -> Result<Outcome> {
    let image = node_image(&layout.root)?;
    let plan = plan(layout);
    if opts.dry_run {
        writeln!(
            out,
            "kind-test --dry-run: the checks and commands a run performs, in order (nothing is run)"
        )?;
        writeln!(
            out,
            "\npreflight (anything missing => skipped, or failed with --require):"
        )?;
        for line in preflight_description(&image) {
            writeln!(out, "    check: {line}")?;
        }
    } else {
        let missing = preflight(host, &image);
        if !missing.is_empty() {
            let verdict = if opts.require { "FAILED" } else { "skipped" };
            writeln!(
                out,
                "kind-test: {verdict}: {} missing; nothing was created:",
                missing.len()
            )?;
            for m in &missing {
                writeln!(
                    out,
                    "  - {}: {}\n      how to fix: {}",
                    m.what, m.why, m.fix
                )?;
            }
            if opts.require {
                bail!(
                    "kind-test --require: missing {}",
                    missing
                        .iter()
                        .map(|m| m.what.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            writeln!(
                out,
                "(pass --require or set {REQUIRE_ENV}=1 to fail instead of skipping)"
            )?;
            return Ok(Outcome::Skipped);
        }
    }
    execute(&plan, host, out, opts.keep)?;
    if opts.dry_run {
        writeln!(
            out,
            "\nkind-test --dry-run: {} steps planned",
            plan.steps.len() + plan.teardown.len()
        )?;
    } else {
        writeln!(out, "\nkind-test: all steps passed")?;
    }
    Ok(Outcome::Done)
}

/// Runs the subcommand with the arguments that follow `kind-test`.
///
/// # Errors
/// As [`run_on`].
pub(crate) fn run(args: &[String]) -> Result<()> {
    let Some(mut opts) = Options::parse(args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    opts.require |= std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
    let layout = Layout {
        root: crate::workspace_root(),
        cargo: crate::cargo(),
    };
    let mut stdout = std::io::stdout();
    if opts.dry_run {
        run_on(opts, &layout, &mut DryRun, &mut stdout).map(drop)
    } else {
        let mut host = RealHost {
            root: layout.root.clone(),
            path: std::env::var_os("PATH").unwrap_or_default(),
        };
        let work = layout.root.join(WORK_DIR);
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        run_on(opts, &layout, &mut host, &mut stdout).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            root: crate::workspace_root(),
            cargo: "cargo".to_owned(),
        }
    }

    /// Records what it is asked to do; programs in `present` exist; commands whose rendering
    /// contains a string in `failing` fail.
    #[derive(Default)]
    struct FakeHost {
        present: Vec<&'static str>,
        failing: Vec<&'static str>,
        ran: Vec<String>,
        probed: Vec<String>,
        /// What `kind version` prints (`None`: v0.31.0's output).
        kind_version: Option<&'static str>,
    }

    impl Host for FakeHost {
        fn find_program(&self, name: &str) -> Option<PathBuf> {
            self.present
                .contains(&name)
                .then(|| PathBuf::from("/usr/bin").join(name))
        }
        fn probe(&mut self, cmd: &Cmd) -> bool {
            let shown = cmd.to_string();
            self.probed.push(shown.clone());
            !self.failing.iter().any(|f| shown.contains(f))
        }
        fn capture(&mut self, cmd: &Cmd) -> Option<String> {
            let shown = cmd.to_string();
            self.probed.push(shown.clone());
            (shown == "kind version").then(|| {
                self.kind_version
                    .unwrap_or("kind v0.31.0 go1.25.1 linux/amd64\n")
                    .to_owned()
            })
        }
        fn run(&mut self, cmd: &Cmd) -> Result<()> {
            let shown = cmd.to_string();
            self.ran.push(shown.clone());
            if self.failing.iter().any(|f| shown.contains(f)) {
                bail!("{shown} failed");
            }
            Ok(())
        }
    }

    fn output(f: impl FnOnce(&mut Vec<u8>) -> Result<Outcome>) -> (Result<Outcome>, String) {
        let mut buf = Vec::new();
        let r = f(&mut buf);
        (r, String::from_utf8(buf).unwrap())
    }

    #[test]
    fn plan_creates_loads_applies_tests_and_tears_down_in_order() {
        let l = layout();
        let p = plan(&l);
        let shown: Vec<String> = p.steps.iter().map(|s| s.cmd.to_string()).collect();
        let position = |needle: &str| {
            shown
                .iter()
                .position(|s| s.contains(needle))
                .unwrap_or_else(|| panic!("no step contains {needle:?}: {shown:#?}"))
        };
        let create = position(
            "kind create cluster --name mcpctl-test --config tests/integration/kubernetes/kind-config.yaml",
        );
        let probe = position("build --locked --package mcp-k8s-probe --profile test-static");
        let images = position(
            "--bin kind-images -- --server-tag mcp-test-server:kind --probe-tag mcpctl-probe:kind",
        );
        let load = position(
            "kind load docker-image --name mcpctl-test mcp-test-server:kind mcpctl-probe:kind",
        );
        let apply = position("apply -f examples/k8s/namespace.yaml -f examples/k8s/rbac.yaml");
        let token = position("create token mcpctl --namespace mcpctl --duration 2h >");
        let test = position("cargo test --locked --package mcp-k8s-integration --test kind");
        assert!(
            create < probe && probe < images && images < load,
            "{shown:#?}"
        );
        assert!(load < apply && apply < token && token < test, "{shown:#?}");
        assert_eq!(test, shown.len() - 1, "the tests are the last step");
        assert!(shown[0].starts_with("kind delete cluster --name mcpctl-test"));
        // kubectl always names the kind cluster's kubeconfig and context, never the user's.
        for s in shown.iter().filter(|s| s.starts_with("kubectl")) {
            assert!(
                s.contains("target/kind-test/kubeconfig --context kind-mcpctl-test"),
                "{s}"
            );
        }
        let test_cmd = &p.steps[test].cmd;
        for (k, v) in [
            ("MCPCTL_KIND_CLUSTER", "mcpctl-test"),
            ("MCPCTL_KIND_CONTEXT", "kind-mcpctl-test"),
            ("MCPCTL_KIND_NAMESPACE", "mcpctl"),
            ("MCPCTL_KIND_IMAGE", "mcp-test-server:kind"),
            ("MCPCTL_KIND_PROBE_IMAGE", "mcpctl-probe:kind"),
            (REQUIRE_ENV, "1"),
        ] {
            assert!(
                test_cmd.envs.contains(&(k.to_owned(), v.to_owned())),
                "{k}={v} missing from {test_cmd}"
            );
        }
        let token_file = path_arg(&l.token_file());
        assert!(
            test_cmd
                .envs
                .contains(&("MCPCTL_KIND_TOKEN_FILE".to_owned(), token_file))
        );
        assert_eq!(p.teardown.len(), 1);
        assert!(
            p.teardown[0]
                .cmd
                .to_string()
                .starts_with("kind delete cluster --name mcpctl-test")
        );
    }

    #[test]
    fn dry_run_prints_every_step_and_runs_nothing() {
        let l = layout();
        let opts = Options {
            dry_run: true,
            ..Options::default()
        };
        let (r, out) = output(|buf| run_on(opts, &l, &mut DryRun, buf));
        assert_eq!(r.unwrap(), Outcome::Done);
        let p = plan(&l);
        for step in p.steps.iter().chain(&p.teardown) {
            assert!(out.contains(&step.cmd.to_string()), "{out}");
            assert!(out.contains(step.about), "{out}");
        }
        assert!(out.contains("check: kind is on PATH"), "{out}");
        assert!(
            out.contains("check: kind is v0.27.0 or newer (older kind cannot load images into the containerd 2.x node image): kind version"),
            "{out}"
        );
        assert!(
            out.contains("docker image inspect kindest/node:v1.33"),
            "{out}"
        );
        assert!(out.contains("[9/9] delete the cluster"), "{out}");
        assert!(out.contains("9 steps planned"), "{out}");
    }

    #[test]
    fn teardown_runs_when_the_tests_fail_and_the_test_error_wins() {
        let l = layout();
        let mut host = FakeHost {
            failing: vec!["cargo test"],
            ..FakeHost::default()
        };
        let err = execute(&plan(&l), &mut host, &mut Vec::new(), false).unwrap_err();
        assert!(format!("{err:#}").contains("integration tests"), "{err:#}");
        let last = host.ran.last().unwrap();
        assert!(
            last.starts_with("kind delete cluster --name mcpctl-test"),
            "{last}"
        );
        assert_eq!(host.ran.len(), plan(&l).steps.len() + 1);
    }

    #[test]
    fn a_failing_create_stops_the_steps_but_not_the_teardown() {
        let l = layout();
        let mut host = FakeHost {
            failing: vec!["kind create"],
            ..FakeHost::default()
        };
        assert!(execute(&plan(&l), &mut host, &mut Vec::new(), false).is_err());
        assert_eq!(host.ran.len(), 3, "{:#?}", host.ran);
        assert!(host.ran[2].starts_with("kind delete cluster"));
    }

    #[test]
    fn keep_leaves_the_cluster() {
        let l = layout();
        let mut host = FakeHost::default();
        let mut out = Vec::new();
        execute(&plan(&l), &mut host, &mut out, true).unwrap();
        assert_eq!(host.ran.len(), plan(&l).steps.len());
        assert!(!host.ran.last().unwrap().contains("delete"));
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("--keep: not running `kind delete cluster")
        );
    }

    #[test]
    fn missing_tools_are_each_named_with_an_install_hint_and_skip() {
        let l = layout();
        let mut host = FakeHost {
            present: vec!["docker"],
            ..FakeHost::default()
        };
        let (r, out) = output(|buf| run_on(Options::default(), &l, &mut host, buf));
        assert_eq!(r.unwrap(), Outcome::Skipped);
        assert!(out.contains("kind-test: skipped: 2 missing"), "{out}");
        assert!(out.contains("  - kind: not found on PATH"), "{out}");
        assert!(out.contains("go install sigs.k8s.io/kind@"), "{out}");
        assert!(out.contains("  - kubectl: not found on PATH"), "{out}");
        assert!(!out.contains("  - docker:"), "{out}");
        // Nothing ran, and the node image was not pulled while tools are missing.
        assert!(host.ran.is_empty(), "{:?}", host.ran);
        assert!(
            !host.probed.iter().any(|p| p.contains("pull")),
            "{:?}",
            host.probed
        );
    }

    #[test]
    fn kind_versions_parse_and_older_than_the_floor_is_refused_with_the_reason() {
        assert_eq!(
            parse_kind_version("kind v0.31.0 go1.25.1 linux/amd64"),
            Some((0, 31, 0))
        );
        assert_eq!(
            parse_kind_version("kind v0.27.0-alpha+8d1a2b3c go1.23 linux/arm64"),
            Some((0, 27, 0))
        );
        assert_eq!(parse_kind_version("kind version unknown"), None);
        let l = layout();
        let image = node_image(&l.root).unwrap();
        let present = vec!["kind", "kubectl", "docker"];
        for ok in [
            "kind v0.27.0 go1.22 linux/amd64",
            "kind v1.0.0 go1.26 linux/amd64",
        ] {
            let mut host = FakeHost {
                present: present.clone(),
                kind_version: Some(ok),
                ..FakeHost::default()
            };
            assert!(preflight(&mut host, &image).is_empty(), "{ok}");
        }
        let mut host = FakeHost {
            present: present.clone(),
            kind_version: Some("kind v0.24.0 go1.22.6 linux/amd64"),
            ..FakeHost::default()
        };
        let (r, out) = output(|buf| run_on(Options::default(), &l, &mut host, buf));
        assert_eq!(r.unwrap(), Outcome::Skipped);
        assert!(
            out.contains("  - kind v0.27.0 or newer: found kind v0.24.0: older kind cannot `kind load docker-image`"),
            "{out}"
        );
        assert!(
            out.contains("failed to detect containerd snapshotter"),
            "{out}"
        );
        assert!(host.ran.is_empty(), "{:?}", host.ran);
        let mut host = FakeHost {
            present,
            kind_version: Some("garbage"),
            ..FakeHost::default()
        };
        let missing = preflight(&mut host, &image);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].why.contains("did not print a version"),
            "{missing:?}"
        );
    }

    #[test]
    fn require_turns_a_skip_into_a_failure() {
        let l = layout();
        let mut host = FakeHost::default();
        let opts = Options {
            require: true,
            ..Options::default()
        };
        let (r, out) = output(|buf| run_on(opts, &l, &mut host, buf));
        let err = r.unwrap_err().to_string();
        assert!(err.contains("missing kind, kubectl, docker"), "{err}");
        assert!(out.contains("kind-test: FAILED: 3 missing"), "{out}");
    }

    #[test]
    fn an_unreachable_engine_and_an_unpullable_node_image_are_reported() {
        let l = layout();
        let mut host = FakeHost {
            present: vec!["kind", "kubectl", "docker"],
            failing: vec!["docker info"],
            ..FakeHost::default()
        };
        let image = node_image(&l.root).unwrap();
        let missing = preflight(&mut host, &image);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing[0].what, "Docker engine");

        let mut host = FakeHost {
            present: vec!["kind", "kubectl", "docker"],
            failing: vec!["docker image inspect", "docker pull"],
            ..FakeHost::default()
        };
        let (r, out) = output(|buf| run_on(Options::default(), &l, &mut host, buf));
        assert_eq!(r.unwrap(), Outcome::Skipped);
        assert!(
            out.contains(&format!("  - kind node image {image}")),
            "{out}"
        );
        assert!(out.contains("docker load -i"), "{out}");
    }

    /// On this machine, with an empty PATH: the real host finds no tool, so the real entry point
    /// skips with exit status 0, and fails with --require.
    #[test]
    fn real_host_without_tools_skips_and_require_fails() {
        let l = layout();
        let mut host = RealHost {
            root: l.root.clone(),
            path: OsString::new(),
        };
        let (r, out) = output(|buf| run_on(Options::default(), &l, &mut host, buf));
        assert_eq!(r.unwrap(), Outcome::Skipped, "{out}");
        for tool in ["kind", "kubectl", "docker"] {
            assert!(
                out.contains(&format!("  - {tool}: not found on PATH")),
                "{out}"
            );
        }
        let opts = Options {
            require: true,
            ..Options::default()
        };
        assert!(run_on(opts, &l, &mut host, &mut Vec::new()).is_err());
    }

    /// The real host end to end, with stub `kind`, `kubectl`, `docker` and `cargo` on PATH that
    /// log their arguments: every step is spawned with its arguments and environment, the token
    /// lands in its file, and a failing test step still deletes the cluster.
    #[test]
    fn real_host_runs_every_step_and_tears_down_after_a_failure() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = std::env::temp_dir().join(format!("xtask-kind-stubs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let (bin, root) = (tmp.join("bin"), tmp.join("root"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(root.join("tests/integration/kubernetes")).unwrap();
        std::fs::copy(
            crate::workspace_root().join(KIND_CONFIG),
            root.join(KIND_CONFIG),
        )
        .unwrap();
        let log = tmp.join("calls.log");
        let stub = |name: &str, body: &str| {
            let path = bin.join(name);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\necho \"{name} $* [cluster=$MCPCTL_KIND_CLUSTER]\" >> {}\n{body}\n",
                    log.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        stub(
            "kind",
            "[ \"$1\" = version ] && echo \"kind v0.31.0 go1.25.1 linux/amd64\"; exit 0",
        );
        stub("docker", "exit 0");
        stub(
            "kubectl",
            "case \"$*\" in *\"create token\"*) echo stub-token;; esac; exit 0",
        );
        stub("cargo", "[ \"$1\" = test ] && exit 1; exit 0");
        let layout = Layout {
            root: root.clone(),
            cargo: "cargo".to_owned(),
        };
        let mut host = RealHost {
            root: root.clone(),
            path: bin.clone().into_os_string(),
        };
        let (r, out) = output(|buf| run_on(Options::default(), &layout, &mut host, buf));
        let err = r.unwrap_err();
        assert!(
            format!("{err:#}").contains("integration tests"),
            "{err:#}\n{out}"
        );
        let calls = std::fs::read_to_string(&log).unwrap();
        let calls: Vec<&str> = calls.lines().collect();
        // Preflight, then the nine steps in order; the teardown ran after the failed tests.
        assert!(calls[0].starts_with("kind version"), "{calls:#?}");
        assert!(calls[1].starts_with("docker info"), "{calls:#?}");
        assert!(
            calls[2].starts_with("docker image inspect kindest/node:v1.33"),
            "{calls:#?}"
        );
        let steps = &calls[3..];
        assert_eq!(steps.len(), 9, "{calls:#?}");
        assert!(
            steps[1].starts_with("kind create cluster --name mcpctl-test --config"),
            "{steps:#?}"
        );
        assert!(steps[7].starts_with("cargo test --locked --package mcp-k8s-integration"));
        assert!(
            steps[7].ends_with("[cluster=mcpctl-test]"),
            "env reaches the tests: {steps:#?}"
        );
        assert!(
            steps[8].starts_with("kind delete cluster --name mcpctl-test"),
            "{steps:#?}"
        );
        assert_eq!(
            std::fs::read_to_string(layout.token_file()).unwrap(),
            "stub-token\n"
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn the_node_image_is_pinned_to_133_by_digest() {
        let image = node_image(&crate::workspace_root()).unwrap();
        assert!(image.starts_with("kindest/node:v1.33."), "{image}");
        let (_, digest) = image.split_once("@sha256:").unwrap();
        assert_eq!(digest.len(), 64, "{image}");
        assert!(digest.chars().all(|c| c.is_ascii_hexdigit()), "{image}");
    }

    #[test]
    fn options_and_quoting() {
        assert_eq!(
            Options::parse(&["--dry-run".into(), "--keep".into()]).unwrap(),
            Some(Options {
                dry_run: true,
                keep: true,
                require: false
            })
        );
        assert_eq!(Options::parse(&["--help".into()]).unwrap(), None);
        assert!(Options::parse(&["--bogus".into()]).is_err());
        let c = Cmd::new("docker", &["info", "--format", "{{.ServerVersion}}"])
            .env("A", "b c")
            .stdout_to(PathBuf::from("/tmp/x"));
        assert_eq!(
            c.to_string(),
            "A='b c' docker info --format '{{.ServerVersion}}' > /tmp/x"
        );
    }
}
