//! Rotating the webhook's certificate files under load, through the API
//! server and directly, fails no request.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aiops_operator::admission::certs::CertAuthority;
use serde_json::Value;

use crate::PRIVILEGED_POLICY;
use crate::live_webhook::{Certs, Expect, LiveWebhook, rotate_serving_cert};
use crate::objects::{create_object, pod_with_image, privileged_pod};
use crate::support::{Sandbox, certificate_der, create_review, served_certificate, wait_until};

/// A v1 AdmissionReview of a compliant pod, for direct requests.
fn review_of_good_pod(uid: usize) -> Value {
    create_review(
        &pod_with_image("direct", "nginx:1.25.5"),
        "rotation",
        &format!("rotation-{uid}"),
    )
}

/// The DER of the certificate the webhook serves on a new connection.
async fn served_now(webhook: &LiveWebhook) -> Option<Vec<u8>> {
    served_certificate(webhook.ca_pem(), &webhook.url("/healthz"))
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_no_request() {
    let sandbox = Sandbox::connect().await;
    let ca = CertAuthority::generate("admission-live rotation CA").expect("CA");
    let webhook =
        Arc::new(LiveWebhook::start(&sandbox, &[("mode", "Enforce")], Certs::From(&ca)).await);
    let ns = sandbox.namespace("awh-rotate").await;
    webhook.serve(&ns.name, Expect::Deny).await;
    let original = served_now(&webhook).await.expect("served certificate");

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let through_apiserver = Arc::new(AtomicUsize::new(0));
    let direct = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    // Through the API server: dry-run creates, alternating a compliant pod
    // (must be admitted) and a privileged one (must be denied by us; any
    // webhook call failure would surface as a different error, since the
    // failurePolicy is Fail).
    for worker in 0..2 {
        let (stop, failures, count) = (stop.clone(), failures.clone(), through_apiserver.clone());
        let (client, namespace) = (sandbox.client.clone(), ns.name.clone());
        load.push(tokio::spawn(async move {
            let good = pod_with_image("good", "nginx:1.25.5");
            let bad = privileged_pod("bad");
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let want_denied = (i + worker) % 2 == 1;
                let manifest = if want_denied { &bad } else { &good };
                let outcome = create_object(&client, &namespace, manifest, true).await;
                let problem = match (outcome, want_denied) {
                    (Ok(()), false) => None,
                    (Err(e), true) if e.is_denial_by(PRIVILEGED_POLICY) => None,
                    (Ok(()), true) => Some("privileged pod admitted".to_string()),
                    (Err(e), _) => Some(e.to_string()),
                };
                if let Some(problem) = problem {
                    failures
                        .lock()
                        .expect("lock")
                        .push(format!("apiserver: {problem}"));
                }
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    // Directly over TLS with a new handshake per request, so handshakes
    // happen right across the swap.
    for _ in 0..2 {
        let (stop, failures, count) = (stop.clone(), failures.clone(), direct.clone());
        let webhook = webhook.clone();
        load.push(tokio::spawn(async move {
            let client = webhook.https_client(true);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let sent = client
                    .post(webhook.url("/validate"))
                    .json(&review_of_good_pod(i))
                    .send()
                    .await;
                let problem = match sent {
                    Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                        Ok(body) if body["response"]["allowed"] == true => None,
                        Ok(body) => Some(format!("not allowed: {body}")),
                        Err(e) => Some(format!("unreadable reply: {e}")),
                    },
                    Ok(r) => Some(format!("HTTP {}", r.status())),
                    Err(e) => Some(format!("{e:?}")),
                };
                if let Some(problem) = problem {
                    failures
                        .lock()
                        .expect("lock")
                        .push(format!("direct: {problem}"));
                }
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }

    // Let traffic flow, rotate, and keep it flowing until the new
    // certificate is served and a while after.
    wait_until(Duration::from_secs(30), "load before rotation", || async {
        (through_apiserver.load(Ordering::Relaxed) >= 10 && direct.load(Ordering::Relaxed) >= 10)
            .then_some(())
    })
    .await;
    let rotated_pem = rotate_serving_cert(&ca, webhook.dir.path());
    let rotated = certificate_der(&rotated_pem).expect("the rotated certificate");
    assert_ne!(rotated, original);
    let rotated_at = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "the new certificate served",
        || async { (served_now(&webhook).await? == rotated).then_some(()) },
    )
    .await;
    let swapped_after = rotated_at.elapsed();
    let (api_mark, direct_mark) = (
        through_apiserver.load(Ordering::Relaxed),
        direct.load(Ordering::Relaxed),
    );
    wait_until(Duration::from_secs(30), "load after rotation", || async {
        (through_apiserver.load(Ordering::Relaxed) >= api_mark + 10
            && direct.load(Ordering::Relaxed) >= direct_mark + 10)
            .then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }

    let failures = failures.lock().expect("lock");
    eprintln!(
        "rotation: new certificate served after {swapped_after:?}; {} requests through the API server, {} direct; {} failed",
        through_apiserver.load(Ordering::Relaxed),
        direct.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed during rotation:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
