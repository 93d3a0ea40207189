//! Runs Kyverno CLI test suites (`kyverno-test.yaml`, `cli.kyverno.io`
//! `Test`) against this engine and compares every expected result, the way
//! `kyverno test` maps them: rule names also match their `autogen-` twins,
//! resources are found by kind and name (or `namespace/name`), and a
//! resource the rule does not select counts as `skip`. As in the CLI, every
//! policy's mutate rules run before the validate rules, which see the
//! mutated resource; a result with `patchedResource` fails when the
//! resource as the policy's mutate rules left it differs from that file.
//!
//! Values come from the test's values file (`variables:`) or inline
//! `values:` as the CLI takes them: `globalValues`,
//! `policies[].resources[].values`, `policies[].rules[].values` (that rule
//! only), `namespaceSelector` and `namespaces`. Nothing is read from a
//! cluster: a `configMap`/`apiCall` context entry takes the value the file
//! gives its name (or a dotted name below it) and otherwise stays unset,
//! like `kyverno test` offline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::load::yaml_documents;
use crate::{EvalInput, OfflineCluster, Operation, PolicyError, PolicySet, RuleOutcome, UserInfo};

/// One compared expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultCheck {
    pub test: String,
    pub policy: String,
    pub rule: String,
    pub kind: String,
    pub resource: String,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
    /// Set when the rule was not evaluated: the construct it uses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
}

/// All comparisons of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConformanceReport {
    pub results: Vec<ResultCheck>,
    /// Rules (and whole policies, with an empty rule) the engine left out.
    pub unsupported_rules: Vec<crate::UnsupportedRule>,
}

impl ConformanceReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.ok).count()
    }

    pub fn failed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| !r.ok && r.unsupported.is_none())
            .count()
    }

    /// Expected results of rules that were left out as unsupported.
    pub fn unsupported(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.unsupported.is_some())
            .count()
    }

    /// The closing line, exactly `N passed, M failed, K unsupported`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} unsupported",
            self.passed(),
            self.failed(),
            self.unsupported()
        )
    }
}

/// Why a suite could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("conformance directory {} does not exist", .0.display())]
    MissingDirectory(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no kyverno-test.yaml found under {}", .0.display())]
    NoTests(PathBuf),
}

/// Runs every `kyverno-test.yaml` under `dir`.
pub fn run_dir(dir: &Path) -> Result<ConformanceReport, ConformanceError> {
    if !dir.is_dir() {
        return Err(ConformanceError::MissingDirectory(dir.to_path_buf()));
    }
    let mut test_files = Vec::new();
    find_test_files(dir, &mut test_files)?;
    test_files.sort();
    if test_files.is_empty() {
        return Err(ConformanceError::NoTests(dir.to_path_buf()));
    }
    let mut report = ConformanceReport::default();
    for file in test_files {
        let (results, unsupported) = run_test_file(&file)?;
        report.results.extend(results);
        for rule in unsupported {
            if !report.unsupported_rules.contains(&rule) {
                report.unsupported_rules.push(rule);
            }
        }
    }
    Ok(report)
}

fn find_test_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ConformanceError> {
    let io = |source| ConformanceError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            find_test_files(&path, out)?;
        } else if path.file_name().and_then(|n| n.to_str()) == Some("kyverno-test.yaml") {
            out.push(path);
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, ConformanceError> {
    std::fs::read_to_string(path).map_err(|source| ConformanceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

static NO_RULE_VALUES: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();

/// Values from a `variables` file or inline `values`.
#[derive(Debug, Default)]
struct TestValues {
    global: BTreeMap<String, Value>,
    /// (policy, resource) → values.
    per_resource: BTreeMap<(String, String), BTreeMap<String, Value>>,
    /// policy → rule → values (`policies[].rules[].values`), which the
    /// Kyverno CLI adds to that rule's context only.
    per_rule: BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>>,
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl TestValues {
    fn parse(raw: &Value) -> TestValues {
        let mut values = TestValues::default();
        let to_map = |v: Option<&Value>| -> BTreeMap<String, Value> {
            v.and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        values.global = to_map(raw.get("globalValues"));
        for policy in raw
            .get("policies")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let policy_name = policy
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            for resource in policy
                .get("resources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let resource_name = resource
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                values.per_resource.insert(
                    (policy_name.clone(), resource_name),
                    to_map(resource.get("values")),
                );
            }
            for rule in policy
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let rule_name = rule
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                values
                    .per_rule
                    .entry(policy_name.clone())
                    .or_default()
                    .insert(rule_name, to_map(rule.get("values")));
            }
        }
        for selector in raw
            .get("namespaceSelector")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = selector
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let labels = string_map(selector.get("labels"));
            values.namespace_labels.insert(name, labels);
        }
        // `namespaces`: whole Namespace objects, the source of a CEL
        // policy's `namespaceObject`.
        for namespace in raw
            .get("namespaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = namespace.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            let labels = string_map(namespace.pointer("/metadata/labels"));
            values
                .namespace_labels
                .entry(name.to_string())
                .or_insert(labels);
        }
        values
    }

    /// The values of `policy`'s rules, by rule name.
    fn for_rules(&self, policy: &str) -> &BTreeMap<String, BTreeMap<String, Value>> {
        self.per_rule.get(policy).unwrap_or(&NO_RULE_VALUES)
    }

    fn for_resource(&self, policy: &str, resource: &str) -> BTreeMap<String, Value> {
        let mut merged = self.global.clone();
        if let Some(specific) = self
            .per_resource
            .get(&(policy.to_string(), resource.to_string()))
        {
            merged.extend(specific.clone());
        }
        merged
    }
}

/// A label map (`{key: "value"}`); non-string values count as empty.
fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

type TestFileResults = (Vec<ResultCheck>, Vec<crate::UnsupportedRule>);

fn run_test_file(file: &Path) -> Result<TestFileResults, ConformanceError> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let test_name = file.display().to_string();
    // A test file that does not parse is a failed check, not a skip: a
    // typo must not make a suite pass by testing nothing.
    let broken = |actual: String| {
        Ok((
            vec![ResultCheck {
                test: test_name.clone(),
                policy: String::new(),
                rule: String::new(),
                kind: String::new(),
                resource: String::new(),
                ok: false,
                expected: "a test file".into(),
                actual,
                unsupported: None,
            }],
            Vec::new(),
        ))
    };
    let documents = match yaml_documents(&read(file)?, &test_name) {
        Ok(documents) => documents,
        Err(e) => return broken(format!("error: the test file does not parse: {e}")),
    };
    let Some(test) = documents.into_iter().next() else {
        return broken("error: the test file is empty".into());
    };
    let expectations = test
        .get("results")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    let policies = load_policies(dir, &strings(test.get("policies")));
    let resources = load_resources(dir, &strings(test.get("resources")))?;
    let values = match (
        test.get("variables").and_then(Value::as_str),
        test.get("values"),
    ) {
        (Some(path), _) => {
            let docs = yaml_documents(&read(&dir.join(path))?, path).unwrap_or_default();
            docs.first().map(TestValues::parse).unwrap_or_default()
        }
        (None, Some(inline)) => TestValues::parse(inline),
        (None, None) => TestValues::default(),
    };

    let mut checks = Vec::new();
    for expectation in &expectations {
        let field = |name: &str| {
            expectation
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (policy, rule, kind, expected) = (
            field("policy"),
            field("rule"),
            field("kind"),
            field("result"),
        );
        let namespace = expectation.get("namespace").and_then(Value::as_str);
        let mut names = strings(expectation.get("resources"));
        if let Some(single) = expectation.get("resource").and_then(Value::as_str) {
            names.push(single.to_string());
        }
        let unsupported = policies.as_ref().ok().and_then(|(_, skipped)| {
            skipped
                .iter()
                .find(|s| {
                    s.policy == policy
                        && (s.rule.is_empty() || rule.is_empty() || s.rule == base_rule(&rule))
                })
                .map(|s| s.construct.clone())
        });
        for name in names {
            let actual = match (&policies, &unsupported) {
                (_, Some(construct)) => format!("unsupported: {construct}"),
                (Err(e), None) => format!("error: {e}"),
                (Ok((set, _)), None) => match missing_rule(set, &policy, &rule) {
                    Some(error) => error,
                    None => {
                        let suite = Suite {
                            dir,
                            set,
                            resources: &resources,
                            values: &values,
                        };
                        let wanted = Expected {
                            policy: &policy,
                            rule: &rule,
                            kind: &kind,
                            namespace,
                            result: &expected,
                            patched_resource: expectation
                                .get("patchedResource")
                                .and_then(Value::as_str),
                        };
                        actual_result(&suite, &wanted, &name)
                    }
                },
            };
            checks.push(ResultCheck {
                test: test_name.clone(),
                policy: policy.clone(),
                rule: rule.clone(),
                kind: kind.clone(),
                resource: name,
                ok: actual == expected,
                expected: expected.clone(),
                actual,
                unsupported: unsupported.clone(),
            });
        }
    }
    let skipped = policies.map(|(_, skipped)| skipped).unwrap_or_default();
    Ok((checks, skipped))
}

/// An error when the test names a policy or rule the loaded policies do
/// not have: such a result would otherwise read as `skip` and could pass.
fn missing_rule(set: &PolicySet, policy: &str, rule: &str) -> Option<String> {
    let Some(found) = set
        .policies()
        .find(|p| p.name() == policy || p.display_name() == policy)
    else {
        return Some(format!(
            "error: no policy named {policy:?} in the test's policies"
        ));
    };
    // A result without a rule (a ValidatingPolicy's) covers the whole
    // policy.
    if rule.is_empty() {
        return None;
    }
    let declared = |name: &str| found.rule_names().any(|r| r == name);
    if declared(rule) || declared(base_rule(rule)) {
        None
    } else {
        Some(format!("error: policy {policy:?} has no rule {rule:?}"))
    }
}

/// The rule a generated rule name comes from.
fn base_rule(rule: &str) -> &str {
    rule.strip_prefix("autogen-cronjob-")
        .or_else(|| rule.strip_prefix("autogen-"))
        .unwrap_or(rule)
}

/// The test's policies, with the rules the engine cannot evaluate left out
/// and listed, so the rest of a suite still runs.
fn load_policies(
    dir: &Path,
    paths: &[String],
) -> Result<(PolicySet, Vec<crate::UnsupportedRule>), PolicyError> {
    let mut set = PolicySet::default();
    let mut skipped = Vec::new();
    for path in paths {
        let full = dir.join(path);
        let (more, left_out) = if full.is_dir() {
            PolicySet::load_dir_skipping_unsupported(&full)?
        } else {
            let text = std::fs::read_to_string(&full).map_err(|source| PolicyError::Io {
                path: full.clone(),
                source,
            })?;
            PolicySet::from_yaml_skipping_unsupported(&text, &full.display().to_string())?
        };
        set.merge(more);
        skipped.extend(left_out);
    }
    Ok((set, skipped))
}

fn load_resources(dir: &Path, paths: &[String]) -> Result<Vec<Value>, ConformanceError> {
    let mut resources = Vec::new();
    for path in paths {
        let full = dir.join(path);
        let docs = yaml_documents(&read(&full)?, path).unwrap_or_default();
        resources.extend(docs.into_iter().filter(|d| d.get("kind").is_some()));
    }
    Ok(resources)
}

/// What one test file runs against.
struct Suite<'s> {
    /// The test file's directory: relative paths start here.
    dir: &'s Path,
    set: &'s PolicySet,
    resources: &'s [Value],
    values: &'s TestValues,
}

/// One expected result, as the test file states it.
struct Expected<'t> {
    policy: &'t str,
    rule: &'t str,
    kind: &'t str,
    namespace: Option<&'t str>,
    result: &'t str,
    /// `patchedResource`: a file holding the resource as the policy's
    /// mutate rules must leave it.
    patched_resource: Option<&'t str>,
}

fn actual_result(suite: &Suite, expected: &Expected, name: &str) -> String {
    let matching: Vec<&Value> = suite
        .resources
        .iter()
        .filter(|r| r.get("kind").and_then(Value::as_str) == Some(expected.kind))
        .filter(|r| {
            let resource_name = r
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            // The Kyverno CLI puts a namespaced resource without a
            // namespace in `default`.
            let resource_ns = r
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let qualified = format!("{resource_ns}/{resource_name}");
            (resource_name == name || qualified == name)
                && expected.namespace.is_none_or(|ns| ns == resource_ns)
        })
        .collect();
    if matching.is_empty() {
        return "not found".to_string();
    }
    let rule = expected.rule;
    let mut first_actual = None;
    for resource in matching {
        let evaluation = evaluate(suite.set, suite.values, expected.policy, resource);
        let statuses: Vec<&str> = evaluation
            .outcomes
            .iter()
            .filter(|o| {
                rule.is_empty()
                    || o.rule == rule
                    || o.rule == format!("autogen-{rule}")
                    || o.rule == format!("autogen-cronjob-{rule}")
            })
            .map(|o| o.status.as_str())
            .collect();
        // A rule that does not select the resource produces no outcome: the
        // resource is excluded, which the test format calls `skip`.
        let mut actual = match statuses.iter().find(|s| **s != expected.result) {
            Some(mismatch) => (*mismatch).to_string(),
            None => statuses.first().map_or("skip", |s| s).to_string(),
        };
        // As in the CLI, a patched resource that differs fails the result
        // whatever the rule's status; one that matches leaves the status
        // to decide.
        if let Some(file) = expected.patched_resource {
            match patched_resource_matches(suite.dir, file, &evaluation.patched) {
                Ok(true) => {}
                Ok(false) => actual = "fail".to_string(),
                Err(error) => actual = format!("error: {error}"),
            }
        }
        if actual != expected.result {
            return actual;
        }
        first_actual.get_or_insert(actual);
    }
    first_actual.unwrap_or_else(|| "skip".to_string())
}

/// What the policies did to one resource.
struct Evaluation {
    /// The outcomes of the tested policy's mutate rules, then its
    /// validate rules.
    outcomes: Vec<RuleOutcome>,
    /// The resource after the mutate rules of every policy up to and
    /// including the tested one (the CLI's patched resource).
    patched: Value,
}

/// Runs the suite as the Kyverno CLI does: the mutate rules of every
/// policy first, in order, each policy on the resource the ones before it
/// produced; then the tested policy's validate rules on the fully mutated
/// resource.
fn evaluate(set: &PolicySet, values: &TestValues, policy: &str, resource: &Value) -> Evaluation {
    let resource_name = resource
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let namespace = resource
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let namespace_labels = values.namespace_labels.get(namespace);
    let mut current = resource.clone();
    let mut outcomes = Vec::new();
    let mut patched = None;
    let mut mutated: Vec<String> = Vec::new();
    for candidate in set.policies() {
        let name = candidate.display_name();
        if !candidate.has_mutate_rules() || mutated.contains(&name) {
            continue;
        }
        let variables = values.for_resource(candidate.name(), resource_name);
        let rule_variables = values.for_rules(candidate.name());
        let mutation = set.mutate_policy(
            &name,
            &test_input(&current, &variables, rule_variables, namespace_labels),
        );
        mutated.push(name);
        let tested = candidate.name() == policy || candidate.display_name() == policy;
        current = mutation.resource;
        if tested {
            outcomes.extend(mutation.rules);
            patched.get_or_insert_with(|| current.clone());
        }
    }
    let variables = values.for_resource(policy, resource_name);
    outcomes.extend(set.validate_policy(
        policy,
        &test_input(
            &current,
            &variables,
            values.for_rules(policy),
            namespace_labels,
        ),
    ));
    Evaluation {
        outcomes,
        patched: patched.unwrap_or(current),
    }
}

/// The admission input for one resource under a test's values.
fn test_input<'a>(
    resource: &'a Value,
    variables: &'a BTreeMap<String, Value>,
    rule_variables: &'a BTreeMap<String, BTreeMap<String, Value>>,
    namespace_labels: Option<&'a BTreeMap<String, String>>,
) -> EvalInput<'a> {
    // The Kyverno CLI treats a `request.operation` value as the operation,
    // with the resource as both old and new object for UPDATE/DELETE.
    let operation = variables
        .get("request.operation")
        .and_then(Value::as_str)
        .and_then(Operation::parse)
        .unwrap_or(Operation::Create);
    EvalInput {
        resource,
        old_resource: matches!(operation, Operation::Update | Operation::Delete)
            .then_some(resource),
        operation,
        user_info: UserInfo::default(),
        namespace_labels,
        admission_info: None,
        variables,
        rule_variables,
        // Like `kyverno test` without a cluster: `configMap`/`apiCall`
        // entries get their value from the values file or stay unset.
        cluster_data: Some(&OfflineCluster),
    }
}

/// Compares `actual` with the document of `file` (relative to `dir`) of
/// the same kind and name, structurally and, as the CLI does, with empty
/// maps, empty lists and nulls left out on both sides.
fn patched_resource_matches(dir: &Path, file: &str, actual: &Value) -> Result<bool, String> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read patchedResource {}: {e}", path.display()))?;
    let documents = yaml_documents(&text, file).map_err(|e| e.to_string())?;
    let field = |value: &Value, pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let same = |pointer: &str, doc: &Value| field(doc, pointer) == field(actual, pointer);
    let namespace_fits = |doc: &Value| match (
        field(doc, "/metadata/namespace"),
        field(actual, "/metadata/namespace"),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    let expected = documents
        .iter()
        .find(|doc| same("/kind", doc) && same("/metadata/name", doc) && namespace_fits(doc))
        .ok_or_else(|| {
            format!(
                "patchedResource {file} has no {} named {}",
                field(actual, "/kind").unwrap_or_default(),
                field(actual, "/metadata/name").unwrap_or_default()
            )
        })?;
    Ok(tidy(expected) == tidy(actual))
}

/// `value` without nulls, empty maps and empty lists, at any depth; `None`
/// when nothing is left.
fn tidy(value: &Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(map) => {
            let kept: serde_json::Map<String, Value> = map
                .iter()
                .filter_map(|(key, item)| tidy(item).map(|item| (key.clone(), item)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        Value::Array(items) => {
            let kept: Vec<Value> = items.iter().filter_map(tidy).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        other => Some(other.clone()),
    }
}

/// Renders the per-mismatch lines and the closing summary line.
pub fn render_text(report: &ConformanceReport) -> String {
    let mut out = String::new();
    for rule in &report.unsupported_rules {
        let rule_name = if rule.rule.is_empty() {
            "(whole policy)"
        } else {
            rule.rule.as_str()
        };
        out.push_str(&format!(
            "UNSUPPORTED policy={} rule={rule_name} construct={}\n",
            rule.policy, rule.construct
        ));
    }
    for check in report
        .results
        .iter()
        .filter(|c| !c.ok && c.unsupported.is_none())
    {
        out.push_str(&format!(
            "MISMATCH {}: policy={} rule={} kind={} resource={} expected={} actual={}\n",
            check.test,
            check.policy,
            check.rule,
            check.kind,
            check.resource,
            check.expected,
            check.actual
        ));
    }
    out.push_str(&report.summary());
    out.push('\n');
    out
}

#[cfg(test)]
#[path = "conformance_tests.rs"]
mod tests;
