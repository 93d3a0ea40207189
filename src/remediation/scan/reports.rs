//! The PolicyReports of existing objects: the scan writes the same report
//! admission writes (same name, same field manager, operation
//! `BACKGROUND`), rewrites it only when its results change, and deletes
//! the report of an object that passes now or no longer exists. Reports
//! about kinds the scan does not list are left to admission.
use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::inventory::{Existing, ScannedKind};
use super::{Judged, ScanLimits};
use crate::admission::audit_writer::FIELD_MANAGER;
use crate::admission::policy_report::{REPORT_SOURCE, build_report, report_name, report_resource};
use crate::admission::verdict::Violation;

/// The operation a scan's results are recorded under.
pub const BACKGROUND: &str = "BACKGROUND";

/// What a report says, without timestamps: (policy, rule, result, message).
type Results = BTreeSet<(String, String, String, String)>;

/// A report the operator wrote earlier.
struct Stored {
    namespace: String,
    scope_kind: String,
    scope_name: String,
    results: Results,
}

fn results_of(report: &Value) -> Results {
    report
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| {
            let text = |key: &str| r.get(key).and_then(Value::as_str).unwrap_or_default();
            (
                text("policy").to_string(),
                text("rule").to_string(),
                text("result").to_string(),
                text("message").to_string(),
            )
        })
        .collect()
}

fn wanted(violations: &[Violation]) -> Results {
    violations
        .iter()
        .map(|v| {
            (
                v.policy.clone(),
                v.rule.clone(),
                if v.errored { "error" } else { "fail" }.to_string(),
                v.message.clone(),
            )
        })
        .collect()
}

/// The operator's namespaced reports, by name and namespace; `None` when
/// they cannot all be read (then nothing is deleted this scan).
async fn stored_reports(
    api: &Api<DynamicObject>,
    limits: ScanLimits,
) -> Option<HashMap<(String, String), Stored>> {
    let mut found = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default()
            .labels(&format!("app.kubernetes.io/managed-by={REPORT_SOURCE}"))
            .limit(limits.page_size.max(1));
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = match api.list(&params).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "cannot list PolicyReports; none is deleted this scan");
                return None;
            }
        };
        for item in page.items {
            if found.len() >= limits.max_objects {
                return None;
            }
            let value = serde_json::to_value(&item).unwrap_or(Value::Null);
            let scope = |key: &str| {
                value
                    .pointer(&format!("/scope/{key}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let key = (
                item.metadata.namespace.clone().unwrap_or_default(),
                item.metadata.name.clone().unwrap_or_default(),
            );
            found.insert(
                key,
                Stored {
                    namespace: item.metadata.namespace.clone().unwrap_or_default(),
                    scope_kind: scope("kind"),
                    scope_name: scope("name"),
                    results: results_of(&value),
                },
            );
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Some(found);
        }
    }
}

/// Writes changed reports and deletes stale ones; returns (written, deleted).
pub async fn reconcile(
    client: &kube::Client,
    judged: &[Judged],
    existing: &Existing,
    limits: ScanLimits,
) -> (usize, usize) {
    let resource = report_resource(true);
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let stored = stored_reports(&all, limits).await;
    let mut written = 0;
    let mut clean: BTreeSet<(String, String)> = BTreeSet::new();
    for item in judged {
        let object = &item.object;
        let subject = ObjectReference {
            api_version: Some(object.api_version.into()),
            kind: Some(object.kind.into()),
            name: Some(object.name.clone()),
            namespace: Some(object.namespace.clone()),
            uid: Some(object.uid.clone()),
            ..ObjectReference::default()
        };
        let Some(name) = report_name(&subject) else {
            continue;
        };
        if item.violations.is_empty() {
            clean.insert((object.namespace.clone(), name));
            continue;
        }
        let same = stored
            .as_ref()
            .and_then(|s| s.get(&(object.namespace.clone(), name.clone())))
            .is_some_and(|s| s.results == wanted(&item.violations));
        if same {
            continue;
        }
        let report = build_report(
            &name,
            &subject,
            BACKGROUND,
            &item.violations,
            SystemTime::now(),
        );
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &object.namespace, &resource);
        match api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&report),
            )
            .await
        {
            Ok(_) => written += 1,
            Err(error) => {
                tracing::warn!(%error, report = %name, namespace = %object.namespace, "cannot write the PolicyReport")
            }
        }
    }
    let Some(stored) = stored else {
        return (written, 0);
    };
    let mut deleted = 0;
    for ((namespace, name), report) in &stored {
        if !ScannedKind::covers(&report.scope_kind) {
            continue;
        }
        let passes = clean.contains(&(namespace.clone(), name.clone()));
        let gone = !existing.incomplete
            && !existing.contains(&report.scope_kind, &report.namespace, &report.scope_name);
        if !passes && !gone {
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                tracing::warn!(%error, report = %name, %namespace, "cannot delete the stale PolicyReport")
            }
        }
    }
    (written, deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::modes::Mode;

    #[test]
    fn a_report_is_unchanged_when_its_results_are_the_same_whatever_the_time() {
        let violations = vec![Violation {
            policy: "disallow-latest-tag".into(),
            rule: "autogen-validate-image-tag".into(),
            message: "pin it".into(),
            mode: Mode::Audit,
            errored: false,
        }];
        let subject = ObjectReference {
            kind: Some("Deployment".into()),
            name: Some("web".into()),
            namespace: Some("shop".into()),
            ..ObjectReference::default()
        };
        let earlier = build_report(
            "r",
            &subject,
            BACKGROUND,
            &violations,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(results_of(&earlier), wanted(&violations));
        let mut other = violations.clone();
        other[0].message = "another".into();
        assert_ne!(results_of(&earlier), wanted(&other));
    }
}
