//! Sign-in with an OpenID Connect provider (JumpCloud first): discovery, the authorization
//! request, the code exchange and ID-token verification, and refresh.
//!
//! This module never writes cookies and never decides access; it turns a callback into a
//! [`VerifiedLogin`] or an error, and the proxy's endpoints join it to the session store.

pub mod api_token;
pub mod http;
pub mod login;
pub mod logout_token;
pub mod provider;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use std::borrow::Cow;

use arc_swap::ArcSwapOption;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AuthType, AuthUrl, AuthenticationContextClass, AuthorizationCode, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndSessionUrl, EndpointNotSet, EndpointSet, IdTokenFields,
    IssuerUrl, JsonWebKeySet, LogoutRequest, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse as _, TokenUrl,
};

use self::http::{FetchError, IdpClient};
use self::login::PendingLogin;
use self::logout_token::{LogoutClaims, LogoutExpect};
use self::provider::{Jwks, Provider, ProviderError};
use self::verify::{Expect, IdClaims, OtherClaims, VerifyError};
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
    Unavailable(#[from] FetchError),
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

/// A completed, verified sign-in.
#[derive(Debug, Clone)]
pub struct VerifiedLogin {
    /// The verified ID-token claims.
    pub claims: IdClaims,
    /// The refresh token, when `offline_access` was granted.
    pub refresh_token: Option<Secret>,
}

/// The token endpoint's answer as the crate reads it, with our ID-token claims model.
type TokenResponse = StandardTokenResponse<
    IdTokenFields<
        OtherClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

/// The crate's client, with the authorization and token endpoints set.
type Client = CrateClient<EndpointSet, EndpointSet>;

/// The crate's client for our claims model, by which endpoints are set.
type CrateClient<Auth, Token> = openidconnect::Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    Auth,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    Token,
    EndpointNotSet,
>;

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
        let replay_window = Duration::from_secs(logout_token::LOGOUT_TOKEN_MAX_AGE as u64)
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
                    tokio::time::sleep(crate::clock::jitter(delay)).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    /// The crate's client for the discovered provider: its endpoints, our client id and
    /// secret and how the secret is sent. Its key set stays empty: ID tokens are verified by
    /// [`verify::verify_id_token`], which fetches keys it has not seen.
    fn client(&self, provider: &Provider) -> Result<Client, OidcError> {
        let invalid = |what: &str| OidcError::InvalidResponse(format!("unusable {what}"));
        let client = CrateClient::<EndpointNotSet, EndpointNotSet>::new(
            ClientId::new(self.config.client_id.clone()),
            IssuerUrl::new(provider.issuer.clone()).map_err(|_| invalid("issuer"))?,
            JsonWebKeySet::new(Vec::new()),
        )
        .set_client_secret(ClientSecret::new(self.secret.expose().to_owned()))
        .set_auth_type(match self.config.client_auth {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::Post => AuthType::RequestBody,
        })
        .set_auth_uri(
            AuthUrl::new(provider.authorization_endpoint.clone())
                .map_err(|_| invalid("authorization_endpoint"))?,
        )
        .set_token_uri(
            TokenUrl::new(provider.token_endpoint.clone())
                .map_err(|_| invalid("token_endpoint"))?,
        );
        Ok(client)
    }

    /// The URL that starts `login` at the provider: the code flow with PKCE (S256), state
    /// and nonce; a step-up also asks for a fresh authentication (`prompt=login`,
    /// `max_age=0`) and the configured `acr_values`.
    pub fn authorize_url(&self, login: &PendingLogin) -> Result<String, OidcError> {
        let discovered = self.provider().ok_or(OidcError::NotReady)?;
        let client = self.client(&discovered.0)?;
        let redirect = RedirectUrl::new(login.redirect_uri.clone())
            .map_err(|_| OidcError::InvalidResponse("unusable callback URL".to_owned()))?;
        let verifier = PkceCodeVerifier::new(login.verifier.expose().to_owned());
        let (state, nonce) = (login.state.clone(), login.nonce.clone());
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_redirect_uri(Cow::Owned(redirect))
            .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(&verifier))
            // The crate always asks for `openid` itself.
            .add_scopes(
                self.config
                    .scopes
                    .iter()
                    .filter(|s| *s != "openid")
                    .map(|s| Scope::new(s.clone())),
            );
        if login.step_up {
            request = request
                .add_prompt(CoreAuthPrompt::Login)
                .set_max_age(Duration::ZERO);
        }
        for acr in self.acr_values.iter().flat_map(|a| a.split_whitespace()) {
            request =
                request.add_auth_context_value(AuthenticationContextClass::new(acr.to_owned()));
        }
        Ok(request.url().0.into())
    }

    /// Verifies the ID token of a token response; a response without one is refused.
    async fn verified(
        &self,
        tokens: &TokenResponse,
        nonce: Option<&str>,
    ) -> Result<VerifiedLogin, OidcError> {
        let discovered = self.provider().ok_or(OidcError::NotReady)?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| OidcError::InvalidResponse("no id_token".to_owned()))?;
        let expect = Expect {
            client_id: &self.config.client_id,
            nonce,
            access_token: Some(tokens.access_token().secret()),
            now: crate::clock::now(),
            skew: self.config.clock_skew.as_secs() as i64,
            groups_claim: self.config.groups_claim.as_deref(),
            match_by_email: self.config.match_by_email,
            typ_checked: false,
        };
        let claims = verify::verify_id_token(
            id_token,
            &discovered.0,
            &discovered.1,
            &self.client,
            &expect,
        )
        .await?;
        Ok(VerifiedLogin {
            claims,
            refresh_token: tokens
                .refresh_token()
                .map(|t| Secret::new(t.secret().clone())),
        })
    }

    /// Exchanges `code` for tokens and verifies the ID token against `login`.
    pub async fn exchange(
        &self,
        code: &str,
        login: &PendingLogin,
    ) -> Result<VerifiedLogin, OidcError> {
        let discovered = self.provider().ok_or(OidcError::NotReady)?;
        let client = self.client(&discovered.0)?;
        let redirect = RedirectUrl::new(login.redirect_uri.clone())
            .map_err(|_| OidcError::InvalidResponse("unusable callback URL".to_owned()))?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(login.verifier.expose().to_owned()))
            .set_redirect_uri(Cow::Owned(redirect))
            .request_async(&self.client)
            .await
            .map_err(token_error)?;
        self.verified(&tokens, Some(login.nonce.as_str())).await
    }

    /// Uses a refresh token. The new ID token must be for the same subject.
    pub async fn refresh(
        &self,
        refresh_token: &Secret,
        sub: &str,
    ) -> Result<VerifiedLogin, OidcError> {
        let discovered = self.provider().ok_or(OidcError::NotReady)?;
        let client = self.client(&discovered.0)?;
        let refresh = RefreshToken::new(refresh_token.expose().to_owned());
        let tokens = client
            .exchange_refresh_token(&refresh)
            .request_async(&self.client)
            .await
            .map_err(token_error)?;
        let login = self.verified(&tokens, None).await?;
        if login.claims.sub != sub {
            return Err(OidcError::Token(VerifyError::Claim("sub")));
        }
        Ok(login)
    }

    /// Verifies a back-channel logout token: signed by the provider like an ID token (its
    /// asymmetric algorithms and published keys only), `iss` its issuer exactly, `aud`
    /// containing our client id, `iat` neither in the future nor older than
    /// [`logout_token::LOGOUT_TOKEN_MAX_AGE`] (beyond the clock skew), the back-channel logout
    /// event, `sub` and/or `sid`, a `jti`, and no `nonce`. A `jti` already accepted by this
    /// instance is refused as a replay; other instances are the caller's to ask.
    pub async fn verify_logout_token(&self, token: &str) -> Result<LogoutClaims, VerifyError> {
        let discovered = self.provider().ok_or(VerifyError::NotReady)?;
        let expect = LogoutExpect {
            client_id: &self.config.client_id,
            now: crate::clock::now(),
            skew: self.config.clock_skew.as_secs() as i64,
        };
        let claims =
            logout_token::verify_logout(token, &discovered.0, &discovered.1, &self.client, &expect)
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
        let endpoint = discovered.0.end_session_endpoint.clone()?;
        let mut request = LogoutRequest::from(EndSessionUrl::new(endpoint).ok()?)
            .set_client_id(ClientId::new(self.config.client_id.clone()));
        if let Some(uri) = &self.config.post_logout_redirect_uri {
            request =
                request.set_post_logout_redirect_uri(PostLogoutRedirectUrl::new(uri.clone()).ok()?);
        }
        Some(request.http_get_url().into())
    }
}

/// The crate's token-endpoint failure in the gateway's terms: the provider's refusal
/// (`invalid_grant`, …) ends a refresh for good; an outage is retried later.
fn token_error(
    e: RequestTokenError<FetchError, StandardErrorResponse<CoreErrorResponseType>>,
) -> OidcError {
    match e {
        RequestTokenError::ServerResponse(r) => OidcError::Rejected(r.error().as_ref().to_owned()),
        RequestTokenError::Request(e) => OidcError::Unavailable(e),
        // Which field failed, and why: a provider writing a claim the crate's model
        // refuses (JumpCloud's `email_verified` as "1") is told apart from garbage.
        RequestTokenError::Parse(e, _) => OidcError::InvalidResponse(e.inner().to_string()),
        RequestTokenError::Other(why) => OidcError::InvalidResponse(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    /// A claim the crate's model refuses fails the whole token response, and the error
    /// says which claim, so the admin knows what to change at the provider.
    #[test]
    fn an_unreadable_claim_is_named() {
        let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!(
            "{}.{}.c2ln",
            b64(serde_json::json!({"alg": "RS256", "kid": "k"})),
            b64(serde_json::json!({
                "iss": "https://oauth.id.jumpcloud.com/", "aud": ["c"], "sub": "s",
                "exp": 2, "iat": 1, "email_verified": "1"
            }))
        );
        let body = serde_json::json!({
            "access_token": "a", "token_type": "bearer", "id_token": token
        })
        .to_string();
        let e = serde_path_to_error::deserialize::<_, TokenResponse>(
            &mut serde_json::Deserializer::from_str(&body),
        )
        .unwrap_err();
        let message = token_error(RequestTokenError::Parse(e, body.into_bytes())).to_string();
        assert!(message.contains("email_verified"), "{message}");
    }
}
