//! The admission decision for one review: exemptions, policy evaluation,
//! mode resolution, metrics, queuing audit records, and the response.
//! Synchronous and free of I/O: side effects only go into the audit queue.
use std::time::SystemTime;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::admission::{AdmissionResponse, Operation};
use serde_json::Value;

use crate::admission::audit_writer::AuditRecord;
use crate::admission::metrics::{ReviewResult, Stage, StageClock};
use crate::admission::modes::{Mode, ModeConfig};
use crate::admission::namespace_labels::NamespaceEntry;
use crate::admission::review::{Request, describe_subject};
use crate::admission::state::AppState;
use crate::admission::verdict::Verdict;
use crate::policy::{self, EvalInput, SelectedRules};

/// The answer to a review and how to count it.
pub struct Admission {
    pub response: AdmissionResponse,
    pub result: ReviewResult,
}

/// Decides a `/validate` review; `clock` times the match and evaluate
/// stages.
pub fn validate(state: &AppState, request: &Request, clock: &mut StageClock) -> Admission {
    let scope = RequestScope::enter(request, "validate");
    let modes = state.modes.current();
    if let Some(allowed) = exempt(&modes, request) {
        return allowed;
    }
    let Some(input) = eval_input(state, request) else {
        // Nothing to judge (e.g. CONNECT): allow.
        return allowed(request);
    };
    let input = with_cluster_data(state, input.as_eval_input());
    let policies = state.policies.current();
    let mut selected = policies.select(&input);
    let api_server_rules = state.api_server_rules.current();
    if !api_server_rules.is_empty() {
        // Decided by the API server's own admission policies already.
        selected.retain(|policy, rule| {
            !api_server_rules.contains(&(policy.to_string(), rule.to_string()))
        });
    }
    clock.lap(Stage::Match);
    let admission = judge(state, &scope, &modes, &selected, &input);
    clock.lap(Stage::Evaluate);
    admission
}

/// Evaluates the selected rules and turns their outcomes into the answer.
fn judge(
    state: &AppState,
    scope: &RequestScope<'_>,
    modes: &ModeConfig,
    selected: &SelectedRules,
    input: &EvalInput,
) -> Admission {
    let request = scope.request;
    let outcomes = selected.validate(input);
    let verdict = Verdict::assess(&outcomes, modes);
    for violation in &verdict.violations {
        state
            .metrics
            .violation(&violation.policy, &violation.rule, violation.mode);
    }

    let mut response = AdmissionResponse::from(&request.typed);
    let warnings = verdict.warnings();
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    if verdict.denies()
        && let Some(message) = verdict.deny_message(&describe_subject(request))
    {
        scope.log(|| tracing::info!(violations = verdict.violations.len(), "request denied"));
        return Admission {
            response: response.deny(message),
            result: ReviewResult::Denied,
        };
    }

    let audited: Vec<_> = verdict.in_mode(Mode::Audit).cloned().collect();
    // A dry run is evaluated but leaves no trace in the cluster.
    if !audited.is_empty() && !request.dry_run {
        state.audit.submit(AuditRecord {
            subject: object_reference(request),
            operation: operation_name(&request.operation).to_string(),
            violations: audited,
            observed_at: SystemTime::now(),
        });
    }
    Admission {
        response,
        result: ReviewResult::Allowed,
    }
}

/// Decides a `/mutate` review: the JSON patch of the mutate rules that apply.
///
/// Mutation is a convenience, never the enforcement point (validation runs
/// after it), so an engine error admits the object unchanged with a warning.
pub fn mutate(state: &AppState, request: &Request, _clock: &mut StageClock) -> Admission {
    let scope = RequestScope::enter(request, "mutate");
    if let Some(allowed) = exempt(&state.modes.current(), request) {
        return allowed;
    }
    let Some(input) = eval_input(state, request) else {
        return allowed(request);
    };
    let response = AdmissionResponse::from(&request.typed);
    let input = with_cluster_data(state, input.as_eval_input());
    let operations = match state.policies.current().mutate(&input) {
        Ok(operations) => operations,
        Err(error) => {
            scope.log(|| tracing::warn!(%error, "mutation skipped"));
            return with_warning(
                response,
                format!("aiops-operator: mutation skipped: {error}"),
            );
        }
    };
    if operations.is_empty() {
        return Admission {
            response,
            result: ReviewResult::Allowed,
        };
    }
    let count = operations.len();
    let patched = to_kube_patch(&operations)
        .map_err(|e| e.to_string())
        .and_then(|patch| {
            response
                .clone()
                .with_patch(patch)
                .map_err(|e| e.to_string())
        });
    match patched {
        Ok(patched) => {
            scope.log(|| tracing::info!(operations = count, "request mutated"));
            Admission {
                response: patched,
                result: ReviewResult::Allowed,
            }
        }
        Err(error) => {
            scope.log(|| tracing::warn!(%error, "mutation patch could not be encoded"));
            with_warning(
                response,
                format!("aiops-operator: mutation skipped: {error}"),
            )
        }
    }
}

/// True when deciding this `/validate` review reads the cluster (a
/// selected rule has a `configMap`/`apiCall` context entry): the caller
/// then decides it off the async workers, since those reads block.
pub fn validate_reads_cluster(state: &AppState, request: &Request) -> bool {
    let policies = state.policies.current();
    // Most policy sets read nothing: no selection needed to know.
    if state.cluster_data.is_none() || !policies.reads_cluster() {
        return false;
    }
    if exempt(&state.modes.current(), request).is_some() {
        return false;
    }
    let Some(input) = eval_input(state, request) else {
        return false;
    };
    policies.select(&input.as_eval_input()).reads_cluster()
}

/// [`validate_reads_cluster`] for `/mutate`: any policy that reads the
/// cluster counts (mutate rules are not selected ahead of evaluation).
pub fn mutate_reads_cluster(state: &AppState, request: &Request) -> bool {
    state.cluster_data.is_some()
        && state.policies.current().reads_cluster()
        && exempt(&state.modes.current(), request).is_none()
}

fn with_cluster_data<'a>(state: &'a AppState, mut input: EvalInput<'a>) -> EvalInput<'a> {
    if let Some(cluster) = &state.cluster_data {
        input.cluster_data = Some(cluster.as_ref() as &dyn policy::ClusterData);
    }
    input
}

/// The engine speaks json-patch 5 while kube's `with_patch` takes json-patch
/// 4; both are RFC 6902 on the wire, so convert through JSON.
fn to_kube_patch(
    operations: &[json_patch::PatchOperation],
) -> Result<kube_json_patch::Patch, serde_json::Error> {
    serde_json::to_value(operations).and_then(serde_json::from_value)
}

/// The `admission` span: the request's identity on every log line of its decision.
macro_rules! request_span {
    ($level:expr, $request:expr, $endpoint:expr) => {
        tracing::span!(
            $level,
            "admission",
            endpoint = $endpoint,
            uid = %$request.uid,
            kind = %$request.kind.kind,
            namespace = $request.namespace.as_deref().unwrap_or_default(),
            name = %$request.name,
            operation = operation_name(&$request.operation),
            dry_run = $request.dry_run,
        )
    };
}

/// The logging scope of one decision.
///
/// The decision runs in a debug-level `admission` span, so at debug every
/// event inside it (cluster lookups included) names the request. At the
/// production level (info) that span is disabled and costs nothing: an
/// enabled span formats its seven fields for every review, about 9 K
/// instructions or 4 % of a decision (callgrind, bench reviews), for the
/// few reviews that log anything. Those events go through [`Self::log`],
/// which puts them in an info-level span with the same fields, so their
/// lines read as before.
struct RequestScope<'r> {
    request: &'r Request,
    endpoint: &'static str,
    decision: tracing::span::EnteredSpan,
}

impl<'r> RequestScope<'r> {
    fn enter(request: &'r Request, endpoint: &'static str) -> Self {
        RequestScope {
            request,
            endpoint,
            decision: request_span!(tracing::Level::DEBUG, request, endpoint).entered(),
        }
    }

    /// Emits the event(s) of `log` with the request's identity.
    fn log(&self, log: impl FnOnce()) {
        if self.decision.is_disabled() {
            request_span!(tracing::Level::INFO, self.request, self.endpoint).in_scope(log);
        } else {
            log();
        }
    }
}

fn allowed(request: &Request) -> Admission {
    Admission {
        response: AdmissionResponse::from(&request.typed),
        result: ReviewResult::Allowed,
    }
}

fn with_warning(mut response: AdmissionResponse, warning: String) -> Admission {
    response.warnings.get_or_insert_with(Vec::new).push(warning);
    Admission {
        response,
        result: ReviewResult::Allowed,
    }
}

/// Allows the request untouched when its namespace, user or group is exempt.
fn exempt(modes: &ModeConfig, request: &Request) -> Option<Admission> {
    let groups = request.user_info.groups.as_deref().unwrap_or_default();
    let exemption = modes.exemption(
        request.namespace.as_deref(),
        request.user_info.username.as_deref(),
        groups,
    )?;
    tracing::debug!(exemption = exemption.kind(), "request exempt from policies");
    Some(Admission {
        response: AdmissionResponse::from(&request.typed),
        result: ReviewResult::Exempt,
    })
}

/// The engine's view of a request, owning what [`EvalInput`] borrows.
struct OwnedInput<'a> {
    resource: &'a Value,
    old_resource: Option<&'a Value>,
    operation: &'a Operation,
    username: String,
    groups: Vec<String>,
    request_fields: &'a Value,
    /// The request's namespace from the watched cache, for its labels.
    namespace: Option<NamespaceEntry>,
}

impl OwnedInput<'_> {
    fn as_eval_input(&self) -> EvalInput<'_> {
        let mut input = EvalInput::for_resource(self.resource);
        input.old_resource = self.old_resource;
        input.operation = policy_operation(self.operation);
        input.user_info = policy::UserInfo {
            username: self.username.clone(),
            groups: self.groups.clone(),
            roles: Vec::new(),
            cluster_roles: Vec::new(),
        };
        input.admission_info = Some(self.request_fields);
        input.namespace_labels = self.namespace.as_ref().and_then(NamespaceEntry::labels);
        input
    }
}

/// The object to judge: the new object, or for DELETE the old one. `None`
/// when the request carries neither.
fn eval_input<'a>(state: &AppState, request: &'a Request) -> Option<OwnedInput<'a>> {
    let old_resource = request.old_object.as_ref();
    let resource = request.object.as_ref().or(old_resource)?;
    Some(OwnedInput {
        resource,
        old_resource,
        operation: &request.operation,
        username: request.user_info.username.clone().unwrap_or_default(),
        groups: request.user_info.groups.clone().unwrap_or_default(),
        request_fields: &request.fields,
        namespace: state
            .namespaces
            .as_ref()
            .zip(request.namespace.as_deref().filter(|ns| !ns.is_empty()))
            .and_then(|(namespaces, name)| namespaces.get(name)),
    })
}

fn policy_operation(operation: &Operation) -> policy::Operation {
    match operation {
        Operation::Create => policy::Operation::Create,
        Operation::Update => policy::Operation::Update,
        Operation::Delete => policy::Operation::Delete,
        Operation::Connect => policy::Operation::Connect,
    }
}

fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Reference to the reviewed object for Events and PolicyReports. On CREATE
/// the object has no uid yet, and with generateName not even a final name.
fn object_reference(request: &Request) -> ObjectReference {
    let name = Some(request.name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| request.object_meta_str("name").map(String::from));
    let api_version = if request.kind.group.is_empty() {
        request.kind.version.clone()
    } else {
        format!("{}/{}", request.kind.group, request.kind.version)
    };
    ObjectReference {
        api_version: Some(api_version),
        kind: Some(request.kind.kind.clone()),
        name,
        namespace: request.namespace.clone().filter(|ns| !ns.is_empty()),
        uid: request.object_meta_str("uid").map(String::from),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::admission::audit_writer::AuditSink;
    use crate::admission::metrics::Metrics;
    use crate::admission::namespace_labels::NamespaceLabels;
    use crate::admission::policy_files::load_policies;
    use crate::admission::review::{parse_review, tests::pod_review};
    use crate::admission::state::{ModeHandle, PolicyHandle};
    use k8s_openapi::api::core::v1::Namespace;
    use kube::core::PartialObjectMeta;
    use kube::runtime::{reflector, watcher};

    fn state(mode: Mode) -> (AppState, tokio::sync::mpsc::Receiver<AuditRecord>) {
        let policies = load_policies(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        let metrics = Arc::new(Metrics::new());
        let (sink, rx) = AuditSink::bounded(8, Arc::clone(&metrics));
        let state = AppState::new(
            PolicyHandle::new(policies),
            ModeHandle::new(ModeConfig::with_mode("aiops-system", mode)),
            metrics,
            sink,
        );
        (state, rx)
    }

    fn privileged(dry_run: bool, namespace: &str) -> Request {
        let mut review = pod_review(serde_json::json!({"containers": [{
            "name": "app", "image": "app:1.0", "securityContext": {"privileged": true}
        }]}));
        review["request"]["dryRun"] = dry_run.into();
        review["request"]["namespace"] = namespace.into();
        parse_review(review.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn decide(state: &AppState, request: &Request) -> Admission {
        validate(state, request, &mut state.metrics.stage_clock(true))
    }

    #[test]
    fn audit_admits_warns_and_queues_a_record() {
        let (state, mut rx) = state(Mode::Audit);
        let admission = decide(&state, &privileged(false, "default"));
        assert!(admission.response.allowed);
        assert_eq!(admission.result, ReviewResult::Allowed);
        let warnings = admission.response.warnings.unwrap_or_default();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("disallow-privileged-containers/")),
            "{warnings:?}"
        );
        let record = rx
            .try_recv()
            .unwrap_or_else(|e| panic!("no record queued: {e}"));
        assert_eq!(record.operation, "CREATE");
        assert_eq!(record.subject.kind.as_deref(), Some("Pod"));
        assert_eq!(record.subject.name.as_deref(), Some("web"));
        assert!(record.violations.iter().all(|v| v.mode == Mode::Audit));
    }

    /// Everything logged at `level` while `run` runs, as text.
    fn logged_at(level: tracing::Level, run: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let bytes = buffer.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The line that logs the denial, failing the test when there is none.
    fn denial_line(log: &str) -> &str {
        log.lines()
            .find(|line| line.contains("request denied"))
            .unwrap_or_else(|| panic!("no denial logged: {log}"))
    }

    #[test]
    fn a_denial_is_logged_with_the_request_and_an_admission_logs_nothing() {
        let (enforcing, _rx) = state(Mode::Enforce);
        let log = logged_at(tracing::Level::INFO, || {
            decide(&enforcing, &privileged(false, "team-a"));
        });
        let denial = denial_line(&log);
        for field in [
            "endpoint=\"validate\"",
            "kind=Pod",
            "namespace=\"team-a\"",
            "name=web",
            "operation=\"CREATE\"",
        ] {
            assert!(denial.contains(field), "{field} missing: {denial}");
        }

        let (audit_state, _rx) = state(Mode::Audit);
        let log = logged_at(tracing::Level::INFO, || {
            decide(&audit_state, &privileged(false, "team-a"));
        });
        assert_eq!(log, "", "an admitted review logs nothing at info");

        // At debug the whole decision runs in the request's span, once.
        let log = logged_at(tracing::Level::DEBUG, || {
            decide(&enforcing, &privileged(false, "team-a"));
        });
        let denial = denial_line(&log);
        assert_eq!(denial.matches("admission{").count(), 1, "{denial}");
    }

    #[test]
    fn dry_run_is_evaluated_but_records_nothing() {
        let (state, mut rx) = state(Mode::Audit);
        let admission = decide(&state, &privileged(true, "default"));
        assert!(admission.response.warnings.is_some());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn warn_admits_with_warnings_and_records_nothing() {
        let (state, mut rx) = state(Mode::Warn);
        let admission = decide(&state, &privileged(false, "default"));
        assert!(admission.response.allowed);
        let warnings = admission.response.warnings.unwrap_or_default();
        assert!(
            warnings.iter().all(|w| w.starts_with("[Warn] ")),
            "{warnings:?}"
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn enforce_denies_and_records_nothing() {
        let (state, mut rx) = state(Mode::Enforce);
        let admission = decide(&state, &privileged(false, "default"));
        assert!(!admission.response.allowed);
        assert_eq!(admission.result, ReviewResult::Denied);
        assert!(
            admission
                .response
                .result
                .message
                .contains("disallow-privileged-containers/")
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn exempt_namespace_is_not_evaluated() {
        let (state, _rx) = state(Mode::Enforce);
        let admission = decide(&state, &privileged(false, "kube-system"));
        assert!(admission.response.allowed);
        assert_eq!(admission.result, ReviewResult::Exempt);
        assert!(admission.response.warnings.is_none());
    }

    /// Answers every ConfigMap with `data`; no API paths.
    struct FixedConfigMaps(serde_json::Value);

    impl policy::ClusterData for FixedConfigMaps {
        fn config_map(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<Value, policy::ClusterDataError> {
            Ok(
                serde_json::json!({"metadata": {"name": name, "namespace": namespace},
                "data": self.0}),
            )
        }

        fn api_get(&self, path: &str) -> Result<Value, policy::ClusterDataError> {
            Err(policy::ClusterDataError::NotFound {
                what: format!("GET {path}"),
            })
        }
    }

    /// Validates `owner: <data.owner>` labels and adds them.
    const OWNER_POLICIES: &str = "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\n\
        metadata: {name: owners}\nspec:\n  validationFailureAction: Enforce\n  rules:\n\
        \x20 - name: owner-label\n    match: {any: [{resources: {kinds: [Pod], selector: {matchLabels: {checked: \"yes\"}}}}]}\n\
        \x20   context:\n    - name: owners\n      configMap: {name: owners, namespace: platform}\n\
        \x20   validate:\n      message: \"owner must be {{ owners.data.owner }}\"\n\
        \x20     pattern: {metadata: {labels: {owner: \"{{ owners.data.owner }}\"}}}\n\
        \x20 - name: add-owner\n    match: {any: [{resources: {kinds: [Pod]}}]}\n\
        \x20   context:\n    - name: owners\n      configMap: {name: owners, namespace: platform}\n\
        \x20   mutate:\n      patchStrategicMerge: {metadata: {labels: {+(owner): \"{{ owners.data.owner }}\"}}}\n";

    fn owner_state(cluster: bool) -> AppState {
        let policies = policy::PolicySet::from_yaml(OWNER_POLICIES, "inline")
            .unwrap_or_else(|e| panic!("{e}"));
        let metrics = Arc::new(Metrics::new());
        let mut state = AppState::new(
            PolicyHandle::new(policies),
            ModeHandle::new(ModeConfig::with_mode("aiops-system", Mode::Enforce)),
            Arc::clone(&metrics),
            AuditSink::disabled(metrics),
        );
        if cluster {
            state.cluster_data = Some(Arc::new(FixedConfigMaps(
                serde_json::json!({"owner": "sre"}),
            )));
        }
        state
    }

    fn labelled_pod(labels: serde_json::Value, namespace: &str) -> Request {
        let mut review =
            pod_review(serde_json::json!({"containers": [{"name": "a", "image": "a:1"}]}));
        review["request"]["object"]["metadata"]["labels"] = labels;
        review["request"]["namespace"] = namespace.into();
        parse_review(review.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn context_lookups_use_the_state_cluster_data() {
        let state = owner_state(true);
        let wrong = labelled_pod(
            serde_json::json!({"checked": "yes", "owner": "dev"}),
            "default",
        );
        assert!(validate_reads_cluster(&state, &wrong));
        let admission = decide(&state, &wrong);
        assert!(!admission.response.allowed);
        assert!(
            admission
                .response
                .result
                .message
                .contains("owner must be sre"),
            "{}",
            admission.response.result.message
        );
        let right = labelled_pod(
            serde_json::json!({"checked": "yes", "owner": "sre"}),
            "default",
        );
        assert!(decide(&state, &right).response.allowed);

        // Not selected, exempt, or no cluster: decided inline.
        let unchecked = labelled_pod(serde_json::json!({}), "default");
        assert!(!validate_reads_cluster(&state, &unchecked));
        assert!(!validate_reads_cluster(
            &state,
            &labelled_pod(serde_json::json!({"checked": "yes"}), "kube-system")
        ));
        assert!(mutate_reads_cluster(&state, &unchecked));
        let patched = mutate(&state, &unchecked, &mut state.metrics.stage_clock(false));
        let patch =
            String::from_utf8(patched.response.patch.unwrap_or_default()).unwrap_or_default();
        assert!(patch.contains("\"sre\""), "{patch}");

        let offline = owner_state(false);
        assert!(!validate_reads_cluster(&offline, &wrong));
        assert!(!mutate_reads_cluster(&offline, &unchecked));
        let admission = decide(&offline, &right);
        assert!(
            !admission.response.allowed,
            "no cluster: the rule errors and Enforce denies"
        );
        assert!(
            admission
                .response
                .result
                .message
                .contains("needs cluster access"),
            "{}",
            admission.response.result.message
        );
    }

    #[test]
    fn unchanged_violation_does_not_block_an_update() {
        // E.g. a finalizer removal on a pod admitted while in Audit mode.
        let (state, _rx) = state(Mode::Enforce);
        let mut review = pod_review(serde_json::json!({"containers": [{
            "name": "app", "image": "app:1.0", "securityContext": {"privileged": true}
        }]}));
        review["request"]["operation"] = "UPDATE".into();
        review["request"]["oldObject"] = review["request"]["object"].clone();
        review["request"]["object"]["metadata"]["labels"] = serde_json::json!({"touched": "yes"});
        let request = parse_review(review.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let admission = decide(&state, &request);
        assert!(
            admission.response.allowed,
            "{:?}",
            admission.response.result.message
        );
    }

    /// Denies unlabelled pods in `tier: strict` namespaces (a selector) and
    /// every pod in a `tier: frozen` one (CEL's `namespaceObject`).
    const NAMESPACE_POLICIES: &str = "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\n\
        metadata: {name: tiers}\nspec:\n  validationFailureAction: Enforce\n  rules:\n\
        \x20 - name: strict-needs-team\n    match: {any: [{resources: {kinds: [Pod], namespaceSelector: {matchLabels: {tier: strict}}}}]}\n\
        \x20   validate:\n      message: team label required\n      pattern: {metadata: {labels: {team: \"?*\"}}}\n\
        \x20 - name: frozen\n    match: {any: [{resources: {kinds: [Pod]}}]}\n\
        \x20   validate:\n      cel:\n        expressions:\n\
        \x20       - expression: \"namespaceObject.metadata.?labels.?tier.orValue('') != 'frozen'\"\n\
        \x20         message: namespace is frozen\n";

    fn namespace(name: &str, tier: Option<&str>) -> PartialObjectMeta<Namespace> {
        let mut meta = PartialObjectMeta::<Namespace>::default();
        meta.metadata.name = Some(name.to_string());
        meta.metadata.labels = tier.map(|tier| [("tier".to_string(), tier.to_string())].into());
        meta
    }

    #[test]
    fn namespace_labels_come_from_the_watched_cache() {
        let policies = policy::PolicySet::from_yaml(NAMESPACE_POLICIES, "inline")
            .unwrap_or_else(|e| panic!("{e}"));
        let metrics = Arc::new(Metrics::new());
        let mut state = AppState::new(
            PolicyHandle::new(policies),
            ModeHandle::new(ModeConfig::with_mode("aiops-system", Mode::Enforce)),
            Arc::clone(&metrics),
            AuditSink::disabled(metrics),
        );
        let unlabelled = labelled_pod(serde_json::json!({}), "strict");
        // No cache (no cluster): the selector sees no labels.
        assert!(decide(&state, &unlabelled).response.allowed);

        let (store, mut writer) = reflector::store();
        for ns in [
            namespace("strict", Some("strict")),
            namespace("frozen", Some("frozen")),
            namespace("plain", None),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(ns));
        }
        state.namespaces = Some(NamespaceLabels::from_store(store));

        let denied = decide(&state, &unlabelled);
        assert!(!denied.response.allowed);
        assert!(
            denied
                .response
                .result
                .message
                .contains("team label required"),
            "{}",
            denied.response.result.message
        );
        let teamed = labelled_pod(serde_json::json!({"team": "web"}), "strict");
        assert!(decide(&state, &teamed).response.allowed);
        assert!(
            decide(&state, &labelled_pod(serde_json::json!({}), "plain"))
                .response
                .allowed
        );
        // Unknown to the cache: no labels, as without one.
        assert!(
            decide(&state, &labelled_pod(serde_json::json!({}), "new"))
                .response
                .allowed
        );

        let frozen = decide(&state, &teamed_in("frozen"));
        assert!(!frozen.response.allowed);
        assert!(
            frozen
                .response
                .result
                .message
                .contains("namespace is frozen"),
            "{}",
            frozen.response.result.message
        );
    }

    fn teamed_in(namespace: &str) -> Request {
        labelled_pod(serde_json::json!({"team": "web"}), namespace)
    }
}
