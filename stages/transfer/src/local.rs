//! Local paths: confinement under a connection's base_path, and temporary names.
//!
//! Rules (DESIGN.md section 8): a leading `/` is stripped and the path is taken under
//! base_path; `.` and empty components are dropped and `..` pops one; a path whose
//! normalised form leaves base_path, that crosses a symlink pointing outside it, or whose
//! destination is a symlink pointing outside (or nowhere) is `PATH_NOT_ALLOWED`. The check
//! runs before any byte is written or any directory created.
//!
//! Temporary files are named from the destination and the task
//! (`.<name>.<hash(task_id)>.ftp-pooler.part`, in the destination's directory), so a
//! redelivered task overwrites the temporary file of its crashed attempt.

use std::path::{Component, Path, PathBuf};

use ftp_pooler_contract::limits::excerpt;
use ftp_pooler_contract::ErrorCode;
use sha2::{Digest, Sha256};

use crate::TransferError;

/// Suffix of every temporary file the service writes (local or remote).
pub const TEMP_SUFFIX: &str = ".ftp-pooler.part";

fn not_allowed(path: &str, why: &str) -> TransferError {
    TransferError::new(
        ErrorCode::PathNotAllowed,
        format!("local path {:?} {why}", excerpt(path, 512)),
    )
}

/// Resolves a task's local `path` under `base` (see the module rules).
pub fn resolve(base: &Path, path: &str) -> Result<PathBuf, TransferError> {
    if path.contains('\0') {
        return Err(not_allowed(path, "contains NUL"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(not_allowed(path, "leaves the connection's base_path"));
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(not_allowed(path, "names the base_path itself, not a file"));
    }
    let mut full = base.to_path_buf();
    full.extend(&parts);
    let base_real = base
        .canonicalize()
        .map_err(|e| TransferError::local_io(&format!("base_path {}", base.display()), &e))?;
    // Walk down: every component that exists must resolve inside base_path.
    let mut at = base.to_path_buf();
    for part in &parts {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) => {
                if meta.file_type().is_symlink() {
                    match at.canonicalize() {
                        Ok(real) if real.starts_with(&base_real) => {}
                        Ok(_) => {
                            return Err(not_allowed(
                                path,
                                "crosses a symlink pointing outside the base_path",
                            ))
                        }
                        Err(_) => {
                            return Err(not_allowed(path, "crosses a dangling symlink"));
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(TransferError::local_io(&format!("{}", at.display()), &e)),
        }
    }
    debug_assert!(full.components().all(|c| c != Component::ParentDir));
    Ok(full)
}

/// A short, stable tag of a task id for temporary names.
pub fn task_tag(task_id: &str) -> String {
    let digest = Sha256::digest(task_id.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The temporary name for `file_name` written by `task_id` (in the same directory).
pub fn temp_name(file_name: &str, task_id: &str) -> String {
    // Keep the whole name under 255 bytes.
    let mut cut = file_name.len().min(200);
    while !file_name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(".{}.{}{TEMP_SUFFIX}", &file_name[..cut], task_tag(task_id))
}

/// The local temporary path beside `dest`.
pub fn temp_path(dest: &Path, task_id: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(temp_name(&name, task_id))
}

/// A task's remote path as sent to a server whose login directory is `home`: a relative
/// path is taken under `home`; CR, LF and NUL (command injection over FTP; never a
/// name over SFTP) are refused.
pub fn remote_path(home: &str, path: &str) -> Result<String, TransferError> {
    if path.contains(['\r', '\n', '\0']) {
        return Err(TransferError::new(
            ErrorCode::PathNotAllowed,
            format!(
                "remote path {:?} contains CR, LF or NUL",
                excerpt(path, 512)
            ),
        ));
    }
    if path.starts_with('/') {
        Ok(path.to_string())
    } else {
        Ok(format!("{}/{}", home.trim_end_matches('/'), path))
    }
}

/// Splits a remote path into (directory, file name); the directory is "/" at the top.
pub fn split_remote(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<PathBuf, TransferError>) -> ErrorCode {
        r.unwrap_err().code
    }

    #[test]
    fn paths_resolve_under_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        assert_eq!(resolve(base, "/a/b.txt").unwrap(), base.join("a/b.txt"));
        assert_eq!(resolve(base, "a/./b.txt").unwrap(), base.join("a/b.txt"));
        assert_eq!(
            resolve(base, "/etc/passwd").unwrap(),
            base.join("etc/passwd")
        );
        assert_eq!(resolve(base, "a/../b").unwrap(), base.join("b"));
        assert_eq!(
            code(resolve(base, "../../etc/passwd")),
            ErrorCode::PathNotAllowed
        );
        assert_eq!(
            code(resolve(base, "/../../etc/passwd")),
            ErrorCode::PathNotAllowed
        );
        assert_eq!(code(resolve(base, "a/../../x")), ErrorCode::PathNotAllowed);
        assert_eq!(code(resolve(base, "/")), ErrorCode::PathNotAllowed);
        assert_eq!(code(resolve(base, "a\0b")), ErrorCode::PathNotAllowed);
    }

    #[test]
    fn symlinks_out_of_base_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir(base.join("in")).unwrap();
        std::os::unix::fs::symlink(outside.path(), base.join("out")).unwrap();
        std::os::unix::fs::symlink(base.join("in"), base.join("inner")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), base.join("file-out")).unwrap();
        std::os::unix::fs::symlink(base.join("nowhere"), base.join("dangling")).unwrap();
        assert_eq!(code(resolve(base, "out/x")), ErrorCode::PathNotAllowed);
        assert_eq!(code(resolve(base, "file-out")), ErrorCode::PathNotAllowed);
        assert_eq!(code(resolve(base, "dangling")), ErrorCode::PathNotAllowed);
        assert_eq!(resolve(base, "inner/x").unwrap(), base.join("inner/x"));
    }

    #[test]
    fn temp_names_are_stable_per_task_and_short() {
        let a = temp_path(Path::new("/d/file.bin"), "task-1");
        assert_eq!(a, temp_path(Path::new("/d/file.bin"), "task-1"));
        assert_ne!(a, temp_path(Path::new("/d/file.bin"), "task-2"));
        assert!(a
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".file.bin."));
        assert!(a.to_str().unwrap().ends_with(TEMP_SUFFIX));
        let long = "é".repeat(200);
        assert!(temp_name(&long, "t").len() < 255);
        assert_eq!(split_remote("/a/b/c.txt"), ("/a/b", "c.txt"));
        assert_eq!(split_remote("/c.txt"), ("/", "c.txt"));
    }
}
