//! The gateway's configuration: the typed, validated values every other module reads.
//!
//! A config file goes through one path: TOML text → [`parse`] (which walks the document, collecting
//! every problem with its line and key path) → [`Config`]. Nothing downstream ever sees an
//! `Option<String>` from the file; request code only reads durations, socket addresses, compiled
//! host names and paths from here. This module performs no I/O beyond reading the file itself.

mod parse;
mod summary;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

pub use parse::parse;
pub use parse::{at_keys, check_files};
pub use summary::summary;

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration was read from; relative paths inside it were resolved against
    /// this file's directory.
    pub source: PathBuf,
    /// Listeners, TLS, limits and shutdown.
    pub server: ServerConfig,
    /// Logging output.
    pub log: LogConfig,
    /// Virtual hosts, in file order.
    pub sites: Vec<SiteConfig>,
    /// `[oidc]`: sign-in through an OpenID Connect provider; without it, protected routes
    /// answer 401 and nothing protected is forwarded.
    pub oidc: Option<OidcConfig>,
    /// `[session]`: server-side sessions.
    pub session: SessionConfig,
    /// `[identity]`: the signed assertion sent upstream.
    pub identity: IdentityConfig,
    /// `[directory]`: the JumpCloud directory every protected request is checked against.
    pub directory: Option<DirectoryConfig>,
    /// `[audit] output`: where the audit log goes, when enabled.
    pub audit: Option<AuditOutput>,
    /// `[[api_token]]`: issuers whose bearer JWTs sites with `api_tokens = true` accept.
    pub api_tokens: Vec<ApiTokenIssuer>,
}

/// `[[api_token]]`: an issuer of bearer JWTs for API access without a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenIssuer {
    /// `issuer`: the exact `iss`; its discovery document names the key set unless `jwks_uri`.
    pub issuer: String,
    /// `audience`: must be in the token's `aud`.
    pub audience: String,
    /// `jwks_uri`: the key set, when discovery is not used.
    pub jwks_uri: Option<String>,
    /// `match_by_email`: whether a token whose `sub` is no directory id may be matched to a
    /// directory user by its verified email (default false).
    pub match_by_email: bool,
}

/// `[directory]`.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// `directory.api_url`: the console origin (`https://console.jumpcloud.com`).
    pub api_url: String,
    /// `directory.api_key_file` / `directory.api_key_env`: a read-only API key.
    pub api_key: SecretSource,
    /// `directory.org_id`: sent as `x-org-id` (multi-tenant admins).
    pub org_id: Option<String>,
    /// `directory.sync_interval`.
    pub sync_interval: Duration,
    /// `directory.max_staleness`: older snapshots make protected routes fail closed.
    pub max_staleness: Duration,
    /// `directory.cache_file`: the last good snapshot.
    pub cache_file: PathBuf,
    /// `directory.application_id`: only members of groups bound to this app pass.
    pub application_id: Option<String>,
    /// `directory.request_interval`: pause between API requests.
    pub request_interval: Duration,
    /// `directory.request_timeout`: per API request.
    pub request_timeout: Duration,
    /// `directory.max_retries`: per API request, for 429, 5xx and transport errors.
    pub max_retries: u32,
    /// `directory.retry_backoff`: first backoff, doubled per retry (capped at 60 s).
    pub retry_backoff: Duration,
}

/// Who may use a protected route, beyond being an active directory user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    /// `allow_groups`: JumpCloud user group names or ids.
    pub groups: Vec<String>,
    /// `allow_users`: JumpCloud user ids or emails.
    pub users: Vec<String>,
}

impl Allow {
    /// Whether neither list is set: any active user.
    pub fn is_anyone(&self) -> bool {
        self.groups.is_empty() && self.users.is_empty()
    }
}

pub use crate::secret::SecretSource;

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    /// Standard output.
    Stdout,
    /// A file, appended to (created with mode 0600).
    File(PathBuf),
}

/// How the gateway authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`.
    Basic,
    /// `client_secret_post`.
    Post,
}

/// `[oidc]`.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// `oidc.issuer`, as typed: with or without the trailing slash.
    pub issuer: String,
    /// `oidc.client_id`.
    pub client_id: String,
    /// `oidc.client_secret_file` / `oidc.client_secret_env`.
    pub client_secret: SecretSource,
    /// `oidc.scopes`; always contains `openid`.
    pub scopes: Vec<String>,
    /// `oidc.callback_path`, under `/.jumpgate/`.
    pub callback_path: String,
    /// `oidc.client_auth`.
    pub client_auth: ClientAuth,
    /// `oidc.clock_skew`: leeway for `exp`, `iat` and `auth_time`.
    pub clock_skew: Duration,
    /// `oidc.ca_file`: extra trust anchor for the issuer (and the directory API).
    pub ca_file: Option<PathBuf>,
    /// `oidc.groups_claim`: the claim carrying group names, when the app includes one.
    pub groups_claim: Option<String>,
    /// `oidc.match_by_email`: whether a user whose `sub` is no directory id may be matched
    /// to a directory user by a verified email (default false: JumpCloud's `sub` is the id).
    pub match_by_email: bool,
    /// `oidc.idp_logout`: after a local logout, send the browser to the provider's
    /// `end_session_endpoint` too.
    pub idp_logout: bool,
    /// `oidc.post_logout_redirect_uri`: registered at the provider; omitted when unset
    /// (JumpCloud refuses the whole logout for an unregistered one).
    pub post_logout_redirect_uri: Option<String>,
    /// `[oidc.step_up]`: the second application used for fresh multi-factor sign-ins.
    pub step_up: Option<StepUpConfig>,
}

/// `[oidc.step_up]`: a second SSO application whose access policy requires MFA.
#[derive(Debug, Clone)]
pub struct StepUpConfig {
    /// `client_id` of the step-up application.
    pub client_id: String,
    /// `client_secret_file` / `client_secret_env`.
    pub client_secret: SecretSource,
    /// `callback_path`, under `/.jumpgate/`.
    pub callback_path: String,
    /// `acr_values`: requested, and then required in the token's `acr`.
    pub acr_values: Option<String>,
    /// `require_amr`: every one of these must be in the token's `amr`.
    pub require_amr: Vec<String>,
}

/// Which session store is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// In process (moka); sessions end when the process does.
    Memory,
    /// Shared through Redis by every instance, with a small in-process cache in front.
    Redis,
}

/// How to reach Redis, when `session.store = "redis"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where the Redis that holds the data is.
    pub target: RedisTarget,
    /// `session.redis_password_file` / `session.redis_password_env`: the data nodes' password.
    pub password: Option<SecretSource>,
    /// `session.key_prefix`: every key and channel starts with it.
    pub key_prefix: String,
    /// `session.local_cache_ttl`: how long a session read from Redis is reused locally while
    /// invalidations arrive.
    pub local_cache_ttl: Duration,
    /// `session.redis_grace`: how long cached sessions keep working while Redis is
    /// unreachable.
    pub grace: Duration,
}

/// Where the Redis holding sessions is: exactly one of `redis_url` or `redis_sentinels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `session.redis_url`: one Redis at a fixed address; `redis://` or `rediss://` (TLS),
    /// host, port, database.
    Url(String),
    /// `session.redis_sentinels` and `session.redis_sentinel_master`: whichever node the
    /// sentinels currently name master, asked again at every (re)connect.
    Sentinel(SentinelConfig),
}

/// Redis through Sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// `session.redis_sentinels`: `redis://` or `rediss://` URLs of the sentinels, in file
    /// order, all with the same scheme; TLS to the sentinels means TLS to the data nodes.
    pub sentinels: Vec<String>,
    /// `session.redis_sentinel_master`: the name the sentinels monitor the master under.
    pub master: String,
    /// `session.redis_sentinel_password_file` / `session.redis_sentinel_password_env`: for
    /// sentinels whose URL carries no password of its own.
    pub password: Option<SecretSource>,
    /// `session.redis_database`: the database on the data nodes.
    pub database: i64,
}

/// `[session]`.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `session.store`.
    pub store: StoreKind,
    /// `session.key_file`: the cookie-signing key; generated (mode 0600) when absent.
    pub key_file: PathBuf,
    /// `session.lifetime`: absolute session lifetime.
    pub lifetime: Duration,
    /// `session.idle_timeout`: a session unused this long ends.
    pub idle_timeout: Duration,
    /// `session.login_timeout`: how long a started sign-in may take.
    pub login_timeout: Duration,
    /// `session.max_sessions`: capacity of the in-memory store.
    pub max_sessions: u64,
    /// `session.max_pending_logins`: sign-ins in progress kept at most; past it the oldest
    /// are dropped, never a new one.
    pub max_pending_logins: u64,
    /// Redis settings: present exactly when `store = "redis"`.
    pub redis: Option<RedisConfig>,
}

/// `[identity]`.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// `identity.signing_key_file`: ES256 key (PKCS#8 PEM) for assertions; generated when absent.
    pub signing_key_file: PathBuf,
    /// `identity.issuer`: the `iss` of assertions.
    pub issuer: String,
    /// `identity.assertion_ttl`: assertion lifetime, at most 5 minutes.
    pub assertion_ttl: Duration,
}

/// The header a front proxy puts the original request's URI in. Exactly one is read, the
/// configured one: a proxy that sets only one of them passes the other through from the
/// client, so reading both would let the client supply the question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriHeader {
    /// `X-Forwarded-Uri` (Traefik, Caddy, the nginx example).
    XForwardedUri,
    /// `X-Original-URI` (nginx set-ups that already send it).
    XOriginalUri,
}

/// `[server]`: what the gateway listens on and how it treats connections.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `server.listen`: the public TLS listener.
    pub listen: SocketAddr,
    /// `server.tls_cert`: PEM certificate chain, leaf first.
    pub tls_cert: PathBuf,
    /// `server.tls_key`: PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: PathBuf,
    /// `server.http_redirect_listen`: optional plain-HTTP listener answering 308 to https.
    pub http_redirect_listen: Option<SocketAddr>,
    /// `server.admin_listen`: optional listener for /healthz, /readyz and /metrics.
    pub admin_listen: Option<SocketAddr>,
    /// `server.verify_listen`: optional plain-HTTP listener answering forward-auth calls.
    pub verify_listen: Option<SocketAddr>,
    /// `server.trusted_proxies`: peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `server.verify_clients`: peers that may ask forward-auth questions (default: loopback).
    pub verify_clients: Vec<IpNet>,
    /// `server.verify_uri_header`: the one header forward-auth reads the original URI from.
    pub verify_uri_header: UriHeader,
    /// `server.shutdown_grace`: how long in-flight requests may run after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// `server.public_port`: the port browsers use to reach the gateway, for the URLs it
    /// builds (sign-in callback); defaults to the public listener's port.
    pub public_port: Option<u16>,
    /// `server.state_dir`: where generated keys and caches live; defaults to `state/` beside
    /// the config file.
    pub state_dir: PathBuf,
    /// `[server.limits]`.
    pub limits: Limits,
}

/// `[server.limits]`: sizes and timeouts that bound what one client can cost the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `max_header_bytes`: total size of a request's header section.
    pub max_header_bytes: usize,
    /// `max_headers`: number of request header fields.
    pub max_headers: usize,
    /// `tls_handshake_timeout`: from accept to a finished TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// `header_read_timeout`: to receive a complete request header section; on HTTP/1.1
    /// keep-alive connections it also bounds the idle wait for the next request.
    pub header_read_timeout: Duration,
    /// `upstream_connect_timeout`: to open a connection to an upstream.
    pub upstream_connect_timeout: Duration,
    /// `upstream_response_timeout`: from sending a request upstream to its response headers.
    pub upstream_response_timeout: Duration,
    /// `upstream_idle_timeout`: how long a pooled upstream connection may sit idle.
    pub upstream_idle_timeout: Duration,
    /// `tunnel_idle_timeout`: how long an upgraded (WebSocket) connection may carry no bytes.
    pub tunnel_idle_timeout: Duration,
    /// `idle_timeout`: how long an HTTP/2 connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// `sign_in_rate`: sign-in starts and callbacks allowed per client IP per minute.
    pub sign_in_rate: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(120),
            sign_in_rate: 60,
        }
    }
}

/// `[log]`: where and how log lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `log.format`: human-readable text or JSON lines.
    pub format: LogFormat,
    /// `log.level`: a `tracing` filter directive such as `info` or `jumpgate=debug`.
    pub level: String,
    /// `log.access`: one access-log line per request.
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
            access: true,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What a route lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Forwarded without a session.
    Public,
    /// Needs a signed-in, authorized user.
    Protected,
    /// Never forwarded.
    Deny,
}

impl Access {
    /// The word used for this value in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Protected => "protected",
            Access::Deny => "deny",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[site]]`: one virtual host and the upstream behind it.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// `site.host`: lower-cased, without a trailing dot or port.
    pub host: String,
    /// `site.upstream`: `http://` or `https://` origin, path `/`.
    pub upstream: Upstream,
    /// `site.access`: the default for paths no route matches.
    pub access: Access,
    /// `site.tunnel_idle_timeout`: overrides `server.limits.tunnel_idle_timeout` for this site.
    pub tunnel_idle_timeout: Option<Duration>,
    /// `site.upstream_response_timeout`: overrides the server-wide limit for this site.
    pub upstream_response_timeout: Option<Duration>,
    /// `[site.headers]`: names of the identity headers sent upstream.
    pub headers: IdentityHeaders,
    /// `allow_groups` / `allow_users` for the site's protected paths.
    pub allow: Allow,
    /// `api_tokens`: accept `Authorization: Bearer` JWTs from the `[[api_token]]` issuers on
    /// protected routes.
    pub api_tokens: bool,
    /// `step_up_on_navigation`: a page load by a user whom a step-up route of this site
    /// would ask, with less than half of that route's window left, goes through the step-up
    /// first, so a single-page app's later writes pass without a 401 it cannot handle.
    pub step_up_on_navigation: bool,
    /// `[[site.route]]`, in file order.
    pub routes: Vec<RouteConfig>,
}

/// Names of the identity headers set on allowed protected requests (lower-case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// `user`: the user id (`sub`).
    pub user: String,
    /// `email`.
    pub email: String,
    /// `username`.
    pub username: String,
    /// `groups`: comma-separated group names.
    pub groups: String,
    /// `assertion`: the signed JWT.
    pub assertion: String,
    /// `step_up_time`: when the last step-up happened (seconds since the epoch).
    pub step_up_time: String,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders {
            user: "x-jumpgate-user".to_owned(),
            email: "x-jumpgate-email".to_owned(),
            username: "x-jumpgate-username".to_owned(),
            groups: "x-jumpgate-groups".to_owned(),
            assertion: "x-jumpgate-assertion".to_owned(),
            step_up_time: "x-jumpgate-step-up-time".to_owned(),
        }
    }
}

/// `[[site.route]]`: a path prefix with its own access rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// `path`: an absolute prefix, already canonical, matched on segment boundaries.
    pub path: String,
    /// `access`: when absent, the site's access applies.
    pub access: Option<Access>,
    /// `tunnel_idle_timeout`: overrides the site's for WebSockets on this route.
    pub tunnel_idle_timeout: Option<Duration>,
    /// `upstream_response_timeout`: overrides the site's (long polls, server-sent events).
    pub upstream_response_timeout: Option<Duration>,
    /// `allow_groups` / `allow_users`: when either is set, replaces the site's lists.
    pub allow: Option<Allow>,
    /// `step_up`: the longest age of the last step-up the route accepts.
    pub step_up: Option<Duration>,
    /// `step_up_exempt_methods`: methods that do not need the step-up (default: GET, HEAD,
    /// OPTIONS). Every other method does, and so does a WebSocket handshake, whatever its
    /// method: an exemption names what is safe, so a method nobody thought of is covered.
    pub step_up_exempt_methods: Vec<http::Method>,
    /// `step_up_groups`: when set, only members of these groups are asked for the step-up;
    /// others pass on the route's ordinary rules (the upstream still decides what they may
    /// do there).
    pub step_up_groups: Vec<String>,
}

/// An upstream origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http://host:port` or `https://host:port`, without a path.
    pub origin: Uri,
    /// `site.upstream_ca_file`: extra trust anchor for an `https://` upstream.
    pub ca_file: Option<PathBuf>,
}

impl Upstream {
    /// Whether the upstream is reached over TLS.
    pub fn is_tls(&self) -> bool {
        self.origin.scheme_str() == Some("https")
    }
}

/// Why a configuration was refused: every problem found, each with its place in the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but has problems.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// Dotted key path, such as `site[1].route[0].path`.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                line,
                self.key,
                self.message
            ),
            None => write!(f, "{}: {}: {}", self.file.display(), self.key, self.message),
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        parse(&text, path)
    }
}
