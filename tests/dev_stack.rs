//! The dev stack scripts (`scripts/testbed/start.sh` / `stop.sh`, used by
//! `scripts/dev-up`) on free ports: everything comes up and answers, the topics exist,
//! the dev configuration is valid against it, and stop leaves nothing running.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ftp_pooler_config::{load_settings, Registry, TransferSettings};
use ftp_pooler_testbed::{
    ca_file, free_port, free_port_range, ftp_password, ftp_user, workspace_root, Broker,
};
use ftp_pooler_transfer::tls::TlsContext;
use ftp_pooler_transfer::{FtpSession, SessionOptions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

fn script(name: &str, run_dir: &Path, ports: &[(&str, u16)]) -> std::process::Output {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("scripts/testbed").join(name))
        .env("FTP_POOLER_DEV_RUN", run_dir)
        .env_remove("FTP_POOLER_TEST_BOOTSTRAP");
    for (k, v) in ports {
        cmd.env(k, v.to_string());
    }
    cmd.output().unwrap()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[tokio::test]
async fn start_and_stop_the_dev_stack() {
    let run = tempfile::tempdir().unwrap();
    let (kafka, vs, vs_tls, py) = (free_port(), free_port(), free_port(), free_port());
    let ports = [
        ("DEV_KAFKA_PORT", kafka),
        ("DEV_VSFTPD_PORT", vs),
        ("DEV_VSFTPD_TLS_PORT", vs_tls),
        ("DEV_PYFTPD_PORT", py),
        ("DEV_PASV_BASE", free_port_range(60)),
    ];
    let out = script("start.sh", run.path(), &ports);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let pids: Vec<i32> = std::fs::read_dir(run.path())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "pid")
                .then(|| std::fs::read_to_string(p).unwrap().trim().parse().unwrap())
        })
        .collect();
    // Stop whatever started, even if an assertion below fails.
    struct Stop<'a>(&'a Path, [(&'a str, u16); 5]);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            script("stop.sh", self.0, &self.1);
        }
    }
    let stop = Stop(run.path(), ports);
    assert!(out.status.success(), "start.sh failed:\n{stderr}");
    assert_eq!(pids.len(), 4, "{stderr}");

    // The broker answers and has the topics.
    let bootstrap = format!("127.0.0.1:{kafka}");
    Broker::check_at(&bootstrap, Duration::from_secs(10)).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let topics: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
    for t in ["ftp-tasks", "ftp-results", "ftp-failures", "ftp-tasks-dlq"] {
        assert!(topics.contains(&t), "{t} missing from {topics:?}");
    }

    // The dev configuration, filled in as scripts/dev-up does, is valid against it...
    let template =
        std::fs::read_to_string(workspace_root().join("config/dev/connections.ini.in")).unwrap();
    let storage = tempfile::tempdir().unwrap();
    let ini = template
        .replace("@VSFTPD_PORT@", &vs.to_string())
        .replace("@VSFTPD_TLS_PORT@", &vs_tls.to_string())
        .replace("@PYFTPD_PORT@", &py.to_string())
        .replace("@FTP_USER@", &ftp_user())
        .replace("@FTP_PASSWORD@", &ftp_password())
        .replace("@CA_FILE@", &ca_file().display().to_string())
        .replace("@STORAGE@", &storage.path().display().to_string());
    let registry = Registry::parse(Path::new("connections.ini"), &ini).unwrap();
    let settings =
        load_settings(Some(&workspace_root().join("config/dev/config.yaml")), &[]).unwrap();
    assert_eq!(settings.kafka.bootstrap_servers, ["127.0.0.1:19092"]);

    // ...and every FTP connection in it logs in.
    for (id, conn) in registry.ftp() {
        let tls = (conn.tls != ftp_pooler_config::TlsMode::None)
            .then(|| TlsContext::for_connection(conn).unwrap());
        let opts = SessionOptions::for_connection(conn, &TransferSettings::default());
        let mut s = FtpSession::connect(conn, tls.as_ref(), opts)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        s.noop().await.unwrap();
        s.quit().await;
    }

    drop(stop);
    for pid in pids {
        for _ in 0..50 {
            if !alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!alive(pid), "pid {pid} still running after stop.sh");
    }
}
