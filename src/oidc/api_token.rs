//! Bearer JWTs for API access without a browser: tokens from the configured `[[api_token]]`
//! issuers, verified like ID tokens (signature first, the issuer's asymmetric keys only, then
//! `iss`, `aud`, `exp`, `iat`), then decided on by the same policy as signed-in users.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;

use super::http::IdpClient;
use super::provider::{self, Jwks, Provider};
use super::verify::{self, Expect, IdClaims, VerifyError};
use crate::config::ApiTokenIssuer;
use crate::tls::TlsError;

struct Issuer {
    config: ApiTokenIssuer,
    ready: ArcSwapOption<(Provider, Jwks)>,
}

/// The configured token issuers.
pub struct ApiTokens {
    issuers: Vec<Issuer>,
    client: IdpClient,
    skew: i64,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTokens")
            .field("issuers", &self.issuers.len())
            .finish()
    }
}

/// Asymmetric algorithms accepted when an issuer's discovery does not list them.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl ApiTokens {
    /// Issuers from the configuration; keys are fetched by [`ApiTokens::run`].
    pub fn new(
        configs: &[ApiTokenIssuer],
        ca_file: Option<&std::path::Path>,
        skew: Duration,
    ) -> Result<ApiTokens, TlsError> {
        Ok(ApiTokens {
            issuers: configs
                .iter()
                .map(|c| Issuer {
                    config: c.clone(),
                    ready: ArcSwapOption::empty(),
                })
                .collect(),
            client: IdpClient::new(ca_file, Duration::from_secs(10))?,
            skew: skew.as_secs() as i64,
        })
    }

    async fn prepare(&self, issuer: &Issuer) -> Result<(), provider::ProviderError> {
        let provider = match &issuer.config.jwks_uri {
            Some(jwks_uri) => Provider {
                issuer: issuer.config.issuer.clone(),
                authorization_endpoint: String::new(),
                token_endpoint: String::new(),
                userinfo_endpoint: None,
                jwks_uri: jwks_uri.clone(),
                end_session_endpoint: None,
                algorithms: ASYMMETRIC.to_vec(),
            },
            None => provider::discover(&self.client, &issuer.config.issuer).await?,
        };
        let jwks = Jwks::new(provider.jwks_uri.clone(), Duration::from_secs(10));
        jwks.refresh(&self.client).await?;
        issuer.ready.store(Some(Arc::new((provider, jwks))));
        Ok(())
    }

    /// Fetches every issuer's keys, retrying with backoff until each has them.
    pub async fn run(self: Arc<Self>) {
        let mut delay = Duration::from_secs(1);
        loop {
            let mut missing = 0;
            for issuer in &self.issuers {
                if issuer.ready.load().is_none() {
                    if let Err(e) = self.prepare(issuer).await {
                        missing += 1;
                        tracing::warn!(issuer = %issuer.config.issuer, error = %e, "API token issuer not reachable");
                    }
                }
            }
            if missing == 0 {
                return;
            }
            tokio::time::sleep(crate::clock::jitter(delay)).await;
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }

    /// Verifies `token` against the issuer its `iss` names.
    pub async fn verify(&self, token: &str) -> Result<IdClaims, VerifyError> {
        // The unverified `iss` only selects which issuer's keys and rules apply.
        let payload = token.split('.').nth(1).ok_or(VerifyError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| VerifyError::Malformed)?;
        let claims: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed)?;
        // An ID token is a statement to the client that asked for it, not a credential for
        // an API: one from a sign-in carries the `nonce` it was bound to, and a typed token
        // says what it is. Anything else than an access token or an untyped JWT is refused.
        if claims.get("nonce").is_some() {
            return Err(VerifyError::NoncePresent);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        if let Some(typ) = header.typ.as_deref() {
            let typ = typ.strip_prefix("application/").unwrap_or(typ);
            if !typ.eq_ignore_ascii_case("at+jwt") && !typ.eq_ignore_ascii_case("jwt") {
                return Err(VerifyError::Type(typ.chars().take(64).collect()));
            }
        }
        let iss = claims
            .get("iss")
            .and_then(|v| v.as_str())
            .ok_or(VerifyError::Issuer)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or(VerifyError::Issuer)?;
        let ready = issuer
            .ready
            .load_full()
            .ok_or(VerifyError::UnknownKey(String::new()))?;
        let expect = Expect {
            client_id: &issuer.config.audience,
            nonce: None,
            access_token: None,
            now: crate::clock::now(),
            skew: self.skew,
            groups_claim: None,
            match_by_email: issuer.config.match_by_email,
            typ_checked: true,
        };
        verify::verify_api_token(token, &ready.0, &ready.1, &self.client, &expect).await
    }
}
