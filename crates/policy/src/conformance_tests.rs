//! Unit tests of the conformance runner, on tiny suites written to
//! temporary directories.

use super::*;

#[test]
fn summary_line_format() {
    let mut report = ConformanceReport::default();
    report.results.push(ResultCheck {
        test: "t".into(),
        policy: "p".into(),
        rule: "r".into(),
        kind: "Pod".into(),
        resource: "x".into(),
        expected: "pass".into(),
        actual: "fail".into(),
        ok: false,
        unsupported: None,
    });
    assert_eq!(report.summary(), "0 passed, 1 failed, 0 unsupported");
    assert!(render_text(&report).starts_with("MISMATCH t: policy=p rule=r"));
}

#[test]
fn missing_directory_is_an_error() {
    assert!(matches!(
        run_dir(Path::new("/definitely/not/here")),
        Err(ConformanceError::MissingDirectory(_))
    ));
}

/// A suite in a fresh directory: one policy with the rule
/// `check-image`, one pod, and `test` as its kyverno-test.yaml.
fn suite(test: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a scratch directory");
    std::fs::write(
        dir.path().join("policy.yaml"),
        "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: images}\n\
         spec:\n  rules:\n  - name: check-image\n    match: {any: [{resources: {kinds: [Pod]}}]}\n\
         \x20   validate:\n      message: no latest\n      pattern:\n        spec:\n\
         \x20         containers:\n          - image: \"!*:latest\"\n",
    )
    .expect("the policy");
    std::fs::write(
        dir.path().join("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n\
         spec: {containers: [{name: app, image: \"nginx:1.25\"}]}\n",
    )
    .expect("the resource");
    std::fs::write(dir.path().join("kyverno-test.yaml"), test).expect("the test");
    dir
}

const HEADER: &str = "apiVersion: cli.kyverno.io/v1alpha1\nkind: Test\n\
    metadata: {name: t}\npolicies: [policy.yaml]\nresources: [pod.yaml]\n";

#[test]
fn a_test_naming_a_rule_the_policy_lacks_fails() {
    let good = suite(&format!(
        "{HEADER}results:\n- {{policy: images, rule: check-image, kind: Pod, resources: [web], result: pass}}\n"
    ));
    let report = run_dir(good.path()).expect("runs");
    assert_eq!(
        report.summary(),
        "1 passed, 0 failed, 0 unsupported",
        "{}",
        render_text(&report)
    );
    let typo = suite(&format!(
        "{HEADER}results:\n- {{policy: images, rule: check-imag, kind: Pod, resources: [web], result: skip}}\n"
    ));
    let report = run_dir(typo.path()).expect("runs");
    assert_eq!(report.summary(), "0 passed, 1 failed, 0 unsupported");
    assert!(
        report.results[0]
            .actual
            .contains("has no rule \"check-imag\"")
    );
    let no_policy = suite(&format!(
        "{HEADER}results:\n- {{policy: imagez, rule: check-image, kind: Pod, resources: [web], result: skip}}\n"
    ));
    let report = run_dir(no_policy.path()).expect("runs");
    assert!(report.results[0].actual.contains("no policy named"));
}

#[test]
fn unsupported_rules_are_reported_and_counted_not_failed() {
    let dir = suite(&format!(
        "{HEADER}results:\n\
         - {{policy: images, rule: check-image, kind: Pod, resources: [web], result: pass}}\n\
         - {{policy: images, rule: make-config, kind: Pod, resources: [web], result: pass}}\n"
    ));
    let policy = std::fs::read_to_string(dir.path().join("policy.yaml")).expect("the policy");
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!(
            "{policy}  - name: make-config\n    match: {{any: [{{resources: {{kinds: [Pod]}}}}]}}\n\
             \x20   generate: {{kind: ConfigMap, name: c}}\n"
        ),
    )
    .expect("the policy with a generate rule");
    let report = run_dir(dir.path()).expect("runs");
    assert_eq!(report.summary(), "1 passed, 0 failed, 1 unsupported");
    let text = render_text(&report);
    assert!(
        text.contains("UNSUPPORTED policy=images rule=make-config construct=generate"),
        "{text}"
    );
    assert!(!text.contains("MISMATCH"), "{text}");
}

/// A suite with one policy `defaults`: the mutate rule `add-team` adds
/// a `team: core` label when there is none, the validate rule
/// `require-team` requires one. Pods: `web` (unlabelled) and `labelled`
/// (team a). `patched` is written as patched.yaml.
fn mutate_suite(patched: &str, results: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).expect("a suite file");
    };
    write(
        "policy.yaml",
        "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: defaults}\n\
         spec:\n  validationFailureAction: Enforce\n  rules:\n\
         \x20 - name: add-team\n    match: {any: [{resources: {kinds: [Pod]}}]}\n\
         \x20   mutate:\n      patchStrategicMerge:\n        metadata:\n          labels:\n            +(team): core\n\
         \x20 - name: require-team\n    match: {any: [{resources: {kinds: [Pod]}}]}\n\
         \x20   validate:\n      pattern:\n        metadata:\n          labels:\n            team: \"?*\"\n",
    );
    write(
        "pods.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: app, image: nginx}]}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {name: labelled, labels: {team: a}}\n\
         spec: {containers: [{name: app, image: nginx}]}\n",
    );
    write("patched.yaml", patched);
    write(
        "kyverno-test.yaml",
        &format!(
            "apiVersion: cli.kyverno.io/v1alpha1\nkind: Test\nmetadata: {{name: t}}\n\
             policies: [policy.yaml]\nresources: [pods.yaml]\nresults:\n{results}"
        ),
    );
    dir
}

const PATCHED_WEB: &str = "apiVersion: v1\nkind: Pod\n\
    metadata: {name: web, labels: {team: core}, annotations: {}}\n\
    spec: {containers: [{name: app, image: nginx}]}\n";

#[test]
fn patched_resources_are_compared_and_validation_sees_the_mutation() {
    let dir = mutate_suite(
        PATCHED_WEB,
        "- {policy: defaults, rule: add-team, kind: Pod, resources: [web], patchedResource: patched.yaml, result: pass}\n\
         - {policy: defaults, rule: require-team, kind: Pod, resources: [web], result: pass}\n\
         - {policy: defaults, rule: add-team, kind: Pod, resources: [labelled], result: skip}\n",
    );
    let report = run_dir(dir.path()).expect("runs");
    assert_eq!(
        report.summary(),
        "3 passed, 0 failed, 0 unsupported",
        "{}",
        render_text(&report)
    );
}

#[test]
fn a_patched_resource_that_differs_fails() {
    let dir = mutate_suite(
        &PATCHED_WEB.replace("team: core", "team: platform"),
        "- {policy: defaults, rule: add-team, kind: Pod, resources: [web], patchedResource: patched.yaml, result: pass}\n",
    );
    let report = run_dir(dir.path()).expect("runs");
    assert_eq!(report.summary(), "0 passed, 1 failed, 0 unsupported");
    assert_eq!(report.results[0].actual, "fail");

    let missing = mutate_suite(
        &PATCHED_WEB.replace("name: web", "name: other"),
        "- {policy: defaults, rule: add-team, kind: Pod, resources: [web], patchedResource: patched.yaml, result: pass}\n",
    );
    let report = run_dir(missing.path()).expect("runs");
    assert!(
        report.results[0].actual.contains("has no Pod named web"),
        "{:?}",
        report.results
    );
}

#[test]
fn tidy_ignores_empty_values_and_key_order() {
    let a: Value =
        serde_json::from_str(r#"{"b": 1, "a": {"x": [], "y": null, "z": {}}, "c": [{}]}"#)
            .expect("json");
    let b: Value = serde_json::from_str(r#"{"b": 1}"#).expect("json");
    assert_eq!(tidy(&a), tidy(&b));
    let c: Value = serde_json::from_str(r#"{"b": 2}"#).expect("json");
    assert_ne!(tidy(&a), tidy(&c));
}

/// A suite whose policy reads a ConfigMap: the values file stands in
/// for the cluster, per resource, per rule or globally.
fn config_map_suite(values: &str, results: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let files = [
        (
            "policy.yaml",
            "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: registries}\n\
             spec:\n  rules:\n  - name: allowed-registry\n    match: {any: [{resources: {kinds: [Pod]}}]}\n\
             \x20   context:\n    - name: allowed\n      configMap: {name: registries, namespace: platform}\n\
             \x20   validate:\n      message: registry not allowed\n      deny:\n        conditions:\n\
             \x20         all:\n          - key: \"{{ images.containers.*.registry }}\"\n\
             \x20           operator: AnyNotIn\n            value: \"{{ allowed.data.registries | split(@, ',') }}\"\n",
        ),
        (
            "pods.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: good}\nspec: {containers: [{name: a, image: \"good.io/app:1\"}]}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {name: evil}\nspec: {containers: [{name: a, image: \"evil.io/app:1\"}]}\n",
        ),
        ("values.yaml", values),
        (
            "kyverno-test.yaml",
            &format!(
                "apiVersion: cli.kyverno.io/v1alpha1\nkind: Test\nmetadata: {{name: t}}\n\
                 policies: [policy.yaml]\nresources: [pods.yaml]\nvariables: values.yaml\nresults:\n{results}"
            ),
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("a suite file");
    }
    dir
}

const GOOD_AND_EVIL: &str = "- {policy: registries, rule: allowed-registry, kind: Pod, resources: [good], result: pass}\n\
     - {policy: registries, rule: allowed-registry, kind: Pod, resources: [evil], result: fail}\n";

#[test]
fn values_stand_in_for_config_map_lookups() {
    let layouts = [
        // Per resource, under the dotted variable name.
        "policies:\n- name: registries\n  resources:\n\
         \x20 - {name: good, values: {allowed.data.registries: \"good.io,other.io\"}}\n\
         \x20 - {name: evil, values: {allowed.data.registries: \"good.io,other.io\"}}\n",
        // Per rule, under the entry's name.
        "policies:\n- name: registries\n  rules:\n\
         \x20 - {name: allowed-registry, values: {allowed: {data: {registries: \"good.io\"}}}}\n",
        // For everything.
        "globalValues:\n  allowed.data.registries: good.io\n",
    ];
    for values in layouts {
        let dir = config_map_suite(values, GOOD_AND_EVIL);
        let report = run_dir(dir.path()).expect("runs");
        assert_eq!(
            report.summary(),
            "2 passed, 0 failed, 0 unsupported",
            "{values}\n{}",
            render_text(&report)
        );
    }
}

#[test]
fn a_config_map_entry_without_values_is_not_looked_up() {
    // As `kyverno test` without a cluster: the entry stays unset, so
    // the deny condition that reads it cannot be resolved.
    let dir = config_map_suite(
        "globalValues: {}\n",
        "- {policy: registries, rule: allowed-registry, kind: Pod, resources: [good], result: error}\n",
    );
    let report = run_dir(dir.path()).expect("runs");
    assert_eq!(
        report.summary(),
        "1 passed, 0 failed, 0 unsupported",
        "{}",
        render_text(&report)
    );
    // Values of another rule do not leak into this one.
    let dir = config_map_suite(
        "policies:\n- name: registries\n  rules:\n\
         \x20 - {name: another-rule, values: {allowed: {data: {registries: good.io}}}}\n",
        "- {policy: registries, rule: allowed-registry, kind: Pod, resources: [good], result: error}\n",
    );
    assert_eq!(
        run_dir(dir.path()).expect("runs").summary(),
        "1 passed, 0 failed, 0 unsupported"
    );
}

#[test]
fn a_test_file_that_does_not_parse_fails() {
    let dir = suite("results: [unclosed\n");
    let report = run_dir(dir.path()).expect("runs");
    assert_eq!(report.summary(), "0 passed, 1 failed, 0 unsupported");
    assert!(
        report.results[0].actual.contains("does not parse"),
        "{:?}",
        report.results
    );
}
