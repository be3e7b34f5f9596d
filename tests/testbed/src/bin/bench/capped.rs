//! `--only capped`: one large file (`--capped-mib`, default 1024) down and up through a
//! bandwidth-capped WAN link (issue 20): the test bed's link simulator ([`LinkProxy`] on
//! 127.0.0.2) with a 20 ms round trip and a cap of `--capped-mbps` MB/s (10^6 bytes per
//! second, default 50) each way, in front of the main scenario's vsftpd.
//!
//! Measured as the `large` scenario measures its file: the service's one task from the
//! produce to its result read back (its data synced before the rename, as always), curl
//! as a process (`curl -o` down, `curl -T` up) through the same link in the same rounds.
//! Each figure is reported as a ratio to the cap; the goal is the service's.

use ftp_pooler_testbed::link::LinkSpec;
use ftp_pooler_testbed::service::{Topics, Watcher};
use ftp_pooler_testbed::{ftp_password, ftp_user};

use super::wan::{link_to, service_via};
use super::{curl, log, median, round_ratios, settle, sparse, task, timed_run, Args, Bench, Row};

/// The link's round trip.
const RTT_MS: u64 = 20;

/// The file's name on the server and in the local storage.
const FILE: &str = "capped.bin";

/// MB/s of each round: the service's and curl's, down and up.
#[derive(Default)]
struct Rates {
    down: Vec<f64>,
    curl_down: Vec<f64>,
    up: Vec<f64>,
    curl_up: Vec<f64>,
}

/// `--only capped`: see the module header. `bench` is the main scenario's (vsftpd).
pub(super) async fn capped(a: &Args, bench: &Bench, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let mib = a.capped_mib;
    let bytes = mib * 1024 * 1024;
    let cap = a.capped_mbps as f64;
    let spec = LinkSpec::rtt_ms(RTT_MS).with_bandwidth(a.capped_mbps * 1_000_000);
    sparse(&bench.server.root().join(FILE), bytes);
    let link = link_to(&bench.server, spec);
    let topics = Topics::create(3).await;
    let watcher = Watcher::start(&topics).await;
    let svc = service_via(bench, &link, "capped", &topics, &watcher).await;
    let url = |p: &str| {
        format!(
            "ftp://{}:{}@{}/{p}",
            ftp_user(),
            ftp_password(),
            link.addr()
        )
    };
    let mb_s = |s: f64| bytes as f64 / 1e6 / s;
    let mut rates = Rates::default();
    for r in 0..a.repeats {
        settle();
        let s = timed_run(
            &topics,
            &watcher,
            &[task(
                &format!("capped-d{r}"),
                ("ftp", FILE),
                ("local", FILE),
            )],
        )
        .await;
        rates.down.push(mb_s(s));
        settle();
        let s = timed_run(
            &topics,
            &watcher,
            &[task(
                &format!("capped-u{r}"),
                ("local", FILE),
                ("ftp", "/svc-capped.bin"),
            )],
        )
        .await;
        rates.up.push(mb_s(s));
        let dest = bench.storage.path().join("curl-capped.bin");
        settle();
        let s = curl(&["-o", dest.to_str().unwrap(), &url(FILE)]);
        rates.curl_down.push(mb_s(s));
        settle();
        let s = curl(&["-T", dest.to_str().unwrap(), &url("curl-capped.bin")]);
        rates.curl_up.push(mb_s(s));
        std::fs::remove_file(&dest).ok();
        std::fs::remove_file(bench.storage.path().join(FILE)).ok();
        std::fs::remove_file(bench.server.root().join("svc-capped.bin")).ok();
        std::fs::remove_file(bench.server.root().join("curl-capped.bin")).ok();
        log(&format!(
            "capped round {r}: down {:.1} MB/s vs curl {:.1}, up {:.1} vs curl {:.1} (the cap: {cap:.0})",
            rates.down[r], rates.curl_down[r], rates.up[r], rates.curl_up[r]
        ));
    }
    drop(svc);
    drop(link);
    std::fs::remove_file(bench.server.root().join(FILE)).ok();
    let row = |dir: &str, ours: &[f64], base: &[f64], curl_args: &str| {
        let (o, b) = (median(ours.to_vec()), median(base.to_vec()));
        Row {
            scenario: format!(
                "{mib} MiB {dir} through a {cap:.0} MB/s, {RTT_MS} ms link, ratio to the cap (MB/s)"
            ),
            ours: format!("{o:.1}"),
            baseline: format!(
                "the cap: {cap:.0}; curl{curl_args}: {b:.1} ({:.2}x the cap)",
                b / cap
            ),
            ratio: o / cap,
            goal: Some(0.9),
        }
    };
    rows.push(row("download", &rates.down, &rates.curl_down, ""));
    rows.push(row("upload", &rates.up, &rates.curl_up, " -T"));
    let to_cap = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{:.2}", x / cap))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let line = format!(
        "A {mib} MiB file through the link simulator on 127.0.0.2 (RTT {RTT_MS} ms, capped at {cap:.0} MB/s each way, the cap shared by the link's control and data connections), vsftpd behind it: the service's one task from produce to result (its data synced before the rename), curl's process time, in the same rounds. Each round's ratio to the cap: downloads, the service {}, curl {}; uploads, the service {}, curl {}. The service against curl in each round: downloads {}, uploads {}. curl's time includes its connection, its login and the commands before the transfer, each a round trip or more through the link (the service's session was logged in before the clock). The link's own pacing: a 32 MiB download capped at 20 MB/s took 3-4 % longer than at the cap (debug build, docs/NOTES.md).",
        to_cap(&rates.down),
        to_cap(&rates.curl_down),
        to_cap(&rates.up),
        to_cap(&rates.curl_up),
        round_ratios(&rates.down, &rates.curl_down),
        round_ratios(&rates.up, &rates.curl_up),
    );
    log(&line);
    notes.push(line);
}
