//! Server processes that die with the test process, and free ports.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, and test
//! threads come and go; so every server is spawned by one spawner thread that lives as
//! long as the process. A server is killed by [`ServerProcess::kill`] / drop, or by the
//! kernel when the test process dies.

use std::collections::HashSet;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

/// The repository root (where `scripts/` is).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

type SpawnRequest = (Command, Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The channel lives in a static: this loop (and thread) never ends.
            })
            .expect("spawn the testbed spawner thread");
        Mutex::new(tx)
    })
}

/// A server started through `scripts/testbed/serve`; killed when dropped.
pub struct ServerProcess {
    name: String,
    child: Mutex<Child>,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Runs `scripts/testbed/serve ARGS...` (it execs the server in the foreground).
    pub fn serve(name: &str, args: &[String]) -> ServerProcess {
        let script = workspace_root().join("scripts/testbed/serve");
        let log_dir = tempfile::tempdir().expect("temp dir for server output");
        let log = log_dir.path().join("output.log");
        let out = File::create(&log).expect("server log file");
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log fd"))
            .stderr(out);
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let (tx, rx) = channel();
        spawner()
            .lock()
            .unwrap()
            .send((cmd, tx))
            .expect("spawner thread alive");
        let child = rx
            .recv()
            .expect("spawner replies")
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", script.display()));
        ServerProcess {
            name: name.to_string(),
            child: Mutex::new(child),
            log,
            _log_dir: log_dir,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// Some(status) once the process has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    /// What the server printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Ports handed out by this process, never handed out twice.
fn taken() -> &'static Mutex<HashSet<u16>> {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    TAKEN.get_or_init(Default::default)
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free TCP port on 127.0.0.1 (below the kernel's ephemeral range, so no outgoing
/// connection takes it in the meantime).
pub fn free_port() -> u16 {
    free_port_range(1)
}

/// The first of `n` consecutive free ports (for passive-mode ranges).
pub fn free_port_range(n: u16) -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut taken = taken().lock().unwrap();
    for _ in 0..10_000 {
        // Spread processes apart: start from a pid-derived offset in 20000..32000.
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let span = 12_000 - u64::from(n);
        let base = 20_000 + ((u64::from(std::process::id()) * 7919 + k * 97) % span) as u16;
        let ports = base..base + n;
        if ports.clone().all(|p| !taken.contains(&p) && bindable(p)) {
            taken.extend(ports);
            return base;
        }
    }
    // Random bases found none (a long run, such as scripts/bench, fragments the range):
    // the first fit, in order.
    let mut base = 20_000u16;
    while base + n <= 32_000 {
        match (base..base + n).find(|p| taken.contains(p) || !bindable(*p)) {
            None => {
                taken.extend(base..base + n);
                return base;
            }
            Some(busy) => base = busy + 1,
        }
    }
    panic!("no {n} consecutive free ports in 20000..32000");
}

/// Gives back ports of [`free_port_range`] once their server is gone (a long run of many
/// servers would run out otherwise).
pub fn release_port_range(base: u16, n: u16) {
    let mut taken = taken().lock().unwrap();
    for p in base..base.saturating_add(n) {
        taken.remove(&p);
    }
}

/// A name unique to this test run: `prefix-<pid>-<counter>` (topics, groups).
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
