//! The private runtime directory holding the Unix sockets.
//!
//! Invariants: the directory is owned by the service's user and has mode 0700 (nobody
//! else can connect to a stage); a directory whose control socket answers belongs to a
//! running supervisor and is never taken over; stale sockets of a dead one are removed.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ftp_pooler_channel::RuntimePaths;

use crate::SupervisorError;

/// The default runtime directory: systemd's `$RUNTIME_DIRECTORY`, else
/// `$XDG_RUNTIME_DIR/ftp-pooler`, else `/tmp/ftp-pooler-<uid>`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RUNTIME_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may list several, separated by ':'; the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return PathBuf::from(first);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("ftp-pooler");
    }
    PathBuf::from(format!("/tmp/ftp-pooler-{}", nix::unistd::getuid()))
}

/// Creates (or takes over) the runtime directory.
pub fn prepare(dir: &Path) -> Result<RuntimePaths, SupervisorError> {
    let io = |what: &str, e: std::io::Error| SupervisorError::RuntimeDir {
        path: dir.to_path_buf(),
        problem: format!("{what}: {e}"),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir.parent().unwrap_or(Path::new("/")))
                .map_err(|e| io("create parent", e))?;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| io("create", e))?;
        }
        Err(e) => return Err(io("create", e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| io("stat", e))?;
    if !meta.is_dir() {
        return Err(SupervisorError::RuntimeDir {
            path: dir.to_path_buf(),
            problem: "exists and is not a directory".into(),
        });
    }
    if meta.uid() != nix::unistd::getuid().as_raw() {
        return Err(SupervisorError::RuntimeDir {
            path: dir.to_path_buf(),
            problem: format!("is owned by uid {}, not by this user", meta.uid()),
        });
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("chmod 0700", e))?;
    }
    let paths = RuntimePaths::new(dir);
    if std::os::unix::net::UnixStream::connect(paths.ctl()).is_ok() {
        return Err(SupervisorError::AlreadyRunning(dir.to_path_buf()));
    }
    for entry in std::fs::read_dir(dir).map_err(|e| io("list", e))? {
        let entry = entry.map_err(|e| io("list", e))?;
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "sock") {
            std::fs::remove_file(&path).map_err(|e| io("remove stale socket", e))?;
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_directory_and_clears_stale_sockets() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("rt");
        prepare(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::write(dir.join("publish.sock"), b"").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&dir).unwrap();
        assert!(!dir.join("publish.sock").exists());
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_live_supervisor_is_not_taken_over() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("rt");
        let paths = prepare(&dir).unwrap();
        let _live = std::os::unix::net::UnixListener::bind(paths.ctl()).unwrap();
        assert!(matches!(
            prepare(&dir),
            Err(SupervisorError::AlreadyRunning(_))
        ));
    }
}
