//! The systemd unit and the Kubernetes manifests: `systemd-analyze verify` passes on the
//! unit, and the manifests parse and agree with each other and with the configuration
//! they carry (ports, probes, paths, grace period above the drain deadline, user).

use std::path::{Path, PathBuf};
use std::process::Command;

use ftp_pooler_config::{load_settings, Registry};
use ftp_pooler_testbed::workspace_root;
use serde::Deserialize;
use serde_yaml::Value;

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");

#[test]
fn the_systemd_unit_verifies() {
    let unit =
        std::fs::read_to_string(workspace_root().join("systemd/ftp-pooler.service")).unwrap();
    for needle in [
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
    let stderr = String::from_utf8_lossy(&out.stderr);
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

fn manifests() -> Vec<Value> {
    let dir = workspace_root().join("deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(
                v["apiVersion"].is_string() && v["kind"].is_string(),
                "{}: no apiVersion/kind",
                f.display()
            );
            assert!(
                v["metadata"]["name"].is_string(),
                "{}: no name",
                f.display()
            );
            docs.push(v);
        }
    }
    docs
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_kubernetes_manifests_agree_with_the_configuration() {
    let docs = manifests();
    for k in [
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
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, cm["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let settings =
        load_settings(Some(&cfg), &[]).unwrap_or_else(|e| panic!("ConfigMap config.yaml: {e:?}"));
    let (api, metrics) = (settings.api.port, settings.metrics.port);
    let drain = settings.shutdown.drain_timeout_seconds;

    // The Secret's connections.ini is valid (base_path checked against a stand-in dir).
    let secret = kind(&docs, "Secret");
    let ini = secret["stringData"]["connections.ini"].as_str().unwrap();
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
    // Mounts: config, connections read-only, storage from the claim template, runtime dir.
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
    let mount = |name: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no mount {name}"))
    };
    assert_eq!(
        mount("config")["mountPath"],
        env("FTP_POOLER_CONFIG").as_str()
    );
    assert_eq!(
        format!(
            "{}/connections.ini",
            mount("connections")["mountPath"].as_str().unwrap()
        ),
        env("FTP_POOLER_CONNECTIONS")
    );
    assert_eq!(mount("connections")["readOnly"], true);
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
    for (k, v) in svc["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&labels[k], v);
    }
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
    for doc in [np, kind(&docs, "PodDisruptionBudget")] {
        let sel = doc["spec"]["podSelector"]["matchLabels"]
            .as_mapping()
            .or(doc["spec"]["selector"]["matchLabels"].as_mapping())
            .unwrap();
        for (k, v) in sel {
            assert_eq!(&labels[k], v);
        }
    }

    // The image runs as uid 1000.
    let dockerfile = std::fs::read_to_string(workspace_root().join("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("USER 1000"));
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage");
    assert!(dockerfile.contains(&format!("EXPOSE {api} {metrics}")));
}
