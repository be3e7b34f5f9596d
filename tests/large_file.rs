//! A 2 GiB file down and up through the real service (DESIGN.md section 3, bounded
//! memory): the bytes arrive intact both ways and the transfer worker's peak resident
//! memory (VmHWM) stays under 64 MiB, far below the file size.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use ftp_pooler_testbed::service::{produce, Service, Topics, Watcher};
use ftp_pooler_testbed::{FtpKind, FtpServer};
use serde_json::json;

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");
const SIZE: u64 = 2 * 1024 * 1024 * 1024;

/// A sparse 2 GiB file with a distinct 4 KiB block every 64 MiB (and at the very end).
fn make_big(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(SIZE).unwrap();
    let mut at = 0;
    while at < SIZE {
        f.seek(SeekFrom::Start(at)).unwrap();
        let block: Vec<u8> = (0..4096u64)
            .map(|i| ((at / 4096 + i * 7) % 251) as u8)
            .collect();
        f.write_all(&block).unwrap();
        at += 64 * 1024 * 1024;
    }
    f.seek(SeekFrom::Start(SIZE - 3)).unwrap();
    f.write_all(b"end").unwrap();
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_gib_file_goes_down_and_up_with_the_worker_under_64_mib() {
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    let storage = tempfile::Builder::new()
        .prefix("storage-")
        .tempdir()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    make_big(&server.root().join("big.bin"));
    server.put("small.bin", b"warm-up");
    let topics = Topics::create(1).await;
    let yaml = topics.config_yaml(
        "transfer:\n  transfer_timeout_seconds: 900\n  connect_timeout_seconds: 10\nlogging:\n  format: text\n",
    );
    let ini = format!(
        "{}\n[local]\ntype = local\nbase_path = {}\n",
        server.ini_section("a"),
        storage.path().display()
    );
    let watcher = Watcher::start(&topics).await;
    let mut svc = Service::start(Path::new(EXE), work.path(), &yaml, &ini);
    let pids = svc.wait_ready(Duration::from_secs(60)).await;
    let worker = pids["transfer:a"];
    let task = |id: &str, src: (&str, &str), dst: (&str, &str)| {
        (
            Some(id.to_string()),
            serde_json::to_vec(&json!({"task_id": id, "src_id": src.0, "src_path": src.1, "dst_id": dst.0, "dst_path": dst.1})).unwrap(),
        )
    };
    // A small task first: the worker's memory before any large transfer.
    produce(
        &topics.tasks,
        &[task("small", ("a", "small.bin"), ("local", "small.bin"))],
    )
    .await;
    watcher
        .wait_for(
            Duration::from_secs(60),
            "small task",
            |s| s.by_task.contains_key("small"),
            || svc.log(),
        )
        .await;
    let before = peak_rss_kib(worker);

    let t0 = Instant::now();
    produce(
        &topics.tasks,
        &[task("down", ("a", "big.bin"), ("local", "in/big.bin"))],
    )
    .await;
    let seen = watcher
        .wait_for(
            Duration::from_secs(600),
            "2 GiB download",
            |s| s.by_task.contains_key("down"),
            || svc.log(),
        )
        .await;
    let down_s = t0.elapsed().as_secs_f64();
    let r = &seen.by_task["down"][0].value;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["bytes_transferred"], SIZE);
    assert!(
        same_bytes(
            &server.root().join("big.bin"),
            &storage.path().join("in/big.bin")
        ),
        "download differs"
    );

    let t1 = Instant::now();
    produce(
        &topics.tasks,
        &[task("up", ("local", "in/big.bin"), ("a", "back/big.bin"))],
    )
    .await;
    let seen = watcher
        .wait_for(
            Duration::from_secs(600),
            "2 GiB upload",
            |s| s.by_task.contains_key("up"),
            || svc.log(),
        )
        .await;
    let up_s = t1.elapsed().as_secs_f64();
    let r = &seen.by_task["up"][0].value;
    assert_eq!(r["status"], "success", "{r}");
    assert!(
        same_bytes(
            &storage.path().join("in/big.bin"),
            &server.root().join("back/big.bin")
        ),
        "upload differs"
    );

    let peak = peak_rss_kib(worker);
    assert_eq!(
        svc.wait_ready(Duration::from_secs(5)).await["transfer:a"],
        worker,
        "same worker process throughout"
    );
    let mb = SIZE as f64 / 1e6;
    eprintln!(
        "2 GiB: download {down_s:.1} s ({:.0} MB/s), upload {up_s:.1} s ({:.0} MB/s); transfer worker peak RSS {} KiB before, {} KiB after",
        mb / down_s, mb / up_s, before, peak
    );
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    // The big files are removed with their temporary directories.
    std::fs::remove_file(storage.path().join("in/big.bin")).ok();
    std::fs::remove_file(server.root().join("back/big.bin")).ok();
}
