//! Self-managed webhook certificates against the real sandbox API server
//! (issue 11 §2): two operator replicas started with
//! `--webhook-cert-secret` and no certificate of their own.
//!
//! What is shown: one replica makes the CA and serving pair and stores it
//! in the Secret (exactly one write wins; the other replica adopts it), the
//! CA is published into the webhook configuration, and admission works.
//! Then the Secret is deleted while admission requests flow through both
//! replicas: a new pair appears (again written once), the configuration
//! trusts the new CA, both replicas serve the new certificate, and not one
//! admission request failed on the way.
//!
//! The API server calls each replica by `clientConfig.url` on 127.0.0.1,
//! so the certificate also carries that address (`--webhook-cert-ip`).
//! Needs the sandbox (`make cluster-up`); fails loudly without it.
mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{Sandbox, repo_root, wait_until};

const SECRET: &str = "aiops-operator-webhook-certs";
const LABEL: &str = "aiops-operator.dev/self-managed-certs";
/// Logged once per successful Secret write (create or replace).
const STORED: &str = "stored a new serving pair";

struct Replica {
    port: u16,
    child: Child,
    log: std::path::PathBuf,
}

impl Replica {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start_replica(
    sandbox: &Sandbox,
    dir: &Path,
    name: &str,
    namespace: &str,
    configuration: &str,
) -> Replica {
    let port = free_port();
    let certs = dir.join(name);
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_aiops-operator"))
        .args(["run", "--webhook-only", "--webhook-listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--webhook-tls-cert")
        .arg(certs.join("tls.crt"))
        .arg("--webhook-tls-key")
        .arg(certs.join("tls.key"))
        .args(["--webhook-cert-secret", SECRET])
        .args(["--webhook-cert-ip", "127.0.0.1"])
        .args(["--validating-webhook-config", configuration])
        // No mutating configuration in this test.
        .args(["--mutating-webhook-config", ""])
        .arg("--policies-dir")
        .arg(repo_root().join("policies"))
        .args(["--operator-namespace", namespace])
        // Only the webhook is under test: no cluster-wide admission
        // policies for the enforced pattern rules.
        .args(["--admission-backend", "webhook"])
        .env("KUBECONFIG", &sandbox.kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .expect("starting aiops-operator run");
    Replica { port, child, log }
}

fn pod(name: &str, privileged: bool) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{
            "name": "app",
            "image": "nginx:1.25.5",
            "securityContext": {"privileged": privileged},
        }]},
    }))
    .expect("pod manifest")
}

/// One admission round trip through both replicas: a compliant pod is
/// admitted and a privileged one is denied by our webhook (so the webhook
/// really ran). `Err` says what went wrong.
async fn admission_round(pods: &Api<Pod>, n: usize) -> Result<(), String> {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    pods.create(&dry_run, &pod(&format!("ok-{n}"), false))
        .await
        .map_err(|e| format!("a compliant pod was refused: {e}"))?;
    match pods.create(&dry_run, &pod(&format!("bad-{n}"), true)).await {
        Ok(_) => Err("a privileged pod was admitted".into()),
        Err(kube::Error::Api(status))
            if status.message.contains("denied the request")
                && status.message.contains("disallow-privileged-containers") =>
        {
            Ok(())
        }
        Err(e) => Err(format!("a privileged pod failed otherwise: {e}")),
    }
}

async fn stored_ca(secrets: &Api<Secret>) -> Option<String> {
    let secret = secrets.get_opt(SECRET).await.ok()??;
    let data = secret.data?;
    let ca = data.get("ca.crt")?;
    data.get("tls.crt")?;
    data.get("tls.key")?;
    String::from_utf8(ca.0.clone()).ok()
}

/// Whether every webhook of the configuration trusts `ca`.
async fn configuration_trusts(
    api: &Api<ValidatingWebhookConfiguration>,
    name: &str,
    ca: &str,
) -> bool {
    let Ok(config) = api.get(name).await else {
        return false;
    };
    let webhooks = config.webhooks.unwrap_or_default();
    !webhooks.is_empty()
        && webhooks.iter().all(|w| {
            w.client_config
                .ca_bundle
                .as_ref()
                .is_some_and(|b| String::from_utf8_lossy(&b.0).contains(ca.trim()))
        })
}

/// Whether the replica's /readyz answers over TLS trusting only `ca`.
async fn serves_from(port: u16, ca: &str) -> bool {
    let Ok(root) = reqwest::Certificate::from_pem(ca.as_bytes()) else {
        return false;
    };
    let Ok(client) = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return false;
    };
    client
        .get(format!("https://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_serving_secret_rotates_the_pair_with_no_failed_request() {
    let sandbox = Sandbox::connect().await;
    let operator_ns = sandbox.namespace("certs-op").await;
    let workload_ns = sandbox.namespace("certs-wl").await;
    let id = operator_ns.name.clone();
    let dir = tempfile::tempdir().expect("temp dir");

    // Enforce, so a privileged pod is denied: proof the webhook answered.
    let config_map: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "aiops-operator-config"},
        "data": {"mode": "Enforce"},
    }))
    .expect("ConfigMap");
    Api::<ConfigMap>::namespaced(sandbox.client.clone(), &operator_ns.name)
        .create(&PostParams::default(), &config_map)
        .await
        .expect("creating the ConfigMap");

    // Two webhooks, one per replica, both Fail: a request that either
    // replica cannot answer (a TLS error included) fails visibly.
    let configuration = format!("aiops-certs-{id}");
    let replicas = [
        start_replica(&sandbox, dir.path(), "a", &operator_ns.name, &configuration),
        start_replica(&sandbox, dir.path(), "b", &operator_ns.name, &configuration),
    ];
    let webhook = |name: &str, port: u16| -> Value {
        json!({
            "name": name,
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate")},
            "failurePolicy": "Fail",
            "sideEffects": "NoneOnDryRun",
            "timeoutSeconds": 15,
            "namespaceSelector": {"matchLabels": {LABEL: id}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
        })
    };
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(sandbox.client.clone());
    let registered: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": configuration},
        "webhooks": [
            webhook("a.certs.aiops-operator.dev", replicas[0].port),
            webhook("b.certs.aiops-operator.dev", replicas[1].port),
        ],
    }))
    .expect("ValidatingWebhookConfiguration");
    configurations
        .create(&PostParams::default(), &registered)
        .await
        .expect("registering the webhooks");
    struct Unregister(std::path::PathBuf, std::path::PathBuf, String);
    impl Drop for Unregister {
        fn drop(&mut self) {
            let _ = Command::new(&self.0)
                .arg("--kubeconfig")
                .arg(&self.1)
                .args([
                    "delete",
                    "validatingwebhookconfiguration",
                    &self.2,
                    "--ignore-not-found",
                ])
                .output();
        }
    }
    let _unregister = Unregister(
        sandbox.kubectl_path(),
        sandbox.kubeconfig.clone(),
        configuration.clone(),
    );

    // 1. The first pair: stored once, trusted, served by both.
    let secrets: Api<Secret> = Api::namespaced(sandbox.client.clone(), &operator_ns.name);
    let first_ca = wait_until(Duration::from_secs(60), "the serving Secret", || async {
        stored_ca(&secrets).await
    })
    .await;
    for replica in &replicas {
        let ca = first_ca.clone();
        wait_until(
            Duration::from_secs(60),
            "a replica serving the first pair",
            || {
                let ca = ca.clone();
                async move { serves_from(replica.port, &ca).await.then_some(()) }
            },
        )
        .await;
    }
    assert!(
        configuration_trusts(&configurations, &configuration, &first_ca).await,
        "the webhook configuration does not carry the CA of the stored pair"
    );
    let patch = json!({"metadata": {"labels": {LABEL: id}}});
    Api::<Namespace>::all(sandbox.client.clone())
        .patch(
            &workload_ns.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("labelling the workload namespace");
    let pods: Api<Pod> = Api::namespaced(sandbox.client.clone(), &workload_ns.name);
    wait_until(
        Duration::from_secs(60),
        "admission through both replicas",
        || async { admission_round(&pods, 0).await.ok() },
    )
    .await;
    let stores = || {
        replicas
            .iter()
            .map(|r| r.log_text().matches(STORED).count())
            .sum::<usize>()
    };
    assert_eq!(stores(), 1, "the first pair was written more than once");

    // 2. Delete the Secret while admission requests keep flowing.
    let rounds = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let load = {
        let (pods, rounds, failures) = (pods.clone(), Arc::clone(&rounds), Arc::clone(&failures));
        tokio::spawn(async move {
            let mut n = 1;
            while !*stop_rx.borrow_and_update() {
                if let Err(e) = admission_round(&pods, n).await {
                    failures.lock().map(|mut f| f.push(e)).ok();
                }
                rounds.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deleted_at = Instant::now();
    secrets
        .delete(SECRET, &DeleteParams::default())
        .await
        .expect("deleting the serving Secret");

    let second_ca = wait_until(Duration::from_secs(60), "a new serving Secret", || {
        let first = first_ca.clone();
        let secrets = secrets.clone();
        async move { stored_ca(&secrets).await.filter(|ca| *ca != first) }
    })
    .await;
    let recreated_after = deleted_at.elapsed();
    for replica in &replicas {
        let ca = second_ca.clone();
        wait_until(
            Duration::from_secs(60),
            "a replica serving the new pair",
            || {
                let ca = ca.clone();
                async move { serves_from(replica.port, &ca).await.then_some(()) }
            },
        )
        .await;
    }
    let switched_after = deleted_at.elapsed();
    assert!(
        configuration_trusts(&configurations, &configuration, &second_ca).await,
        "the webhook configuration does not carry the new CA"
    );
    // Requests keep flowing a little past the switch.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(true);
    load.await.expect("the load task");

    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    let rounds = rounds.load(Ordering::Relaxed);
    eprintln!(
        "rotation: new Secret {recreated_after:?} after the deletion, both replicas on it after \
         {switched_after:?}; {rounds} admission rounds (2 requests each) during it, {} failed",
        failures.len()
    );
    assert!(
        rounds >= 5,
        "too few admission rounds during the rotation: {rounds}"
    );
    assert!(
        failures.is_empty(),
        "admission requests failed during the rotation:\n{}\n--- replica a ---\n{}\n--- replica b ---\n{}",
        failures.join("\n"),
        replicas[0].log_text(),
        replicas[1].log_text()
    );
    assert_eq!(stores(), 2, "the new pair was written more than once");
}
