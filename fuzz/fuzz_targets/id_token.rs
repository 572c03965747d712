//! ID-token handling on arbitrary input: the JWT header parser, the gateway's verification
//! up to key selection (with an empty key set nothing may ever verify), the lenient claim
//! readers on arbitrary JSON, and the callback's query-string parser.

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
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // The key set's only fetch goes to a closed loopback port, once: later unknown key
        // ids are refused without a request (the re-fetch is rate-limited).
        let jwks_uri = "http://127.0.0.1:9/jwks.json".to_owned();
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
            jwks: Jwks::new(jwks_uri, Duration::from_secs(24 * 3600)),
            client: IdpClient::new(None, Duration::from_millis(500)).unwrap(),
        }
    })
}

fn check_token(token: &str) {
    let _ = jsonwebtoken::decode_header(token);
    let f = fixture();
    let expect = Expect {
        client_id: "client",
        nonce: Some("nonce"),
        access_token: Some("access"),
        now: 1_700_000_000,
        skew: 120,
        groups_claim: Some("memberOf"),
        match_by_email: true,
    };
    let verified = f.runtime.block_on(verify::verify(
        token,
        &f.provider,
        &f.jwks,
        &f.client,
        &expect,
    ));
    assert!(verified.is_err(), "{token:?} verified without any key");
}

fn check_claims(v: &Value) {
    if let Value::Bool(b) = v {
        assert_eq!(verify::lenient_bool(v), Some(*b));
    } else {
        let _ = verify::lenient_bool(v);
    }
    let list = verify::string_or_array(v);
    assert!(list.iter().all(|s| !s.is_empty()), "empty group name kept");
    if let Value::Object(m) = v {
        for x in m.values() {
            let _ = verify::lenient_bool(x);
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
    }
});
