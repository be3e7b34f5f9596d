//! An SFTP server for the tests (issue 22): OpenSSH's sshd (`scripts/testbed/serve sshd`),
//! on 127.0.0.1 and a free port, SFTP only (`internal-sftp`), stopped when dropped.
//!
//! - Login: the test user ([`ftp_user`]) with its password ([`ftp_password`]) or the test
//!   client key, plain ([`ssh_client_key`]) or encrypted with [`SSH_KEY_PASSPHRASE`]
//!   ([`ssh_client_key_encrypted`]): both public keys are authorized.
//! - Host key: the test bed's ed25519 key, the same for every server and every start;
//!   pin it with [`SftpServer::known_hosts_line`] or [`SftpServer::host_key_fingerprint`].
//! - Layout: the session is chrooted to a fresh directory (root-owned, as sshd requires)
//!   whose only entry is `files/`, owned by the test user: a client sees its files under
//!   `/files/...` ([`SFTP_FILES_DIR`]), which is [`SftpServer::root`] on disk. `/` itself
//!   is not writable.
//!
//! The keys are made once by `scripts/testbed/install.sh` under the test bed's `ssh/`.
//! A stop kills the listening sshd (SIGKILL): sessions already open live on, as in a
//! real sshd restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::{
    chown_to_ftp_user, free_port, ftp_password, ftp_user, testbed_dir, wait_for_banner,
    ServerProcess,
};

/// The passphrase of [`ssh_client_key_encrypted`] (a fixture, not a secret; see
/// scripts/testbed/env.sh).
pub const SSH_KEY_PASSPHRASE: &str = "test-passphrase";

/// Where the SFTP user's files are, as a client names them: `/files` (the chroot's only
/// writable directory; [`SftpServer::root`] on disk).
pub const SFTP_FILES_DIR: &str = "/files";

/// The test bed's SSH keys (host key, client keys), made by the install script.
pub fn ssh_dir() -> PathBuf {
    testbed_dir().join("ssh")
}

fn ssh_file(name: &str) -> PathBuf {
    let path = ssh_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/testbed/install.sh",
        path.display()
    );
    path
}

/// The test client's private key (ed25519, OpenSSH format, no passphrase).
pub fn ssh_client_key() -> PathBuf {
    ssh_file("client_ed25519")
}

/// The test client's other private key (ed25519, OpenSSH format), encrypted with
/// [`SSH_KEY_PASSPHRASE`].
pub fn ssh_client_key_encrypted() -> PathBuf {
    ssh_file("client_ed25519_encrypted")
}

/// The host's public key as `ssh-ed25519 AAAA...` (no comment).
pub fn ssh_host_public_key() -> String {
    let path = ssh_file("ssh_host_ed25519_key.pub");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut fields = text.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(kind), Some(blob)) => format!("{kind} {blob}"),
        _ => panic!("{} is not an OpenSSH public key", path.display()),
    }
}

/// The host key's fingerprint as `ssh-keygen -lf` prints it: `SHA256:` and the unpadded
/// base64 of the SHA-256 of the key blob.
pub fn ssh_host_key_fingerprint() -> String {
    let key = ssh_host_public_key();
    let blob = key.split_whitespace().nth(1).expect("key blob");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .expect("host public key is base64");
    let digest = Sha256::digest(raw);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Where the SFTP chroots are made: `FTP_POOLER_TEST_SFTP_CHROOTS`, else
/// `/var/lib/ftp-pooler-testbed/sftp` (every parent root-owned, as sshd requires,
/// wherever the checkout is).
pub fn chroots_dir() -> PathBuf {
    std::env::var_os("FTP_POOLER_TEST_SFTP_CHROOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/ftp-pooler-testbed/sftp"))
}

/// A running sshd serving SFTP, with its own chroot; stopped when dropped.
pub struct SftpServer {
    pub port: u16,
    /// The chroot (root-owned; holds `files/`). Under [`chroots_dir`], not the checkout:
    /// sshd refuses a chroot with a group- or world-writable parent, and a checkout may
    /// live under /tmp.
    chroot: tempfile::TempDir,
    process: Option<ServerProcess>,
}

impl SftpServer {
    /// Starts sshd on a free port and waits for its `SSH-2.0-` banner.
    pub fn start() -> SftpServer {
        let parent = chroots_dir();
        std::fs::create_dir_all(&parent)
            .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", parent.display()));
        let chroot = tempfile::Builder::new()
            .prefix("sftp-root-")
            .tempdir_in(&parent)
            .expect("temp dir for the SFTP chroot");
        let mut server = SftpServer {
            port: 0,
            chroot,
            process: None,
        };
        server.restart();
        server
    }

    /// (Re)starts the server, on the same port as before (a free one the first time),
    /// same chroot and files.
    pub fn restart(&mut self) {
        self.stop();
        if self.port == 0 {
            self.port = free_port();
        }
        let args = vec![
            "sshd".to_string(),
            self.port.to_string(),
            self.chroot.path().display().to_string(),
        ];
        let process = ServerProcess::serve(&format!("sshd:{}", self.port), &args);
        wait_for_banner(self.port, &process, Duration::from_secs(20), "SSH-2.0-");
        self.process = Some(process);
    }

    /// Kills the listening sshd (SIGKILL); its files stay, open sessions live on.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// The listening sshd's process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid())
    }

    /// What sshd logged so far (`-e`: its log on stderr; LogLevel VERBOSE).
    pub fn output(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.output())
            .unwrap_or_default()
    }

    /// The SFTP user's files on disk: what a client sees as [`SFTP_FILES_DIR`] (`/files`).
    pub fn root(&self) -> PathBuf {
        self.chroot.path().join("files")
    }

    /// The chroot on disk: what a client sees as `/`.
    pub fn chroot(&self) -> &Path {
        self.chroot.path()
    }

    /// The path a client uses for `rel` (relative to [`SftpServer::root`]): `/files/rel`.
    pub fn remote_path(&self, rel: &str) -> String {
        format!("{SFTP_FILES_DIR}/{}", rel.trim_start_matches('/'))
    }

    /// Writes a file under [`SftpServer::root`] (parents created), owned by the test
    /// user; a client reads it as `/files/rel`.
    pub fn put(&self, rel: &str, data: &[u8]) -> PathBuf {
        let root = self.root();
        let path = root.join(rel.trim_start_matches('/'));
        let parent = path.parent().expect("a file path has a parent");
        std::fs::create_dir_all(parent).expect("create dirs under the SFTP root");
        std::fs::write(&path, data).expect("write a file under the SFTP root");
        let mut dir = parent;
        while dir.starts_with(&root) {
            chown_to_ftp_user(dir);
            match dir.parent() {
                Some(p) => dir = p,
                None => break,
            }
        }
        chown_to_ftp_user(&path);
        path
    }

    /// The host key's fingerprint, `SHA256:...` as `ssh-keygen -lf` prints it.
    pub fn host_key_fingerprint(&self) -> String {
        ssh_host_key_fingerprint()
    }

    /// The host's public key, `ssh-ed25519 AAAA...`.
    pub fn host_public_key(&self) -> String {
        ssh_host_public_key()
    }

    /// A known_hosts line for this server: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, ssh_host_public_key())
    }

    /// The test client's private key (no passphrase), authorized for the test user.
    pub fn client_key(&self) -> PathBuf {
        ssh_client_key()
    }

    /// The test client's encrypted private key ([`SSH_KEY_PASSPHRASE`]), authorized too.
    pub fn client_key_encrypted(&self) -> PathBuf {
        ssh_client_key_encrypted()
    }

    /// The login user (the test bed's FTP user).
    pub fn user(&self) -> String {
        ftp_user()
    }

    /// The login password.
    pub fn password(&self) -> String {
        ftp_password()
    }
}

impl Drop for SftpServer {
    fn drop(&mut self) {
        self.stop();
        // Written by `serve sshd` beside the chroot (see scripts/testbed/serve).
        let _ = std::fs::remove_file(chroots_dir().join(format!("authorized_keys-{}", self.port)));
    }
}
