//! Other SFTP clients as baselines of `--only sftp`, beside OpenSSH's `sftp -b` (issue 22
//! names `lftp sftp://` and rclone): each one run with [`super::sftp::SESSIONS`]
//! connections, where it is installed (scripts/bench installs both from Debian; a client
//! that is missing is left out of the report, which says so).
//!
//! - lftp: `mirror --parallel=N` (N SFTP connections, each an `ssh` process) for a
//!   directory of small files, `get` / `put` for one large file; its `ssh` is OpenSSH's,
//!   given the test key and a known_hosts file (host key checked);
//! - rclone: `copy` with `--transfers N --checkers N` (a pool of SSH connections, Go's
//!   SSH), `copyto` for the large file; an on-the-fly `:sftp:` remote with the same key
//!   and known_hosts file. The server is sshd's internal-sftp, without a shell: rclone's
//!   remote hashing (md5sum over ssh) is off, as it would find it is anyway.
//!
//! Every run must succeed (a failed baseline would make any ratio meaningless); the time
//! of a run includes the client's logins, as `sftp -b`'s does.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// An SFTP client other than OpenSSH's sftp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tool {
    Lftp,
    Rclone,
}

impl Tool {
    pub(super) const ALL: [Tool; 2] = [Tool::Lftp, Tool::Rclone];

    fn program(self) -> &'static str {
        match self {
            Tool::Lftp => "lftp",
            Tool::Rclone => "rclone",
        }
    }

    /// How the report names its way of running: for a directory of small files with `n`
    /// connections, or (`n` None) for one large file.
    pub(super) fn label(self, n: Option<u64>) -> String {
        match (self, n) {
            (Tool::Lftp, Some(n)) => format!("lftp sftp:// (mirror --parallel={n})"),
            (Tool::Lftp, None) => "lftp sftp:// (get / put)".to_string(),
            (Tool::Rclone, Some(n)) => format!("rclone {} (--transfers {n})", version("rclone")),
            (Tool::Rclone, None) => format!("rclone {} (copyto)", version("rclone")),
        }
    }

    fn installed(self) -> bool {
        Command::new(self.program())
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// The first line of `program --version`, its version word ("v1.60.1-DEV").
fn version(program: &str) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default()
}

/// Where and how the clients log in.
pub(super) struct Clients {
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) key: PathBuf,
    pub(super) known_hosts: PathBuf,
    /// Connections of each run.
    pub(super) connections: u64,
}

impl Clients {
    /// The clients of [`Tool::ALL`] found on this machine.
    pub(super) fn installed() -> Vec<Tool> {
        Tool::ALL.into_iter().filter(|t| t.installed()).collect()
    }

    /// Copies the remote directory `remote` (its files) into the local `local`; seconds.
    pub(super) fn get_dir(&self, tool: Tool, remote: &str, local: &Path) -> f64 {
        match tool {
            Tool::Lftp => self.lftp(&format!(
                "mirror --parallel={} {remote} {}",
                self.connections,
                local.display()
            )),
            Tool::Rclone => self.rclone(&["copy", &format!(":sftp:{remote}"), path(local)]),
        }
    }

    /// Copies the files of the local directory `local` into the remote `remote`; seconds.
    pub(super) fn put_dir(&self, tool: Tool, local: &Path, remote: &str) -> f64 {
        match tool {
            Tool::Lftp => self.lftp(&format!(
                "mirror -R --parallel={} {} {remote}",
                self.connections,
                local.display()
            )),
            Tool::Rclone => self.rclone(&["copy", path(local), &format!(":sftp:{remote}")]),
        }
    }

    /// Downloads one remote file to `local`; seconds.
    pub(super) fn get(&self, tool: Tool, remote: &str, local: &Path) -> f64 {
        match tool {
            Tool::Lftp => self.lftp(&format!("get {remote} -o {}", local.display())),
            Tool::Rclone => self.rclone(&["copyto", &format!(":sftp:{remote}"), path(local)]),
        }
    }

    /// Uploads the local file `local` to `remote`; seconds.
    pub(super) fn put(&self, tool: Tool, local: &Path, remote: &str) -> f64 {
        match tool {
            Tool::Lftp => self.lftp(&format!("put {} -o {remote}", local.display())),
            Tool::Rclone => self.rclone(&["copyto", path(local), &format!(":sftp:{remote}")]),
        }
    }

    fn lftp(&self, command: &str) -> f64 {
        let ssh = format!(
            "ssh -a -x -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
            self.key.display(),
            self.known_hosts.display()
        );
        let script = format!(
            "set sftp:connect-program '{ssh}'; set cmd:fail-exit yes; open -u {}, sftp://127.0.0.1:{}; {command}",
            self.user, self.port
        );
        timed(Command::new("lftp").arg("-c").arg(script), "lftp")
    }

    fn rclone(&self, args: &[&str]) -> f64 {
        let n = self.connections.to_string();
        let mut c = Command::new("rclone");
        c.args(args)
            .args(["--sftp-host", "127.0.0.1", "--sftp-port"])
            .arg(self.port.to_string())
            .args(["--sftp-user", &self.user, "--sftp-key-file"])
            .arg(&self.key)
            .arg("--sftp-known-hosts-file")
            .arg(&self.known_hosts)
            .args(["--sftp-shell-type", "none", "--sftp-disable-hashcheck"])
            .args(["--transfers", &n, "--checkers", &n])
            // No config file: every setting is on the command line.
            .args(["--config", "/dev/null", "-q"]);
        timed(&mut c, "rclone")
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Runs `c` to its end; seconds. A failure ends the benchmark.
fn timed(c: &mut Command, what: &str) -> f64 {
    let t0 = Instant::now();
    let out = c.stdout(Stdio::null()).output().expect(what);
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    t0.elapsed().as_secs_f64()
}
