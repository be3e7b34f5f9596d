//! Who may call the mutating REST route (`POST /stages/{name}/restart`; issue 19),
//! against the real service: the API listens on 0.0.0.0 and the tests call it both
//! from loopback and through the machine's own non-loopback address (a peer that is
//! not loopback, as a pod's neighbour would be).
//!
//! - no token configured: loopback callers may restart a stage, others get 403 (saying
//!   how to configure a token); every read-only route answers everyone;
//! - a token file (`api.admin_token_file`): without the token 401, with a wrong one 401,
//!   with the right one 200, from any peer; a rotated file applies at the next request;
//!   the token is in no API body and no log line; `ctl` (the Unix socket) still works;
//! - `FTP_POOLER_ADMIN_TOKEN` wins over the file.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ftp_pooler_channel::CtlResponse;
use ftp_pooler_testbed::http::request_to;
use ftp_pooler_testbed::service::{Service, Topics};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");
const RESTART: &str = "/stages/publish/restart";
/// The Python version's routes and the new read-only ones: open to every peer (`/ready`
/// may be 503 just after a restart: still no 401 or 403).
const READ_ONLY: [&str; 9] = [
    "/health",
    "/live",
    "/stats",
    "/pool/stats",
    "/pool/health",
    "/pool/connections",
    "/stages",
    "/config",
    "/ready",
];

/// This machine's own non-loopback IPv4 address (the one its default route leaves
/// from; a UDP "connection" sends nothing).
fn own_address() -> IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("203.0.113.1:9")
        .expect("these tests need a non-loopback IPv4 address with a route");
    let ip = s.local_addr().unwrap().ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

struct Bed {
    storage: tempfile::TempDir,
    work: tempfile::TempDir,
    topics: Topics,
}

impl Bed {
    async fn new() -> Bed {
        Bed {
            storage: tempfile::tempdir().unwrap(),
            work: tempfile::tempdir().unwrap(),
            topics: Topics::create(1).await,
        }
    }

    /// The service on 0.0.0.0, with only a local connection.
    async fn start(&self, extra_yaml: &str, env: &[(&str, &str)]) -> Service {
        let ini = format!(
            "[local]\ntype = local\nbase_path = {}\n",
            self.storage.path().display()
        );
        let mut env = env.to_vec();
        env.push(("FTP_POOLER_API__HOST", "0.0.0.0"));
        let mut svc = Service::start_with_env(
            Path::new(EXE),
            &self.work.path().join("svc"),
            &self.topics.config_yaml(extra_yaml),
            &ini,
            &env,
        );
        svc.wait_ready(Duration::from_secs(60)).await;
        svc
    }
}

/// A request to the API at `ip`, with `Authorization: Bearer <token>` if given.
async fn call(
    svc: &Service,
    ip: IpAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request_to(SocketAddr::new(ip, svc.api_port), method, path, &headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} at {ip}: {e}"))
}

async fn assert_read_only_routes_open(svc: &Service, ip: IpAddr) {
    for path in READ_ONLY {
        let (code, body) = call(svc, ip, "GET", path, None).await;
        let ok = code == 200 || (path == "/ready" && code == 503);
        assert!(ok, "GET {path} from {ip}: {code} {body}");
    }
}

fn loopback() -> IpAddr {
    [127, 0, 0, 1].into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_loopback_callers_may_restart_a_stage() {
    let bed = Bed::new().await;
    let svc = bed.start("", &[]).await;
    let me = own_address();

    let (code, body) = call(&svc, me, "POST", RESTART, None).await;
    assert_eq!(code, 403, "{body}");
    let detail: Value = serde_json::from_str(&body).unwrap();
    let detail = detail["detail"].as_str().unwrap();
    assert!(
        detail.contains("api.admin_token_file") && detail.contains("FTP_POOLER_ADMIN_TOKEN"),
        "{detail}"
    );
    // A token sent while none is configured opens nothing.
    assert_eq!(call(&svc, me, "POST", RESTART, Some("guess")).await.0, 403);
    assert_read_only_routes_open(&svc, me).await;
    assert_read_only_routes_open(&svc, loopback()).await;

    let (code, body) = call(&svc, loopback(), "POST", RESTART, None).await;
    assert_eq!(code, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "restarted", "{body}");
    assert!(
        svc.log().contains("admin request refused"),
        "the refusal is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_caller_must_send_it() {
    let bed = Bed::new().await;
    let token_file = bed.work.path().join("admin-token");
    let token = "tok-5f1e8a9c2b7d";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let svc = bed
        .start(
            &format!("api:\n  admin_token_file: {}\n", token_file.display()),
            &[],
        )
        .await;
    let me = own_address();

    for ip in [loopback(), me] {
        let (code, body) = call(&svc, ip, "POST", RESTART, None).await;
        assert_eq!(code, 401, "no token from {ip}: {body}");
        assert!(body.contains("Authorization: Bearer"), "{body}");
        let (code, body) = call(&svc, ip, "POST", RESTART, Some("tok-wrong")).await;
        assert_eq!(code, 401, "wrong token from {ip}: {body}");
        let (code, body) = call(&svc, ip, "POST", RESTART, Some(token)).await;
        assert_eq!(code, 200, "right token from {ip}: {body}");
        assert_read_only_routes_open(&svc, ip).await;
    }
    // Unknown stage: 404, once past the token.
    let (code, _) = call(&svc, me, "POST", "/stages/nope/restart", Some(token)).await;
    assert_eq!(code, 404);

    // ctl, over the private Unix socket, needs no token.
    match svc.restart_stage("publish").await {
        CtlResponse::Restarted { stage, .. } => assert_eq!(stage, "publish"),
        other => panic!("ctl restart: {other:?}"),
    }

    // A rotated token file applies at the next request, without a reload.
    std::fs::write(&token_file, "tok-rotated\n").unwrap();
    assert_eq!(call(&svc, me, "POST", RESTART, Some(token)).await.0, 401);
    assert_eq!(
        call(&svc, me, "POST", RESTART, Some("tok-rotated")).await.0,
        200
    );
    // A token file gone: closed to everyone (503), not open.
    std::fs::remove_file(&token_file).unwrap();
    assert_eq!(
        call(&svc, loopback(), "POST", RESTART, Some("tok-rotated"))
            .await
            .0,
        503
    );

    // The token in no body and no log line.
    for path in READ_ONLY {
        let (_, body) = call(&svc, loopback(), "GET", path, None).await;
        assert!(!body.contains("tok-"), "{path} shows a token: {body}");
    }
    assert!(!svc.log().contains(token) && !svc.log().contains("tok-rotated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environments_token_wins_over_the_file() {
    let bed = Bed::new().await;
    let token_file = bed.work.path().join("admin-token");
    std::fs::write(&token_file, "tok-from-file\n").unwrap();
    let svc = bed
        .start(
            &format!("api:\n  admin_token_file: {}\n", token_file.display()),
            &[("FTP_POOLER_ADMIN_TOKEN", "tok-from-env")],
        )
        .await;
    let me = own_address();
    assert_eq!(
        call(&svc, me, "POST", RESTART, Some("tok-from-file"))
            .await
            .0,
        401
    );
    assert_eq!(
        call(&svc, me, "POST", RESTART, Some("tok-from-env"))
            .await
            .0,
        200
    );
    assert!(!svc.log().contains("tok-from-env"));
    // Stages do not get it in their environment.
    for pid in svc.stage_processes().keys() {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&env).contains("tok-from-env"),
            "stage {pid} has the admin token in its environment"
        );
    }
}
