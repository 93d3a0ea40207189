//! Policies that run inside the API server: the CEL and pattern rules with
//! an exact `ValidatingAdmissionPolicy` translation are kept in the cluster as
//! policy + binding pairs, and the webhook skips them, so a request they
//! decide costs no webhook call for them.
//!
//! Enforce rules move under a `Deny` binding and Warn rules under a `Warn`
//! one (the API server returns the warning, and Warn records nothing in
//! either place). Audit rules stay in the webhook, which writes the Events
//! and PolicyReports for them (the API server's `Audit` action only
//! annotates its audit log, which PolicyReports cannot be built from here).
//!
//! The set follows the policy files and the ConfigMap: a sync task
//! compares what they ask for with what it last applied, server-side
//! applies the difference and deletes objects it owns (by label) that are
//! no longer wanted. A rule starts being skipped by the webhook only after
//! its policy is applied and the API server has had time to load it, and
//! stops being skipped before its policy is deleted, so no request falls
//! between the two.
//!
//! The webhook's own registration follows ([`webhook_registration`]):
//! a resource no webhook rule can match any more is taken out of it once
//! the API server enforces its rules, and put back before they return to
//! the webhook, so such requests cost no webhook call at all.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, ValidatingWebhookConfiguration,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::admission::modes::{Mode, ModeConfig};
use crate::admission::state::{Live, ModeHandle, PolicyHandle};
use crate::admission::webhook_registration::{self, Registration};
use crate::policy::vap;
use crate::policy::{PolicySet, ResourceNeeds};

/// The label on every object this module owns; its value names the
/// operator instance (its namespace), so two installs do not prune each
/// other's policies.
pub const INSTANCE_LABEL: &str = "aiops-operator.dev/instance";

/// The field manager of the server-side applies.
const FIELD_MANAGER: &str = "aiops-operator";

/// Where admission rules are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdmissionBackend {
    /// Every rule in the webhook.
    Webhook,
    /// Enforced CEL and pattern rules with an exact translation in the API server
    /// (ValidatingAdmissionPolicy); the rest in the webhook.
    Vap,
    /// `vap` when the API server serves ValidatingAdmissionPolicy
    /// (`admissionregistration.k8s.io/v1`, Kubernetes 1.30+), else
    /// `webhook`.
    Auto,
}

/// (policy display name, rule name) pairs the API server enforces.
pub type RuleSet = BTreeSet<(String, String)>;

/// The rules the webhook must skip, shared with the request handlers.
pub type ApiServerRules = Live<RuleSet>;

/// The objects that should exist, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub policies: BTreeMap<String, Value>,
    pub bindings: BTreeMap<String, Value>,
    pub rules: RuleSet,
}

/// Which rules with an exact translation move to the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveScope {
    /// All of them (`--admission-backend vap`): enforcement that does not
    /// depend on the webhook, even where the webhook is still called for
    /// other rules of the same resource.
    Every,
    /// Only those whose move takes a resource out of the webhook's
    /// registration (`auto`): while any rule that stays in the webhook can
    /// match a resource, the webhook is called for it anyway, and an
    /// admission policy beside it only adds its own cost (measured in
    /// BENCHMARKS.md, `webhook-vap`).
    WholeResources,
}

/// What the policy set and modes ask the API server to enforce: Enforce
/// rules under a `Deny` binding, Warn rules under a `Warn` one (merged
/// separately, as a binding's action covers its whole policy).
pub fn desired(set: &PolicySet, modes: &ModeConfig, instance: &str, scope: MoveScope) -> Desired {
    let translation = set.api_server_translation();
    let mut moving: Vec<(&vap::ApiServerRule, Mode)> = translation
        .rules
        .iter()
        .filter_map(|rule| match modes.mode_for(&rule.policy, &rule.action) {
            mode @ (Mode::Enforce | Mode::Warn) => Some((rule, mode)),
            Mode::Audit => None,
        })
        .collect();
    if scope == MoveScope::WholeResources {
        keep_whole_resources(set, &mut moving);
    }
    let mut out = Desired::default();
    for (mode, action) in [(Mode::Enforce, "Deny"), (Mode::Warn, "Warn")] {
        let group: Vec<&vap::ApiServerRule> = moving
            .iter()
            .filter(|(_, rule_mode)| *rule_mode == mode)
            .map(|(rule, _)| *rule)
            .collect();
        for merged in vap::merge(&group) {
            add_pair(&mut out, merged, action, modes, instance);
        }
    }
    out
}

/// Drops from `moving` every rule that shares a resource with a rule
/// staying in the webhook, until no such rule is left (dropping one can
/// make another share).
fn keep_whole_resources(set: &PolicySet, moving: &mut Vec<(&vap::ApiServerRule, Mode)>) {
    loop {
        let moving_names: RuleSet = moving
            .iter()
            .map(|(rule, _)| (rule.policy.clone(), rule.rule.clone()))
            .collect();
        let staying = set.validate_resources(|policy, rule| {
            !moving_names.contains(&(policy.to_string(), rule.to_string()))
        });
        let before = moving.len();
        moving.retain(|(candidate, _)| {
            let own = set.validate_resources(|policy, rule| {
                policy == candidate.policy && rule == candidate.rule
            });
            !shares_resource(&own, &staying)
        });
        if moving.len() == before {
            return;
        }
    }
}

fn shares_resource(own: &ResourceNeeds, staying: &ResourceNeeds) -> bool {
    match (own, staying) {
        (_, ResourceNeeds::Only(staying)) if staying.is_empty() => false,
        (ResourceNeeds::Any, _) | (_, ResourceNeeds::Any) => true,
        (ResourceNeeds::Only(own), staying) => own
            .iter()
            .any(|resource| staying.covers(&resource.group, &resource.resource)),
    }
}

fn add_pair(
    out: &mut Desired,
    merged: vap::MergedPolicy,
    action: &str,
    modes: &ModeConfig,
    instance: &str,
) {
    // Deny names hash the members only (unchanged from before Warn moved
    // too); Warn ones also hash the action.
    let name = if action == "Deny" {
        object_name(instance, &merged.members)
    } else {
        object_name(&format!("{instance}/{action}"), &merged.members)
    };
    let mut spec = merged.spec;
    add_exemptions(&mut spec, modes);
    let labels = json!({ INSTANCE_LABEL: instance });
    let members: Vec<String> = merged
        .members
        .iter()
        .map(|(policy, rule)| format!("{policy}/{rule}"))
        .collect();
    let annotations = json!({"aiops-operator.dev/rules": members.join(",")});
    out.policies.insert(
        name.clone(),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": spec,
        }),
    );
    let mut binding_spec = json!({"policyName": name, "validationActions": [action]});
    if !modes.exempt_namespaces.is_empty() {
        binding_spec["matchResources"] = json!({"namespaceSelector": {"matchExpressions": [{
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": modes.exempt_namespaces.iter().collect::<Vec<_>>(),
        }]}});
    }
    out.bindings.insert(
        name.clone(),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name, "labels": labels},
            "spec": binding_spec,
        }),
    );
    out.rules.extend(merged.members);
}

/// Exempt users and groups become match conditions (a binding selects by
/// namespace and object only).
fn add_exemptions(spec: &mut Value, modes: &ModeConfig) {
    let quoted = |names: &BTreeSet<String>| {
        let items: Vec<String> = names
            .iter()
            .map(|n| serde_json::to_string(n).unwrap_or_else(|_| "\"\"".into()))
            .collect();
        format!("[{}]", items.join(", "))
    };
    let mut conditions = Vec::new();
    if !modes.exempt_users.is_empty() {
        conditions.push(json!({
            "name": "aiops-exempt-users",
            "expression": format!("!(request.userInfo.username in {})", quoted(&modes.exempt_users)),
        }));
    }
    if !modes.exempt_groups.is_empty() {
        conditions.push(json!({
            "name": "aiops-exempt-groups",
            "expression": format!(
                "!request.userInfo.groups.exists(g, g in {})",
                quoted(&modes.exempt_groups)
            ),
        }));
    }
    if conditions.is_empty() {
        return;
    }
    match spec
        .get_mut("matchConditions")
        .and_then(Value::as_array_mut)
    {
        Some(existing) => existing.extend(conditions),
        None => spec["matchConditions"] = Value::Array(conditions),
    }
}

/// A stable, valid object name: the first member's policy, then a hash of
/// all members (the same rules always get the same name).
fn object_name(instance: &str, members: &[(String, String)]) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    instance.hash(&mut hasher);
    members.hash(&mut hasher);
    let first = members
        .first()
        .map(|(policy, _)| policy.as_str())
        .unwrap_or("rules");
    let readable: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!(
        "aiops-{}-{:08x}",
        readable.trim_matches('-'),
        hasher.finish() as u32
    )
}

/// Why a sync step failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing the {kind} objects of instance {instance}: {source}")]
    List {
        kind: &'static str,
        instance: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {source}")]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Whether the API server serves ValidatingAdmissionPolicy.
pub async fn api_server_supports_vap(client: &kube::Client) -> bool {
    match client
        .list_api_group_resources("admissionregistration.k8s.io/v1")
        .await
    {
        Ok(list) => list
            .resources
            .iter()
            .any(|r| r.name == "validatingadmissionpolicies"),
        Err(error) => {
            tracing::warn!(%error, "cannot discover admissionregistration.k8s.io/v1; using the webhook for every rule");
            false
        }
    }
}

/// The owner reference that makes the garbage collector delete the
/// policies with the operator's ValidatingWebhookConfiguration (an
/// uninstall leaves none behind); `None` when that configuration does not
/// exist (a local run).
async fn owner_reference(client: &kube::Client, owner: Option<&str>) -> Option<Value> {
    let name = owner?;
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let found = configurations.get_opt(name).await.ok()??;
    let uid = found.metadata.uid?;
    Some(json!([{
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "name": name,
        "uid": uid,
    }]))
}

/// Applies `desired` and deletes the owned objects it no longer lists.
/// Bindings are deleted before their policies and applied after them, so a
/// binding never names a missing policy. `owner` names the
/// ValidatingWebhookConfiguration whose deletion removes them.
pub async fn apply(
    client: &kube::Client,
    desired: &Desired,
    instance: &str,
    owner: Option<&str>,
) -> Result<(), SyncError> {
    let owner_references = owner_reference(client, owner).await;
    let owned = |object: &Value| {
        let mut object = object.clone();
        if let Some(references) = &owner_references {
            object["metadata"]["ownerReferences"] = references.clone();
        }
        object
    };
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let selector = ListParams::default().labels(&format!("{INSTANCE_LABEL}={instance}"));

    let existing_bindings =
        bindings
            .list_metadata(&selector)
            .await
            .map_err(|source| SyncError::List {
                kind: "ValidatingAdmissionPolicyBinding",
                instance: instance.to_string(),
                source,
            })?;
    for name in existing_bindings
        .items
        .iter()
        .filter_map(|o| o.metadata.name.as_ref())
    {
        if !desired.bindings.contains_key(name) {
            delete(&bindings, name, "ValidatingAdmissionPolicyBinding").await?;
        }
    }
    let existing_policies =
        policies
            .list_metadata(&selector)
            .await
            .map_err(|source| SyncError::List {
                kind: "ValidatingAdmissionPolicy",
                instance: instance.to_string(),
                source,
            })?;
    for name in existing_policies
        .items
        .iter()
        .filter_map(|o| o.metadata.name.as_ref())
    {
        if !desired.policies.contains_key(name) {
            delete(&policies, name, "ValidatingAdmissionPolicy").await?;
        }
    }
    for (name, object) in &desired.policies {
        policies
            .patch(name, &params, &Patch::Apply(owned(object)))
            .await
            .map_err(|source| SyncError::Apply {
                kind: "ValidatingAdmissionPolicy",
                name: name.clone(),
                source,
            })?;
    }
    for (name, object) in &desired.bindings {
        bindings
            .patch(name, &params, &Patch::Apply(owned(object)))
            .await
            .map_err(|source| SyncError::Apply {
                kind: "ValidatingAdmissionPolicyBinding",
                name: name.clone(),
                source,
            })?;
    }
    Ok(())
}

async fn delete<K>(api: &Api<K>, name: &str, kind: &'static str) -> Result<(), SyncError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        // Already gone: what we wanted.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(SyncError::Delete {
            kind,
            name: name.to_string(),
            source,
        }),
    }
}

/// How the sync task paces itself.
#[derive(Debug, Clone, Copy)]
pub struct SyncTiming {
    /// How often the policy set and modes are compared with what was applied.
    pub check_every: Duration,
    /// How long the API server is given to load a new policy before the
    /// webhook stops evaluating its rules.
    pub load_grace: Duration,
    /// Wait before retrying a failed apply.
    pub retry_after: Duration,
}

impl Default for SyncTiming {
    fn default() -> Self {
        SyncTiming {
            check_every: Duration::from_secs(1),
            load_grace: Duration::from_secs(2),
            retry_after: Duration::from_secs(5),
        }
    }
}

/// Keeps the webhook's registration to the resources its rules can still
/// match (see [`webhook_registration`]).
struct Registrar {
    configuration: Option<String>,
    /// What the registration was last set to; `None` until it is, or after
    /// a failure.
    registered: Option<ResourceNeeds>,
    /// When to look again: after a failure, or to undo an installer that
    /// wrote the full rules back (`kubectl apply`, an upgrade).
    next_try: tokio::time::Instant,
}

/// How long a missing webhook configuration is left before looking again.
const MISSING_CONFIGURATION_RETRY: Duration = Duration::from_secs(10);
/// How often a registration believed current is read again.
const REGISTRATION_RECHECK: Duration = Duration::from_secs(60);

impl Registrar {
    /// Registers the webhook for what the rules outside `skipped` can
    /// match; true when the registration changed.
    async fn follow(
        &mut self,
        client: &kube::Client,
        set: &PolicySet,
        skipped: &RuleSet,
        retry_after: Duration,
    ) -> bool {
        let Some(configuration) = &self.configuration else {
            return false;
        };
        let needs = set.validate_resources(|policy, rule| {
            !skipped.contains(&(policy.to_string(), rule.to_string()))
        });
        let recheck = tokio::time::Instant::now() >= self.next_try;
        if self.registered.as_ref() == Some(&needs) && !recheck {
            return false;
        }
        match webhook_registration::update(client, configuration, &needs).await {
            Ok(outcome @ (Registration::Changed | Registration::Unchanged)) => {
                self.registered = Some(needs);
                self.next_try = tokio::time::Instant::now() + REGISTRATION_RECHECK;
                outcome == Registration::Changed
            }
            Ok(Registration::Missing) => {
                tracing::debug!(configuration, "no webhook configuration to narrow yet");
                self.registered = None;
                self.next_try = tokio::time::Instant::now() + MISSING_CONFIGURATION_RETRY;
                false
            }
            Err(error) => {
                tracing::warn!(%error, "cannot update the webhook registration; it stays as it is");
                self.registered = None;
                self.next_try = tokio::time::Instant::now() + retry_after;
                false
            }
        }
    }

    fn due(&self) -> bool {
        self.configuration.is_some() && tokio::time::Instant::now() >= self.next_try
    }
}

/// Puts back every resource a previous run took out of the webhook's
/// registration: what `--admission-backend webhook` starts with.
pub async fn restore_registration(client: &kube::Client, configuration: &str) {
    match webhook_registration::update(client, configuration, &ResourceNeeds::Any).await {
        Ok(Registration::Changed) => {
            tracing::info!(configuration, "webhook registration restored in full")
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot restore the webhook registration"),
    }
}

/// Whose admission policies the sync keeps, and which.
#[derive(Debug, Clone)]
pub struct SyncTarget {
    /// The value of [`INSTANCE_LABEL`] on every object it owns.
    pub instance: String,
    /// The ValidatingWebhookConfiguration that owns the objects and whose
    /// registration follows what is left to the webhook.
    pub owner: Option<String>,
    pub scope: MoveScope,
}

/// Starts the task that keeps the cluster's admission policies in step
/// with `policies` and `modes`, `skip` (the webhook's view) in step with
/// what the API server enforces, and the webhook configuration
/// `target.owner` registered for what is left to the webhook.
pub fn spawn_sync(
    client: kube::Client,
    policies: PolicyHandle,
    modes: ModeHandle,
    skip: ApiServerRules,
    target: SyncTarget,
    timing: SyncTiming,
) -> JoinHandle<()> {
    let SyncTarget {
        instance,
        owner,
        scope,
    } = target;
    tokio::spawn(async move {
        let mut applied: Option<Desired> = None;
        let mut seen: Option<(Arc<PolicySet>, Arc<ModeConfig>)> = None;
        let mut registrar = Registrar {
            configuration: owner.clone(),
            registered: None,
            next_try: tokio::time::Instant::now(),
        };
        loop {
            let current = (policies.current(), modes.current());
            let unchanged = seen.as_ref().is_some_and(|(set, mode)| {
                Arc::ptr_eq(set, &current.0) && Arc::ptr_eq(mode, &current.1)
            });
            if !unchanged {
                let wanted = desired(&current.0, &current.1, &instance, scope);
                // Rules leaving the API server are evaluated by the
                // webhook again, and its registration covers them again,
                // before their policies go.
                let before = skip.current();
                let staying: RuleSet = before.intersection(&wanted.rules).cloned().collect();
                if staying != *before {
                    skip.replace(staying.clone());
                }
                if registrar
                    .follow(&client, &current.0, &staying, timing.retry_after)
                    .await
                {
                    tokio::time::sleep(timing.load_grace).await;
                }
                if applied.as_ref() != Some(&wanted) {
                    match apply(&client, &wanted, &instance, owner.as_deref()).await {
                        Ok(()) => {
                            tracing::info!(
                                policies = wanted.policies.len(),
                                rules = wanted.rules.len(),
                                "admission policies in the API server updated"
                            );
                            tokio::time::sleep(timing.load_grace).await;
                            skip.replace(wanted.rules.clone());
                            applied = Some(wanted);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "cannot update the API server's admission policies; the webhook keeps evaluating their rules");
                            tokio::time::sleep(timing.retry_after).await;
                            continue;
                        }
                    }
                }
                // Only now that the API server enforces them: resources
                // no webhook rule can match leave the registration.
                registrar
                    .follow(&client, &current.0, &skip.current(), timing.retry_after)
                    .await;
                seen = Some(current);
            } else if registrar.due() {
                registrar
                    .follow(&client, &current.0, &skip.current(), timing.retry_after)
                    .await;
            }
            tokio::time::sleep(timing.check_every).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: &str = r#"
apiVersion: policies.kyverno.io/v1alpha1
kind: ValidatingPolicy
metadata: {name: no-host-network}
spec:
  validationActions: [Audit]
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}
  validations:
  - expression: "!object.spec.?hostNetwork.orValue(false)"
    message: no host network
"#;

    #[test]
    fn only_enforced_rules_move_and_exemptions_follow() {
        let set = PolicySet::from_yaml(POLICIES, "inline").unwrap();
        let audit = ModeConfig::defaults("aiops-system");
        assert_eq!(
            desired(&set, &audit, "aiops-system", MoveScope::Every),
            Desired::default()
        );

        let mut enforce = ModeConfig::with_mode("aiops-system", Mode::Enforce);
        enforce.exempt_users.insert("alice".into());
        let wanted = desired(&set, &enforce, "aiops-system", MoveScope::Every);
        // The pod rule and its two controller twins.
        assert_eq!(wanted.rules.len(), 3);
        assert_eq!(wanted.policies.len(), 3);
        let (name, policy) = wanted.policies.iter().next().unwrap();
        assert!(name.starts_with("aiops-no-host-network-"), "{name}");
        assert_eq!(policy["metadata"]["labels"][INSTANCE_LABEL], "aiops-system");
        let conditions = policy["spec"]["matchConditions"].as_array().unwrap();
        assert_eq!(
            conditions[0]["expression"],
            "!(request.userInfo.username in [\"alice\"])"
        );
        let binding = &wanted.bindings[name];
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
        assert_eq!(
            binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["aiops-system", "kube-node-lease", "kube-system"])
        );
        // The same input gives the same names: no churn on restart.
        assert_eq!(
            desired(&set, &enforce, "aiops-system", MoveScope::Every),
            wanted
        );

        let mut per_policy = ModeConfig::defaults("aiops-system");
        per_policy
            .policy_modes
            .insert("no-host-network".into(), Mode::Enforce);
        assert_eq!(
            desired(&set, &per_policy, "aiops-system", MoveScope::Every)
                .rules
                .len(),
            3
        );

        // Warn moves too, under a Warn binding and other names.
        let warn = ModeConfig::with_mode("aiops-system", Mode::Warn);
        let warned = desired(&set, &warn, "aiops-system", MoveScope::Every);
        assert_eq!(warned.rules, wanted.rules);
        for binding in warned.bindings.values() {
            assert_eq!(binding["spec"]["validationActions"], json!(["Warn"]));
        }
        assert!(
            warned
                .policies
                .keys()
                .all(|name| !wanted.policies.contains_key(name))
        );
    }

    /// An Audit pattern rule on pods only (no controller twins).
    const AUDITED_PODS: &str = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: pod-names
  annotations: {pod-policies.kyverno.io/autogen-controllers: none}
spec:
  validationFailureAction: Audit
  rules:
  - name: named
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate: {pattern: {metadata: {name: "?*"}}}
"#;

    #[test]
    fn auto_moves_only_rules_whose_resources_leave_the_webhook() {
        let enforce = ModeConfig::with_mode("aiops-system", Mode::Enforce);
        let alone = PolicySet::from_yaml(POLICIES, "inline").unwrap();
        let whole = desired(&alone, &enforce, "i", MoveScope::WholeResources);
        assert_eq!(whole.rules.len(), 3);
        assert_eq!(
            whole.rules,
            desired(&alone, &enforce, "i", MoveScope::Every).rules
        );

        // A rule that stays in the webhook for pods keeps the pod rule
        // there; the controller twins still move.
        let mut per_policy = ModeConfig::with_mode("aiops-system", Mode::Enforce);
        per_policy
            .policy_modes
            .insert("pod-names".into(), Mode::Audit);
        let mut mixed = PolicySet::from_yaml(POLICIES, "inline").unwrap();
        mixed.merge(PolicySet::from_yaml(AUDITED_PODS, "inline").unwrap());
        let moved = desired(&mixed, &per_policy, "i", MoveScope::WholeResources).rules;
        let names: Vec<&str> = moved.iter().map(|(_, rule)| rule.as_str()).collect();
        assert_eq!(moved.len(), 2, "{names:?}");
        assert!(
            names.iter().all(|name| name.starts_with("autogen-")),
            "{names:?}"
        );
        assert_eq!(
            desired(&mixed, &per_policy, "i", MoveScope::Every)
                .rules
                .len(),
            3
        );

        // The project's policies: two JMESPath rules match pods and every
        // controller, so on a default install nothing moves under auto.
        let project = crate::admission::policy_files::load_policies(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
            &[],
        )
        .unwrap();
        assert!(
            desired(&project, &enforce, "i", MoveScope::WholeResources)
                .rules
                .is_empty()
        );
        assert!(
            !desired(&project, &enforce, "i", MoveScope::Every)
                .rules
                .is_empty()
        );
    }
}
