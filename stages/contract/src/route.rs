//! Direction resolution: exactly one side of a task is a `local` connection and the other
//! an `ftp` one. Both local, both remote, or an unknown id: `INVALID_CONFIG`, and the
//! task is never tried (attempts 0).

use ftp_pooler_config::Registry;
use serde::{Deserialize, Serialize};

use crate::limits::{excerpt, MAX_PATH_BYTES};
use crate::{ErrorCode, TransferTask};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// remote -> local
    Download,
    /// local -> remote
    Upload,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Download => "download",
            Direction::Upload => "upload",
        }
    }
}

/// Where a task goes: its direction, and which side is remote and which local.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub direction: Direction,
    /// The ftp connection id: the transfer worker that runs the task.
    pub remote_id: String,
    pub remote_path: String,
    pub local_id: String,
    pub local_path: String,
}

/// Why a task cannot be routed: `INVALID_CONFIG` (connection ids), or `PATH_NOT_ALLOWED`
/// for a path over [`MAX_PATH_BYTES`] (refused here, before it travels to a worker).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RouteError {
    pub code: ErrorCode,
    pub message: String,
}

impl Route {
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
}
