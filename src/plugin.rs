//! `kubectl aiops`: the same binary invoked as `kubectl-aiops` lists,
//! shows, approves, rejects and regenerates Remediations with the user's
//! own kubeconfig and identity (so the webhook records who approved).
use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::remediation::crd::{Phase, Remediation};
use crate::remediation::decision;

/// Review and decide on proposed fixes (Remediations).
#[derive(Debug, Parser)]
#[command(name = "kubectl-aiops", version, about)]
pub struct PluginCli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// List Remediations.
    List {
        /// Across all namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Findings, proposal, dry-run diff, risks and rollback plan of one Remediation.
    Show { name: String },
    /// Approve the proposal shown now (and only that one).
    Approve {
        name: String,
        /// Refuse unless the current proposal has this hash (as printed by `show`).
        #[arg(long)]
        hash: Option<String>,
    },
    /// Reject the proposal; nothing is applied.
    Reject { name: String },
    /// Ask for a new proposal (any approval of the old one lapses).
    Regenerate { name: String },
}

/// Entry point when invoked as `kubectl-aiops`.
pub fn run_plugin(cli: PluginCli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kubectl-aiops: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("kubectl-aiops: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: PluginCli) -> Result<String, String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("cannot reach the cluster: {e}"))?;
    let namespace = cli
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<Remediation> = Api::namespaced(client.clone(), &namespace);
    match cli.command {
        PluginCommand::List { all_namespaces } => {
            let api = if all_namespaces {
                Api::all(client)
            } else {
                api
            };
            let items = api
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("listing remediations: {e}"))?
                .items;
            Ok(render_list(&items, all_namespaces))
        }
        PluginCommand::Show { name } => {
            let remediation = get(&api, &name).await?;
            Ok(render_show(&remediation))
        }
        PluginCommand::Approve { name, hash } => {
            let remediation = get(&api, &name).await?;
            let status = remediation.status.clone().unwrap_or_default();
            let proposal = status
                .proposal
                .as_ref()
                .ok_or("there is no proposal yet; wait for phase Proposed")?;
            if let Some(expected) = hash
                && expected != proposal.hash
            {
                return Err(format!(
                    "the proposal changed: its hash is now {}; review it with `show` again",
                    proposal.hash
                ));
            }
            // The merge patch carries resourceVersion, so it fails if the
            // Remediation changed since it was read.
            let patch = decision::approve_patch(remediation.resource_version().as_deref());
            let approved = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| format!("approval refused: {e}"))?;
            let by = approved
                .spec
                .approval
                .as_ref()
                .map(|a| a.approved_by.clone())
                .unwrap_or_else(|| "(not recorded: is the operator's webhook registered?)".into());
            Ok(format!(
                "approved {name}: proposal {} by {by}\n",
                proposal.hash
            ))
        }
        PluginCommand::Reject { name } => {
            let patch = decision::reject_patch();
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| format!("reject failed: {e}"))?;
            Ok(format!("rejected {name}\n"))
        }
        PluginCommand::Regenerate { name } => {
            let patch = decision::regenerate_patch();
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| format!("regenerate failed: {e}"))?;
            Ok(format!("asked for a new proposal for {name}\n"))
        }
    }
}

async fn get(api: &Api<Remediation>, name: &str) -> Result<Remediation, String> {
    api.get(name)
        .await
        .map_err(|e| format!("remediation {name}: {e}"))
}

fn age(remediation: &Remediation) -> String {
    crate::k8s::age::short_age(remediation.creation_timestamp().as_ref())
}

/// The table `list` prints.
pub fn render_list(items: &[Remediation], with_namespace: bool) -> String {
    let mut rows = vec![
        vec![
            "NAME", "TARGET", "REASON", "PHASE", "APPROVED", "SOURCE", "AGE",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>(),
    ];
    if with_namespace {
        rows[0].insert(0, "NAMESPACE".into());
    }
    for r in items {
        let status = r.status.clone().unwrap_or_default();
        let mut row = vec![
            r.name_any(),
            format!("{}/{}", r.spec.target.kind, r.spec.target.name),
            status.reason.clone(),
            format!("{:?}", status.phase),
            r.spec.approved.to_string(),
            status
                .proposal
                .map(|p| p.source)
                .unwrap_or_else(|| "-".into()),
            age(r),
        ];
        if with_namespace {
            row.insert(0, r.namespace().unwrap_or_default());
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("   ").trim_end());
    }
    out
}

/// The report `show` prints: what a reviewer needs to decide.
pub fn render_show(r: &Remediation) -> String {
    let status = r.status.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Remediation: {}/{}",
        r.namespace().unwrap_or_default(),
        r.name_any()
    );
    let _ = writeln!(
        out,
        "Target:      {} {}/{} (uid {})",
        r.spec.target.api_version, r.spec.target.kind, r.spec.target.name, r.spec.target.uid
    );
    let _ = writeln!(out, "Phase:       {:?}  {}", status.phase, status.message);
    let _ = writeln!(out, "\nFindings:");
    for f in &status.findings {
        if f.reason == crate::remediation::policy_case::POLICY_REASON {
            // A policy case's finding is the violated rule, not a pod's state.
            let _ = writeln!(out, "  - {}: {}", f.reason, f.message);
            continue;
        }
        let kind = if f.init {
            "init container"
        } else {
            "container"
        };
        let _ = writeln!(
            out,
            "  - {kind} {:?}: {} on {} pod(s){}{}",
            f.container,
            f.reason,
            f.pods,
            f.exit_code
                .map(|c| format!(", exit {c}"))
                .unwrap_or_default(),
            f.image
                .as_ref()
                .map(|i| format!(", image {i}"))
                .unwrap_or_default()
        );
    }
    if let Some(p) = &status.proposal {
        let _ = writeln!(
            out,
            "\nProposal ({}, confidence {:.2}, hash {}):",
            p.source, p.confidence, p.hash
        );
        if !p.class.is_empty() {
            let _ = writeln!(out, "  Class:      {}", p.class);
        }
        let _ = writeln!(out, "  Summary:    {}", p.summary);
        let _ = writeln!(out, "  Root cause: {}", p.root_cause);
        if p.actions.is_empty() {
            let _ = writeln!(out, "  Actions:    none (needs a human)");
        }
        for (i, a) in p.actions.iter().enumerate() {
            let patch = serde_yaml::to_string(&a.patch).unwrap_or_default();
            let _ = writeln!(
                out,
                "  Action {i}: server-side apply to {} {}/{}:",
                a.target.kind, a.namespace, a.target.name
            );
            for line in patch.lines() {
                let _ = writeln!(out, "      {line}");
            }
            for r in &a.env_from_revision {
                let _ = writeln!(
                    out,
                    "      + env {} of container {} from revision {} ({} {}; the value is read \
                     at apply time and not shown)",
                    r.name, r.container, r.revision.revision, r.revision.kind, r.revision.name
                );
            }
        }
        if !p.risks.is_empty() {
            let _ = writeln!(out, "  Risks:");
            for risk in &p.risks {
                let _ = writeln!(out, "    - {risk}");
            }
        }
        if !p.rollback_plan.is_empty() {
            let _ = writeln!(out, "  Rollback plan:");
            for step in &p.rollback_plan {
                let _ = writeln!(out, "    - {step}");
            }
        }
    }
    if let Some(g) = &status.guardrail {
        let verdict = if g.allowed { "passed" } else { "REFUSED" };
        let _ = writeln!(out, "\nGuardrails: {verdict}");
        for v in &g.violations {
            let _ = writeln!(out, "  - {v}");
        }
    }
    if let Some(d) = &status.dry_run {
        let _ = writeln!(out, "\nDry run: {} {}", d.result, d.message);
        for change in &d.diff {
            let _ = writeln!(
                out,
                "  {}: {} -> {}",
                change.path,
                change.from.as_deref().unwrap_or("(unset)"),
                change.to.as_deref().unwrap_or("(unset)")
            );
        }
    }
    let _ = writeln!(out, "\nApproved: {}", r.spec.approved);
    if let Some(a) = &r.spec.approval {
        let _ = writeln!(
            out,
            "  by {} for proposal {}",
            a.approved_by, a.proposal_hash
        );
    }
    if status.phase == Phase::Proposed
        && status
            .proposal
            .as_ref()
            .is_some_and(|p| !p.actions.is_empty())
    {
        let _ = writeln!(
            out,
            "\nTo apply:  kubectl patch rem {} --type=merge -p '{{\"spec\":{{\"approved\":true}}}}'   (or: kubectl aiops approve {})",
            r.name_any(),
            r.name_any()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediation::crd::{
        Action, DryRun, FieldChange, Finding, Proposal, RemediationSpec, RemediationStatus,
        WorkloadRef,
    };

    fn sample() -> Remediation {
        let mut r = Remediation::new(
            "deployment-web-1",
            RemediationSpec {
                target: WorkloadRef {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                    uid: "u".into(),
                },
                approved: false,
                rejected: false,
                approval: None,
            },
        );
        r.metadata.namespace = Some("shop".into());
        let proposal = Proposal {
            summary: "restore nginx:1.25.5".into(),
            root_cause: "tag does not exist".into(),
            actions: vec![Action::default()],
            risks: vec!["GitOps will revert".into()],
            rollback_plan: vec!["re-apply nginx:typo".into()],
            confidence: 0.9,
            source: "rules".into(),
            class: "ImageRestore".into(),
            hash: String::new(),
        }
        .seal();
        r.status = Some(RemediationStatus {
            phase: Phase::Proposed,
            reason: "ImagePullBackOff".into(),
            findings: vec![Finding {
                container: "app".into(),
                reason: "ImagePullBackOff".into(),
                pods: 3,
                ..Finding::default()
            }],
            dry_run: Some(DryRun {
                result: "Succeeded".into(),
                diff: vec![FieldChange {
                    path: "spec.template.spec.containers[app].image".into(),
                    from: Some("nginx:typo".into()),
                    to: Some("nginx:1.25.5".into()),
                }],
                proposal_hash: proposal.hash.clone(),
                message: String::new(),
            }),
            proposal: Some(proposal),
            ..RemediationStatus::default()
        });
        r
    }

    #[test]
    fn show_has_findings_proposal_diff_risks_and_the_approve_command() {
        let text = render_show(&sample());
        for needle in [
            "ImagePullBackOff on 3 pod(s)",
            "restore nginx:1.25.5",
            "containers[app].image: nginx:typo -> nginx:1.25.5",
            "GitOps will revert",
            "Class:      ImageRestore",
            "re-apply nginx:typo",
            "kubectl patch rem deployment-web-1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn show_names_a_value_restored_by_reference_without_the_value() {
        let mut r = sample();
        let status = r.status.as_mut().expect("status");
        let proposal = status.proposal.as_mut().expect("proposal");
        proposal.actions[0].env_from_revision = vec![crate::remediation::crd::EnvFromRevision {
            container: "db".into(),
            init: false,
            name: "POSTGRES_PASSWORD".into(),
            revision: crate::remediation::crd::RevisionRef {
                revision: 1,
                kind: "ControllerRevision".into(),
                name: "db-846c4c48c9".into(),
                ..Default::default()
            },
        }];
        let text = render_show(&r);
        assert!(
            text.contains(
                "+ env POSTGRES_PASSWORD of container db from revision 1 (ControllerRevision \
                 db-846c4c48c9; the value is read at apply time and not shown)"
            ),
            "{text}"
        );
    }

    #[test]
    fn list_is_a_table_with_one_row_per_remediation() {
        let text = render_list(&[sample()], true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAMESPACE"));
        assert!(lines[1].contains("Deployment/web") && lines[1].contains("Proposed"));
    }
}
