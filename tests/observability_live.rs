//! The dashboard (`deploy/grafana/aiops-operator.json`) and the alert rules
//! (`deploy/prometheus/aiops-operator-rules.yaml`) name only metrics the
//! operator exports: every metric name in their PromQL expressions is
//! checked against the `/metrics` of a live operator running against the
//! sandbox. A renamed or removed metric would otherwise leave a panel
//! empty and an alert that can never fire, with nothing to say so.
//!
//! The exposition is OpenMetrics, where a counter's family `x` is queried as
//! `x_total` and a histogram's as `x_bucket`, `x_sum` and `x_count`; those
//! are the names an expression must use. prometheus-client (0.25) leaves
//! out a labelled family until its first sample, HELP and TYPE included, so
//! a fresh operator does not show, say, `remediation_auto_approval_total`.
//! Such a name passes when the operator's own metrics, built by the same
//! constructors the operator calls and given one sample per family, export
//! it ([`declared_series_names`]); the live operator must export everything
//! else, and everything it exports must be among those declared names (so
//! the declared set is the operator's).
mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use support::Sandbox;

const DASHBOARD: &str = "deploy/grafana/aiops-operator.json";
const RULES: &str = "deploy/prometheus/aiops-operator-rules.yaml";

/// PromQL words that are not metric names: operators and modifiers, and
/// the aggregations, which may be followed by `by (...)` rather than `(`
/// (other functions are known by the `(` that follows them).
const KEYWORDS: [&str; 25] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "inf",
    "nan",
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

/// Modifiers whose parenthesised list holds label names, not metrics.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects: identifiers that stand
/// alone or before `{` or `[`, with string literals, label matchers, range
/// and subquery brackets, label lists (`by (...)`), functions and keywords,
/// numbers, durations and Grafana variables (`$__rate_interval`) left out.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut skip_label_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = after_string(&chars, i),
            '{' => i = after_closing(&chars, i, '{', '}'),
            '[' => i = after_closing(&chars, i, '[', ']'),
            '$' => {
                i += 1;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
            }
            '(' if skip_label_list => {
                skip_label_list = false;
                i = after_closing(&chars, i, '(', ')');
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (is_word(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if LABEL_LISTS.contains(&word.as_str()) {
                    skip_label_list = next == Some(&'(');
                } else if next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index after the string literal that starts at `start` (backslash
/// escapes honoured, except in raw backtick strings).
fn after_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The index after the bracket that closes the one at `start`, string
/// literals inside skipped (a matcher value may hold `}`).
fn after_closing(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = after_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The series names an OpenMetrics exposition makes queryable: every
/// sample's name, and for each `# TYPE` line the names its family's
/// samples take, so a family with no sample yet counts too.
fn exported_series_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "gaugehistogram" => &["_bucket", "_gsum", "_gcount"],
                "summary" => &["", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|suffix| format!("{family}{suffix}")));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The series names the operator's metrics export once every family has a
/// sample: the registry built as the operator builds it (the webhook's
/// metrics with the repair loop's registered into them), each family
/// recorded once through the operator's own recording calls.
fn declared_series_names() -> BTreeSet<String> {
    use aiops_operator::admission::metrics::{Metrics, ReviewResult, Stage};
    use aiops_operator::admission::modes::Mode;
    use aiops_operator::remediation::crd::Phase;
    use aiops_operator::remediation::metrics::RemediationMetrics;
    use std::time::Duration;
    let mut remediation = None;
    let admission = Metrics::new_with(|registry| {
        remediation = Some(RemediationMetrics::register(registry));
    });
    let remediation = remediation.expect("the repair loop's metrics are registered");
    admission.review("validate", ReviewResult::Allowed);
    admission.latency("validate", Duration::from_millis(1));
    admission.stage(Stage::Parse, Duration::from_micros(5));
    admission.violation("policy", "rule", Mode::Enforce);
    admission.side_effect("event", "failed");
    admission.cert_reload("reloaded");
    admission.config_update("applied");
    admission.config_refused("policies", false);
    remediation.count_phase(Phase::RolledBack, "OOMKilled");
    remediation.count_apply("rollback-failed");
    remediation.observe_model_failure("error", 1.0);
    remediation.auto_approval("approved", "rule");
    remediation.notification("receiver", "sent");
    remediation.observe_scan(Duration::from_millis(5), 1, 0);
    remediation.observe_cases([], k8s_openapi::jiff::Timestamp::now());
    exported_series_names(&admission.encode().expect("encoding the metrics"))
}

/// Every PromQL expression of the dashboard: each `expr` field anywhere in
/// it (panels, rows' nested panels, any later addition), with its panel
/// title for the message.
fn dashboard_expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(node: &Value, title: &str, out: &mut Vec<(String, String)>) {
        match node {
            Value::Object(map) => {
                let title = map.get("title").and_then(Value::as_str).unwrap_or(title);
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Value::String(expr)) => {
                            out.push((format!("panel {title:?}"), expr.clone()))
                        }
                        _ => walk(value, title, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "dashboard", &mut out);
    out
}

/// Every `expr` of the rules file (alerts and recording rules), with the
/// rule's name for the message.
fn rule_expressions(rules: &serde_yaml::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .unwrap_or("unnamed rule");
            if let Some(expr) = rule["expr"].as_str() {
                out.push((format!("rule {name}"), expr.to_string()));
            }
        }
    }
    out
}

/// The dashboard's and the rules' expressions, read from the repository.
fn shipped_expressions() -> Vec<(String, String)> {
    let root = support::repo_root();
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    };
    let dashboard: Value =
        serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&read(RULES)).unwrap_or_else(|e| panic!("{RULES}: {e}"));
    let mut all = dashboard_expressions(&dashboard);
    all.extend(rule_expressions(&rules));
    all
}

/// `where: name` for each metric an expression names that is not exported;
/// an expression that names no metric at all is reported too (a parse that
/// finds nothing would otherwise pass everything).
fn unknown_metrics(expressions: &[(String, String)], exported: &BTreeSet<String>) -> Vec<String> {
    let mut unknown = Vec::new();
    for (place, expr) in expressions {
        let names = promql_metric_names(expr);
        if names.is_empty() {
            unknown.push(format!("{place}: no metric found in {expr:?}"));
        }
        for name in names.difference(exported) {
            unknown.push(format!("{place}: {name}"));
        }
    }
    unknown
}

#[test]
fn metric_names_are_read_from_selectors_and_not_from_functions_labels_or_variables() {
    let expr = r#"histogram_quantile(0.99, sum by (le, stage) (rate(aiops_admission_stage_seconds_bucket{stage!~"pa}rse", le=~".+"}[$__rate_interval])))
        / on (instance) group_left (pod) max without (job) (up offset 5m) > bool 1e3
        or sum(remediation_total{phase="RolledBack"}) by (reason) unless vector(1) and nan"#;
    let names: Vec<String> = promql_metric_names(expr).into_iter().collect();
    assert_eq!(
        names,
        [
            "aiops_admission_stage_seconds_bucket",
            "remediation_total",
            "up"
        ]
    );
    assert_eq!(
        promql_metric_names("max(remediation_review_wait_oldest_seconds) > 1800")
            .into_iter()
            .collect::<Vec<_>>(),
        ["remediation_review_wait_oldest_seconds"]
    );
}

#[test]
fn a_made_up_metric_name_or_a_counter_named_without_its_total_suffix_is_reported() {
    let exposition = "# HELP remediation Remediations entering each phase.\n\
        # TYPE remediation counter\n\
        remediation_total{phase=\"Verified\",reason=\"OOMKilled\"} 1\n\
        # HELP remediation_detection_seconds Detection.\n\
        # TYPE remediation_detection_seconds histogram\n\
        # EOF\n";
    let exported = exported_series_names(exposition);
    let expressions = [
        (
            "panel ok".to_string(),
            "sum(rate(remediation_total[5m])) + histogram_quantile(0.5, rate(remediation_detection_seconds_bucket[5m]))".to_string(),
        ),
        (
            "rule made-up".to_string(),
            "rate(remediation_made_up_total[5m]) > 0".to_string(),
        ),
        (
            "rule bare counter".to_string(),
            "increase(remediation[5m]) > 0".to_string(),
        ),
        ("rule constant".to_string(), "vector(1)".to_string()),
    ];
    assert_eq!(
        unknown_metrics(&expressions, &exported),
        [
            "rule made-up: remediation_made_up_total",
            "rule bare counter: remediation",
            "rule constant: no metric found in \"vector(1)\"",
        ]
    );
}

#[test]
fn a_family_shows_under_its_type_line_and_the_declared_names_cover_every_family() {
    let exposition = "# HELP x_seconds Latency.\n# TYPE x_seconds histogram\n\
        # HELP up_things Things.\n# TYPE up_things gauge\nup_things 1\n# EOF\n";
    assert_eq!(
        exported_series_names(exposition)
            .into_iter()
            .collect::<Vec<_>>(),
        [
            "up_things",
            "x_seconds_bucket",
            "x_seconds_count",
            "x_seconds_sum"
        ]
    );
    let declared = declared_series_names();
    for name in [
        "aiops_admission_requests_total",
        "aiops_admission_violations_total",
        "aiops_admission_config_refused",
        "remediation_total",
        "remediation_auto_approval_total",
        "remediation_in_phase",
        "remediation_model_proposal_seconds_bucket",
        "remediation_model_breaker_open",
        "aiops_runtime_tasks",
    ] {
        assert!(declared.contains(name), "{name} missing from {declared:?}");
    }
}

#[test]
fn the_shipped_dashboard_and_rules_have_expressions_to_check() {
    let expressions = shipped_expressions();
    let panels = expressions
        .iter()
        .filter(|(place, _)| place.starts_with("panel"))
        .count();
    let rules = expressions.len() - panels;
    assert!(
        panels >= 15 && rules >= 8,
        "{panels} panel and {rules} rule expressions found in {DASHBOARD} and {RULES}"
    );
    assert!(Path::new(&support::repo_root().join(RULES)).exists());
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_name_is_exported_by_a_live_operator() {
    let _sandbox = Sandbox::connect().await;
    support::stop_all_operators();
    let operator = support::start_operator("op-observability", &[]);
    let exposition = operator.metrics().await;
    operator.stop();
    let live = exported_series_names(&exposition);
    let declared = declared_series_names();
    let undeclared: Vec<&String> = live.difference(&declared).collect();
    assert!(
        undeclared.is_empty(),
        "the live operator exports {undeclared:?}, which declared_series_names() does not \
         record: add the family there"
    );
    for always in [
        "remediation_detection_seconds_bucket",
        "remediation_review_wait_oldest_seconds",
        "remediation_model_breaker_open",
        "remediation_apply_total",
        "aiops_runtime_tasks",
    ] {
        assert!(
            live.contains(always),
            "{always} (shown from the start) is missing from the live /metrics:\n{exposition}"
        );
    }
    let expressions = shipped_expressions();
    let not_live: BTreeSet<String> = expressions
        .iter()
        .flat_map(|(_, expr)| promql_metric_names(expr))
        .filter(|name| !live.contains(name))
        .collect();
    eprintln!("named, not shown by a fresh operator until their first sample: {not_live:?}");
    let unknown = unknown_metrics(&expressions, &declared);
    assert!(
        unknown.is_empty(),
        "metrics named by {DASHBOARD} or {RULES} that the operator does not export:\n  {}\n\
         live: {live:?}",
        unknown.join("\n  ")
    );
}
