//! Whole-system faults (issue 7): the whole service killed at once, and a local disk that
//! fills up. Against the real service, the test bed's broker, vsftpd and pyftpdlib.
//!
//! - kill -9 of the supervisor and every stage together, mid-run, then a fresh start on
//!   the same files: every task still gets a result (duplicates counted and reported),
//!   files are whole, no temporary file is left, the committed offsets reach the end.
//! - Both run in JSON log mode, and every line every process printed (kill -9 and
//!   restarts included) must be one JSON object.
//! - A full local filesystem (a small tmpfs as the local connection's base_path):
//!   downloads fail with IO_ERROR after their retries, no temporary or partial file is
//!   left, no stage restarts, and downloads succeed again once space returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ftp_pooler_testbed::scenario::{
    mid_run_with_env, tail, wait_until, MidRun, RUN_LIMIT, TEMP_SUFFIX,
};
use ftp_pooler_testbed::service::{files_ending_with, json_lines, produce, SmallStack};
use ftp_pooler_testbed::{FtpKind, FtpServer};
use serde_json::json;

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");
/// The fault tests log in JSON: what they print is checked line by line.
const JSON_LOGS: (&str, &str) = ("FTP_POOLER_LOGGING__FORMAT", "json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_whole_service_mid_run_then_a_restart_loses_nothing() {
    let MidRun {
        sc,
        watcher,
        mut svc,
        deliveries,
        ..
    } = mid_run_with_env(Path::new(EXE), &[JSON_LOGS]).await;
    let supervisor = svc.pid();
    let stages = svc.stage_processes();
    assert_eq!(stages.len(), 4, "{stages:?}");
    let before = ftp_pooler_testbed::service::committed(
        &sc.topics.group,
        &sc.topics.tasks,
        sc.topics.partitions,
    );
    svc.kill_all();
    let at_kill = watcher.seen().results();
    eprintln!("committed before the kill: {before:?}");
    let alive = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
            .unwrap_or(false)
    };
    let pids: Vec<u32> = stages.keys().copied().chain([supervisor]).collect();
    wait_until(
        Duration::from_secs(5),
        "every process is gone after kill -9",
        || !pids.iter().any(alive),
    )
    .await;
    // The runtime directory of the dead instance (sockets, pid file) is still there:
    // the new supervisor must take it over.
    svc.spawn();
    svc.wait_ready(Duration::from_secs(60)).await;
    let seen = sc.wait_all(&watcher, &svc, RUN_LIMIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = watcher.seen().results().max(seen.results());
    let dupes = sc.verify(&watcher.seen());
    eprintln!(
        "kill -9 of the whole service after {at_kill} results: {} tasks, {seen} results, \
         {dupes} duplicates",
        sc.expected_results()
    );
    sc.wait_committed(&deliveries, Duration::from_secs(30))
        .await;
    assert!(json_lines(&svc.log()).len() > 100);
}

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new().prefix("tmpfs-").tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0777"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs failed (the disk-full test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `name` until the filesystem is full (or `limit` bytes are written).
    fn fill(&self, name: &str, limit: usize) -> usize {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join(name)).unwrap();
        let chunk = vec![0u8; 4096];
        let mut written = 0;
        while written < limit {
            match f.write(&chunk[..chunk.len().min(limit - written)]) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n,
            }
        }
        let _ = f.sync_all();
        written
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn download(id: &str, remote: &str, local: &str) -> (Option<String>, Vec<u8>) {
    let task = json!({"task_id": id, "src_id": "a", "src_path": remote,
        "dst_id": "local", "dst_path": local});
    (Some(id.to_string()), serde_json::to_vec(&task).unwrap())
}

/// Every file under `root` (relative paths), for "nothing partial is left".
fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_local_disk_fails_downloads_with_io_error_and_recovers_when_space_returns() {
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    let small: Vec<u8> = (0..100 * 1024u32).map(|i| (i % 241) as u8).collect();
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 239) as u8).collect();
    server.put("src/small.bin", &small);
    server.put("src/big.bin", &big);
    let disk = Tmpfs::mount("2m");
    std::fs::create_dir(disk.path().join("in")).unwrap();
    let mut stack = SmallStack::start(Path::new(EXE), server, disk.path(), &[JSON_LOGS]).await;
    let (topics, watcher) = (stack.topics.clone(), &stack.watcher);

    // 1. Full: every download fails with IO_ERROR after its retries.
    disk.fill("filler", usize::MAX);
    let full: Vec<_> = (0..8)
        .map(|i| {
            download(
                &format!("full-{i}"),
                "src/small.bin",
                &format!("/in/full-{i}.bin"),
            )
        })
        .collect();
    produce(&topics.tasks, &full).await;
    let ids: Vec<String> = (0..8).map(|i| format!("full-{i}")).collect();
    let seen = watcher
        .wait_for(
            Duration::from_secs(90),
            "the downloads to a full disk fail",
            |s| ids.iter().all(|id| s.by_task.contains_key(id)),
            || tail(&stack.svc.log(), 40),
        )
        .await;
    for id in &ids {
        let r = &seen.by_task[id][0];
        assert_eq!(r.topic, topics.failures, "{id}: {}", r.value);
        assert_eq!(r.value["error_code"], "IO_ERROR", "{id}: {}", r.value);
        assert_eq!(r.value["retryable"], true);
        assert_eq!(r.value["attempts"], 4, "{id}: 1 + max_retries 3");
        let msg = r.value["error_message"].as_str().unwrap();
        assert!(msg.contains("No space left"), "{id}: {msg}");
    }
    assert_eq!(
        all_files(disk.path()),
        vec![PathBuf::from("filler")],
        "no temporary or partial file on the full disk"
    );

    // 2. Space for part of a file: the big download fails midway and leaves nothing;
    //    the space it used comes back, so a small one then fits.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    disk.fill("filler", 2 * 1024 * 1024 - 300 * 1024);
    produce(
        &topics.tasks,
        &[download("midway", "src/big.bin", "/in/big.bin")],
    )
    .await;
    let seen = watcher
        .wait_for(
            Duration::from_secs(60),
            "the download that fills the disk midway fails",
            |s| s.by_task.contains_key("midway"),
            || tail(&stack.svc.log(), 40),
        )
        .await;
    assert_eq!(seen.by_task["midway"][0].value["error_code"], "IO_ERROR");
    assert!(files_ending_with(disk.path(), TEMP_SUFFIX).is_empty());
    assert!(!disk.path().join("in/big.bin").exists(), "no partial file");
    produce(
        &topics.tasks,
        &[download("fits", "src/small.bin", "/in/fits.bin")],
    )
    .await;

    // 3. Space returns: the same downloads succeed.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let again: Vec<_> = (0..8)
        .map(|i| {
            download(
                &format!("again-{i}"),
                "src/small.bin",
                &format!("/in/full-{i}.bin"),
            )
        })
        .collect();
    produce(&topics.tasks, &again).await;
    let ids: Vec<String> = (0..8)
        .map(|i| format!("again-{i}"))
        .chain(["fits".to_string()])
        .collect();
    let seen = watcher
        .wait_for(
            Duration::from_secs(60),
            "downloads succeed once space returns",
            |s| ids.iter().all(|id| s.by_task.contains_key(id)),
            || tail(&stack.svc.log(), 40),
        )
        .await;
    for id in &ids {
        let r = &seen.by_task[id][0];
        assert_eq!(r.topic, topics.results, "{id}: {}", r.value);
    }
    for i in 0..8 {
        assert!(std::fs::read(disk.path().join(format!("in/full-{i}.bin"))).unwrap() == small);
    }
    assert!(std::fs::read(disk.path().join("in/fits.bin")).unwrap() == small);
    assert!(files_ending_with(disk.path(), TEMP_SUFFIX).is_empty());

    // The service kept running: same processes, no restart.
    stack.assert_no_restart().await;
    json_lines(&stack.svc.log());
}
