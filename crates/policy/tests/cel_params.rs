//! `validate.cel` rules with parameter resources (`paramKind` + `paramRef`):
//! evaluated once per parameter resource the cluster access returns, bound
//! as `params`; none found is an error with `parameterNotFoundAction: Deny`
//! and a pass with `Allow`; without cluster access the rule errors.
use std::cell::RefCell;

use aiops_policy::{ClusterData, ClusterDataError, EvalInput, ParamSource, PolicySet, RuleStatus};
use serde_json::{Value, json};

const POLICY: &str = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: replica-limits}
spec:
  validationFailureAction: Enforce
  rules:
  - name: at-most-limit
    match: {any: [{resources: {kinds: [Deployment]}}]}
    validate:
      cel:
        paramKind: {apiVersion: rules.example.com/v1, kind: ReplicaLimit}
        paramRef: {name: limits, parameterNotFoundAction: ACTION}
        expressions:
        - expression: "object.spec.replicas <= params.maxReplicas"
          messageExpression: "'at most ' + string(params.maxReplicas) + ' replicas'"
"#;

/// Answers every parameter query with `params`, and records the queries.
struct Params {
    params: Result<Vec<Value>, ClusterDataError>,
    asked: RefCell<Vec<(String, Option<String>, String)>>,
}

impl ClusterData for Params {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Value, ClusterDataError> {
        Err(ClusterDataError::NotFound {
            what: format!("configmap {namespace}/{name}"),
        })
    }

    fn api_get(&self, path: &str) -> Result<Value, ClusterDataError> {
        Err(ClusterDataError::NotFound {
            what: path.to_string(),
        })
    }

    fn params(
        &self,
        source: &ParamSource,
        request_namespace: &str,
    ) -> Result<Vec<Value>, ClusterDataError> {
        self.asked.borrow_mut().push((
            source.kind.clone(),
            source.name.clone(),
            request_namespace.to_string(),
        ));
        self.params.clone()
    }
}

fn deployment(replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "a", "image": "a:1"}]}}},
    })
}

fn decide(action: &str, cluster: Option<&dyn ClusterData>, replicas: i64) -> (RuleStatus, String) {
    let set = PolicySet::from_yaml(&POLICY.replace("ACTION", action), "inline")
        .unwrap_or_else(|e| panic!("{e}"));
    let resource = deployment(replicas);
    let mut input = EvalInput::for_resource(&resource);
    input.cluster_data = cluster;
    let outcomes = set.validate(&input);
    let outcome = outcomes
        .iter()
        .find(|o| o.rule == "at-most-limit")
        .unwrap_or_else(|| panic!("no outcome for the rule: {outcomes:?}"));
    (outcome.status, outcome.message.clone())
}

fn limit(max: i64) -> Value {
    json!({"apiVersion": "rules.example.com/v1", "kind": "ReplicaLimit",
        "metadata": {"name": "limits"}, "maxReplicas": max})
}

#[test]
fn params_are_bound_per_parameter_resource() {
    let cluster = Params {
        params: Ok(vec![limit(3)]),
        asked: RefCell::default(),
    };
    assert_eq!(decide("Deny", Some(&cluster), 2).0, RuleStatus::Pass);
    let (status, message) = decide("Deny", Some(&cluster), 5);
    assert_eq!(status, RuleStatus::Fail);
    assert!(message.contains("at most 3 replicas"), "{message}");
    assert_eq!(
        cluster.asked.borrow()[0],
        (
            "ReplicaLimit".to_string(),
            Some("limits".to_string()),
            "shop".to_string()
        )
    );

    // Two parameter resources: each must pass.
    let two = Params {
        params: Ok(vec![limit(10), limit(4)]),
        asked: RefCell::default(),
    };
    let (status, message) = decide("Deny", Some(&two), 5);
    assert_eq!(status, RuleStatus::Fail);
    assert!(message.contains("at most 4 replicas"), "{message}");
}

#[test]
fn a_missing_parameter_follows_parameter_not_found_action() {
    let none = Params {
        params: Ok(Vec::new()),
        asked: RefCell::default(),
    };
    let (status, message) = decide("Deny", Some(&none), 1);
    assert_eq!(status, RuleStatus::Error);
    assert!(message.contains("no parameter resource"), "{message}");
    assert_eq!(decide("Allow", Some(&none), 50).0, RuleStatus::Pass);

    let not_found = Params {
        params: Err(ClusterDataError::NotFound {
            what: "replicalimits limits".into(),
        }),
        asked: RefCell::default(),
    };
    assert_eq!(decide("Deny", Some(&not_found), 1).0, RuleStatus::Error);
    assert_eq!(decide("Allow", Some(&not_found), 50).0, RuleStatus::Pass);

    let failing = Params {
        params: Err(ClusterDataError::Failed {
            what: "GET".into(),
            message: "forbidden".into(),
        }),
        asked: RefCell::default(),
    };
    let (status, message) = decide("Allow", Some(&failing), 1);
    assert_eq!(
        status,
        RuleStatus::Error,
        "a failed read is not a missing parameter"
    );
    assert!(message.contains("forbidden"), "{message}");

    let (status, message) = decide("Deny", None, 1);
    assert_eq!(status, RuleStatus::Error);
    assert!(message.contains("need a cluster"), "{message}");
}

#[test]
fn param_ref_needs_a_name_or_a_selector() {
    let both = POLICY.replace("ACTION", "Deny").replace(
        "paramRef: {name: limits,",
        "paramRef: {name: limits, selector: {matchLabels: {a: b}},",
    );
    let error = PolicySet::from_yaml(&both, "inline").expect_err("name and selector");
    assert!(
        error
            .to_string()
            .contains("exactly one of name and selector"),
        "{error}"
    );
    let unknown_action = POLICY.replace("ACTION", "Maybe");
    assert!(PolicySet::from_yaml(&unknown_action, "inline").is_err());
    // Not for the API server: the binding would need the parameter too.
    let set = PolicySet::from_yaml(&POLICY.replace("ACTION", "Deny"), "inline")
        .unwrap_or_else(|e| panic!("{e}"));
    // Read from the cluster: the webhook evaluates it off its async workers.
    assert!(set.reads_cluster());
    let translation = set.api_server_translation();
    assert!(translation.rules.is_empty(), "{:?}", translation.rules);
    assert!(
        translation
            .not_translated
            .iter()
            .any(|n| n.reason.contains("paramKind"))
    );
}
