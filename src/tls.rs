//! All rustls construction: the public listener's server config with a hot-reloadable
//! certificate, and the client configs used to reach upstreams.
//!
//! The certificate and key are re-read when their files change (polled) or on demand (SIGHUP).
//! A pair that fails to load or does not match keeps the previous one in service: a bad deploy
//! of a certificate must never take the gateway down or drop connections.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::ring as provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate, key or CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected and not found.
        what: &'static str,
    },
    /// rustls refused the material.
    #[error("{context}: {source}")]
    Rustls {
        /// Which material.
        context: String,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE block found; expected a PEM certificate chain, leaf first",
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::Pem {
            path: path.to_owned(),
            what: "no private key found; expected a PEM PKCS#8, PKCS#1 or SEC1 key",
        })
}

/// Loads a certificate chain and its key and checks that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let signing =
        provider::sign::any_supported_type(&key_der).map_err(|source| TlsError::Rustls {
            context: format!("{}: unsupported key", key.display()),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|source| TlsError::Rustls {
        context: format!("{} and {} do not match", cert.display(), key.display()),
        source,
    })?;
    Ok(certified)
}

/// What an operator needs to know of a certificate: the names it is valid for and when
/// it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Its DNS and IP subject alternative names, else its subject.
    pub names: Vec<String>,
    /// Its `notAfter`, in seconds since the epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// Reads `der`; `None` when it is not a certificate x509-cert can decode.
    pub fn of(der: &CertificateDer<'_>) -> Option<CertInfo> {
        use x509_cert::der::Decode;
        use x509_cert::ext::pkix::name::GeneralName;
        use x509_cert::ext::pkix::SubjectAltName;
        let cert = x509_cert::Certificate::from_der(der.as_ref()).ok()?;
        let tbs = &cert.tbs_certificate;
        let not_after = tbs.validity.not_after.to_unix_duration().as_secs() as i64;
        let mut names = Vec::new();
        for ext in tbs.extensions.iter().flatten() {
            if ext.extn_id != <SubjectAltName as x509_cert::der::oid::AssociatedOid>::OID {
                continue;
            }
            let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else {
                continue;
            };
            for name in san.0 {
                match name {
                    GeneralName::DnsName(n) => names.push(n.to_string()),
                    GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                        4 | 16 => names.push(ip_text(ip.as_bytes())),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        if names.is_empty() {
            names.push(tbs.subject.to_string());
        }
        Some(CertInfo { names, not_after })
    }
}

fn ip_text(bytes: &[u8]) -> String {
    match <[u8; 4]>::try_from(bytes) {
        Ok(v4) => std::net::Ipv4Addr::from(v4).to_string(),
        Err(_) => <[u8; 16]>::try_from(bytes)
            .map(|v6| std::net::Ipv6Addr::from(v6).to_string())
            .unwrap_or_default(),
    }
}

/// The server certificate in service, replaceable while connections are open.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    stamp: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl CertStore {
    /// Loads the pair once; start-up fails if it is unusable.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertStore>, TlsError> {
        let certified = load_certified_key(cert_path, key_path)?;
        Ok(Arc::new(CertStore {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: ArcSwap::from_pointee(certified),
            stamp: std::sync::Mutex::new((mtime(cert_path), mtime(key_path))),
        }))
    }

    /// The certificate in service: its names and when it expires.
    pub fn info(&self) -> Option<CertInfo> {
        CertInfo::of(self.current.load().end_entity_cert().ok()?)
    }

    /// Re-reads the pair. On failure the previous pair stays in service and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = (mtime(&self.cert_path), mtime(&self.key_path));
        let certified = load_certified_key(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(certified));
        if let Ok(mut s) = self.stamp.lock() {
            *s = stamps;
        }
        Ok(())
    }

    /// Reloads when either file's modification time changed since the last load. Returns
    /// `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = (mtime(&self.cert_path), mtime(&self.key_path));
        let changed = match self.stamp.lock() {
            Ok(s) => *s != now,
            Err(_) => true,
        };
        if !changed {
            return None;
        }
        let result = self.reload();
        if result.is_err() {
            // Remember the broken stamps so a bad pair is reported once, not on every poll.
            if let Ok(mut s) = self.stamp.lock() {
                *s = now;
            }
        }
        Some(result)
    }

    /// Polls the files until `shutdown` resolves, reloading on change.
    pub async fn watch(self: Arc<Self>, every: Duration, metrics: Arc<crate::metrics::Metrics>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload_if_changed() {
                None => {}
                Some(Ok(())) => {
                    metrics
                        .cert_reloads
                        .get_or_create(&crate::metrics::OutcomeLabel::ok())
                        .inc();
                    tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                }
                Some(Err(e)) => {
                    metrics
                        .cert_reloads
                        .get_or_create(&crate::metrics::OutcomeLabel::failed())
                        .inc();
                    tracing::error!(error = %e, "TLS certificate reload failed; keeping the previous certificate");
                }
            }
        }
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The public listener's rustls config: TLS 1.2 and 1.3, ALPN h2 then http/1.1.
pub fn server_config(certs: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|source| TlsError::Rustls {
                context: "TLS versions".to_owned(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A rustls client config trusting the public web PKI plus, optionally, the CAs in `extra_ca`.
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|source| TlsError::Rustls {
                context: format!("{}: CA certificate", path.display()),
                source,
            })?;
        }
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|source| TlsError::Rustls {
                context: "TLS versions".to_owned(),
                source,
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(config)
}

/// The connector for outbound HTTPS (and plain HTTP where configured): rustls trusting the web
/// PKI plus `ca_file`, HTTP/1.1, a connect timeout. One for the upstreams and the provider.
pub fn https_connector(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    TlsError,
> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    // Requests are written whole; Nagle would only hold back their last segment.
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(ca_file)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}
