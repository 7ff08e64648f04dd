//! Command-line parsing for the binary. Hand-written rather than clap: fixture scripts are an
//! ordered list of repeated flags, and every error must fit on one line.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mcp_orchestrator_api::fixture::{FIXTURE_SUBCOMMAND, FixtureScript};

/// What `--help` prints.
pub(crate) const USAGE: &str = "\
usage: mcp-test-server <command>

commands:
  stdio [--stateless-only]       serve MCP over stdin/stdout (--stateless-only: only the
                                 2026-07-28 revision: server/discover, no initialize)
  http --port PORT [--host IP]   serve MCP streamable HTTP at http://IP:PORT/mcp (host 0.0.0.0 by
                                 default) and GET /health (200 ok)
  probe URL [--attempts N]       MCP initialize against http://HOST:PORT/PATH (names resolved
                                 through /etc/resolv.conf); exit 0 when mcp-test-server answers
  fixture [STEP]...              run a fixture script; steps, in order:
      --stdout TEXT | --stderr TEXT | --lines COUNT:PREFIX | --sleep-ms MS
      | --print-env NAME | --print-cwd | --ignore-sigterm
      | --write-file PATH=TEXT | --print-file PATH
      | --fetch http://HOST[:PORT]/PATH (one GET, through HTTP_PROXY unless NO_PROXY names the
        host; prints `fetch URL: STATUS (via proxy P|direct)` or `fetch URL failed: REASON ...`)
      | --exit CODE | --serve stdio|http:PORT (MCP as the commands above; HTTP on 0.0.0.0:PORT/mcp)
    without --exit or --serve the process idles until SIGTERM/SIGINT, then exits 0
  build-image [--tag TAG]        build this server as a static binary and a FROM-scratch Docker
                                 image tagged TAG (default mcp-test-server:test) on the local
                                 engine, nothing pulled; prints the image id (needs the `docker`
                                 feature)

tools: echo {text}, add {a, b}, env {name}";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `--help`.
    Help,
    /// `--version`.
    Version,
    /// MCP over stdio; `stateless_only` refuses `initialize` (only 2026-07-28).
    Stdio { stateless_only: bool },
    /// MCP over streamable HTTP, bound to `addr`.
    Http {
        /// Where to listen.
        addr: SocketAddr,
    },
    /// Execute a fixture script.
    Fixture(FixtureScript),
    /// Build the test image on the local Docker engine.
    BuildImage {
        /// The tag to give it.
        tag: String,
    },
    /// Check that an MCP server answers at a URL.
    Probe {
        /// Where.
        target: crate::probe::Target,
        /// How many tries, a second apart.
        attempts: u32,
    },
}

/// Parses the arguments after the program name. The error is one line, without the program name.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let args = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| format!("argument {:?} is not valid UTF-8", a.display()))
        })
        .collect::<Result<Vec<String>, String>>()?;
    let Some(first) = args.first() else {
        return Err("missing command (stdio, http or fixture)".to_owned());
    };
    match first.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "-V" | "--version" => Ok(Command::Version),
        "stdio" => match args.get(1..).unwrap_or_default() {
            [] => Ok(Command::Stdio {
                stateless_only: false,
            }),
            [flag] if flag == "--stateless-only" => Ok(Command::Stdio {
                stateless_only: true,
            }),
            [extra, ..] => Err(format!("stdio takes only --stateless-only, got {extra:?}")),
        },
        "http" => parse_http(&args[1..]),
        "probe" => parse_probe(&args[1..]),
        "build-image" => parse_build_image(&args[1..]),
        FIXTURE_SUBCOMMAND => FixtureScript::parse_args(&args)
            .map(Command::Fixture)
            .map_err(|e| e.to_string()),
        other => Err(format!(
            "unknown command {other:?} (expected stdio, http, fixture, probe or build-image)"
        )),
    }
}

/// The tag `build-image` uses without `--tag` (the library's `DEFAULT_IMAGE_TAG`).
pub(crate) const DEFAULT_TAG: &str = "mcp-test-server:test";

fn parse_build_image(args: &[String]) -> Result<Command, String> {
    match args {
        [] => Ok(Command::BuildImage {
            tag: DEFAULT_TAG.to_owned(),
        }),
        [flag, tag] if flag == "--tag" => {
            if tag.is_empty() || tag.chars().any(char::is_whitespace) {
                return Err(format!("build-image: --tag {tag:?} is not an image tag"));
            }
            Ok(Command::BuildImage { tag: tag.clone() })
        }
        other => Err(format!("build-image: unexpected arguments {other:?}")),
    }
}

fn parse_probe(args: &[String]) -> Result<Command, String> {
    let (url, rest) = args.split_first().ok_or("probe: a URL is required")?;
    let target = crate::probe::parse_url(url)?;
    let attempts = match rest {
        [] => 1,
        [flag, n] if flag == "--attempts" => n
            .parse()
            .map_err(|_| format!("probe: --attempts {n:?} is not a number"))?,
        other => return Err(format!("probe: unexpected arguments {other:?}")),
    };
    Ok(Command::Probe { target, attempts })
}

fn parse_http(args: &[String]) -> Result<Command, String> {
    let mut port = None;
    let mut host = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("http: {flag} needs a value"))?;
        match flag.as_str() {
            "--port" => {
                port = Some(
                    value
                        .parse::<u16>()
                        .map_err(|_| format!("http: --port {value:?} is not a port number"))?,
                );
            }
            // An IP literal only: name lookups need NSS, which a static binary cannot load.
            "--host" => {
                host = value.parse().map_err(|_| {
                    format!("http: --host {value:?} is not an IP address (names are not resolved)")
                })?;
            }
            other => return Err(format!("http: unknown flag {other:?}")),
        }
    }
    let port = port.ok_or("http: --port is required")?;
    Ok(Command::Http {
        addr: SocketAddr::new(host, port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn commands() {
        assert_eq!(
            p(&["stdio"]),
            Ok(Command::Stdio {
                stateless_only: false
            })
        );
        assert_eq!(
            p(&["stdio", "--stateless-only"]),
            Ok(Command::Stdio {
                stateless_only: true
            })
        );
        assert_eq!(
            p(&["build-image"]),
            Ok(Command::BuildImage {
                tag: DEFAULT_TAG.to_owned()
            })
        );
        assert_eq!(
            p(&["build-image", "--tag", "fixture:dev"]),
            Ok(Command::BuildImage {
                tag: "fixture:dev".to_owned()
            })
        );
        assert!(p(&["build-image", "--tag"]).is_err());
        assert!(p(&["build-image", "--tag", "a b"]).is_err());
        assert_eq!(p(&["--help"]), Ok(Command::Help));
        assert_eq!(
            p(&["http", "--port", "8080"]),
            Ok(Command::Http {
                addr: "0.0.0.0:8080".parse().unwrap()
            })
        );
        assert_eq!(
            p(&["http", "--host", "::1", "--port", "0"]),
            Ok(Command::Http {
                addr: "[::1]:0".parse().unwrap()
            })
        );
        let script = FixtureScript::new().stdout("a b").exit(4);
        let args = script.to_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(p(&args), Ok(Command::Fixture(script)));
    }

    #[test]
    fn errors_are_one_line() {
        for bad in [
            &[][..],
            &["serve"],
            &["stdio", "x"],
            &["http"],
            &["http", "--port"],
            &["http", "--port", "70000"],
            &["http", "--port", "1", "--host", "localhost"],
            &["http", "--port", "1", "--bogus", "1"],
            &["fixture", "--exit", "x"],
            &["fixture", "--what", "1"],
            &["probe"],
            &["probe", "http://x:1/", "--attempts", "many"],
        ] {
            let err = p(bad).expect_err("must be rejected");
            assert!(!err.is_empty() && !err.contains('\n'), "{bad:?}: {err:?}");
        }
    }
}
