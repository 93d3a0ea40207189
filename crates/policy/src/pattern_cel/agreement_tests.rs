//! The translated CEL and the pattern engine agree on real resources: every
//! pattern rule of the project's `policies/` and of the shared Kyverno
//! suites (`../shared/conformance/kyverno`, read in place) that translates
//! is judged on every resource of those suites, as a CREATE and as UPDATEs,
//! by the engine and by this crate's CEL evaluator.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cel::{CelBindings, CelCheck, CelValidation, CelVerdict};
use crate::{EvalInput, Operation, PolicySet, RuleOutcome, RuleStatus};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|document| serde::Deserialize::deserialize(document).ok())
        .filter(|value: &Value| !value.is_null())
        .collect()
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

/// Every suite's policies (one set per suite) and all suites' resources.
fn suites() -> (Vec<PolicySet>, Vec<Value>) {
    let mut files = Vec::new();
    test_files(
        &repo_root().join("../shared/conformance/kyverno"),
        &mut files,
    );
    files.sort();
    assert!(files.len() > 30, "the shared kyverno suites are required");
    let (mut sets, mut resources) = (Vec::new(), Vec::new());
    for file in files {
        let dir = file.parent().expect("a test file's folder");
        let test = yaml_documents(&file).remove(0);
        let paths = |key: &str| -> Vec<PathBuf> {
            test[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|p| dir.join(p))
                .collect()
        };
        let mut set = PolicySet::default();
        for path in paths("policies") {
            let text = std::fs::read_to_string(&path).expect("the policy file");
            set.merge(PolicySet::from_yaml(&text, &path.display().to_string()).expect("a policy"));
        }
        sets.push(set);
        for path in paths("resources") {
            resources.extend(
                yaml_documents(&path)
                    .into_iter()
                    .filter(|r| r.get("kind").is_some()),
            );
        }
    }
    (sets, resources)
}

/// Whether the engine denies by this rule, given all its outcomes for one
/// input; `None` when the rule does not select the input (the admission
/// policy's match decides that part).
fn engine_denies(outcomes: &[RuleOutcome], policy: &str, rule: &str) -> Option<bool> {
    let mine: Vec<&RuleOutcome> = outcomes
        .iter()
        .filter(|o| o.policy == policy && o.rule == rule)
        .collect();
    (!mine.is_empty()).then(|| {
        mine.iter()
            .any(|o| matches!(o.status, RuleStatus::Fail | RuleStatus::Error))
    })
}

fn cel_denies(check: &CelCheck, bindings: &CelBindings) -> bool {
    let verdict = check.evaluate(bindings);
    matches!(verdict, CelVerdict::Fail(_) | CelVerdict::Error(_))
}

#[derive(Default, Debug)]
struct Counts {
    rules: usize,
    compared: usize,
    denied_by_both: usize,
    updates: usize,
    disagreements: Vec<String>,
}

fn compare(set: &PolicySet, resources: &[Value], counts: &mut Counts) {
    let mut checks = Vec::new();
    for rule in set.api_server_translation().rules {
        let Some(expression) = rule.spec["validations"][0]["expression"].as_str() else {
            continue;
        };
        // Only pattern rules: a CEL rule's text is the policy's own.
        if !expression.contains(r#"request.operation == "UPDATE""#) {
            continue;
        }
        let compiled = super::compile(expression).expect("a translated expression");
        assert!(compiled.runs_in_api_server(), "{expression}");
        let check = CelCheck {
            validations: vec![CelValidation {
                expression: compiled,
                message: None,
                message_expression: None,
            }],
            ..CelCheck::default()
        };
        checks.push((rule.policy, rule.rule, check));
    }
    counts.rules += checks.len();
    if checks.is_empty() {
        return;
    }
    let mut judge = |input: &EvalInput, what: &str| {
        let outcomes = set.validate(input);
        let bindings = CelBindings::for_input(input);
        for (policy, rule, check) in &checks {
            let Some(engine) = engine_denies(&outcomes, policy, rule) else {
                continue;
            };
            let cel = cel_denies(check, &bindings);
            counts.compared += 1;
            counts.updates += usize::from(what == "UPDATE");
            counts.denied_by_both += usize::from(engine && cel);
            if engine != cel {
                counts.disagreements.push(format!(
                    "{policy}/{rule} {what} {}: engine denies={engine}, CEL denies={cel}",
                    input.resource["metadata"]["name"]
                ));
            }
        }
    };
    for (index, resource) in resources.iter().enumerate() {
        judge(&EvalInput::for_resource(resource), "CREATE");
        // The next resources of the same kind as old objects: a fixed
        // violation, a new one, and one that did not change all occur.
        let kind = &resource["kind"];
        for old in resources[index..]
            .iter()
            .filter(|r| &r["kind"] == kind)
            .take(2)
        {
            let input = EvalInput {
                old_resource: Some(old),
                operation: Operation::Update,
                ..EvalInput::for_resource(resource)
            };
            judge(&input, "UPDATE");
        }
    }
}

#[test]
fn translated_patterns_decide_as_the_engine_on_every_suite_resource() {
    // The CEL evaluator recurses once per nested term, and a translated
    // pattern nests deeper than a test thread's stack allows.
    std::thread::Builder::new()
        .stack_size(super::COMPILE_STACK)
        .spawn(compare_everything)
        .expect("a test thread")
        .join()
        .expect("the comparison");
}

fn compare_everything() {
    let (sets, resources) = suites();
    let mut counts = Counts::default();
    for set in &sets {
        compare(set, &resources, &mut counts);
    }
    let project = PolicySet::load_dir(&repo_root().join("policies")).expect("the project policies");
    compare(&project, &resources, &mut counts);
    println!(
        "pattern agreement: {} rules, {} compared ({} updates), {} denied by both, {} disagreements",
        counts.rules,
        counts.compared,
        counts.updates,
        counts.denied_by_both,
        counts.disagreements.len()
    );
    assert!(
        counts.disagreements.is_empty(),
        "{}",
        counts.disagreements.join("\n")
    );
    assert!(counts.rules > 40, "{counts:?}");
    assert!(counts.denied_by_both > 200, "{counts:?}");
}

#[test]
fn every_pattern_rule_of_the_project_policies_translates() {
    let project = PolicySet::load_dir(&repo_root().join("policies")).expect("the project policies");
    let translation = project.api_server_translation();
    let mut staying: Vec<(&str, &str, &str)> = translation
        .not_translated
        .iter()
        .map(|n| (n.policy.as_str(), n.rule.as_str(), n.reason.as_str()))
        .collect();
    staying.sort_unstable();
    // The two JMESPath rules (deny and foreach), with their controller twins.
    let rules: Vec<(&str, &str)> = staying.iter().map(|(p, r, _)| (*p, *r)).collect();
    assert_eq!(
        rules,
        [
            (
                "disallow-capabilities",
                "autogen-baseline-capabilities-only"
            ),
            (
                "disallow-capabilities",
                "autogen-cronjob-baseline-capabilities-only"
            ),
            ("disallow-capabilities", "baseline-capabilities-only"),
            ("disallow-latest-tag", "autogen-cronjob-require-image-tag"),
            ("disallow-latest-tag", "autogen-require-image-tag"),
            ("disallow-latest-tag", "require-image-tag"),
        ],
        "{staying:?}"
    );
    assert!(
        staying
            .iter()
            .all(|(_, _, reason)| reason.contains("JMESPath"))
    );
    // Thirteen pattern rules (SELinux and AppArmor have two each), each
    // with two controller twins.
    assert_eq!(translation.rules.len(), 39);
}
