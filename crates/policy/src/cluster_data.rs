//! Context entries read from the cluster: `configMap` and `apiCall`.
//!
//! The engine holds no Kubernetes client. Whoever evaluates supplies a
//! [`ClusterData`] (the operator: watched caches and API reads; tests: a
//! double) on [`EvalInput::cluster_data`](crate::EvalInput); without one
//! such an entry is a rule `error`.
//!
//! Kyverno's behaviour, followed here:
//! - `configMap` stores `{"data": …, "metadata": …}` of the ConfigMap; an
//!   empty namespace means `default` (for a namespaced `Policy`: its own
//!   namespace, and no other namespace may be read). A ConfigMap that cannot
//!   be read is an error; there is no `default`.
//! - `apiCall` GETs `urlPath` (variables substituted) and applies `jmesPath`
//!   to the answer. When the call fails, `default` is stored as is (no
//!   `jmesPath`); without a `default` the failure is an error. A namespaced
//!   `Policy` may only call paths inside its own namespace.
//! - A name supplied by a test's values is taken from the values, not
//!   looked up; [`ClusterDataError::Disabled`] leaves the entry unset, as
//!   the Kyverno CLI does offline.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::cel::ParamSource;
use crate::context::EvalContext;
use crate::error::EvalError;
use crate::spec::ApiCall;
use crate::variables;

/// Read access to the cluster for `configMap` and `apiCall` context entries.
///
/// Implementations decide caching and timeouts; the engine calls them
/// synchronously, once per entry evaluated (foreach entries once per
/// element), so answers should come from a cache where possible.
pub trait ClusterData {
    /// The ConfigMap `namespace/name` as JSON (at least `metadata` and
    /// `data`); [`ClusterDataError::NotFound`] when it does not exist.
    fn config_map(&self, namespace: &str, name: &str) -> Result<Value, ClusterDataError>;

    /// The JSON answer of a GET of `path` (absolute, may carry a query)
    /// against the API server.
    fn api_get(&self, path: &str) -> Result<Value, ClusterDataError>;

    /// The parameter resources of a `validate.cel` rule (`paramKind` +
    /// `paramRef`) for a request in `request_namespace`: the named one, or
    /// those the selector selects. Only a reader that knows which kinds
    /// are namespaced can answer; the default says so.
    fn params(
        &self,
        source: &ParamSource,
        request_namespace: &str,
    ) -> Result<Vec<Value>, ClusterDataError> {
        let _ = request_namespace;
        Err(ClusterDataError::Disabled {
            reason: format!(
                "parameter resources ({} {}) are not read here",
                source.api_version, source.kind
            ),
        })
    }
}

impl std::fmt::Debug for dyn ClusterData + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn ClusterData")
    }
}

/// Why a cluster read gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterDataError {
    /// `what`: e.g. `configmap ns/name`, `GET /api/v1/...`.
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what} failed: {message}")]
    Failed { what: String, message: String },
    #[error("{what}: no answer within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    /// Lookups are switched off on purpose (the conformance runner, like
    /// `kyverno test` without a cluster): the entry is left unset.
    #[error("cluster lookups are disabled: {reason}")]
    Disabled { reason: String },
}

/// [`ClusterData`] of an offline `kyverno test` run: every lookup is
/// [`ClusterDataError::Disabled`], so only the values file gives
/// `configMap`/`apiCall` entries a value.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfflineCluster;

impl ClusterData for OfflineCluster {
    fn config_map(&self, _namespace: &str, _name: &str) -> Result<Value, ClusterDataError> {
        Err(ClusterDataError::Disabled {
            reason: "offline test run".into(),
        })
    }

    fn api_get(&self, _path: &str) -> Result<Value, ClusterDataError> {
        Err(ClusterDataError::Disabled {
            reason: "offline test run".into(),
        })
    }
}

/// What loading cluster-backed entries needs besides the context itself.
#[derive(Clone, Copy)]
pub(crate) struct Lookups<'i> {
    pub cluster: Option<&'i dyn ClusterData>,
    /// `Some` for a namespaced `Policy`: its reads stay in that namespace.
    pub policy_namespace: Option<&'i str>,
    /// Test values (the input's and the rule's): a name they supply is not
    /// looked up.
    pub supplied: [&'i BTreeMap<String, Value>; 2],
}

impl Lookups<'_> {
    /// True when a values file gave `name` (or something below it) a value.
    pub fn supplies(&self, name: &str) -> bool {
        self.supplied.iter().any(|values| {
            values.keys().any(|key| {
                key == name
                    || key
                        .strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
        })
    }

    fn cluster(&self, entry: &str, kind: &str) -> Result<&dyn ClusterData, EvalError> {
        self.cluster.ok_or_else(|| {
            EvalError::Other(format!(
                "context entry {entry}: a {kind} lookup needs cluster access, and this evaluation has none"
            ))
        })
    }
}

/// Loads a `configMap` entry: `Ok(None)` when lookups are disabled.
pub(crate) fn load_config_map(
    entry: &str,
    name: &str,
    namespace: &str,
    ctx: &EvalContext,
    lookups: &Lookups,
) -> Result<Option<Value>, EvalError> {
    let name = substituted_text(entry, "configMap.name", name, ctx)?;
    let namespace = substituted_text(entry, "configMap.namespace", namespace, ctx)?;
    let namespace = match (namespace.is_empty(), lookups.policy_namespace) {
        (true, Some(own)) => own.to_string(),
        (true, None) => "default".to_string(),
        (false, _) => namespace,
    };
    if let Some(own) = lookups.policy_namespace
        && own != namespace
    {
        return Err(EvalError::Other(format!(
            "context entry {entry}: configMap namespace {namespace:?} is not the policy's namespace {own:?}"
        )));
    }
    let cluster = lookups.cluster(entry, "configMap")?;
    match cluster.config_map(&namespace, &name) {
        Ok(config_map) => {
            // Kyverno keeps the data and the metadata, nothing else.
            let mut stored = Map::new();
            let field = |key: &str| config_map.get(key).cloned().unwrap_or(Value::Null);
            stored.insert("data".into(), field("data"));
            stored.insert("metadata".into(), field("metadata"));
            Ok(Some(Value::Object(stored)))
        }
        Err(ClusterDataError::Disabled { .. }) => Ok(None),
        Err(error) => Err(EvalError::Other(format!(
            "context entry {entry}: failed to get configmap {namespace}/{name}: {error}"
        ))),
    }
}

/// Loads an `apiCall` entry: `Ok(None)` when lookups are disabled.
pub(crate) fn load_api_call(
    entry: &str,
    call: &ApiCall,
    ctx: &EvalContext,
    lookups: &Lookups,
) -> Result<Option<Value>, EvalError> {
    let path = substituted_text(entry, "apiCall.urlPath", &call.url_path, ctx)?;
    if !path.starts_with('/') {
        return Err(EvalError::Other(format!(
            "context entry {entry}: apiCall urlPath {path:?} is not an absolute path"
        )));
    }
    if let Some(own) = lookups.policy_namespace
        && path_namespace(&path) != Some(own)
    {
        return Err(EvalError::Other(format!(
            "context entry {entry}: apiCall urlPath {path:?} is outside the policy's namespace {own:?}"
        )));
    }
    let cluster = lookups.cluster(entry, "apiCall")?;
    let answer = match cluster.api_get(&path) {
        Ok(answer) => answer,
        Err(ClusterDataError::Disabled { .. }) => return Ok(None),
        Err(error) => {
            return match &call.default {
                // The default replaces the answer, not the `jmesPath` result.
                Some(default) => Ok(Some(default.clone())),
                None => Err(EvalError::Other(format!(
                    "context entry {entry}: apiCall failed and has no default: {error}"
                ))),
            };
        }
    };
    let Some(expression) = &call.jmes_path else {
        return Ok(Some(answer));
    };
    let expression = substituted_text(entry, "apiCall.jmesPath", expression, ctx)?;
    crate::jmespath::search(&expression, &answer)
        .map(Some)
        .map_err(|e| {
            EvalError::Other(format!(
                "context entry {entry}: apiCall jmesPath on the answer of GET {path}: {e}"
            ))
        })
}

/// The namespace a namespaced API path addresses (`/api/v1/namespaces/x/…`,
/// `/apis/group/version/namespaces/x/…`), `None` for cluster-wide paths.
fn path_namespace(path: &str) -> Option<&str> {
    let path = path.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    match rest {
        ["namespaces", namespace, ..] if !namespace.is_empty() => Some(namespace),
        _ => None,
    }
}

fn substituted_text(
    entry: &str,
    field: &str,
    text: &str,
    ctx: &EvalContext,
) -> Result<String, EvalError> {
    match variables::substitute_string(text, ctx, &[]) {
        Ok(Value::String(text)) => Ok(text),
        Ok(other) => Ok(other.to_string()),
        Err(e) => Err(EvalError::Other(format!(
            "context entry {entry}: failed to substitute variables in {field} {text:?}: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::{ClusterData, ClusterDataError, OfflineCluster, path_namespace};
    use crate::{EvalInput, PolicySet, RuleOutcome, RuleStatus};

    /// A test double of [`ClusterData`]: ConfigMaps and GET answers from
    /// maps, every call recorded.
    #[derive(Default)]
    struct FakeCluster {
        config_maps: BTreeMap<(String, String), Value>,
        answers: BTreeMap<String, Result<Value, ClusterDataError>>,
        calls: RefCell<Vec<String>>,
    }

    impl FakeCluster {
        fn with_config_map(mut self, namespace: &str, name: &str, data: Value) -> FakeCluster {
            self.config_maps.insert(
                (namespace.into(), name.into()),
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": namespace}, "data": data}),
            );
            self
        }

        fn with_answer(mut self, path: &str, answer: Result<Value, ClusterDataError>) -> Self {
            self.answers.insert(path.into(), answer);
            self
        }

        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl ClusterData for FakeCluster {
        fn config_map(&self, namespace: &str, name: &str) -> Result<Value, ClusterDataError> {
            self.calls
                .borrow_mut()
                .push(format!("configmap {namespace}/{name}"));
            self.config_maps
                .get(&(namespace.to_string(), name.to_string()))
                .cloned()
                .ok_or_else(|| ClusterDataError::NotFound {
                    what: format!("configmap {namespace}/{name}"),
                })
        }

        fn api_get(&self, path: &str) -> Result<Value, ClusterDataError> {
            self.calls.borrow_mut().push(format!("GET {path}"));
            self.answers.get(path).cloned().unwrap_or_else(|| {
                Err(ClusterDataError::NotFound {
                    what: format!("GET {path}"),
                })
            })
        }
    }

    fn policy(kind: &str, namespace: Option<&str>, rule: &str) -> PolicySet {
        let namespace = namespace.map_or(String::new(), |ns| format!("  namespace: {ns}\n"));
        let yaml = format!(
            "apiVersion: kyverno.io/v1\nkind: {kind}\nmetadata:\n  name: p\n{namespace}  annotations:\n    pod-policies.kyverno.io/autogen-controllers: none\nspec:\n  validationFailureAction: Enforce\n  rules:\n  - name: r\n    match:\n      any:\n      - resources:\n          kinds: [Pod]\n{rule}"
        );
        PolicySet::from_yaml(&yaml, "test").unwrap()
    }

    fn pod(namespace: &str, image: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"containers": [{"name": "app", "image": image}]}})
    }

    fn outcome(
        set: &PolicySet,
        resource: &Value,
        cluster: Option<&dyn ClusterData>,
    ) -> RuleOutcome {
        let mut input = EvalInput::for_resource(resource);
        input.cluster_data = cluster;
        let mut outcomes = set.validate(&input);
        assert_eq!(outcomes.len(), 1, "{outcomes:?}");
        outcomes.remove(0)
    }

    /// Denies images whose registry the namespace's ConfigMap does not list.
    const REGISTRY_RULE: &str = "    context:\n    - name: allowed\n      configMap:\n        name: registries\n        namespace: \"{{ request.namespace }}\"\n    validate:\n      message: \"registry not in {{ allowed.data.list }}\"\n      deny:\n        conditions:\n          all:\n          - key: \"{{ images.containers.app.registry }}\"\n            operator: AnyNotIn\n            value: \"{{ parse_json(allowed.data.list) }}\"\n";

    #[test]
    fn config_map_entries_read_the_named_config_map() {
        let set = policy("ClusterPolicy", None, REGISTRY_RULE);
        let cluster = FakeCluster::default().with_config_map(
            "team",
            "registries",
            json!({"list": "[\"good.io\"]"}),
        );
        let allowed = outcome(&set, &pod("team", "good.io/app:1"), Some(&cluster));
        assert_eq!(allowed.status, RuleStatus::Pass, "{}", allowed.message);
        let denied = outcome(&set, &pod("team", "evil.io/app:1"), Some(&cluster));
        assert_eq!(denied.status, RuleStatus::Fail);
        assert!(denied.message.contains("good.io"), "{}", denied.message);
        assert_eq!(cluster.calls(), ["configmap team/registries"; 2]);
    }

    #[test]
    fn a_missing_config_map_or_no_cluster_is_an_error() {
        let set = policy("ClusterPolicy", None, REGISTRY_RULE);
        let empty = FakeCluster::default();
        let missing = outcome(&set, &pod("team", "good.io/app:1"), Some(&empty));
        assert_eq!(missing.status, RuleStatus::Error);
        assert!(
            missing.message.contains(
                "failed to get configmap team/registries: configmap team/registries not found"
            ),
            "{}",
            missing.message
        );
        let offline = outcome(&set, &pod("team", "good.io/app:1"), None);
        assert_eq!(offline.status, RuleStatus::Error);
        assert!(
            offline
                .message
                .contains("context entry allowed: a configMap lookup needs cluster access"),
            "{}",
            offline.message
        );
    }

    #[test]
    fn config_map_namespace_defaults_and_namespaced_policies_stay_home() {
        let rule = "    context:\n    - name: cfg\n      configMap:\n        name: settings\n    validate:\n      deny:\n        conditions:\n          all:\n          - key: \"{{ cfg.data.blocked }}\"\n            operator: Equals\n            value: \"yes\"\n";
        let cluster = FakeCluster::default()
            .with_config_map("default", "settings", json!({"blocked": "yes"}))
            .with_config_map("team", "settings", json!({"blocked": "no"}));
        let cluster_wide = policy("ClusterPolicy", None, rule);
        assert_eq!(
            outcome(&cluster_wide, &pod("team", "a"), Some(&cluster)).status,
            RuleStatus::Fail
        );
        let namespaced = policy("Policy", Some("team"), rule);
        assert_eq!(
            outcome(&namespaced, &pod("team", "a"), Some(&cluster)).status,
            RuleStatus::Pass
        );
        let elsewhere = policy(
            "Policy",
            Some("team"),
            &rule.replace(
                "name: settings\n",
                "name: settings\n        namespace: default\n",
            ),
        );
        let refused = outcome(&elsewhere, &pod("team", "a"), Some(&cluster));
        assert_eq!(refused.status, RuleStatus::Error);
        assert!(
            refused.message.contains("not the policy's namespace"),
            "{}",
            refused.message
        );
        assert_eq!(
            cluster.calls(),
            ["configmap default/settings", "configmap team/settings"]
        );
    }

    /// Counts the namespace's pods through the API; more than one is denied.
    fn pod_count_rule(default: Option<&str>) -> String {
        let default = default.map_or(String::new(), |d| format!("        default: {d}\n"));
        format!(
            "    context:\n    - name: podCount\n      apiCall:\n        urlPath: \"/api/v1/namespaces/{{{{ request.namespace }}}}/pods\"\n        jmesPath: \"items | length(@)\"\n{default}    validate:\n      message: \"{{{{ podCount }}}} pods already\"\n      deny:\n        conditions:\n          all:\n          - key: \"{{{{ podCount }}}}\"\n            operator: GreaterThan\n            value: 1\n"
        )
    }

    #[test]
    fn api_calls_apply_jmes_path_to_the_answer() {
        let set = policy("ClusterPolicy", None, &pod_count_rule(None));
        let cluster = FakeCluster::default()
            .with_answer(
                "/api/v1/namespaces/busy/pods",
                Ok(json!({"items": [{}, {}, {}]})),
            )
            .with_answer("/api/v1/namespaces/calm/pods", Ok(json!({"items": [{}]})));
        let busy = outcome(&set, &pod("busy", "a"), Some(&cluster));
        assert_eq!(busy.status, RuleStatus::Fail);
        assert_eq!(busy.message, "3 pods already");
        assert_eq!(
            outcome(&set, &pod("calm", "a"), Some(&cluster)).status,
            RuleStatus::Pass
        );
        assert_eq!(
            cluster.calls(),
            [
                "GET /api/v1/namespaces/busy/pods",
                "GET /api/v1/namespaces/calm/pods"
            ]
        );
    }

    #[test]
    fn a_failed_api_call_takes_the_default_or_is_an_error() {
        let failing = FakeCluster::default().with_answer(
            "/api/v1/namespaces/busy/pods",
            Err(ClusterDataError::Failed {
                what: "GET /api/v1/namespaces/busy/pods".into(),
                message: "403 Forbidden".into(),
            }),
        );
        // The default is stored as is: `jmesPath` is not applied to it.
        let with_default = policy("ClusterPolicy", None, &pod_count_rule(Some("5")));
        let denied = outcome(&with_default, &pod("busy", "a"), Some(&failing));
        assert_eq!(denied.status, RuleStatus::Fail, "{}", denied.message);
        assert_eq!(denied.message, "5 pods already");
        let low_default = policy("ClusterPolicy", None, &pod_count_rule(Some("0")));
        assert_eq!(
            outcome(&low_default, &pod("busy", "a"), Some(&failing)).status,
            RuleStatus::Pass
        );

        let without = policy("ClusterPolicy", None, &pod_count_rule(None));
        let error = outcome(&without, &pod("busy", "a"), Some(&failing));
        assert_eq!(error.status, RuleStatus::Error);
        assert!(
            error.message.contains(
                "context entry podCount: apiCall failed and has no default: GET /api/v1/namespaces/busy/pods failed: 403 Forbidden"
            ),
            "{}",
            error.message
        );
        // A timeout is a failure like any other.
        let slow = FakeCluster::default().with_answer(
            "/api/v1/namespaces/busy/pods",
            Err(ClusterDataError::Timeout {
                what: "GET /api/v1/namespaces/busy/pods".into(),
                timeout: std::time::Duration::from_secs(2),
            }),
        );
        assert_eq!(
            outcome(&with_default, &pod("busy", "a"), Some(&slow)).status,
            RuleStatus::Fail
        );
        let error = outcome(&without, &pod("busy", "a"), Some(&slow));
        assert!(
            error.message.contains("no answer within 2s"),
            "{}",
            error.message
        );
    }

    #[test]
    fn namespaced_policies_call_only_their_namespace() {
        let rule = pod_count_rule(None).replace(
            "/api/v1/namespaces/{{ request.namespace }}/pods",
            "/api/v1/pods",
        );
        let set = policy("Policy", Some("team"), &rule);
        let cluster = FakeCluster::default().with_answer("/api/v1/pods", Ok(json!({"items": []})));
        let refused = outcome(&set, &pod("team", "a"), Some(&cluster));
        assert_eq!(refused.status, RuleStatus::Error);
        assert!(
            refused.message.contains("outside the policy's namespace"),
            "{}",
            refused.message
        );
        assert!(cluster.calls().is_empty());
    }

    #[test]
    fn foreach_context_entries_are_loaded_per_element() {
        let rule = "    validate:\n      foreach:\n      - list: request.object.spec.containers\n        context:\n        - name: cfg\n          configMap:\n            name: \"{{ element.name }}\"\n            namespace: cfgs\n        deny:\n          conditions:\n            all:\n            - key: \"{{ cfg.data.allowed }}\"\n              operator: NotEquals\n              value: \"true\"\n";
        let set = policy("ClusterPolicy", None, rule);
        let cluster = FakeCluster::default()
            .with_config_map("cfgs", "app", json!({"allowed": "true"}))
            .with_config_map("cfgs", "side", json!({"allowed": "false"}));
        let mut two = pod("team", "a");
        two["spec"]["containers"] =
            json!([{"name": "app", "image": "a"}, {"name": "side", "image": "b"}]);
        assert_eq!(outcome(&set, &two, Some(&cluster)).status, RuleStatus::Fail);
        assert_eq!(
            cluster.calls(),
            ["configmap cfgs/app", "configmap cfgs/side"]
        );
        assert_eq!(
            outcome(&set, &pod("team", "a"), Some(&cluster)).status,
            RuleStatus::Pass
        );
    }

    #[test]
    fn supplied_values_replace_lookups_and_disabled_lookups_leave_entries_unset() {
        let set = policy("ClusterPolicy", None, REGISTRY_RULE);
        let cluster = FakeCluster::default();
        let variables = BTreeMap::from([("allowed.data.list".to_string(), json!("[\"good.io\"]"))]);
        let resource = pod("team", "evil.io/app:1");
        let mut input = EvalInput::for_resource(&resource);
        input.variables = &variables;
        input.cluster_data = Some(&cluster);
        let outcomes = set.validate(&input);
        assert_eq!(outcomes[0].status, RuleStatus::Fail, "{:?}", outcomes);
        assert!(cluster.calls().is_empty());

        // Offline, nothing supplied: the entry is unset and the condition
        // that reads it cannot be resolved.
        let offline = outcome(&set, &resource, Some(&OfflineCluster));
        assert_eq!(offline.status, RuleStatus::Error);
        assert!(
            !offline.message.contains("cluster access"),
            "{}",
            offline.message
        );
        // ... but a rule that does not read it still passes.
        let unused = policy(
            "ClusterPolicy",
            None,
            "    context:\n    - name: cfg\n      configMap:\n        name: x\n    validate:\n      deny: {conditions: {all: [{key: a, operator: Equals, value: b}]}}\n",
        );
        assert_eq!(
            outcome(&unused, &resource, Some(&OfflineCluster)).status,
            RuleStatus::Pass
        );
    }

    #[test]
    fn rule_values_apply_to_their_rule_only() {
        let set = policy("ClusterPolicy", None, REGISTRY_RULE);
        let resource = pod("team", "good.io/app:1");
        let rules = BTreeMap::from([(
            "r".to_string(),
            BTreeMap::from([(
                "allowed".to_string(),
                json!({"data": {"list": "[\"good.io\"]"}}),
            )]),
        )]);
        let mut input = EvalInput::for_resource(&resource);
        input.rule_variables = &rules;
        input.cluster_data = Some(&OfflineCluster);
        assert_eq!(set.validate(&input)[0].status, RuleStatus::Pass);
        let other = BTreeMap::from([("other".to_string(), rules["r"].clone())]);
        input.rule_variables = &other;
        assert_eq!(set.validate(&input)[0].status, RuleStatus::Error);
    }

    #[test]
    fn mutate_rules_read_config_maps_too() {
        let yaml = "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata:\n  name: m\nspec:\n  rules:\n  - name: team-label\n    match:\n      any:\n      - resources:\n          kinds: [Pod]\n    context:\n    - name: owners\n      configMap:\n        name: owners\n        namespace: platform\n    mutate:\n      patchStrategicMerge:\n        metadata:\n          labels:\n            owner: \"{{ owners.data.default }}\"\n";
        let set = PolicySet::from_yaml(yaml, "test").unwrap();
        assert!(set.reads_cluster());
        let cluster =
            FakeCluster::default().with_config_map("platform", "owners", json!({"default": "sre"}));
        let resource = pod("team", "a");
        let input = EvalInput::for_resource(&resource).with_cluster_data(&cluster);
        let patch = serde_json::to_value(set.mutate(&input).unwrap()).unwrap();
        assert_eq!(patch[0]["value"], json!({"owner": "sre"}), "{patch}");
        assert!(set.mutate(&EvalInput::for_resource(&resource)).is_err());
    }

    #[test]
    fn selected_rules_say_whether_they_read_the_cluster() {
        let set = policy("ClusterPolicy", None, REGISTRY_RULE);
        let resource = pod("team", "a");
        assert!(
            set.select(&EvalInput::for_resource(&resource))
                .reads_cluster()
        );
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}});
        assert!(
            !set.select(&EvalInput::for_resource(&service))
                .reads_cluster()
        );
    }

    #[test]
    fn namespaced_paths_name_their_namespace() {
        assert_eq!(path_namespace("/api/v1/namespaces/a/pods"), Some("a"));
        assert_eq!(
            path_namespace("/apis/apps/v1/namespaces/b/deployments/x?limit=1"),
            Some("b")
        );
        assert_eq!(path_namespace("/api/v1/namespaces/a"), Some("a"));
        assert_eq!(path_namespace("/api/v1/namespaces"), None);
        assert_eq!(path_namespace("/api/v1/nodes"), None);
        assert_eq!(path_namespace("/healthz"), None);
    }
}
