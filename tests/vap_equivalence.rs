//! The generated ValidatingAdmissionPolicies decide as the engine does.
//!
//! For every CEL rule of `../shared/conformance/kyverno-cel` that has an
//! exact translation, the admission policy the operator would generate is
//! created in the sandbox's real API server with a `Deny` binding, and
//! every resource of the rule's suite is created with `dryRun=All`: the
//! API server's allow/deny must equal the engine's (fail or error = deny).
//! The same for every translated pattern rule of the pattern suites
//! (`../shared/conformance/kyverno`) and of the project's `policies/`
//! (judged on the resources of the suite of the same name).
//!
//! Each admission policy is scoped by an object label unique to it and to
//! this run (`objectSelector`), and each resource carries the label of the
//! rule under test only, so one rule is judged at a time and nothing else
//! in the shared sandbox is touched. Both sides see the labelled resource,
//! created in a namespace of this test. A resource the API server refuses
//! on its own (invalid object, unknown kind) is counted as not comparable.
//!
//! Needs the sandbox (`make cluster-up`); fails loudly without it.
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aiops_operator::policy::{EvalInput, PolicySet, RuleStatus};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::discovery::{Scope, pinned_kind};
use serde_json::{Value, json};
use support::{Sandbox, wait_until};

/// What one test's objects are labelled and named by, so the two tests of
/// this file can run side by side without removing each other's policies.
#[derive(Clone, Copy)]
struct Run {
    label: &'static str,
    prefix: &'static str,
}

const CEL_RUN: Run = Run {
    label: "aiops-operator.dev/vap-equivalence",
    prefix: "aiops-vap-eq",
};
const PATTERN_RUN: Run = Run {
    label: "aiops-operator.dev/vap-pattern-equivalence",
    prefix: "aiops-vap-pat",
};

fn suites_dir(name: &str) -> PathBuf {
    support::repo_root()
        .join("../shared/conformance")
        .join(name)
}

fn test_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            test_files(&path, out);
        } else if path.file_name().and_then(|n| n.to_str()) == Some("kyverno-test.yaml") {
            out.push(path);
        }
    }
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|document| serde::Deserialize::deserialize(document).ok())
        .filter(|value: &Value| !value.is_null())
        .collect()
}

/// One suite: its policies and resources.
struct Suite {
    policies: PolicySet,
    resources: Vec<Value>,
}

fn suite(test_file: &Path) -> Suite {
    suite_with(None, test_file)
}

/// The suite of `test_file`, judging `policies` instead of its own when
/// given.
fn suite_with(policies: Option<PolicySet>, test_file: &Path) -> Suite {
    let dir = test_file.parent().expect("a test file's folder");
    let test = yaml_documents(test_file).remove(0);
    let paths = |key: &str| -> Vec<PathBuf> {
        test[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|p| dir.join(p))
            .collect()
    };
    let policies = policies.unwrap_or_else(|| {
        let mut own = PolicySet::default();
        for path in paths("policies") {
            let text = std::fs::read_to_string(&path).expect("the policy file");
            own.merge(
                PolicySet::from_yaml(&text, &path.display().to_string())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            );
        }
        own
    });
    let resources = paths("resources")
        .iter()
        .flat_map(|path| yaml_documents(path))
        .filter(|r| r.get("kind").is_some())
        .collect();
    Suite {
        policies,
        resources,
    }
}

/// The admission policy for one rule, scoped to objects labelled `value`.
fn scoped_policy(run: Run, name: &str, spec: &Value, value: &str) -> Value {
    let mut spec = spec.clone();
    let constraints = &mut spec["matchConstraints"];
    let mut selector = constraints
        .get("objectSelector")
        .cloned()
        .unwrap_or_else(|| json!({}));
    selector["matchLabels"][run.label] = json!(value);
    constraints["objectSelector"] = selector;
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {run.label: "true"}},
        "spec": spec,
    })
}

fn binding(run: Run, name: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": {run.label: "true"}},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    })
}

/// Removes every object of this test, also when it fails half way.
/// Synchronous (kubectl): a Drop cannot await, and the test's client
/// belongs to the test's runtime.
struct Cleanup<'a>(&'a Sandbox, Run);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for kind in [
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ] {
            self.0
                .kubectl(&["delete", kind, "-l", self.1.label, "--ignore-not-found"]);
        }
    }
}

async fn delete_all(client: kube::Client, run: Run) {
    let selector = ListParams::default().labels(run.label);
    let _ = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .delete_collection(&DeleteParams::default(), &selector)
        .await;
    let _ = Api::<ValidatingAdmissionPolicy>::all(client)
        .delete_collection(&DeleteParams::default(), &selector)
        .await;
}

/// What the API server made of one dry-run create.
enum Answer {
    /// Admitted; the object as the API server saw it.
    Allowed(Value),
    Denied(String),
    /// Refused before or outside admission policies.
    NotComparable(String),
}

async fn dry_run_create(client: &kube::Client, namespace: &str, resource: &Value) -> Answer {
    let api_version = resource["apiVersion"].as_str().unwrap_or("");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, resource["kind"].as_str().unwrap_or(""));
    let (api_resource, capabilities): (ApiResource, _) = match pinned_kind(client, &gvk).await {
        Ok(found) => found,
        Err(e) => return Answer::NotComparable(format!("kind not served: {e}")),
    };
    let object: DynamicObject = match serde_json::from_value(resource.clone()) {
        Ok(object) => object,
        Err(e) => return Answer::NotComparable(format!("not an object: {e}")),
    };
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &api_resource),
        Scope::Cluster => Api::all_with(client.clone(), &api_resource),
    };
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&params, &object).await {
        Ok(created) => Answer::Allowed(serde_json::to_value(created).unwrap_or_default()),
        Err(kube::Error::Api(status)) if status.message.contains("ValidatingAdmissionPolicy") => {
            Answer::Denied(status.message)
        }
        Err(error) => Answer::NotComparable(error.to_string()),
    }
}

#[tokio::test]
async fn generated_admission_policies_decide_as_the_engine() {
    let mut files = Vec::new();
    test_files(&suites_dir("kyverno-cel"), &mut files);
    files.sort();
    assert_eq!(files.len(), 63, "the kyverno-cel suites are required");
    let suites = files
        .iter()
        .map(|file| (suite(file), file.clone()))
        .collect();
    let tally = judge(CEL_RUN, suites).await;
    assert!(tally.rules > 100, "only {} rules translated", tally.rules);
    assert!(tally.compared > 1000, "only {} comparisons", tally.compared);
    assert!(
        tally.denied_by_both > 300,
        "only {} denials compared",
        tally.denied_by_both
    );
}

#[tokio::test]
async fn translated_pattern_rules_decide_as_the_engine() {
    let mut files = Vec::new();
    test_files(&suites_dir("kyverno"), &mut files);
    files.sort();
    assert!(files.len() > 30, "the kyverno suites are required");
    let mut suites: Vec<(Suite, PathBuf)> = files
        .iter()
        .map(|file| (suite(file), file.clone()))
        .collect();
    // Each project policy, on the resources of the suite of its name.
    let mut project = 0;
    let policies_dir = support::repo_root().join("policies");
    for entry in std::fs::read_dir(&policies_dir).expect("policies/") {
        let path = entry.expect("a directory entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let Some(file) = files.iter().find(|f| {
            f.parent()
                .and_then(Path::parent)
                .and_then(Path::file_name)
                .is_some_and(|name| name == stem)
        }) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("a project policy");
        let set = PolicySet::from_yaml(&text, &path.display().to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        suites.push((suite_with(Some(set), file), path.clone()));
        project += 1;
    }
    assert!(
        project >= 10,
        "only {project} project policies have a suite"
    );
    let tally = judge(PATTERN_RUN, suites).await;
    assert!(tally.rules > 60, "only {} rules translated", tally.rules);
    assert!(tally.compared > 1000, "only {} comparisons", tally.compared);
    assert!(
        tally.denied_by_both > 300,
        "only {} denials compared",
        tally.denied_by_both
    );
}

/// What one run compared.
struct Tally {
    rules: usize,
    compared: usize,
    denied_by_both: usize,
}

/// Creates the admission policy of every translated rule of `suites`,
/// judges every resource of the rule's suite on both sides, prints the
/// counts and fails on any disagreement.
async fn judge(run: Run, suites: Vec<(Suite, PathBuf)>) -> Tally {
    let sandbox = Sandbox::connect().await;
    let client = sandbox.client.clone();
    let _cleanup = Cleanup(&sandbox, run);
    delete_all(client.clone(), run).await;
    let namespace = sandbox.namespace("vap-eq").await;
    let run_id = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );

    // Every translatable rule of every suite, with its scoping label.
    let mut cases = Vec::new();
    let mut not_translated = 0;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (suite, file) in suites {
        let suite = std::rc::Rc::new(suite);
        let translation = suite.policies.api_server_translation();
        not_translated += translation.not_translated.len();
        for rule in &translation.not_translated {
            *reasons.entry(rule.reason.clone()).or_insert(0) += 1;
        }
        for rule in translation.rules {
            let index = cases.len();
            cases.push((
                format!("{}-{index}", run.prefix),
                format!("{run_id}-{index}"),
                rule,
                std::rc::Rc::clone(&suite),
                file.clone(),
            ));
        }
    }
    let params = PatchParams::apply("aiops-vap-equivalence").force();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    for (name, value, rule, _, file) in &cases {
        policies
            .patch(
                name,
                &params,
                &Patch::Apply(scoped_policy(run, name, &rule.spec, value)),
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the API server refused the admission policy of {}/{} ({}): {e}",
                    rule.policy,
                    rule.rule,
                    file.display()
                )
            });
        bindings
            .patch(name, &params, &Patch::Apply(binding(run, name)))
            .await
            .unwrap_or_else(|e| panic!("binding {name}: {e}"));
    }
    // A sentinel that denies everything it selects: once it is in force,
    // the policies created before it are too.
    let sentinel = format!("{}-sentinel", run.prefix);
    let sentinel = sentinel.as_str();
    let sentinel_spec = json!({
        "failurePolicy": "Fail",
        "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
            "operations": ["CREATE"], "resources": ["configmaps"]}]},
        "validations": [{"expression": "false", "message": "sentinel"}],
    });
    let sentinel_value = format!("{run_id}-sentinel");
    policies
        .patch(
            sentinel,
            &params,
            &Patch::Apply(scoped_policy(
                run,
                sentinel,
                &sentinel_spec,
                &sentinel_value,
            )),
        )
        .await
        .expect("the sentinel policy");
    bindings
        .patch(sentinel, &params, &Patch::Apply(binding(run, sentinel)))
        .await
        .expect("the sentinel binding");
    let probe = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "probe", "labels": {run.label: sentinel_value}}});
    wait_until(
        Duration::from_secs(60),
        "the admission policies in force",
        || async {
            matches!(
                dry_run_create(&client, &namespace.name, &probe).await,
                Answer::Denied(_)
            )
            .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (mut compared, mut denied_by_both, mut not_comparable) = (0, 0, 0);
    let mut disagreements = Vec::new();
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    // The engine judges the object as the API server hands it to
    // admission (defaults set, zero values it omits gone): a dry-run
    // create outside every test policy's scope returns it. Once per
    // resource of a suite.
    let mut normalized: BTreeMap<(usize, usize), Option<Value>> = BTreeMap::new();
    for (_, value, rule, suite, _) in &cases {
        for (index, resource) in suite.resources.iter().enumerate() {
            let kind = resource["kind"].as_str().unwrap_or("").to_string();
            let key = (std::rc::Rc::as_ptr(suite) as usize, index);
            if let std::collections::btree_map::Entry::Vacant(slot) = normalized.entry(key) {
                let mut raw = resource.clone();
                if !matches!(
                    kind.as_str(),
                    "Namespace" | "ClusterRole" | "ClusterRoleBinding"
                ) {
                    raw["metadata"]["namespace"] = json!(namespace.name);
                }
                let seen = match dry_run_create(&client, &namespace.name, &raw).await {
                    Answer::Allowed(object) => Some(object),
                    Answer::Denied(_) | Answer::NotComparable(_) => None,
                };
                slot.insert(seen);
            }
            let Some(Some(seen)) = normalized.get(&key) else {
                not_comparable += 1;
                *refusals
                    .entry(format!("{kind}: refused by the API server itself"))
                    .or_insert(0) += 1;
                continue;
            };
            let mut resource = seen.clone();
            resource["metadata"]["labels"][run.label] = json!(value);
            let variables = BTreeMap::new();
            let labels = BTreeMap::new();
            let input = EvalInput {
                namespace_labels: Some(&labels),
                variables: &variables,
                ..EvalInput::for_resource(&resource)
            };
            let statuses: Vec<RuleStatus> = suite
                .policies
                .validate(&input)
                .into_iter()
                .filter(|o| o.policy == rule.policy && o.rule == rule.rule)
                .map(|o| o.status)
                .collect();
            let engine_denies = rule_denies(&statuses);
            match dry_run_create(&client, &namespace.name, &resource).await {
                Answer::NotComparable(reason) => {
                    not_comparable += 1;
                    let short: String = reason.chars().take(100).collect();
                    *refusals.entry(short).or_insert(0) += 1;
                }
                answer => {
                    compared += 1;
                    let api_denies = matches!(answer, Answer::Denied(_));
                    if api_denies && engine_denies {
                        denied_by_both += 1;
                    }
                    if api_denies != engine_denies {
                        let detail = match answer {
                            Answer::Denied(message) => message,
                            Answer::Allowed(_) | Answer::NotComparable(_) => "allowed".to_string(),
                        };
                        disagreements.push(format!(
                            "{}/{} on {} {}: engine denies={engine_denies}, API server: {detail}",
                            rule.policy,
                            rule.rule,
                            kind,
                            resource["metadata"]["name"].as_str().unwrap_or("")
                        ));
                    }
                }
            }
        }
    }
    println!(
        "VAP equivalence ({}): {} rules translated ({not_translated} stay in the webhook), \
         {compared} compared, {denied_by_both} denied by both, {} disagreements, \
         {not_comparable} not comparable",
        run.prefix,
        cases.len(),
        disagreements.len()
    );
    for (reason, count) in &refusals {
        println!("  not comparable ({count}): {reason}");
    }
    for (reason, count) in &reasons {
        println!("  stays in the webhook ({count}): {reason}");
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    Tally {
        rules: cases.len(),
        compared,
        denied_by_both,
    }
}

fn rule_denies(statuses: &[RuleStatus]) -> bool {
    statuses
        .iter()
        .any(|s| matches!(s, RuleStatus::Fail | RuleStatus::Error))
}
