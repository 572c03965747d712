//! Development certificates: a throw-away CA and a server certificate for localhost, so the
//! demo and the tests need no openssl. Production certificates never come from here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Why the development certificates could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// Generating a key or certificate failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing a file failed.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Files written by [`write`].
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// The CA certificate clients should trust.
    pub ca: PathBuf,
    /// The server certificate chain.
    pub cert: PathBuf,
    /// The server private key (mode 0600).
    pub key: PathBuf,
}

/// Host names every development certificate covers.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Writes `dev-ca.pem`, `gateway.pem` and `gateway.key` into `dir` for `localhost`,
/// `127.0.0.1`, `::1` and `extra_names`.
pub fn write(dir: &Path, extra_names: &[String]) -> Result<DevCerts, DevCertError> {
    fs::create_dir_all(dir).map_err(|source| DevCertError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(
        DnType::CommonName,
        "jumpgate development CA (not for production)",
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| (*s).to_owned()).collect();
    names.extend(extra_names.iter().cloned());
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;

    let out = DevCerts {
        ca: dir.join("dev-ca.pem"),
        cert: dir.join("gateway.pem"),
        key: dir.join("gateway.key"),
    };
    write_file(&out.ca, ca_cert.pem().as_bytes(), false)?;
    write_file(&out.cert, cert.pem().as_bytes(), false)?;
    write_file(&out.key, key.serialize_pem().as_bytes(), true)?;
    Ok(out)
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), DevCertError> {
    let err = |source| DevCertError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    // Rename so a watcher never sees a half-written file.
    fs::rename(&tmp, path).map_err(err)
}
