//! Routing a task: exactly one side of a task is a `local` connection and the other an
//! `ftp` one, which gives its [`Direction`] and the worker that runs it. Both local, both
//! remote, or an unknown id: `INVALID_CONFIG`, and the task is never tried (attempts 0);
//! a path over [`MAX_PATH_BYTES`]: `PATH_NOT_ALLOWED`, refused here before it travels to
//! a worker.
//!
//! Invariant: pure (the task and the registry in force, nothing else); a route joins an
//! ftp connection id to a local one; an error message quotes a client's id in an
//! excerpt of bounded length.

use ftp_pooler_channel::{Direction, Route};
use ftp_pooler_config::Registry;
use ftp_pooler_contract::limits::{excerpt, MAX_PATH_BYTES};
use ftp_pooler_contract::{ErrorCode, TransferTask};

/// Why a task cannot be routed: `INVALID_CONFIG` (connection ids), or `PATH_NOT_ALLOWED`
/// for a path over [`MAX_PATH_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RouteError {
    pub code: ErrorCode,
    pub message: String,
}

/// The route of `task` through the connections of `registry`.
pub fn resolve(task: &TransferTask, registry: &Registry) -> Result<Route, RouteError> {
    let invalid = |message: String| RouteError {
        code: ErrorCode::InvalidConfig,
        message,
    };
    let lookup = |field: &str, id: &str| {
        registry.get(id).ok_or_else(|| {
            invalid(format!(
                "unknown connection id {:?} ({field})",
                excerpt(id, 256)
            ))
        })
    };
    for (field, path) in [("src_path", &task.src_path), ("dst_path", &task.dst_path)] {
        if path.len() > MAX_PATH_BYTES {
            return Err(RouteError {
                code: ErrorCode::PathNotAllowed,
                message: format!(
                    "{field} is {} bytes long; at most {MAX_PATH_BYTES} are allowed",
                    path.len()
                ),
            });
        }
    }
    let src = lookup("src_id", &task.src_id)?;
    let dst = lookup("dst_id", &task.dst_id)?;
    match (src.is_local(), dst.is_local()) {
        (true, true) => Err(invalid(format!(
            "both src_id {:?} and dst_id {:?} are local connections: one must be ftp",
            excerpt(&task.src_id, 256),
            excerpt(&task.dst_id, 256)
        ))),
        (false, false) => Err(invalid(format!(
            "both src_id {:?} and dst_id {:?} are ftp connections: one must be local",
            excerpt(&task.src_id, 256),
            excerpt(&task.dst_id, 256)
        ))),
        (false, true) => Ok(Route {
            direction: Direction::Download,
            remote_id: task.src_id.clone(),
            remote_path: task.src_path.clone(),
            local_id: task.dst_id.clone(),
            local_path: task.dst_path.clone(),
        }),
        (true, false) => Ok(Route {
            direction: Direction::Upload,
            remote_id: task.dst_id.clone(),
            remote_path: task.dst_path.clone(),
            local_id: task.src_id.clone(),
            local_path: task.src_path.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_direction_or_invalid_config() {
        let base = tempfile::tempdir().unwrap();
        let registry = Registry::parse(
            std::path::Path::new("connections.ini"),
            &format!("[ftp-a]\ntype=ftp\nhost=h\nuser=u\n[ftp-b]\ntype=ftp\nhost=h\nuser=u\n[disk]\ntype=local\nbase_path={}\n[disk2]\ntype=local\nbase_path={}\n",
                base.path().display(), base.path().display()),
        ).unwrap();
        let t = |src: &str, dst: &str| TransferTask {
            task_id: "t".into(),
            src_id: src.into(),
            src_path: "/s".into(),
            dst_id: dst.into(),
            dst_path: "/d".into(),
            checksum: None,
        };
        let down = resolve(&t("ftp-a", "disk"), &registry).unwrap();
        assert_eq!(
            (
                down.direction,
                down.remote_id.as_str(),
                down.remote_path.as_str(),
                down.local_path.as_str()
            ),
            (Direction::Download, "ftp-a", "/s", "/d")
        );
        let up = resolve(&t("disk", "ftp-b"), &registry).unwrap();
        assert_eq!(
            (
                up.direction,
                up.remote_id.as_str(),
                up.remote_path.as_str(),
                up.local_path.as_str()
            ),
            (Direction::Upload, "ftp-b", "/d", "/s")
        );
        for (src, dst, want) in [
            (
                "disk",
                "disk2",
                "both src_id \"disk\" and dst_id \"disk2\" are local connections",
            ),
            (
                "ftp-a",
                "ftp-b",
                "both src_id \"ftp-a\" and dst_id \"ftp-b\" are ftp connections",
            ),
            ("nope", "disk", "unknown connection id \"nope\" (src_id)"),
            ("ftp-a", "gone", "unknown connection id \"gone\" (dst_id)"),
        ] {
            let e = resolve(&t(src, dst), &registry).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig);
            assert!(e.message.starts_with(want), "{}", e.message);
        }
    }

    #[test]
    fn a_path_over_path_max_is_refused_before_routing() {
        let base = tempfile::tempdir().unwrap();
        let registry = Registry::parse(
            std::path::Path::new("connections.ini"),
            &format!(
                "[ftp-a]\ntype=ftp\nhost=h\nuser=u\n[disk]\ntype=local\nbase_path={}\n",
                base.path().display()
            ),
        )
        .unwrap();
        let mut t = TransferTask {
            task_id: "t".into(),
            src_id: "ftp-a".into(),
            src_path: "s".repeat(4096),
            dst_id: "disk".into(),
            dst_path: "/d".into(),
            checksum: None,
        };
        assert!(resolve(&t, &registry).is_ok(), "4096 bytes is allowed");
        t.dst_path = "d".repeat(4097);
        let e = resolve(&t, &registry).unwrap_err();
        assert_eq!(e.code, ErrorCode::PathNotAllowed);
        assert_eq!(
            e.message,
            "dst_path is 4097 bytes long; at most 4096 are allowed"
        );
        t.dst_path = "/d".into();
        t.src_id = "x".repeat(100_000);
        let e = resolve(&t, &registry).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.message.len() < 400, "{}", e.message.len());
    }
}
