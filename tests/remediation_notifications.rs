//! Notifications in the sandbox: a broken Deployment's case is announced
//! once when it is ready for review and once when its fix is Verified, to a
//! receiver whose URL comes from a Secret, and to a Slack-format receiver
//! that refuses the first delivery (retried with back-off). The receivers
//! are local HTTP servers in this test.
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use aiops_operator::remediation::crd::Phase;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::{
    ResetReceivers, Sandbox, broken_after_a_good_rollout, events_about, patch_operator_config,
    receiver, wait_remediation, wait_until,
};

const STEP: Duration = Duration::from_secs(150);

#[tokio::test]
async fn a_case_is_announced_once_for_review_and_once_verified_and_a_refused_delivery_is_retried() {
    support::stop_all_operators();
    let op = support::start_operator(
        "op-notify",
        &[(
            "AIOPS_OPERATOR_ARGS",
            "--verify-timeout-seconds 60 --resolve-after-seconds 15",
        )],
    );
    let sandbox = Sandbox::connect().await;
    let client = &sandbox.client;
    let _reset = ResetReceivers(&sandbox);
    let (hook_url, hook) = receiver(0).await;
    let (chat_url, chat) = receiver(1).await;

    // The webhook receiver's URL lives in a Secret, as a chat URL would.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "aiops-system");
    let _ = secrets
        .delete("aiops-operator-notify", &Default::default())
        .await;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "aiops-operator-notify", "namespace": "aiops-system"},
        "stringData": {"hook-url": hook_url},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("the receivers' Secret");
    let receivers = format!(
        "- name: hook\n  format: webhook\n  urlSecret: {{name: aiops-operator-notify, key: hook-url}}\n  events: [ReadyForReview, Verified]\n\
         - name: chat\n  format: slack\n  url: {chat_url}\n  events: [ReadyForReview, Verified]\n"
    );
    patch_operator_config(
        client,
        json!({"notify.receivers": receivers, "notify.consoleURL": "https://aiops.example.test"}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (ns, proposed) =
        broken_after_a_good_rollout(&sandbox, "notify", 2, "nginx:1.25.5-typo", STEP).await;
    let name = proposed.name_any();
    wait_until(STEP, "the review notice", || async {
        (events_about(&hook, &name) == ["ReadyForReview"]).then_some(())
    })
    .await;
    let review = hook.lock().unwrap().bodies[0].clone();
    assert_eq!(review["remediation"]["namespace"], ns.name);
    assert_eq!(review["target"], "Deployment/app");
    assert_eq!(review["class"], "ImageRestore");
    assert_eq!(
        review["approveCommand"],
        format!("kubectl aiops approve {name} -n {}", ns.name)
    );
    assert_eq!(
        review["consoleLink"],
        format!("https://aiops.example.test/remediations/{}/{name}", ns.name)
    );

    let (ok, out) = sandbox.approve(&ns.name, &name);
    assert!(ok, "{out}");
    wait_remediation(client, &ns.name, &[Phase::Verified], STEP).await;
    wait_until(STEP, "the verified notice", || async {
        (events_about(&hook, &name) == ["ReadyForReview", "Verified"]).then_some(())
    })
    .await;
    // Nothing more arrives for the case (no second review notice, no repeat).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(events_about(&hook, &name), ["ReadyForReview", "Verified"]);
    let verified = hook.lock().unwrap().bodies[1].clone();
    assert_eq!(verified["approvedBy"], "sandbox-admin");
    assert!(verified["approveCommand"].is_null());

    // The chat receiver refused the first request; the retry delivered it.
    wait_until(STEP, "both chat messages", || async {
        (chat.lock().unwrap().bodies.len() == 2).then_some(())
    })
    .await;
    let texts: Vec<String> = chat
        .lock()
        .unwrap()
        .bodies
        .iter()
        .filter_map(|b| b["text"].as_str().map(str::to_string))
        .collect();
    assert!(
        texts[0].contains("ready for review") && texts[0].contains(&name),
        "{texts:?}"
    );
    assert!(texts[1].contains("fix verified"), "{texts:?}");
    assert_eq!(
        chat.lock().unwrap().requests,
        3,
        "one refused, two delivered"
    );

    let metrics = op.metrics().await;
    let sent: BTreeMap<&str, &str> = metrics
        .lines()
        .filter(|l| l.starts_with("remediation_notifications_total{"))
        .filter_map(|l| l.rsplit_once(' '))
        .collect();
    assert_eq!(
        sent.get(r#"remediation_notifications_total{receiver="chat",result="sent"}"#),
        Some(&"2"),
        "{metrics}"
    );
    let _ = secrets
        .delete("aiops-operator-notify", &Default::default())
        .await;
}
