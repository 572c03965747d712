//! Token handling on arbitrary input: the JWT header parser, the gateway's verification of
//! API tokens (jsonwebtoken) and of ID tokens (openidconnect) up to key selection (with no key for the token nothing may ever verify), the claim checks
//! on arbitrary claims signed with a key the provider publishes (whatever verifies must meet
//! every rule), the groups-claim reader on arbitrary JSON, and the callback's query-string
//! parser.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use jumpgate::oidc::http::{parse_query, IdpClient};
use jumpgate::oidc::provider::{Jwks, Provider};
use jumpgate::oidc::verify::{self, Expect};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    provider: Provider,
    jwks: Jwks,
    client: IdpClient,
    /// The provider's signing key (ES256, kid "fuzz"), published in `jwks`.
    signing: jsonwebtoken::EncodingKey,
}

const NOW: i64 = 1_700_000_000;
const SKEW: i64 = 120;

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // The key set's only fetch goes to a closed loopback port, once: later unknown key
        // ids are refused without a request (the re-fetch is rate-limited).
        let jwks_uri = "http://127.0.0.1:9/jwks.json".to_owned();
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        // An uncompressed P-256 point: 0x04, then x and y, 32 bytes each.
        let point = ring::signature::KeyPair::public_key(&pair)
            .as_ref()
            .to_vec();
        let b64 =
            |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
        let set = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "fuzz", "alg": "ES256", "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        }]});
        let jwks = Jwks::new(jwks_uri.clone(), Duration::from_secs(24 * 3600));
        assert_eq!(jwks.install(set.to_string().as_bytes()).unwrap(), 1);
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            provider: Provider {
                issuer: "https://oauth.id.jumpcloud.com/".into(),
                authorization_endpoint: "https://oauth.id.jumpcloud.com/oauth2/auth".into(),
                token_endpoint: "https://oauth.id.jumpcloud.com/oauth2/token".into(),
                userinfo_endpoint: None,
                jwks_uri: jwks_uri.clone(),
                end_session_endpoint: None,
                algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            },
            jwks,
            client: IdpClient::new(None, Duration::from_millis(500)).unwrap(),
            signing: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
        }
    })
}

fn expect() -> Expect<'static> {
    Expect {
        client_id: "client",
        nonce: Some("nonce"),
        access_token: None,
        now: NOW,
        skew: SKEW,
        groups_claim: Some("memberOf"),
        match_by_email: true,
        typ_checked: false,
    }
}

/// An API token: no nonce, its type checked by the caller.
fn api_expect() -> Expect<'static> {
    Expect {
        nonce: None,
        typ_checked: true,
        ..expect()
    }
}

fn check_token(token: &str) {
    let _ = jsonwebtoken::decode_header(token);
    let f = fixture();
    let verified = f.runtime.block_on(verify::verify_api_token(
        token,
        &f.provider,
        &f.jwks,
        &f.client,
        &api_expect(),
    ));
    // Arbitrary bytes are never signed by the provider's key.
    assert!(verified.is_err(), "{token:?} verified without the key");
    if let Ok(id_token) = token.parse::<verify::IdToken>() {
        let verified = f.runtime.block_on(verify::verify_id_token(
            &id_token,
            &f.provider,
            &f.jwks,
            &f.client,
            &expect(),
        ));
        assert!(
            verified.is_err(),
            "{token:?} verified as an ID token without the key"
        );
    }
}

/// Arbitrary claims, signed with the provider's own key: signature and key selection pass,
/// so every claim rule is exercised, as an API token and as an ID token, and whatever
/// verifies must meet all of them.
fn check_signed_claims(claims: &serde_json::Map<String, Value>) {
    let f = fixture();
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some("fuzz".into());
    let Ok(token) = jsonwebtoken::encode(&header, claims, &f.signing) else {
        return;
    };
    let api = f.runtime.block_on(verify::verify_api_token(
        &token,
        &f.provider,
        &f.jwks,
        &f.client,
        &api_expect(),
    ));
    if let Ok(c) = api {
        check_verified(claims, &c, false);
    }
    // The same claims as an ID token, through openidconnect's verifier.
    let Ok(id_token) = token.parse::<verify::IdToken>() else {
        return;
    };
    let id = f.runtime.block_on(verify::verify_id_token(
        &id_token,
        &f.provider,
        &f.jwks,
        &f.client,
        &expect(),
    ));
    if let Ok(c) = id {
        check_verified(claims, &c, true);
        let other = matches!(&claims["aud"], Value::Array(a) if a.iter().any(|v| v != "client"));
        assert!(
            !other,
            "an untrusted audience beside ours: {:?}",
            claims["aud"]
        );
    }
}

/// Whatever verified, by either path, meets every rule.
fn check_verified(
    claims: &serde_json::Map<String, Value>,
    c: &verify::IdClaims,
    expect_nonce: bool,
) {
    let f = fixture();
    assert_eq!(claims["iss"], f.provider.issuer.as_str(), "issuer");
    let aud_ok = match &claims["aud"] {
        Value::String(a) => a == "client",
        Value::Array(a) => a.iter().any(|v| v == "client"),
        _ => false,
    };
    assert!(aud_ok, "audience: {:?}", claims.get("aud"));
    // An API token's nonce is its caller's to refuse (api_token.rs), not the verifier's.
    if expect_nonce {
        assert_eq!(claims["nonce"], "nonce", "nonce");
    }
    assert!(!c.sub.is_empty(), "sub");
    assert!(c.exp >= NOW - SKEW, "expired: {}", c.exp);
    assert!(
        c.exp - NOW <= 400 * 24 * 3600,
        "an expiry beyond any real lifetime"
    );
    let several = matches!(&claims["aud"], Value::Array(a) if a.len() > 1);
    match claims.get("azp") {
        Some(azp) => assert_eq!(azp, "client", "authorized party"),
        None => assert!(!several, "several audiences without azp"),
    }
    assert!(c.iat <= NOW + SKEW, "issued in the future: {}", c.iat);
    assert!(
        c.groups.iter().all(|g| !g.is_empty()),
        "empty group name kept"
    );
    if c.email_matches {
        assert_eq!(c.email_verified, Some(true), "an unverified email matches");
    }
}

fn check_claims(v: &Value) {
    let list = verify::string_or_array(v);
    assert!(list.iter().all(|s| !s.is_empty()), "empty group name kept");
    if let Value::Object(m) = v {
        for x in m.values() {
            let _ = verify::string_or_array(x);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        check_token(s);
        for (k, v) in parse_query(s) {
            assert!(!k.contains('&') || s.contains('%'), "{k:?}={v:?}");
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        check_claims(&v);
        if let Value::Object(m) = &v {
            check_signed_claims(m);
        }
    }
});
