//! The admission webhook as a process of this build: certificates, the
//! command that starts it, TLS clients that trust only its CA, its
//! registration with the sandbox, and AdmissionReviews to send it.
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::ApiResource;
use serde_json::{Value, json};

use super::manifests::{gvk_of, yaml_documents};
use super::sandbox::repo_root;

/// The name of the validating webhook in every registration the tests
/// make; the API server quotes it in each denial.
pub const VALIDATING_WEBHOOK_NAME: &str = "validate.aiops-operator.dev";

/// A loopback port free right now; the webhook binds it a moment later.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("a free loopback port")?
        .port())
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` for 127.0.0.1 into `dir` with
/// the binary's own `certs` command, as an operator would.
pub fn generate_certs(dir: &Path) -> anyhow::Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_aiops-operator"))
        .args(["certs", "--ip", "127.0.0.1", "--out"])
        .arg(dir)
        .output()
        .context("running aiops-operator certs")?;
    ensure!(
        out.status.success(),
        "aiops-operator certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `aiops-operator run --webhook-only` on 127.0.0.1:`port` with the
/// certificates in `dir` and the shipped policies, logging to
/// `dir/webhook.log`; callers add their own flags and environment.
pub fn webhook_command(dir: &Path, port: u16) -> anyhow::Result<Command> {
    webhook_command_with_policies(dir, port, &repo_root().join("policies"))
}

/// [`webhook_command`] with the policies loaded from `policies`.
pub fn webhook_command_with_policies(
    dir: &Path,
    port: u16,
    policies: &Path,
) -> anyhow::Result<Command> {
    let log = std::fs::File::create(dir.join("webhook.log")).context("the webhook's log file")?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_aiops-operator"));
    command
        .args(["run", "--webhook-only", "--webhook-listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--webhook-tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--webhook-tls-key")
        .arg(dir.join("tls.key"))
        .arg("--policies-dir")
        .arg(policies)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("the webhook's log file")?)
        .stderr(log);
    Ok(command)
}

/// An HTTPS client trusting only `ca_pem`, reporting the peer certificate
/// of each response; with `fresh_connections` every request does its own
/// TLS handshake (so a certificate rotation is seen at once).
pub fn https_client(ca_pem: &str, fresh_connections: bool) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("CA PEM")?)
        .tls_info(true)
        .timeout(Duration::from_secs(10));
    if fresh_connections {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().context("HTTPS client")
}

/// Waits until the webhook process answers `GET {base}/readyz`; an error
/// when it exits first or is not ready within `timeout`.
pub async fn wait_webhook_ready(
    child: &mut Child,
    client: &reqwest::Client,
    base: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the webhook exited during start-up ({status})");
        }
        let ready = client.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("the webhook did not become ready in {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The DER of the end-entity certificate a new connection to `url` is served.
pub async fn served_certificate(ca_pem: &str, url: &str) -> anyhow::Result<Vec<u8>> {
    let response = https_client(ca_pem, true)?
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .context("no TLS info")?;
    Ok(info
        .peer_certificate()
        .context("no peer certificate")?
        .to_vec())
}

/// The DER of a PEM certificate, to compare with [`served_certificate`].
pub fn certificate_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())
        .context("certificate PEM")?
        .to_vec())
}

/// The shipped validating webhook (its rules, failurePolicy, sideEffects
/// and timeout) pointed at `url`, trusting `ca_pem`, and sent only the
/// namespaces labelled `label: id`; the configuration is called `name`
/// and carries the same label, so a test can find what it registered.
pub fn validating_configuration(
    name: &str,
    url: &str,
    ca_pem: &str,
    label: &str,
    id: &str,
) -> anyhow::Result<ValidatingWebhookConfiguration> {
    let path = repo_root().join("manifests/webhook-configurations.yaml");
    let shipped =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut webhook = yaml_documents(&shipped)?
        .into_iter()
        .find(|doc| doc["kind"] == "ValidatingWebhookConfiguration")
        .and_then(|doc| doc["webhooks"].get(0).cloned())
        .with_context(|| {
            format!(
                "no ValidatingWebhookConfiguration with a webhook in {}",
                path.display()
            )
        })?;
    webhook["name"] = json!(VALIDATING_WEBHOOK_NAME);
    webhook["clientConfig"] = json!({
        "url": url,
        "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
    });
    webhook["namespaceSelector"] = json!({"matchLabels": {label: id}});
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {label: id}},
        "webhooks": [webhook],
    }))
    .context("ValidatingWebhookConfiguration")
}

/// The AdmissionReview the API server sends for creating `object` in
/// `namespace`, as an ordinary authenticated user, not a dry run.
pub fn create_review(object: &Value, namespace: &str, uid: &str) -> Value {
    let gvk = gvk_of(object);
    let resource = ApiResource::from_gvk(&gvk);
    let mut object = object.clone();
    object["metadata"]["namespace"] = json!(namespace);
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": gvk.group, "version": gvk.version, "kind": gvk.kind},
            "resource": {"group": gvk.group, "version": gvk.version, "resource": resource.plural},
            "name": object["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "test-user", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false
        }
    })
}
