//! Problems about a valid config's files and keys, pointed back at the lines that name them.

use std::path::Path;

use toml_edit::ImDocument;

use super::reader::{find, key_steps, line_of, line_starts};
use crate::config::{Config, Problem};

/// Reports the files a valid config names but the gateway could not open: `server.tls_cert`,
/// `server.tls_key`, the secret files, the Redis password files and each
/// `site[i].upstream_ca_file`. Opens them without reading.
///
/// Kept apart from [`parse`] so parsing stays pure; lines are found by re-parsing
/// `config.source` when it is still readable.
#[must_use]
pub fn check_files(config: &Config) -> Vec<Problem> {
    let mut wanted: Vec<(String, &Path)> = vec![
        ("server.tls_cert".to_owned(), &config.server.tls_cert),
        ("server.tls_key".to_owned(), &config.server.tls_key),
    ];
    if let Some(oidc) = &config.oidc {
        if let crate::config::SecretSource::File(path) = &oidc.client_secret {
            wanted.push(("oidc.client_secret_file".to_owned(), path));
        }
        if let Some(crate::config::StepUpConfig {
            client_secret: crate::config::SecretSource::File(path),
            ..
        }) = &oidc.step_up
        {
            wanted.push(("oidc.step_up.client_secret_file".to_owned(), path));
        }
        if let Some(ca) = &oidc.ca_file {
            wanted.push(("oidc.ca_file".to_owned(), ca));
        }
    }
    if let Some(crate::config::DirectoryConfig {
        api_key: crate::config::SecretSource::File(path),
        ..
    }) = &config.directory
    {
        wanted.push(("directory.api_key_file".to_owned(), path));
    }
    if let Some(redis) = &config.session.redis {
        if let Some(crate::config::SecretSource::File(path)) = &redis.password {
            wanted.push(("session.redis_password_file".to_owned(), path));
        }
        if let crate::config::RedisTarget::Sentinel(crate::config::SentinelConfig {
            password: Some(crate::config::SecretSource::File(path)),
            ..
        }) = &redis.target
        {
            wanted.push(("session.redis_sentinel_password_file".to_owned(), path));
        }
    }
    for (i, site) in config.sites.iter().enumerate() {
        if let Some(ca) = &site.upstream.ca_file {
            wanted.push((format!("site[{i}].upstream_ca_file"), ca));
        }
    }
    let mut failed: Vec<(String, String)> = wanted
        .into_iter()
        .filter_map(|(key, path)| unusable(path).map(|why| (key, why)))
        .collect();
    // Instances that share sessions must share the keys that sign cookies and assertions;
    // a key generated per instance would make every other instance's cookies invalid.
    if config.session.store == crate::config::StoreKind::Redis {
        for (key, path) in [
            ("session.key_file", &config.session.key_file),
            (
                "identity.signing_key_file",
                &config.identity.signing_key_file,
            ),
        ] {
            if !path.exists() {
                failed.push((
                    key.to_owned(),
                    format!(
                        "{} does not exist, so each instance would generate its own; with store = \"redis\" every instance must use the same key: start one instance to generate it, then copy it to the others",
                        path.display()
                    ),
                ));
            }
        }
    }
    at_keys(config, failed)
}

/// Turns `(dotted key, message)` findings about a valid config into [`Problem`]s, with the
/// line of each key when `config.source` can still be read. Keys are spelled as in problems
/// (`site[1].route[0].allow_groups`).
#[must_use]
pub fn at_keys(config: &Config, found: Vec<(String, String)>) -> Vec<Problem> {
    if found.is_empty() {
        return Vec::new();
    }
    // Only now is the config re-read, and only to point at the offending lines.
    let source = std::fs::read_to_string(&config.source).ok();
    let located = source.as_deref().and_then(|text| {
        let doc = ImDocument::parse(text).ok()?;
        Some((doc, line_starts(text)))
    });
    found
        .into_iter()
        .map(|(key, message)| Problem {
            file: config.source.clone(),
            line: located.as_ref().and_then(|(doc, starts)| {
                let (_, offset) = find(doc.as_item(), &key_steps(&key))?;
                Some(line_of(starts, offset?))
            }),
            key,
            message,
        })
        .collect()
}

/// Why the gateway could not use the file at `path`, if it could not.
fn unusable(path: &Path) -> Option<String> {
    const EXPECTED: &str = "expected an existing, readable file";
    match std::fs::metadata(path) {
        Err(e) => Some(format!(
            "cannot use {}: {}; {EXPECTED}",
            path.display(),
            io_reason(&e)
        )),
        Ok(meta) if !meta.is_file() => Some(format!(
            "{} is not a regular file; {EXPECTED}",
            path.display()
        )),
        Ok(_) => std::fs::File::open(path).err().map(|e| {
            format!(
                "cannot open {}: {}; {EXPECTED}",
                path.display(),
                io_reason(&e)
            )
        }),
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}
