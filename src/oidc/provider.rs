//! The identity provider as discovered: its endpoints and signing algorithms, and its key set
//! with a rate-limited re-fetch when a token names a key we have not seen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::ProviderMetadataWithLogout;

use super::http::{FetchError, IdpClient};

/// Why discovery or a key fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// It answered with an error status.
    #[error("{url} answered {status}")]
    Status {
        /// Where.
        url: String,
        /// What.
        status: u16,
    },
    /// The document is not what OpenID Connect Discovery describes.
    #[error("{url}: invalid document: {why}")]
    Invalid {
        /// Where.
        url: String,
        /// Why.
        why: String,
    },
    /// The discovered issuer is not the configured one.
    #[error("discovery says the issuer is {found:?}, but oidc.issuer is {configured:?}")]
    IssuerMismatch {
        /// From the document.
        found: String,
        /// From the config.
        configured: String,
    },
}

/// What discovery told us.
#[derive(Debug, Clone)]
pub struct Provider {
    /// The issuer exactly as the provider writes it; tokens must carry this `iss`.
    pub issuer: String,
    /// Where browsers are sent to sign in.
    pub authorization_endpoint: String,
    /// Where codes are exchanged.
    pub token_endpoint: String,
    /// Userinfo, when offered.
    pub userinfo_endpoint: Option<String>,
    /// The provider's key set.
    pub jwks_uri: String,
    /// RP-initiated logout, when offered.
    pub end_session_endpoint: Option<String>,
    /// Signing algorithms accepted for ID tokens: the provider's, asymmetric only.
    pub algorithms: Vec<Algorithm>,
}

#[cfg(test)]
impl Provider {
    /// JumpCloud's issuer and algorithm with no endpoints: what the token checks' unit tests
    /// verify against.
    pub(crate) fn jumpcloud_for_tests() -> Provider {
        Provider {
            issuer: "https://oauth.id.jumpcloud.com/".into(),
            authorization_endpoint: String::new(),
            token_endpoint: String::new(),
            userinfo_endpoint: None,
            jwks_uri: String::new(),
            end_session_endpoint: None,
            algorithms: vec![jsonwebtoken::Algorithm::RS256],
        }
    }
}

impl Provider {
    /// The accepted algorithms in openidconnect's terms.
    pub fn verifier_algorithms(&self) -> Vec<CoreJwsSigningAlgorithm> {
        self.algorithms.iter().map(|&a| core_algorithm(a)).collect()
    }
}

/// The same algorithm in openidconnect's terms (asymmetric ones only are ever accepted).
fn core_algorithm(a: Algorithm) -> CoreJwsSigningAlgorithm {
    match a {
        Algorithm::RS384 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
        Algorithm::RS512 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
        Algorithm::PS256 => CoreJwsSigningAlgorithm::RsaSsaPssSha256,
        Algorithm::PS384 => CoreJwsSigningAlgorithm::RsaSsaPssSha384,
        Algorithm::PS512 => CoreJwsSigningAlgorithm::RsaSsaPssSha512,
        Algorithm::ES256 => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        Algorithm::ES384 => CoreJwsSigningAlgorithm::EcdsaP384Sha384,
        Algorithm::EdDSA => CoreJwsSigningAlgorithm::EdDsa,
        _ => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    }
}

/// Asymmetric algorithms only: a symmetric one would let anyone holding the client secret
/// (or, by confusion, a public key) mint tokens.
pub(super) fn asymmetric(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The discovery URL for an issuer typed with or without its trailing slash.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Fetches and checks the discovery document for `configured_issuer`.
///
/// The document is read by openidconnect's own model of it (`ProviderMetadataWithLogout`:
/// required fields, URL and algorithm types). The fetch is ours rather than the crate's
/// `discover_async` for one reason: that function insists the configured issuer is spelled
/// exactly as the provider spells it, and admins type JumpCloud's issuer without its
/// trailing slash. Either spelling finds the provider here; from then on tokens must carry
/// the provider's own spelling, exactly.
pub async fn discover(
    client: &IdpClient,
    configured_issuer: &str,
) -> Result<Provider, ProviderError> {
    let url = discovery_url(configured_issuer);
    let fetched = client.get(&url, &[]).await?;
    if !fetched.status.is_success() {
        return Err(ProviderError::Status {
            url,
            status: fetched.status.as_u16(),
        });
    }
    let doc: ProviderMetadataWithLogout =
        serde_json::from_slice(&fetched.body).map_err(|e| ProviderError::Invalid {
            url: url.clone(),
            why: e.to_string(),
        })?;
    let issuer = doc.issuer().as_str();
    if issuer.trim_end_matches('/') != configured_issuer.trim_end_matches('/') {
        return Err(ProviderError::IssuerMismatch {
            found: issuer.to_owned(),
            configured: configured_issuer.to_owned(),
        });
    }
    let token_endpoint = doc.token_endpoint().map(|u| u.as_str());
    let userinfo_endpoint = doc.userinfo_endpoint().map(|u| u.as_str());
    let end_session_endpoint = doc
        .additional_metadata()
        .end_session_endpoint
        .as_ref()
        .map(|u| u.as_str());
    let secure = issuer.starts_with("https://");
    for (name, endpoint) in [
        (
            "authorization_endpoint",
            Some(doc.authorization_endpoint().as_str()),
        ),
        ("token_endpoint", token_endpoint),
        ("jwks_uri", Some(doc.jwks_uri().as_str())),
        ("userinfo_endpoint", userinfo_endpoint),
        ("end_session_endpoint", end_session_endpoint),
    ] {
        let Some(endpoint) = endpoint else {
            if name == "token_endpoint" {
                return Err(ProviderError::Invalid {
                    url: url.clone(),
                    why: "no token_endpoint".to_owned(),
                });
            }
            continue;
        };
        let ok = endpoint.parse::<http::Uri>().is_ok_and(|u| {
            u.host().is_some()
                && (u.scheme_str() == Some("https") || (!secure && u.scheme_str() == Some("http")))
        });
        if !ok {
            return Err(ProviderError::Invalid {
                url: url.clone(),
                why: format!(
                    "{name} {endpoint:?} is not an absolute {} URL",
                    if secure { "https" } else { "http(s)" }
                ),
            });
        }
    }
    let algorithms: Vec<Algorithm> = doc
        .id_token_signing_alg_values_supported()
        .iter()
        .filter_map(|a| asymmetric(serde_plain_name(a)?.as_str()))
        .collect();
    if algorithms.is_empty() {
        return Err(ProviderError::Invalid {
            url,
            why: "no asymmetric ID-token signing algorithm offered".to_owned(),
        });
    }
    Ok(Provider {
        issuer: issuer.to_owned(),
        authorization_endpoint: doc.authorization_endpoint().as_str().to_owned(),
        token_endpoint: token_endpoint.unwrap_or_default().to_owned(),
        userinfo_endpoint: userinfo_endpoint.map(str::to_owned),
        jwks_uri: doc.jwks_uri().as_str().to_owned(),
        end_session_endpoint: end_session_endpoint.map(str::to_owned),
        algorithms,
    })
}

/// An algorithm's registered name (`RS256`, …), as the crate writes it.
fn serde_plain_name(alg: &CoreJwsSigningAlgorithm) -> Option<String> {
    match serde_json::to_value(alg).ok()? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

/// One verification key.
#[derive(Clone)]
pub struct Key {
    /// The key.
    pub key: DecodingKey,
    /// `alg` from the JWK, when stated: the key may then only verify that algorithm.
    pub alg: Option<Algorithm>,
}

/// The provider's accepted keys, in the two forms their verifiers take: by `kid` for
/// jsonwebtoken (logout and API tokens), and as openidconnect's key set (ID tokens).
#[derive(Clone)]
struct KeySet {
    by_kid: HashMap<String, Key>,
    core: CoreJsonWebKeySet,
}

impl Default for KeySet {
    fn default() -> KeySet {
        KeySet {
            by_kid: HashMap::new(),
            core: CoreJsonWebKeySet::new(Vec::new()),
        }
    }
}

fn parse_jwk(v: &serde_json::Value) -> Option<(String, Key)> {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str());
    if s("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let alg = match s("alg") {
        Some(a) => Some(asymmetric(a)?),
        None => None,
    };
    let key = match s("kty")? {
        "RSA" => {
            let (n, e) = (s("n")?, s("e")?);
            // Reject keys too short to be taken seriously (below 2048 bits).
            if URL_SAFE_NO_PAD.decode(n).ok()?.len() < 256 {
                return None;
            }
            DecodingKey::from_rsa_components(n, e).ok()?
        }
        "EC" => DecodingKey::from_ec_components(s("x")?, s("y")?).ok()?,
        "OKP" if s("crv") == Some("Ed25519") => DecodingKey::from_ed_components(s("x")?).ok()?,
        _ => return None,
    };
    Some((s("kid").unwrap_or("").to_owned(), Key { key, alg }))
}

/// The provider's signing keys, cached; an unknown `kid` triggers at most one re-fetch per
/// `min_refetch`, so forged tokens with random key ids cannot make us hammer the provider.
pub struct Jwks {
    uri: String,
    keys: ArcSwap<KeySet>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_refetch: Duration,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("uri", &self.uri)
            .field("keys", &self.keys.load().by_kid.len())
            .finish()
    }
}

impl Jwks {
    /// An empty cache for `uri`.
    pub fn new(uri: String, min_refetch: Duration) -> Jwks {
        Jwks {
            uri,
            keys: ArcSwap::from_pointee(KeySet::default()),
            last_fetch: tokio::sync::Mutex::new(None),
            min_refetch,
        }
    }

    /// Fetches the key set now.
    pub async fn refresh(&self, client: &IdpClient) -> Result<usize, ProviderError> {
        let fetched = client.get(&self.uri, &[]).await?;
        if !fetched.status.is_success() {
            return Err(ProviderError::Status {
                url: self.uri.clone(),
                status: fetched.status.as_u16(),
            });
        }
        self.install(&fetched.body)
            .map_err(|e| ProviderError::Invalid {
                url: self.uri.clone(),
                why: e.to_string(),
            })
    }

    /// Replaces the cached set with the keys of a JWK Set document; keys the gateway does
    /// not accept (symmetric, short RSA, unknown types) are left out. Returns how many
    /// were kept.
    pub fn install(&self, document: &[u8]) -> Result<usize, serde_json::Error> {
        let set: JwkSet = serde_json::from_slice(document)?;
        let mut by_kid = HashMap::new();
        let mut core_keys = Vec::new();
        for jwk in &set.keys {
            // One rule decides which keys are accepted, for both forms: a key jsonwebtoken
            // refuses or the gateway finds too weak is not handed to the crate either.
            let Some((kid, key)) = parse_jwk(jwk) else {
                continue;
            };
            let Ok(core) = serde_json::from_value::<CoreJsonWebKey>(jwk.clone()) else {
                continue;
            };
            by_kid.insert(kid, key);
            core_keys.push(core);
        }
        let n = by_kid.len();
        self.keys.store(Arc::new(KeySet {
            by_kid,
            core: CoreJsonWebKeySet::new(core_keys),
        }));
        Ok(n)
    }

    /// The accepted keys as openidconnect's key set.
    pub fn core_key_set(&self) -> CoreJsonWebKeySet {
        self.keys.load().core.clone()
    }

    fn lookup(&self, kid: &str) -> Option<Key> {
        let set = self.keys.load();
        if let Some(k) = set.by_kid.get(kid) {
            return Some(k.clone());
        }
        // A token without kid may use the only key there is.
        if kid.is_empty() && set.by_kid.len() == 1 {
            return set.by_kid.values().next().cloned();
        }
        None
    }

    /// The key for `kid`, re-fetching the set once (rate-limited) when it is unknown.
    pub async fn key(&self, client: &IdpClient, kid: &str) -> Option<Key> {
        if let Some(k) = self.lookup(kid) {
            return Some(k);
        }
        {
            let mut last = self.last_fetch.lock().await;
            // Another request may have refreshed while we waited for the lock.
            if let Some(k) = self.lookup(kid) {
                return Some(k);
            }
            if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
                return None;
            }
            *last = Some(Instant::now());
            if let Err(e) = self.refresh(client).await {
                tracing::warn!(error = %e, "re-fetching the provider's keys failed");
                return None;
            }
        }
        self.lookup(kid)
    }
}
