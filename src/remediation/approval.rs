//! Approval binding: a human's `spec.approved: true` approves exactly the
//! proposal present at that moment, and nothing else.
//!
//! The operator's admission webhook sees every change to a Remediation.
//! When `approved` turns true it records who approved which proposal hash
//! in `spec.approval`, signed with the operator's key. The controller acts
//! only on an approval whose signature verifies and whose hash matches the
//! current proposal, so every other path fails closed:
//! - approving before a proposal exists is refused at admission;
//! - a proposal that changed after approval no longer matches its hash;
//! - the operator's own identity can never approve;
//! - an approval written around the webhook carries no valid signature.
use hmac::{Hmac, Mac};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sha2::Sha256;

use std::collections::BTreeSet;

use super::auto_approval::settings::AUTO_APPROVER_PREFIX;
use super::crd::{ApprovalRecord, Phase, Remediation};

type HmacSha256 = Hmac<Sha256>;

/// Usernames never contain a NUL byte, so this cannot collide with an approver.
const PROPOSAL_MARKER: &str = "\0proposed-by-aiops-operator";

/// Whether the proposal in `status` is intact and was issued by the operator.
pub fn proposal_is_authentic(remediation: &Remediation, key: &ApprovalKey) -> Result<(), String> {
    let status = remediation.status.as_ref().ok_or("no status")?;
    let proposal = status.proposal.as_ref().ok_or("no proposal")?;
    if proposal.content_hash() != proposal.hash {
        return Err(
            "the proposal does not match its hash: it was edited after it was proposed".into(),
        );
    }
    let uid = remediation.metadata.uid.as_deref().unwrap_or_default();
    if !key.verify(
        uid,
        &proposal.hash,
        PROPOSAL_MARKER,
        &status.proposal_signature,
    ) {
        return Err(
            "the proposal was not issued by the operator (signature does not verify)".into(),
        );
    }
    Ok(())
}

/// The operator's secret for signing approvals (shared by all replicas
/// through a Secret).
#[derive(Clone)]
pub struct ApprovalKey(Vec<u8>);

impl std::fmt::Debug for ApprovalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApprovalKey(..)") // never print the key
    }
}

impl ApprovalKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        ApprovalKey(bytes)
    }

    fn mac(
        &self,
        remediation_uid: &str,
        proposal_hash: &str,
        approver: &str,
    ) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(&self.0).ok()?;
        // Length-prefixed fields, so no two triples share a message.
        for field in [remediation_uid, proposal_hash, approver] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        Some(mac)
    }

    /// Signs a proposal the operator itself issued (the "approver" slot holds
    /// a fixed marker no Kubernetes username can have).
    pub fn sign_proposal(&self, remediation_uid: &str, proposal_hash: &str) -> String {
        self.sign(remediation_uid, proposal_hash, PROPOSAL_MARKER)
    }

    pub fn sign(&self, remediation_uid: &str, proposal_hash: &str, approver: &str) -> String {
        self.mac(remediation_uid, proposal_hash, approver)
            .map(|m| hex::encode(m.finalize().into_bytes()))
            .unwrap_or_default()
    }

    /// A keyed digest of a revision's pod template (as canonical JSON),
    /// which a reference to that revision pins: it changes with any value
    /// in the template, and unlike a plain hash it gives no one without
    /// the key a way to test guesses of a secret value against it.
    pub fn revision_digest(&self, template: &serde_json::Value) -> String {
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.0) else {
            return String::new();
        };
        // A purpose prefix no proposal signature's message starts with.
        mac.update(b"\0revision-template\0");
        mac.update(template.to_string().as_bytes());
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Constant-time check of a signature.
    pub fn verify(
        &self,
        remediation_uid: &str,
        proposal_hash: &str,
        approver: &str,
        signature: &str,
    ) -> bool {
        let (Some(mac), Ok(bytes)) = (
            self.mac(remediation_uid, proposal_hash, approver),
            hex::decode(signature),
        ) else {
            return false;
        };
        mac.verify_slice(&bytes).is_ok()
    }
}

/// What admission does with a create or update of a Remediation.
#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalDecision {
    Allow,
    /// Allow, and write this record into `spec.approval`.
    Record(ApprovalRecord),
    /// Allow, and remove `spec.approval` (the approval was withdrawn).
    Withdraw,
    Deny(String),
}

/// Who is asking, from the admission request.
#[derive(Debug, Clone)]
pub struct Requester<'a> {
    pub username: &'a str,
    pub groups: &'a [String],
}

/// Decides a Remediation create (`old` is None) or update.
/// `operator_identity` is the operator's own username
/// (`system:serviceaccount:<ns>:<sa>`).
/// `auto_rules` are the auto-approval rules configured now: the only
/// approvals the operator's own identity may write (see
/// [`crate::remediation::auto_approval`]).
pub fn review_remediation_change(
    old: Option<&Remediation>,
    new: &Remediation,
    who: &Requester<'_>,
    operator_identity: &str,
    auto_rules: &BTreeSet<&str>,
    key: &ApprovalKey,
    now: Time,
) -> ApprovalDecision {
    let Some(old) = old else {
        if new.spec.approved || new.spec.approval.is_some() {
            return ApprovalDecision::Deny(
                "a Remediation cannot be created approved: approve it after its proposal is shown"
                    .into(),
            );
        }
        return ApprovalDecision::Allow;
    };
    let is_operator = who.username == operator_identity;
    let operator_approves = is_operator && !old.spec.approved && new.spec.approved;

    if new.spec.approval != old.spec.approval {
        // Only the operator may clear a record (when a proposal is
        // regenerated) or write one (an auto-approval, checked below).
        let clears = is_operator && new.spec.approval.is_none();
        if !clears && !operator_approves {
            return ApprovalDecision::Deny(
                "spec.approval is written by the operator when you set spec.approved; do not edit it".into(),
            );
        }
    }

    match (old.spec.approved, new.spec.approved) {
        (false, true) => {
            let approver = if is_operator {
                match auto_approval_rule(new, auto_rules) {
                    Ok(record) => record.approved_by.clone(),
                    Err(refusal) => return ApprovalDecision::Deny(refusal),
                }
            } else if who.username.starts_with(AUTO_APPROVER_PREFIX) {
                return ApprovalDecision::Deny(format!(
                    "usernames starting with {AUTO_APPROVER_PREFIX} are the operator's auto-approval rules"
                ));
            } else {
                who.username.to_string()
            };
            // The status the approver saw is the stored one: status changes
            // are ignored on the main resource, so `old` is authoritative.
            let status = old.status.clone().unwrap_or_default();
            let Some(proposal) = status.proposal.as_ref() else {
                return ApprovalDecision::Deny(
                    "there is no proposal to approve yet; wait for phase Proposed".into(),
                );
            };
            if status.phase != Phase::Proposed {
                return ApprovalDecision::Deny(format!(
                    "only a Proposed remediation can be approved; this one is {:?}",
                    status.phase
                ));
            }
            if proposal.actions.is_empty() {
                return ApprovalDecision::Deny(
                    "this proposal is a diagnosis with no actions; there is nothing to approve"
                        .into(),
                );
            }
            if let Err(refusal) = proposal_is_authentic(old, key) {
                return ApprovalDecision::Deny(format!("cannot approve: {refusal}"));
            }
            let validated = status
                .dry_run
                .as_ref()
                .is_some_and(|d| d.result == "Succeeded" && d.proposal_hash == proposal.hash);
            if !validated {
                return ApprovalDecision::Deny(
                    "the proposal has not passed its dry run; it cannot be approved".into(),
                );
            }
            let uid = old.metadata.uid.clone().unwrap_or_default();
            if let Some(record) = new.spec.approval.as_ref().filter(|_| is_operator) {
                // The operator's record is kept as written, once it is shown
                // to bind this proposal under the operator's key.
                let binds = record.proposal_hash == proposal.hash
                    && key.verify(&uid, &proposal.hash, &approver, &record.signature);
                return if binds {
                    ApprovalDecision::Allow
                } else {
                    ApprovalDecision::Deny(
                        "the auto-approval record does not bind the current proposal".into(),
                    )
                };
            }
            ApprovalDecision::Record(ApprovalRecord {
                signature: key.sign(&uid, &proposal.hash, &approver),
                approved_by: approver,
                proposal_hash: proposal.hash.clone(),
                approved_at: now,
            })
        }
        (true, false) if new.spec.approval.is_some() => ApprovalDecision::Withdraw,
        _ => ApprovalDecision::Allow,
    }
}

/// The record of an approval the operator writes: it must name a rule
/// configured now.
fn auto_approval_rule<'a>(
    new: &'a Remediation,
    auto_rules: &BTreeSet<&str>,
) -> Result<&'a ApprovalRecord, String> {
    let own = || "the operator cannot approve its own proposals".to_string();
    let record = new.spec.approval.as_ref().ok_or_else(own)?;
    let rule = record
        .approved_by
        .strip_prefix(AUTO_APPROVER_PREFIX)
        .ok_or_else(own)?;
    if !auto_rules.contains(rule) {
        return Err(format!(
            "auto-approval rule {rule:?} is not configured (remediate.autoApprove)"
        ));
    }
    Ok(record)
}

/// The controller's check before applying: the approval is present,
/// signed by us, by someone other than us, for the current proposal.
pub fn bound_approval<'a>(
    remediation: &'a Remediation,
    operator_identity: &str,
    key: &ApprovalKey,
) -> Result<&'a ApprovalRecord, String> {
    if !remediation.spec.approved {
        return Err("not approved".into());
    }
    let record = remediation.spec.approval.as_ref().ok_or(
        "approved without an approval record (the operator's webhook did not admit this approval); \
         set approved to false and approve again",
    )?;
    let uid = remediation.metadata.uid.as_deref().unwrap_or_default();
    if !key.verify(
        uid,
        &record.proposal_hash,
        &record.approved_by,
        &record.signature,
    ) {
        return Err("the approval record's signature does not verify; approve again".into());
    }
    if record.approved_by == operator_identity {
        return Err("the operator cannot approve its own proposals".into());
    }
    let current = remediation
        .status
        .as_ref()
        .and_then(|s| s.proposal.as_ref())
        .map(|p| p.hash.as_str());
    if current != Some(record.proposal_hash.as_str()) {
        return Err(
            "the proposal changed after it was approved; review it and approve again".into(),
        );
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediation::crd::{
        Action, DryRun, Proposal, RemediationSpec, RemediationStatus, WorkloadRef,
    };

    const OPERATOR: &str = "system:serviceaccount:aiops-system:aiops-operator";

    fn key() -> ApprovalKey {
        ApprovalKey::new(b"0123456789abcdef0123456789abcdef".to_vec())
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    /// A proposed Remediation with alice's approval recorded.
    fn approved_by_alice() -> Remediation {
        let old = remediation(Phase::Proposed, 1, false);
        let ApprovalDecision::Record(record) = approve(&old, &alice()) else {
            panic!("expected a record");
        };
        let mut approved = old.clone();
        approved.spec.approved = true;
        approved.spec.approval = Some(record);
        approved
    }

    fn remediation(phase: Phase, actions: usize, approved: bool) -> Remediation {
        let proposal = Proposal {
            summary: "restore image".into(),
            actions: vec![Action::default(); actions],
            source: "rules".into(),
            ..Proposal::default()
        }
        .seal();
        let mut r = Remediation::new(
            "deployment-web",
            RemediationSpec {
                target: WorkloadRef::default(),
                approved,
                rejected: false,
                approval: None,
            },
        );
        r.metadata.uid = Some("rem-uid".into());
        r.status = Some(RemediationStatus {
            phase,
            proposal_signature: key().sign_proposal("rem-uid", &proposal.hash),
            dry_run: Some(DryRun {
                result: "Succeeded".into(),
                proposal_hash: proposal.hash.clone(),
                ..DryRun::default()
            }),
            proposal: Some(proposal),
            ..RemediationStatus::default()
        });
        r
    }

    fn alice() -> Requester<'static> {
        Requester {
            username: "alice",
            groups: &[],
        }
    }

    fn approve(old: &Remediation, who: &Requester<'_>) -> ApprovalDecision {
        let mut new = old.clone();
        new.spec.approved = true;
        review_remediation_change(
            Some(old),
            &new,
            who,
            OPERATOR,
            &BTreeSet::new(),
            &key(),
            now(),
        )
    }

    #[test]
    fn approving_a_proposal_records_who_and_which_hash() {
        let old = remediation(Phase::Proposed, 1, false);
        let ApprovalDecision::Record(record) = approve(&old, &alice()) else {
            panic!("expected a record");
        };
        assert_eq!(record.approved_by, "alice");
        let hash = old
            .status
            .as_ref()
            .unwrap()
            .proposal
            .as_ref()
            .unwrap()
            .hash
            .clone();
        assert_eq!(record.proposal_hash, hash);
        let mut approved = old.clone();
        approved.spec.approved = true;
        approved.spec.approval = Some(record);
        assert!(bound_approval(&approved, OPERATOR, &key()).is_ok());
    }

    #[test]
    fn approval_before_a_proposal_is_refused() {
        let mut old = remediation(Phase::Diagnosing, 1, false);
        old.status.as_mut().unwrap().proposal = None;
        assert!(
            matches!(approve(&old, &alice()), ApprovalDecision::Deny(m) if m.contains("no proposal"))
        );
        let diagnosing = remediation(Phase::Diagnosing, 1, false);
        assert!(matches!(
            approve(&diagnosing, &alice()),
            ApprovalDecision::Deny(_)
        ));
    }

    #[test]
    fn the_operator_cannot_approve() {
        let old = remediation(Phase::Proposed, 1, false);
        let operator = Requester {
            username: OPERATOR,
            groups: &[],
        };
        assert!(
            matches!(approve(&old, &operator), ApprovalDecision::Deny(m) if m.contains("own proposals"))
        );
    }

    #[test]
    fn the_operator_approves_only_through_a_configured_rule_with_a_binding_record() {
        use crate::remediation::auto_approval::settings::auto_approver;
        let old = remediation(Phase::Proposed, 1, false);
        let hash = old
            .status
            .as_ref()
            .unwrap()
            .proposal
            .as_ref()
            .unwrap()
            .hash
            .clone();
        let operator = Requester {
            username: OPERATOR,
            groups: &[],
        };
        let approver = auto_approver("images");
        let record = ApprovalRecord {
            approved_by: approver.clone(),
            proposal_hash: hash.clone(),
            approved_at: now(),
            signature: key().sign("rem-uid", &hash, &approver),
        };
        let with = |record: ApprovalRecord| {
            let mut new = old.clone();
            new.spec.approved = true;
            new.spec.approval = Some(record);
            new
        };
        let rules = BTreeSet::from(["images"]);
        let decide = |new: &Remediation, rules: &BTreeSet<&str>| {
            review_remediation_change(Some(&old), new, &operator, OPERATOR, rules, &key(), now())
        };
        assert_eq!(
            decide(&with(record.clone()), &rules),
            ApprovalDecision::Allow
        );
        // The rule was removed from the ConfigMap meanwhile.
        assert!(matches!(
            decide(&with(record.clone()), &BTreeSet::new()),
            ApprovalDecision::Deny(m) if m.contains("not configured")
        ));
        // A record for another hash, or not signed with the key.
        let stale = ApprovalRecord {
            proposal_hash: "sha256:other".into(),
            signature: key().sign("rem-uid", "sha256:other", &approver),
            ..record.clone()
        };
        assert!(matches!(
            decide(&with(stale), &rules),
            ApprovalDecision::Deny(_)
        ));
        let forged = ApprovalRecord {
            signature: "00".repeat(32),
            ..record.clone()
        };
        assert!(matches!(
            decide(&with(forged), &rules),
            ApprovalDecision::Deny(_)
        ));
        // Anyone else writing such a record, or a person named like a rule.
        let mut by_alice = with(record.clone());
        let decision = review_remediation_change(
            Some(&old),
            &by_alice,
            &alice(),
            OPERATOR,
            &rules,
            &key(),
            now(),
        );
        assert!(matches!(decision, ApprovalDecision::Deny(_)));
        by_alice.spec.approval = None;
        let impostor = Requester {
            username: &approver,
            groups: &[],
        };
        let decision = review_remediation_change(
            Some(&old),
            &by_alice,
            &impostor,
            OPERATOR,
            &rules,
            &key(),
            now(),
        );
        assert!(matches!(decision, ApprovalDecision::Deny(m) if m.contains("auto-approval rules")));
    }

    #[test]
    fn a_diagnosis_or_an_unvalidated_proposal_cannot_be_approved() {
        let empty = remediation(Phase::Proposed, 0, false);
        assert!(matches!(
            approve(&empty, &alice()),
            ApprovalDecision::Deny(_)
        ));
        let mut stale = remediation(Phase::Proposed, 1, false);
        stale
            .status
            .as_mut()
            .unwrap()
            .dry_run
            .as_mut()
            .unwrap()
            .proposal_hash = "sha256:other".into();
        assert!(
            matches!(approve(&stale, &alice()), ApprovalDecision::Deny(m) if m.contains("dry run"))
        );
    }

    #[test]
    fn hand_written_records_are_refused_at_admission() {
        let old = remediation(Phase::Proposed, 1, false);
        let mut forged = old.clone();
        forged.spec.approved = true;
        forged.spec.approval = Some(ApprovalRecord {
            approved_by: "alice".into(),
            proposal_hash: "sha256:x".into(),
            approved_at: now(),
            signature: "00".into(),
        });
        let decision = review_remediation_change(
            Some(&old),
            &forged,
            &alice(),
            OPERATOR,
            &BTreeSet::new(),
            &key(),
            now(),
        );
        assert!(matches!(decision, ApprovalDecision::Deny(m) if m.contains("spec.approval")));
    }

    #[test]
    fn creating_an_approved_remediation_is_refused() {
        let new = remediation(Phase::Proposed, 1, true);
        let decision = review_remediation_change(
            None,
            &new,
            &alice(),
            OPERATOR,
            &BTreeSet::new(),
            &key(),
            now(),
        );
        assert!(matches!(decision, ApprovalDecision::Deny(_)));
    }

    #[test]
    fn a_changed_proposal_unbinds_the_approval() {
        let mut approved = approved_by_alice();
        // The proposal is tampered with (or regenerated) after approval.
        let status = approved.status.as_mut().unwrap();
        let mut proposal = status.proposal.clone().unwrap();
        proposal.summary = "something else".into();
        status.proposal = Some(proposal.seal());
        let err = bound_approval(&approved, OPERATOR, &key()).unwrap_err();
        assert!(err.contains("changed after it was approved"), "{err}");
    }

    #[test]
    fn approvals_without_a_valid_signature_fail_closed() {
        let mut approved = remediation(Phase::Proposed, 1, true);
        assert!(
            bound_approval(&approved, OPERATOR, &key())
                .unwrap_err()
                .contains("without an approval record")
        );
        let hash = approved
            .status
            .as_ref()
            .unwrap()
            .proposal
            .as_ref()
            .unwrap()
            .hash
            .clone();
        approved.spec.approval = Some(ApprovalRecord {
            approved_by: "mallory".into(),
            proposal_hash: hash.clone(),
            approved_at: now(),
            signature: ApprovalKey::new(b"another key".to_vec()).sign("rem-uid", &hash, "mallory"),
        });
        assert!(
            bound_approval(&approved, OPERATOR, &key())
                .unwrap_err()
                .contains("signature")
        );
    }

    #[test]
    fn a_proposal_edited_in_status_cannot_be_approved() {
        // Edited content with the old hash: the hash no longer matches.
        let mut edited = remediation(Phase::Proposed, 1, false);
        edited
            .status
            .as_mut()
            .unwrap()
            .proposal
            .as_mut()
            .unwrap()
            .summary = "different".into();
        assert!(
            matches!(approve(&edited, &alice()), ApprovalDecision::Deny(m) if m.contains("edited"))
        );
        // Edited content, re-hashed: the operator's signature no longer verifies.
        let mut resealed = remediation(Phase::Proposed, 1, false);
        let status = resealed.status.as_mut().unwrap();
        let mut proposal = status.proposal.clone().unwrap();
        proposal.summary = "different".into();
        let proposal = proposal.seal();
        status.dry_run.as_mut().unwrap().proposal_hash = proposal.hash.clone();
        status.proposal = Some(proposal);
        assert!(
            matches!(approve(&resealed, &alice()), ApprovalDecision::Deny(m) if m.contains("not issued"))
        );
    }

    #[test]
    fn withdrawing_an_approval_removes_the_record() {
        let approved = approved_by_alice();
        let mut withdrawn = approved.clone();
        withdrawn.spec.approved = false;
        let decision = review_remediation_change(
            Some(&approved),
            &withdrawn,
            &alice(),
            OPERATOR,
            &BTreeSet::new(),
            &key(),
            now(),
        );
        assert_eq!(decision, ApprovalDecision::Withdraw);
    }

    #[test]
    fn signatures_bind_every_field() {
        let k = key();
        let sig = k.sign("uid", "hash", "alice");
        assert!(k.verify("uid", "hash", "alice", &sig));
        assert!(!k.verify("uid", "hash", "bob", &sig));
        assert!(!k.verify("uid", "hash2", "alice", &sig));
        assert!(!k.verify("uid2", "hash", "alice", &sig));
        assert!(!k.verify("uid", "hash", "alice", "not-hex"));
    }
}
