//! Aggregation of the stages' Prometheus metrics into one exposition.
//!
//! Each stage reports its own registry in the text format about once a second. The
//! supervisor keeps the latest text of each stage and, for counters and histograms, the
//! totals of the stage's earlier processes: when a stage process ends, its last counter
//! values move into a base that the next process's values are added to, so counters
//! never go backwards across restarts (at most the last second before a crash is lost).
//! Gauges are the sum of the live processes' values. Series keep the order in which they
//! were first seen (histogram buckets stay in increasing order).

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, PartialEq)]
struct Family {
    help: String,
    kind: String,
    /// Series keys (`name{labels}`) in first-seen order.
    series: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Aggregator {
    families: BTreeMap<String, Family>,
    /// Per reporting process (stage name): series key -> value.
    current: HashMap<String, HashMap<String, f64>>,
    /// Counters and histograms of processes that have ended.
    base: HashMap<String, f64>,
}

/// The family a series belongs to (histogram series carry a suffix).
fn family_of<'a>(families: &BTreeMap<String, Family>, name: &'a str) -> &'a str {
    if families.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(stem) = name.strip_suffix(suffix) {
            if families.contains_key(stem) {
                return stem;
            }
        }
    }
    name
}

impl Aggregator {
    /// Replaces what `source` reported with `text` (the Prometheus text format).
    pub fn update(&mut self, source: &str, text: &str) {
        let mut values = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                self.families
                    .entry(name.to_string())
                    .or_insert_with(|| Family {
                        help: help.to_string(),
                        kind: "untyped".into(),
                        series: Vec::new(),
                    })
                    .help = help.to_string();
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
                self.families
                    .entry(name.to_string())
                    .or_insert_with(|| Family {
                        help: String::new(),
                        kind: String::new(),
                        series: Vec::new(),
                    })
                    .kind = kind.to_string();
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let name = key.split('{').next().unwrap_or(key);
            let family = family_of(&self.families, name).to_string();
            let fam = self.families.entry(family).or_insert_with(|| Family {
                help: String::new(),
                kind: "untyped".into(),
                series: Vec::new(),
            });
            if !fam.series.iter().any(|s| s == key) {
                fam.series.push(key.to_string());
            }
            values.insert(key.to_string(), value);
        }
        self.current.insert(source.to_string(), values);
    }

    /// `source`'s process ended: keep its counters, drop its gauges.
    pub fn retire(&mut self, source: &str) {
        let Some(values) = self.current.remove(source) else {
            return;
        };
        for (key, value) in values {
            let name = key.split('{').next().unwrap_or(&key);
            let kind = self
                .families
                .get(family_of(&self.families, name))
                .map(|f| f.kind.as_str())
                .unwrap_or("untyped");
            if kind == "counter" || kind == "histogram" {
                *self.base.entry(key).or_default() += value;
            }
        }
    }

    /// The value of one series now (base + live processes).
    pub fn value(&self, key: &str) -> Option<f64> {
        let mut found = self.base.get(key).copied();
        for values in self.current.values() {
            if let Some(v) = values.get(key) {
                found = Some(found.unwrap_or(0.0) + v);
            }
        }
        found
    }

    /// The whole exposition, in the text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, fam) in &self.families {
            let lines: Vec<String> = fam
                .series
                .iter()
                .filter_map(|key| self.value(key).map(|v| format!("{key} {}", fmt(v))))
                .collect();
            if lines.is_empty() {
                continue;
            }
            out.push_str(&format!(
                "# HELP {name} {}\n# TYPE {name} {}\n",
                fam.help, fam.kind
            ));
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
        }
        out
    }
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# HELP ftp_tasks_total Tasks\n# TYPE ftp_tasks_total counter\nftp_tasks_total{status=\"success\"} 5\n# HELP ftp_tasks_in_progress In progress\n# TYPE ftp_tasks_in_progress gauge\nftp_tasks_in_progress 2\n# HELP d Duration\n# TYPE d histogram\nd_bucket{le=\"0.1\"} 1\nd_bucket{le=\"+Inf\"} 2\nd_sum 0.3\nd_count 2\n";

    #[test]
    fn counters_survive_a_restart_and_gauges_do_not() {
        let mut agg = Aggregator::default();
        agg.update("publish", A);
        assert_eq!(agg.value("ftp_tasks_total{status=\"success\"}"), Some(5.0));
        agg.retire("publish");
        agg.update(
            "publish",
            "# TYPE ftp_tasks_total counter\nftp_tasks_total{status=\"success\"} 1\n",
        );
        assert_eq!(agg.value("ftp_tasks_total{status=\"success\"}"), Some(6.0));
        assert_eq!(agg.value("ftp_tasks_in_progress"), None);
        assert_eq!(agg.value("d_count"), Some(2.0));
        let text = agg.render();
        assert!(text.contains("# TYPE d histogram\nd_bucket{le=\"0.1\"} 1\nd_bucket{le=\"+Inf\"} 2\nd_sum 0.3\nd_count 2\n"), "{text}");
        assert!(text.contains("ftp_tasks_total{status=\"success\"} 6\n"));
        assert!(!text.contains("ftp_tasks_in_progress"));
    }

    #[test]
    fn gauges_and_counters_of_live_processes_add_up() {
        let mut agg = Aggregator::default();
        agg.update(
            "transfer:a",
            "# TYPE ftp_tasks_in_progress gauge\nftp_tasks_in_progress 2\n",
        );
        agg.update(
            "transfer:b",
            "# TYPE ftp_tasks_in_progress gauge\nftp_tasks_in_progress 3\n",
        );
        assert_eq!(agg.value("ftp_tasks_in_progress"), Some(5.0));
    }
}
