//! Secret files of a local process: each resolved value written to
//! `<instance dir>/secrets/<i>-<file name>`, mode 0400 (the server's user is ours), in a 0700
//! directory inside the 0700 instance directory, and its `env` variable set to that path.
//!
//! A local process has no mount namespace, so the spec's `path` cannot be honoured: servers
//! read the file named by the variable (the `_FILE` convention). The files go with the
//! instance directory, which stop, a failed start and orphan collection delete; values never
//! reach `meta.json`, `state.json` or a log (only the variable names do).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use mcp_orchestrator_api::secrets::SECRET_FILE_MODE;
use mcp_types::{SecretFile, SecretString};

use crate::error::ProcessError;
use crate::files::create_private_dir;
use crate::layout::InstancePaths;

/// The file secret file `index` (at `path` in the spec) gets in the instance directory: its
/// index keeps two files of the same name apart, its name keeps the extension servers may
/// look at (`.pem`, `.json`).
fn file_for(paths: &InstancePaths, index: usize, path: &str) -> PathBuf {
    let name = path.rsplit('/').next().unwrap_or_default();
    paths.secrets_dir().join(format!("{index}-{name}"))
}

/// Writes every secret file of the instance (values in spec order, from
/// [`resolve_secret_files`](mcp_orchestrator_api::secrets::resolve_secret_files)) and returns
/// the environment entries naming them.
pub(crate) fn write(
    paths: &InstancePaths,
    files: &[SecretFile],
    values: &[SecretString],
) -> Result<Vec<(String, String)>, ProcessError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let dir = paths.secrets_dir();
    create_private_dir(&dir).map_err(ProcessError::io("creating", &dir))?;
    let mut env = Vec::new();
    for (i, (file, value)) in files.iter().zip(values).enumerate() {
        let target = file_for(paths, i, &file.path);
        // Created with its final mode: the value is never readable by anyone else, even for
        // the moment between writing and a chmod.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SECRET_FILE_MODE)
            .open(&target)
            .map_err(ProcessError::io("creating", &target))?;
        out.write_all(value.expose().as_bytes())
            .map_err(ProcessError::io("writing", &target))?;
        if let Some(var) = &file.env {
            env.push((var.clone(), target.display().to_string()));
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn files_are_private_and_named_by_their_variables() {
        let dir = tempfile::tempdir().unwrap();
        let paths = InstancePaths::new(dir.path());
        let files = [
            SecretFile::new("/run/a/token.pem", "s", "k").with_env("A_FILE"),
            SecretFile::new("/run/b/token.pem", "s", "l"),
        ];
        let values = [SecretString::new("v-1"), SecretString::new("v-2")];
        let env = write(&paths, &files, &values).unwrap();
        let first = dir.path().join("secrets/0-token.pem");
        assert_eq!(env, [("A_FILE".to_owned(), first.display().to_string())]);
        assert_eq!(std::fs::read_to_string(&first).unwrap(), "v-1");
        let second = dir.path().join("secrets/1-token.pem");
        assert_eq!(std::fs::read_to_string(&second).unwrap(), "v-2");
        for f in [&first, &second] {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o400, "{}", f.display());
        }
        let mode = std::fs::metadata(paths.secrets_dir())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(write(&paths, &[], &[]).unwrap().is_empty());
    }
}
