//! Certificates for the webhook: a private CA and a serving certificate
//! signed by it (rcgen, ECDSA P-256), as used by `aiops-operator certs`.
//!
//! The API server trusts the CA through the webhook configurations'
//! `caBundle`; the webhook serves `tls.crt`/`tls.key`. The CA key is kept in
//! memory only: re-running the command makes a fresh CA, which is then
//! published again with the `caBundle` patch.
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Why certificates could not be generated or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("a serving certificate needs at least one --dns name or --ip address")]
    NoSubjectNames,
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// CA validity: long, since rotating the CA means re-publishing `caBundle`.
const CA_VALIDITY_DAYS: i64 = 3650;
/// Serving certificate validity.
const SERVING_VALIDITY_DAYS: i64 = 365;

/// A freshly generated certificate authority able to sign serving certificates.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A serving certificate and its private key, PEM encoded.
#[derive(Debug, Clone)]
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
}

fn generate_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |source| CertError::Generate { what, source }
}

/// Validity starting a little in the past, so a node whose clock runs
/// slightly behind still accepts a certificate made a moment ago.
fn validity(days: i64) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - Duration::hours(1), now + Duration::days(days))
}

impl CertAuthority {
    /// Generates a self-signed CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate().map_err(generate_error("the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity(CA_VALIDITY_DAYS);
        let cert = params
            .self_signed(&key)
            .map_err(generate_error("the CA certificate"))?;
        Ok(CertAuthority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (the `caBundle` content).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a serving certificate for the given DNS names and IP addresses.
    pub fn issue_serving(&self, dns: &[String], ips: &[IpAddr]) -> Result<ServingCert, CertError> {
        let validity = std::time::Duration::from_secs(SERVING_VALIDITY_DAYS as u64 * 86_400);
        self.issue_serving_valid_for(dns, ips, validity)
    }

    /// [`CertAuthority::issue_serving`] with a chosen lifetime.
    pub fn issue_serving_valid_for(
        &self,
        dns: &[String],
        ips: &[IpAddr],
        validity: std::time::Duration,
    ) -> Result<ServingCert, CertError> {
        if dns.is_empty() && ips.is_empty() {
            return Err(CertError::NoSubjectNames);
        }
        let key = KeyPair::generate().map_err(generate_error("the serving key"))?;
        let mut params =
            CertificateParams::new(dns.to_vec()).map_err(generate_error("the DNS names"))?;
        params
            .subject_alt_names
            .extend(ips.iter().copied().map(SanType::IpAddress));
        params.distinguished_name = rcgen::DistinguishedName::new();
        let common_name = dns
            .first()
            .cloned()
            .or_else(|| ips.first().map(IpAddr::to_string))
            .unwrap_or_default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        let lifetime =
            Duration::try_from(validity).unwrap_or(Duration::days(SERVING_VALIDITY_DAYS));
        (params.not_before, params.not_after) = (now - Duration::hours(1), now + lifetime);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate_error("the serving certificate"))?;
        Ok(ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Paths written by [`write_webhook_certs`].
#[derive(Debug, Clone)]
pub struct WrittenCerts {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Generates a CA and a serving certificate and writes `ca.crt`, `tls.crt`
/// and `tls.key` (mode 0600) into `out`, creating it if needed.
pub fn write_webhook_certs(
    out: &Path,
    dns: &[String],
    ips: &[IpAddr],
) -> Result<WrittenCerts, CertError> {
    let ca = CertAuthority::generate("aiops-operator webhook CA")?;
    let serving = ca.issue_serving(dns, ips)?;
    std::fs::create_dir_all(out).map_err(|source| CertError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let written = WrittenCerts {
        ca_cert: out.join("ca.crt"),
        cert: out.join("tls.crt"),
        key: out.join("tls.key"),
    };
    write_file(&written.ca_cert, ca.cert_pem().as_bytes(), false)?;
    write_file(&written.cert, serving.cert_pem.as_bytes(), false)?;
    write_file(&written.key, serving.key_pem.as_bytes(), true)?;
    Ok(written)
}

/// Writes a file; a private key is created readable by its owner only.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let error = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = options.open(path).map_err(error)?;
    file.write_all(contents).map_err(error)?;
    Ok(())
}

/// Flags of `aiops-operator certs`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long, default_value = "webhook-certs")]
    pub out: PathBuf,
    /// DNS name for the serving certificate (repeatable), e.g.
    /// aiops-operator-webhook.aiops-system.svc
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// IP address for the serving certificate (repeatable), e.g. 127.0.0.1
    #[arg(long = "ip", value_name = "IP")]
    pub ip: Vec<IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_three_files_and_a_private_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join("certs");
        let written = write_webhook_certs(
            &out,
            &["aiops-operator-webhook.aiops-system.svc".to_string()],
            &[IpAddr::from([127, 0, 0, 1])],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for path in [&written.ca_cert, &written.cert, &written.key] {
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
            assert!(text.starts_with("-----BEGIN "), "{}", path.display());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&written.key)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn refuses_a_certificate_without_names() {
        let ca = CertAuthority::generate("t").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            ca.issue_serving(&[], &[]),
            Err(CertError::NoSubjectNames)
        ));
    }
}
