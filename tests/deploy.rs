//! What an operator deploys, checked with the tools an operator would use:
//!
//! - the systemd unit: `systemd-analyze verify` passes, `systemd-analyze security` rates
//!   its exposure 2.0 at most, its Documentation= is what the README installs, and its
//!   SystemCallFilter= allows every system call the real service makes (recorded with
//!   strace through a transfer, a reload and a drain);
//! - the Kubernetes manifests: the kustomize base and the example overlay render with
//!   kubectl's kustomize and validate `--strict` against the oldest and newest Kubernetes
//!   supported; they agree with each other and with the configuration they carry, and the
//!   service reads that configuration from the mounts as the kubelet lays them out;
//! - the container image's Dockerfile: hadolint passes, bases pinned by digest, OCI
//!   labels, the runtime directory, .dockerignore, and its HEALTHCHECK command answers
//!   while the real service runs and fails when it does not.
//!
//! kubectl, kubernetes-validate and hadolint come from PyPI, strace and systemd-analyze
//! from Debian (scripts/testbed/install.sh); a missing tool fails its test.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ftp_pooler_config::{load_settings, Registry};
use ftp_pooler_testbed::service::{children_of, produce, Service, Topics, Watcher};
use ftp_pooler_testbed::{testbed_dir, workspace_root, FtpKind, FtpServer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_yaml::Value;

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");

/// The oldest and the newest Kubernetes the manifests are validated against (and
/// supported on: deploy/README.md). 1.27 is the first with the PodDisruptionBudget's
/// unhealthyPodEvictionPolicy on by default.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.27.0", "1.37.0"];

/// A deploy tool from the test bed's deploy venv (scripts/testbed/install-deploy-tools.sh).
fn tool(name: &str) -> PathBuf {
    let path = testbed_dir().join("deploy-venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: scripts/testbed/install.sh installs it",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// --- systemd ---------------------------------------------------------------------------

fn unit() -> String {
    read("systemd/ftp-pooler.service")
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = unit();
    for needle in [
        "Documentation=",
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "KillMode=mixed",
        "User=ftp-pooler",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "EnvironmentFile=",
        "ReadWritePaths=",
        "RuntimeDirectory=ftp-pooler",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged @resources",
        "SystemCallErrorNumber=EPERM",
    ] {
        assert!(unit.contains(needle), "the unit lacks {needle}");
    }
    // TimeoutStopSec above the default drain deadline (30 s) plus the stages' stop.
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stop > 30 + 20, "TimeoutStopSec={stop}");
    // verify checks that ExecStart is executable: point it at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ftp-pooler.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/ftp-pooler", EXE)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (package systemd) is installed by scripts/testbed/install.sh");
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ftp-pooler.service"))
        .collect();
    assert!(complaints.is_empty(), "{complaints:?}");
}

#[test]
fn the_systemd_units_exposure_is_at_most_2_0() {
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(workspace_root().join("systemd/ftp-pooler.service")));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze security failed:\n{stdout}{}",
        text(&out.stderr)
    );
    // "→ Overall exposure level for ftp-pooler.service: 1.2 OK 🙂"
    let level: f64 = stdout
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for ftp-pooler.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{stdout}"))
        .parse()
        .unwrap();
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{stdout}");
}

#[test]
fn the_systemd_units_documentation_is_what_the_readme_installs() {
    let unit = unit();
    let docs: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Documentation="))
        .flat_map(|l| l.split_whitespace())
        .collect();
    assert!(!docs.is_empty());
    let readme = read("systemd/README.md");
    for doc in docs {
        let path = doc
            .strip_prefix("file:")
            .unwrap_or_else(|| panic!("{doc}: not a file: URI"));
        // `sudo install -D -m 0644 <repo file> <path>` in the README's install steps.
        let source = readme
            .lines()
            .filter(|l| l.contains("install ") && l.trim_end().ends_with(&format!(" {path}")))
            .find_map(|l| l.split_whitespace().rev().nth(1))
            .unwrap_or_else(|| panic!("systemd/README.md does not install {path}"));
        assert!(
            workspace_root().join(source).is_file(),
            "{path} is installed from {source}, which does not exist"
        );
    }
}

/// The system calls a SystemCallFilter= set stands for, as systemd expands it.
fn syscall_set(name: &str, memo: &mut HashMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    if !name.starts_with('@') {
        return BTreeSet::from([name.to_string()]);
    }
    if let Some(s) = memo.get(name) {
        return s.clone();
    }
    let out = run(Command::new("systemd-analyze").args(["syscall-filter", name]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut set = BTreeSet::new();
    for line in text(&out.stdout).lines().skip(1) {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        set.extend(syscall_set(item, memo));
    }
    memo.insert(name.to_string(), set.clone());
    set
}

/// The service under strace, through a transfer, a reload and a drain (SIGTERM): every
/// system call it made, in any of its processes, is one the unit's SystemCallFilter=
/// allows (otherwise it would fail with EPERM under systemd).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_syscall_filter_allows_every_call_the_service_makes() {
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    server.put("in/f.bin", &vec![7u8; 300_000]);
    let storage = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let topics = Topics::create(1).await;
    let watcher = Watcher::start(&topics).await;

    // `ftp-pooler run` under `strace -f`: the supervisor and every stage it spawns.
    let trace = work.path().join("strace.log");
    let wrapper = work.path().join("ftp-pooler-traced");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec strace -f -qq -o '{}' '{EXE}' \"$@\"\n",
            trace.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let yaml = topics.config_yaml("shutdown:\n  drain_timeout_seconds: 10\n");
    let ini = format!(
        "{}\n[local]\ntype = local\nbase_path = {}\n",
        server.ini_section("a"),
        storage.path().display()
    );
    let mut svc = Service::start(&wrapper, &work.path().join("svc"), &yaml, &ini);
    svc.wait_ready(Duration::from_secs(90)).await;
    let task = serde_json::json!({"task_id": "t1", "src_id": "a", "src_path": "in/f.bin",
        "dst_id": "local", "dst_path": "out/f.bin"});
    produce(
        &topics.tasks,
        &[(Some("t1".into()), serde_json::to_vec(&task).unwrap())],
    )
    .await;
    let seen = watcher
        .wait_for(
            Duration::from_secs(90),
            "t1",
            |s| s.by_task.contains_key("t1"),
            || svc.log(),
        )
        .await;
    assert_eq!(seen.by_task["t1"][0].value["status"], "success");
    assert!(storage.path().join("out/f.bin").is_file());
    // A reload that adds a connection (a new worker process).
    let more = tempfile::tempdir().unwrap();
    std::fs::write(
        svc.dir.join("connections.ini"),
        format!(
            "{ini}\n[more]\ntype = local\nbase_path = {}\n",
            more.path().display()
        ),
    )
    .unwrap();
    let reply = svc.reload().await;
    assert!(
        matches!(reply, ftp_pooler_channel::CtlResponse::Reloaded { .. }),
        "{reply:?}"
    );
    svc.wait_ready(Duration::from_secs(30)).await;
    // The drain: SIGTERM to the supervisor (strace's child), as systemd sends it.
    let supervisor = *children_of(svc.pid())
        .keys()
        .next()
        .expect("the supervisor under strace");
    kill(Pid::from_raw(supervisor as i32), Signal::SIGTERM).unwrap();
    let status = svc.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}:\n{}",
        svc.log()
    );

    // "1234  openat(AT_FDCWD, ...) = 3", "1234  <... read resumed>...", "1234  +++ exited".
    let log = std::fs::read_to_string(&trace).unwrap();
    let used: BTreeSet<String> = log
        .lines()
        .filter_map(|l| {
            l.split_once(char::is_whitespace)
                .map(|(_, r)| r.trim_start())
        })
        .filter_map(|r| r.split_once('(').map(|(name, _)| name))
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_string)
        .collect();
    assert!(used.contains("clone3") || used.contains("clone") || used.contains("vfork"));
    assert!(used.contains("execve"), "{used:?}");

    let mut memo = HashMap::new();
    let mut allowed = BTreeSet::new();
    for line in unit().lines() {
        let Some(filter) = line.strip_prefix("SystemCallFilter=") else {
            continue;
        };
        match filter.strip_prefix('~') {
            Some(deny) => {
                for name in deny.split_whitespace() {
                    for call in syscall_set(name, &mut memo) {
                        allowed.remove(&call);
                    }
                }
            }
            None => {
                for name in filter.split_whitespace() {
                    allowed.extend(syscall_set(name, &mut memo));
                }
            }
        }
    }
    let denied: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        denied.is_empty(),
        "the unit's SystemCallFilter= denies {denied:?}, which the service calls ({} calls seen)",
        used.len()
    );
}

// --- Kubernetes --------------------------------------------------------------------------

/// `kubectl kustomize deploy/k8s/<dir>`.
fn render(dir: &str) -> String {
    let out = run(Command::new(tool("kubectl"))
        .arg("kustomize")
        .arg(workspace_root().join("deploy/k8s").join(dir)));
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_base_and_the_overlay_validate_strictly_for_the_oldest_and_newest_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    for which in ["base", "overlays/example"] {
        let yaml = render(which);
        let count = documents(&yaml).len();
        assert!(count >= 6, "{which}: {count} objects");
        let file = dir.path().join(format!("{}.yaml", which.replace('/', "-")));
        std::fs::write(&file, &yaml).unwrap();
        for version in KUBERNETES_VERSIONS {
            let out = run(Command::new(tool("kubernetes-validate"))
                .args(["--strict", "--kubernetes-version", version])
                .arg(&file));
            let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert!(
                out.status.success(),
                "{which} against Kubernetes {version}:\n{report}"
            );
            assert_eq!(
                report.matches(" passed for resource ").count(),
                count,
                "{which} against Kubernetes {version}:\n{report}"
            );
        }
    }
}

#[test]
fn the_base_holds_no_secret_and_the_overlay_pins_namespace_and_image() {
    // Re-applying the base never overwrites real credentials: it has none.
    let base = documents(&render("base"));
    assert!(base.iter().all(|d| d["kind"] != "Secret"));
    for entry in std::fs::read_dir(workspace_root().join("deploy/k8s/base")).unwrap() {
        let path = entry.unwrap().path();
        let content = std::fs::read_to_string(&path).unwrap();
        assert!(
            !content.contains("kind: Secret") && !content.contains("secretGenerator"),
            "{}",
            path.display()
        );
    }
    let overlay = documents(&render("overlays/example"));
    let ns = kind(&overlay, "Namespace")["metadata"]["name"].clone();
    for doc in overlay.iter().filter(|d| d["kind"] != "Namespace") {
        assert_eq!(doc["metadata"]["namespace"], ns, "{doc:?}");
    }
    // The image by digest (name@sha256:<64 hex>), never by tag alone.
    let image = kind(&overlay, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    let digest = image
        .split_once("@sha256:")
        .unwrap_or_else(|| panic!("{image}: not pinned by digest"))
        .1;
    assert!(
        digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
        "{image}"
    );
    // Fixed names, so that edits reach the pods in place (no restart on every edit).
    for (k, name) in [
        ("ConfigMap", "ftp-pooler-config"),
        ("Secret", "ftp-pooler-connections"),
    ] {
        assert_eq!(kind(&overlay, k)["metadata"]["name"], name);
    }
}

fn secret_file(secret: &Value, key: &str) -> String {
    if let Some(s) = secret["stringData"][key].as_str() {
        return s.to_string();
    }
    let b64: String = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("Secret has no {key}"))
        .split_whitespace()
        .collect();
    text(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
}

#[test]
fn the_kubernetes_manifests_agree_with_the_configuration() {
    // The base's own config.yaml is valid too (an overlay may keep it).
    let base = documents(&render("base"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        kind(&base, "ConfigMap")["data"]["config.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    load_settings(Some(&cfg), &[]).unwrap_or_else(|e| panic!("base config.yaml: {e:?}"));

    let docs = documents(&render("overlays/example"));
    for k in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Service",
        "StatefulSet",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ] {
        kind(&docs, k);
    }
    // The settings in the ConfigMap are valid and give the ports.
    let cm = kind(&docs, "ConfigMap");
    std::fs::write(&cfg, cm["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let settings =
        load_settings(Some(&cfg), &[]).unwrap_or_else(|e| panic!("ConfigMap config.yaml: {e:?}"));
    let (api, metrics) = (settings.api.port, settings.metrics.port);
    let drain = settings.shutdown.drain_timeout_seconds;

    // The Secret's connections.ini is valid (base_path checked against a stand-in dir).
    let secret = kind(&docs, "Secret");
    let ini = secret_file(secret, "connections.ini");
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::parse(
        Path::new("connections.ini"),
        &ini.replace("/data/storage", &storage.path().display().to_string()),
    )
    .unwrap_or_else(|e| panic!("Secret connections.ini: {e:?}"));
    assert!(registry.iter().any(|c| c.is_local()));
    assert!(ini.contains("base_path = /data/storage"));

    let sts = kind(&docs, "StatefulSet");
    let pod = &sts["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let port_of = |name: &str| {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port_of("http"), api);
    assert_eq!(port_of("metrics"), metrics);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/live");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http");
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > drain + 20, "grace {grace} s, drain {drain} s");
    assert!(c["lifecycle"]["preStop"].is_mapping());
    let ann = &sts["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], metrics.to_string().as_str());
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    assert_eq!(pod["securityContext"]["runAsUser"], 1000);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    // No API token: the pod's and its ServiceAccount's.
    assert_eq!(pod["automountServiceAccountToken"], false);
    let sa = kind(&docs, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(sa["automountServiceAccountToken"], false);
    assert_eq!(pod["enableServiceLinks"], false);

    // Mounts: config and connections as read-only directories (no subPath: a subPath
    // mount never sees an edit), storage from the claim template, the runtime dir.
    let env = |name: &str| {
        c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    assert!(mounts.iter().all(|m| m["subPath"].is_null()), "{mounts:?}");
    let mount = |name: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no mount {name}"))
    };
    for (volume, var, file) in [
        ("config", "FTP_POOLER_CONFIG", "config.yaml"),
        ("connections", "FTP_POOLER_CONNECTIONS", "connections.ini"),
    ] {
        assert_eq!(
            format!("{}/{file}", mount(volume)["mountPath"].as_str().unwrap()),
            env(var)
        );
        assert_eq!(mount(volume)["readOnly"], true);
    }
    assert_eq!(mount("storage")["mountPath"], "/data/storage");
    assert_eq!(
        mount("run")["mountPath"],
        env("FTP_POOLER_RUNTIME_DIR").as_str()
    );
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "storage"
    );
    let vols = pod["volumes"].as_sequence().unwrap();
    let vol = |name: &str| vols.iter().find(|v| v["name"] == name).unwrap();
    assert_eq!(vol("config")["configMap"]["name"], cm["metadata"]["name"]);
    assert_eq!(
        vol("connections")["secret"]["secretName"],
        secret["metadata"]["name"]
    );

    // Service: headless, same ports, selects the pods.
    let svc = kind(&docs, "Service");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(sts["spec"]["serviceName"], svc["metadata"]["name"]);
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    let selects_the_pods = |sel: &Value| {
        let sel = sel.as_mapping().unwrap();
        assert!(!sel.is_empty());
        for (k, v) in sel {
            assert_eq!(&labels[k], v);
        }
    };
    selects_the_pods(&svc["spec"]["selector"]);
    let svc_ports: Vec<u64> = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(svc_ports, [api, metrics]);
    // NetworkPolicy lets the API and metrics in; the PDB and policy select the pods.
    let np = kind(&docs, "NetworkPolicy");
    let ingress: Vec<u64> = np["spec"]["ingress"][0]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ingress, [api, metrics]);
    selects_the_pods(&np["spec"]["podSelector"]["matchLabels"]);
    // The PDB: one pod away at a time, and an unready pod (a broker outage makes them all
    // unready) never blocks a node drain.
    let pdb = kind(&docs, "PodDisruptionBudget");
    selects_the_pods(&pdb["spec"]["selector"]["matchLabels"]);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
    // The pods spread over nodes.
    let anti = &pod["affinity"]["podAntiAffinity"];
    let terms: Vec<&Value> = anti["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|t| &t["podAffinityTerm"])
        .chain(
            anti["requiredDuringSchedulingIgnoredDuringExecution"]
                .as_sequence()
                .into_iter()
                .flatten(),
        )
        .collect();
    let term = terms
        .iter()
        .find(|t| t["topologyKey"] == "kubernetes.io/hostname")
        .expect("pod anti-affinity per node");
    selects_the_pods(&term["labelSelector"]["matchLabels"]);
}

/// Lays out `files` as the kubelet does for a ConfigMap or Secret volume at `dir`: the
/// data in a timestamped folder, `..data` a symbolic link to it (swapped in one rename
/// on an update), and each file a link through `..data`.
fn kubelet_volume(dir: &Path, generation: u32, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    let data = format!("..2025_01_01_00_00_0{generation}.000000000");
    std::fs::create_dir(dir.join(&data)).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(&data).join(name), content).unwrap();
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), link).unwrap();
        }
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&data, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// What the pod's service reads: the ConfigMap and the Secret mounted where the
/// StatefulSet mounts them (re-rooted under a temporary folder), found through the
/// environment the StatefulSet sets, pass `check-config`; after an update of the
/// mounted Secret (as the kubelet makes it) the service reads the new file.
#[test]
fn the_service_reads_its_configuration_from_the_mounts() {
    let docs = documents(&render("overlays/example"));
    let c = &kind(&docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0];
    let root = tempfile::tempdir().unwrap();
    let rooted = |p: &str| root.path().join(p.trim_start_matches('/'));
    let mount = |name: &str| {
        rooted(
            c["volumeMounts"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|m| m["name"] == name)
                .unwrap()["mountPath"]
                .as_str()
                .unwrap(),
        )
    };
    let env: Vec<(String, PathBuf)> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "FTP_POOLER_CONFIG" || e["name"] == "FTP_POOLER_CONNECTIONS")
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                rooted(e["value"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(env.len(), 2);
    let storage = mount("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let config = kind(&docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let ini = secret_file(kind(&docs, "Secret"), "connections.ini")
        .replace("/data/storage", &storage.display().to_string());
    kubelet_volume(&mount("config"), 1, &[("config.yaml", &config)]);
    kubelet_volume(&mount("connections"), 1, &[("connections.ini", &ini)]);
    let check = || {
        let out = run(Command::new(EXE)
            .arg("check-config")
            .env_remove("FTP_POOLER_CONFIG")
            .env_remove("FTP_POOLER_CONNECTIONS")
            .envs(env.iter().map(|(k, v)| (k, v))));
        let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "check-config:\n{report}");
        report
    };
    let first = check();
    assert!(first.contains("remote-a"), "{first}");
    // An edit of the Secret, as the kubelet applies it: the mounted file changes.
    let edited = format!("{ini}\n[remote-b]\ntype = ftp\nhost = ftp-b.example.internal\n");
    kubelet_volume(&mount("connections"), 2, &[("connections.ini", &edited)]);
    let second = check();
    assert!(second.contains("remote-b"), "{second}");
}

// --- The container image -------------------------------------------------------------------

fn dockerfile() -> String {
    read("deploy/Dockerfile")
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let out = run(Command::new(tool("hadolint"))
        .arg("--no-color")
        .arg(workspace_root().join("deploy/Dockerfile")));
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The value of `KEY=value` or `KEY="value"` in a Dockerfile line.
fn dockerfile_value<'a>(dockerfile: &'a str, key: &str) -> &'a str {
    let at = dockerfile
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key}= in the Dockerfile"));
    let rest = &dockerfile[at + key.len() + 1..];
    match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"').unwrap()],
        None => rest.split_whitespace().next().unwrap(),
    }
}

#[test]
fn the_image_pins_its_bases_carries_labels_and_runs_as_uid_1000() {
    let dockerfile = dockerfile();
    // Every base image by digest.
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert!(froms.len() >= 2, "multi-stage");
    for from in &froms {
        let digest = from
            .split_once("@sha256:")
            .unwrap_or_else(|| panic!("FROM {from}: not pinned by digest"))
            .1;
        assert!(
            digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
            "{from}"
        );
    }
    // OCI labels, agreeing with Cargo.toml and with the runtime base.
    let cargo = read("Cargo.toml");
    let workspace_value = |key: &str| {
        cargo
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .unwrap()
            .trim_end_matches('"')
            .to_string()
    };
    assert_eq!(
        dockerfile_value(&dockerfile, "ARG VERSION"),
        workspace_value("version")
    );
    assert_eq!(
        dockerfile_value(&dockerfile, "org.opencontainers.image.licenses"),
        workspace_value("license")
    );
    for label in [
        "title",
        "description",
        "version",
        "revision",
        "created",
        "base.name",
    ] {
        dockerfile_value(&dockerfile, &format!("org.opencontainers.image.{label}"));
    }
    let runtime = froms.last().unwrap();
    assert_eq!(
        format!(
            "{}@{}",
            dockerfile_value(&dockerfile, "org.opencontainers.image.base.name")
                .trim_start_matches("docker.io/library/"),
            dockerfile_value(&dockerfile, "org.opencontainers.image.base.digest")
        ),
        *runtime
    );
    // The build's Rust is at least the workspace's rust-version.
    let rust = froms[0]
        .strip_prefix("rust:")
        .expect("the build stage is rust:<version>")
        .split('-')
        .next()
        .unwrap();
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        parse(rust) >= parse(&workspace_value("rust-version")),
        "rust {rust}"
    );

    // uid 1000, its runtime directory, the ports of the configuration.
    assert!(dockerfile.contains("USER 1000"));
    let runtime_dir = dockerfile_value(&dockerfile, "ENV FTP_POOLER_RUNTIME_DIR");
    assert!(
        dockerfile.contains(&format!("install -d -m 0700 -o 1000 -g 1000 {runtime_dir}")),
        "{runtime_dir} is not made for uid 1000"
    );
    let settings = load_settings(None, &[]).unwrap();
    assert!(dockerfile.contains(&format!(
        "EXPOSE {} {}",
        settings.api.port, settings.metrics.port
    )));
    assert!(dockerfile.contains("HEALTHCHECK "));

    // The build context leaves out every build output: each .gitignore entry.
    let ignored: BTreeSet<&str> = include_str!("../.dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for entry in include_str!("../.gitignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(
            ignored.contains(entry.trim_start_matches('/')),
            ".dockerignore lacks {entry}"
        );
    }
}

/// The HEALTHCHECK's command, run as Docker runs it (with the image's environment): it
/// fails while no service runs, succeeds while the service runs, fails after it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_healthcheck_answers_while_the_service_runs() {
    let dockerfile = dockerfile();
    let json = dockerfile
        .split("HEALTHCHECK ")
        .nth(1)
        .and_then(|h| h.split_once("CMD "))
        .map(|(_, cmd)| cmd.lines().next().unwrap())
        .expect("HEALTHCHECK ... CMD [...]");
    let argv: Vec<String> = serde_json::from_str(json).unwrap();
    assert_eq!(argv[0], "/usr/local/bin/ftp-pooler", "{argv:?}");
    let topics = Topics::create(1).await;
    let work = tempfile::tempdir().unwrap();
    let ini = format!(
        "[local]\ntype = local\nbase_path = {}\n",
        work.path().display()
    );
    let dir = work.path().join("svc");
    let health = || {
        Command::new(EXE)
            .args(&argv[1..])
            .env("FTP_POOLER_RUNTIME_DIR", dir.join("rt"))
            .output()
            .unwrap()
    };
    // No service yet: unhealthy.
    assert!(!health().status.success(), "healthy without a service");
    let mut svc = Service::start(Path::new(EXE), &dir, &topics.config_yaml(""), &ini);
    assert_eq!(svc.runtime_dir(), dir.join("rt"));
    let start = Instant::now();
    loop {
        let out = health();
        if out.status.success() {
            assert!(text(&out.stdout).contains("supervisor pid"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never healthy:\n{}\n{}",
            text(&out.stderr),
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    svc.signal(Signal::SIGTERM);
    assert!(svc
        .wait_exit(Duration::from_secs(60))
        .await
        .is_some_and(|s| s.success()));
    let after = health();
    assert!(!after.status.success(), "healthy after the service stopped");
}
