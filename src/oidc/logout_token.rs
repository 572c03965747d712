//! Back-channel logout tokens (OpenID Connect Back-Channel Logout 1.0): signed by the
//! provider like its ID tokens (its asymmetric algorithms and published keys only) but with
//! claim rules of their own. openidconnect has no model of them, so they are checked here,
//! on jsonwebtoken.

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::http::IdpClient;
use super::provider::{Jwks, Provider};
use super::verify::{check_not_before, raw_header, VerifyError, MAX_TOKEN};

fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// The header's `alg` as written, without trusting jsonwebtoken to parse it (it refuses
/// `none`, which we want to report as an algorithm problem, not as a malformed token).
fn raw_alg(token: &str) -> Option<String> {
    raw_header(token)?.get("alg")?.as_str().map(str::to_owned)
}

/// Checks a token's signature the way every token from the provider is checked: compact JWS,
/// an algorithm the provider announced (asymmetric only, never `none`), a key from its set
/// chosen by `kid`, a valid signature. Returns the header and the claims, not yet checked.
async fn decode_signed(
    token: &str,
    provider: &Provider,
    jwks: &Jwks,
    client: &IdpClient,
) -> Result<(jsonwebtoken::Header, Map<String, Value>), VerifyError> {
    if token.len() > MAX_TOKEN || token.split('.').count() != 3 {
        return Err(VerifyError::Malformed);
    }
    let header = match jsonwebtoken::decode_header(token) {
        Ok(h) => h,
        Err(_) => {
            return Err(match raw_alg(token) {
                Some(alg) => VerifyError::Algorithm(alg),
                None => VerifyError::Malformed,
            })
        }
    };
    if !provider.algorithms.contains(&header.alg) {
        return Err(VerifyError::Algorithm(alg_name(header.alg).to_owned()));
    }
    // Only `kid` selects a key, and only from the provider's published set: `jku`, `x5u`
    // and embedded `jwk` headers are attacker-controlled and ignored.
    let kid = header.kid.clone().unwrap_or_default();
    let key = jwks
        .key(client, &kid)
        .await
        .ok_or(VerifyError::UnknownKey(kid))?;
    if key.alg.is_some_and(|a| a != header.alg) {
        return Err(VerifyError::Algorithm(alg_name(header.alg).to_owned()));
    }
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => VerifyError::Signature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    VerifyError::Algorithm(alg_name(header.alg).to_owned())
                }
                _ => VerifyError::Malformed,
            }
        })?;
    Ok((header, data.claims))
}

/// The member of `events` that makes a JWT a logout token.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How long after its `iat` a logout token is still accepted, in seconds (plus the skew).
pub const LOGOUT_TOKEN_MAX_AGE: i64 = 600;

/// The longest `sid`, `sub` or `jti` a logout token may carry.
const LOGOUT_ID_MAX: usize = 512;

/// What a logout token must match.
#[derive(Debug)]
pub struct LogoutExpect<'a> {
    /// Our client id.
    pub client_id: &'a str,
    /// Now, in seconds since the epoch.
    pub now: i64,
    /// Allowed clock skew in seconds.
    pub skew: i64,
}

/// The verified claims of a logout token. At least one of `sub` and `sid` is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    /// The user whose sessions end (all of them when `sid` is absent).
    pub sub: Option<String>,
    /// The provider session that ended: the `sid` of the ID tokens it issued.
    pub sid: Option<String>,
    /// The token's unique id, remembered so the token works once.
    pub jti: String,
    /// Issued at.
    pub iat: i64,
}

impl LogoutClaims {
    /// How long, in seconds from `now`, the `jti` must be remembered: after that the token
    /// is refused as too old anyway.
    pub fn replay_window(&self, now: i64, skew: i64) -> u64 {
        (self.iat + LOGOUT_TOKEN_MAX_AGE + skew - now).max(1) as u64
    }
}

/// Verifies a logout token's signature like an ID token's (same keys, same algorithms) and its
/// claims by Back-Channel Logout 1.0 §2.6. Replay of the `jti` is the caller's to check.
pub async fn verify_logout(
    token: &str,
    provider: &Provider,
    jwks: &Jwks,
    client: &IdpClient,
    expect: &LogoutExpect<'_>,
) -> Result<LogoutClaims, VerifyError> {
    let (header, claims) = decode_signed(token, provider, jwks, client).await?;
    if let Some(typ) = header.typ.as_deref().filter(|t| !logout_type_ok(t)) {
        return Err(VerifyError::Type(typ.chars().take(64).collect()));
    }
    check_logout_claims(&claims, provider, expect)
}

/// `typ` of a logout token: `logout+jwt` as the specification recommends, or the generic
/// `JWT` many providers still write. Anything else (`at+jwt`, …) is another kind of token.
fn logout_type_ok(typ: &str) -> bool {
    let t = typ
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("application/"))
        .map_or(typ, |_| &typ[12..]);
    t.eq_ignore_ascii_case("logout+jwt") || t.eq_ignore_ascii_case("jwt")
}

fn check_logout_claims(
    c: &Map<String, Value>,
    provider: &Provider,
    expect: &LogoutExpect<'_>,
) -> Result<LogoutClaims, VerifyError> {
    let int_claim = |k: &str| {
        c.get(k)
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
    };
    // Present means a non-empty string of sane length; any other type is refused.
    let id_claim = |k: &'static str| -> Result<Option<String>, VerifyError> {
        match c.get(k) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= LOGOUT_ID_MAX => {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(VerifyError::Claim(k)),
        }
    };

    if c.get("iss").and_then(Value::as_str) != Some(provider.issuer.as_str()) {
        return Err(VerifyError::Issuer);
    }
    let audience_ok = match c.get("aud") {
        Some(Value::String(s)) => s == expect.client_id,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(expect.client_id)),
        _ => false,
    };
    if !audience_ok {
        return Err(VerifyError::Audience);
    }
    let iat = int_claim("iat").ok_or(VerifyError::Claim("iat"))?;
    if iat > expect.now.saturating_add(expect.skew) {
        return Err(VerifyError::IssuedInFuture);
    }
    if iat < expect.now - LOGOUT_TOKEN_MAX_AGE - expect.skew {
        return Err(VerifyError::Stale);
    }
    check_not_before(c, expect.now, expect.skew)?;
    if c.contains_key("exp") {
        let exp = int_claim("exp").ok_or(VerifyError::Claim("exp"))?;
        if expect.now > exp.saturating_add(expect.skew) {
            return Err(VerifyError::Expired);
        }
    }
    let is_logout = c
        .get("events")
        .and_then(Value::as_object)
        .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    if !is_logout {
        return Err(VerifyError::Claim("events"));
    }
    if c.contains_key("nonce") {
        return Err(VerifyError::NoncePresent);
    }
    let sub = id_claim("sub")?;
    let sid = id_claim("sid")?;
    if sub.is_none() && sid.is_none() {
        return Err(VerifyError::Claim("sub or sid"));
    }
    let jti = id_claim("jti")?.ok_or(VerifyError::Claim("jti"))?;
    Ok(LogoutClaims { sub, sid, jti, iat })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider() -> Provider {
        Provider::jumpcloud_for_tests()
    }

    fn logout(extra: Value) -> Result<LogoutClaims, VerifyError> {
        let mut base = json!({
            "iss": "https://oauth.id.jumpcloud.com/", "aud": ["client"], "sub": "615c83ca",
            "sid": "08a5019c-17e1-4977-8f42-65a12843ea02", "iat": 1_000_000, "jti": "bWJq",
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}}
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        let expect = LogoutExpect {
            client_id: "client",
            now: 1_000_000,
            skew: 120,
        };
        check_logout_claims(base.as_object().unwrap(), &provider(), &expect)
    }

    #[test]
    fn logout_token_accepted() {
        let c = logout(json!({})).unwrap();
        assert_eq!(c.sub.as_deref(), Some("615c83ca"));
        assert_eq!(
            c.sid.as_deref(),
            Some("08a5019c-17e1-4977-8f42-65a12843ea02")
        );
        assert_eq!(c.jti, "bWJq");
        assert_eq!(c.replay_window(1_000_000, 120), 720);
        assert_eq!(c.replay_window(2_000_000, 120), 1, "never zero");
        let c = logout(json!({"sid": null})).unwrap();
        assert_eq!((c.sub.as_deref(), c.sid), (Some("615c83ca"), None));
        let c = logout(json!({"sub": null, "aud": "client"})).unwrap();
        assert_eq!(c.sub, None);
        assert!(logout(json!({"exp": 1_000_120})).is_ok());
        assert!(logout(json!({"iat": 1_000_100})).is_ok(), "within skew");
        assert!(logout(json!({"iat": 999_300})).is_ok(), "ten minutes old");
        assert!(
            logout(json!({"events": {BACKCHANNEL_LOGOUT_EVENT: {"x": 1}, "other": 1}})).is_ok()
        );
    }

    #[test]
    fn each_logout_claim_check() {
        let table = [
            (
                json!({"iss": "https://oauth.id.jumpcloud.com"}),
                VerifyError::Issuer,
            ),
            (json!({"iss": null}), VerifyError::Issuer),
            (json!({"aud": ["other"]}), VerifyError::Audience),
            (json!({"aud": null}), VerifyError::Audience),
            (json!({"iat": null}), VerifyError::Claim("iat")),
            (json!({"iat": "1000000"}), VerifyError::Claim("iat")),
            (json!({"iat": 1_000_500}), VerifyError::IssuedInFuture),
            (json!({"nbf": 1_000_500}), VerifyError::NotYetValid),
            (json!({"nbf": true}), VerifyError::Claim("nbf")),
            (json!({"iat": 999_000}), VerifyError::Stale),
            (json!({"exp": 999_000}), VerifyError::Expired),
            (json!({"exp": "soon"}), VerifyError::Claim("exp")),
            (json!({"events": null}), VerifyError::Claim("events")),
            (json!({"events": {}}), VerifyError::Claim("events")),
            (
                json!({"events": [BACKCHANNEL_LOGOUT_EVENT]}),
                VerifyError::Claim("events"),
            ),
            (
                json!({"events": {BACKCHANNEL_LOGOUT_EVENT: true}}),
                VerifyError::Claim("events"),
            ),
            (json!({"nonce": "n0nce"}), VerifyError::NoncePresent),
            (json!({"nonce": ""}), VerifyError::NoncePresent),
            (
                json!({"sub": null, "sid": null}),
                VerifyError::Claim("sub or sid"),
            ),
            (json!({"sub": ""}), VerifyError::Claim("sub")),
            (json!({"sid": 7}), VerifyError::Claim("sid")),
            (json!({"jti": null}), VerifyError::Claim("jti")),
            (json!({"jti": ""}), VerifyError::Claim("jti")),
            (json!({"jti": "x".repeat(513)}), VerifyError::Claim("jti")),
        ];
        for (extra, want) in table {
            assert_eq!(logout(extra.clone()), Err(want), "{extra}");
        }
    }

    #[test]
    fn logout_token_types() {
        for ok in ["logout+jwt", "JWT", "application/logout+jwt", "Logout+JWT"] {
            assert!(logout_type_ok(ok), "{ok}");
        }
        for bad in [
            "at+jwt",
            "secevent+jwt",
            "",
            "application/",
            "application/at+jwt",
        ] {
            assert!(!logout_type_ok(bad), "{bad}");
        }
    }
}
