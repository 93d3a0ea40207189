//! Unit tests of the policy parser (`spec` and its `spec_*` parts).

use super::*;
use serde_json::json;

fn unsupported_construct(rule: Value) -> String {
    match parse_rule("p", &rule) {
        Err(PolicyError::Unsupported {
            policy,
            rule,
            construct,
        }) => {
            assert_eq!(policy, "p");
            assert_eq!(rule, "r");
            construct
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

fn base() -> Value {
    json!({"name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]}})
}

#[test]
fn rejects_unsupported_constructs() {
    let mut rule = base();
    rule["verifyImages"] = json!([{}]);
    assert_eq!(unsupported_construct(rule), "verifyImages");

    let mut rule = base();
    rule["generate"] = json!({});
    assert_eq!(unsupported_construct(rule), "generate");

    let mut rule = base();
    rule["validate"] = json!({"cel": {
        "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
        "paramRef": {"name": "limits", "parameterNotFoundAction": "Deny", "x": 1},
        "expressions": [{"expression": "true"}]}});
    assert_eq!(unsupported_construct(rule), "validate.cel.paramRef.x");

    let mut rule = base();
    rule["mutate"] =
        json!({"targets": [{"apiVersion": "v1", "kind": "ConfigMap"}], "patchStrategicMerge": {}});
    assert_eq!(unsupported_construct(rule), "mutate.targets");

    let mut rule = base();
    rule["mutate"] = json!({"mutateExistingOnPolicyUpdate": true, "patchStrategicMerge": {}});
    assert_eq!(
        unsupported_construct(rule),
        "mutate.mutateExistingOnPolicyUpdate"
    );

    let mut rule = base();
    rule["context"] = json!([{"name": "g", "globalReference": {"name": "x"}}]);
    rule["validate"] = json!({"deny": {}});
    assert_eq!(unsupported_construct(rule), "context[g].globalReference");

    let mut rule = base();
    rule["context"] = json!([{"name": "img", "imageRegistry": {"reference": "x"}}]);
    rule["validate"] = json!({"deny": {}});
    assert_eq!(unsupported_construct(rule), "context[img].imageRegistry");

    let mut rule = base();
    rule["context"] =
        json!([{"name": "api", "apiCall": {"urlPath": "/x", "method": "POST", "data": []}}]);
    rule["validate"] = json!({"deny": {}});
    assert_eq!(
        unsupported_construct(rule),
        "context[api].apiCall.method=POST"
    );

    let mut rule = base();
    rule["context"] = json!([{"name": "svc", "apiCall": {"service": {"url": "http://x"}}}]);
    rule["validate"] = json!({"deny": {}});
    assert_eq!(unsupported_construct(rule), "context[svc].apiCall.service");
}

#[test]
fn accepts_variable_context_and_supported_checks() {
    let mut rule = base();
    rule["context"] = json!([{"name": "v", "variable": {"jmesPath": "request.object.metadata.name", "default": "x"}}]);
    rule["validate"] = json!({"message": "m", "failureAction": "enforce", "deny": {"conditions": {"any": [{"key": "a", "operator": "Equals", "value": "a"}]}}});
    let parsed = parse_rule("p", &rule).unwrap();
    assert_eq!(parsed.context.len(), 1);
    let RuleBody::Validate(validation) = parsed.body else {
        panic!("expected validate")
    };
    assert_eq!(validation.failure_action, Some(FailureAction::Enforce));
}

#[test]
fn parses_config_map_and_api_call_context() {
    let mut rule = base();
    rule["context"] = json!([
        {"name": "cm", "configMap": {"name": "{{ request.namespace }}-cfg"}},
        {"name": "count", "apiCall": {"urlPath": "/api/v1/namespaces", "method": "GET",
            "jmesPath": "items | length(@)", "default": 0}},
    ]);
    rule["validate"] = json!({"deny": {}});
    let parsed = parse_rule("p", &rule).unwrap();
    assert!(parsed.reads_cluster());
    assert_eq!(
        parsed.context[0].source,
        ContextSource::ConfigMap {
            name: "{{ request.namespace }}-cfg".into(),
            namespace: String::new()
        }
    );
    assert_eq!(
        parsed.context[1].source,
        ContextSource::ApiCall(ApiCall {
            url_path: "/api/v1/namespaces".into(),
            jmes_path: Some("items | length(@)".into()),
            default: Some(json!(0)),
        })
    );

    // Only in a foreach: still a rule that reads the cluster.
    let mut rule = base();
    rule["validate"] = json!({"foreach": [{"list": "request.object.spec.containers",
        "context": [{"name": "cm", "configMap": {"name": "x", "namespace": "y"}}],
        "deny": {}}]});
    assert!(parse_rule("p", &rule).unwrap().reads_cluster());
    let mut rule = base();
    rule["mutate"] = json!({"foreach": [{"list": "request.object.spec.containers",
        "context": [{"name": "cm", "configMap": {"name": "x", "namespace": "y"}}],
        "patchStrategicMerge": {"metadata": {"labels": {"a": "b"}}}}]});
    assert!(parse_rule("p", &rule).unwrap().reads_cluster());
    rule["mutate"]["foreach"][0]["context"] = json!([{"name": "v", "variable": {"value": 1}}]);
    assert!(!parse_rule("p", &rule).unwrap().reads_cluster());

    let mut rule = base();
    rule["context"] = json!([{"name": "cm", "configMap": {"namespace": "y"}}]);
    rule["validate"] = json!({"deny": {}});
    assert!(matches!(
        parse_rule("p", &rule),
        Err(PolicyError::Invalid { .. })
    ));
    let mut rule = base();
    rule["context"] =
        json!([{"name": "two", "variable": {"value": 1}, "configMap": {"name": "x"}}]);
    rule["validate"] = json!({"deny": {}});
    assert!(matches!(
        parse_rule("p", &rule),
        Err(PolicyError::Invalid { .. })
    ));
}

#[test]
fn rejects_unknown_operators() {
    let mut rule = base();
    rule["validate"] =
        json!({"deny": {"conditions": [{"key": "a", "operator": "Bogus", "value": "a"}]}});
    assert!(matches!(
        parse_rule("p", &rule),
        Err(PolicyError::Invalid { .. })
    ));
}
