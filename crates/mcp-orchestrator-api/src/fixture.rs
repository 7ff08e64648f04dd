//! Fixture scripts: what a conformance test asks a server to do (print known lines, print an
//! environment variable or the working directory, write and print files, print a file named by
//! an environment variable and its mode, ignore SIGTERM, sleep, exit with a code, serve MCP,
//! keep running), encoded as command-line arguments that every backend can run.
//!
//! The workspace's test server binary (`mcp-test-server fixture ...`) executes a script from its
//! arguments; Docker and Kubernetes run that binary's image with the arguments; the process
//! backend runs the binary; the in-memory backend and the fake Kubernetes API interpret the
//! script directly with [`FixtureScript::parse_args`].

use std::fmt;
use std::time::Duration;

/// The first argument that marks a fixture script.
pub const FIXTURE_SUBCOMMAND: &str = "fixture";

/// One step of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixtureStep {
    /// Print a line on stdout.
    Stdout(String),
    /// Print a line on stderr.
    Stderr(String),
    /// Print `prefix-1` .. `prefix-N` on stdout.
    StdoutLines {
        /// Line prefix.
        prefix: String,
        /// How many lines.
        count: u64,
    },
    /// Wait.
    Sleep(Duration),
    /// Exit with this code (the last step; later steps never run).
    Exit(i32),
    /// Serve MCP until stopped (the last step; later steps never run). Steps before it should
    /// print on stderr only when serving stdio: stdout is then the MCP channel.
    Serve(ServeMode),
    /// Print `NAME=value` on stdout, or `NAME unset` when the variable is not set.
    PrintEnv(String),
    /// Print the working directory on stdout.
    PrintCwd,
    /// From here on SIGTERM (and SIGINT) no longer stop the server: only a kill does.
    IgnoreSigterm,
    /// Write `content` (and a newline) to the file at `path`, replacing it; the parent
    /// directory must exist. Prints [`write_line`] on stdout when done.
    WriteFile {
        /// Absolute path inside the server's filesystem.
        path: String,
        /// One line of text.
        content: String,
    },
    /// Print the lines of the file at `path` on stdout, or [`missing_line`] when it cannot be
    /// read.
    PrintFile(String),
    /// Open a TCP connection to `HOST:PORT` (waiting at most 5 s), close it, and print
    /// [`connect_line`] on stdout: whether the server's network reaches that address.
    Connect(String),
    /// Print the lines of the file whose path is the value of environment variable `NAME` (the
    /// `_FILE` convention of secret files), or [`missing_line`] of `$NAME` when the variable is
    /// unset or the file cannot be read.
    PrintEnvFile(String),
    /// Print [`mode_line`] of the file named by environment variable `NAME` (its permission
    /// bits as the server sees them), or [`missing_line`] of `$NAME`.
    PrintEnvFileMode(String),
    /// Fetch an `http://` URL with one HTTP/1.1 GET, through the proxy in `HTTP_PROXY` (or
    /// `http_proxy`) unless `NO_PROXY` names the host, and print [`fetch_line`] on stdout.
    Fetch(String),
}

/// The line [`FixtureStep::Fetch`] prints: `fetch URL: STATUS NOTE` when an answer came
/// (whatever its status), `fetch URL failed: REASON NOTE` when none did. `note` says how the
/// request went (`(via proxy HOST:PORT)`, `(direct)`) and carries a proxy's refusal reason.
pub fn fetch_line(url: &str, outcome: Result<u16, &str>, note: &str) -> String {
    match outcome {
        Ok(status) => format!("fetch {url}: {status} {note}"),
        Err(e) => format!("fetch {url} failed: {e} {note}"),
    }
}

/// The line [`FixtureStep::WriteFile`] prints once `path` is written, or `wrote PATH failed:
/// REASON` when it could not be.
pub fn write_line(path: &str, error: Option<&str>) -> String {
    match error {
        None => format!("wrote {path}"),
        Some(e) => format!("wrote {path} failed: {e}"),
    }
}

/// The line [`FixtureStep::PrintFile`] prints when `path` cannot be read.
pub fn missing_line(path: &str) -> String {
    format!("{path} unreadable")
}

/// The line [`FixtureStep::Connect`] prints: `connect TARGET ok`, or `connect TARGET failed:
/// REASON`.
pub fn connect_line(target: &str, error: Option<&str>) -> String {
    match error {
        None => format!("connect {target} ok"),
        Some(e) => format!("connect {target} failed: {e}"),
    }
}

/// The line [`FixtureStep::PrintEnvFileMode`] prints for the file named by variable `name` with
/// permission bits `mode`: `NAME mode 0400`.
pub fn mode_line(name: &str, mode: u32) -> String {
    format!("{name} mode {:04o}", mode & 0o7777)
}

/// What [`FixtureStep::PrintEnvFile`] and [`FixtureStep::PrintEnvFileMode`] call the file in
/// [`missing_line`]: `$NAME`.
pub fn env_file_name(name: &str) -> String {
    format!("${name}")
}

/// The line [`FixtureStep::PrintEnv`] prints for `name` with `value` (`None`: unset).
pub fn env_line(name: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{name}={v}"),
        None => format!("{name} unset"),
    }
}

/// How a [`FixtureStep::Serve`] step speaks MCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeMode {
    /// Newline-delimited JSON-RPC on stdin/stdout.
    Stdio,
    /// Streamable HTTP at `http://0.0.0.0:PORT/mcp`.
    Http {
        /// The container or host port.
        port: u16,
    },
}

impl fmt::Display for ServeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdio => f.write_str("stdio"),
            Self::Http { port } => write!(f, "http:{port}"),
        }
    }
}

impl std::str::FromStr for ServeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "stdio" {
            return Ok(Self::Stdio);
        }
        let port = s
            .strip_prefix("http:")
            .ok_or("expected stdio or http:PORT")?;
        match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Self::Http { port }),
            _ => Err(format!("bad port {port:?}")),
        }
    }
}

/// The path at which fixture servers (and `mcp-test-server http`) serve streamable HTTP.
pub const FIXTURE_HTTP_PATH: &str = "/mcp";

/// A sequence of steps. When the steps end without [`FixtureStep::Exit`] the server keeps
/// running (idle) until it is stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FixtureScript {
    /// The steps, in order.
    pub steps: Vec<FixtureStep>,
}

/// Arguments that are not a fixture script.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a fixture script: {0}")]
pub struct FixtureParseError(pub String);

impl FixtureScript {
    /// An empty script: runs idle until stopped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stdout line.
    pub fn stdout(mut self, line: impl Into<String>) -> Self {
        self.steps.push(FixtureStep::Stdout(line.into()));
        self
    }

    /// Adds a stderr line.
    pub fn stderr(mut self, line: impl Into<String>) -> Self {
        self.steps.push(FixtureStep::Stderr(line.into()));
        self
    }

    /// Adds `prefix-1` .. `prefix-count` on stdout.
    pub fn stdout_lines(mut self, prefix: impl Into<String>, count: u64) -> Self {
        self.steps.push(FixtureStep::StdoutLines {
            prefix: prefix.into(),
            count,
        });
        self
    }

    /// Adds a pause.
    pub fn sleep(mut self, d: Duration) -> Self {
        self.steps.push(FixtureStep::Sleep(d));
        self
    }

    /// Ends with an exit code.
    pub fn exit(mut self, code: i32) -> Self {
        self.steps.push(FixtureStep::Exit(code));
        self
    }

    /// Adds a line with an environment variable's value ([`env_line`]).
    pub fn print_env(mut self, name: impl Into<String>) -> Self {
        self.steps.push(FixtureStep::PrintEnv(name.into()));
        self
    }

    /// Adds a line with the working directory.
    pub fn print_cwd(mut self) -> Self {
        self.steps.push(FixtureStep::PrintCwd);
        self
    }

    /// Adds writing one line of `content` to the file at `path`.
    pub fn write_file(mut self, path: impl Into<String>, content: impl Into<String>) -> Self {
        self.steps.push(FixtureStep::WriteFile {
            path: path.into(),
            content: content.into(),
        });
        self
    }

    /// Adds printing the lines of the file at `path`.
    pub fn print_file(mut self, path: impl Into<String>) -> Self {
        self.steps.push(FixtureStep::PrintFile(path.into()));
        self
    }

    /// Adds a TCP connection attempt to `target` (`HOST:PORT`).
    pub fn connect(mut self, target: impl Into<String>) -> Self {
        self.steps.push(FixtureStep::Connect(target.into()));
        self
    }

    /// Adds printing the lines of the file named by environment variable `name`.
    pub fn print_env_file(mut self, name: impl Into<String>) -> Self {
        self.steps.push(FixtureStep::PrintEnvFile(name.into()));
        self
    }

    /// Adds printing the permission bits of the file named by environment variable `name`.
    pub fn print_env_file_mode(mut self, name: impl Into<String>) -> Self {
        self.steps.push(FixtureStep::PrintEnvFileMode(name.into()));
        self
    }

    /// Adds fetching an `http://` URL and printing the outcome ([`fetch_line`]).
    pub fn fetch(mut self, url: impl Into<String>) -> Self {
        self.steps.push(FixtureStep::Fetch(url.into()));
        self
    }

    /// Ignores SIGTERM from here on, so stopping needs the grace period's kill.
    pub fn ignore_sigterm(mut self) -> Self {
        self.steps.push(FixtureStep::IgnoreSigterm);
        self
    }

    /// Whether the script ignores SIGTERM at some point.
    pub fn ignores_sigterm(&self) -> bool {
        self.steps.contains(&FixtureStep::IgnoreSigterm)
    }

    /// Ends by serving MCP.
    pub fn serve(mut self, mode: ServeMode) -> Self {
        self.steps.push(FixtureStep::Serve(mode));
        self
    }

    /// How the script serves MCP at its end, if it does.
    pub fn serves(&self) -> Option<ServeMode> {
        self.steps.iter().find_map(|s| match s {
            FixtureStep::Serve(mode) => Some(*mode),
            _ => None,
        })
    }

    /// The exit code the script ends with, if it ends.
    pub fn exit_code(&self) -> Option<i32> {
        self.steps.iter().find_map(|s| match s {
            FixtureStep::Exit(c) => Some(*c),
            _ => None,
        })
    }

    /// The lines the script prints on stdout and stderr, in order, with their stream
    /// (`true` = stdout). Lines whose text depends on where the script runs
    /// ([`FixtureStep::PrintEnv`], [`FixtureStep::PrintCwd`], the file and fetch steps) are not
    /// included.
    pub fn expected_lines(&self) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        for s in &self.steps {
            match s {
                FixtureStep::Stdout(l) => out.push((true, l.clone())),
                FixtureStep::Stderr(l) => out.push((false, l.clone())),
                FixtureStep::StdoutLines { prefix, count } => {
                    out.extend((1..=*count).map(|i| (true, format!("{prefix}-{i}"))));
                }
                FixtureStep::Sleep(_)
                | FixtureStep::PrintEnv(_)
                | FixtureStep::PrintCwd
                | FixtureStep::IgnoreSigterm
                | FixtureStep::WriteFile { .. }
                | FixtureStep::PrintFile(_)
                | FixtureStep::Connect(_)
                | FixtureStep::PrintEnvFile(_)
                | FixtureStep::PrintEnvFileMode(_)
                | FixtureStep::Fetch(_) => {}
                FixtureStep::Exit(_) | FixtureStep::Serve(_) => break,
            }
        }
        out
    }

    /// Encodes the script as arguments: `fixture --stdout TEXT --stderr TEXT --lines N:PREFIX
    /// --sleep-ms MS --print-env NAME --print-cwd --ignore-sigterm --write-file PATH=CONTENT
    /// --print-file PATH --connect HOST:PORT --print-env-file NAME --print-env-file-mode NAME
    /// --fetch URL --exit CODE
    /// --serve stdio|http:PORT`, in step order.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![FIXTURE_SUBCOMMAND.to_owned()];
        for s in &self.steps {
            let (flag, value) = match s {
                FixtureStep::PrintCwd => {
                    args.push("--print-cwd".to_owned());
                    continue;
                }
                FixtureStep::IgnoreSigterm => {
                    args.push("--ignore-sigterm".to_owned());
                    continue;
                }
                FixtureStep::PrintEnv(name) => ("--print-env", name.clone()),
                FixtureStep::WriteFile { path, content } => {
                    ("--write-file", format!("{path}={content}"))
                }
                FixtureStep::PrintFile(path) => ("--print-file", path.clone()),
                FixtureStep::Connect(target) => ("--connect", target.clone()),
                FixtureStep::PrintEnvFile(name) => ("--print-env-file", name.clone()),
                FixtureStep::PrintEnvFileMode(name) => ("--print-env-file-mode", name.clone()),
                FixtureStep::Fetch(url) => ("--fetch", url.clone()),
                FixtureStep::Stdout(l) => ("--stdout", l.clone()),
                FixtureStep::Stderr(l) => ("--stderr", l.clone()),
                FixtureStep::StdoutLines { prefix, count } => {
                    ("--lines", format!("{count}:{prefix}"))
                }
                FixtureStep::Sleep(d) => ("--sleep-ms", d.as_millis().to_string()),
                FixtureStep::Exit(c) => ("--exit", c.to_string()),
                FixtureStep::Serve(mode) => ("--serve", mode.to_string()),
            };
            args.push(flag.to_owned());
            args.push(value);
        }
        args
    }

    /// Decodes [`FixtureScript::to_args`] output (the leading `fixture` is required).
    ///
    /// # Errors
    /// [`FixtureParseError`] when the arguments are not a fixture script.
    pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Self, FixtureParseError> {
        let mut it = args.iter().map(AsRef::as_ref);
        if it.next() != Some(FIXTURE_SUBCOMMAND) {
            return Err(FixtureParseError(format!(
                "the first argument must be {FIXTURE_SUBCOMMAND:?}"
            )));
        }
        let mut steps = Vec::new();
        while let Some(flag) = it.next() {
            match flag {
                "--print-cwd" => {
                    steps.push(FixtureStep::PrintCwd);
                    continue;
                }
                "--ignore-sigterm" => {
                    steps.push(FixtureStep::IgnoreSigterm);
                    continue;
                }
                _ => {}
            }
            let value = it
                .next()
                .ok_or_else(|| FixtureParseError(format!("{flag} needs a value")))?;
            let bad = |what: &str| FixtureParseError(format!("{flag} {value:?}: {what}"));
            steps.push(match flag {
                "--stdout" => FixtureStep::Stdout(value.to_owned()),
                "--stderr" => FixtureStep::Stderr(value.to_owned()),
                "--print-env" => FixtureStep::PrintEnv(value.to_owned()),
                "--write-file" => {
                    let (path, content) = value
                        .split_once('=')
                        .ok_or_else(|| bad("expected PATH=CONTENT"))?;
                    FixtureStep::WriteFile {
                        path: path.to_owned(),
                        content: content.to_owned(),
                    }
                }
                "--print-file" => FixtureStep::PrintFile(value.to_owned()),
                "--connect" => FixtureStep::Connect(value.to_owned()),
                "--print-env-file" => FixtureStep::PrintEnvFile(value.to_owned()),
                "--print-env-file-mode" => FixtureStep::PrintEnvFileMode(value.to_owned()),
                "--fetch" => FixtureStep::Fetch(value.to_owned()),
                "--lines" => {
                    let (count, prefix) = value
                        .split_once(':')
                        .ok_or_else(|| bad("expected COUNT:PREFIX"))?;
                    FixtureStep::StdoutLines {
                        prefix: prefix.to_owned(),
                        count: count.parse().map_err(|_| bad("bad count"))?,
                    }
                }
                "--sleep-ms" => FixtureStep::Sleep(Duration::from_millis(
                    value.parse().map_err(|_| bad("bad milliseconds"))?,
                )),
                "--exit" => FixtureStep::Exit(value.parse().map_err(|_| bad("bad exit code"))?),
                "--serve" => FixtureStep::Serve(value.parse().map_err(|e: String| bad(&e))?),
                other => return Err(FixtureParseError(format!("unknown flag {other:?}"))),
            });
        }
        Ok(Self { steps })
    }
}

impl fmt::Display for FixtureScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_args().join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let s = FixtureScript::new()
            .stdout("hello world")
            .stderr("--oops")
            .stdout_lines("line", 3)
            .sleep(Duration::from_millis(250))
            .exit(3);
        let served = FixtureScript::new()
            .stderr("up")
            .serve(ServeMode::Http { port: 8080 });
        assert_eq!(
            FixtureScript::parse_args(&served.to_args()).unwrap(),
            served
        );
        assert_eq!(served.serves(), Some(ServeMode::Http { port: 8080 }));
        assert_eq!(
            FixtureScript::parse_args(&FixtureScript::new().serve(ServeMode::Stdio).to_args())
                .unwrap()
                .serves(),
            Some(ServeMode::Stdio)
        );
        let probes = FixtureScript::new()
            .ignore_sigterm()
            .print_env("GREETING")
            .print_cwd()
            .fetch("http://a-host:8080/health")
            .stdout("x");
        assert_eq!(
            probes.to_args()[1..],
            [
                "--ignore-sigterm",
                "--print-env",
                "GREETING",
                "--print-cwd",
                "--fetch",
                "http://a-host:8080/health",
                "--stdout",
                "x"
            ]
        );
        assert_eq!(
            fetch_line("http://h/", Ok(200), "(direct)"),
            "fetch http://h/: 200 (direct)"
        );
        assert_eq!(
            fetch_line("http://h/", Err("refused"), "(direct)"),
            "fetch http://h/ failed: refused (direct)"
        );
        assert_eq!(
            FixtureScript::parse_args(&probes.to_args()).unwrap(),
            probes
        );
        assert!(probes.ignores_sigterm() && !s.ignores_sigterm());
        assert_eq!(probes.expected_lines(), [(true, "x".to_owned())]);
        assert_eq!(env_line("A", Some("b")), "A=b");
        assert_eq!(env_line("A", None), "A unset");
        let args = s.to_args();
        assert_eq!(args[0], "fixture");
        assert_eq!(FixtureScript::parse_args(&args).unwrap(), s);
        assert_eq!(s.exit_code(), Some(3));
        assert_eq!(s.expected_lines().len(), 5);
        assert_eq!(s.expected_lines()[4], (true, "line-3".to_owned()));
        let files = FixtureScript::new()
            .write_file("/data/a.txt", "x=1 y")
            .print_file("/data/a.txt");
        assert_eq!(
            files.to_args()[1..],
            [
                "--write-file",
                "/data/a.txt=x=1 y",
                "--print-file",
                "/data/a.txt"
            ]
        );
        assert_eq!(FixtureScript::parse_args(&files.to_args()).unwrap(), files);
        assert!(files.expected_lines().is_empty());
        assert!(FixtureScript::parse_args(&["fixture", "--write-file", "nopath"]).is_err());
    }

    #[test]
    fn network_and_secret_steps_round_trip() {
        let net = FixtureScript::new().connect("127.0.0.1:9");
        assert_eq!(net.to_args()[1..], ["--connect", "127.0.0.1:9"]);
        assert_eq!(FixtureScript::parse_args(&net.to_args()).unwrap(), net);
        assert!(net.expected_lines().is_empty());
        assert_eq!(connect_line("h:1", None), "connect h:1 ok");
        assert_eq!(
            connect_line("h:1", Some("refused")),
            "connect h:1 failed: refused"
        );
        let secrets = FixtureScript::new()
            .print_env_file("TOKEN_FILE")
            .print_env_file_mode("TOKEN_FILE");
        assert_eq!(
            secrets.to_args()[1..],
            [
                "--print-env-file",
                "TOKEN_FILE",
                "--print-env-file-mode",
                "TOKEN_FILE"
            ]
        );
        assert_eq!(
            FixtureScript::parse_args(&secrets.to_args()).unwrap(),
            secrets
        );
        assert!(secrets.expected_lines().is_empty());
        assert_eq!(mode_line("TOKEN_FILE", 0o100_400), "TOKEN_FILE mode 0400");
        assert_eq!(
            missing_line(&env_file_name("TOKEN_FILE")),
            "$TOKEN_FILE unreadable"
        );
    }

    #[test]
    fn rejects_other_args() {
        assert!(FixtureScript::parse_args(&["server.js"]).is_err());
        assert!(FixtureScript::parse_args(&["fixture", "--exit"]).is_err());
        assert!(FixtureScript::parse_args(&["fixture", "--exit", "x"]).is_err());
        assert!(FixtureScript::parse_args(&["fixture", "--bogus", "1"]).is_err());
        assert!(FixtureScript::parse_args(&["fixture", "--print-env"]).is_err());
        for bad in ["http", "http:0", "http:x", "tcp:1"] {
            let e = FixtureScript::parse_args(&["fixture", "--serve", bad]).unwrap_err();
            assert!(e.0.contains(bad), "{e}");
        }
    }
}
