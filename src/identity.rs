//! What upstreams learn about the user: identity headers, and a short-lived JWT signed by the
//! gateway (ES256) whose public key is served at `/.jumpgate/jwks.json`.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::config::{IdentityConfig, IdentityHeaders};
use crate::session::cookie::{load_or_create, KeyError};
use crate::session::{CachedAssertion, Session};

/// Assertions are re-signed when less than this many seconds remain.
const RESIGN_MARGIN: i64 = 60;

/// Why the signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or creating the key file failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The file does not hold a P-256 PKCS#8 key.
    #[error("identity.signing_key_file: {path}: not a P-256 private key in PKCS#8 PEM ({why})")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

/// The one `'static` copy of a configured header name, made the first time the name is
/// configured and kept for the life of the process (a reload that names it again finds it).
///
/// Every forwarded request inserts up to six identity headers, each a clone of its name that
/// the upstream request drops once written. A name made from `'static` text is cloned and
/// dropped as a pointer; one made from configured text is shared through a count, two atomic
/// operations per header per request. What is kept is bounded by the distinct names a
/// process is ever configured with.
fn interned(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(kept) = names.iter().find(|kept| **kept == name) {
        return kept;
    }
    let kept: &'static str = Box::leak(name.into());
    names.push(kept);
    kept
}

/// Resolved identity header names for a site.
#[derive(Debug, Clone)]
pub struct HeaderNames {
    /// User id.
    pub user: HeaderName,
    /// Email.
    pub email: HeaderName,
    /// Username.
    pub username: HeaderName,
    /// Groups.
    pub groups: HeaderName,
    /// Assertion.
    pub assertion: HeaderName,
    /// Last step-up time.
    pub step_up_time: HeaderName,
}

impl HeaderNames {
    /// From validated config names.
    pub fn new(h: &IdentityHeaders) -> HeaderNames {
        let n = |s: &str| match HeaderName::from_bytes(s.as_bytes()) {
            Ok(name) => HeaderName::from_static(interned(name.as_str())),
            Err(_) => HeaderName::from_static("x-jumpgate-invalid"),
        };
        HeaderNames {
            user: n(&h.user),
            email: n(&h.email),
            username: n(&h.username),
            groups: n(&h.groups),
            assertion: n(&h.assertion),
            step_up_time: n(&h.step_up_time),
        }
    }

    /// All of them, for stripping what clients send.
    pub fn all(&self) -> [&HeaderName; 6] {
        [
            &self.user,
            &self.email,
            &self.username,
            &self.groups,
            &self.assertion,
            &self.step_up_time,
        ]
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<&'a str>,
    groups: &'a [String],
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_up_time: Option<i64>,
}

/// Signs assertions and publishes the verification key.
pub struct Signer {
    key: EncodingKey,
    kid: String,
    issuer: String,
    ttl: i64,
    jwks: Bytes,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl Signer {
    /// Loads `identity.signing_key_file`, generating a P-256 key on first run.
    pub fn load_or_create(config: &IdentityConfig) -> Result<(Signer, bool), IdentityError> {
        let path: &Path = &config.signing_key_file;
        let (pem, created) = load_or_create(path, "identity.signing_key_file", || {
            rcgen::KeyPair::generate()
                .map(|k| k.serialize_pem().into_bytes())
                .unwrap_or_default()
        })?;
        let invalid = |why: String| IdentityError::Invalid {
            path: path.display().to_string(),
            why,
        };
        let pem = String::from_utf8(pem).map_err(|_| invalid("not text".into()))?;
        let pair = rcgen::KeyPair::from_pem(&pem).map_err(|e| invalid(e.to_string()))?;
        if !pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err(invalid("not a P-256 key".into()));
        }
        let raw = pair.public_key_raw();
        if raw.len() != 65 || raw[0] != 4 {
            return Err(invalid("unexpected public key encoding".into()));
        }
        let (x, y) = (&raw[1..33], &raw[33..65]);
        let thumb = ring::digest::digest(&ring::digest::SHA256, raw);
        let kid = URL_SAFE_NO_PAD.encode(&thumb.as_ref()[..12]);
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]});
        Ok((
            Signer {
                key,
                kid,
                issuer: config.issuer.clone(),
                ttl: config.assertion_ttl.as_secs() as i64,
                jwks: Bytes::from(jwks.to_string()),
            },
            created,
        ))
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// The assertion for `session`, from its cache unless it expires within a minute or
    /// states other groups or another step-up. `directory` is the user's group names in the
    /// directory snapshot; without it, groups come from the sign-in token. `step_up_time` is
    /// set when the request passed a step-up check.
    ///
    /// The cache is keyed on what the assertion says, not on the snapshot it came from: a
    /// directory sync that changes nothing for a user costs that user no new signature.
    pub fn assertion(
        &self,
        session: &Session,
        directory: Option<&[String]>,
        step_up_time: Option<i64>,
        now: i64,
    ) -> Option<HeaderValue> {
        // Step-up routes and ordinary ones alternate in a session; each keeps its own slot.
        let slot = if step_up_time.is_some() {
            &session.assertion_step_up
        } else {
            &session.assertion
        };
        if let Some(cached) = slot.load().as_ref() {
            if cached.groups.as_deref() == directory
                && cached.step_up_time == step_up_time
                && cached.exp - now > RESIGN_MARGIN
            {
                return Some(cached.value.clone());
            }
        }
        let id = &session.identity;
        let exp = now + self.ttl;
        let claims = Claims {
            iss: &self.issuer,
            aud: &session.site,
            sub: &id.sub,
            email: id.email.as_deref(),
            preferred_username: id.username.as_deref(),
            groups: directory.unwrap_or(&id.groups[..]),
            iat: now,
            exp,
            auth_time: session.auth_time,
            step_up_time,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key).ok()?;
        let value = HeaderValue::from_str(&token).ok()?;
        slot.store(Some(std::sync::Arc::new(CachedAssertion {
            exp,
            groups: directory.map(Into::into),
            step_up_time,
            value: value.clone(),
        })));
        Some(value)
    }
}

/// Sets the identity headers for an allowed request. Called after hop-by-hop processing, so
/// nothing a client nominated in `Connection` can remove them.
pub fn set_headers(
    headers: &mut HeaderMap,
    names: &HeaderNames,
    session: &Session,
    directory_groups: Option<Option<&HeaderValue>>,
    assertion: Option<HeaderValue>,
    step_up_time: Option<i64>,
) {
    let v = &session.values;
    // Up to six inserts: make room once rather than let the map grow and rehash mid-way.
    headers.reserve(6);
    headers.insert(names.user.clone(), v.user.clone());
    if let Some(e) = &v.email {
        headers.insert(names.email.clone(), e.clone());
    }
    if let Some(u) = &v.username {
        headers.insert(names.username.clone(), u.clone());
    }
    // With a directory, groups come from its snapshot (current), not from the sign-in token.
    if let Some(g) = directory_groups.unwrap_or(v.groups.as_ref()) {
        headers.insert(names.groups.clone(), g.clone());
    }
    if let Some(a) = assertion {
        headers.insert(names.assertion.clone(), a);
    }
    if let Some(t) = step_up_time {
        headers.insert(names.step_up_time.clone(), HeaderValue::from(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::verify::IdClaims;

    #[test]
    fn a_configured_name_is_kept_once() {
        let a = interned("x-interned-test-a");
        assert!(std::ptr::eq(a, interned("x-interned-test-a")));
        assert_eq!(interned("x-interned-test-b"), "x-interned-test-b");
        assert!(!std::ptr::eq(a, interned("x-interned-test-b")));
        // Names resolved again (a reload) are the same text, not new copies of it.
        let configured = crate::config::IdentityHeaders {
            user: "X-Interned-Test-User".into(),
            ..Default::default()
        };
        let (first, again) = (HeaderNames::new(&configured), HeaderNames::new(&configured));
        assert_eq!(first.user, "x-interned-test-user");
        for (x, y) in first.all().into_iter().zip(again.all()) {
            assert_eq!(x.as_str().as_ptr(), y.as_str().as_ptr(), "{x}");
        }
    }

    #[test]
    fn the_assertion_cache_follows_what_it_states() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\ntls_key = \"c.key\"\n[[site]]\nhost = \"a.test\"\nupstream = \"http://127.0.0.1:1\"\n[identity]\nsigning_key_file = \"{}\"\n",
            dir.path().join("assertion.key").display()
        );
        let config = crate::config::parse(&text, Path::new("t.toml")).unwrap();
        let (signer, _) = Signer::load_or_create(&config.identity).unwrap();
        let sessions = crate::session::Sessions::new(
            &config.session,
            crate::session::cookie::CookieKey::from_bytes(&[1; 32]),
        );
        let now = crate::clock::now();
        let session = sessions.ephemeral(
            "a.test".into(),
            IdClaims {
                sub: "5f0000000000000000000001".into(),
                exp: now + 3600,
                iat: now,
                auth_time: Some(now),
                email: None,
                email_verified: None,
                email_matches: false,
                username: None,
                name: None,
                groups: vec!["from-token".into()],
                sid: None,
                amr: vec![],
                acr: None,
            },
        );
        let admins = vec!["Admins".to_owned(), "Staff".to_owned()];
        let first = signer
            .assertion(&session, Some(&admins), None, now)
            .unwrap();
        // The same groups from a newer snapshot: the same signature.
        let again = admins.clone();
        assert_eq!(
            signer.assertion(&session, Some(&again), None, now),
            Some(first.clone())
        );
        // Other groups, the token's groups, or a step-up: a new one.
        let staff = vec!["Staff".to_owned()];
        let other = signer.assertion(&session, Some(&staff), None, now).unwrap();
        assert_ne!(other, first);
        let token = signer.assertion(&session, None, None, now).unwrap();
        assert_ne!(token, other);
        assert_eq!(
            signer.assertion(&session, None, None, now),
            Some(token.clone())
        );
        let no_groups: Vec<String> = Vec::new();
        assert_ne!(
            signer.assertion(&session, Some(&no_groups), None, now),
            Some(token),
            "no directory groups is not the token's groups"
        );
        // Step-up routes keep their own slot beside the ordinary one.
        let stepped = signer
            .assertion(&session, Some(&staff), Some(now), now)
            .unwrap();
        let plain = signer.assertion(&session, Some(&staff), None, now).unwrap();
        assert_ne!(stepped, plain);
        assert_eq!(
            signer.assertion(&session, Some(&staff), Some(now), now),
            Some(stepped)
        );
        assert_eq!(
            signer.assertion(&session, Some(&staff), None, now),
            Some(plain)
        );
    }
}
