//! ID tokens and bearer API tokens, through openidconnect's verifier ([`verify_id_token`],
//! [`verify_api_token`]), with the checks it leaves to the client; the claims the gateway
//! reads from them. Logout tokens are `logout_token`'s.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};

use openidconnect::core::{
    CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AccessToken, AccessTokenHash, ClaimsVerificationError, ClientId, IdTokenVerifier, IssuerUrl,
    Nonce, SignatureVerificationError,
};
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
    /// The caller has checked the header's `typ` itself (an API token may say `at+jwt`), so
    /// the crate's ID-token types are not required.
    pub typ_checked: bool,
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

/// Longest token looked at.
pub(super) const MAX_TOKEN: usize = 16 * 1024;

/// Claims beyond the standard ones, kept whole: the groups claim's name is configured, and
/// JumpCloud writes it as a string for one group and an array for more; `sid`, `nbf` and
/// `username` arrive here too.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct OtherClaims {
    /// Every claim the crate's ID-token model does not name.
    #[serde(flatten)]
    pub claims: Map<String, Value>,
}

impl openidconnect::AdditionalClaims for OtherClaims {}

/// An ID token as openidconnect parses it from a token response.
pub type IdToken = openidconnect::IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// The message the `iat` check returns, so its refusal is told apart from an expiry.
const ISSUED_IN_FUTURE: &str = "issued in the future";

/// Verifies a bearer API token: a JWT from a configured issuer, read and checked as an ID
/// token of that issuer would be ([`verify_id_token`]), with the configured audience in place
/// of a client id and no nonce. The caller refuses ID tokens in disguise (a `nonce`, a `typ`
/// other than an access token's) before.
pub async fn verify_api_token(
    token: &str,
    provider: &Provider,
    jwks: &Jwks,
    client: &IdpClient,
    expect: &Expect<'_>,
) -> Result<IdClaims, VerifyError> {
    if token.len() > MAX_TOKEN {
        return Err(VerifyError::Malformed);
    }
    let token: IdToken = token.parse().map_err(|_| VerifyError::Malformed)?;
    verify_id_token(&token, provider, jwks, client, expect).await
}

/// Verifies an ID token with openidconnect's verifier: signature by a key from the
/// provider's set and an algorithm it announced (never `none`, never symmetric: the verifier
/// is a public client's), `iss` exactly the provider's, `aud` containing our client id and no
/// audience we do not trust, `exp` and `iat` within the clock skew, and the nonce.
///
/// Ours, before it: the size limit, and selecting the key by `kid`, so that an unknown key
/// re-fetches the provider's set (rate-limited) instead of failing. Ours, after it, because
/// the crate leaves them to the client: `azp` (the crate defers it), `nbf` (not an ID
/// token claim in the crate's model), `at_hash` against the access token, an expiry beyond
/// any real lifetime, and a non-empty `sub`.
pub async fn verify_id_token(
    token: &IdToken,
    provider: &Provider,
    jwks: &Jwks,
    client: &IdpClient,
    expect: &Expect<'_>,
) -> Result<IdClaims, VerifyError> {
    let raw = token.to_string();
    if raw.len() > MAX_TOKEN {
        return Err(VerifyError::Malformed);
    }
    let header = raw_header(&raw).ok_or(VerifyError::Malformed)?;
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(VerifyError::Malformed)?;
    let alg = super::provider::asymmetric(alg_name)
        .filter(|a| provider.algorithms.contains(a))
        .ok_or_else(|| VerifyError::Algorithm(alg_name.chars().take(16).collect()))?;
    // Only `kid` selects a key, and only from the provider's published set: `jku`, `x5u`
    // and embedded `jwk` headers are attacker-controlled and ignored.
    let kid = header.get("kid").and_then(Value::as_str).unwrap_or("");
    let key = jwks
        .key(client, kid)
        .await
        .ok_or_else(|| VerifyError::UnknownKey(kid.to_owned()))?;
    if key.alg.is_some_and(|a| a != alg) {
        return Err(VerifyError::Algorithm(alg_name.to_owned()));
    }
    let (now, skew) = (expect.now, expect.skew);
    let issuer = IssuerUrl::new(provider.issuer.clone()).map_err(|_| VerifyError::Issuer)?;
    let mut verifier = IdTokenVerifier::new_public_client(
        ClientId::new(expect.client_id.to_owned()),
        issuer,
        jwks.core_key_set(),
    )
    .set_allowed_algs(provider.verifier_algorithms())
    // The crate's expiry test is `now >= exp`; shifting its clock back by the skew is
    // how a skew is given to it.
    .set_time_fn(move || timestamp(now.saturating_sub(skew)))
    .set_issue_time_verifier_fn(move |iat| {
        if iat.timestamp() > now.saturating_add(skew) {
            Err(ISSUED_IN_FUTURE.to_owned())
        } else {
            Ok(())
        }
    });
    if expect.typ_checked {
        verifier = verifier.allow_all_jose_types();
    }
    let verified = match expect.nonce {
        Some(nonce) => token.claims(&verifier, &Nonce::new(nonce.to_owned())),
        // A refreshed token answers no sign-in of ours: no nonce to compare.
        None => token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
    };
    let c = verified.map_err(|e| verifier_error(e, alg_name))?;

    let audiences = c.audiences();
    match c.authorized_party() {
        Some(azp) if azp.as_str() != expect.client_id => return Err(VerifyError::AuthorizedParty),
        None if audiences.len() > 1 => return Err(VerifyError::AuthorizedParty),
        _ => {}
    }
    let exp = c.expiration().timestamp();
    // An expiry beyond any real token lifetime is a forgery or a provider bug, not a grant.
    if exp.saturating_sub(now) > 400 * 24 * 3600 {
        return Err(VerifyError::Claim("exp"));
    }
    let other = &c.additional_claims().claims;
    check_not_before(other, now, skew)?;
    if let (Some(at_hash), Some(access_token)) = (c.access_token_hash(), expect.access_token) {
        let signing_key = token
            .signing_key(&verifier)
            .map_err(|_| VerifyError::UnknownKey(kid.to_owned()))?;
        let signing_alg = token.signing_alg().map_err(|_| VerifyError::Malformed)?;
        let want = AccessTokenHash::from_token(
            &AccessToken::new(access_token.to_owned()),
            signing_alg,
            signing_key,
        )
        .map_err(|_| VerifyError::AtHash)?;
        if want.as_str() != at_hash.as_str().trim_end_matches('=') {
            return Err(VerifyError::AtHash);
        }
    }
    let sub = c.subject().as_str();
    if sub.is_empty() {
        return Err(VerifyError::Claim("sub"));
    }
    let str_claim = |k: &str| other.get(k).and_then(Value::as_str);
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let email_verified = c.email_verified();
    Ok(IdClaims {
        email_matches: expect.match_by_email && email_verified == Some(true),
        sub: sub.to_owned(),
        exp,
        iat: c.issue_time().timestamp(),
        auth_time: c.auth_time().map(|t| t.timestamp()),
        email: c.email().and_then(|e| non_empty(e.as_str())),
        email_verified,
        username: c
            .preferred_username()
            .map(|u| u.as_str())
            .or_else(|| str_claim("username"))
            .and_then(non_empty),
        name: c
            .name()
            .and_then(|n| n.get(None))
            .and_then(|n| non_empty(n.as_str())),
        groups: expect
            .groups_claim
            .and_then(|k| other.get(k))
            .map(string_or_array)
            .unwrap_or_default(),
        sid: str_claim("sid").map(str::to_owned),
        amr: c
            .auth_method_refs()
            .map(|v| v.iter().map(|a| a.as_str().to_owned()).collect())
            .unwrap_or_default(),
        acr: c.auth_context_ref().map(|a| a.as_str().to_owned()),
    })
}

/// The crate's refusal as the check that failed.
fn verifier_error(e: ClaimsVerificationError, alg: &str) -> VerifyError {
    match e {
        ClaimsVerificationError::InvalidIssuer(_) => VerifyError::Issuer,
        ClaimsVerificationError::InvalidAudience(_) => VerifyError::Audience,
        ClaimsVerificationError::Expired(why) if why == ISSUED_IN_FUTURE => {
            VerifyError::IssuedInFuture
        }
        ClaimsVerificationError::Expired(_) => VerifyError::Expired,
        ClaimsVerificationError::InvalidNonce(_) => VerifyError::Nonce,
        ClaimsVerificationError::InvalidSubject(_) => VerifyError::Claim("sub"),
        ClaimsVerificationError::InvalidAuthTime(_) => VerifyError::Claim("auth_time"),
        ClaimsVerificationError::InvalidAuthContext(_) => VerifyError::Claim("acr"),
        ClaimsVerificationError::SignatureVerification(s) => match s {
            SignatureVerificationError::DisallowedAlg(_)
            | SignatureVerificationError::UnsupportedAlg(_)
            | SignatureVerificationError::NoSignature => VerifyError::Algorithm(alg.to_owned()),
            SignatureVerificationError::NoMatchingKey
            | SignatureVerificationError::AmbiguousKeyId(_)
            | SignatureVerificationError::InvalidKey(_) => VerifyError::UnknownKey(String::new()),
            _ => VerifyError::Signature,
        },
        ClaimsVerificationError::Unsupported(_) => VerifyError::Malformed,
        _ => VerifyError::Malformed,
    }
}

fn timestamp(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// The header of a compact JWS as JSON, read without trusting any crate to accept it.
pub(super) fn raw_header(token: &str) -> Option<Map<String, Value>> {
    let header = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// RFC 7519 §4.1.5: a token must not be accepted before its `nbf`. The claim is optional;
/// present, it must be a number, or the token is refused rather than the claim ignored.
pub(super) fn check_not_before(
    c: &Map<String, Value>,
    now: i64,
    skew: i64,
) -> Result<(), VerifyError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    fn provider() -> Provider {
        Provider::jumpcloud_for_tests()
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
            typ_checked: false,
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

    /// A provider publishing one ES256 key, and tokens signed with it.
    struct Signer {
        provider: Provider,
        jwks: Jwks,
        client: IdpClient,
        key: jsonwebtoken::EncodingKey,
    }

    fn signer() -> Signer {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = ring::signature::KeyPair::public_key(&pair)
            .as_ref()
            .to_vec();
        let jwks = Jwks::new(
            "http://127.0.0.1:9/jwks".into(),
            std::time::Duration::from_secs(3600),
        );
        let set = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]});
        assert_eq!(jwks.install(set.to_string().as_bytes()).unwrap(), 1);
        let mut provider = provider();
        provider.algorithms = vec![Algorithm::ES256];
        Signer {
            provider,
            jwks,
            client: IdpClient::new(None, std::time::Duration::from_secs(1)).unwrap(),
            key: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
        }
    }

    impl Signer {
        fn token(&self, extra: Value) -> String {
            self.typed(extra, None)
        }

        fn typed(&self, extra: Value, typ: Option<&str>) -> String {
            let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
            header.kid = Some("k1".into());
            header.typ = typ.map(str::to_owned);
            jsonwebtoken::encode(&header, &claims(extra), &self.key).unwrap()
        }

        async fn verify(&self, extra: Value, expect: &Expect<'_>) -> Result<IdClaims, VerifyError> {
            let token: IdToken = self
                .token(extra)
                .parse()
                .map_err(|_| VerifyError::Malformed)?;
            verify_id_token(&token, &self.provider, &self.jwks, &self.client, expect).await
        }
    }

    /// The crate's verifier with the rules around it: each check refuses what it must, the
    /// skew is granted both ways, and JumpCloud's claims read as the gateway expects.
    #[tokio::test]
    async fn id_token_checks() {
        let s = signer();
        let e = expect();
        let c = s.verify(json!({}), &e).await.unwrap();
        assert_eq!(c.sub, "615c83ca");
        assert_eq!(c.email_verified, Some(true), "the string \"true\"");
        assert_eq!(c.groups, vec!["Admins"], "one group as a string");
        assert!(c.email_matches);
        let c = s
            .verify(
                json!({"memberOf": ["A", "B"], "email_verified": true, "aud": "client"}),
                &e,
            )
            .await
            .unwrap();
        assert_eq!(c.groups, vec!["A", "B"]);
        let table = [
            (
                json!({"iss": "https://oauth.id.jumpcloud.com"}),
                VerifyError::Issuer,
            ),
            (json!({"aud": ["other"]}), VerifyError::Audience),
            (json!({"aud": ["client", "other"]}), VerifyError::Audience),
            (
                json!({"aud": ["client", "other"], "azp": "client"}),
                VerifyError::Audience,
            ),
            (json!({"azp": "other"}), VerifyError::AuthorizedParty),
            (json!({"exp": 999_000}), VerifyError::Expired),
            (
                json!({"exp": 1_000_000 + 401 * 24 * 3600}),
                VerifyError::Claim("exp"),
            ),
            (json!({"iat": 1_000_500}), VerifyError::IssuedInFuture),
            (json!({"nbf": 1_000_500}), VerifyError::NotYetValid),
            (json!({"nbf": "0"}), VerifyError::Claim("nbf")),
            (json!({"nonce": "other"}), VerifyError::Nonce),
            (json!({"nonce": null}), VerifyError::Nonce),
            (json!({"sub": ""}), VerifyError::Claim("sub")),
        ];
        for (extra, want) in table {
            let got = s.verify(extra.clone(), &e).await;
            assert_eq!(got.map(|_| ()), Err(want), "{extra}");
        }
        for ok in [
            json!({"exp": 999_900}),
            json!({"iat": 1_000_100}),
            json!({"nbf": 1_000_100}),
        ] {
            assert!(
                s.verify(ok.clone(), &e).await.is_ok(),
                "within the skew: {ok}"
            );
        }
        let mut refresh = expect();
        refresh.nonce = None;
        assert!(
            s.verify(json!({"nonce": null}), &refresh).await.is_ok(),
            "a refresh has no nonce"
        );
    }

    /// An email names a directory user only when it is verified (JumpCloud's string
    /// `"true"` included) and the issuer is trusted to match by email. A claim the crate
    /// cannot read as its standard type refuses the whole token.
    #[tokio::test]
    async fn email_matches_only_when_verified_and_trusted() {
        let s = signer();
        let cases = [
            (json!({"email_verified": "true"}), true, true),
            (json!({"email_verified": true}), true, true),
            (json!({"email_verified": "false"}), true, false),
            (json!({"email_verified": false}), true, false),
            (json!({"email_verified": null}), true, false),
            (json!({"email_verified": "true"}), false, false),
        ];
        for (extra, trusted, want) in cases {
            let mut e = expect();
            e.match_by_email = trusted;
            let c = s.verify(extra.clone(), &e).await.unwrap();
            assert_eq!(c.email_matches, want, "{extra} trusted={trusted}");
        }
        for unreadable in [
            json!({"email_verified": "1"}),
            json!({"email_verified": {"odd": 1}}),
        ] {
            let got = s.verify(unreadable.clone(), &expect()).await;
            assert_eq!(got.map(|_| ()), Err(VerifyError::Malformed), "{unreadable}");
        }
    }

    /// An API token may be typed as an access token once its caller has checked the type;
    /// an ID-token verification never takes one.
    #[tokio::test]
    async fn token_types() {
        let s = signer();
        let mut api = expect();
        api.nonce = None;
        api.typ_checked = true;
        let at = s.typed(json!({"nonce": null}), Some("at+jwt"));
        let verify = |e: Expect<'static>| {
            let at = at.clone();
            let s = &s;
            async move { verify_api_token(&at, &s.provider, &s.jwks, &s.client, &e).await }
        };
        assert!(verify(api).await.is_ok());
        let mut id = expect();
        id.nonce = None;
        assert_eq!(verify(id).await.map(|_| ()), Err(VerifyError::Malformed));
        let jwt = s.typed(json!({}), Some("JWT"));
        let token: IdToken = jwt.parse().unwrap();
        assert!(
            verify_id_token(&token, &s.provider, &s.jwks, &s.client, &expect())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn id_token_at_hash_and_signature() {
        let s = signer();
        let access = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y";
        let digest = ring::digest::digest(&ring::digest::SHA256, access.as_bytes());
        let good = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
        let mut e = expect();
        e.access_token = Some(access);
        assert!(s.verify(json!({"at_hash": good}), &e).await.is_ok());
        assert_eq!(
            s.verify(json!({"at_hash": "AAAA"}), &e).await.map(|_| ()),
            Err(VerifyError::AtHash)
        );
        // One changed byte of the payload, signature kept.
        let token = s.token(json!({}));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        payload["sub"] = "someone-else".into();
        parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        let forged: IdToken = parts.join(".").parse().unwrap();
        let got = verify_id_token(&forged, &s.provider, &s.jwks, &s.client, &expect()).await;
        assert_eq!(got.map(|_| ()), Err(VerifyError::Signature));
        // `alg: none`, and HS256 keyed with anything: refused before any key is used.
        for alg in ["none", "HS256"] {
            parts[0] = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": "k1"}).to_string());
            let forged: IdToken = parts.join(".").parse().unwrap();
            let got = verify_id_token(&forged, &s.provider, &s.jwks, &s.client, &expect()).await;
            assert_eq!(
                got.map(|_| ()),
                Err(VerifyError::Algorithm(alg.into())),
                "{alg}"
            );
        }
    }
}
