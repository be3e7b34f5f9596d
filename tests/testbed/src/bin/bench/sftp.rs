//! `--only sftp`: SFTP (issue 22) against OpenSSH's own client, on the test bed's sshd
//! (an SFTP-only chrooted user; key login, the host key checked by fingerprint).
//!
//! - small files (`--sftp-files`, 4 KiB each) down and up: the service with [`SESSIONS`]
//!   sessions (one SSH connection each) against [`SESSIONS`] `sftp -b` processes run at
//!   once, each with its share of the files in its batch (one connection each): the same
//!   number of connections. The service's time runs from the first task produced to the
//!   last result read; sftp's from the first process started to the last one ended
//!   (their logins included: the service's sessions are logged in before the clock);
//! - one large file (`--sftp-mib`, default 1024) down and up: the service's one task
//!   against one `sftp -b` get or put; and the transfer worker's peak RSS for it;
//! - the same, small and large, against lftp and rclone where installed
//!   ([`super::sftp_others`]), in the same rounds.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ftp_pooler_testbed::service::{Service, Topics, Watcher};
use ftp_pooler_testbed::SftpServer;

use super::sftp_others::{Clients, Tool};
use super::{log, median, paired_ratio, peak_rss_kib, round_ratios, settle, task, timed_run};
use super::{Args, Bench, Row};

/// Sessions of the service, and `sftp` processes of the baseline.
pub(super) const SESSIONS: u64 = 4;

/// `--only sftp`: see the module header. `bench` gives the service's binary, its local
/// storage and its work directory.
pub(super) async fn sftp(a: &Args, bench: &Bench, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let server = SftpServer::start();
    let n = a.sftp_files;
    log(&format!("sftp: preparing {n} files of 4 KiB on each side"));
    let local = bench.storage.path();
    for i in 0..n {
        server.put(&format!("small/f{i:05}.bin"), &vec![(i % 251) as u8; 4096]);
        let up = local.join(format!("sftp-up/f{i:05}.bin"));
        std::fs::create_dir_all(up.parent().unwrap()).unwrap();
        std::fs::write(up, vec![(i % 241) as u8; 4096]).unwrap();
    }
    let known_hosts = bench.work.path().join("sftp-known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", server.known_hosts_line())).unwrap();
    let tools = Clients::installed();
    let clients = Clients {
        port: server.port,
        user: server.user(),
        key: server.client_key(),
        known_hosts: known_hosts.clone(),
        connections: SESSIONS,
    };
    let tag = |tool: Tool| format!("{tool:?}").to_lowercase();
    // Per other client: rounds' files/s (down, up), then large MB/s (down, up).
    let mut others: Vec<[Vec<f64>; 4]> = vec![Default::default(); tools.len()];
    let ini = format!(
        "[sftp]\ntype = sftp\nhost = 127.0.0.1\nport = {}\nuser = {}\nprivate_key_file = {}\nhost_key_fingerprint = {}\n\n[local]\ntype = local\nbase_path = {}\n",
        server.port,
        server.user(),
        server.client_key().display(),
        server.host_key_fingerprint(),
        local.display()
    );
    let topics = Topics::create(3).await;
    let watcher = Watcher::start(&topics).await;
    let mut svc = Service::start(
        &bench.exe,
        &bench.work.path().join("sftp"),
        &bench.yaml(&topics, SESSIONS, true),
        &ini,
    );
    svc.wait_ready(Duration::from_secs(120)).await;
    server.put("warm.bin", b"warm");
    timed_run(
        &topics,
        &watcher,
        &[task(
            "sftp-warm",
            ("sftp", "/files/warm.bin"),
            ("local", "sftp-warm.bin"),
        )],
    )
    .await;
    let sftp_cmd = |batch: &Path| {
        let mut c = Command::new("sftp");
        c.args(["-q", "-b"])
            .arg(batch)
            .arg("-i")
            .arg(server.client_key())
            .args(["-o", "StrictHostKeyChecking=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "BatchMode=yes", "-P"])
            .arg(server.port.to_string())
            .arg(format!("{}@127.0.0.1", server.user()))
            .stdout(std::process::Stdio::null());
        c
    };
    // `SESSIONS` sftp processes at once, process k with lines k, k+S, ...; seconds.
    let parallel_sftp = |lines: &[String], tag: &str| -> f64 {
        let mut batches = Vec::new();
        for k in 0..SESSIONS as usize {
            let batch = bench.work.path().join(format!("sftp-{tag}-{k}.batch"));
            let mine: Vec<&str> = lines
                .iter()
                .skip(k)
                .step_by(SESSIONS as usize)
                .map(String::as_str)
                .collect();
            std::fs::write(&batch, mine.join("\n") + "\n").unwrap();
            batches.push(batch);
        }
        let t0 = Instant::now();
        let children: Vec<_> = batches
            .iter()
            .map(|b| sftp_cmd(b).spawn().expect("sftp"))
            .collect();
        for mut c in children {
            let status = c.wait().unwrap();
            assert!(status.success(), "sftp -b failed: {status}");
        }
        t0.elapsed().as_secs_f64()
    };
    let (mut down, mut up, mut base_down, mut base_up) = (vec![], vec![], vec![], vec![]);
    let rounds = a.repeats.clamp(1, 5);
    for r in 0..rounds {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                task(
                    &format!("sftp-d{r}-{i}"),
                    ("sftp", &format!("/files/small/f{i:05}.bin")),
                    ("local", &format!("sftp-down{r}/f{i:05}.bin")),
                )
            })
            .collect();
        settle();
        down.push(n as f64 / timed_run(&topics, &watcher, &tasks).await);
        let dir = local.join(format!("sftp-base-down{r}"));
        std::fs::create_dir_all(&dir).unwrap();
        let gets: Vec<String> = (0..n)
            .map(|i| format!("get /files/small/f{i:05}.bin {}/f{i:05}.bin", dir.display()))
            .collect();
        settle();
        base_down.push(n as f64 / parallel_sftp(&gets, "get"));
        for (t, &tool) in tools.iter().enumerate() {
            let dir = local.join(format!("sftp-{}-down{r}", tag(tool)));
            settle();
            others[t][0].push(n as f64 / clients.get_dir(tool, "/files/small", &dir));
            std::fs::remove_dir_all(&dir).ok();
        }
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                task(
                    &format!("sftp-u{r}-{i}"),
                    ("local", &format!("sftp-up/f{i:05}.bin")),
                    ("sftp", &format!("/files/svc-up{r}/f{i:05}.bin")),
                )
            })
            .collect();
        settle();
        up.push(n as f64 / timed_run(&topics, &watcher, &tasks).await);
        let remote_dir = format!("/files/base-up{r}");
        // The directory, owned by the SFTP user (put makes it so).
        let keep = server.put(&format!("base-up{r}/.keep"), b"");
        std::fs::remove_file(keep).ok();
        let puts: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "put {}/sftp-up/f{i:05}.bin {remote_dir}/f{i:05}.bin",
                    local.display()
                )
            })
            .collect();
        settle();
        base_up.push(n as f64 / parallel_sftp(&puts, "put"));
        for (t, &tool) in tools.iter().enumerate() {
            let remote = format!("/files/{}-up{r}", tag(tool));
            settle();
            others[t][1].push(n as f64 / clients.put_dir(tool, &local.join("sftp-up"), &remote));
            std::fs::remove_dir_all(server.root().join(&remote["/files/".len()..])).ok();
        }
        log(&format!(
            "sftp small round {r}: down {:.0} files/s vs sftp {:.0}, up {:.0} vs sftp {:.0}",
            down[r], base_down[r], up[r], base_up[r]
        ));
        std::fs::remove_dir_all(local.join(format!("sftp-down{r}"))).ok();
        std::fs::remove_dir_all(&dir).ok();
    }
    push_rows(
        rows,
        (n, 0),
        [&down, &up, &[], &[]],
        [&base_down, &base_up, &[], &[]],
        |_| format!("{SESSIONS} x sftp -b (OpenSSH)"),
        0..2,
    );

    channels(a, &server, rows, notes).await;

    // One large file, and the worker's peak RSS.
    let mib = a.sftp_mib;
    let bytes = mib * 1024 * 1024;
    let big = server.put("large.bin", b"");
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(bytes)
        .unwrap();
    // Read once before the rounds: the first read of a sparse file fills the page cache
    // (1 GiB: 0.6 s cold, 0.1 s cached here), and the service, first in every round,
    // would pay it alone.
    std::io::copy(
        &mut std::fs::File::open(&big).unwrap(),
        &mut std::io::sink(),
    )
    .unwrap();
    svc.restart_stage("transfer:sftp").await;
    let worker = svc
        .stage_processes()
        .into_iter()
        .find(|(_, c)| c == "ftp-pooler stage transfer sftp")
        .map(|(p, _)| p)
        .expect("the sftp worker");
    let (mut big_down, mut big_up, mut sftp_down, mut sftp_up) = (vec![], vec![], vec![], vec![]);
    let rounds = a.repeats.clamp(1, 3);
    for r in 0..rounds {
        settle();
        let s = timed_run(
            &topics,
            &watcher,
            &[task(
                &format!("sftp-big-d{r}"),
                ("sftp", "/files/large.bin"),
                ("local", "sftp-large.bin"),
            )],
        )
        .await;
        big_down.push(bytes as f64 / 1e6 / s);
        settle();
        let s = timed_run(
            &topics,
            &watcher,
            &[task(
                &format!("sftp-big-u{r}"),
                ("local", "sftp-large.bin"),
                ("sftp", "/files/svc-large.bin"),
            )],
        )
        .await;
        big_up.push(bytes as f64 / 1e6 / s);
        let dest = local.join("sftp-base-large.bin");
        let batch = bench.work.path().join("sftp-large.batch");
        std::fs::write(&batch, format!("get /files/large.bin {}\n", dest.display())).unwrap();
        settle();
        let t0 = Instant::now();
        assert!(sftp_cmd(&batch).status().unwrap().success());
        sftp_down.push(bytes as f64 / 1e6 / t0.elapsed().as_secs_f64());
        std::fs::write(
            &batch,
            format!("put {} /files/base-large.bin\n", dest.display()),
        )
        .unwrap();
        settle();
        let t0 = Instant::now();
        assert!(sftp_cmd(&batch).status().unwrap().success());
        sftp_up.push(bytes as f64 / 1e6 / t0.elapsed().as_secs_f64());
        for (t, &tool) in tools.iter().enumerate() {
            let mine = local.join(format!("sftp-{}-large.bin", tag(tool)));
            settle();
            others[t][2].push(bytes as f64 / 1e6 / clients.get(tool, "/files/large.bin", &mine));
            let remote = format!("/files/{}-large.bin", tag(tool));
            settle();
            others[t][3].push(bytes as f64 / 1e6 / clients.put(tool, &mine, &remote));
            std::fs::remove_file(mine).ok();
            std::fs::remove_file(server.root().join(&remote["/files/".len()..])).ok();
        }
        for p in [dest, local.join("sftp-large.bin")] {
            std::fs::remove_file(p).ok();
        }
        for p in ["svc-large.bin", "base-large.bin"] {
            std::fs::remove_file(server.root().join(p)).ok();
        }
        log(&format!(
            "sftp large round {r}: down {:.0} MB/s vs sftp {:.0}, up {:.0} vs sftp {:.0}",
            big_down[r], sftp_down[r], big_up[r], sftp_up[r]
        ));
    }
    let rss = peak_rss_kib(worker) as f64 / 1024.0;
    push_rows(
        rows,
        (n, mib),
        [&down, &up, &big_down, &big_up],
        [&base_down, &base_up, &sftp_down, &sftp_up],
        |_| "sftp -b (OpenSSH)".to_string(),
        2..4,
    );
    drop(svc);
    let mut other_ratios = Vec::new();
    for (t, &tool) in tools.iter().enumerate() {
        let label = |k: usize| tool.label((k < 2).then_some(SESSIONS));
        let [d, u, bd, bu] = &others[t];
        push_rows(
            rows,
            (n, mib),
            [&down, &up, &big_down, &big_up],
            [d, u, bd, bu],
            label,
            0..4,
        );
        other_ratios.push(format!(
            "{}: small down {}, up {}; large down {}, up {}",
            label(0),
            round_ratios(&down, d),
            round_ratios(&up, u),
            round_ratios(&big_down, bd),
            round_ratios(&big_up, bu),
        ));
    }
    let missing: Vec<_> = Tool::ALL
        .iter()
        .filter(|t| !tools.contains(t))
        .map(|t| format!("{t:?}"))
        .collect();
    if !missing.is_empty() {
        other_ratios.push(format!("not installed, left out: {}", missing.join(", ")));
    }
    let line = format!(
        "SFTP (issue 22): OpenSSH's sshd of the test bed (internal-sftp, chrooted user, key login); the service with {SESSIONS} sessions, one SSH connection each (russh, chacha20-poly1305 or aes-gcm as negotiated), against OpenSSH's sftp client with as many connections. Small files: {n} x 4 KiB per round, the rounds' ratios down {}, up {}. Large file: {mib} MiB (sparse on the server), ratios down {}, up {}. The transfer worker's peak RSS (VmHWM, a fresh worker) after the large downloads and uploads: {rss:.1} MiB. Other clients, the service's ratio to each per round: {}.",
        round_ratios(&down, &base_down),
        round_ratios(&up, &base_up),
        round_ratios(&big_down, &sftp_down),
        round_ratios(&big_up, &sftp_up),
        other_ratios.join("; "),
    );
    log(&line);
    notes.push(line);
}

/// Rows `ks` of the report for the service against one baseline, `label(k)` naming the
/// baseline's way: 0 and 1 the small files (`files.0` of them) down and up, 2 and 3 the
/// large file (`files.1` MiB) down and up; rounds' figures in `ours[k]` and `base[k]`.
fn push_rows(
    rows: &mut Vec<Row>,
    files: (usize, u64),
    ours: [&[f64]; 4],
    base: [&[f64]; 4],
    label: impl Fn(usize) -> String,
    ks: std::ops::Range<usize>,
) {
    let (n, mib) = files;
    for k in ks {
        let scenario = match k {
            0 => format!("SFTP: {n} x 4 KiB downloads, {SESSIONS} connections (files/s)"),
            1 => format!("SFTP: {n} x 4 KiB uploads, {SESSIONS} connections (files/s)"),
            2 => format!("SFTP: {mib} MiB download (MB/s)"),
            _ => format!("SFTP: {mib} MiB upload (MB/s)"),
        };
        rows.push(Row {
            scenario,
            ours: format!("{:.0}", median(ours[k].to_vec())),
            baseline: format!("{}: {:.0}", label(k), median(base[k].to_vec())),
            ratio: paired_ratio(ours[k], base[k]),
            goal: Some(if k < 2 { 1.0 } else { 0.9 }),
        });
    }
}

/// Small files through [`SESSIONS`] SFTP sessions, below the service: each session an SSH
/// connection of its own (what the pool does) against [`SESSIONS`] channels of one
/// connection ([`SftpSession::open_channel`]), in alternating rounds. Downloads into
/// memory, uploads from memory; every session takes every `SESSIONS`th file.
async fn channels(a: &Args, server: &SftpServer, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    use ftp_pooler_config::{HostKeyCheck, SftpAuth, SftpConnection, TransferSettings};
    use ftp_pooler_transfer::{SessionOptions, SftpSession};
    let conn = SftpConnection {
        host: "127.0.0.1".into(),
        port: server.port,
        user: server.user(),
        auth: SftpAuth::Key {
            file: server.client_key(),
            passphrase: None,
        },
        host_key: HostKeyCheck::Fingerprint(server.host_key_fingerprint()),
        timeout_seconds: Some(30),
        max_sessions: None,
    };
    let opts = SessionOptions::for_sftp(&conn, &TransferSettings::default());
    let n = a.sftp_files;
    // The sessions' work, all at once; files/s down and up.
    async fn run(sessions: Vec<SftpSession>, n: usize, tag: &str) -> (f64, f64) {
        let k = sessions.len();
        let mut rates = [0.0; 2];
        let mut sessions = sessions;
        for (w, upload) in [false, true].into_iter().enumerate() {
            let t0 = Instant::now();
            let mut jobs = Vec::new();
            for (j, mut s) in sessions.drain(..).enumerate() {
                let tag = tag.to_string();
                jobs.push(tokio::spawn(async move {
                    for i in (j..n).step_by(k) {
                        if upload {
                            let data = vec![(i % 239) as u8; 4096];
                            s.upload(
                                &mut data.as_slice(),
                                &format!("/files/ch-{tag}/f{i:05}.bin"),
                            )
                            .await
                            .expect("sftp upload");
                        } else {
                            let mut out = Vec::with_capacity(4096);
                            s.download(&format!("/files/small/f{i:05}.bin"), &mut out)
                                .await
                                .expect("sftp download");
                        }
                    }
                    s
                }));
            }
            for job in jobs {
                sessions.push(job.await.expect("a session's work"));
            }
            rates[w] = n as f64 / t0.elapsed().as_secs_f64();
        }
        for s in sessions {
            s.quit().await;
        }
        (rates[0], rates[1])
    }
    let (mut conn_rates, mut chan_rates) = (Vec::new(), Vec::new());
    for r in 0..a.repeats.clamp(1, 5) {
        for shared in [false, true] {
            let tag = format!("{}{r}", if shared { "c" } else { "n" });
            let keep = server.put(&format!("ch-{tag}/.keep"), b"");
            std::fs::remove_file(keep).ok();
            let mut sessions = Vec::new();
            if shared {
                let first = SftpSession::connect(&conn, opts.clone())
                    .await
                    .expect("sftp");
                for _ in 1..SESSIONS {
                    sessions.push(first.open_channel().await.expect("a channel"));
                }
                sessions.push(first);
            } else {
                for _ in 0..SESSIONS {
                    sessions.push(
                        SftpSession::connect(&conn, opts.clone())
                            .await
                            .expect("sftp"),
                    );
                }
            }
            let rates = run(sessions, n, &tag).await;
            if shared {
                chan_rates.push(rates);
            } else {
                conn_rates.push(rates);
            }
            std::fs::remove_dir_all(server.root().join(format!("ch-{tag}"))).ok();
        }
    }
    let pick = |v: &[(f64, f64)], up: bool| -> Vec<f64> {
        v.iter().map(|r| if up { r.1 } else { r.0 }).collect()
    };
    for (what, up) in [("downloads", false), ("uploads", true)] {
        let (c, m) = (pick(&conn_rates, up), pick(&chan_rates, up));
        rows.push(Row {
            scenario: format!(
                "SFTP sessions: {n} x 4 KiB {what} through {SESSIONS} channels of one SSH connection (files/s)"
            ),
            ours: format!("{:.0}", median(m.clone())),
            baseline: format!(
                "{SESSIONS} connections, one channel each (the pool's way): {:.0}",
                median(c.clone())
            ),
            ratio: paired_ratio(&m, &c),
            goal: None,
        });
    }
    let line = format!(
        "SFTP sessions (issue 22), below the service: {n} x 4 KiB files each way through {SESSIONS} sessions, as {SESSIONS} SSH connections (one channel each, the pool's way) or as {SESSIONS} channels of one connection, alternating rounds; channels over connections per round: downloads {}, uploads {}.",
        round_ratios(&pick(&chan_rates, false), &pick(&conn_rates, false)),
        round_ratios(&pick(&chan_rates, true), &pick(&conn_rates, true)),
    );
    log(&line);
    notes.push(line);
}
