//! README command 1 (`scripts/dev-up`) end to end, on free ports: it brings up the dev
//! stack (Tansu, vsftpd plain and FTPS, pyftpdlib), checks the dev configuration, runs
//! the service, produces the sample tasks and prints their results; `scripts/dev-down`
//! then stops the service and every server.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ftp_pooler_testbed::service::children_of;
use ftp_pooler_testbed::{free_port, free_port_range, workspace_root};

static API_PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
static METRICS_PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn script(name: &str, run_dir: &Path, ports: &[(&str, u16)]) -> std::process::Output {
    let exe = Path::new(env!("CARGO_BIN_EXE_ftp-pooler"));
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("scripts").join(name))
        .env("FTP_POOLER_DEV_RUN", run_dir)
        .env("FTP_POOLER_BIN", exe.parent().unwrap())
        .env_remove("FTP_POOLER_TEST_BOOTSTRAP")
        .env_remove("FTP_POOLER_RUNTIME_DIR")
        .env("FTP_POOLER_API__PORT", API_PORT.get().unwrap().to_string())
        .env(
            "FTP_POOLER_METRICS__PORT",
            METRICS_PORT.get().unwrap().to_string(),
        );
    for (k, v) in ports {
        cmd.env(k, v.to_string());
    }
    cmd.output().unwrap()
}

#[test]
fn dev_up_moves_the_sample_files_and_dev_down_stops_everything() {
    let run = tempfile::tempdir().unwrap();
    API_PORT.get_or_init(free_port);
    METRICS_PORT.get_or_init(free_port);
    let ports = [
        ("DEV_KAFKA_PORT", free_port()),
        ("DEV_VSFTPD_PORT", free_port()),
        ("DEV_VSFTPD_TLS_PORT", free_port()),
        ("DEV_PYFTPD_PORT", free_port()),
        ("DEV_PASV_BASE", free_port_range(60)),
    ];
    // Stop whatever started, even if an assertion below fails.
    struct Down<'a>(&'a Path, [(&'a str, u16); 5]);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            script("dev-down", self.0, &self.1);
        }
    }
    let down = Down(run.path(), ports);
    let out = script("dev-up", run.path(), &ports);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let log = std::fs::read_to_string(run.path().join("ftp-pooler.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "dev-up failed:\n{stdout}\n{stderr}\n{log}"
    );

    // What it printed: 9 downloads and 3 uploads succeeded, the invalid task failed, the
    // malformed message is in the DLQ.
    let lines = |prefix: &str, word: &str| {
        stdout
            .lines()
            .filter(|l| l.starts_with(prefix) && l.contains(word))
            .count()
    };
    assert_eq!(lines("ftp-results ", " success "), 12, "{stdout}");
    assert_eq!(lines("ftp-failures ", "INVALID_CONFIG"), 1, "{stdout}");
    assert_eq!(lines("ftp-tasks-dlq ", "INVALID_MESSAGE"), 1, "{stdout}");
    assert!(stdout.contains("configuration ok"), "{stdout}");
    for conn in ["vsftpd", "vsftpd-tls", "pyftpdlib"] {
        let inbox = run.path().join("storage/inbox").join(conn);
        let files = std::fs::read_dir(&inbox).map(|d| d.count()).unwrap_or(0);
        assert_eq!(files, 3, "{}", inbox.display());
        let uploads = run.path().join("ftp").join(conn).join("uploads");
        assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 1);
    }

    // Everything it started: the servers, the supervisor and its five stages.
    let pid_of = |name: &str| -> i32 {
        std::fs::read_to_string(run.path().join(format!("{name}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let mut pids: Vec<i32> = ["broker", "vsftpd", "vsftpd-tls", "pyftpdlib", "ftp-pooler"]
        .iter()
        .map(|n| pid_of(n))
        .collect();
    let stages = children_of(pid_of("ftp-pooler") as u32);
    assert_eq!(
        stages.len(),
        5,
        "publish, three transfer workers, ingest: {stages:?}"
    );
    pids.extend(stages.keys().map(|&p| p as i32));

    drop(down);
    for pid in pids {
        for _ in 0..100 {
            if !alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!alive(pid), "pid {pid} still running after dev-down");
    }
}
