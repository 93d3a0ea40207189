//! The admission webhook over real TLS, without Kubernetes: fresh certs, the
//! project's own policies, modes injected directly. Checks verdicts, that
//! TLS 1.1 is refused, and that rotating the certificate files under load
//! fails no request and the new certificate is then served.
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aiops_operator::admission::certs::CertAuthority;
use aiops_operator::admission::modes::{Mode, ModeConfig};
use aiops_operator::admission::policy_files::load_policies;
use aiops_operator::admission::{Limits, ModeSource, Webhook, WebhookConfig};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use support::{certificate_der, create_review, https_client, served_certificate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

struct Running {
    addr: SocketAddr,
    ca: CertAuthority,
    cert_path: PathBuf,
    key_path: PathBuf,
    modes: aiops_operator::admission::state::ModeHandle,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .context("server did not stop")?
            .context("server task panicked")?;
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }
}

fn write_serving_cert(ca: &CertAuthority, cert: &Path, key: &Path) -> Result<()> {
    let serving = ca.issue_serving(&["localhost".to_string()], &["127.0.0.1".parse()?])?;
    std::fs::write(cert, serving.cert_pem)?;
    std::fs::write(key, serving.key_pem)?;
    Ok(())
}

async fn start(mode: Mode) -> Result<Running> {
    let dir = tempfile::tempdir()?;
    let ca = CertAuthority::generate("webhook test CA")?;
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    write_serving_cert(&ca, &cert_path, &key_path)?;
    let policies_dir = support::repo_root().join("policies");
    let policies = load_policies(&policies_dir, &[])?;
    let webhook = Webhook::bind(WebhookConfig {
        listen: "127.0.0.1:0".parse()?,
        cert_file: cert_path.clone(),
        key_file: key_path.clone(),
        policies,
        policy_files: None,
        modes: ModeSource::Fixed(ModeConfig::with_mode("aiops-system", mode)),
        client: None,
        limits: Limits {
            // Faster than production so the rotation test stays short.
            cert_poll_interval: Duration::from_millis(200),
            ..Limits::default()
        },
        reporter: "aiops-operator-test".into(),
        backend: aiops_operator::admission::api_server_policies::AdmissionBackend::Webhook,
        owner_configuration: None,
    })
    .await?;
    let addr = webhook.local_addr();
    let modes = webhook.modes();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(webhook.serve(async {
        let _ = stopped.await;
    }));
    Ok(Running {
        addr,
        ca,
        cert_path,
        key_path,
        modes,
        stop: Some(stop),
        server,
        _dir: dir,
    })
}

fn client(ca: &CertAuthority, fresh_connections: bool) -> Result<reqwest::Client> {
    https_client(ca.cert_pem(), fresh_connections)
}

/// The AdmissionReview of creating a Pod `name` with `spec` in `team-a`.
fn review(name: &str, spec: Value) -> Value {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec});
    create_review(&pod, "team-a", &format!("uid-{name}"))
}

fn good_pod() -> Value {
    review(
        "good",
        json!({"containers": [{"name": "app", "image": "registry.example/app:1.4.2"}]}),
    )
}

fn privileged_pod() -> Value {
    review(
        "privileged",
        json!({"containers": [{
            "name": "app",
            "image": "registry.example/app:1.4.2",
            "securityContext": {"privileged": true}
        }]}),
    )
}

async fn post_review(client: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    let response = client.post(url).json(body).send().await?;
    ensure!(response.status() == 200, "status {}", response.status());
    Ok(response.json().await?)
}

#[tokio::test]
async fn enforce_denies_a_privileged_pod_naming_the_policy() -> Result<()> {
    let server = start(Mode::Enforce).await?;
    let client = client(&server.ca, false)?;

    let denied = post_review(&client, &server.url("/validate"), &privileged_pod()).await?;
    assert_eq!(denied["response"]["uid"], "uid-privileged");
    assert_eq!(denied["response"]["allowed"], false, "{denied}");
    let message = denied["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("Pod team-a/privileged"), "{message}");
    assert!(
        message.contains("disallow-privileged-containers/"),
        "{message}"
    );

    let allowed = post_review(&client, &server.url("/validate"), &good_pod()).await?;
    assert_eq!(allowed["response"]["allowed"], true, "{allowed}");

    // The noop endpoint admits without evaluating.
    let noop = post_review(&client, &server.url("/noop"), &privileged_pod()).await?;
    assert_eq!(noop["response"]["allowed"], true, "{noop}");

    // A mode change applies to the next request, without a restart.
    let mut audit = ModeConfig::with_mode("aiops-system", Mode::Audit);
    audit.exempt_users.insert("root-ish".into());
    server.modes.replace(audit);
    let audited = post_review(&client, &server.url("/validate"), &privileged_pod()).await?;
    assert_eq!(audited["response"]["allowed"], true, "{audited}");
    let warnings = audited["response"]["warnings"].to_string();
    assert!(
        warnings.contains("[Audit] disallow-privileged-containers/"),
        "{warnings}"
    );

    server.stop().await
}

#[tokio::test]
async fn bad_requests_are_refused_over_tls() -> Result<()> {
    let server = start(Mode::Enforce).await?;
    let client = client(&server.ca, false)?;
    let response = client
        .post(server.url("/validate"))
        .body("definitely not json")
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let response = client
        .post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(vec![b' '; 4 * 1024 * 1024])
        .send()
        .await?;
    assert_eq!(response.status(), 413);
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics
            .contains("aiops_admission_requests_total{endpoint=\"validate\",result=\"invalid\"} 1"),
        "{metrics}"
    );
    server.stop().await
}

#[tokio::test]
async fn only_tls_12_and_13_are_offered() -> Result<()> {
    let server = start(Mode::Enforce).await?;
    for (min, max) in [
        (
            reqwest::tls::Version::TLS_1_2,
            reqwest::tls::Version::TLS_1_2,
        ),
        (
            reqwest::tls::Version::TLS_1_3,
            reqwest::tls::Version::TLS_1_3,
        ),
    ] {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(
                server.ca.cert_pem().as_bytes(),
            )?)
            .min_tls_version(min)
            .max_tls_version(max)
            .build()?;
        let status = client.get(server.url("/healthz")).send().await?.status();
        assert_eq!(status, 200, "{max:?}");
    }

    // rustls cannot speak TLS 1.1, so send ClientHellos by hand. The same
    // hello is accepted as TLS 1.2 (control) and refused as TLS 1.1.
    assert_eq!(
        first_server_record(server.addr, [0x03, 0x03]).await?[0],
        22,
        "TLS 1.2 ServerHello"
    );
    let reply = first_server_record(server.addr, [0x03, 0x02]).await?;
    assert_eq!(reply[0], 21, "expected a TLS alert record, got {reply:?}");
    assert_eq!(
        reply[6], 70,
        "expected a protocol_version alert, got {reply:?}"
    );
    server.stop().await
}

/// Sends a ClientHello with `version` as its highest version and returns
/// the first 7 bytes the server answers (record header + alert body).
async fn first_server_record(addr: SocketAddr, version: [u8; 2]) -> Result<[u8; 7]> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(&client_hello(version)).await?;
    let mut reply = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut reply)).await??;
    Ok(reply)
}

/// A minimal ClientHello without supported_versions (so `version` is the
/// highest offered), with suites, groups and signature schemes a TLS 1.2
/// server with an ECDSA certificate can accept.
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    fn with_len16(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }
    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(with_len16(data));
        out
    }
    let mut body = version.to_vec();
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // no session id
    // ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256
    body.extend(with_len16(&[0xc0, 0x2b, 0xc0, 0x2f]));
    body.extend_from_slice(&[0x01, 0x00]); // null compression only
    let mut extensions = Vec::new();
    extensions.extend(extension(0x000a, &with_len16(&[0x00, 0x1d, 0x00, 0x17]))); // groups
    extensions.extend(extension(0x000b, &[0x01, 0x00])); // point formats
    extensions.extend(extension(
        0x000d,
        &with_len16(&[0x04, 0x03, 0x08, 0x04, 0x04, 0x01]),
    )); // sig algs
    body.extend(with_len16(&extensions));
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(with_len16(&handshake));
    record
}

/// The end-entity certificate a fresh connection is served.
async fn served_cert(server: &Running) -> Result<Vec<u8>> {
    served_certificate(server.ca.cert_pem(), &server.url("/healthz")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_no_request() -> Result<()> {
    let server = start(Mode::Enforce).await?;
    let before = served_cert(&server).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let client = client(&server.ca, true)?;
        let url = server.url("/validate");
        let (stop, ok, failures) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failures));
        loops.push(tokio::spawn(async move {
            let body = good_pod();
            // Bounded in count and time whatever happens.
            let deadline = Instant::now() + Duration::from_secs(30);
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                match post_review(&client, &url, &body).await {
                    Ok(reply) if reply["response"]["allowed"] == true => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(reply) => failures
                        .lock()
                        .map(|mut f| f.push(reply.to_string()))
                        .unwrap_or(()),
                    Err(error) => failures
                        .lock()
                        .map(|mut f| f.push(format!("{error:#}")))
                        .unwrap_or(()),
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    // Rotate the way a careless tool would: certificate first, key a moment
    // later. In between the pair does not match and must not be served.
    let next = server
        .ca
        .issue_serving(&["localhost".to_string()], &["127.0.0.1".parse()?])?;
    std::fs::write(&server.cert_path, &next.cert_pem)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&server.key_path, &next.key_pem)?;

    let expected = certificate_der(&next.cert_pem)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = served_cert(&server).await?;
        if served == expected {
            break;
        }
        if Instant::now() > deadline {
            bail!("the rotated certificate was never served");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(before, expected);
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    for handle in loops {
        handle.await?;
    }
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    let ok = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    eprintln!("{ok} requests answered during the rotation, none failed");
    assert!(ok > 20, "only {ok} requests went through during rotation");
    server.stop().await
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() -> Result<()> {
    let mut server = start(Mode::Enforce).await?;
    let client = client(&server.ca, false)?;
    // A request whose body arrives in two parts, with shutdown in between.
    let body = privileged_pod().to_string().into_bytes();
    let (head, tail) = body.split_at(16);
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    let request = tokio::spawn(
        client
            .post(server.url("/validate"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    );
    tx.send(head.to_vec()).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(stop) = server.stop.take() {
        let _ = stop.send(());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.send(tail.to_vec()).await?;
    drop(tx);

    let response = request.await??;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await?;
    assert_eq!(reply["response"]["allowed"], false, "{reply}");
    // New connections are refused once the server has stopped.
    server.stop().await?;
    Ok(())
}
