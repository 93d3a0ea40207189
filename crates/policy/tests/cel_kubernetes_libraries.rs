//! A ClusterPolicy whose `validate.cel` rule uses the Kubernetes `quantity`
//! and `url` libraries, loaded from YAML and evaluated through the engine's
//! public API, as the webhook does.

use aiops_policy::{EvalInput, PolicySet, RuleStatus};
use serde_json::{Value, json};

const POLICY: &str = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: bounded-memory-and-https-docs
  annotations:
    pod-policies.kyverno.io/autogen-controllers: none
spec:
  validationFailureAction: Enforce
  rules:
  - name: memory-and-docs
    match:
      any:
      - resources:
          kinds: [Pod]
    validate:
      cel:
        variables:
        - name: limit
          expression: "quantity('1Gi')"
        - name: docs
          expression: "object.metadata.?annotations[?'docs'].orValue('https://docs.example.com/')"
        expressions:
        - expression: >-
            object.spec.containers.all(c,
              isQuantity(c.resources.limits.memory) &&
              quantity(c.resources.limits.memory).compareTo(variables.limit) <= 0)
          messageExpression: >-
            'memory limits must be at most ' + string(variables.limit.asInteger()) + ' bytes'
        - expression: "isURL(variables.docs) && url(variables.docs).getScheme() == 'https'"
          messageExpression: "'docs must be served over https, not ' + url(variables.docs).getScheme()"
"#;

fn pod(memory: &str, docs: Option<&str>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "team"},
        "spec": {"containers": [
            {"name": "app", "image": "nginx:1.27", "resources": {"limits": {"memory": memory}}}
        ]}
    });
    if let Some(docs) = docs {
        pod["metadata"]["annotations"] = json!({"docs": docs});
    }
    pod
}

fn verdict(set: &PolicySet, resource: &Value) -> (RuleStatus, String) {
    let outcomes = set.validate(&EvalInput::for_resource(resource));
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    (outcomes[0].status, outcomes[0].message.clone())
}

#[test]
fn a_cel_rule_with_quantities_and_urls_judges_pods() {
    let set = PolicySet::from_yaml(POLICY, "inline").expect("the policy loads");

    assert_eq!(verdict(&set, &pod("512Mi", None)).0, RuleStatus::Pass);
    assert_eq!(
        verdict(
            &set,
            &pod("1073741824", Some("https://wiki.example.com/web"))
        )
        .0,
        RuleStatus::Pass
    );

    let (status, message) = verdict(&set, &pod("2Gi", None));
    assert_eq!(status, RuleStatus::Fail);
    assert!(message.contains("at most 1073741824 bytes"), "{message}");

    let (status, message) = verdict(&set, &pod("256Mi", Some("http://wiki.example.com/web")));
    assert_eq!(status, RuleStatus::Fail);
    assert!(message.contains("not http"), "{message}");

    // Not a quantity: the rule is false, not an error.
    assert_eq!(verdict(&set, &pod("lots", None)).0, RuleStatus::Fail);
}

#[test]
fn rules_using_the_kubernetes_libraries_still_go_to_the_api_server() {
    let set = PolicySet::from_yaml(POLICY, "inline").expect("the policy loads");
    let translation = set.api_server_translation();
    let translated: Vec<&str> = translation.rules.iter().map(|r| r.rule.as_str()).collect();
    assert_eq!(
        translated,
        ["memory-and-docs"],
        "{:?}",
        translation.not_translated
    );
}
