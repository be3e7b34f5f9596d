//! The bed of the tests that change connections under a running service
//! (tests/config_in_force.rs, tests/config_watch.rs): two FTP servers, `a` and `b`, each
//! holding `r/f.bin` ("from a", "from b"), a local storage folder, a work folder for the
//! service's files, and fresh topics.

use crate::service::Topics;
use crate::{FtpKind, FtpServer};

pub struct TwoServers {
    pub a: FtpServer,
    pub b: FtpServer,
    pub storage: tempfile::TempDir,
    pub work: tempfile::TempDir,
    pub topics: Topics,
}

impl TwoServers {
    /// `a` of kind `a_kind`, `b` a pyftpdlib.
    pub async fn new(a_kind: FtpKind) -> TwoServers {
        let bed = TwoServers {
            a: FtpServer::start(a_kind, false),
            b: FtpServer::start(FtpKind::Pyftpdlib, false),
            storage: tempfile::Builder::new()
                .prefix("storage-")
                .tempdir()
                .unwrap(),
            work: tempfile::tempdir().unwrap(),
            topics: Topics::create(3).await,
        };
        bed.a.put("r/f.bin", b"from a");
        bed.b.put("r/f.bin", b"from b");
        bed
    }
}
