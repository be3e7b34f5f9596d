//! The files a configuration is read from, as they are on disk now: what the supervisor
//! watches to reload on its own (`supervisor.watch_config`).
//!
//! [`Sources::watched_files`] names config.yaml, connections.ini (the one the command
//! line or the environment names, else config.yaml's `connections_path`) and every
//! file a `${file:PATH}` reference of `kafka.consumer_config` / `kafka.producer_config`
//! names, in config.yaml or in `FTP_POOLER_KAFKA__...` variables.
//!
//! Invariants: it reads config.yaml afresh each time and never fails: a file it cannot
//! read or parse is still listed (its change is what a reload must report), only the
//! references inside it are unknown until it parses; the list is sorted and without
//! duplicates. It does not validate: the reload does.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_yaml::Value;

use crate::references::{parse, Reference};
use crate::{Sources, ENV_PREFIX};

impl Sources {
    /// Every file the configuration is read from now (see the module's header).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut out = BTreeSet::new();
        let yaml: Option<Value> = self.config_file.as_ref().and_then(|f| {
            out.insert(f.clone());
            serde_yaml::from_str(&std::fs::read_to_string(f).ok()?).ok()
        });
        match (&self.connections_file, &yaml) {
            (Some(f), _) => {
                out.insert(f.clone());
            }
            (None, Some(y)) => {
                if let Some(p) = y.get("connections_path").and_then(Value::as_str) {
                    out.insert(PathBuf::from(p));
                }
            }
            (None, None) => {}
        }
        let mut reference = |value: &str| {
            if let Ok(Reference::File(path)) = parse(value) {
                out.insert(PathBuf::from(path));
            }
        };
        if let Some(kafka) = yaml.as_ref().and_then(|y| y.get("kafka")) {
            for map in ["consumer_config", "producer_config"] {
                if let Some(Value::Mapping(m)) = kafka.get(map) {
                    m.values()
                        .filter_map(Value::as_str)
                        .for_each(&mut reference);
                }
            }
        }
        let kafka_env = format!("{ENV_PREFIX}KAFKA__");
        for (name, value) in &self.env {
            if name.to_ascii_uppercase().starts_with(&kafka_env) {
                reference(value);
            }
        }
        out.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_and_the_references_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("config.yaml");
        std::fs::write(
            &yaml,
            "connections_path: /etc/c.ini\nkafka:\n  consumer_config: {sasl.password: '${file:/run/pw}', a: b}\n  producer_config: {ssl.key.password: '${env:X}'}\n",
        )
        .unwrap();
        let sources = Sources {
            config_file: Some(yaml.clone()),
            connections_file: None,
            env: vec![(
                "FTP_POOLER_KAFKA__PRODUCER_CONFIG__SASL_PASSWORD".into(),
                "${file:/run/pw2}".into(),
            )],
        };
        let want: Vec<PathBuf> = vec![
            "/etc/c.ini".into(),
            "/run/pw".into(),
            "/run/pw2".into(),
            yaml.clone(),
        ];
        let mut want = want;
        want.sort();
        assert_eq!(sources.watched_files(), want);

        // The connections file given explicitly wins over connections_path.
        let explicit = Sources {
            connections_file: Some("/x/c.ini".into()),
            ..sources.clone()
        };
        assert!(explicit
            .watched_files()
            .contains(&PathBuf::from("/x/c.ini")));
        assert!(!explicit
            .watched_files()
            .contains(&PathBuf::from("/etc/c.ini")));
    }

    #[test]
    fn a_broken_or_missing_file_is_still_watched() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("config.yaml");
        std::fs::write(&yaml, "kafka: [not: a map\n").unwrap();
        let ini = dir.path().join("missing.ini");
        let sources = Sources {
            config_file: Some(yaml.clone()),
            connections_file: Some(ini.clone()),
            env: vec![],
        };
        let mut want = vec![yaml, ini];
        want.sort();
        assert_eq!(sources.watched_files(), want);
    }
}
