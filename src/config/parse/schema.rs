//! The config file's schema, declared once: every table and key the file may hold, with the
//! kind of value each key takes. serde reads the file into these structs; the validation pass
//! (this module's siblings) turns them into [`crate::config::Config`]. A key missing here is an
//! unknown key, reported with the nearest declared spelling; a key declared here but never
//! validated is a compile error (`dead_code`), so the two cannot drift apart.

use serde::Deserialize;

use super::raw::kind::{Addr, Bool, Duration, Int, List, Path, Removed, Str};
use super::raw::{Key, Table, Tables};

/// An optional key whose value must become a `K`.
type Opt<K> = Option<Key<K>>;
/// An optional table.
type Sub<F> = Option<Table<F>>;
/// An optional array of tables.
type Each<F> = Option<Tables<F>>;

/// The whole file.
#[derive(Deserialize)]
pub(crate) struct ConfigFile {
    pub(super) server: Sub<ServerFile>,
    pub(super) log: Sub<LogFile>,
    pub(super) site: Each<SiteFile>,
    pub(super) oidc: Sub<OidcFile>,
    pub(super) session: Sub<SessionFile>,
    pub(super) identity: Sub<IdentityFile>,
    pub(super) audit: Sub<AuditFile>,
    pub(super) api_token: Each<ApiTokenFile>,
    pub(super) directory: Sub<DirectoryFile>,
}

/// `[server]`: listeners, TLS and where state lives.
#[derive(Deserialize)]
pub(crate) struct ServerFile {
    pub(super) listen: Opt<Addr>,
    pub(super) tls_cert: Opt<Path>,
    pub(super) tls_key: Opt<Path>,
    pub(super) http_redirect_listen: Opt<Addr>,
    pub(super) admin_listen: Opt<Addr>,
    pub(super) verify_listen: Opt<Addr>,
    pub(super) trusted_proxies: Opt<List>,
    pub(super) verify_clients: Opt<List>,
    pub(super) verify_uri_header: Opt<Str>,
    pub(super) shutdown_grace: Opt<Duration>,
    pub(super) limits: Sub<LimitsFile>,
    pub(super) public_port: Opt<Int>,
    pub(super) state_dir: Opt<Path>,
}

/// `[server.limits]`: sizes, timeouts and the sign-in rate.
#[derive(Deserialize)]
pub(crate) struct LimitsFile {
    pub(super) max_header_bytes: Opt<Int>,
    pub(super) max_headers: Opt<Int>,
    pub(super) sign_in_rate: Opt<Int>,
    pub(super) tls_handshake_timeout: Opt<Duration>,
    pub(super) header_read_timeout: Opt<Duration>,
    pub(super) upstream_connect_timeout: Opt<Duration>,
    pub(super) upstream_response_timeout: Opt<Duration>,
    pub(super) upstream_idle_timeout: Opt<Duration>,
    pub(super) tunnel_idle_timeout: Opt<Duration>,
    pub(super) idle_timeout: Opt<Duration>,
}

/// `[log]`.
#[derive(Deserialize)]
pub(crate) struct LogFile {
    pub(super) format: Opt<Str>,
    pub(super) level: Opt<Str>,
    pub(super) access: Opt<Bool>,
}

/// One `[[site]]`: a host, its upstream and who may reach it.
#[derive(Deserialize)]
pub(crate) struct SiteFile {
    pub(super) host: Opt<Str>,
    pub(super) upstream: Opt<Str>,
    pub(super) upstream_ca_file: Opt<Path>,
    pub(super) access: Opt<Str>,
    pub(super) tunnel_idle_timeout: Opt<Duration>,
    pub(super) upstream_response_timeout: Opt<Duration>,
    pub(super) headers: Sub<HeadersFile>,
    pub(super) allow_groups: Opt<List>,
    pub(super) allow_users: Opt<List>,
    pub(super) api_tokens: Opt<Bool>,
    pub(super) step_up_on_navigation: Opt<Bool>,
    pub(super) route: Each<RouteFile>,
}

/// One `[[site.route]]`: a path prefix with its own rules.
#[derive(Deserialize)]
pub(crate) struct RouteFile {
    pub(super) path: Opt<Str>,
    pub(super) access: Opt<Str>,
    pub(super) tunnel_idle_timeout: Opt<Duration>,
    pub(super) upstream_response_timeout: Opt<Duration>,
    pub(super) allow_groups: Opt<List>,
    pub(super) allow_users: Opt<List>,
    pub(super) step_up: Opt<Duration>,
    pub(super) step_up_methods: Opt<Removed>,
    pub(super) step_up_exempt_methods: Opt<List>,
    pub(super) step_up_groups: Opt<List>,
}

/// `[site.headers]`: the names of the identity headers sent upstream.
#[derive(Deserialize)]
pub(crate) struct HeadersFile {
    pub(super) user: Opt<Str>,
    pub(super) email: Opt<Str>,
    pub(super) username: Opt<Str>,
    pub(super) groups: Opt<Str>,
    pub(super) assertion: Opt<Str>,
    pub(super) step_up_time: Opt<Str>,
}

/// `[oidc]`: the sign-in application at the identity provider.
#[derive(Deserialize)]
pub(crate) struct OidcFile {
    pub(super) issuer: Opt<Str>,
    pub(super) client_id: Opt<Str>,
    pub(super) client_secret_file: Opt<Path>,
    pub(super) client_secret_env: Opt<Str>,
    pub(super) scopes: Opt<List>,
    pub(super) callback_path: Opt<Str>,
    pub(super) client_auth: Opt<Str>,
    pub(super) clock_skew: Opt<Duration>,
    pub(super) ca_file: Opt<Path>,
    pub(super) groups_claim: Opt<Str>,
    pub(super) match_by_email: Opt<Bool>,
    pub(super) idp_logout: Opt<Bool>,
    pub(super) post_logout_redirect_uri: Opt<Str>,
    pub(super) step_up: Sub<StepUpFile>,
}

/// `[oidc.step_up]`: the application that asks for a fresh MFA login.
#[derive(Deserialize)]
pub(crate) struct StepUpFile {
    pub(super) client_id: Opt<Str>,
    pub(super) client_secret_file: Opt<Path>,
    pub(super) client_secret_env: Opt<Str>,
    pub(super) callback_path: Opt<Str>,
    pub(super) acr_values: Opt<Str>,
    pub(super) require_amr: Opt<List>,
}

/// `[session]`: where sessions live and how long; the `redis_*` keys when in Redis.
#[derive(Deserialize)]
pub(crate) struct SessionFile {
    pub(super) store: Opt<Str>,
    pub(super) key_file: Opt<Path>,
    pub(super) lifetime: Opt<Duration>,
    pub(super) idle_timeout: Opt<Duration>,
    pub(super) login_timeout: Opt<Duration>,
    pub(super) max_sessions: Opt<Int>,
    pub(super) max_pending_logins: Opt<Int>,
    pub(super) redis_url: Opt<Str>,
    pub(super) redis_sentinels: Opt<List>,
    pub(super) redis_sentinel_master: Opt<Str>,
    pub(super) redis_sentinel_password_file: Opt<Path>,
    pub(super) redis_sentinel_password_env: Opt<Str>,
    pub(super) redis_database: Opt<Int>,
    pub(super) redis_password_file: Opt<Path>,
    pub(super) redis_password_env: Opt<Str>,
    pub(super) key_prefix: Opt<Str>,
    pub(super) local_cache_ttl: Opt<Duration>,
    pub(super) redis_grace: Opt<Duration>,
}

/// `[identity]`: the assertion the gateway signs for upstreams.
#[derive(Deserialize)]
pub(crate) struct IdentityFile {
    pub(super) signing_key_file: Opt<Path>,
    pub(super) issuer: Opt<Str>,
    pub(super) assertion_ttl: Opt<Duration>,
}

/// `[directory]`: the JumpCloud directory sync.
#[derive(Deserialize)]
pub(crate) struct DirectoryFile {
    pub(super) provider: Opt<Str>,
    pub(super) api_url: Opt<Str>,
    pub(super) api_key_file: Opt<Path>,
    pub(super) api_key_env: Opt<Str>,
    pub(super) org_id: Opt<Str>,
    pub(super) sync_interval: Opt<Duration>,
    pub(super) max_staleness: Opt<Duration>,
    pub(super) cache_file: Opt<Path>,
    pub(super) application_id: Opt<Str>,
    pub(super) request_interval: Opt<Duration>,
    pub(super) request_timeout: Opt<Duration>,
    pub(super) max_retries: Opt<Int>,
    pub(super) retry_backoff: Opt<Duration>,
}

/// `[audit]`.
#[derive(Deserialize)]
pub(crate) struct AuditFile {
    pub(super) output: Opt<Path>,
}

/// One `[[api_token]]`: an issuer of bearer tokens for scripts.
#[derive(Deserialize)]
pub(crate) struct ApiTokenFile {
    pub(super) issuer: Opt<Str>,
    pub(super) audience: Opt<Str>,
    pub(super) jwks_uri: Opt<Str>,
    pub(super) match_by_email: Opt<Bool>,
}
