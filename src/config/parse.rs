//! Config file parsing: TOML text to a validated [`Config`], reporting every problem at once.
//!
//! Two steps. serde reads the text into the file structs of [`schema`], the one declaration
//! of every table and key; no value stops that reading, whatever its type, because each key
//! keeps the value as written. Then one validation pass turns the structs into the runtime
//! [`Config`], converting each key to its kind and checking what spans keys and tables. Every
//! problem it finds is collected with its dotted key and the line the document puts it on,
//! and a key the schema does not declare is reported with the nearest declared spelling, so
//! one run of `jumpgate check` shows everything that needs fixing, not only the first. This
//! file validates the top level and what spans tables; each table has its module.

use std::path::Path;

use serde::Deserialize;
use toml_edit::ImDocument;

mod auth;
mod files;
mod raw;
mod reader;
mod redis;
mod schema;
mod server;
mod site;
#[cfg(test)]
mod tests;

pub use files::{at_keys, check_files};
use raw::Table;
use reader::{get, need, Cx, Reader};
use schema::ConfigFile;

use super::{Config, ConfigError, LogConfig};

/// Parses and validates a config file's text. `file` names the file in problems, and relative
/// paths inside it are resolved against its directory. Touches no files.
///
/// # Errors
///
/// [`ConfigError::Invalid`] with every problem found, in file order.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let starts = reader::line_starts(text);
            let message = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(ConfigError::Invalid(vec![super::Problem {
                file: file.to_path_buf(),
                line: e.span().map(|s| reader::line_of(&starts, s.start)),
                key: "toml".to_owned(),
                message: format!("invalid TOML: {message}"),
            }]));
        }
    };
    let cx = Cx::new(text, file, &doc);
    // serde consumes a copy of the document into the file structs; the original stays to
    // find each problem's line and to quote a wrong value as written.
    let read = Table::<ConfigFile>::deserialize(toml_edit::de::Deserializer::from(doc.clone()));
    let config = match &read {
        Ok(table) => Reader::root(&cx, table).and_then(|root| {
            let config = read_config(&root, file);
            root.finish();
            config
        }),
        Err(e) => {
            // Not reached with the file structs as declared (every key takes any value), but
            // a reading failure must still say where rather than pass.
            cx.report(
                e.span()
                    .map(|s| reader::line_of(&reader::line_starts(text), s.start)),
                "toml",
                format!("cannot read the file: {}", e.message()),
            );
            None
        }
    };
    let problems = cx.into_problems();
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigError::Invalid(problems)),
    }
}

fn read_config(root: &Reader<'_, ConfigFile>, file: &Path) -> Option<Config> {
    let server = match get!(root, server) {
        Some(e) => e.table("a [server] table").and_then(server::read_server),
        None => {
            root.cx.report(
                None,
                "server",
                "missing required table [server]; expected at least listen, tls_cert and tls_key",
            );
            None
        }
    };
    let log = match get!(root, log) {
        Some(e) => e.table("a [log] table").and_then(server::read_log),
        None => Some(LogConfig::default()),
    };
    const NO_SITES: &str = "no sites; expected at least one [[site]] table with host and upstream";
    let sites = match get!(root, site) {
        Some(e) => match e.tables("[[site]] tables") {
            Some(readers) if readers.is_empty() => {
                e.report(NO_SITES);
                None
            }
            Some(readers) => site::read_sites(readers),
            None => None,
        },
        None => {
            root.cx.report(None, "site", NO_SITES);
            None
        }
    };
    let state_dir = server
        .as_ref()
        .map_or_else(|| root.cx.base.join("state"), |s| s.state_dir.clone());
    let oidc = match get!(root, oidc) {
        Some(e) => e
            .table("an [oidc] table")
            .and_then(auth::read_oidc)
            .map(Some),
        None => Some(None),
    };
    let session = match get!(root, session) {
        Some(e) => e
            .table("a [session] table")
            .and_then(|r| auth::read_session(Some(r), &state_dir)),
        None => auth::read_session(None, &state_dir),
    };
    let identity = match get!(root, identity) {
        Some(e) => e
            .table("an [identity] table")
            .and_then(|r| auth::read_identity(Some(r), &state_dir)),
        None => auth::read_identity(None, &state_dir),
    };
    let audit = match get!(root, audit) {
        Some(e) => e
            .table("an [audit] table")
            .and_then(|r| {
                let out = need!(r, output, "\"stdout\" or a file path").and_then(|e| {
                    match e.str("\"stdout\" or a file path")? {
                        "stdout" => Some(super::AuditOutput::Stdout),
                        _ => e.path().map(super::AuditOutput::File),
                    }
                });
                r.finish();
                out
            })
            .map(Some),
        None => Some(None),
    };
    let api_tokens = match get!(root, api_token) {
        Some(e) => e.tables("[[api_token]] tables").and_then(|readers| {
            let mut out = Vec::new();
            let mut ok = true;
            for r in readers {
                let issuer = need!(r, issuer, "the token issuer URL").and_then(|e| {
                    let s = e.str("the token issuer URL")?;
                    match s.parse::<http::Uri>() {
                        Ok(u)
                            if u.host().is_some()
                                && matches!(u.scheme_str(), Some("https") | Some("http")) =>
                        {
                            Some(s.to_owned())
                        }
                        _ => {
                            e.report(format!("\"{s}\" is not an issuer URL"));
                            None
                        }
                    }
                });
                let audience = need!(r, audience, "the audience the tokens must name")
                    .and_then(|e| e.str("an audience string").map(str::to_owned));
                let jwks_uri = match get!(r, jwks_uri) {
                    Some(e) => e.str("a key set URL").map(|s| Some(s.to_owned())),
                    None => Some(None),
                };
                let match_by_email = match get!(r, match_by_email) {
                    Some(e) => e.bool(),
                    None => Some(false),
                };
                r.finish();
                match (issuer, audience, jwks_uri, match_by_email) {
                    (Some(issuer), Some(audience), Some(jwks_uri), Some(match_by_email)) => out
                        .push(super::ApiTokenIssuer {
                            issuer,
                            audience,
                            jwks_uri,
                            match_by_email,
                        }),
                    _ => ok = false,
                }
            }
            ok.then_some(out)
        }),
        None => Some(Vec::new()),
    };
    let directory = match get!(root, directory) {
        Some(e) => e
            .table("a [directory] table")
            .and_then(|r| auth::read_directory(r, &state_dir))
            .map(Some),
        None => Some(None),
    };
    if let (Some(tokens), Some(sites), Some(oidc)) = (&api_tokens, &sites, &oidc) {
        for (i, site) in sites.iter().enumerate() {
            if site.api_tokens && (tokens.is_empty() || oidc.is_none()) {
                root.cx.report(
                    None,
                    format!("site[{i}].api_tokens"),
                    "needs at least one [[api_token]] issuer and an [oidc] section; add them or remove api_tokens",
                );
            }
        }
    }
    if let (Some(tokens), Some(Some(oidc))) = (&api_tokens, &oidc) {
        // An ID token names the gateway's own client as its audience: an API token issuer
        // with that audience would take every signed-in user's ID token (kept in browser
        // storage by many front ends) as an API credential.
        let own = std::iter::once(oidc.client_id.as_str())
            .chain(oidc.step_up.as_ref().map(|s| s.client_id.as_str()));
        for client in own {
            for (i, t) in tokens.iter().enumerate() {
                if t.audience == client {
                    root.cx.report(
                        None,
                        format!("api_token[{i}].audience"),
                        format!("\"{client}\" is the gateway's own OIDC client id, so ID tokens would pass as API tokens; use the audience of the API's access tokens"),
                    );
                }
            }
        }
    }
    if let (Some(oidc), Some(sites)) = (&oidc, &sites) {
        let step_up_configured = oidc.as_ref().is_some_and(|o| o.step_up.is_some());
        for (i, site) in sites.iter().enumerate() {
            for (j, route) in site.routes.iter().enumerate() {
                if route.step_up.is_some() && !step_up_configured {
                    root.cx.report(
                        None,
                        format!("site[{i}].route[{j}].step_up"),
                        "needs an [oidc.step_up] application to send users to; add [oidc.step_up] or remove step_up",
                    );
                }
            }
        }
    }
    if let (Some(None), Some(sites)) = (&directory, &sites) {
        // Group and user lists are checked against the directory; without one they could
        // only be ignored, which would let everyone in.
        for (i, site) in sites.iter().enumerate() {
            let mut lists = vec![(format!("site[{i}]"), &site.allow)];
            for (j, route) in site.routes.iter().enumerate() {
                if let Some(a) = &route.allow {
                    lists.push((format!("site[{i}].route[{j}]"), a));
                }
                if !route.step_up_groups.is_empty() {
                    root.cx.report(
                        None,
                        format!("site[{i}].route[{j}].step_up_groups"),
                        "needs a [directory] to check membership against; add [directory] or remove step_up_groups",
                    );
                }
            }
            for (key, allow) in lists {
                if !allow.is_anyone() {
                    root.cx.report(
                        None,
                        format!("{key}.allow_groups"),
                        "allow_groups and allow_users need a [directory] to check them against; add [directory] or remove the lists",
                    );
                }
            }
        }
    }
    Some(Config {
        source: file.to_path_buf(),
        server: server?,
        log: log?,
        sites: sites?,
        oidc: oidc?,
        session: session?,
        identity: identity?,
        directory: directory?,
        audit: audit?,
        api_tokens: api_tokens?,
    })
}
