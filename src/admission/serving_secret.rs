//! Keeps the webhook's serving certificate in a Secret with no manual step
//! (`run --webhook-cert-secret`): when the Secret is missing, unreadable,
//! near expiry or made for other names, a replica makes a new CA and serving
//! pair (rcgen, [`CertAuthority`]) and stores them; every replica then
//! publishes that CA into the webhook configurations' `caBundle` and writes
//! the pair where the hot reload ([`crate::admission::tls`]) picks it up.
//!
//! Who writes: whichever replica notices first. Every write is conditional
//! (a create, or a replace carrying the resourceVersion read), so a replica
//! that loses the race gets a conflict, reads the winner's pair and uses it.
//!
//! No request fails during a rotation because the order is fixed:
//! 1. the writer adds the new CA to `caBundle` (keeping the old one), waits
//!    for the API server to load it, and only then stores the Secret;
//! 2. a replica serves a pair only once `caBundle` holds its CA (adding it
//!    and waiting first, if another replica has not).
//!
//! `caBundle` edits are read-modify-write with the resourceVersion too, and
//! only ever add the current CA; older CAs leave only when expired or when
//! more than [`KEPT_CAS`] are present, so a concurrent edit never drops a CA
//! that another replica serves.
//!
//! Each rotation makes a fresh CA, and the CA's key is never stored: nobody
//! can mint another certificate the webhook configurations would trust.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use time::OffsetDateTime;
use tracing::Instrument;

use crate::admission::certs::{CertAuthority, CertError};

/// At most this many CAs stay in `caBundle` (the current one included).
pub const KEPT_CAS: usize = 4;

/// Why the serving Secret could not be made, read or published.
#[derive(Debug, thiserror::Error)]
pub enum ServingSecretError {
    #[error("reading the Secret {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the Secret {namespace}/{name}: {source}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("generating certificates: {0}")]
    Generate(#[from] CertError),
    #[error("reading {kind} {name}: {source}")]
    GetWebhooks {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating caBundle of {kind} {name}: {source}")]
    PatchWebhooks {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {name} kept changing; caBundle not updated")]
    Contended { kind: &'static str, name: String },
    #[error("writing {path}: {source}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Secret {namespace}/{name} changed under every attempt")]
    Unsettled { namespace: String, name: String },
}

/// What the keeper looks after, from the `run` flags.
#[derive(Debug, Clone)]
pub struct ServingSecretConfig {
    pub namespace: String,
    pub secret: String,
    /// DNS names the serving certificate must carry (the Service's names).
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Where tls.crt/tls.key (and ca.crt) are written for the hot reload.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub validating: Vec<String>,
    pub mutating: Vec<String>,
    /// Lifetime of a new serving certificate.
    pub validity: Duration,
    /// Renew when less than this remains.
    pub renew_before: Duration,
    /// How long the API server is given to load a new `caBundle` before a
    /// certificate signed by the new CA is served.
    pub propagation: Duration,
    /// How often expiry is checked besides the Secret's watch events.
    pub check_every: Duration,
}

/// The DNS names of a Service, as clients inside the cluster may use them.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// The three PEM files of the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl Pair {
    fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let text = |key: &str| {
            data.get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|v| !v.trim().is_empty())
        };
        Some(Pair {
            ca: text("ca.crt")?,
            cert: text("tls.crt")?,
            key: text("tls.key")?,
        })
    }

    fn secret_data(&self) -> std::collections::BTreeMap<String, ByteString> {
        [
            ("ca.crt", &self.ca),
            ("tls.crt", &self.cert),
            ("tls.key", &self.key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
        .collect()
    }
}

/// Why a pair has to be replaced; `None` means it is good.
pub fn renewal_reason(
    pair: Option<&Pair>,
    dns: &[String],
    ips: &[IpAddr],
    renew_before: Duration,
    now: OffsetDateTime,
) -> Option<String> {
    let Some(pair) = pair else {
        return Some("missing or incomplete".into());
    };
    let Some(cert) = parse_cert(&pair.cert) else {
        return Some("tls.crt is not a certificate".into());
    };
    let Some(ca) = parse_cert(&pair.ca) else {
        return Some("ca.crt is not a certificate".into());
    };
    let renew_before = time::Duration::try_from(renew_before).unwrap_or(time::Duration::MAX);
    for (what, info) in [("tls.crt", &cert), ("ca.crt", &ca)] {
        if info.not_after - now < renew_before {
            return Some(format!("{what} expires at {}", info.not_after));
        }
    }
    if let Some(missing) = dns.iter().find(|name| !cert.dns.contains(name)) {
        return Some(format!("tls.crt lacks the name {missing}"));
    }
    if let Some(missing) = ips.iter().find(|ip| !cert.ips.contains(ip)) {
        return Some(format!("tls.crt lacks the address {missing}"));
    }
    if cert.issuer != ca.subject {
        return Some("tls.crt was not issued by ca.crt".into());
    }
    None
}

/// What the keeper needs to know about one certificate.
#[derive(Debug, Clone)]
struct CertInfo {
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
}

fn parse_cert(pem: &str) -> Option<CertInfo> {
    use x509_parser::extensions::GeneralName;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(name) => dns.push((*name).to_string()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => ips.extend(<[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from)),
                    16 => ips.extend(<[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from)),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some(CertInfo {
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        subject: cert.subject().as_raw().to_vec(),
        issuer: cert.issuer().as_raw().to_vec(),
        dns,
        ips,
    })
}

/// Splits a PEM bundle into its certificates, as PEM blocks.
fn split_bundle(bundle: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    bundle
        .split_inclusive(END)
        .filter_map(|block| {
            let start = block.find("-----BEGIN CERTIFICATE-----")?;
            block[start..]
                .ends_with(END)
                .then(|| format!("{}\n", &block[start..]))
        })
        .collect()
}

/// The bundle that trusts `current` and keeps the still-valid CAs already
/// there (newest first), at most [`KEPT_CAS`] in all. `None`: no change.
pub fn merged_bundle(existing: &str, current: &str, now: OffsetDateTime) -> Option<String> {
    let current = split_bundle(current).into_iter().next()?;
    let present = split_bundle(existing);
    if present.iter().any(|ca| ca.trim() == current.trim()) {
        return None;
    }
    let mut others: Vec<(OffsetDateTime, String)> = present
        .into_iter()
        .filter_map(|pem| {
            let info = parse_cert(&pem)?;
            (info.not_after > now).then_some((info.not_before, pem))
        })
        .collect();
    others.sort_by_key(|other| std::cmp::Reverse(other.0));
    let mut bundle = current;
    for (_, pem) in others.into_iter().take(KEPT_CAS - 1) {
        bundle.push_str(&pem);
    }
    Some(bundle)
}

/// Keeps the Secret, the webhook configurations' `caBundle` and the files
/// the webhook serves from in step.
pub struct ServingSecret {
    client: kube::Client,
    config: ServingSecretConfig,
}

impl ServingSecret {
    pub fn new(client: kube::Client, config: ServingSecretConfig) -> Self {
        ServingSecret { client, config }
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn read_error(&self) -> impl Fn(kube::Error) -> ServingSecretError + '_ {
        move |source| ServingSecretError::Read {
            namespace: self.config.namespace.clone(),
            name: self.config.secret.clone(),
            source,
        }
    }

    fn write_error(&self) -> impl Fn(kube::Error) -> ServingSecretError + '_ {
        move |source| ServingSecretError::Write {
            namespace: self.config.namespace.clone(),
            name: self.config.secret.clone(),
            source,
        }
    }

    /// Makes sure a good pair is stored, trusted and on disk. Run once
    /// before the webhook starts, then on every change and check.
    pub async fn reconcile(&self) -> Result<(), ServingSecretError> {
        let pair = self.ensure_stored().await?;
        let patched = self.trust(&pair.ca).await?;
        if patched {
            tokio::time::sleep(self.config.propagation).await;
        }
        self.write_files(&pair).await
    }

    /// The stored pair, replaced first when it needs renewal. A lost race
    /// (conflict) means another replica wrote one: it is read and used.
    async fn ensure_stored(&self) -> Result<Pair, ServingSecretError> {
        let api = self.secrets();
        for _ in 0..5 {
            let found = api
                .get_opt(&self.config.secret)
                .await
                .map_err(self.read_error())?;
            let pair = found.as_ref().and_then(Pair::from_secret);
            let reason = renewal_reason(
                pair.as_ref(),
                &self.config.dns,
                &self.config.ips,
                self.config.renew_before,
                OffsetDateTime::now_utc(),
            );
            let (Some(reason), found) = (reason, found) else {
                // No reason to renew means a complete pair was read.
                if let Some(pair) = pair {
                    return Ok(pair);
                }
                continue;
            };
            tracing::info!(reason = %reason, "making a new webhook CA and serving certificate");
            let fresh = self.generate()?;
            // Trusted before anyone can serve it (see the module comment).
            if self.trust(&fresh.ca).await? {
                tokio::time::sleep(self.config.propagation).await;
            }
            let written = match found {
                None => {
                    let secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(self.config.secret.clone()),
                            labels: Some(
                                [(
                                    "app.kubernetes.io/managed-by".to_string(),
                                    "aiops-operator".to_string(),
                                )]
                                .into(),
                            ),
                            ..ObjectMeta::default()
                        },
                        type_: Some("kubernetes.io/tls".into()),
                        data: Some(fresh.secret_data()),
                        ..Secret::default()
                    };
                    api.create(&PostParams::default(), &secret).await
                }
                Some(mut secret) => {
                    // Replace carries the resourceVersion read above.
                    secret.data = Some(fresh.secret_data());
                    secret.string_data = None;
                    api.replace(&self.config.secret, &PostParams::default(), &secret)
                        .await
                }
            };
            match written {
                Ok(_) => {
                    tracing::info!(secret = %self.config.secret, "stored a new serving pair");
                    return Ok(fresh);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::info!(secret = %self.config.secret, "another replica stored a pair first; using it");
                }
                Err(source) => return Err(self.write_error()(source)),
            }
        }
        Err(ServingSecretError::Unsettled {
            namespace: self.config.namespace.clone(),
            name: self.config.secret.clone(),
        })
    }

    fn generate(&self) -> Result<Pair, ServingSecretError> {
        let ca = CertAuthority::generate("aiops-operator webhook CA")?;
        let serving =
            ca.issue_serving_valid_for(&self.config.dns, &self.config.ips, self.config.validity)?;
        Ok(Pair {
            ca: ca.cert_pem().to_string(),
            cert: serving.cert_pem,
            key: serving.key_pem,
        })
    }

    /// Adds `ca` to every webhook's `caBundle`; whether anything changed.
    async fn trust(&self, ca: &str) -> Result<bool, ServingSecretError> {
        let mut changed = false;
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        for name in &self.config.validating {
            changed |= trust_in(
                &validating,
                "ValidatingWebhookConfiguration",
                name,
                ca,
                |c| {
                    c.webhooks
                        .iter()
                        .flatten()
                        .map(|w| (w.name.clone(), w.client_config.ca_bundle.clone()))
                        .collect()
                },
            )
            .await?;
        }
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        for name in &self.config.mutating {
            changed |= trust_in(&mutating, "MutatingWebhookConfiguration", name, ca, |c| {
                c.webhooks
                    .iter()
                    .flatten()
                    .map(|w| (w.name.clone(), w.client_config.ca_bundle.clone()))
                    .collect()
            })
            .await?;
        }
        Ok(changed)
    }

    /// Writes ca.crt, then the key and the certificate. The reload rejects
    /// a half-written pair and keeps serving the old one until both match.
    async fn write_files(&self, pair: &Pair) -> Result<(), ServingSecretError> {
        let ca_file = self
            .config
            .cert_file
            .parent()
            .unwrap_or(Path::new("."))
            .join("ca.crt");
        for (path, contents) in [
            (&ca_file, &pair.ca),
            (&self.config.key_file, &pair.key),
            (&self.config.cert_file, &pair.cert),
        ] {
            write_if_changed(path, contents).await?;
        }
        Ok(())
    }

    /// Reconciles now, then on every change of the Secret (a deletion
    /// included) and every `check_every`, until the task is dropped.
    /// Failures are logged and retried; they never stop the webhook, which
    /// keeps serving the pair it has.
    pub async fn run(self) {
        let span = tracing::info_span!("serving_secret", secret = %self.config.secret, namespace = %self.config.namespace);
        async move {
            let watch_config = watcher::Config::default()
                .fields(&format!("metadata.name={}", self.config.secret));
            let mut events = watcher::watcher(self.secrets(), watch_config).boxed();
            let mut ticker = tokio::time::interval(self.config.check_every);
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)) => {}
                        Some(Ok(_)) => continue,
                        Some(Err(error)) => {
                            tracing::warn!(%error, "watching the serving Secret");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                        None => return,
                    },
                    _ = ticker.tick() => {}
                }
                if let Err(error) = self.reconcile().await {
                    tracing::warn!(%error, "keeping the serving certificate");
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// Read-modify-write of one configuration's `caBundle`s, conditional on its
/// resourceVersion; retried on conflict.
async fn trust_in<K>(
    api: &Api<K>,
    kind: &'static str,
    name: &str,
    ca: &str,
    webhooks: impl Fn(&K) -> Vec<(String, Option<ByteString>)>,
) -> Result<bool, ServingSecretError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let now = OffsetDateTime::now_utc();
    for _ in 0..5 {
        let config = api
            .get(name)
            .await
            .map_err(|source| ServingSecretError::GetWebhooks {
                kind,
                name: name.to_string(),
                source,
            })?;
        let entries: Vec<serde_json::Value> = webhooks(&config)
            .into_iter()
            .filter_map(|(webhook, bundle)| {
                let existing = bundle
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .unwrap_or_default();
                let merged = merged_bundle(&existing, ca, now)?;
                Some(json!({
                    "name": webhook,
                    "clientConfig": {"caBundle": ByteString(merged.into_bytes())},
                }))
            })
            .collect();
        if entries.is_empty() {
            return Ok(false);
        }
        // resourceVersion in the patch makes it conditional: a concurrent
        // edit is a conflict, not a silently dropped CA.
        let patch = json!({
            "metadata": {"resourceVersion": config.meta().resource_version},
            "webhooks": entries,
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(kind, name, "added the current CA to caBundle");
                return Ok(true);
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(source) => {
                return Err(ServingSecretError::PatchWebhooks {
                    kind,
                    name: name.to_string(),
                    source,
                });
            }
        }
    }
    Err(ServingSecretError::Contended {
        kind,
        name: name.to_string(),
    })
}

/// Replaces a file through a temporary one and a rename, so a reader sees
/// the old or the new contents, never a part; the key is owner-only.
async fn write_if_changed(path: &Path, contents: &str) -> Result<(), ServingSecretError> {
    if tokio::fs::read_to_string(path).await.ok().as_deref() == Some(contents) {
        return Ok(());
    }
    let error = |source| ServingSecretError::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(error)?;
    }
    let temporary = path.with_extension("tmp");
    tokio::fs::write(&temporary, contents)
        .await
        .map_err(error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
            .await
            .map_err(error)?;
    }
    tokio::fs::rename(&temporary, path).await.map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        service_dns_names("aiops-operator-webhook", "aiops-system")
    }

    fn pair(validity: Duration) -> Pair {
        let ca = CertAuthority::generate("t").unwrap_or_else(|e| panic!("{e}"));
        let serving = ca
            .issue_serving_valid_for(&names(), &[], validity)
            .unwrap_or_else(|e| panic!("{e}"));
        Pair {
            ca: ca.cert_pem().to_string(),
            cert: serving.cert_pem,
            key: serving.key_pem,
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_fresh_pair_for_the_service_names_is_kept() {
        let now = OffsetDateTime::now_utc();
        let reason = renewal_reason(Some(&pair(90 * DAY)), &names(), &[], 30 * DAY, now);
        assert_eq!(reason, None);
    }

    #[test]
    fn a_missing_a_near_expiry_or_a_misnamed_pair_is_renewed() {
        let now = OffsetDateTime::now_utc();
        assert!(renewal_reason(None, &names(), &[], 30 * DAY, now).is_some());
        let expiring = renewal_reason(Some(&pair(10 * DAY)), &names(), &[], 30 * DAY, now);
        assert!(expiring.is_some_and(|r| r.contains("tls.crt expires")));
        let other_names = vec!["elsewhere.example".to_string()];
        let misnamed = renewal_reason(Some(&pair(90 * DAY)), &other_names, &[], DAY, now);
        assert!(misnamed.is_some_and(|r| r.contains("elsewhere.example")));
        let ip = [IpAddr::from([127, 0, 0, 1])];
        assert!(renewal_reason(Some(&pair(90 * DAY)), &names(), &ip, DAY, now).is_some());
    }

    #[test]
    fn a_serving_certificate_from_another_ca_is_renewed() {
        let now = OffsetDateTime::now_utc();
        let mut mixed = pair(90 * DAY);
        let other = CertAuthority::generate("other").unwrap_or_else(|e| panic!("{e}"));
        mixed.ca = other.cert_pem().to_string();
        assert!(renewal_reason(Some(&mixed), &names(), &[], DAY, now).is_some());
    }

    #[test]
    fn the_bundle_gains_the_new_ca_and_keeps_the_old_one() {
        let now = OffsetDateTime::now_utc();
        let old = pair(90 * DAY).ca;
        let new = pair(90 * DAY).ca;
        let merged = merged_bundle(&old, &new, now).unwrap_or_default();
        assert_eq!(split_bundle(&merged), [new.clone(), old.clone()]);
        assert_eq!(merged_bundle(&merged, &new, now), None, "already trusted");
        assert_eq!(merged_bundle(&merged, &old, now), None, "already trusted");
    }

    #[test]
    fn the_bundle_keeps_at_most_a_few_cas() {
        let now = OffsetDateTime::now_utc();
        let mut bundle = String::new();
        for _ in 0..6 {
            let ca = pair(90 * DAY).ca;
            bundle = merged_bundle(&bundle, &ca, now).unwrap_or_default();
        }
        assert_eq!(split_bundle(&bundle).len(), KEPT_CAS);
    }

    #[test]
    fn the_service_names_cover_every_in_cluster_spelling() {
        assert_eq!(
            service_dns_names("w", "ns"),
            ["w", "w.ns", "w.ns.svc", "w.ns.svc.cluster.local"]
        );
    }
}
