//! The metric names a PromQL expression reads (for the check that every metric named by
//! an alert rule or a dashboard panel exists: `tests/monitoring.rs`).
//!
//! A small tokenizer, not a parser: it skips string literals, label matchers (`{...}`),
//! ranges and subqueries (`[...]`), numbers and durations, Grafana variables (`$x`,
//! `${x}`), keywords, aggregation operators and function names (an identifier followed by
//! `(`), and the label lists of `by`, `without`, `on`, `ignoring`, `group_left` and
//! `group_right`; every other identifier is a metric name. Limitation: a metric selected
//! only through `{__name__="..."}` is not seen.

use std::collections::BTreeSet;

/// Words that are never metric names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
    // aggregation operators (followed by `by (...)` as often as by `(`)
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords whose parenthesised list holds label names.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every metric name `expr` reads, sorted.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    // Open parentheses: true for a grouping label list.
    let mut parens: Vec<bool> = Vec::new();
    let mut braces = 0usize;
    let mut last_word: Option<String> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && c != '`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                last_word = None;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
                last_word = None;
            }
            '{' => {
                braces += 1;
                i += 1;
            }
            '}' => {
                braces = braces.saturating_sub(1);
                i += 1;
                last_word = None;
            }
            '(' => {
                let grouping = last_word.as_deref().is_some_and(|w| GROUPING.contains(&w));
                parens.push(grouping);
                last_word = None;
                i += 1;
            }
            ')' => {
                parens.pop();
                last_word = None;
                i += 1;
            }
            '$' => {
                // A Grafana variable: `$name`, `${name}`, `$__rate_interval`.
                i += 1;
                if i < chars.len() && chars[i] == '{' {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                }
                last_word = None;
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                // A number or a duration (`0.95`, `1e3`, `0x1f`, `5m`, `1h30m`).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                last_word = None;
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                let in_labels = braces > 0 || parens.last().copied().unwrap_or(false);
                let keyword = KEYWORDS.contains(&word.to_ascii_lowercase().as_str());
                let function = next == Some(&'(');
                if !in_labels && !keyword && !function {
                    names.insert(word.clone());
                }
                last_word = Some(word.to_ascii_lowercase());
            }
            _ => {
                i += 1;
                if !c.is_whitespace() {
                    last_word = None;
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::metric_names;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn selectors_and_matchers() {
        assert_eq!(names("up"), ["up"]);
        assert_eq!(names(r#"up{job="ftp-pooler"} == 0"#), ["up"]);
        assert_eq!(
            names(r#"process_open_fds{stage!=""} / process_max_fds{stage!=""} > 0.8"#),
            ["process_max_fds", "process_open_fds"]
        );
        // Label values that look like names, escaped quotes, regexes.
        assert_eq!(
            names(r#"m{a="rate(x)", b=~"x|y", c="q\"uoted sum"}"#),
            ["m"]
        );
        assert_eq!(names("job:ftp_tasks:rate5m"), ["job:ftp_tasks:rate5m"]);
    }

    #[test]
    fn functions_aggregations_and_grouping_labels_are_not_metrics() {
        assert_eq!(
            names(
                "histogram_quantile(0.95, sum by (namespace, connection_id, le) (rate(ftp_session_wait_seconds_bucket[10m]))) > 10"
            ),
            ["ftp_session_wait_seconds_bucket"]
        );
        assert_eq!(
            names("sum(rate(ftp_tasks_total[5m])) by (status) / ignoring(status) group_left sum(rate(x_total[5m]))"),
            ["ftp_tasks_total", "x_total"]
        );
        assert_eq!(
            names("sum without (pod) (a) and on (namespace) b or count by(x)(c) unless bool d"),
            ["a", "b", "c", "d"]
        );
        assert_eq!(
            names("time() - process_start_time_seconds"),
            ["process_start_time_seconds"]
        );
        assert_eq!(names("topk(3, m)"), ["m"]);
    }

    #[test]
    fn ranges_subqueries_offsets_numbers_and_variables() {
        assert_eq!(
            names("deriv(ftp_kafka_consumer_lag[15m:1m]) > 0 and m offset 1h30m > 1e3"),
            ["ftp_kafka_consumer_lag", "m"]
        );
        assert_eq!(
            names(
                r#"sum(rate(ftp_tasks_total{namespace=~"$namespace", pod=~"${pod}"}[$__rate_interval])) * $scale"#
            ),
            ["ftp_tasks_total"]
        );
        assert_eq!(names(".5 * m + 0x1F"), ["m"]);
    }

    #[test]
    fn multi_line_expressions_with_comments() {
        let expr = "(\n  sum by (namespace) (increase(ftp_kafka_messages_sent_total{topic_type=~\"result|fail\"}[10m]))\n  # nothing sent yet\n  or\n  sum by (namespace) (ftp_kafka_consumer_lag) * 0\n) == 0\n";
        assert_eq!(
            names(expr),
            ["ftp_kafka_consumer_lag", "ftp_kafka_messages_sent_total"]
        );
    }
}
