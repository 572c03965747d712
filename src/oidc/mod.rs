//! Sign-in with an OpenID Connect provider (JumpCloud first): discovery, the authorization
//! request, the code exchange and ID-token verification, and refresh.
//!
//! This module never writes cookies and never decides access; it turns a callback into a
//! [`VerifiedLogin`] or an error, and the proxy's endpoints join it to the session store.

pub mod api_token;
pub mod http;
pub mod login;
pub mod provider;
pub mod verify;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;

use self::http::{urlencode, FetchError, IdpClient};
use self::login::PendingLogin;
use self::provider::{Jwks, Provider, ProviderError};
use self::verify::{Expect, IdClaims, LogoutClaims, LogoutExpect, VerifyError};
use crate::config::{ClientAuth, OidcConfig};
use crate::secret::Secret;
use crate::tls::TlsError;

/// Why a sign-in step failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Discovery has not succeeded yet.
    #[error("the identity provider has not been discovered yet")]
    NotReady,
    /// The provider could not be reached or answered 5xx.
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the code or refresh token (`invalid_grant`, `invalid_client`, …).
    #[error("identity provider refused the request: {0}")]
    Rejected(String),
    /// The provider's answer was not usable.
    #[error("invalid token response: {0}")]
    InvalidResponse(String),
    /// The ID token failed verification.
    #[error("ID token rejected: {0}")]
    Token(#[from] VerifyError),
}

impl From<FetchError> for OidcError {
    fn from(e: FetchError) -> Self {
        OidcError::Unavailable(e.to_string())
    }
}

/// A completed, verified sign-in.
#[derive(Debug, Clone)]
pub struct VerifiedLogin {
    /// The verified ID-token claims.
    pub claims: IdClaims,
    /// The raw ID token, kept for `id_token_hint` at logout.
    pub id_token: Secret,
    /// The refresh token, when `offline_access` was granted.
    pub refresh_token: Option<Secret>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    id_token: Option<String>,
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The sign-in client for one provider and client id.
#[derive(Debug)]
pub struct Oidc {
    config: OidcConfig,
    /// `acr_values` requested in every authorization request (step-up only).
    acr_values: Option<String>,
    secret: Secret,
    client: IdpClient,
    discovered: ArcSwapOption<(Provider, Jwks)>,
    /// `jti` values of logout tokens accepted here, kept while the token could still be used.
    logout_jtis: moka::sync::Cache<String, ()>,
}

impl Oidc {
    /// A client for `config`; call [`Oidc::discover_until_ready`] before use.
    pub fn new(config: OidcConfig, secret: Secret) -> Result<Oidc, TlsError> {
        let client = IdpClient::new(config.ca_file.as_deref(), Duration::from_secs(10))?;
        // A logout token is refused once it is older than its maximum age (plus the skew),
        // and may have been issued up to the skew in the future: remember its jti that long.
        let replay_window = Duration::from_secs(verify::LOGOUT_TOKEN_MAX_AGE as u64)
            + config.clock_skew * 2
            + Duration::from_secs(1);
        Ok(Oidc {
            config,
            acr_values: None,
            secret,
            client,
            discovered: ArcSwapOption::empty(),
            logout_jtis: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(replay_window)
                .build(),
        })
    }

    /// A client for the step-up application: same provider, the step-up client id and
    /// callback, scope `openid` only, and its `acr_values`.
    pub fn for_step_up(
        base: &OidcConfig,
        step_up: &crate::config::StepUpConfig,
        secret: Secret,
    ) -> Result<Oidc, TlsError> {
        let mut config = base.clone();
        config.client_id = step_up.client_id.clone();
        config.client_secret = step_up.client_secret.clone();
        config.callback_path = step_up.callback_path.clone();
        config.scopes = vec!["openid".to_owned()];
        config.step_up = Some(step_up.clone());
        let mut oidc = Oidc::new(config, secret)?;
        oidc.acr_values = step_up.acr_values.clone();
        Ok(oidc)
    }

    /// The configuration.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Whether discovery has succeeded.
    pub fn is_ready(&self) -> bool {
        self.discovered.load().is_some()
    }

    /// The discovered provider, when ready.
    pub fn provider(&self) -> Option<Arc<(Provider, Jwks)>> {
        self.discovered.load_full()
    }

    /// One discovery attempt (document and keys).
    pub async fn discover(&self) -> Result<(), ProviderError> {
        let provider = provider::discover(&self.client, &self.config.issuer).await?;
        let jwks = Jwks::new(provider.jwks_uri.clone(), Duration::from_secs(10));
        jwks.refresh(&self.client).await?;
        tracing::info!(issuer = %provider.issuer, "identity provider discovered");
        self.discovered.store(Some(Arc::new((provider, jwks))));
        Ok(())
    }

    /// Retries discovery with exponential backoff (1 s to 60 s, with jitter) until it succeeds.
    pub async fn discover_until_ready(self: Arc<Self>) {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.discover().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "identity provider discovery failed");
                    tokio::time::sleep(jitter(delay)).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    /// The URL that starts `login` at the provider.
    pub fn authorize_url(&self, login: &PendingLogin) -> Result<String, OidcError> {
        let discovered = self.provider().ok_or(OidcError::NotReady)?;
        let endpoint = &discovered.0.authorization_endpoint;
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        let scope = self.config.scopes.join(" ");
        let mut url = format!(
            "{endpoint}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={}&code_challenge_method=S256",
            urlencode(&self.config.client_id),
            urlencode(&login.redirect_uri),
            urlencode(&scope),
            urlencode(&login.state),
            urlencode(&login.nonce),
            urlencode(&login.challenge()),
        );
        if login.step_up {
            url.push_str("&prompt=login&max_age=0");
        }
        if let Some(acr) = &self.acr_values {
            url.push_str("&acr_values=");
            url.push_str(&urlencode(acr));
        }
        Ok(url)
    }

    async fn token_request<'a>(
        &'a self,
        form: &mut Vec<(&'a str, &'a str)>,
    ) -> Result<TokenResponse, OidcError> {
        let discovered = self.provider().ok_or(OidcError::NotReady)?;
        let basic;
        let mut headers: Vec<(&str, &str)> = Vec::new();
        match self.config.client_auth {
            ClientAuth::Basic => {
                // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
                basic = format!(
                    "Basic {}",
                    STANDARD.encode(format!(
                        "{}:{}",
                        urlencode(&self.config.client_id),
                        urlencode(self.secret.expose())
                    ))
                );
                headers.push(("authorization", basic.as_str()));
            }
            ClientAuth::Post => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", self.secret.expose()));
            }
        }
        let fetched = self
            .client
            .post_form(&discovered.0.token_endpoint, &headers, form)
            .await?;
        if fetched.status.is_server_error() {
            return Err(OidcError::Unavailable(format!(
                "token endpoint answered {}",
                fetched.status
            )));
        }
        if !fetched.status.is_success() {
            let code = serde_json::from_slice::<TokenError>(&fetched.body)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("status {}", fetched.status));
            return Err(OidcError::Rejected(code));
        }
        serde_json::from_slice(&fetched.body).map_err(|e| OidcError::InvalidResponse(e.to_string()))
    }

    async fn verify(
        &self,
        id_token: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<IdClaims, OidcError> {
        let discovered = self.provider().ok_or(OidcError::NotReady)?;
        let expect = Expect {
            client_id: &self.config.client_id,
            nonce,
            access_token,
            now: now(),
            skew: self.config.clock_skew.as_secs() as i64,
            groups_claim: self.config.groups_claim.as_deref(),
            match_by_email: self.config.match_by_email,
        };
        Ok(verify::verify(
            id_token,
            &discovered.0,
            &discovered.1,
            &self.client,
            &expect,
        )
        .await?)
    }

    /// Exchanges `code` for tokens and verifies the ID token against `login`.
    pub async fn exchange(
        &self,
        code: &str,
        login: &PendingLogin,
    ) -> Result<VerifiedLogin, OidcError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", login.redirect_uri.as_str()),
            ("code_verifier", login.verifier.expose()),
        ];
        let tokens = self.token_request(&mut form).await?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| OidcError::InvalidResponse("no id_token".to_owned()))?;
        let claims = self
            .verify(
                &id_token,
                Some(login.nonce.as_str()),
                tokens.access_token.as_deref(),
            )
            .await?;
        Ok(VerifiedLogin {
            claims,
            id_token: Secret::new(id_token),
            refresh_token: tokens.refresh_token.map(Secret::new),
        })
    }

    /// Uses a refresh token. A new ID token, when returned, must be for the same subject.
    pub async fn refresh(
        &self,
        refresh_token: &Secret,
        sub: &str,
    ) -> Result<VerifiedLogin, OidcError> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        let tokens = self.token_request(&mut form).await?;
        let id_token = tokens.id_token.ok_or_else(|| {
            OidcError::InvalidResponse("no id_token in refresh response".to_owned())
        })?;
        let claims = self
            .verify(&id_token, None, tokens.access_token.as_deref())
            .await?;
        if claims.sub != sub {
            return Err(OidcError::Token(VerifyError::Claim("sub")));
        }
        Ok(VerifiedLogin {
            claims,
            id_token: Secret::new(id_token),
            refresh_token: tokens.refresh_token.map(Secret::new),
        })
    }

    /// Verifies a back-channel logout token: signed by the provider like an ID token (its
    /// asymmetric algorithms and published keys only), `iss` its issuer exactly, `aud`
    /// containing our client id, `iat` neither in the future nor older than
    /// [`verify::LOGOUT_TOKEN_MAX_AGE`] (beyond the clock skew), the back-channel logout
    /// event, `sub` and/or `sid`, a `jti`, and no `nonce`. A `jti` already accepted by this
    /// instance is refused as a replay; other instances are the caller's to ask.
    pub async fn verify_logout_token(&self, token: &str) -> Result<LogoutClaims, VerifyError> {
        let discovered = self.provider().ok_or(VerifyError::NotReady)?;
        let expect = LogoutExpect {
            client_id: &self.config.client_id,
            now: now(),
            skew: self.config.clock_skew.as_secs() as i64,
        };
        let claims =
            verify::verify_logout(token, &discovered.0, &discovered.1, &self.client, &expect)
                .await?;
        // Atomic: of two deliveries racing here, one is fresh and the other a replay.
        if !self
            .logout_jtis
            .entry(claims.jti.clone())
            .or_insert(())
            .is_fresh()
        {
            return Err(VerifyError::Replayed);
        }
        Ok(claims)
    }

    /// Forgets an accepted logout token's `jti`, so that the provider may deliver the token
    /// again after a logout that could not be completed.
    pub fn forget_logout_jti(&self, jti: &str) {
        self.logout_jtis.invalidate(jti);
    }

    /// The provider's logout URL, when it has one and logout there is enabled.
    ///
    /// It names the client, never the ID token: a URL a browser is redirected to sits in its
    /// history, its proxies' logs and the provider's, and an `id_token_hint` there would
    /// hand every reader of those a signed statement of the user's identity and groups.
    /// RP-initiated logout accepts `client_id` in its place, and JumpCloud honours it.
    pub fn end_session_url(&self) -> Option<String> {
        if !self.config.idp_logout {
            return None;
        }
        let discovered = self.provider()?;
        let endpoint = discovered.0.end_session_endpoint.as_ref()?;
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        let mut url = format!(
            "{endpoint}{sep}client_id={}",
            urlencode(&self.config.client_id)
        );
        if let Some(uri) = &self.config.post_logout_redirect_uri {
            url.push_str("&post_logout_redirect_uri=");
            url.push_str(&urlencode(uri));
        }
        Some(url)
    }
}

/// `d` ± up to 20 %, so many gateways restarting together do not retry in lockstep.
pub fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let factor = 0.8 + (f64::from(b[0]) / 255.0) * 0.4;
    d.mul_f64(factor)
}
