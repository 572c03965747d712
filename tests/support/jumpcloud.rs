//! A fake JumpCloud for jumpgate's integration tests and demo: plain HTTP on 127.0.0.1,
//! seeded with users, user groups and SSO applications. One listener serves both the OpenID
//! Connect provider and the directory API (`/api/...`, JumpCloud's console host) over the
//! same state, following the JumpCloud reference (OIDC §1, §5; directory API §2, §5.3)
//! including its quirks: an issuer with a trailing slash, Hydra-shaped discovery and errors,
//! `aud` always an array, `email_verified` as the string `"true"`, `picture` `"none"`, a
//! groups claim that is a bare string for one group, no `amr`/`acr`; in the directory, v1
//! lists as `{totalCount, results}` with both `_id` and `id`, v2 lists as bare arrays, pages
//! of at most 100 and an unstable order unless `sort` is given. Every quirk has a toggle
//! ([`Quirks`]) and faults can be injected ([`Faults`], [`Tamper`], [`DirectoryFaults`]). It
//! is test code, never part of the gateway binary, and is self-contained so
//! `examples/demo.rs` can include it by path. [`FakeJumpCloud::start_tls`] serves HTTPS
//! instead, with a certificate the test makes, to exercise the gateway's outbound TLS.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------
// Seeded directory state
// ---------------------------------------------------------------------------------------

/// A JumpCloud user state (`systemuser.state`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserState {
    Staged,
    Activated,
    Suspended,
    /// A value outside the documented enum, to exercise strict parsers.
    Other(String),
}

impl UserState {
    pub fn as_str(&self) -> &str {
        match self {
            UserState::Staged => "STAGED",
            UserState::Activated => "ACTIVATED",
            UserState::Suspended => "SUSPENDED",
            UserState::Other(s) => s,
        }
    }
}

/// A JumpCloud system user. `id` is the 24-hex ObjectId that is also the OIDC `sub`.
#[derive(Clone, Debug)]
pub struct User {
    /// Left empty, [`FakeJumpCloud::add_user`] assigns one.
    pub id: String,
    pub username: String,
    pub email: String,
    pub firstname: String,
    pub middlename: String,
    pub lastname: String,
    /// Empty means "firstname lastname" wherever a display name is needed.
    pub displayname: String,
    pub state: UserState,
    pub activated: bool,
    pub suspended: bool,
    pub account_locked: bool,
    pub password_expired: bool,
    pub password_never_expires: bool,
    pub mfa_configured: bool,
    pub totp_enabled: bool,
    /// Whether the simulated MFA prompt succeeds when an app requires MFA.
    pub mfa_ok: bool,
    /// Custom user attributes (`attributes: [{name, value}]` in the directory).
    pub attributes: Vec<(String, String)>,
    pub created: SystemTime,
}

impl User {
    /// An active user `username@example.com` named after the username.
    pub fn new(username: &str) -> User {
        let mut parts = username.splitn(2, ['.', '_', '-']);
        let first = capitalise(parts.next().unwrap_or(username));
        let last = capitalise(parts.next().unwrap_or("Tester"));
        User {
            id: String::new(),
            username: username.to_owned(),
            email: format!("{username}@example.com"),
            firstname: first,
            middlename: String::new(),
            lastname: last,
            displayname: String::new(),
            state: UserState::Activated,
            activated: true,
            suspended: false,
            account_locked: false,
            password_expired: false,
            password_never_expires: false,
            mfa_configured: true,
            totp_enabled: true,
            mfa_ok: true,
            attributes: Vec::new(),
            created: SystemTime::now(),
        }
    }

    /// Suspends the user the way the console does: state and flag together.
    pub fn suspend(&mut self) {
        self.state = UserState::Suspended;
        self.suspended = true;
    }

    /// Reverses [`User::suspend`].
    pub fn reactivate(&mut self) {
        self.state = UserState::Activated;
        self.suspended = false;
    }

    pub fn display_name(&self) -> String {
        if self.displayname.is_empty() {
            format!("{} {}", self.firstname, self.lastname)
                .trim()
                .to_owned()
        } else {
            self.displayname.clone()
        }
    }

    /// JumpCloud refuses to sign in users that are staged, suspended, not activated,
    /// locked out or with an expired password.
    pub fn can_sign_in(&self) -> Result<(), &'static str> {
        if self.state == UserState::Staged {
            Err("The user account is staged.")
        } else if self.state == UserState::Suspended || self.suspended {
            Err("The user account is suspended.")
        } else if self.state != UserState::Activated {
            Err("The user account is not active.")
        } else if !self.activated {
            Err("The user account has not been activated.")
        } else if self.account_locked {
            Err("The user account is locked.")
        } else if self.password_expired {
            Err("The user's password has expired.")
        } else {
            Ok(())
        }
    }

    /// A user field by its directory name, or a custom attribute by name (for attribute
    /// mappings).
    pub fn field(&self, name: &str) -> Option<String> {
        Some(match name {
            "id" | "_id" => self.id.clone(),
            "username" => self.username.clone(),
            "email" => self.email.clone(),
            "firstname" => self.firstname.clone(),
            "middlename" => self.middlename.clone(),
            "lastname" => self.lastname.clone(),
            "displayname" => self.display_name(),
            _ => {
                return self
                    .attributes
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            }
        })
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A JumpCloud user group.
#[derive(Clone, Debug)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub description: String,
    pub email: String,
    pub membership_method: String,
    /// `attributes` as the v2 API returns it: `null` or `{ldapGroups:[{name}], ...}`.
    pub attributes: Value,
    /// Member user ids, in insertion order.
    pub members: Vec<String>,
}

impl Group {
    pub fn new(name: &str) -> Group {
        Group {
            id: object_id(),
            name: name.to_owned(),
            description: String::new(),
            email: String::new(),
            membership_method: "STATIC".to_owned(),
            attributes: Value::Null,
            members: Vec::new(),
        }
    }
}

/// How an SSO application authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// "Client Secret Basic".
    Basic,
    /// "Client Secret Post".
    Post,
    /// "Public (None PKCE)": no secret, PKCE S256 mandatory.
    None,
}

/// A JumpCloud OIDC SSO application.
#[derive(Clone, Debug)]
pub struct App {
    /// The application `_id` in the directory API (24 hex).
    pub id: String,
    pub display_label: String,
    pub client_id: String,
    pub client_secret: String,
    pub auth: ClientAuth,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// The optional "Refresh Token" grant checkbox.
    pub refresh_grant: bool,
    pub refresh_ttl: Duration,
    /// A Conditional Access Policy requiring MFA for this app.
    pub require_mfa: bool,
    /// "Include group attribute" and its claim name.
    pub groups_claim: Option<String>,
    /// Custom user attribute mappings: (claim name, user field or custom attribute name).
    pub user_attributes: Vec<(String, String)>,
    /// Constant attributes: (claim name, value). JumpCloud serialises them as strings.
    pub constant_attributes: Vec<(String, String)>,
    pub bound_groups: Vec<String>,
    pub bound_users: Vec<String>,
    /// Test convenience: every user is bound (JumpCloud itself has no such switch).
    pub bind_everyone: bool,
}

impl App {
    /// A "Client Secret Basic" app with one redirect URI, bound to nobody yet.
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> App {
        App {
            id: object_id(),
            display_label: client_id.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            auth: ClientAuth::Basic,
            redirect_uris: vec![redirect_uri.to_owned()],
            post_logout_redirect_uris: Vec::new(),
            refresh_grant: false,
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            require_mfa: false,
            groups_claim: None,
            user_attributes: Vec::new(),
            constant_attributes: Vec::new(),
            bound_groups: Vec::new(),
            bound_users: Vec::new(),
            bind_everyone: false,
        }
    }

    fn binds(&self, user_id: &str, groups: &[Group]) -> bool {
        self.bind_everyone
            || self.bound_users.iter().any(|u| u == user_id)
            || groups.iter().any(|g| {
                self.bound_groups.contains(&g.id) && g.members.iter().any(|m| m == user_id)
            })
    }
}

/// How `email_verified` is serialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EmailVerified {
    /// `"true"`: the constant attribute JumpCloud adds with the email scope.
    #[default]
    StringTrue,
    /// `"1"`, as one listmonk maintainer reports.
    StringOne,
    /// A JSON boolean, as OIDC Core intends.
    Bool,
    /// Omitted (the admin deleted the constant attribute).
    Absent,
}

/// JumpCloud's deviations from a textbook provider, each switchable.
#[derive(Clone, Debug)]
pub struct Quirks {
    pub email_verified: EmailVerified,
    /// `picture: "none"` with the profile scope; false omits the claim.
    pub picture_none: bool,
    /// false makes discovery *and* tokens use the issuer without the trailing slash.
    pub issuer_trailing_slash: bool,
    pub id_token_ttl: Duration,
    /// Also the reported `expires_in`.
    pub access_token_ttl: Duration,
    pub code_ttl: Duration,
    /// `token_type: "bearer"` (Hydra) rather than `"Bearer"`.
    pub token_type_lowercase: bool,
    /// `prompt=select_account` gives `error=invalid_request` (JumpCloud does not support it).
    pub reject_select_account: bool,
    /// Accept `code_challenge_method=plain`.
    pub allow_plain_pkce: bool,
    /// A replayed code also revokes the tokens issued for it (Hydra).
    pub revoke_on_code_replay: bool,
    /// A refresh fails once the user is no longer allowed to sign in or is unbound.
    pub refresh_checks_user: bool,
}

impl Default for Quirks {
    fn default() -> Quirks {
        Quirks {
            email_verified: EmailVerified::StringTrue,
            picture_none: true,
            issuer_trailing_slash: true,
            id_token_ttl: Duration::from_secs(3600),
            access_token_ttl: Duration::from_secs(3599),
            code_ttl: Duration::from_secs(600),
            token_type_lowercase: true,
            reject_select_account: true,
            allow_plain_pkce: false,
            revoke_on_code_replay: true,
            refresh_checks_user: true,
        }
    }
}

/// Injected failures. A `*_status` replaces that endpoint's answer with
/// `{"error":"server_error"}` and the given status.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub discovery_status: Option<u16>,
    pub jwks_status: Option<u16>,
    pub auth_status: Option<u16>,
    pub token_status: Option<u16>,
    pub userinfo_status: Option<u16>,
    pub logout_status: Option<u16>,
    /// Added before every response.
    pub delay: Duration,
    /// Added to the IdP clock: `iat`, `exp`, `auth_time`, `rat`.
    pub clock_skew_secs: i64,
    /// The JWKS leaves out the key that currently signs.
    pub jwks_omit_signing_kid: bool,
}

/// How a tampered ID token is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sign {
    #[default]
    Rs256,
    /// `alg: "none"` and an empty signature.
    AlgNone,
    /// HS256 keyed with the PEM (SPKI) of the published public key: algorithm confusion.
    Hs256WithPublicKey,
    /// RS256 by the current key, but with a `kid` that is not published.
    UnknownKid,
    /// RS256 by a key that is not published, under the current (published) `kid`.
    WrongKey,
}

pub type JsonEdit = Box<dyn FnOnce(&mut Value) + Send>;

/// A one-shot change to the next ID token issued (code or refresh grant).
#[derive(Default)]
pub struct Tamper {
    pub claims: Option<JsonEdit>,
    pub header: Option<JsonEdit>,
    pub sign: Sign,
}

impl Tamper {
    pub fn claims(f: impl FnOnce(&mut Value) + Send + 'static) -> Tamper {
        Tamper {
            claims: Some(Box::new(f)),
            ..Tamper::default()
        }
    }

    pub fn header(f: impl FnOnce(&mut Value) + Send + 'static) -> Tamper {
        Tamper {
            header: Some(Box::new(f)),
            ..Tamper::default()
        }
    }

    pub fn sign(sign: Sign) -> Tamper {
        Tamper {
            sign,
            ..Tamper::default()
        }
    }
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    /// Decoded `application/x-www-form-urlencoded` body parameters.
    pub form: Vec<(String, String)>,
    pub at: Instant,
    /// For directory API requests (`/api/...`): the 1-based ordinal among the directory
    /// requests this fake received, which is what [`DirectoryFaults`] counts.
    pub directory_seq: Option<u64>,
    /// The status answered, set once the response is ready (`None` while in flight).
    pub status: Option<u16>,
    /// The directory fault injected instead of the real answer, if any: `"429"` or
    /// `"status 503"`.
    pub fault: Option<String>,
}

impl LoggedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        param(&parse_query(&self.query), name).map(str::to_owned)
    }

    pub fn form_param(&self, name: &str) -> Option<&str> {
        param(&self.form, name)
    }

    /// Every value of a query parameter, in order (e.g. repeated `filter`).
    pub fn query_params(&self, name: &str) -> Vec<String> {
        parse_query(&self.query)
            .into_iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect()
    }

    /// A request to the directory API (`/api/...`).
    pub fn is_directory(&self) -> bool {
        self.directory_seq.is_some()
    }
}

/// Tokens handed out by the token endpoint.
#[derive(Clone, Debug)]
pub struct Issued {
    pub client_id: String,
    pub user_id: String,
    /// `authorization_code` or `refresh_token`.
    pub grant_type: String,
    pub scope: String,
    pub id_token: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub auth_time: i64,
    pub nonce: Option<String>,
    pub sid: String,
    /// The app required MFA and the simulated MFA step passed.
    pub mfa: bool,
}

/// The IdP's browser session for one user.
#[derive(Clone, Debug)]
pub struct IdpSession {
    pub sid: String,
    /// IdP clock (skew included) at the last real authentication.
    pub auth_time: i64,
}

#[derive(Clone, Debug)]
struct AuthCode {
    grant: Grant,
    redirect_uri: String,
    code_challenge: Option<(String, String)>,
    expires: Instant,
    used: bool,
    family: String,
}

/// What an authorization carries into tokens.
#[derive(Clone, Debug)]
struct Grant {
    client_id: String,
    user_id: String,
    scopes: Vec<String>,
    nonce: Option<String>,
    auth_time: i64,
    rat: i64,
    sid: String,
    mfa: bool,
}

#[derive(Clone, Debug)]
struct AccessToken {
    grant: Grant,
    iat: i64,
    expires: Instant,
    revoked: bool,
    family: String,
}

#[derive(Clone, Debug)]
struct RefreshToken {
    grant: Grant,
    expires: Instant,
    used: bool,
    revoked: bool,
    family: String,
}

/// Runtime OIDC state: codes, tokens, sessions.
#[derive(Default)]
struct Oidc {
    codes: HashMap<String, AuthCode>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    /// Keyed by user id.
    sessions: HashMap<String, IdpSession>,
    tamper: Option<Tamper>,
}

/// Everything the fake knows, shared by the OIDC endpoints and any directory-API layer.
pub struct State {
    /// `http://127.0.0.1:PORT` (`https://` when serving TLS), no trailing slash.
    pub base: String,
    /// The organisation id (`jc_org`).
    pub org_id: String,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub apps: Vec<App>,
    pub quirks: Quirks,
    pub faults: Faults,
    /// Who signs in at `/oauth2/auth`; `None` shows a chooser page.
    pub next_login: Option<String>,
    pub requests: Vec<LoggedRequest>,
    pub issued: Vec<Issued>,
    pub logins: usize,
    pub sessions_ended: usize,
    /// Published keys; the last one signs.
    pub keys: Vec<Arc<KeyMaterial>>,
    /// Directory API keys; the first one is the default read-only key.
    pub api_keys: Vec<ApiKey>,
    pub directory_faults: DirectoryFaults,
    next_key: usize,
    oidc: Oidc,
    dir: DirRuntime,
}

impl State {
    fn new(base: String) -> State {
        let key_base = key_base();
        State {
            base,
            org_id: object_id(),
            users: Vec::new(),
            groups: Vec::new(),
            apps: Vec::new(),
            quirks: Quirks::default(),
            faults: Faults::default(),
            next_login: None,
            requests: Vec::new(),
            issued: Vec::new(),
            logins: 0,
            sessions_ended: 0,
            keys: vec![pool_key(key_base)],
            api_keys: vec![ApiKey::read_only()],
            directory_faults: DirectoryFaults::default(),
            next_key: key_base + 1,
            oidc: Oidc::default(),
            dir: DirRuntime::default(),
        }
    }

    pub fn issuer(&self) -> String {
        if self.quirks.issuer_trailing_slash {
            format!("{}/", self.base)
        } else {
            self.base.clone()
        }
    }

    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }

    pub fn app(&self, client_id: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.client_id == client_id)
    }

    /// Deletes a user the way the directory does: with its group memberships and direct
    /// app bindings, and its IdP session.
    pub fn remove_user(&mut self, id: &str) -> Option<User> {
        let pos = self.users.iter().position(|u| u.id == id)?;
        let user = self.users.remove(pos);
        for g in &mut self.groups {
            g.members.retain(|m| m != id);
        }
        for a in &mut self.apps {
            a.bound_users.retain(|m| m != id);
        }
        self.oidc.sessions.remove(id);
        Some(user)
    }

    /// The IdP session of a user, if any.
    pub fn session(&self, user_id: &str) -> Option<&IdpSession> {
        self.oidc.sessions.get(user_id)
    }

    /// The IdP clock, in Unix seconds.
    pub fn now(&self) -> i64 {
        unix_now() + self.faults.clock_skew_secs
    }

    fn signing_key(&self) -> Arc<KeyMaterial> {
        self.keys
            .last()
            .cloned()
            .expect("a fake always publishes a signing key")
    }

    /// Why `user_id` may not use `app`, if it may not.
    fn denial(&self, app: &App, user_id: &str) -> Option<String> {
        let Some(user) = self.user(user_id) else {
            return Some("The user does not exist.".to_owned());
        };
        if let Err(e) = user.can_sign_in() {
            return Some(e.to_owned());
        }
        if !app.binds(user_id, &self.groups) {
            return Some("The user is not authorized to access this application.".to_owned());
        }
        None
    }

    /// Names of the user's groups that are bound to the app, in group order.
    fn app_groups(&self, app: &App, user_id: &str) -> Vec<String> {
        self.groups
            .iter()
            .filter(|g| app.bound_groups.contains(&g.id) && g.members.iter().any(|m| m == user_id))
            .map(|g| g.name.clone())
            .collect()
    }

    /// Scope, attribute and group claims shared by the ID token and userinfo.
    fn user_claims(&self, grant: &Grant) -> Map<String, Value> {
        let mut c = Map::new();
        let (Some(user), Some(app)) = (self.user(&grant.user_id), self.app(&grant.client_id))
        else {
            return c;
        };
        let has = |s: &str| grant.scopes.iter().any(|x| x == s);
        if has("email") {
            c.insert("email".into(), user.email.clone().into());
            match self.quirks.email_verified {
                EmailVerified::StringTrue => {
                    c.insert("email_verified".into(), "true".into());
                }
                EmailVerified::StringOne => {
                    c.insert("email_verified".into(), "1".into());
                }
                EmailVerified::Bool => {
                    c.insert("email_verified".into(), true.into());
                }
                EmailVerified::Absent => {}
            }
        }
        if has("profile") {
            c.insert("given_name".into(), user.firstname.clone().into());
            c.insert("family_name".into(), user.lastname.clone().into());
            c.insert("middle_name".into(), user.middlename.clone().into());
            c.insert("name".into(), user.display_name().into());
            c.insert("preferred_username".into(), user.username.clone().into());
            if self.quirks.picture_none {
                c.insert("picture".into(), "none".into());
            }
        }
        for (claim, field) in &app.user_attributes {
            if let Some(v) = user.field(field) {
                c.insert(claim.clone(), v.into());
            }
        }
        for (claim, value) in &app.constant_attributes {
            c.insert(claim.clone(), value.clone().into());
        }
        if let Some(name) = &app.groups_claim {
            let mut groups = self.app_groups(app, &user.id);
            match groups.len() {
                0 => {}
                1 => {
                    c.insert(name.clone(), groups.remove(0).into());
                }
                _ => {
                    c.insert(name.clone(), groups.into());
                }
            }
        }
        c
    }
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

/// An RSA signing key and its public parts.
pub struct KeyMaterial {
    pub kid: String,
    /// PKCS#1 DER of the private key.
    pub der: Vec<u8>,
    /// Base64url (no padding) big-endian modulus and exponent, as in the JWKS.
    pub n: String,
    pub e: String,
    /// The SPKI PEM of the public key.
    pub public_pem: String,
    /// The key itself, for signing.
    private: rsa::RsaPrivateKey,
}

impl KeyMaterial {
    fn jwk(&self) -> Value {
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e})
    }
}

fn generate_key() -> KeyMaterial {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("generate RSA key");
    let der = key
        .to_pkcs1_der()
        .expect("encode RSA key")
        .as_bytes()
        .to_vec();
    let public = key.to_public_key();
    KeyMaterial {
        kid: uuid(),
        der,
        n: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
        e: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        public_pem: public
            .to_public_key_pem(LineEnding::LF)
            .expect("encode public key"),
        private: key,
    }
}

// RSA generation is slow, so keys come from a pool shared by the fakes of one process; each
// fake starts at its own place in it (KEYS_PER_FAKE apart), so two fakes alive together,
// even after a few rotations, never publish or sign with the same key, and a token signed
// by one provider is another provider's foreign token.
const KEYS_PER_FAKE: usize = 4;
const POOL_PLACES: usize = 16;

fn key_base() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (n % POOL_PLACES) * KEYS_PER_FAKE
}

fn pool_key(i: usize) -> Arc<KeyMaterial> {
    static POOL: OnceLock<Mutex<Vec<Arc<KeyMaterial>>>> = OnceLock::new();
    let mut pool = lock(POOL.get_or_init(|| Mutex::new(Vec::new())));
    while pool.len() <= i {
        pool.push(Arc::new(generate_key()));
    }
    pool[i].clone()
}

// A key that no fake ever publishes.
fn rogue_key() -> &'static KeyMaterial {
    static KEY: OnceLock<KeyMaterial> = OnceLock::new();
    KEY.get_or_init(generate_key)
}

// ---------------------------------------------------------------------------------------
// The server handle
// ---------------------------------------------------------------------------------------

struct Server {
    accept: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

/// HTTPS serving: the certificate presented, replaceable while the fake runs, and the
/// handshakes that failed, so a test can tell a client that refused the certificate from one
/// that never came.
struct Tls {
    config: Mutex<Arc<rustls::ServerConfig>>,
    /// Bumped when the certificate is replaced: open connections then close, so clients
    /// (and their connection pools) must handshake again and meet the new certificate.
    replaced: watch::Sender<u64>,
    failures: Mutex<Vec<String>>,
}

/// A running fake JumpCloud: OIDC provider and directory API on one listener.
pub struct FakeJumpCloud {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: Mutex<Option<Server>>,
    tls: Option<Arc<Tls>>,
}

impl FakeJumpCloud {
    /// Listens on plain HTTP on 127.0.0.1 and an ephemeral port.
    pub async fn start() -> FakeJumpCloud {
        FakeJumpCloud::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Listens on `addr` with a fresh state.
    pub async fn start_on(addr: SocketAddr) -> FakeJumpCloud {
        FakeJumpCloud::listen(addr, None).await
    }

    /// Listens on HTTPS on 127.0.0.1 and an ephemeral port, presenting the certificate of
    /// `config` (HTTP/1.1 only, as over plain HTTP). The issuer and every endpoint are then
    /// `https://127.0.0.1:PORT/...`: the certificate needs the IP address `127.0.0.1` among
    /// its names for a client to accept it.
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> FakeJumpCloud {
        let tls = Tls {
            config: Mutex::new(config),
            replaced: watch::channel(0).0,
            failures: Mutex::new(Vec::new()),
        };
        FakeJumpCloud::listen(SocketAddr::from(([127, 0, 0, 1], 0)), Some(Arc::new(tls))).await
    }

    async fn listen(addr: SocketAddr, tls: Option<Arc<Tls>>) -> FakeJumpCloud {
        let listener = bind(addr).await;
        let addr = listener.local_addr().expect("local address");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Arc::new(Mutex::new(State::new(format!("{scheme}://{addr}"))));
        let server = serve(listener, state.clone(), tls.clone());
        FakeJumpCloud {
            addr,
            state,
            server: Mutex::new(Some(server)),
            tls,
        }
    }

    /// Presents the certificate of `config` from now on (a fake started with
    /// [`FakeJumpCloud::start_tls`] only). Open connections are closed, so a client's next
    /// request handshakes again rather than reusing a connection made under the old one.
    pub fn replace_tls_config(&self, config: Arc<rustls::ServerConfig>) {
        let tls = self
            .tls
            .as_ref()
            .expect("replace_tls_config on a fake serving plain HTTP");
        *lock(&tls.config) = config;
        tls.replaced.send_modify(|n| *n += 1);
    }

    /// Every failed TLS handshake so far, as the server side saw it: a client refusing the
    /// certificate shows as the alert it sent, e.g. `received fatal alert: UnknownCA`.
    pub fn tls_failures(&self) -> Vec<String> {
        self.tls
            .as_ref()
            .map(|t| lock(&t.failures).clone())
            .unwrap_or_default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The issuer as discovery and tokens state it: with the trailing slash unless the
    /// `issuer_trailing_slash` quirk is off.
    pub fn issuer(&self) -> String {
        self.lock().issuer()
    }

    /// `http://127.0.0.1:PORT` (`https://` when serving TLS), no trailing slash.
    pub fn base_url(&self) -> String {
        self.lock().base.clone()
    }

    /// Stops listening and drops open connections: connections are refused from now on.
    pub async fn stop(&self) {
        let server = lock(&self.server).take();
        if let Some(server) = server {
            let _ = server.shutdown.send(true);
            server.accept.abort();
            let _ = server.accept.await;
        }
    }

    /// Listens again on the same address with the same state, after [`FakeJumpCloud::stop`].
    pub async fn restart(&self) {
        if lock(&self.server).is_some() {
            return;
        }
        let listener = bind(self.addr).await;
        let server = serve(listener, self.state.clone(), self.tls.clone());
        *lock(&self.server) = Some(server);
    }

    /// The shared state, for layers that serve more of JumpCloud (the directory API).
    pub fn state(&self) -> Arc<Mutex<State>> {
        self.state.clone()
    }

    /// Runs `f` on the state under its lock.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.lock())
    }

    /// The organisation id carried as `jc_org`.
    pub fn org_id(&self) -> String {
        self.lock().org_id.clone()
    }

    /// Adds a user and returns its id (assigned when `user.id` is empty).
    pub fn add_user(&self, mut user: User) -> String {
        if user.id.is_empty() {
            user.id = object_id();
        }
        let id = user.id.clone();
        self.lock().users.push(user);
        id
    }

    pub fn update_user(&self, id: &str, f: impl FnOnce(&mut User)) {
        if let Some(u) = self.lock().users.iter_mut().find(|u| u.id == id) {
            f(u);
        }
    }

    pub fn user(&self, id: &str) -> Option<User> {
        self.lock().user(id).cloned()
    }

    /// Adds a user group and returns its id.
    pub fn add_group(&self, name: &str) -> String {
        let group = Group::new(name);
        let id = group.id.clone();
        self.lock().groups.push(group);
        id
    }

    pub fn update_group(&self, id: &str, f: impl FnOnce(&mut Group)) {
        if let Some(g) = self.lock().groups.iter_mut().find(|g| g.id == id) {
            f(g);
        }
    }

    pub fn add_member(&self, group_id: &str, user_id: &str) {
        if let Some(g) = self.lock().groups.iter_mut().find(|g| g.id == group_id) {
            if !g.members.iter().any(|m| m == user_id) {
                g.members.push(user_id.to_owned());
            }
        }
    }

    pub fn remove_member(&self, group_id: &str, user_id: &str) {
        if let Some(g) = self.lock().groups.iter_mut().find(|g| g.id == group_id) {
            g.members.retain(|m| m != user_id);
        }
    }

    pub fn add_app(&self, app: App) {
        let mut state = self.lock();
        state.apps.retain(|a| a.client_id != app.client_id);
        state.apps.push(app);
    }

    pub fn update_app(&self, client_id: &str, f: impl FnOnce(&mut App)) {
        if let Some(a) = self
            .lock()
            .apps
            .iter_mut()
            .find(|a| a.client_id == client_id)
        {
            f(a);
        }
    }

    /// Who signs in at `/oauth2/auth` from now on; `None` shows a chooser page instead
    /// (and then remembers the choice in a cookie, like a browser session).
    pub fn set_next_login(&self, user_id: Option<&str>) {
        self.lock().next_login = user_id.map(str::to_owned);
    }

    /// Ends every IdP session, as if all browsers signed out or the sessions expired.
    pub fn clear_sessions(&self) {
        self.lock().oidc.sessions.clear();
    }

    pub fn quirks(&self, f: impl FnOnce(&mut Quirks)) {
        f(&mut self.lock().quirks);
    }

    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.lock().faults);
    }

    /// A new key with a new kid signs from now on; the previous ones stay published.
    pub fn rotate_keys(&self) {
        let next = self.lock().next_key;
        let key = pool_key(next);
        let mut state = self.lock();
        state.next_key = next + 1;
        state.keys.push(key);
    }

    /// Unpublishes every key but the current one.
    pub fn drop_old_keys(&self) {
        let mut state = self.lock();
        let current = state.signing_key();
        state.keys = vec![current];
    }

    /// The kid that signs now.
    pub fn current_kid(&self) -> String {
        self.lock().signing_key().kid.clone()
    }

    /// The JWKS document as served (faults aside).
    pub fn jwks(&self) -> Value {
        let state = self.lock();
        json!({"keys": state.keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
    }

    /// The SPKI PEM of the current signing key.
    pub fn public_key_pem(&self) -> String {
        self.lock().signing_key().public_pem.clone()
    }

    /// Alters the next ID token issued, once.
    pub fn tamper_next_id_token(&self, t: Tamper) {
        self.lock().oidc.tamper = Some(t);
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().requests.clone()
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.lock().issued.clone()
    }

    /// Completed `/oauth2/auth` authorizations (codes handed out).
    pub fn logins(&self) -> usize {
        self.lock().logins
    }

    /// `/oauth2/sessions/logout` calls that ended an IdP session.
    pub fn sessions_ended(&self) -> usize {
        self.lock().sessions_ended
    }

    /// The default directory API key (`x-api-key`): read-only, not multi-tenant.
    pub fn api_key(&self) -> String {
        self.lock()
            .api_keys
            .first()
            .map(|k| k.key.clone())
            .unwrap_or_default()
    }

    /// Accepts one more directory API key (replacing one with the same `key`).
    pub fn add_api_key(&self, key: ApiKey) {
        let mut state = self.lock();
        state.api_keys.retain(|k| k.key != key.key);
        state.api_keys.push(key);
    }

    /// Changes the directory API's behaviour and injected faults.
    pub fn directory_faults(&self, f: impl FnOnce(&mut DirectoryFaults)) {
        f(&mut self.lock().directory_faults);
    }

    /// Deletes a user with its memberships and direct app bindings.
    pub fn remove_user(&self, id: &str) -> Option<User> {
        self.lock().remove_user(id)
    }

    /// The directory API requests (`/api/...`) received so far, oldest first.
    pub fn directory_requests(&self) -> Vec<LoggedRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.is_directory())
            .cloned()
            .collect()
    }

    /// How many directory API requests were received so far: the next one is number
    /// `directory_request_count() + 1` for [`DirectoryFaults`].
    pub fn directory_request_count(&self) -> u64 {
        self.lock().dir.requests
    }

    /// How many `GET /api/systemusers` pages were served (200) so far, which is what
    /// [`PageMutation::after_page`] counts.
    pub fn systemusers_pages_served(&self) -> u64 {
        self.lock().dir.user_pages
    }

    /// Adds `users` active users (`seed.userNNNNN`, ids in creation order) and `groups`
    /// static groups (`Seed Group NNNN`); group `g` gets `members_per_group` distinct
    /// members, users `g*m .. g*m+m` wrapping around. Returns the new user and group ids.
    /// Fast enough for tens of thousands of users: no per-user lookups.
    pub fn seed_directory(
        &self,
        users: usize,
        groups: usize,
        members_per_group: usize,
    ) -> (Vec<String>, Vec<String>) {
        let (user_base, group_base) = {
            let s = self.lock();
            (s.users.len(), s.groups.len())
        };
        let now = SystemTime::now();
        let mut new_users = Vec::with_capacity(users);
        let mut user_ids = Vec::with_capacity(users);
        for i in 0..users {
            let mut u = User::new(&format!("seed.user{:05}", user_base + i));
            u.id = object_id();
            u.created = now;
            user_ids.push(u.id.clone());
            new_users.push(u);
        }
        let per_group = members_per_group.min(users);
        let mut new_groups = Vec::with_capacity(groups);
        let mut group_ids = Vec::with_capacity(groups);
        for g in 0..groups {
            let mut group = Group::new(&format!("Seed Group {:04}", group_base + g));
            group.members = (0..per_group)
                .map(|k| user_ids[(g * per_group + k) % users].clone())
                .collect();
            group_ids.push(group.id.clone());
            new_groups.push(group);
        }
        let mut s = self.lock();
        s.users.extend(new_users);
        s.groups.extend(new_groups);
        (user_ids, group_ids)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for FakeJumpCloud {
    fn drop(&mut self) {
        if let Some(server) = lock(&self.server).take() {
            let _ = server.shutdown.send(true);
            server.accept.abort();
        }
    }
}

// A panic in a test closure must not wedge every later request.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn bind(addr: SocketAddr) -> TcpListener {
    // A port just released by stop() can take a moment to become bindable again.
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fake JumpCloud cannot listen on {addr}: {last:?}");
}

fn serve(listener: TcpListener, state: Arc<Mutex<State>>, tls: Option<Arc<Tls>>) -> Server {
    let (shutdown, stopped) = watch::channel(false);
    let accept = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let state = state.clone();
            let stopped = stopped.clone();
            let Some(tls) = tls.clone() else {
                tokio::spawn(serve_connection(stream, state, stopped, None));
                continue;
            };
            tokio::spawn(async move {
                // Subscribed before the certificate is read: a replacement from now on
                // closes this connection.
                let replaced = tls.replaced.subscribe();
                let acceptor = tokio_rustls::TlsAcceptor::from(lock(&tls.config).clone());
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        serve_connection(stream, state, stopped, Some(replaced)).await
                    }
                    Ok(Err(e)) => lock(&tls.failures).push(e.to_string()),
                    Err(_) => lock(&tls.failures).push("handshake timed out".to_owned()),
                }
            });
        }
    });
    Server { accept, shutdown }
}

/// Serves one connection until it ends, the fake stops or (TLS) the certificate is replaced.
async fn serve_connection<S>(
    stream: S,
    state: Arc<Mutex<State>>,
    mut stopped: watch::Receiver<bool>,
    replaced: Option<watch::Receiver<u64>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let replaced = async {
        match replaced {
            Some(mut r) => {
                let _ = r.changed().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = conn => {}
        _ = stopped.changed() => {}
        () = replaced => {}
    }
}

// ---------------------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------------------

type Resp = Response<Full<Bytes>>;

/// What the connection sends: a whole body, or a slow one (see [`SlowBody`]).
type Body = UnsyncBoxBody<Bytes, Infallible>;

struct Req {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    raw_query: String,
    headers: HeaderMap,
    form: Vec<(String, String)>,
}

impl Req {
    fn q(&self, name: &str) -> Option<&str> {
        param(&self.query, name)
    }

    fn f(&self, name: &str) -> Option<&str> {
        param(&self.form, name)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_owned())
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, 1 << 20).collect().await;
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let is_form = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let (body, body_ok) = match body {
        Ok(b) => (b.to_bytes(), true),
        Err(_) => (Bytes::new(), false),
    };
    let form = if is_form {
        parse_query(&String::from_utf8_lossy(&body))
    } else {
        Vec::new()
    };
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parse_query(&raw_query),
        raw_query,
        headers: parts.headers,
        form,
    };
    let is_directory = req.path == "/api" || req.path.starts_with("/api/");
    let (delay, seq, at) = {
        let mut s = lock(&state);
        let seq = is_directory.then(|| {
            s.dir.requests += 1;
            s.dir.requests
        });
        let at = Instant::now();
        s.requests.push(LoggedRequest {
            method: req.method.to_string(),
            path: req.path.clone(),
            query: req.raw_query.clone(),
            headers: req
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            form: req.form.clone(),
            at,
            directory_seq: seq,
            status: None,
            fault: None,
        });
        (s.faults.delay, seq, at)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (resp, fault, slow) = match seq {
        Some(seq) => directory(&state, &req, seq).await,
        None => (oidc(&state, &req, body_ok), None, None),
    };
    {
        let mut s = lock(&state);
        // Found from the end: it is recent, and tests may have cleared the log meanwhile.
        if let Some(entry) = s
            .requests
            .iter_mut()
            .rev()
            .find(|r| r.at == at && r.path == req.path && r.status.is_none())
        {
            entry.status = Some(resp.status().as_u16());
            entry.fault = fault;
        }
    }
    Ok(finish(resp, slow).await)
}

/// The OpenID Connect endpoints.
fn oidc(state: &Mutex<State>, req: &Req, body_ok: bool) -> Resp {
    if !body_ok {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request body could not be read.",
        );
    }
    // An injected fault replaces the endpoint entirely, so it has no side effects either.
    let fault = {
        let s = lock(state);
        let f = &s.faults;
        match req.path.as_str() {
            "/.well-known/openid-configuration" => f.discovery_status,
            "/.well-known/jwks.json" => f.jwks_status,
            "/oauth2/auth" => f.auth_status,
            "/oauth2/token" => f.token_status,
            "/userinfo" => f.userinfo_status,
            "/oauth2/sessions/logout" => f.logout_status,
            _ => None,
        }
    };
    if let Some(code) = fault {
        return json_response(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &json!({"error": "server_error", "error_description": "Injected fault."}),
        );
    }
    match req.path.as_str() {
        "/.well-known/openid-configuration" => get_only(req, || discovery(&lock(state))),
        "/.well-known/jwks.json" => get_only(req, || jwks(&lock(state))),
        "/oauth2/auth" => get_only(req, || authorize(&mut lock(state), req)),
        "/oauth2/token" => token(state, req),
        "/userinfo" => userinfo(&lock(state), req),
        "/oauth2/sessions/logout" => logout(&mut lock(state), req),
        "/oauth2/revoke" => revoke(&mut lock(state), req),
        _ => oauth_error(StatusCode::NOT_FOUND, "not_found", "Not Found"),
    }
}

fn get_only(req: &Req, f: impl FnOnce() -> Resp) -> Resp {
    if req.method == Method::GET || req.method == Method::HEAD {
        f()
    } else {
        oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method Not Allowed",
        )
    }
}

fn discovery(state: &State) -> Resp {
    let b = &state.base;
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": state.issuer(),
            "authorization_endpoint": format!("{b}/oauth2/auth"),
            "token_endpoint": format!("{b}/oauth2/token"),
            "userinfo_endpoint": format!("{b}/userinfo"),
            "jwks_uri": format!("{b}/.well-known/jwks.json"),
            "end_session_endpoint": format!("{b}/oauth2/sessions/logout"),
            "revocation_endpoint": format!("{b}/oauth2/revoke"),
            "response_types_supported": ["code", "code id_token", "id_token", "token id_token", "token", "token id_token code"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "grant_types_supported": ["authorization_code", "refresh_token", "implicit", "client_credentials"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "userinfo_signing_alg_values_supported": ["none", "RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "none"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "email", "profile", "offline_access", "offline"],
            "claims_supported": ["sub"],
            "frontchannel_logout_supported": true,
            "backchannel_logout_supported": true,
            "request_parameter_supported": true,
            "request_uri_parameter_supported": true
        }),
    )
}

fn jwks(state: &State) -> Resp {
    let signing = state.signing_key().kid.clone();
    let keys: Vec<Value> = state
        .keys
        .iter()
        .filter(|k| !(state.faults.jwks_omit_signing_kid && k.kid == signing))
        .map(|k| k.jwk())
        .collect();
    json_response(StatusCode::OK, &json!({ "keys": keys }))
}

const SCOPES: [&str; 5] = ["openid", "email", "profile", "offline_access", "offline"];

fn authorize(state: &mut State, req: &Req) -> Resp {
    // Until client and redirect URI are known good, nothing may be redirected anywhere.
    let Some(client_id) = req.q("client_id") else {
        return error_page("invalid_client", "The client_id parameter is missing.");
    };
    let Some(app) = state.app(client_id).cloned() else {
        return error_page("invalid_client", "The OAuth 2.0 client does not exist.");
    };
    let Some(redirect_uri) = req.q("redirect_uri") else {
        return error_page("invalid_request", "The redirect_uri parameter is missing.");
    };
    if !app.redirect_uris.iter().any(|u| u == redirect_uri) {
        return error_page(
            "invalid_request",
            "The 'redirect_uri' parameter does not match any of the OAuth 2.0 Client's pre-registered redirect urls.",
        );
    }
    let state_param = req.q("state").unwrap_or("");
    let fail = |error: &str, description: &str| {
        let mut params = vec![("error", error), ("error_description", description)];
        if !state_param.is_empty() {
            params.push(("state", state_param));
        }
        redirect(&with_params(redirect_uri, &params))
    };

    if req.q("response_type") != Some("code") {
        return fail(
            "unsupported_response_type",
            "The authorization server does not support obtaining a token using this method.",
        );
    }
    let mut scopes: Vec<String> = Vec::new();
    for s in req
        .q("scope")
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
    {
        if !SCOPES.contains(&s) {
            return fail(
                "invalid_scope",
                &format!("The OAuth 2.0 Client is not allowed to request scope '{s}'."),
            );
        }
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_owned());
        }
    }
    if !scopes.iter().any(|s| s == "openid") {
        return fail("invalid_scope", "The scope 'openid' is required.");
    }
    if state_param.chars().count() < 8 {
        return fail(
            "invalid_state",
            "The state is missing or does not have enough characters and is therefore considered too weak.",
        );
    }
    let challenge = req.q("code_challenge").filter(|c| !c.is_empty());
    let method = req.q("code_challenge_method").unwrap_or("plain");
    let code_challenge = match challenge {
        None if app.auth == ClientAuth::None => {
            return fail(
                "invalid_request",
                "Clients must include a code_challenge when performing the authorize code flow, but it is missing.",
            )
        }
        None => None,
        Some(c) => {
            if method != "S256" && !(method == "plain" && state.quirks.allow_plain_pkce) {
                return fail(
                    "invalid_request",
                    "The code_challenge_method is not supported, use S256 instead.",
                );
            }
            Some((c.to_owned(), method.to_owned()))
        }
    };
    let prompts: Vec<&str> = req
        .q("prompt")
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    for p in &prompts {
        match *p {
            "none" | "login" | "consent" => {}
            "select_account" if !state.quirks.reject_select_account => {}
            _ => {
                return fail(
                    "invalid_request",
                    &format!("Used unknown value '{p}' for prompt parameter."),
                )
            }
        }
    }
    if prompts.contains(&"none") && prompts.len() > 1 {
        return fail(
            "invalid_request",
            "Parameter 'prompt' was set to 'none', but contains other values as well which is not allowed.",
        );
    }
    let max_age = match req.q("max_age").filter(|s| !s.is_empty()) {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => return fail("invalid_request", "The max_age parameter is invalid."),
        },
    };

    let now = state.now();
    // The login step: a chooser link, a test-chosen user, or the browser's IdP session.
    let chosen = req.q("jc_login").map(str::to_owned);
    let from_cookie = req.cookie("jc_session").and_then(|sid| {
        state
            .oidc
            .sessions
            .iter()
            .find(|(_, s)| s.sid == sid)
            .map(|(u, _)| u.clone())
    });
    let user_id = chosen
        .clone()
        .or_else(|| state.next_login.clone())
        .or(from_cookie);
    let session = user_id
        .as_deref()
        .and_then(|u| state.oidc.sessions.get(u))
        .cloned();
    let stale = |s: &IdpSession| max_age.is_some_and(|m| now - s.auth_time > m);
    let fresh =
        chosen.is_some() || prompts.contains(&"login") || session.as_ref().is_none_or(stale);
    if fresh && chosen.is_none() && prompts.contains(&"none") {
        return fail(
            "login_required",
            "Prompt 'none' was requested, but no existing login session was found.",
        );
    }
    let user_id = match user_id {
        Some(u) if !fresh || chosen.is_some() || state.next_login.is_some() => u,
        _ => return chooser_page(state, req),
    };
    if let Some(why) = state.denial(&app, &user_id) {
        return fail("access_denied", &why);
    }
    let mfa_ok = state.user(&user_id).is_some_and(|u| u.mfa_ok);
    if app.require_mfa && !mfa_ok {
        return fail(
            "access_denied",
            "Multi-factor authentication is required by a conditional access policy.",
        );
    }
    let session = if fresh {
        let s = IdpSession {
            sid: session.map(|s| s.sid).unwrap_or_else(uuid),
            auth_time: now,
        };
        state.oidc.sessions.insert(user_id.clone(), s.clone());
        s
    } else {
        session.unwrap_or_else(|| IdpSession {
            sid: uuid(),
            auth_time: now,
        })
    };

    let code = random_token();
    state.oidc.codes.insert(
        code.clone(),
        AuthCode {
            grant: Grant {
                client_id: app.client_id.clone(),
                user_id,
                scopes: scopes.clone(),
                nonce: req.q("nonce").map(str::to_owned),
                auth_time: session.auth_time,
                rat: now,
                sid: session.sid.clone(),
                mfa: app.require_mfa,
            },
            redirect_uri: redirect_uri.to_owned(),
            code_challenge,
            expires: Instant::now() + state.quirks.code_ttl,
            used: false,
            family: code.clone(),
        },
    );
    state.logins += 1;
    let scope = scopes.join(" ");
    let mut resp = redirect(&with_params(
        redirect_uri,
        &[("code", &code), ("scope", &scope), ("state", state_param)],
    ));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "jc_session={}; Path=/; HttpOnly; SameSite=Lax",
        session.sid
    )) {
        resp.headers_mut().append(http::header::SET_COOKIE, v);
    }
    resp
}

/// The login page of the demo: pick who signs in.
fn chooser_page(state: &State, req: &Req) -> Resp {
    let query: Vec<String> = req
        .query
        .iter()
        .filter(|(k, _)| k != "jc_login")
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let query = query.join("&");
    let mut rows = String::new();
    for u in &state.users {
        let status = match u.can_sign_in() {
            Ok(()) => String::new(),
            Err(e) => format!(" — {e}"),
        };
        let groups: Vec<&str> = state
            .groups
            .iter()
            .filter(|g| g.members.contains(&u.id))
            .map(|g| g.name.as_str())
            .collect();
        rows.push_str(&format!(
            "<li><a href=\"/oauth2/auth?{}&amp;jc_login={}\">{}</a> &lt;{}&gt; [{}]{}{}</li>\n",
            html_escape(&query),
            encode(&u.id),
            html_escape(&u.display_name()),
            html_escape(&u.email),
            html_escape(&groups.join(", ")),
            html_escape(&status),
            if u.mfa_ok { "" } else { " (MFA fails)" },
        ));
    }
    if rows.is_empty() {
        rows.push_str("<li>No users are seeded.</li>");
    }
    html(
        StatusCode::OK,
        &format!(
            "<!doctype html><html><head><title>JumpCloud (fake) sign in</title></head><body>\
             <h1>Fake JumpCloud</h1><p>Sign in to <b>{}</b> as:</p><ul>{rows}</ul></body></html>",
            html_escape(req.q("client_id").unwrap_or(""))
        ),
    )
}

fn token(shared: &Mutex<State>, req: &Req) -> Resp {
    if req.method != Method::POST {
        return oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method Not Allowed",
        );
    }
    let mut guard = lock(shared);
    let state = &mut *guard;
    let app = match client_auth(state, req) {
        Ok(app) => app,
        Err(e) => return e.response(),
    };
    let result = match req.f("grant_type") {
        Some("authorization_code") => code_grant(state, &app, req),
        Some("refresh_token") => refresh_grant(state, &app, req),
        Some(_) => Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        )),
        None => Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The grant_type parameter is missing.",
        )),
    };
    let (grant, family, grant_type) = match result {
        Ok(r) => r,
        Err(e) => return e.response(),
    };

    let access_token = random_token();
    let now = state.now();
    let wall = Instant::now();
    state.oidc.access.insert(
        access_token.clone(),
        AccessToken {
            grant: grant.clone(),
            iat: now,
            expires: wall + state.quirks.access_token_ttl,
            revoked: false,
            family: family.clone(),
        },
    );
    let offline = grant
        .scopes
        .iter()
        .any(|s| s == "offline_access" || s == "offline");
    let refresh_token = (app.refresh_grant && offline).then(|| {
        let t = random_token();
        state.oidc.refresh.insert(
            t.clone(),
            RefreshToken {
                grant: grant.clone(),
                expires: wall + app.refresh_ttl,
                used: false,
                revoked: false,
                family: family.clone(),
            },
        );
        t
    });

    let mut claims = Map::new();
    claims.insert("iss".into(), state.issuer().into());
    claims.insert("sub".into(), grant.user_id.clone().into());
    claims.insert("aud".into(), json!([grant.client_id]));
    claims.insert(
        "exp".into(),
        (now + state.quirks.id_token_ttl.as_secs() as i64).into(),
    );
    claims.insert("iat".into(), now.into());
    claims.insert("auth_time".into(), grant.auth_time.into());
    claims.insert("rat".into(), grant.rat.into());
    // Hydra leaves the nonce out of ID tokens minted by a refresh.
    if grant_type == "authorization_code" {
        if let Some(n) = &grant.nonce {
            claims.insert("nonce".into(), n.clone().into());
        }
    }
    claims.insert("at_hash".into(), at_hash(&access_token).into());
    claims.insert("jti".into(), uuid().into());
    claims.insert("sid".into(), grant.sid.clone().into());
    claims.insert("jc_org".into(), state.org_id.clone().into());
    claims.extend(state.user_claims(&grant));
    let key = state.signing_key();
    let tamper = state.oidc.tamper.take();
    let quirks = state.quirks.clone();
    drop(guard);

    // Test closures run without the lock held.
    let id_token = sign_id_token(Value::Object(claims), &key, tamper);

    let scope = grant.scopes.join(" ");
    lock(shared).issued.push(Issued {
        client_id: grant.client_id.clone(),
        user_id: grant.user_id.clone(),
        grant_type: grant_type.to_owned(),
        scope: scope.clone(),
        id_token: id_token.clone(),
        access_token: access_token.clone(),
        refresh_token: refresh_token.clone(),
        auth_time: grant.auth_time,
        nonce: grant.nonce.clone(),
        sid: grant.sid.clone(),
        mfa: grant.mfa,
    });
    let mut body = json!({
        "access_token": access_token,
        "token_type": if quirks.token_type_lowercase { "bearer" } else { "Bearer" },
        "expires_in": quirks.access_token_ttl.as_secs(),
        "scope": scope,
        "id_token": id_token,
    });
    if let Some(t) = refresh_token {
        body["refresh_token"] = t.into();
    }
    let mut resp = json_response(StatusCode::OK, &body);
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp.headers_mut()
        .insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// A token endpoint error, rendered by [`TokenError::response`].
struct TokenError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl TokenError {
    fn new(status: StatusCode, error: &'static str, description: &str) -> TokenError {
        TokenError {
            status,
            error,
            description: description.to_owned(),
        }
    }

    fn response(&self) -> Resp {
        oauth_error(self.status, self.error, &self.description)
    }
}

fn invalid_client(description: &str) -> TokenError {
    TokenError::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
}

fn invalid_grant(description: &str) -> TokenError {
    TokenError::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// Client authentication, strict about the method registered for the app (as fosite is).
fn client_auth(state: &State, req: &Req) -> Result<App, TokenError> {
    let basic = match req.header("authorization") {
        Some(h) if h.len() > 6 && h[..6].eq_ignore_ascii_case("basic ") => {
            let decoded = STANDARD
                .decode(h[6..].trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| invalid_client("The Authorization header is malformed."))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| invalid_client("The Authorization header is malformed."))?;
            // RFC 6749 §2.3.1: both halves are form-urlencoded before base64.
            Some((url_decode(id), url_decode(secret)))
        }
        _ => None,
    };
    let (method, id, secret) = match (basic, req.f("client_secret")) {
        (Some((id, secret)), _) => {
            if req.f("client_id").is_some_and(|f| f != id) {
                return Err(invalid_client(
                    "The client_id in the body does not match the Authorization header.",
                ));
            }
            (ClientAuth::Basic, id, Some(secret))
        }
        (None, Some(secret)) => (
            ClientAuth::Post,
            req.f("client_id").unwrap_or("").to_owned(),
            Some(secret.to_owned()),
        ),
        (None, None) => (
            ClientAuth::None,
            req.f("client_id").unwrap_or("").to_owned(),
            None,
        ),
    };
    let app = state
        .app(&id)
        .cloned()
        .ok_or_else(|| invalid_client("Client authentication failed (e.g., unknown client, no client authentication included, or unsupported authentication method)."))?;
    if app.auth != method {
        return Err(invalid_client(&format!(
            "The OAuth 2.0 Client supports client authentication method '{}', but method '{}' was requested.",
            auth_name(app.auth),
            auth_name(method)
        )));
    }
    if method != ClientAuth::None && secret.as_deref() != Some(app.client_secret.as_str()) {
        return Err(invalid_client(
            "The provided client secret did not match the registered client secret.",
        ));
    }
    Ok(app)
}

fn auth_name(a: ClientAuth) -> &'static str {
    match a {
        ClientAuth::Basic => "client_secret_basic",
        ClientAuth::Post => "client_secret_post",
        ClientAuth::None => "none",
    }
}

fn code_grant(
    state: &mut State,
    app: &App,
    req: &Req,
) -> Result<(Grant, String, &'static str), TokenError> {
    let code = req.f("code").unwrap_or("");
    let Some(entry) = state.oidc.codes.get_mut(code) else {
        return Err(invalid_grant(
            "The provided authorization grant is invalid, expired, or revoked.",
        ));
    };
    if entry.used {
        let family = entry.family.clone();
        if state.quirks.revoke_on_code_replay {
            revoke_family(state, &family);
        }
        return Err(invalid_grant(
            "The authorization code has already been used.",
        ));
    }
    if entry.grant.client_id != app.client_id {
        return Err(invalid_grant(
            "The OAuth 2.0 Client ID from this request does not match the one from the authorize request.",
        ));
    }
    if Instant::now() > entry.expires {
        return Err(invalid_grant("The authorization code has expired."));
    }
    if req.f("redirect_uri") != Some(entry.redirect_uri.as_str()) {
        return Err(invalid_grant(
            "The 'redirect_uri' from this request does not match the one from the authorize request.",
        ));
    }
    let verifier = req.f("code_verifier").unwrap_or("");
    match &entry.code_challenge {
        Some((challenge, method)) => {
            if verifier.len() < 43 || verifier.len() > 128 {
                return Err(invalid_grant(
                    "The PKCE code verifier must be between 43 and 128 characters.",
                ));
            }
            let computed = if method == "S256" {
                URL_SAFE_NO_PAD.encode(ring::digest::digest(
                    &ring::digest::SHA256,
                    verifier.as_bytes(),
                ))
            } else {
                verifier.to_owned()
            };
            if &computed != challenge {
                return Err(invalid_grant(
                    "The PKCE code challenge did not match the code verifier.",
                ));
            }
        }
        None if !verifier.is_empty() => {
            return Err(invalid_grant(
                "The PKCE code verifier was provided but no code challenge was sent with the authorize request.",
            ));
        }
        None => {}
    }
    // Single use: spent only once it has been checked, so a mistyped exchange can retry.
    entry.used = true;
    Ok((
        entry.grant.clone(),
        entry.family.clone(),
        "authorization_code",
    ))
}

fn refresh_grant(
    state: &mut State,
    app: &App,
    req: &Req,
) -> Result<(Grant, String, &'static str), TokenError> {
    if !app.refresh_grant {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "The OAuth 2.0 Client is not allowed to use authorization grant 'refresh_token'.",
        ));
    }
    let token = req.f("refresh_token").unwrap_or("");
    let Some(entry) = state.oidc.refresh.get(token).cloned() else {
        return Err(invalid_grant(
            "The provided authorization grant is invalid, expired, or revoked.",
        ));
    };
    if entry.grant.client_id != app.client_id {
        return Err(invalid_grant(
            "The OAuth 2.0 Client ID from this request does not match the ID during the initial token issuance.",
        ));
    }
    if entry.used {
        // Reuse of a rotated token: Hydra revokes the whole chain.
        revoke_family(state, &entry.family);
        return Err(invalid_grant("The refresh token has already been used."));
    }
    if entry.revoked || Instant::now() > entry.expires {
        return Err(invalid_grant("The refresh token is expired or revoked."));
    }
    if state.quirks.refresh_checks_user {
        if let Some(why) = state.denial(app, &entry.grant.user_id) {
            return Err(invalid_grant(&why));
        }
    }
    if let Some(e) = state.oidc.refresh.get_mut(token) {
        e.used = true;
    }
    Ok((entry.grant, entry.family, "refresh_token"))
}

fn revoke_family(state: &mut State, family: &str) {
    for t in state.oidc.access.values_mut() {
        if t.family == family {
            t.revoked = true;
        }
    }
    for t in state.oidc.refresh.values_mut() {
        if t.family == family {
            t.revoked = true;
        }
    }
}

fn sign_id_token(claims: Value, key: &KeyMaterial, tamper: Option<Tamper>) -> String {
    let Tamper {
        claims: edit_claims,
        header: edit_header,
        sign,
    } = tamper.unwrap_or_default();
    let mut claims = claims;
    let mut header = json!({"alg": "RS256", "kid": key.kid, "typ": "JWT"});
    match sign {
        Sign::Rs256 | Sign::WrongKey => {}
        Sign::AlgNone => header["alg"] = "none".into(),
        Sign::Hs256WithPublicKey => header["alg"] = "HS256".into(),
        Sign::UnknownKid => header["kid"] = uuid().into(),
    }
    if let Some(f) = edit_header {
        f(&mut header);
    }
    if let Some(f) = edit_claims {
        f(&mut claims);
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = match sign {
        Sign::AlgNone => Ok(String::new()),
        Sign::Hs256WithPublicKey => jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(key.public_pem.as_bytes()),
            Algorithm::HS256,
        ),
        Sign::WrongKey => Ok(rs256(rogue_key(), input.as_bytes())),
        Sign::Rs256 | Sign::UnknownKid => Ok(rs256(key, input.as_bytes())),
    };
    format!("{input}.{}", signature.unwrap_or_default())
}

/// An RS256 JWS signature (RSASSA-PKCS1-v1_5 with SHA-256, RFC 7518 §3.3, RFC 8017 §8.2),
/// made with the `rsa` crate's private-key operation over ring's SHA-256: not with
/// jsonwebtoken, which the gateway verifies with, so that a flaw in one cannot sign what
/// the same flaw then accepts.
fn rs256(key: &KeyMaterial, input: &[u8]) -> String {
    // The DER DigestInfo header of a SHA-256 hash (RFC 8017 §9.2, note 1).
    const SHA256_DIGEST_INFO: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let digest = ring::digest::digest(&ring::digest::SHA256, input);
    let padding = rsa::Pkcs1v15Sign {
        hash_len: Some(32),
        prefix: SHA256_DIGEST_INFO.to_vec().into_boxed_slice(),
    };
    let signature = key
        .private
        .sign(padding, digest.as_ref())
        .expect("RSA signature");
    URL_SAFE_NO_PAD.encode(signature)
}

fn at_hash(access_token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
}

fn userinfo(state: &State, req: &Req) -> Resp {
    if req.method != Method::GET && req.method != Method::POST {
        return oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method Not Allowed",
        );
    }
    let bearer = req
        .header("authorization")
        .and_then(|h| {
            (h.len() > 7 && h[..7].eq_ignore_ascii_case("bearer ")).then(|| h[7..].trim())
        })
        .or_else(|| req.f("access_token"));
    let token = bearer.and_then(|t| state.oidc.access.get(t));
    let Some(token) = token.filter(|t| !t.revoked && Instant::now() <= t.expires) else {
        let mut resp = oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "The access token is missing, expired or revoked.",
        );
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        return resp;
    };
    let g = &token.grant;
    // The observed userinfo: the ID token's claims without exp/jti/at_hash/nonce, and
    // without sid/jc_org either.
    let mut claims = Map::new();
    claims.insert("iss".into(), state.issuer().into());
    claims.insert("sub".into(), g.user_id.clone().into());
    claims.insert("aud".into(), json!([g.client_id]));
    claims.insert("iat".into(), token.iat.into());
    claims.insert("auth_time".into(), g.auth_time.into());
    claims.insert("rat".into(), g.rat.into());
    claims.extend(state.user_claims(g));
    json_response(StatusCode::OK, &Value::Object(claims))
}

fn logout(state: &mut State, req: &Req) -> Resp {
    let hint = match req.q("id_token_hint").filter(|h| !h.is_empty()) {
        None => None,
        Some(h) => match verify_hint(state, h) {
            Some(claims) => Some(claims),
            None => {
                return error_page(
                    "invalid_request",
                    "The id_token_hint could not be verified.",
                )
            }
        },
    };
    let hint_client = hint.as_ref().and_then(|c| match &c["aud"] {
        Value::Array(a) => a.first().and_then(|v| v.as_str()).map(str::to_owned),
        Value::String(s) => Some(s.clone()),
        _ => None,
    });
    let client_id = match (hint_client, req.q("client_id")) {
        (Some(h), Some(c)) if h != c => {
            return error_page(
                "invalid_request",
                "The client_id does not match the audience of the id_token_hint.",
            )
        }
        (Some(h), _) => Some(h),
        (None, c) => c.map(str::to_owned),
    };
    let post_logout = req.q("post_logout_redirect_uri").filter(|u| !u.is_empty());
    if let Some(uri) = post_logout {
        let registered = client_id
            .as_deref()
            .and_then(|c| state.app(c))
            .is_some_and(|a| a.post_logout_redirect_uris.iter().any(|u| u == uri));
        if !registered {
            return error_page(
                "invalid_request",
                "Logout failed because the query parameter post_logout_redirect_uri is not a whitelisted as a post_logout_redirect_uri for the client.",
            );
        }
    }
    let user = hint
        .as_ref()
        .and_then(|c| c["sub"].as_str().map(str::to_owned))
        .or_else(|| {
            let sid = req.cookie("jc_session")?;
            state
                .oidc
                .sessions
                .iter()
                .find(|(_, s)| s.sid == sid)
                .map(|(u, _)| u.clone())
        })
        .or_else(|| state.next_login.clone());
    if let Some(user) = user {
        if state.oidc.sessions.remove(&user).is_some() {
            state.sessions_ended += 1;
        }
    }
    let mut resp = match post_logout {
        Some(uri) => {
            let mut params = Vec::new();
            if let Some(s) = req.q("state") {
                params.push(("state", s));
            }
            redirect(&with_params(uri, &params))
        }
        None => html(
            StatusCode::OK,
            "<!doctype html><html><head><title>Signed out</title></head><body>\
             <h1>You have been signed out of JumpCloud (fake).</h1></body></html>",
        ),
    };
    resp.headers_mut().append(
        http::header::SET_COOKIE,
        HeaderValue::from_static("jc_session=; Path=/; Max-Age=0"),
    );
    resp
}

/// The claims of an ID token signed by one of the published keys; expiry is not checked,
/// since an expired hint is fine for logout.
fn verify_hint(state: &State, token: &str) -> Option<Value> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    let kid = header.kid?;
    let key = state.keys.iter().find(|k| k.kid == kid)?;
    let decoding = DecodingKey::from_rsa_components(&key.n, &key.e).ok()?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &decoding, &validation)
        .ok()
        .map(|d| d.claims)
}

fn revoke(state: &mut State, req: &Req) -> Resp {
    if let Some(t) = req.f("token") {
        if let Some(a) = state.oidc.access.get_mut(t) {
            a.revoked = true;
        }
        if let Some(r) = state.oidc.refresh.get_mut(t) {
            r.revoked = true;
        }
    }
    Response::new(Full::new(Bytes::new()))
}

// ---------------------------------------------------------------------------------------
// Directory API: JumpCloud's console host, served on the same listener and state
// ---------------------------------------------------------------------------------------

/// A directory API key, sent as `x-api-key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub key: String,
    /// The key of a Read Only administrator: write methods get 403.
    pub read_only: bool,
    /// `Some` for a multi-tenant (MTP) administrator: the organisations it may choose with
    /// `x-org-id`, which it must send. Every organisation sees this fake's one directory.
    pub org_ids: Option<Vec<String>>,
}

impl ApiKey {
    /// A fresh random read-only key (40 hex digits, like JumpCloud's).
    pub fn read_only() -> ApiKey {
        ApiKey {
            key: random_api_key(),
            read_only: true,
            org_ids: None,
        }
    }

    /// A fresh random key of an administrator with write access.
    pub fn admin() -> ApiKey {
        ApiKey {
            read_only: false,
            ..ApiKey::read_only()
        }
    }

    /// A fresh random read-only MTP key for these organisations.
    pub fn mtp(org_ids: &[&str]) -> ApiKey {
        ApiKey {
            org_ids: Some(org_ids.iter().map(|o| (*o).to_owned()).collect()),
            ..ApiKey::read_only()
        }
    }
}

fn random_api_key() -> String {
    rand::random::<[u8; 20]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A response body sent in `chunk`-byte pieces with `pause` before each one; the headers
/// (with the full `Content-Length`) go out at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowBody {
    pub chunk: usize,
    pub pause: Duration,
}

/// A change to the directory between two pages of `GET /api/systemusers`.
#[allow(clippy::large_enum_variant)]
pub enum DirectoryMutation {
    /// An id is assigned if empty.
    AddUser(User),
    /// By id, with its memberships ([`State::remove_user`]).
    RemoveUser(String),
    /// Anything else. It runs under the state lock, so it must not call [`FakeJumpCloud`].
    Run(Box<dyn FnOnce(&mut State) + Send>),
}

impl std::fmt::Debug for DirectoryMutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirectoryMutation::AddUser(u) => write!(f, "AddUser({})", u.username),
            DirectoryMutation::RemoveUser(id) => write!(f, "RemoveUser({id})"),
            DirectoryMutation::Run(_) => f.write_str("Run(..)"),
        }
    }
}

/// Applies `mutation` once, right after the `after_page`-th `GET /api/systemusers` page
/// (a 200 answer, counted since the fake started:
/// [`FakeJumpCloud::systemusers_pages_served`]) is built, so that page still shows the
/// directory before the change.
#[derive(Debug)]
pub struct PageMutation {
    pub after_page: u64,
    pub mutation: DirectoryMutation,
}

/// Directory API switches and injected faults.
///
/// Request numbers count the directory requests (`/api/...`) since the fake started, from
/// 1: [`LoggedRequest::directory_seq`], [`FakeJumpCloud::directory_request_count`].
/// Injected answers come before the API key is checked, as from an edge rate limiter; a
/// 429 wins over an injected status. The request log marks each one
/// ([`LoggedRequest::fault`]).
#[derive(Debug, Default)]
pub struct DirectoryFaults {
    /// `limit` above 100 is clamped to 100 instead of answered with 400.
    pub clamp_limit: bool,
    /// A v1 filter whose operator lacks the `$` (`email:eq:x`, "undefined behaviour") is
    /// ignored, so the results are unfiltered, instead of answered with 400.
    pub lenient_v1_filter: bool,
    /// 429 for these request numbers.
    pub rate_limit_on: Vec<u64>,
    /// 429 for the next this-many requests (counts down).
    pub rate_limit_next: u32,
    /// 429 for every request received in `[start, end)`.
    pub rate_limit_window: Option<(Instant, Instant)>,
    /// `Retry-After: <secs>` on injected 429s; `None` sends no `Retry-After`.
    pub retry_after: Option<u64>,
    /// (request number, status): that request gets the status (500, 502, 503, 504, 403...).
    pub status_on: Vec<(u64, u16)>,
    /// (path prefix, status): every request whose path starts with the prefix.
    pub status_for_prefix: Vec<(String, u16)>,
    /// Added before every directory response, injected ones included.
    pub delay: Duration,
    /// Every directory response body trickles.
    pub slow_body: Option<SlowBody>,
    pub mutations: Vec<PageMutation>,
    /// Users (by id) served with `"email": null`.
    pub null_email: Vec<String>,
    /// (user id, state): served as the user's `state` instead of the real one, e.g.
    /// `"LOCKED"`, outside the documented enum.
    pub state_override: Vec<(String, String)>,
    /// (record id or `"*"`, field, value): an extra field in the matching user, user
    /// group and application records.
    pub extra_fields: Vec<(String, String, Value)>,
}

impl DirectoryFaults {
    /// 429 for every request received during the next `d`.
    pub fn rate_limit_for(&mut self, d: Duration) {
        let now = Instant::now();
        self.rate_limit_window = Some((now, now + d));
    }

    /// `status` for every request whose path starts with `prefix`.
    pub fn fail_prefix(&mut self, prefix: &str, status: u16) {
        self.status_for_prefix.push((prefix.to_owned(), status));
    }

    /// `mutation` right after the `page`-th `GET /api/systemusers` page.
    pub fn mutate_after_page(&mut self, page: u64, mutation: DirectoryMutation) {
        self.mutations.push(PageMutation {
            after_page: page,
            mutation,
        });
    }
}

/// Directory counters and indexes.
#[derive(Default)]
struct DirRuntime {
    /// Directory requests received.
    requests: u64,
    /// `GET /api/systemusers` pages served.
    user_pages: u64,
    /// Indices into `State::users` in id order; checked on use, rebuilt when stale.
    by_id: Vec<usize>,
}

impl State {
    /// Indices of `users` in `_id` order. The cached order is checked in O(n) (tests may
    /// change `users` directly) and only re-sorted when the users changed.
    fn users_by_id(&mut self) -> &[usize] {
        let users = &self.users;
        let by_id = &self.dir.by_id;
        let valid = by_id.len() == users.len()
            && by_id.windows(2).all(|w| users[w[0]].id <= users[w[1]].id);
        if !valid {
            let mut order: Vec<usize> = (0..users.len()).collect();
            order.sort_by(|a, b| users[*a].id.cmp(&users[*b].id));
            self.dir.by_id = order;
        }
        &self.dir.by_id
    }
}

/// A directory request: (response, injected fault, slow body).
async fn directory(
    state: &Mutex<State>,
    req: &Req,
    seq: u64,
) -> (Resp, Option<String>, Option<SlowBody>) {
    let delay = lock(state).directory_faults.delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut guard = lock(state);
    let s = &mut *guard;
    let slow = s.directory_faults.slow_body;
    if let Some((resp, fault)) = injected(&mut s.directory_faults, req, seq) {
        return (resp, Some(fault), slow);
    }
    let resp = match check_key(s, req) {
        Ok(()) => directory_route(s, req).unwrap_or_else(|e| e.response()),
        Err(e) => e.response(),
    };
    (resp, None, slow)
}

fn injected(f: &mut DirectoryFaults, req: &Req, seq: u64) -> Option<(Resp, String)> {
    let now = Instant::now();
    let next = f.rate_limit_next > 0;
    if next {
        f.rate_limit_next -= 1;
    }
    let limited = next
        || f.rate_limit_on.contains(&seq)
        || f.rate_limit_window
            .is_some_and(|(start, end)| start <= now && now < end);
    if limited {
        let mut resp = api_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        if let Some(secs) = f.retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return Some((resp, "429".to_owned()));
    }
    let status = f
        .status_on
        .iter()
        .find(|(n, _)| *n == seq)
        .map(|(_, c)| *c)
        .or_else(|| {
            f.status_for_prefix
                .iter()
                .find(|(p, _)| req.path.starts_with(p.as_str()))
                .map(|(_, c)| *c)
        })?;
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let resp = match code.as_u16() {
        // What a load balancer in front says: not JSON.
        502 | 504 => html(
            code,
            &format!(
                "<html><head><title>{0}</title></head><body><center><h1>{0}</h1></center></body></html>",
                code
            ),
        ),
        403 => api_error(
            code,
            "Forbidden: your IP address has been blocked due to suspected abuse",
        ),
        _ => api_error(code, code.canonical_reason().unwrap_or("Error")),
    };
    Some((resp, format!("status {}", code.as_u16())))
}

/// `x-api-key`, `x-org-id` and the key's role.
fn check_key(s: &State, req: &Req) -> Result<(), ApiError> {
    let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized");
    let Some(key) = req
        .header("x-api-key")
        .and_then(|k| s.api_keys.iter().find(|a| a.key == k))
    else {
        return Err(unauthorized());
    };
    let org = req
        .header("x-org-id")
        .map(str::trim)
        .filter(|o| !o.is_empty());
    match (&key.org_ids, org) {
        (Some(_), None) => return Err(unauthorized()),
        (_, Some(o)) if !is_object_id(o) => {
            return Err(bad_request("Bad Request: invalid x-org-id header"))
        }
        (Some(orgs), Some(o)) if !orgs.iter().any(|x| x == o) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "Not Found: organization not found",
            ))
        }
        (None, Some(o)) if o != s.org_id => {
            return Err(bad_request(
                "Bad Request: x-org-id does not match the API key's organization",
            ))
        }
        _ => {}
    }
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(if key.read_only {
            ApiError::new(StatusCode::FORBIDDEN, "Forbidden")
        } else {
            // The fake serves reads only.
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        });
    }
    Ok(())
}

fn is_object_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn api_error(status: StatusCode, message: &str) -> Resp {
    json_response(
        status,
        &json!({
            "code": status.as_u16(),
            "message": message,
            "status": status.canonical_reason().unwrap_or(""),
        }),
    )
}

/// A directory error, answered as [`api_error`] does.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: &str) -> ApiError {
        ApiError {
            status,
            message: message.to_owned(),
        }
    }

    fn response(&self) -> Resp {
        api_error(self.status, &self.message)
    }
}

fn bad_request(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found")
}

type ApiResult = Result<Resp, ApiError>;

fn directory_route(s: &mut State, req: &Req) -> ApiResult {
    let segments: Vec<&str> = req.path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        ["api", "systemusers"] => list_systemusers(s, req),
        ["api", "systemusers", id] => get_systemuser(s, req, id),
        ["api", "applications"] => list_applications(s, req),
        ["api", "v2", "usergroups"] => list_usergroups(s, req),
        ["api", "v2", "usergroups", id] => get_usergroup(s, id),
        ["api", "v2", "usergroups", id, "members"] => group_members(s, req, id),
        ["api", "v2", "usergroups", id, "membership"] => group_membership(s, req, id),
        ["api", "v2", "users", id, "memberof"] => user_memberof(s, req, id),
        ["api", "v2", "applications", id, "usergroups"] => app_usergroups(s, req, id),
        ["api", "v2", "applications", id, "users"] => app_users(s, req, id),
        ["api", "v2", "applications", id, "associations"] => app_associations(s, req, id),
        _ => Err(not_found()),
    }
}

// --- Query parameters ---

struct Paging {
    limit: usize,
    skip: usize,
}

impl Paging {
    /// `limit` (default 10, at most 100) and `skip` (default 0).
    fn parse(s: &State, req: &Req) -> Result<Paging, ApiError> {
        let number = |name: &str, default: usize| match req.q(name).map(str::trim) {
            None | Some("") => Ok(default),
            Some(v) => v.parse::<usize>().map_err(|_| {
                bad_request(&format!(
                    "Bad Request: {name} must be a non-negative integer"
                ))
            }),
        };
        let mut limit = number("limit", 10)?;
        if limit == 0 {
            limit = 10;
        }
        if limit > 100 {
            if !s.directory_faults.clamp_limit {
                return Err(bad_request(
                    "Bad Request: limit must be less than or equal to 100",
                ));
            }
            limit = 100;
        }
        Ok(Paging {
            limit,
            skip: number("skip", 0)?,
        })
    }

    fn window(&self, len: usize) -> std::ops::Range<usize> {
        let start = self.skip.min(len);
        start..start.saturating_add(self.limit).min(len)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    Search,
}

struct Cond {
    field: String,
    op: Op,
    value: String,
}

impl Cond {
    /// v1 `field:$op:value` or v2 `field:op:value`.
    fn parse(s: &str, v1: bool) -> Result<Cond, String> {
        let mut parts = s.splitn(3, ':');
        let (Some(field), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "Bad Request: invalid filter {s:?}, expected field:op:value"
            ));
        };
        let op = match (v1, op) {
            (true, "$eq") | (false, "eq") => Op::Eq,
            (true, "$ne") | (false, "ne") => Op::Ne,
            (true, "$gt") | (false, "gt") => Op::Gt,
            (true, "$gte") | (false, "ge") => Op::Ge,
            (true, "$lt") | (false, "lt") => Op::Lt,
            (true, "$lte") | (false, "le") => Op::Le,
            (true, "$in") | (false, "in") => Op::In,
            (false, "search") => Op::Search,
            _ => return Err(format!("Bad Request: invalid filter operator {op:?}")),
        };
        Ok(Cond {
            field: field.to_owned(),
            op,
            value: value.to_owned(),
        })
    }

    /// Case-sensitive string comparison; a missing or null field only matches `ne`.
    fn matches(&self, v: Option<&str>) -> bool {
        let want = self.value.as_str();
        match (self.op, v) {
            (Op::Ne, v) => v != Some(want),
            (_, None) => false,
            (Op::Eq, Some(v)) => v == want,
            (Op::Gt, Some(v)) => v > want,
            (Op::Ge, Some(v)) => v >= want,
            (Op::Lt, Some(v)) => v < want,
            (Op::Le, Some(v)) => v <= want,
            (Op::In, Some(v)) => want.split('|').any(|x| x == v),
            (Op::Search, Some(v)) => v.to_lowercase().contains(&want.to_lowercase()),
        }
    }
}

/// `filter`, `filter[N]` (all must hold) and `filter[or][N]` (one must hold).
#[derive(Default)]
struct Filters {
    all: Vec<Cond>,
    any: Vec<Cond>,
}

impl Filters {
    fn parse(req: &Req, v1: bool, lenient: bool) -> Result<Filters, ApiError> {
        let mut filters = Filters::default();
        for (k, v) in &req.query {
            let or = if k.starts_with("filter[or]") {
                true
            } else if k == "filter" || k.starts_with("filter[") {
                false
            } else {
                continue;
            };
            if v.is_empty() {
                continue;
            }
            match Cond::parse(v, v1) {
                Ok(c) if or => filters.any.push(c),
                Ok(c) => filters.all.push(c),
                Err(_)
                    if v1
                        && lenient
                        && v.split(':').nth(1).is_some_and(|op| !op.starts_with('$')) => {}
                Err(e) => return Err(bad_request(&e)),
            }
        }
        Ok(filters)
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty() && self.any.is_empty()
    }

    fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.all.iter().all(|c| c.matches(get(&c.field).as_deref()))
            && (self.any.is_empty() || self.any.iter().any(|c| c.matches(get(&c.field).as_deref())))
    }
}

struct SortKey {
    field: String,
    desc: bool,
}

/// v1: space-separated; v2: comma-separated; `-` for descending.
fn parse_sort(s: Option<&str>, v1: bool) -> Vec<SortKey> {
    let s = s.unwrap_or("");
    let parts: Vec<&str> = if v1 {
        s.split_whitespace().collect()
    } else {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect()
    };
    parts
        .into_iter()
        .map(|p| match p.strip_prefix('-') {
            Some(f) => SortKey {
                field: f.to_owned(),
                desc: true,
            },
            None => SortKey {
                field: p.to_owned(),
                desc: false,
            },
        })
        .collect()
}

/// A stable sort of `order` by the keys; ties keep the (unstable) base order, as
/// JumpCloud warns for non-unique sort fields. Missing values sort first.
fn sort_indices(
    order: &mut Vec<usize>,
    keys: &[SortKey],
    get: impl Fn(usize, &str) -> Option<String>,
) {
    if keys.is_empty() {
        return;
    }
    let mut keyed: Vec<(Vec<Option<String>>, usize)> = order
        .iter()
        .map(|&i| (keys.iter().map(|k| get(i, &k.field)).collect(), i))
        .collect();
    keyed.sort_by(|a, b| {
        for (n, k) in keys.iter().enumerate() {
            let o = a.0[n].cmp(&b.0[n]);
            let o = if k.desc { o.reverse() } else { o };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    *order = keyed.into_iter().map(|(_, i)| i).collect();
}

/// A field of a rendered record by dotted path, as a string (`object_id` is `id`).
fn json_field(v: &Value, path: &str) -> Option<String> {
    let path = if path == "object_id" { "id" } else { path };
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    match cur {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Filters (v1 or v2 syntax), sorts and pages rendered records: (matching count, page).
fn list_values(
    records: Vec<Value>,
    req: &Req,
    paging: &Paging,
    v1: bool,
    lenient: bool,
) -> Result<(usize, Vec<Value>), ApiError> {
    let filters = Filters::parse(req, v1, lenient)?;
    let sort = parse_sort(req.q("sort"), v1);
    let mut order: Vec<usize> = (0..records.len())
        .filter(|&i| filters.matches(|f| json_field(&records[i], f)))
        .collect();
    sort_indices(&mut order, &sort, |i, f| json_field(&records[i], f));
    let total = order.len();
    let mut records: Vec<Option<Value>> = records.into_iter().map(Some).collect();
    let page = order[paging.window(total)]
        .iter()
        .filter_map(|&i| records[i].take())
        .collect();
    Ok((total, page))
}

/// A v2 list: a bare array. Records are rendered only for the page unless there is a
/// filter or a sort.
fn v2_list<T>(items: &[T], req: &Req, s: &State, render: impl Fn(&T) -> Value) -> ApiResult {
    let paging = Paging::parse(s, req)?;
    let plain = req.q("sort").is_none_or(|v| v.trim().is_empty())
        && Filters::parse(req, false, false)?.is_empty();
    let page: Vec<Value> = if plain {
        items[paging.window(items.len())]
            .iter()
            .map(render)
            .collect()
    } else {
        list_values(
            items.iter().map(render).collect(),
            req,
            &paging,
            false,
            false,
        )?
        .1
    };
    Ok(json_response(StatusCode::OK, &Value::Array(page)))
}

/// The `fields` projection (space-separated; `_id` always stays).
fn projection(req: &Req) -> Option<Vec<String>> {
    req.q("fields")
        .filter(|f| !f.trim().is_empty())
        .map(|f| f.split_whitespace().map(str::to_owned).collect())
}

fn project(v: Value, fields: &Option<Vec<String>>) -> Value {
    match (v, fields) {
        (Value::Object(m), Some(fields)) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| k == "_id" || fields.iter().any(|f| f == k))
                .collect(),
        ),
        (v, _) => v,
    }
}

/// v1 `search`: a term, or `{"searchTerm": term or [terms], "fields": [...]}`; matched
/// case-insensitively as a substring of username, email, firstname, lastname or
/// displayname (or the given fields).
struct Search {
    terms: Vec<String>,
    fields: Vec<String>,
}

impl Search {
    fn parse(s: Option<&str>) -> Option<Search> {
        let s = s.map(str::trim).filter(|s| !s.is_empty())?;
        let default_fields = || {
            ["username", "email", "firstname", "lastname", "displayname"]
                .map(str::to_owned)
                .to_vec()
        };
        let parsed: Option<Value> = serde_json::from_str(s).ok().filter(Value::is_object);
        Some(match parsed {
            Some(v) => {
                let terms = match &v["searchTerm"] {
                    Value::String(t) => vec![t.to_lowercase()],
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|t| t.as_str().map(str::to_lowercase))
                        .collect(),
                    _ => Vec::new(),
                };
                let fields: Vec<String> = v["fields"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|f| f.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                Search {
                    terms,
                    fields: if fields.is_empty() {
                        default_fields()
                    } else {
                        fields
                    },
                }
            }
            None => Search {
                terms: vec![s.to_lowercase()],
                fields: default_fields(),
            },
        })
    }

    fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.fields.iter().any(|f| {
            get(f).is_some_and(|v| {
                let v = v.to_lowercase();
                self.terms.iter().any(|t| v.contains(t.as_str()))
            })
        })
    }
}

// --- Records ---

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn served_state(u: &User, f: &DirectoryFaults) -> String {
    f.state_override
        .iter()
        .find(|(id, _)| *id == u.id)
        .map(|(_, s)| s.clone())
        .unwrap_or_else(|| u.state.as_str().to_owned())
}

/// A user field as filters and sorts see it.
fn user_value(u: &User, field: &str, f: &DirectoryFaults) -> Option<String> {
    let flag = |b: bool| Some(b.to_string());
    match field {
        "_id" | "id" => Some(u.id.clone()),
        "email" if f.null_email.contains(&u.id) => None,
        "username" | "email" | "firstname" | "middlename" | "lastname" | "displayname" => {
            u.field(field)
        }
        "state" => Some(served_state(u, f)),
        "activated" => flag(u.activated),
        "suspended" => flag(u.suspended),
        "account_locked" => flag(u.account_locked),
        "password_expired" => flag(u.password_expired),
        "password_never_expires" => flag(u.password_never_expires),
        "totp_enabled" => flag(u.totp_enabled),
        "mfa.configured" => flag(u.mfa_configured),
        "mfa.exclusion" | "externally_managed" => flag(false),
        "created" => Some(rfc3339(u.created)),
        _ => None,
    }
}

fn add_extra_fields(m: &mut Map<String, Value>, id: &str, f: &DirectoryFaults) {
    for (target, field, value) in &f.extra_fields {
        if target == "*" || target == id {
            m.insert(field.clone(), value.clone());
        }
    }
}

/// A v1 `systemuserreturn`, with both `_id` and `id`.
fn user_json(u: &User, f: &DirectoryFaults) -> Value {
    let enrolled = if u.totp_enabled {
        "ENROLLED"
    } else {
        "NOT_ENROLLED"
    };
    let email = if f.null_email.contains(&u.id) {
        Value::Null
    } else {
        u.email.clone().into()
    };
    let attributes: Vec<Value> = u
        .attributes
        .iter()
        .map(|(n, v)| json!({"name": n, "value": v}))
        .collect();
    let mut m = Map::new();
    m.insert("_id".into(), u.id.clone().into());
    m.insert("id".into(), u.id.clone().into());
    m.insert("username".into(), u.username.clone().into());
    m.insert("email".into(), email);
    m.insert("firstname".into(), u.firstname.clone().into());
    m.insert("middlename".into(), u.middlename.clone().into());
    m.insert("lastname".into(), u.lastname.clone().into());
    m.insert("displayname".into(), u.display_name().into());
    m.insert("activated".into(), u.activated.into());
    m.insert("state".into(), served_state(u, f).into());
    m.insert("suspended".into(), u.suspended.into());
    m.insert("account_locked".into(), u.account_locked.into());
    m.insert("account_locked_date".into(), Value::Null);
    m.insert("password_expired".into(), u.password_expired.into());
    m.insert(
        "password_never_expires".into(),
        u.password_never_expires.into(),
    );
    m.insert(
        "mfa".into(),
        json!({"configured": u.mfa_configured, "exclusion": false}),
    );
    m.insert(
        "mfaEnrollment".into(),
        json!({
            "overallStatus": enrolled,
            "totpStatus": enrolled,
            "webAuthnStatus": "NOT_ENROLLED",
            "pushStatus": "NOT_ENROLLED",
        }),
    );
    m.insert("totp_enabled".into(), u.totp_enabled.into());
    m.insert("externally_managed".into(), false.into());
    m.insert("attributes".into(), attributes.into());
    m.insert("created".into(), rfc3339(u.created).into());
    add_extra_fields(&mut m, &u.id, f);
    Value::Object(m)
}

/// A v2 `UserGroup`.
fn group_json(g: &Group, f: &DirectoryFaults) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), g.id.clone().into());
    m.insert("name".into(), g.name.clone().into());
    m.insert("type".into(), "user_group".into());
    m.insert("attributes".into(), g.attributes.clone());
    m.insert("description".into(), g.description.clone().into());
    m.insert("email".into(), g.email.clone().into());
    m.insert(
        "membershipMethod".into(),
        g.membership_method.clone().into(),
    );
    add_extra_fields(&mut m, &g.id, f);
    Value::Object(m)
}

/// A v1 application.
fn app_json(a: &App, s: &State) -> Value {
    let mut m = Map::new();
    m.insert("_id".into(), a.id.clone().into());
    // The catalogue entry of a custom OIDC app: a guess, the reference marks it [I].
    m.insert("name".into(), "oidc".into());
    m.insert("displayName".into(), "Custom OIDC App".into());
    m.insert("displayLabel".into(), a.display_label.clone().into());
    m.insert("description".into(), "".into());
    m.insert("organization".into(), s.org_id.clone().into());
    m.insert("active".into(), true.into());
    m.insert("beta".into(), false.into());
    m.insert("ssoUrl".into(), "".into());
    m.insert("learnMore".into(), "".into());
    m.insert("sso".into(), json!({"type": "oidc"}));
    m.insert("config".into(), json!({}));
    add_extra_fields(&mut m, &a.id, &s.directory_faults);
    Value::Object(m)
}

/// A `GraphConnection` to an object.
fn edge(kind: &str, id: &str) -> Value {
    json!({"attributes": null, "to": {"attributes": null, "id": id, "type": kind}})
}

/// The `compiledAttributes` of a group: its attributes, `{}` when it has none.
fn compiled_attributes(g: &Group) -> Value {
    match &g.attributes {
        Value::Object(_) => g.attributes.clone(),
        _ => json!({}),
    }
}

/// A `GraphObjectWithPaths` for a user group reached by a one-edge path.
fn group_graph_object(g: &Group) -> Value {
    json!({
        "id": g.id,
        "type": "user_group",
        "compiledAttributes": compiled_attributes(g),
        "paths": [[edge("user_group", &g.id)]],
    })
}

// --- Endpoints ---

fn list_systemusers(s: &mut State, req: &Req) -> ApiResult {
    let paging = Paging::parse(s, req)?;
    let filters = Filters::parse(req, true, s.directory_faults.lenient_v1_filter)?;
    let sort = parse_sort(req.q("sort"), true);
    let fields = projection(req);
    let search = Search::parse(req.q("search"));
    // `_id` first: the cached id order. Otherwise the base order is the unstable one,
    // newest first, which shifts whenever a user is added or removed.
    let by_id = sort
        .first()
        .filter(|k| k.field == "_id" || k.field == "id")
        .map(|k| k.desc);
    let mut order: Vec<usize> = match by_id {
        Some(false) => s.users_by_id().to_vec(),
        Some(true) => s.users_by_id().iter().rev().copied().collect(),
        None => (0..s.users.len()).rev().collect(),
    };
    let users = &s.users;
    let f = &s.directory_faults;
    if !filters.is_empty() || search.is_some() {
        order.retain(|&i| {
            let get = |field: &str| user_value(&users[i], field, f);
            filters.matches(get) && search.as_ref().is_none_or(|q| q.matches(get))
        });
    }
    if by_id.is_none() {
        sort_indices(&mut order, &sort, |i, field| {
            user_value(&users[i], field, f)
        });
    }
    let total = order.len();
    let results: Vec<Value> = order[paging.window(total)]
        .iter()
        .map(|&i| project(user_json(&users[i], f), &fields))
        .collect();
    s.dir.user_pages += 1;
    apply_mutations(s);
    Ok(json_response(
        StatusCode::OK,
        &json!({"totalCount": total, "results": results}),
    ))
}

fn apply_mutations(s: &mut State) {
    let served = s.dir.user_pages;
    let (due, rest): (Vec<PageMutation>, Vec<PageMutation>) =
        std::mem::take(&mut s.directory_faults.mutations)
            .into_iter()
            .partition(|m| m.after_page <= served);
    s.directory_faults.mutations = rest;
    for m in due {
        match m.mutation {
            DirectoryMutation::AddUser(mut u) => {
                if u.id.is_empty() {
                    u.id = object_id();
                }
                s.users.push(u);
            }
            DirectoryMutation::RemoveUser(id) => {
                s.remove_user(&id);
            }
            DirectoryMutation::Run(f) => f(s),
        }
    }
}

fn get_systemuser(s: &State, req: &Req, id: &str) -> ApiResult {
    let user = s.user(id).ok_or_else(not_found)?;
    Ok(json_response(
        StatusCode::OK,
        &project(user_json(user, &s.directory_faults), &projection(req)),
    ))
}

fn list_applications(s: &State, req: &Req) -> ApiResult {
    let paging = Paging::parse(s, req)?;
    let records: Vec<Value> = s.apps.iter().rev().map(|a| app_json(a, s)).collect();
    let (total, page) = list_values(
        records,
        req,
        &paging,
        true,
        s.directory_faults.lenient_v1_filter,
    )?;
    let fields = projection(req);
    let results: Vec<Value> = page.into_iter().map(|v| project(v, &fields)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"totalCount": total, "results": results}),
    ))
}

fn list_usergroups(s: &State, req: &Req) -> ApiResult {
    // Unstable without `sort`, like the users: newest first.
    let groups: Vec<&Group> = s.groups.iter().rev().collect();
    v2_list(&groups, req, s, |g| group_json(g, &s.directory_faults))
}

fn find_group<'a>(s: &'a State, id: &str) -> Result<&'a Group, ApiError> {
    s.group(id).ok_or_else(not_found)
}

fn get_usergroup(s: &State, id: &str) -> ApiResult {
    let g = find_group(s, id)?;
    Ok(json_response(
        StatusCode::OK,
        &group_json(g, &s.directory_faults),
    ))
}

fn group_members(s: &State, req: &Req, id: &str) -> ApiResult {
    let g = find_group(s, id)?;
    v2_list(&g.members, req, s, |m| edge("user", m))
}

fn group_membership(s: &State, req: &Req, id: &str) -> ApiResult {
    let g = find_group(s, id)?;
    v2_list(
        &g.members,
        req,
        s,
        |m| json!({"id": m, "type": "user", "paths": [[edge("user", m)]]}),
    )
}

fn user_memberof(s: &State, req: &Req, id: &str) -> ApiResult {
    s.user(id).ok_or_else(not_found)?;
    let groups: Vec<&Group> = s
        .groups
        .iter()
        .filter(|g| g.members.iter().any(|m| m == id))
        .collect();
    v2_list(&groups, req, s, |g| group_graph_object(g))
}

fn find_app<'a>(s: &'a State, id: &str) -> Result<&'a App, ApiError> {
    s.apps.iter().find(|a| a.id == id).ok_or_else(not_found)
}

fn app_usergroups(s: &State, req: &Req, id: &str) -> ApiResult {
    let app = find_app(s, id)?;
    let groups: Vec<&Group> = app.bound_groups.iter().filter_map(|g| s.group(g)).collect();
    v2_list(&groups, req, s, |g| group_graph_object(g))
}

fn app_users<'a>(s: &'a State, req: &Req, id: &str) -> ApiResult {
    let app = find_app(s, id)?;
    // Every user bound directly or through a bound group, with every path.
    let mut users: Vec<(&str, Vec<Value>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut add = |user: &'a str, path: Value| match index.get(user) {
        Some(&i) => users[i].1.push(path),
        None => {
            index.insert(user, users.len());
            users.push((user, vec![path]));
        }
    };
    if app.bind_everyone {
        for u in &s.users {
            add(&u.id, json!([edge("user", &u.id)]));
        }
    }
    for u in &app.bound_users {
        add(u, json!([edge("user", u)]));
    }
    for g in app.bound_groups.iter().filter_map(|g| s.group(g)) {
        for m in &g.members {
            add(m, json!([edge("user_group", &g.id), edge("user", m)]));
        }
    }
    v2_list(
        &users,
        req,
        s,
        |(u, paths)| json!({"id": u, "type": "user", "paths": paths}),
    )
}

const GRAPH_TARGETS: [&str; 12] = [
    "active_directory",
    "application",
    "command",
    "g_suite",
    "ldap_server",
    "office_365",
    "policy",
    "radius_server",
    "system",
    "system_group",
    "user",
    "user_group",
];

fn app_associations(s: &State, req: &Req, id: &str) -> ApiResult {
    let app = find_app(s, id)?;
    let targets: Vec<&str> = req
        .query
        .iter()
        .filter(|(k, _)| k == "targets" || k.starts_with("targets["))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if targets.is_empty() {
        return Err(bad_request("Bad Request: targets is required"));
    }
    if let Some(t) = targets.iter().find(|t| !GRAPH_TARGETS.contains(t)) {
        return Err(bad_request(&format!("Bad Request: invalid target {t:?}")));
    }
    let mut connections = Vec::new();
    for t in targets {
        match t {
            "user_group" => connections.extend(
                app.bound_groups
                    .iter()
                    .filter(|g| s.group(g).is_some())
                    .map(|g| edge("user_group", g)),
            ),
            "user" => connections.extend(app.bound_users.iter().map(|u| edge("user", u))),
            _ => {}
        }
    }
    v2_list(&connections, req, s, Value::clone)
}

// --- Slow bodies ---

/// Converts a response for the connection, trickling its body if asked to.
async fn finish(resp: Resp, slow: Option<SlowBody>) -> Response<Body> {
    let Some(slow) = slow else {
        return resp.map(|b| b.boxed_unsync());
    };
    let (parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    let body = Trickle {
        rest: bytes,
        chunk: slow.chunk.max(1),
        pause: slow.pause,
        sleep: None,
    };
    Response::from_parts(parts, body.boxed_unsync())
}

struct Trickle {
    rest: Bytes,
    chunk: usize,
    pause: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.rest.is_empty() {
            return Poll::Ready(None);
        }
        let pause = this.pause;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.sleep = None;
        let n = this.chunk.min(this.rest.len());
        Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

fn json_response(status: StatusCode, body: &Value) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    resp
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Resp {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn html(status: StatusCode, body: &str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_owned())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// The IdP's own error page: shown instead of redirecting to an untrusted URI.
fn error_page(error: &str, description: &str) -> Resp {
    html(
        StatusCode::BAD_REQUEST,
        &format!(
            "<!doctype html><html><head><title>Error</title></head><body>\
             <h1>An error occurred</h1><p><code>{}</code></p><p>{}</p></body></html>",
            html_escape(error),
            html_escape(description)
        ),
    )
}

fn redirect(location: &str) -> Resp {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::FOUND;
            resp.headers_mut().insert(http::header::LOCATION, v);
            resp
        }
        Err(_) => error_page("invalid_request", "The redirect URI is not a valid URI."),
    }
}

fn with_params(base: &str, params: &[(&str, &str)]) -> String {
    if params.is_empty() {
        return base.to_owned();
    }
    let mut out = base.to_owned();
    out.push(if base.contains('?') { '&' } else { '?' });
    let encoded: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    out.push_str(&encoded.join("&"));
    out
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `application/x-www-form-urlencoded` pairs (also query strings).
pub fn parse_query(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

pub fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Form encoding as Go's `url.QueryEscape` does it (space as `+`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(c as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{c:02X}")),
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A MongoDB-style ObjectId: timestamp, per-process random, counter. Like JumpCloud's ids
/// they sort in creation order, which matters for `sort=_id` paging.
pub fn object_id() -> String {
    static PROCESS: OnceLock<[u8; 5]> = OnceLock::new();
    static COUNTER: OnceLock<AtomicU32> = OnceLock::new();
    let process = PROCESS.get_or_init(rand::random);
    let n = COUNTER
        .get_or_init(|| AtomicU32::new(rand::random::<u32>() & 0x00ff_ffff))
        .fetch_add(1, Ordering::Relaxed);
    let secs = (unix_now() as u32).to_be_bytes();
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&secs);
    b.extend_from_slice(process);
    b.extend_from_slice(&n.to_be_bytes()[1..]);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Back-channel logout (OpenID Connect Back-Channel Logout 1.0)
// ---------------------------------------------------------------------------------------

/// The `events` member that makes a JWT a logout token.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

impl FakeJumpCloud {
    /// The claims of a logout token for `client_id`, as a provider sends them when a session
    /// ends: `iss`, `aud` (an array, like ID tokens), `iat` and `exp` (two minutes) on the
    /// IdP clock, a fresh `jti`, the back-channel logout event, and `sub` and `sid` when
    /// given. Edit the value to make a bad token, then sign it with
    /// [`FakeJumpCloud::sign_logout_token`].
    pub fn logout_token_claims(
        &self,
        client_id: &str,
        sub: Option<&str>,
        sid: Option<&str>,
    ) -> Value {
        let state = self.lock();
        let now = state.now();
        let mut claims = json!({
            "iss": state.issuer(),
            "aud": [client_id],
            "iat": now,
            "exp": now + 120,
            "jti": uuid(),
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        });
        if let Some(sub) = sub {
            claims["sub"] = sub.into();
        }
        if let Some(sid) = sid {
            claims["sid"] = sid.into();
        }
        claims
    }

    /// Signs `claims` as a logout token with the current key, header
    /// `{"alg":"RS256","kid":…,"typ":"logout+jwt"}`; `tamper` then edits the claims or the
    /// header and picks how it is signed, as for ID tokens.
    pub fn sign_logout_token(&self, claims: Value, tamper: Option<Tamper>) -> String {
        let key = self.lock().signing_key();
        let Tamper {
            claims: edit_claims,
            header: edit_header,
            sign,
        } = tamper.unwrap_or_default();
        let header: JsonEdit = Box::new(move |h: &mut Value| {
            h["typ"] = "logout+jwt".into();
            if let Some(f) = edit_header {
                f(h);
            }
        });
        sign_id_token(
            claims,
            &key,
            Some(Tamper {
                claims: edit_claims,
                header: Some(header),
                sign,
            }),
        )
    }

    /// The logout token the provider sends to `client_id` when `user_id`'s current IdP
    /// session ends: with that user's `sub` and the session's `sid` (none without a
    /// session).
    pub fn logout_token(&self, client_id: &str, user_id: &str) -> String {
        let sid = self.lock().session(user_id).map(|s| s.sid.clone());
        let claims = self.logout_token_claims(client_id, Some(user_id), sid.as_deref());
        self.sign_logout_token(claims, None)
    }

    /// The `sid` of `user_id`'s current IdP session, which the ID tokens issued now carry.
    pub fn session_sid(&self, user_id: &str) -> Option<String> {
        self.lock().session(user_id).map(|s| s.sid.clone())
    }

    /// Ends `user_id`'s IdP session, as a sign-out at JumpCloud does, so the next sign-in
    /// starts a new one with a new `sid`. Returns the ended session's `sid`.
    pub fn end_session(&self, user_id: &str) -> Option<String> {
        let mut state = self.lock();
        let ended = state.oidc.sessions.remove(user_id).map(|s| s.sid);
        if ended.is_some() {
            state.sessions_ended += 1;
        }
        ended
    }
}
