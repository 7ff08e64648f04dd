//! Builds a Docker image for a stdio MCP server from PyPI without pulling anything: a Debian
//! userland from `debootstrap` (minbase) with a virtualenv holding the pinned requirements,
//! imported through bollard as a tar stream, tagged by a hash of everything that decides its
//! content, once per machine.
//!
//! The image suits the Docker backend's hardening: it runs as uid 1000, writes nothing outside
//! `/tmp` (`HOME=/tmp`, `PYTHONDONTWRITEBYTECODE=1`, byte code compiled at build time) and needs
//! no capability. Building needs root (debootstrap, chroot), network access to a Debian mirror
//! and to PyPI, and a few minutes; reusing a built image takes one engine request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::{Error, TEST_IMAGE_LABEL};
use mcp_scratch_image::{run, workspace_target_dir};

/// Repository part of the tags of the images built here; the tag part is a content hash.
pub const PYTHON_IMAGE_REPOSITORY: &str = "mcp-python-server";
/// Image label holding the full hex SHA-256 of the image's inputs (the tag holds its prefix).
pub const PYTHON_IMAGE_HASH_LABEL: &str = "mcpctl.io/python-image-sha256";
/// The Debian suite of the userland.
pub const DEBIAN_SUITE: &str = "bookworm";
/// The Debian packages installed on top of `minbase`.
pub const DEBIAN_PACKAGES: &[&str] = &["python3", "python3-venv", "ca-certificates"];
/// Where the virtualenv with the requirements sits in the image; its `bin` leads `PATH`.
pub const VENV_DIR: &str = "/opt/mcp-venv";
/// The command that starts the time server in its image (entry point and arguments).
pub const TIME_SERVER_COMMAND: &[&str] = &["mcp-server-time", "--local-timezone", "UTC"];
/// The PyPI package of the time server, pinned in `xtask/python-requirements.txt`.
pub const TIME_SERVER_PACKAGE: &str = "mcp-server-time";

/// Bump when the build steps below change what ends up in the image: it is hashed into the tag.
const BUILD_SCRIPT_VERSION: &str = "2";
/// The project's pinned Python tools (one requirement a line).
// A symlink to `xtask/python-requirements.txt` (one list of pins), copied into the package.
const PINNED_REQUIREMENTS: &str = include_str!("../python-requirements.txt");
/// Directory under the workspace target dir for lock files and the (temporary) root file systems.
const CACHE_DIR: &str = "python-images";
/// Used when the machine's apt sources name no mirror for [`DEBIAN_SUITE`].
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The user the image runs as.
const IMAGE_USER: &str = "1000:1000";
/// Pip and proxy settings passed from the caller's environment into the chroot for the install.
const PASSED_ENV: &[&str] = &[
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_RETRIES",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];
/// Size of the chunks of the root file system's tar stream.
const CHUNK: usize = 1 << 20;

/// The pinned requirement line for `package` in `xtask/python-requirements.txt`
/// (e.g. `mcp-server-time==2026.10.19`), if it is pinned there.
pub fn pinned_requirement(package: &str) -> Option<&'static str> {
    PINNED_REQUIREMENTS.lines().map(str::trim).find(|line| {
        line.strip_prefix(package)
            .is_some_and(|rest| rest.starts_with("=="))
    })
}

/// [`ensure_python_server_image`] for the pinned `mcp-server-time`, started as
/// [`TIME_SERVER_COMMAND`] (stdio transport). Returns the image tag.
///
/// # Errors
/// As [`ensure_python_server_image`]; [`Error::Prerequisite`] when the requirements file does not
/// pin [`TIME_SERVER_PACKAGE`].
pub async fn ensure_time_server_image(docker: &Docker) -> Result<String, Error> {
    let requirement = pinned_requirement(TIME_SERVER_PACKAGE).ok_or_else(|| {
        Error::Prerequisite(format!(
            "xtask/python-requirements.txt pins no {TIME_SERVER_PACKAGE}==<version>"
        ))
    })?;
    ensure_python_server_image(docker, requirement, TIME_SERVER_COMMAND).await
}

/// Makes sure an image exists that runs `command` (its first word a console script of the
/// virtualenv, or an absolute path) with the pip `requirements` (requirement lines) installed in
/// a virtualenv at [`VENV_DIR`] on Debian [`DEBIAN_SUITE`] minbase, and returns its tag
/// (`mcp-python-server:<hash>`). Once per process and tag: later calls return at once. See
/// [`build_python_server_image`] for what the first call does.
///
/// The image runs as user `1000:1000` with `HOME=/tmp`, `PYTHONDONTWRITEBYTECODE=1`,
/// `PYTHONUNBUFFERED=1`, working directory `/tmp`, entry point `command[0]` and `command[1..]` as
/// its default arguments, so it runs under a read-only root file system with a tmpfs `/tmp`, all
/// capabilities dropped and `no-new-privileges`. It carries the label [`TEST_IMAGE_LABEL`]`=true`
/// and [`PYTHON_IMAGE_HASH_LABEL`].
///
/// # Errors
/// [`Error`] when the image cannot be built (see [`build_python_server_image`]); a failed
/// attempt is not cached.
pub async fn ensure_python_server_image(
    docker: &Docker,
    requirements: &str,
    command: &[&str],
) -> Result<String, Error> {
    static IMAGES: Mutex<BTreeMap<String, Arc<OnceCell<String>>>> = Mutex::new(BTreeMap::new());
    let tag = python_image_tag(requirements, command);
    let cell = IMAGES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(tag)
        .or_default()
        .clone();
    cell.get_or_try_init(|| build_python_server_image(docker, requirements, command))
        .await
        .cloned()
}

/// The tag of the image for `requirements` and `command`: [`PYTHON_IMAGE_REPOSITORY`] and the
/// first 16 hex digits of [`python_image_hash`].
pub fn python_image_tag(requirements: &str, command: &[&str]) -> String {
    let hash = python_image_hash(requirements, command);
    format!("{PYTHON_IMAGE_REPOSITORY}:{}", &hash[..16])
}

/// Hex SHA-256 over everything that decides the image's content: the build script version, the
/// Debian suite and packages, the requirement lines (trimmed, without comments and blank lines)
/// and the command.
pub fn python_image_hash(requirements: &str, command: &[&str]) -> String {
    let mut hasher = Sha256::new();
    let mut field = |name: &str, value: &str| {
        // Length-prefixed, so that no two different inputs give the same byte string.
        hasher.update(format!("{name}:{}:{value}\n", value.len()).as_bytes());
    };
    field("script", BUILD_SCRIPT_VERSION);
    field("suite", DEBIAN_SUITE);
    field("packages", &DEBIAN_PACKAGES.join(","));
    field("venv", VENV_DIR);
    field("requirements", &requirement_lines(requirements).join("\n"));
    for word in command {
        field("command", word);
    }
    hex(&hasher.finalize())
}

/// [`ensure_python_server_image`] without the per-process cache. When the tag exists it returns
/// at once. Otherwise, holding a lock file (so concurrent callers, in one or several processes,
/// build it once), it builds the root file system under `<workspace target>/python-images/`:
/// installs `debootstrap` with apt-get when it is missing, runs it (variant minbase, the mirror
/// of the machine's apt sources), creates the virtualenv and installs `requirements` with pip
/// from PyPI inside a chroot (then removes pip from it), trims documentation and caches, streams the tree to the engine's
/// image import (`docker import`) with the image configuration, and removes the tree. Progress
/// goes to stderr: the first build takes minutes.
///
/// # Errors
/// [`Error::Prerequisite`] when not running as root or when `debootstrap` is missing and cannot
/// be installed (the message names what to install), [`Error::CommandFailed`] when debootstrap or
/// pip fails, [`Error::ImageBuild`] when the engine refuses the import, [`Error::Io`] for file
/// system errors and [`Error::Docker`] for other refused requests.
pub async fn build_python_server_image(
    docker: &Docker,
    requirements: &str,
    command: &[&str],
) -> Result<String, Error> {
    let hash = python_image_hash(requirements, command);
    let tag = python_image_tag(requirements, command);
    if image_exists(docker, &tag).await? {
        return Ok(tag);
    }
    let Some(entry) = command.first() else {
        return Err(Error::Prerequisite(
            "the Python server image needs a command to run".to_owned(),
        ));
    };
    let entrypoint = if entry.starts_with('/') {
        (*entry).to_owned()
    } else {
        format!("{VENV_DIR}/bin/{entry}")
    };

    let lock_name = format!("{hash}.lock");
    let lock_path = blocking(move || {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let dir = workspace_target_dir(&cargo, &manifest)?.join(CACHE_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(dir.join(lock_name))
    })
    .await?;
    let lock = {
        let path = lock_path.clone();
        blocking(move || lock_file(&path)).await?
    };
    // Another caller may have built it while this one waited for the lock.
    if image_exists(docker, &tag).await? {
        drop(lock);
        return Ok(tag);
    }

    let started = Instant::now();
    eprintln!("{tag}: building (Debian {DEBIAN_SUITE} minbase + pip; takes minutes)");
    let rootfs = lock_path.with_extension("rootfs");
    let built = build_and_import(
        docker,
        &tag,
        &hash,
        requirements,
        command,
        &entrypoint,
        &rootfs,
    )
    .await;
    let removed = {
        let rootfs = rootfs.clone();
        blocking(move || remove_rootfs(&rootfs)).await
    };
    drop(lock);
    built?;
    removed?;
    if !image_exists(docker, &tag).await? {
        return Err(Error::ImageBuild {
            tag,
            message: "the import finished but the tag does not exist".to_owned(),
        });
    }
    eprintln!("{tag}: ready in {:.1?}", started.elapsed());
    Ok(tag)
}

async fn build_and_import(
    docker: &Docker,
    tag: &str,
    hash: &str,
    requirements: &str,
    command: &[&str],
    entrypoint: &str,
    rootfs: &Path,
) -> Result<(), Error> {
    {
        let (tag, rootfs) = (tag.to_owned(), rootfs.to_owned());
        let (requirements, entrypoint) = (requirements.to_owned(), entrypoint.to_owned());
        blocking(move || build_rootfs(&tag, &rootfs, &requirements, &entrypoint)).await?;
    }
    let mut changes = vec![
        format!("USER {IMAGE_USER}"),
        "WORKDIR /tmp".to_owned(),
        format!("ENV PATH={VENV_DIR}/bin:/usr/local/bin:/usr/bin:/bin"),
        "ENV HOME=/tmp".to_owned(),
        "ENV LANG=C.UTF-8".to_owned(),
        "ENV PYTHONDONTWRITEBYTECODE=1".to_owned(),
        "ENV PYTHONUNBUFFERED=1".to_owned(),
        format!("LABEL {TEST_IMAGE_LABEL}=true"),
        format!("LABEL {PYTHON_IMAGE_HASH_LABEL}={hash}"),
        format!("ENTRYPOINT {}", json_array(&[entrypoint])),
    ];
    if command.len() > 1 {
        changes.push(format!("CMD {}", json_array(&command[1..])));
    }
    import_rootfs(docker, tag, rootfs, changes).await
}

/// `["a","b"]`: the exec form of ENTRYPOINT and CMD.
fn json_array(words: &[&str]) -> String {
    serde_json::Value::from(words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>()).to_string()
}

/// Requirement lines without comments and blank lines, trimmed.
fn requirement_lines(requirements: &str) -> Vec<&str> {
    requirements
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect()
}

async fn image_exists(docker: &Docker, tag: &str) -> Result<bool, Error> {
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, Error>
where
    F: FnOnce() -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io {
            path: PathBuf::from(CACHE_DIR),
            source: std::io::Error::other(e),
        })?
}

/// Opens and exclusively locks `path` (blocking until other holders release it); the lock goes
/// with the returned file.
fn lock_file(path: &Path) -> Result<std::fs::File, Error> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    file.lock().map_err(io)?;
    Ok(file)
}

/// Everything from an empty directory to a trimmed root file system with the virtualenv.
fn build_rootfs(
    tag: &str,
    rootfs: &Path,
    requirements: &str,
    entrypoint: &str,
) -> Result<(), Error> {
    require_root()?;
    let debootstrap = ensure_debootstrap(tag)?;
    remove_rootfs(rootfs)?;

    let mirror = debian_mirror();
    let started = Instant::now();
    eprintln!("{tag}: debootstrap {DEBIAN_SUITE} from {mirror}");
    let mut cmd = Command::new(&debootstrap);
    cmd.args([
        "--variant=minbase",
        &format!("--include={}", DEBIAN_PACKAGES.join(",")),
        "--components=main",
        DEBIAN_SUITE,
    ])
    .arg(rootfs)
    .arg(&mirror)
    .env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut cmd)?;
    eprintln!("{tag}: userland ready in {:.1?}", started.elapsed());

    let started = Instant::now();
    eprintln!("{tag}: pip install into {VENV_DIR}");
    copy_into(Path::new("/etc/resolv.conf"), rootfs, "etc/resolv.conf")?;
    let ca = host_ca_bundle();
    if let Some(ca) = &ca {
        copy_into(ca, rootfs, "tmp/build-ca.pem")?;
    }
    write_into(
        rootfs,
        "tmp/requirements.txt",
        &(requirement_lines(requirements).join("\n") + "\n"),
    )?;
    run(chroot(rootfs, ca.is_some()).args(["/usr/bin/python3", "-m", "venv", VENV_DIR]))?;
    run(chroot(rootfs, ca.is_some()).args([
        &format!("{VENV_DIR}/bin/pip"),
        "install",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--require-virtualenv",
        "-r",
        "/tmp/requirements.txt",
    ]))?;
    // The server never installs anything at run time: pip is 16 MB of dead weight.
    run(chroot(rootfs, false).args([
        &format!("{VENV_DIR}/bin/python"),
        "-m",
        "pip",
        "uninstall",
        "--yes",
        "--disable-pip-version-check",
        "pip",
    ]))?;
    let program = rootfs.join(entrypoint.trim_start_matches('/'));
    if !program.is_file() {
        return Err(Error::Prerequisite(format!(
            "the requirements installed no {entrypoint}: name a console script of the \
             requirements (or an absolute path in the image) as the command"
        )));
    }
    eprintln!("{tag}: virtualenv ready in {:.1?}", started.elapsed());

    trim(rootfs)?;
    // Docker mounts its own resolv.conf; the build host's must not stay in the image.
    write_into(rootfs, "etc/resolv.conf", "")?;
    append_into(
        rootfs,
        "etc/passwd",
        "mcp:x:1000:1000:MCP server:/tmp:/usr/sbin/nologin\n",
    )?;
    append_into(rootfs, "etc/group", "mcp:x:1000:\n")
}

/// `chroot rootfs` with a clean environment: a `PATH`, `HOME`, pip's certificate bundle when
/// the host's was copied in, and the pip and proxy settings of [`PASSED_ENV`].
fn chroot(rootfs: &Path, with_ca: bool) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(rootfs)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8");
    if with_ca {
        cmd.env("PIP_CERT", "/tmp/build-ca.pem");
    }
    for name in PASSED_ENV {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd
}

/// The certificate bundle the host trusts (pip's own setting first), so that pip in the chroot
/// works behind the same TLS-inspecting proxies as on the host. Used for the build only.
fn host_ca_bundle() -> Option<PathBuf> {
    ["PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"]
        .into_iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .chain([PathBuf::from("/etc/ssl/certs/ca-certificates.crt")])
        .find(|p| p.is_file())
}

/// Fails unless the process runs as root (effective uid 0).
fn require_root() -> Result<(), Error> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    if euid == Some("0") {
        return Ok(());
    }
    Err(Error::Prerequisite(
        "building the Python MCP server image runs debootstrap and chroot, which need root \
         (install debootstrap with `apt-get install debootstrap` and run the tests as root)"
            .to_owned(),
    ))
}

/// The path of `debootstrap`, installing it with apt-get (after `apt-get update` when the
/// first attempt fails) when it is missing.
fn ensure_debootstrap(tag: &str) -> Result<PathBuf, Error> {
    if let Some(path) = find_program("debootstrap") {
        return Ok(path);
    }
    let Some(apt) = find_program("apt-get") else {
        return Err(Error::Prerequisite(
            "debootstrap is missing and there is no apt-get to install it: install debootstrap"
                .to_owned(),
        ));
    };
    eprintln!("{tag}: installing debootstrap with apt-get");
    let install = || {
        let mut cmd = Command::new(&apt);
        cmd.args([
            "-o",
            "DPkg::Lock::Timeout=300",
            "install",
            "-y",
            "--no-install-recommends",
            "debootstrap",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut cmd)
    };
    if install().is_err() {
        run(Command::new(&apt).args(["-o", "DPkg::Lock::Timeout=300", "update"]))?;
        install()?;
    }
    find_program("debootstrap").ok_or_else(|| {
        Error::Prerequisite(
            "apt-get installed debootstrap but it is not on PATH or in /usr/sbin".to_owned(),
        )
    })
}

/// `name` on `PATH` or in the sbin directories (which a non-login root shell may lack).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The first mirror the machine's apt sources list for [`DEBIAN_SUITE`] (deb822 or one-line
/// format), else [`DEFAULT_MIRROR`].
fn debian_mirror() -> String {
    let deb822 = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|text| mirror_from_deb822(&text));
    let one_line = || {
        std::fs::read_to_string("/etc/apt/sources.list")
            .ok()
            .and_then(|text| mirror_from_list(&text))
    };
    deb822
        .or_else(one_line)
        .unwrap_or_else(|| DEFAULT_MIRROR.to_owned())
}

fn mirror_from_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let has = |name: &str, word: &str| {
            field(name).is_some_and(|v| v.split_whitespace().any(|w| w == word))
        };
        (has("Types", "deb") && has("Suites", DEBIAN_SUITE))
            .then(|| field("URIs"))
            .flatten()
            .and_then(|uris| uris.split_whitespace().next().map(str::to_owned))
    })
}

fn mirror_from_list(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let words: Vec<&str> = line
            .split_whitespace()
            .filter(|w| !w.starts_with('['))
            .collect();
        match words.as_slice() {
            ["deb", uri, suite, ..] if *suite == DEBIAN_SUITE => Some((*uri).to_owned()),
            _ => None,
        }
    })
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn copy_into(from: &Path, rootfs: &Path, to: &str) -> Result<(), Error> {
    let target = rootfs.join(to);
    // The target may be a symlink (resolv.conf often is): replace it, never write through it.
    let _ = std::fs::remove_file(&target);
    std::fs::copy(from, &target)
        .map(drop)
        .map_err(io_error(from))
}

fn write_into(rootfs: &Path, to: &str, contents: &str) -> Result<(), Error> {
    let target = rootfs.join(to);
    let _ = std::fs::remove_file(&target);
    std::fs::write(&target, contents).map_err(io_error(&target))
}

fn append_into(rootfs: &Path, to: &str, line: &str) -> Result<(), Error> {
    let target = rootfs.join(to);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&target)
        .map_err(io_error(&target))?;
    file.write_all(line.as_bytes()).map_err(io_error(&target))
}

/// Removes what the image does not need: documentation, translations, apt's and debconf's
/// caches, logs, the build's files in `/tmp`, and device nodes (the engine provides `/dev`).
fn trim(rootfs: &Path) -> Result<(), Error> {
    for dir in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/lintian",
        "var/cache/apt",
        "var/lib/apt/lists",
        "var/log",
        "var/cache/debconf",
        "tmp",
        "dev",
        "root",
    ] {
        empty_dir(&rootfs.join(dir))?;
    }
    Ok(())
}

/// Removes everything inside `dir`, keeping `dir` itself (and creating nothing if it is absent).
fn empty_dir(dir: &Path) -> Result<(), Error> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry.map_err(io_error(dir))?.path();
        let is_dir = std::fs::symlink_metadata(&path)
            .map_err(io_error(&path))?
            .is_dir();
        if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .map_err(io_error(&path))?;
    }
    Ok(())
}

/// Removes a (possibly half-built) root file system, first unmounting anything a crashed
/// debootstrap left mounted inside it, so that removal never reaches into `/proc` or `/sys`.
fn remove_rootfs(rootfs: &Path) -> Result<(), Error> {
    if std::fs::symlink_metadata(rootfs).is_err() {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut inside: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(rootfs))
        .collect();
    // Deepest first.
    inside.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for mount in &inside {
        run(Command::new("umount").arg("-l").arg(mount))?;
    }
    std::fs::remove_dir_all(rootfs).map_err(io_error(rootfs))
}

/// A `Write` that sends what it is given, in chunks of [`CHUNK`] bytes, down a channel that
/// feeds the request body.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the engine stopped reading the image",
            )
        })
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.send()
        }
    }
}

/// Streams `rootfs` as a tar (owners, modes and symlinks kept) to the engine's image import
/// with the Dockerfile-style `changes`, tagged `tag`.
async fn import_rootfs(
    docker: &Docker,
    tag: &str,
    rootfs: &Path,
    changes: Vec<String>,
) -> Result<(), Error> {
    let started = Instant::now();
    let (repo, tag_part) = tag.split_once(':').unwrap_or((tag, "latest"));
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let producer = {
        let rootfs = rootfs.to_owned();
        let failed = tx.clone();
        tokio::task::spawn_blocking(move || {
            let mut tar = tar::Builder::new(ChannelWriter {
                tx,
                buf: Vec::with_capacity(CHUNK),
            });
            tar.follow_symlinks(false);
            tar.mode(tar::HeaderMode::Complete);
            let written = tar
                .append_dir_all("", &rootfs)
                .and_then(|()| tar.into_inner())
                .and_then(|mut w| w.flush());
            if let Err(e) = &written {
                // Fails the request instead of ending the body as if it were complete.
                let _ = failed.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
            }
            written.map_err(|source| Error::Io {
                path: rootfs,
                source,
            })
        })
    };
    let body = bollard::body_try_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag_part)
        .message("built by mcp-test-server's python_image")
        .changes(changes)
        .build();
    let mut progress = docker.create_image(Some(options), Some(body), None);
    let mut engine_error = None;
    while let Some(item) = progress.next().await {
        if let Err(e) = item {
            engine_error = Some(e.to_string());
            break;
        }
    }
    drop(progress);
    let tar_result = producer.await.map_err(|e| Error::Io {
        path: rootfs.to_owned(),
        source: std::io::Error::other(e),
    })?;
    if let Some(message) = engine_error {
        return Err(Error::ImageBuild {
            tag: tag.to_owned(),
            message: format!("import refused: {message}"),
        });
    }
    tar_result?;
    eprintln!("{tag}: imported in {:.1?}", started.elapsed());
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_server_is_pinned() {
        let line = pinned_requirement(TIME_SERVER_PACKAGE).unwrap();
        assert!(line.starts_with("mcp-server-time=="), "{line}");
        assert!(line.len() > "mcp-server-time==".len(), "{line}");
        assert_eq!(pinned_requirement("mcp-server"), None);
        assert_eq!(pinned_requirement("nonexistent-package"), None);
    }

    #[test]
    fn the_tag_follows_requirements_and_command_but_not_comments() {
        let tag = python_image_tag("a==1\n", &["a"]);
        assert!(tag.starts_with("mcp-python-server:"), "{tag}");
        assert_eq!(tag.len(), "mcp-python-server:".len() + 16);
        assert_eq!(tag, python_image_tag("# pinned\n  a==1  # why\n\n", &["a"]));
        assert_ne!(tag, python_image_tag("a==2\n", &["a"]));
        assert_ne!(tag, python_image_tag("a==1\n", &["a", "--x"]));
        // Word boundaries count: ["a b"] is not ["a", "b"].
        assert_ne!(
            python_image_tag("a==1\n", &["a b"]),
            python_image_tag("a==1\n", &["a", "b"])
        );
    }

    #[test]
    fn mirrors_come_from_the_suites_stanza() {
        let sources = "Types: deb\nURIs: http://security.example/debian-security\n\
                       Suites: bookworm-security\nComponents: main\n\n\
                       Types: deb-src deb\n# a comment\nURIs: http://mirror.example/debian\n\
                       Suites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            mirror_from_deb822(sources).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(mirror_from_deb822("Types: deb\nSuites: trixie\n"), None);
        let list = "deb http://sec.example/ bookworm-security main\n\
                    deb [arch=amd64] http://list.example/debian bookworm main\n";
        assert_eq!(
            mirror_from_list(list).as_deref(),
            Some("http://list.example/debian")
        );
    }

    #[test]
    fn exec_form_arrays_are_json() {
        assert_eq!(json_array(&["a", "b \"c\""]), r#"["a","b \"c\""]"#);
    }
}
