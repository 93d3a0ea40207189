//! TLS for the webhook: a rustls server configuration (TLS 1.2 and 1.3 only,
//! ring provider) whose certificate is re-read from disk whenever the files
//! change, so a rotated Secret takes effect without a restart and without
//! failing a single handshake.
//!
//! Why ring rather than aws-lc-rs: kube's own rustls client already uses
//! ring, so one provider serves both sides, and ring builds without the
//! cmake/C toolchain that aws-lc-sys needs on a small build machine. The
//! provider is passed explicitly, so no process-wide default is required.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::task::JoinHandle;

use crate::admission::metrics::Metrics;

/// Why the serving certificate could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("parsing PEM in {path}: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("certificate {cert} and key {key} do not form a usable pair: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("building the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The crypto provider used for the webhook's TLS.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serves the certificate most recently loaded from `cert_path`/`key_path`.
///
/// Handshakes read the current key through an [`ArcSwap`], so a reload never
/// blocks or fails a handshake; established connections keep the key they
/// were set up with.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The file contents behind `current`, to notice any change (including a
    /// Secret's atomic symlink swap, which leaves mtimes unreliable).
    loaded_from: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ReloadingCert {
    /// Loads the pair once; failing here fails start-up.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<Self>, TlsError> {
        let (cert_pem, key_pem) = read_pair(cert_path, key_path)?;
        let key = certified_key(cert_path, key_path, &cert_pem, &key_pem, &provider)?;
        Ok(Arc::new(ReloadingCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            current: ArcSwap::from_pointee(key),
            loaded_from: Mutex::new((cert_pem, key_pem)),
        }))
    }

    /// Re-reads the files; swaps the served certificate if they changed and
    /// form a valid pair. Returns whether a new certificate is now served.
    ///
    /// A half-rotated pair (new certificate, old key) is rejected and the old
    /// certificate stays in service until the next poll sees both files.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = read_pair(&self.cert_path, &self.key_path)?;
        {
            let loaded = self
                .loaded_from
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if loaded.0 == cert_pem && loaded.1 == key_pem {
                return Ok(false);
            }
        }
        let key = certified_key(
            &self.cert_path,
            &self.key_path,
            &cert_pem,
            &key_pem,
            &self.provider,
        )?;
        self.current.store(Arc::new(key));
        *self
            .loaded_from
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (cert_pem, key_pem);
        Ok(true)
    }

    /// The end-entity certificate currently served (DER).
    pub fn current_cert_der(&self) -> Option<CertificateDer<'static>> {
        self.current.load().cert.first().cloned()
    }

    /// Polls the files every `interval` until the task is aborted.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick fires at once; the pair was just loaded.
            ticker.tick().await;
            let mut last_error: Option<String> = None;
            loop {
                ticker.tick().await;
                // File reads are blocking; keep them off the async workers.
                let worker = Arc::clone(&this);
                let outcome = tokio::task::spawn_blocking(move || worker.reload_if_changed()).await;
                match outcome {
                    Ok(Ok(true)) => {
                        metrics.cert_reload("reloaded");
                        last_error = None;
                        tracing::info!(cert = %this.cert_path.display(), "serving certificate reloaded");
                    }
                    Ok(Ok(false)) => last_error = None,
                    Ok(Err(error)) => {
                        let text = error.to_string();
                        // Log a persistent problem once, not every second.
                        if last_error.as_deref() != Some(text.as_str()) {
                            metrics.cert_reload("failed");
                            tracing::warn!(%error, "keeping the current certificate");
                            last_error = Some(text);
                        }
                    }
                    Err(join_error) => {
                        tracing::error!(%join_error, "certificate reload task failed");
                    }
                }
            }
        })
    }
}

/// A rustls server configuration serving `resolver`'s certificate over TLS
/// 1.3 or 1.2 (nothing older), with HTTP/2 and HTTP/1.1 offered via ALPN.
pub fn server_config(
    resolver: Arc<ReloadingCert>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    Ok((read(cert_path)?, read(key_path)?))
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert_path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Pem {
        path: key_path.to_path_buf(),
        source,
    })?;
    let pair_error = |source| TlsError::Pair {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        source,
    };
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(pair_error)?;
    // from_der tolerates "cannot tell"; during a rotation we must be sure.
    certified.keys_match().map_err(pair_error)?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::certs::CertAuthority;

    fn write_pair(dir: &Path, ca: &CertAuthority) -> (PathBuf, PathBuf) {
        let serving = ca
            .issue_serving(
                &["localhost".to_string()],
                &[std::net::IpAddr::from([127, 0, 0, 1])],
            )
            .unwrap_or_else(|e| panic!("issue: {e}"));
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        std::fs::write(&cert, &serving.cert_pem).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&key, &serving.key_pem).unwrap_or_else(|e| panic!("{e}"));
        (cert, key)
    }

    #[test]
    fn reload_swaps_only_complete_pairs() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ca = CertAuthority::generate("test CA").unwrap_or_else(|e| panic!("{e}"));
        let (cert_path, key_path) = write_pair(dir.path(), &ca);
        let reloading = ReloadingCert::load(&cert_path, &key_path, crypto_provider())
            .unwrap_or_else(|e| panic!("{e}"));
        let first = reloading.current_cert_der();
        assert!(
            !reloading.reload_if_changed().unwrap_or(true),
            "unchanged files"
        );

        // New certificate, old key: rejected, old pair still served.
        let next = ca
            .issue_serving(&["localhost".to_string()], &[])
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&cert_path, &next.cert_pem).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            reloading.reload_if_changed(),
            Err(TlsError::Pair { .. })
        ));
        assert_eq!(reloading.current_cert_der(), first);

        // Key arrives: swapped.
        std::fs::write(&key_path, &next.key_pem).unwrap_or_else(|e| panic!("{e}"));
        assert!(reloading.reload_if_changed().unwrap_or(false));
        assert_ne!(reloading.current_cert_der(), first);
    }

    #[test]
    fn garbage_files_fail_to_load() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, "not a certificate").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&key, "not a key").unwrap_or_else(|e| panic!("{e}"));
        let err = ReloadingCert::load(&cert, &key, crypto_provider()).err();
        assert!(
            matches!(err, Some(TlsError::NoCertificate { .. })),
            "{err:?}"
        );
        let missing = ReloadingCert::load(&dir.path().join("nope"), &key, crypto_provider()).err();
        assert!(
            matches!(missing, Some(TlsError::Read { .. })),
            "{missing:?}"
        );
    }
}
