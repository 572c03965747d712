//! ID token verification: signature first, then every claim the flow depends on, and a lenient
//! reading of the claims it merely uses, so a provider's quirk (JumpCloud's string
//! `email_verified`, a one-group string where an array was expected) never fails a login.
//!
//! Logout tokens (OpenID Connect Back-Channel Logout 1.0) go through the same signature
//! checks, then through their own claim rules: [`verify_logout`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::http::IdpClient;
use super::provider::{Jwks, Provider};

/// Why an ID token was refused. Each variant is one check; tests assert on them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWS compact token, or its header is unreadable.
    #[error("malformed token")]
    Malformed,
    /// The algorithm is not one the provider announced, or is symmetric or `none`.
    #[error("algorithm {0} not accepted")]
    Algorithm(String),
    /// No key with this `kid`, even after a re-fetch.
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `iss` is not the discovered issuer, exactly.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` does not contain our client id.
    #[error("wrong audience")]
    Audience,
    /// `azp` missing with several audiences, or not our client id.
    #[error("wrong authorized party")]
    AuthorizedParty,
    /// `exp` has passed (beyond the allowed skew).
    #[error("expired")]
    Expired,
    /// `iat` is in the future (beyond the allowed skew).
    #[error("issued in the future")]
    IssuedInFuture,
    /// `nbf` is in the future (beyond the allowed skew): the token is not valid yet.
    #[error("not valid yet")]
    NotYetValid,
    /// `nonce` is not the one this login sent.
    #[error("nonce mismatch")]
    Nonce,
    /// `at_hash` does not match the access token.
    #[error("at_hash mismatch")]
    AtHash,
    /// A claim the flow depends on is missing or has the wrong type.
    #[error("missing or invalid claim {0}")]
    Claim(&'static str),
    /// The header's `typ` names another kind of token.
    #[error("token type {0:?} not accepted")]
    Type(String),
    /// A logout or API token carries a `nonce`: it may be an ID token in disguise.
    #[error("nonce present: an ID token in disguise")]
    NoncePresent,
    /// A logout token issued too long ago.
    #[error("issued too long ago")]
    Stale,
    /// A logout token whose `jti` was already used.
    #[error("token replayed")]
    Replayed,
    /// The provider has not been discovered yet, so nothing can be verified.
    #[error("the identity provider has not been discovered yet")]
    NotReady,
}

/// What a token must match.
#[derive(Debug)]
pub struct Expect<'a> {
    /// Our client id.
    pub client_id: &'a str,
    /// The nonce sent with this login, or `None` for refreshed tokens.
    pub nonce: Option<&'a str>,
    /// The access token issued with it, for `at_hash`.
    pub access_token: Option<&'a str>,
    /// Now, in seconds since the epoch.
    pub now: i64,
    /// Allowed clock skew in seconds.
    pub skew: i64,
    /// The claim carrying group names, if any.
    pub groups_claim: Option<&'a str>,
    /// Whether this issuer is trusted to name directory users by verified email.
    pub match_by_email: bool,
}

/// The verified claims the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdClaims {
    /// Subject: for JumpCloud, the user's id.
    pub sub: String,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// When the user authenticated, when stated.
    pub auth_time: Option<i64>,
    /// `email`.
    pub email: Option<String>,
    /// `email_verified`, read leniently: `true`, `"true"`, `"1"` (never used to grant access).
    pub email_verified: Option<bool>,
    /// Whether `email` may name the user in the directory: verified, from an issuer trusted
    /// to match by email.
    pub email_matches: bool,
    /// `preferred_username`.
    pub username: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// Group names from the configured claim: one string or an array.
    pub groups: Vec<String>,
    /// Provider session id.
    pub sid: Option<String>,
    /// Authentication methods, when stated.
    pub amr: Vec<String>,
    /// Authentication context class, when stated.
    pub acr: Option<String>,
}

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
    let header = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
}

/// Verifies an ID token against the provider's keys and `expect`.
pub async fn verify(
    token: &str,
    provider: &Provider,
    jwks: &Jwks,
    client: &IdpClient,
    expect: &Expect<'_>,
) -> Result<IdClaims, VerifyError> {
    let (header, claims) = decode_signed(token, provider, jwks, client).await?;
    check_claims(&claims, provider, header.alg, expect)
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
    if token.len() > 16 * 1024 || token.split('.').count() != 3 {
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

fn check_claims(
    c: &Map<String, Value>,
    provider: &Provider,
    alg: Algorithm,
    expect: &Expect<'_>,
) -> Result<IdClaims, VerifyError> {
    let str_claim = |k: &str| c.get(k).and_then(Value::as_str);
    let int_claim = |k: &str| {
        c.get(k)
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
    };

    if str_claim("iss") != Some(provider.issuer.as_str()) {
        return Err(VerifyError::Issuer);
    }
    let audiences: Vec<&str> = match c.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return Err(VerifyError::Audience),
    };
    if !audiences.contains(&expect.client_id) {
        return Err(VerifyError::Audience);
    }
    match str_claim("azp") {
        Some(azp) if azp != expect.client_id => return Err(VerifyError::AuthorizedParty),
        None if audiences.len() > 1 => return Err(VerifyError::AuthorizedParty),
        _ => {}
    }
    let exp = int_claim("exp").ok_or(VerifyError::Claim("exp"))?;
    if expect.now > exp.saturating_add(expect.skew) {
        return Err(VerifyError::Expired);
    }
    // An expiry beyond any real token lifetime is a forgery or a provider bug, not a grant.
    if exp.saturating_sub(expect.now) > 400 * 24 * 3600 {
        return Err(VerifyError::Claim("exp"));
    }
    let iat = int_claim("iat").ok_or(VerifyError::Claim("iat"))?;
    if iat > expect.now.saturating_add(expect.skew) {
        return Err(VerifyError::IssuedInFuture);
    }
    check_not_before(c, expect.now, expect.skew)?;
    if let Some(nonce) = expect.nonce {
        let got = str_claim("nonce").ok_or(VerifyError::Nonce)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            got.as_bytes(),
            nonce.as_bytes(),
        )) {
            return Err(VerifyError::Nonce);
        }
    }
    if let (Some(at_hash), Some(access_token)) = (str_claim("at_hash"), expect.access_token) {
        let algorithm = match alg {
            Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => &ring::digest::SHA384,
            Algorithm::RS512 | Algorithm::PS512 | Algorithm::EdDSA => &ring::digest::SHA512,
            _ => &ring::digest::SHA256,
        };
        let digest = ring::digest::digest(algorithm, access_token.as_bytes());
        let half = &digest.as_ref()[..digest.as_ref().len() / 2];
        if URL_SAFE_NO_PAD.encode(half) != at_hash.trim_end_matches('=') {
            return Err(VerifyError::AtHash);
        }
    }
    let sub = str_claim("sub")
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::Claim("sub"))?;
    let email_verified = c.get("email_verified").and_then(lenient_bool);
    Ok(IdClaims {
        email_matches: expect.match_by_email && email_verified == Some(true),
        sub: sub.to_owned(),
        exp,
        iat,
        auth_time: int_claim("auth_time"),
        email: str_claim("email")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        email_verified,
        username: str_claim("preferred_username")
            .or_else(|| str_claim("username"))
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        name: str_claim("name")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        groups: expect
            .groups_claim
            .and_then(|k| c.get(k))
            .map(string_or_array)
            .unwrap_or_default(),
        sid: str_claim("sid").map(str::to_owned),
        amr: c.get("amr").map(string_or_array).unwrap_or_default(),
        acr: str_claim("acr").map(str::to_owned),
    })
}

/// RFC 7519 §4.1.5: a token must not be accepted before its `nbf`. The claim is optional;
/// present, it must be a number, or the token is refused rather than the claim ignored.
fn check_not_before(c: &Map<String, Value>, now: i64, skew: i64) -> Result<(), VerifyError> {
    let Some(nbf) = c.get("nbf") else {
        return Ok(());
    };
    let nbf = nbf
        .as_i64()
        .or_else(|| nbf.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        .ok_or(VerifyError::Claim("nbf"))?;
    if nbf > now.saturating_add(skew) {
        return Err(VerifyError::NotYetValid);
    }
    Ok(())
}

/// `true`, `"true"`, `"1"` (any case) → true; `false`, `"false"`, `"0"` → false; else unknown.
pub fn lenient_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") || s == "1" => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") || s == "0" => Some(false),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

/// One string, or an array of strings (other elements ignored).
pub fn string_or_array(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) if !s.is_empty() => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
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
        Provider {
            issuer: "https://oauth.id.jumpcloud.com/".into(),
            authorization_endpoint: String::new(),
            token_endpoint: String::new(),
            userinfo_endpoint: None,
            jwks_uri: String::new(),
            end_session_endpoint: None,
            algorithms: vec![Algorithm::RS256],
        }
    }

    fn expect() -> Expect<'static> {
        Expect {
            client_id: "client",
            nonce: Some("n0nce"),
            access_token: None,
            now: 1_000_000,
            skew: 120,
            groups_claim: Some("memberOf"),
            match_by_email: true,
        }
    }

    fn claims(extra: Value) -> Map<String, Value> {
        let mut base = json!({
            "iss": "https://oauth.id.jumpcloud.com/", "aud": ["client"], "sub": "615c83ca",
            "exp": 1_003_600, "iat": 1_000_000, "nonce": "n0nce", "email_verified": "true",
            "picture": "none", "middle_name": "", "memberOf": "Admins"
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base.as_object().unwrap().clone()
    }

    fn check(extra: Value) -> Result<IdClaims, VerifyError> {
        check_claims(&claims(extra), &provider(), Algorithm::RS256, &expect())
    }

    #[test]
    fn jumpcloud_quirks_accepted() {
        let c = check(json!({})).unwrap();
        assert_eq!(c.email_verified, Some(true));
        assert_eq!(c.groups, vec!["Admins"]);
        let c = check(json!({"memberOf": ["A", "B"], "email_verified": "1"})).unwrap();
        assert_eq!(c.groups, vec!["A", "B"]);
        assert_eq!(c.email_verified, Some(true));
        let c = check(json!({"email_verified": {"odd": 1}, "memberOf": 7})).unwrap();
        assert_eq!(c.email_verified, None);
        assert!(c.groups.is_empty());
    }

    /// An email names a directory user only when it is verified (JumpCloud's string
    /// `"true"` included) and the issuer is trusted to match by email.
    #[test]
    fn email_matches_only_when_verified_and_trusted() {
        let cases = [
            (json!({"email_verified": "true"}), true, true),
            (json!({"email_verified": true}), true, true),
            (json!({"email_verified": "false"}), true, false),
            (json!({"email_verified": false}), true, false),
            (json!({"email_verified": null}), true, false),
            (json!({"email_verified": "yes please"}), true, false),
            (json!({"email_verified": "true"}), false, false),
        ];
        for (extra, trusted, want) in cases {
            let mut e = expect();
            e.match_by_email = trusted;
            let c =
                check_claims(&claims(extra.clone()), &provider(), Algorithm::RS256, &e).unwrap();
            assert_eq!(c.email_matches, want, "{extra} trusted={trusted}");
        }
    }

    #[test]
    fn each_claim_check() {
        assert_eq!(
            check(json!({"iss": "https://oauth.id.jumpcloud.com"})),
            Err(VerifyError::Issuer)
        );
        assert_eq!(check(json!({"aud": ["other"]})), Err(VerifyError::Audience));
        assert_eq!(check(json!({"aud": "client"})).map(|_| ()), Ok(()));
        assert_eq!(
            check(json!({"aud": ["client", "other"]})),
            Err(VerifyError::AuthorizedParty)
        );
        assert_eq!(
            check(json!({"aud": ["client", "other"], "azp": "client"})).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            check(json!({"azp": "other"})),
            Err(VerifyError::AuthorizedParty)
        );
        assert_eq!(check(json!({"exp": 999_000})), Err(VerifyError::Expired));
        assert_eq!(
            check(json!({"exp": 999_900})).map(|_| ()),
            Ok(()),
            "within skew"
        );
        assert_eq!(
            check(json!({"iat": 1_000_500})),
            Err(VerifyError::IssuedInFuture)
        );
        assert_eq!(
            check(json!({"nbf": 1_000_500})),
            Err(VerifyError::NotYetValid)
        );
        assert_eq!(
            check(json!({"nbf": 1_000_100})).map(|_| ()),
            Ok(()),
            "nbf within skew"
        );
        assert_eq!(check(json!({"nbf": 999_000})).map(|_| ()), Ok(()));
        assert_eq!(check(json!({"nbf": "0"})), Err(VerifyError::Claim("nbf")));
        assert_eq!(check(json!({"nonce": "other"})), Err(VerifyError::Nonce));
        assert_eq!(check(json!({"nonce": null})), Err(VerifyError::Nonce));
        assert_eq!(check(json!({"sub": ""})), Err(VerifyError::Claim("sub")));
        assert_eq!(check(json!({"exp": null})), Err(VerifyError::Claim("exp")));
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

    #[test]
    fn at_hash() {
        let token = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y";
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let good = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
        let mut e = expect();
        e.access_token = Some(token);
        assert!(check_claims(
            &claims(json!({"at_hash": good})),
            &provider(),
            Algorithm::RS256,
            &e
        )
        .is_ok());
        assert_eq!(
            check_claims(
                &claims(json!({"at_hash": "AAAA"})),
                &provider(),
                Algorithm::RS256,
                &e
            ),
            Err(VerifyError::AtHash)
        );
    }
}
