//! Config file parsing: TOML text to a validated [`Config`], reporting every problem at once.
//!
//! The document is walked by hand rather than deserialized so that each problem carries the
//! line and dotted key path it belongs to, unknown keys can be refused with a spelling hint, and
//! one run of `jumpgate check` shows everything that needs fixing instead of only the first.
//! Each table is read through a [`Reader`] that remembers which keys were asked for; whatever is
//! left over when the table is finished is an unknown key.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;
use toml_edit::{ImDocument, Item, TableLike, Value};

mod auth;
mod redis;

use super::{
    Access, Config, ConfigError, Limits, LogConfig, LogFormat, Problem, RouteConfig, ServerConfig,
    SiteConfig, Upstream,
};

/// Parses and validates a config file's text. `file` names the file in problems, and relative
/// paths inside it are resolved against its directory. Touches no files.
///
/// # Errors
///
/// [`ConfigError::Invalid`] with every problem found, in file order.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let cx = Cx::new(text, file);
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let line = e.span().map(|s| cx.line_of(s.start));
            let message = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            cx.report(line, "toml", format!("invalid TOML: {message}"));
            return Err(ConfigError::Invalid(cx.into_problems()));
        }
    };
    let mut root = Reader::new(&cx, doc.as_table(), String::new(), None);
    let config = read_config(&mut root, file);
    root.finish();
    let problems = cx.into_problems();
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigError::Invalid(problems)),
    }
}

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
        if let super::SecretSource::File(path) = &oidc.client_secret {
            wanted.push(("oidc.client_secret_file".to_owned(), path));
        }
        if let Some(super::StepUpConfig {
            client_secret: super::SecretSource::File(path),
            ..
        }) = &oidc.step_up
        {
            wanted.push(("oidc.step_up.client_secret_file".to_owned(), path));
        }
        if let Some(ca) = &oidc.ca_file {
            wanted.push(("oidc.ca_file".to_owned(), ca));
        }
    }
    if let Some(super::DirectoryConfig {
        api_key: super::SecretSource::File(path),
        ..
    }) = &config.directory
    {
        wanted.push(("directory.api_key_file".to_owned(), path));
    }
    if let Some(redis) = &config.session.redis {
        if let Some(super::SecretSource::File(path)) = &redis.password {
            wanted.push(("session.redis_password_file".to_owned(), path));
        }
        if let super::RedisTarget::Sentinel(super::SentinelConfig {
            password: Some(super::SecretSource::File(path)),
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
    if config.session.store == super::StoreKind::Redis {
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
                Some(line_of(starts, key_line(doc.as_item(), &key_steps(&key))?))
            }),
            key,
            message,
        })
        .collect()
}

/// The steps of a dotted key: `site[1].route[0].path` is site, 1, route, 0, path.
fn key_steps(dotted: &str) -> Vec<KeyStep<'_>> {
    let mut steps = Vec::new();
    for part in dotted.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        steps.push(KeyStep::Key(name));
        for index in rest.split('[') {
            if let Ok(n) = index.trim_end_matches(']').parse() {
                steps.push(KeyStep::Index(n));
            }
        }
    }
    steps
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

enum KeyStep<'a> {
    Key(&'a str),
    Index(usize),
}

/// Byte offset of the key (or value) reached by `steps`, for pointing back into the file.
fn key_line(root: &Item, steps: &[KeyStep<'_>]) -> Option<usize> {
    let mut at: &dyn TableLike = root.as_table_like()?;
    let mut item: Option<&Item> = None;
    let mut offset = None;
    for step in steps {
        match step {
            KeyStep::Key(k) => {
                if let Some(i) = item.take() {
                    at = i.as_table_like()?;
                }
                let (key, next) = at.get_key_value(k)?;
                offset = key.span().or_else(|| next.span()).map(|s| s.start);
                item = Some(next);
            }
            KeyStep::Index(n) => {
                at = match item.take()? {
                    Item::ArrayOfTables(a) => a.get(*n)?,
                    Item::Value(Value::Array(a)) => a.get(*n)?.as_inline_table()?,
                    _ => return None,
                };
            }
        }
    }
    offset
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

fn line_of(starts: &[usize], offset: usize) -> usize {
    starts.partition_point(|&s| s <= offset).max(1)
}

/// What the whole walk shares: where the file is and the problems found so far.
struct Cx<'a> {
    file: &'a Path,
    base: PathBuf,
    starts: Vec<usize>,
    // Shared by every Reader and Entry alive at once (a site's reader and its routes' readers),
    // so it cannot be a plain `&mut`.
    problems: RefCell<Vec<Problem>>,
}

impl<'a> Cx<'a> {
    fn new(text: &str, file: &'a Path) -> Self {
        Cx {
            file,
            base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            starts: line_starts(text),
            problems: RefCell::new(Vec::new()),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        line_of(&self.starts, offset)
    }

    fn span_line(&self, span: Option<std::ops::Range<usize>>) -> Option<usize> {
        span.map(|s| self.line_of(s.start))
    }

    fn report(&self, line: Option<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.problems.borrow_mut().push(Problem {
            file: self.file.to_path_buf(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Problems in file order; those without a line (missing tables) come last.
    fn into_problems(self) -> Vec<Problem> {
        let mut problems = self.problems.into_inner();
        problems.sort_by_key(|p| (p.line.is_none(), p.line));
        problems
    }
}

/// One table being read. Every key asked for is remembered, so [`Reader::finish`] can report
/// the rest as unknown and suggest the closest known spelling.
struct Reader<'a> {
    cx: &'a Cx<'a>,
    table: &'a dyn TableLike,
    path: String,
    line: Option<usize>,
    asked: Vec<&'static str>,
}

impl<'a> Reader<'a> {
    fn new(cx: &'a Cx<'a>, table: &'a dyn TableLike, path: String, line: Option<usize>) -> Self {
        Reader {
            cx,
            table,
            path,
            line,
            asked: Vec::new(),
        }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value under `key`, if present.
    fn get(&mut self, key: &'static str) -> Option<Entry<'a>> {
        self.asked.push(key);
        let (k, item) = self.table.get_key_value(key)?;
        if item.is_none() {
            return None;
        }
        let line = self
            .cx
            .span_line(k.span().or_else(|| item.span()))
            .or(self.line);
        Some(Entry {
            cx: self.cx,
            node: Node::Item(item),
            key: self.key_path(key),
            line,
        })
    }

    /// The value under `key`; its absence is a problem.
    fn need(&mut self, key: &'static str, expected: &str) -> Option<Entry<'a>> {
        let entry = self.get(key);
        if entry.is_none() {
            self.cx.report(
                self.line,
                self.key_path(key),
                format!("missing required key {}; expected {expected}", self.place()),
            );
        }
        entry
    }

    /// Where this table is, for messages: `in [server]`, `in site[0]`.
    fn place(&self) -> String {
        if self.path.is_empty() {
            "at the top level".to_owned()
        } else if self.path.ends_with(']') {
            format!("in {}", self.path)
        } else {
            format!("in [{}]", self.path)
        }
    }

    /// Reports every key that no one asked for.
    fn finish(self) {
        for (key, item) in self.table.iter() {
            if self.asked.contains(&key) {
                continue;
            }
            let span = self
                .table
                .get_key_value(key)
                .and_then(|(k, _)| k.span())
                .or_else(|| item.span());
            let hint = match closest(key, &self.asked) {
                Some(known) => format!("; did you mean \"{known}\"?"),
                None => {
                    let mut known: Vec<&str> = self.asked.clone();
                    known.dedup();
                    format!("; known keys here: {}", known.join(", "))
                }
            };
            self.cx.report(
                self.cx.span_line(span).or(self.line),
                self.key_path(key),
                format!("unknown key \"{key}\" {}{hint}", self.place()),
            );
        }
    }
}

/// The known key nearest to `unknown`, if it is close enough to be a likely typo.
fn closest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = unknown.to_ascii_lowercase().replace('-', "_");
    let limit = if lower.chars().count() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, with an adjacent swap counting as one edit (the commonest typo).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
}

/// One present value with its place in the file, ready to be converted to a typed value.
/// Each conversion reports its own problem and returns `None` when the value does not fit.
struct Entry<'a> {
    cx: &'a Cx<'a>,
    node: Node<'a>,
    key: String,
    line: Option<usize>,
}

impl<'a> Entry<'a> {
    fn value(&self) -> Option<&'a Value> {
        match self.node {
            Node::Item(item) => item.as_value(),
            Node::Value(v) => Some(v),
        }
    }

    fn report(&self, message: impl Into<String>) {
        self.cx.report(self.line, self.key.clone(), message);
    }

    /// How the value reads in the file, for messages: `integer 8443`, `table`.
    fn found(&self) -> String {
        match self.node {
            Node::Item(Item::Value(v)) | Node::Value(v) => describe(v),
            Node::Item(item) => item.type_name().to_owned(),
        }
    }

    fn wrong_type(&self, expected: &str) {
        self.report(format!("expected {expected}, found {}", self.found()));
    }

    fn str(&self, expected: &str) -> Option<&'a str> {
        match self.value().and_then(Value::as_str) {
            Some(s) => Some(s),
            None => {
                self.wrong_type(expected);
                None
            }
        }
    }

    fn bool(&self) -> Option<bool> {
        let b = self.value().and_then(Value::as_bool);
        if b.is_none() {
            self.wrong_type("true or false");
        }
        b
    }

    fn int_in(&self, range: std::ops::RangeInclusive<i64>) -> Option<usize> {
        let Some(n) = self.value().and_then(Value::as_integer) else {
            self.wrong_type(&format!(
                "an integer from {} to {}",
                range.start(),
                range.end()
            ));
            return None;
        };
        if !range.contains(&n) {
            self.report(format!(
                "{n} is out of range; expected an integer from {} to {}",
                range.start(),
                range.end()
            ));
            return None;
        }
        usize::try_from(n).ok()
    }

    fn addr(&self) -> Option<SocketAddr> {
        const EXPECTED: &str = "\"IP:PORT\" such as \"0.0.0.0:8443\"";
        if let Some(n) = self.value().and_then(Value::as_integer) {
            self.report(format!(
                "expected a string {EXPECTED}, found integer {n}; write \"0.0.0.0:{n}\""
            ));
            return None;
        }
        let s = self.str(&format!("a string {EXPECTED}"))?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.report(format!(
                    "\"{s}\" is not a socket address; expected {EXPECTED} (an IP address, not a host name; IPv6 as \"[::]:8443\")"
                ));
                None
            }
        }
    }

    fn duration(&self, may_be_zero: bool) -> Option<Duration> {
        const EXPECTED: &str = "a duration string such as \"30s\", \"15m\" or \"12h\"";
        if let Some(n) = self.value().and_then(Value::as_integer) {
            self.report(format!(
                "expected {EXPECTED}, found integer {n}; write \"{n}s\" for seconds"
            ));
            return None;
        }
        let s = self.str(EXPECTED)?;
        match humantime::parse_duration(s) {
            Ok(d) if d.is_zero() && !may_be_zero => {
                self.report(format!(
                    "\"{s}\" is zero; expected a duration greater than zero"
                ));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.report(format!(
                    "\"{s}\" is not a duration ({e}); expected {EXPECTED}"
                ));
                None
            }
        }
    }

    /// A file path; relative ones are taken from the config file's directory, so the config
    /// means the same thing whatever directory the gateway is started from.
    fn path(&self) -> Option<PathBuf> {
        let s = self.str("a file path string")?;
        if s.trim().is_empty() {
            self.report("the path is empty; expected a file path");
            return None;
        }
        let p = Path::new(s);
        Some(if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.cx.base.join(p)
        })
    }

    fn access(&self) -> Option<Access> {
        const EXPECTED: &str = "\"protected\", \"public\" or \"deny\"";
        let s = self.str(&format!("one of {EXPECTED}"))?;
        match s {
            "protected" => Some(Access::Protected),
            "public" => Some(Access::Public),
            "deny" => Some(Access::Deny),
            _ => {
                self.report(format!(
                    "\"{s}\" is not an access rule; expected one of {EXPECTED}"
                ));
                None
            }
        }
    }

    /// The value as a table to read keys from (`[name]` or an inline `{ ... }`).
    fn table(&self, expected: &str) -> Option<Reader<'a>> {
        let (table, span): (&'a dyn TableLike, _) = match self.node {
            Node::Item(Item::Table(t)) => (t, t.span()),
            Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)) => {
                (t, t.span())
            }
            _ => {
                self.wrong_type(expected);
                return None;
            }
        };
        let line = self.cx.span_line(span).or(self.line);
        Some(Reader::new(self.cx, table, self.key.clone(), line))
    }

    /// The value as a list of tables (`[[name]]` or an array of inline tables), each keyed
    /// `name[i]`.
    fn tables(&self, expected: &str) -> Option<Vec<Reader<'a>>> {
        let mut out = Vec::new();
        match self.node {
            Node::Item(Item::ArrayOfTables(a)) => {
                for (i, t) in a.iter().enumerate() {
                    let line = self.cx.span_line(t.span()).or(self.line);
                    out.push(Reader::new(self.cx, t, format!("{}[{i}]", self.key), line));
                }
            }
            Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
                for (i, v) in a.iter().enumerate() {
                    let entry = Entry {
                        cx: self.cx,
                        node: Node::Value(v),
                        key: format!("{}[{i}]", self.key),
                        line: self.cx.span_line(v.span()).or(self.line),
                    };
                    if let Some(r) = entry.table("a table") {
                        out.push(r);
                    }
                }
            }
            _ => {
                self.wrong_type(expected);
                return None;
            }
        }
        Some(out)
    }

    /// The value as an array, each element keyed `name[i]` with its own line.
    fn array(&self, expected: &str) -> Option<Vec<Entry<'a>>> {
        let Some(Value::Array(a)) = self.value() else {
            self.wrong_type(expected);
            return None;
        };
        Some(
            a.iter()
                .enumerate()
                .map(|(i, v)| Entry {
                    cx: self.cx,
                    node: Node::Value(v),
                    key: format!("{}[{i}]", self.key),
                    line: self.cx.span_line(v.span()).or(self.line),
                })
                .collect(),
        )
    }
}

fn describe(v: &Value) -> String {
    let mut bare = v.clone();
    bare.decor_mut().clear();
    let text = bare.to_string();
    let text = if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    };
    format!("{} {text}", v.type_name())
}

fn read_config(root: &mut Reader<'_>, file: &Path) -> Option<Config> {
    let server = match root.get("server") {
        Some(e) => e.table("a [server] table").and_then(read_server),
        None => {
            root.cx.report(
                None,
                "server",
                "missing required table [server]; expected at least listen, tls_cert and tls_key",
            );
            None
        }
    };
    let log = match root.get("log") {
        Some(e) => e.table("a [log] table").and_then(read_log),
        None => Some(LogConfig::default()),
    };
    const NO_SITES: &str = "no sites; expected at least one [[site]] table with host and upstream";
    let sites = match root.get("site") {
        Some(e) => match e.tables("[[site]] tables") {
            Some(readers) if readers.is_empty() => {
                e.report(NO_SITES);
                None
            }
            Some(readers) => read_sites(readers),
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
    let oidc = match root.get("oidc") {
        Some(e) => e
            .table("an [oidc] table")
            .and_then(auth::read_oidc)
            .map(Some),
        None => Some(None),
    };
    let session = match root.get("session") {
        Some(e) => e
            .table("a [session] table")
            .and_then(|r| auth::read_session(Some(r), &state_dir)),
        None => auth::read_session(None, &state_dir),
    };
    let identity = match root.get("identity") {
        Some(e) => e
            .table("an [identity] table")
            .and_then(|r| auth::read_identity(Some(r), &state_dir)),
        None => auth::read_identity(None, &state_dir),
    };
    let audit = match root.get("audit") {
        Some(e) => e
            .table("an [audit] table")
            .and_then(|mut r| {
                let out = r.need("output", "\"stdout\" or a file path").and_then(|e| {
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
    let api_tokens = match root.get("api_token") {
        Some(e) => e.tables("[[api_token]] tables").and_then(|readers| {
            let mut out = Vec::new();
            let mut ok = true;
            for mut r in readers {
                let issuer = r.need("issuer", "the token issuer URL").and_then(|e| {
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
                let audience = r
                    .need("audience", "the audience the tokens must name")
                    .and_then(|e| e.str("an audience string").map(str::to_owned));
                let jwks_uri = match r.get("jwks_uri") {
                    Some(e) => e.str("a key set URL").map(|s| Some(s.to_owned())),
                    None => Some(None),
                };
                let match_by_email = match r.get("match_by_email") {
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
    let directory = match root.get("directory") {
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

fn read_server(mut r: Reader<'_>) -> Option<ServerConfig> {
    let listen = r
        .need("listen", "\"IP:PORT\" such as \"0.0.0.0:8443\"")
        .map(|e| (e.addr(), e.line));
    let tls_cert = r
        .need("tls_cert", "the path of a PEM certificate chain")
        .and_then(|e| e.path());
    let tls_key = r
        .need("tls_key", "the path of a PEM private key")
        .and_then(|e| e.path());
    let redirect = r.get("http_redirect_listen").map(|e| (e.addr(), e.line));
    let admin = r.get("admin_listen").map(|e| (e.addr(), e.line));
    let verify = r.get("verify_listen").map(|e| (e.addr(), e.line));
    let trusted_proxies = match r.get("trusted_proxies") {
        Some(e) => read_proxies(&e),
        None => Some(Vec::new()),
    };
    // Who may ask forward-auth questions is a separate, narrower grant than whose
    // X-Forwarded-For is believed: a load balancer in front of the gateway is trusted for
    // the client's address, but the clients behind it must never ask questions themselves.
    let verify_clients = match r.get("verify_clients") {
        Some(e) => read_proxies(&e),
        None => Some(vec![
            IpNet::from(IpAddr::from([127, 0, 0, 1])),
            IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        ]),
    };
    let verify_uri_header = match r.get("verify_uri_header") {
        None => Some(crate::config::UriHeader::XForwardedUri),
        Some(e) => e
            .str("\"x-forwarded-uri\" or \"x-original-uri\"")
            .and_then(|s| {
                if s.eq_ignore_ascii_case("x-forwarded-uri") {
                    Some(crate::config::UriHeader::XForwardedUri)
                } else if s.eq_ignore_ascii_case("x-original-uri") {
                    Some(crate::config::UriHeader::XOriginalUri)
                } else {
                    e.report(format!(
                        "\"{s}\" is not a header forward-auth reads the URI from; expected \"x-forwarded-uri\" (Traefik, Caddy, the nginx example) or \"x-original-uri\""
                    ));
                    None
                }
            }),
    };
    let shutdown_grace = match r.get("shutdown_grace") {
        Some(e) => e.duration(true),
        None => Some(Duration::from_secs(30)),
    };
    let limits = match r.get("limits") {
        Some(e) => e.table("a [server.limits] table").and_then(read_limits),
        None => Some(Limits::default()),
    };
    let public_port = match r.get("public_port") {
        Some(e) => e.int_in(1..=65535).map(|p| Some(p as u16)),
        None => Some(None),
    };
    let state_dir = auth::state_dir(r.get("state_dir"), &r.cx.base);

    // Two listeners on one port would fail at bind time; saying so here names both keys.
    let mut clashes = false;
    let mut bound: Vec<(String, SocketAddr, Option<usize>)> = Vec::new();
    for (key, found) in [
        ("listen", listen),
        ("http_redirect_listen", redirect),
        ("admin_listen", admin),
        ("verify_listen", verify),
    ] {
        let Some((Some(addr), line)) = found else {
            continue;
        };
        let key = r.key_path(key);
        for (other, b, other_line) in &bound {
            if clash(addr, *b) {
                let at = other_line
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default();
                r.cx.report(
                    line,
                    key.clone(),
                    format!("{addr} overlaps {other} {b}{at}; each listener needs its own port"),
                );
                clashes = true;
            }
        }
        bound.push((key, addr, line));
    }
    r.finish();

    let redirect = match redirect {
        Some((a, _)) => Some(a?),
        None => None,
    };
    let admin = match admin {
        Some((a, _)) => Some(a?),
        None => None,
    };
    let verify = match verify {
        Some((a, _)) => Some(a?),
        None => None,
    };
    if clashes {
        return None;
    }
    Some(ServerConfig {
        listen: listen?.0?,
        tls_cert: tls_cert?,
        tls_key: tls_key?,
        http_redirect_listen: redirect,
        admin_listen: admin,
        verify_listen: verify,
        trusted_proxies: trusted_proxies?,
        verify_clients: verify_clients?,
        verify_uri_header: verify_uri_header?,
        shutdown_grace: shutdown_grace?,
        public_port: public_port?,
        state_dir: state_dir?,
        limits: limits?,
    })
}

/// Whether two listeners would fight over one port: the same port (0 means "any free port",
/// never a clash) on the same address, or where either is a wildcard address.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn read_proxies(e: &Entry<'_>) -> Option<Vec<IpNet>> {
    const EXPECTED: &str =
        "a CIDR block such as \"10.0.0.0/8\" or a single IP address such as \"192.0.2.10\"";
    let items = e.array(&format!("an array of strings, each {EXPECTED}"))?;
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        let Some(s) = item.str(&format!("a string, {EXPECTED}")) else {
            ok = false;
            continue;
        };
        let net = match s.parse::<IpNet>() {
            Ok(net) => Some(net),
            Err(_) => s.parse::<IpAddr>().ok().map(IpNet::from),
        };
        match net {
            // Host bits set usually mean a typo in the prefix length; trusting a wider or
            // narrower range than intended is a security mistake, so ask rather than guess.
            Some(net) if net.trunc() != net => {
                item.report(format!(
                    "\"{s}\" has host bits set; did you mean \"{}\"?",
                    net.trunc()
                ));
                ok = false;
            }
            Some(net) => out.push(net),
            None => {
                item.report(format!(
                    "\"{s}\" is not a CIDR block or IP address; expected {EXPECTED}"
                ));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn read_limits(mut r: Reader<'_>) -> Option<Limits> {
    let d = Limits::default();
    let mut ok = true;
    let mut int = |r: &mut Reader<'_>,
                   key: &'static str,
                   range: std::ops::RangeInclusive<i64>,
                   default: usize| {
        match r.get(key) {
            Some(e) => e.int_in(range).unwrap_or_else(|| {
                ok = false;
                default
            }),
            None => default,
        }
    };
    let max_header_bytes = int(
        &mut r,
        "max_header_bytes",
        1024..=1_048_576,
        d.max_header_bytes,
    );
    let max_headers = int(&mut r, "max_headers", 8..=1000, d.max_headers);
    let sign_in_rate = int(&mut r, "sign_in_rate", 1..=100_000, d.sign_in_rate as usize) as u32;
    let mut dur = |r: &mut Reader<'_>, key: &'static str, default: Duration| match r.get(key) {
        Some(e) => e.duration(false).unwrap_or_else(|| {
            ok = false;
            default
        }),
        None => default,
    };
    let limits = Limits {
        max_header_bytes,
        max_headers,
        tls_handshake_timeout: dur(&mut r, "tls_handshake_timeout", d.tls_handshake_timeout),
        header_read_timeout: dur(&mut r, "header_read_timeout", d.header_read_timeout),
        upstream_connect_timeout: dur(
            &mut r,
            "upstream_connect_timeout",
            d.upstream_connect_timeout,
        ),
        upstream_response_timeout: dur(
            &mut r,
            "upstream_response_timeout",
            d.upstream_response_timeout,
        ),
        upstream_idle_timeout: dur(&mut r, "upstream_idle_timeout", d.upstream_idle_timeout),
        tunnel_idle_timeout: dur(&mut r, "tunnel_idle_timeout", d.tunnel_idle_timeout),
        idle_timeout: dur(&mut r, "idle_timeout", d.idle_timeout),
        sign_in_rate,
    };
    r.finish();
    ok.then_some(limits)
}

fn read_log(mut r: Reader<'_>) -> Option<LogConfig> {
    let d = LogConfig::default();
    let format = match r.get("format") {
        Some(e) => e.str("\"text\" or \"json\"").and_then(|s| match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => {
                e.report(format!(
                    "\"{s}\" is not a log format; expected \"text\" or \"json\""
                ));
                None
            }
        }),
        None => Some(d.format),
    };
    let level = match r.get("level") {
        Some(e) => e
            .str("a log filter such as \"info\"")
            .and_then(|s| check_level(&e, s)),
        None => Some(d.level),
    };
    let access = match r.get("access") {
        Some(e) => e.bool(),
        None => Some(d.access),
    };
    r.finish();
    Some(LogConfig {
        format: format?,
        level: level?,
        access: access?,
    })
}

fn check_level(e: &Entry<'_>, s: &str) -> Option<String> {
    const EXPECTED: &str =
        "one of trace, debug, info, warn, error, off, or filter directives such as \"info,jumpgate=debug\"";
    let word = s.trim();
    // A bare word that is not a level is a valid filter meaning "everything from target <word>",
    // which silences the gateway's own logs; it is nearly always a misspelt level.
    let bare = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let is_level = ["trace", "debug", "info", "warn", "error", "off"]
        .contains(&word.to_ascii_lowercase().as_str());
    if word.is_empty() || (bare && !is_level) {
        e.report(format!("\"{s}\" is not a log level; expected {EXPECTED}"));
        return None;
    }
    match tracing_subscriber::EnvFilter::try_new(s) {
        Ok(_) => Some(s.to_owned()),
        Err(err) => {
            e.report(format!(
                "\"{s}\" is not a valid log filter ({err}); expected {EXPECTED}"
            ));
            None
        }
    }
}

fn read_sites(readers: Vec<Reader<'_>>) -> Option<Vec<SiteConfig>> {
    let mut sites = Vec::new();
    let mut ok = true;
    // Canonical host → (key, line, as written) of the first site that claimed it.
    let mut seen: HashMap<String, (String, Option<usize>, String)> = HashMap::new();
    for r in readers {
        let cx = r.cx;
        let written = host_as_written(&r);
        let Some(site) = read_site(r) else {
            ok = false;
            continue;
        };
        if let Some((key, line, raw)) = written {
            if let Some((first_key, first_line, first_raw)) = seen.get(&site.host) {
                let at = first_line
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default();
                cx.report(
                    line,
                    key,
                    format!(
                        "\"{raw}\" duplicates {first_key} \"{first_raw}\"{at}; each host may appear in only one \
                         [[site]] (hosts are compared lower-case, without a trailing dot)"
                    ),
                );
                ok = false;
            } else {
                seen.insert(site.host.clone(), (key, line, raw));
            }
        }
        sites.push(site);
    }
    ok.then_some(sites)
}

/// Where a site's `host` is written, taken before the reader is consumed so that a duplicate
/// can name both places.
fn host_as_written(r: &Reader<'_>) -> Option<(String, Option<usize>, String)> {
    let (k, item) = r.table.get_key_value("host")?;
    let raw = item.as_str()?.to_owned();
    let line = r.cx.span_line(k.span().or_else(|| item.span())).or(r.line);
    Some((r.key_path("host"), line, raw))
}

fn read_site(mut r: Reader<'_>) -> Option<SiteConfig> {
    let host = r
        .need("host", "a host name such as \"app.example.net\"")
        .and_then(|e| {
            e.str("a host name string such as \"app.example.net\"")
                .and_then(|s| check_host(&e, s))
        });
    let upstream = r
        .need("upstream", "an origin such as \"http://127.0.0.1:8000\"")
        .and_then(|e| {
            e.str("an origin string such as \"http://127.0.0.1:8000\"")
                .and_then(|s| check_upstream(&e, s))
        });
    // `Some(None)`: absent; `None`: present but unusable.
    let ca_file = match r.get("upstream_ca_file") {
        Some(e) => {
            let path = e.path();
            match &upstream {
                Some(u) if u.scheme_str() != Some("https") => {
                    e.report(format!(
                        "only applies to an https:// upstream, but upstream is \"{}\"; remove it or use https://",
                        u.authority().map_or_else(|| u.to_string(), |a| format!("http://{a}"))
                    ));
                    None
                }
                _ => path.map(Some),
            }
        }
        None => Some(None),
    };
    let access = match r.get("access") {
        Some(e) => e.access(),
        None => Some(Access::Protected),
    };
    let tunnel_idle_timeout = opt_duration(&mut r, "tunnel_idle_timeout");
    let upstream_response_timeout = opt_duration(&mut r, "upstream_response_timeout");
    let headers = match r.get("headers") {
        Some(e) => e
            .table("a [site.headers] table")
            .and_then(auth::read_headers),
        None => Some(super::IdentityHeaders::default()),
    };
    let allow = auth::read_allow(&mut r).map(Option::unwrap_or_default);
    let api_tokens = match r.get("api_tokens") {
        Some(e) => e.bool(),
        None => Some(false),
    };
    let step_up_on_navigation = match r.get("step_up_on_navigation") {
        Some(e) => e.bool().map(|b| (b, e.line)),
        None => Some((false, None)),
    };
    let routes = match r.get("route") {
        Some(e) => e.tables("[[site.route]] tables").and_then(read_routes),
        None => Some(Vec::new()),
    };
    if let (Some((true, line)), Some(routes)) = (step_up_on_navigation, &routes) {
        if !routes.iter().any(|rt| rt.step_up.is_some()) {
            r.cx.report(
                line,
                r.key_path("step_up_on_navigation"),
                "has no effect: no route of this site has step_up; add a step_up route or remove it",
            );
            return None;
        }
    }
    r.finish();
    Some(SiteConfig {
        host: host?,
        upstream: Upstream {
            origin: upstream?,
            ca_file: ca_file?,
        },
        access: access?,
        tunnel_idle_timeout: tunnel_idle_timeout?,
        upstream_response_timeout: upstream_response_timeout?,
        headers: headers?,
        allow: allow?,
        api_tokens: api_tokens?,
        step_up_on_navigation: step_up_on_navigation?.0,
        routes: routes?,
    })
}

/// An optional duration: `Some(None)` when absent, `None` when present but invalid.
fn opt_duration(r: &mut Reader<'_>, key: &'static str) -> Option<Option<Duration>> {
    match r.get(key) {
        Some(e) => e.duration(false).map(Some),
        None => Some(None),
    }
}

fn check_host(e: &Entry<'_>, raw: &str) -> Option<String> {
    const EXPECTED: &str = "a bare host name such as \"app.example.net\"";
    let fail = |why: &str| {
        e.report(format!("\"{raw}\" {why}; expected {EXPECTED}"));
        None
    };
    if raw.is_empty() {
        return fail("is empty");
    }
    if raw.contains('*') {
        return fail("is a wildcard, which is not supported; list each host in its own [[site]]");
    }
    if raw.contains("://") || raw.contains('/') {
        return fail("is a URL, not a host name");
    }
    let bare = match raw.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(ip, _)| format!("[{ip}]")),
        None => match raw.split_once(':') {
            Some((name, port)) if !port.contains(':') => Some(name.to_owned()),
            Some(_) => {
                return fail(&format!(
                    "is an IPv6 address without brackets; write \"[{raw}]\""
                ))
            }
            None => None,
        },
    };
    if let Some(bare) = bare.filter(|b| b != raw) {
        return fail(&format!(
            "includes a port, which is not part of a site's host; write \"{bare}\""
        ));
    }
    let Some(host) = crate::canonical::host(raw) else {
        return fail("is not a valid host name");
    };
    if !host.starts_with('[') && host.split('.').any(str::is_empty) {
        return fail("has an empty label");
    }
    Some(host.into_owned())
}

fn check_upstream(e: &Entry<'_>, raw: &str) -> Option<Uri> {
    const EXPECTED: &str =
        "an origin such as \"http://127.0.0.1:8000\" or \"https://app.internal:8443\"";
    let fail = |why: String| {
        e.report(format!("\"{raw}\" {why}; expected {EXPECTED}"));
        None
    };
    let uri = match raw.parse::<Uri>() {
        Ok(u) => u,
        Err(err) => return fail(format!("is not a URL ({err})")),
    };
    let scheme = match uri.scheme_str().map(str::to_ascii_lowercase) {
        Some(s) if s == "http" || s == "https" => s,
        Some(s) => {
            return fail(format!(
                "uses scheme {s}://; only http:// and https:// are supported"
            ))
        }
        None => return fail("has no scheme".to_owned()),
    };
    let Some(authority) = uri.authority() else {
        return fail("has no host".to_owned());
    };
    if authority.as_str().contains('@') {
        return fail(
            "contains user info; credentials do not belong in the upstream URL".to_owned(),
        );
    }
    if authority.host().is_empty() {
        return fail("has no host".to_owned());
    }
    if authority.as_str().ends_with(':') {
        return fail("has an empty port".to_owned());
    }
    if raw.contains('#') {
        return fail("has a fragment".to_owned());
    }
    if uri.query().is_some() {
        return fail("has a query; the upstream is an origin only".to_owned());
    }
    if !matches!(uri.path(), "" | "/") {
        return fail(format!(
            "has a path \"{}\"; the gateway forwards each request's own path, so the upstream is an origin only",
            uri.path()
        ));
    }
    let origin = format!("{scheme}://{}", authority.as_str().to_ascii_lowercase());
    match origin.parse::<Uri>() {
        Ok(u) => Some(u),
        Err(err) => fail(format!("is not a URL ({err})")),
    }
}

fn read_routes(readers: Vec<Reader<'_>>) -> Option<Vec<RouteConfig>> {
    let mut routes = Vec::new();
    let mut ok = true;
    // Lower-cased path → (key, line, as written) of the first route with it.
    let mut seen: HashMap<String, (String, Option<usize>, String)> = HashMap::new();
    for mut r in readers {
        let path = r.need("path", "an absolute path prefix such as \"/api\"").and_then(|e| {
            let p = e.str("a path string such as \"/api\"").and_then(|s| check_route_path(&e, s))?;
            let folded = p.to_ascii_lowercase();
            if let Some((key, line, first)) = seen.get(&folded) {
                let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
                e.report(format!(
                    "\"{p}\" duplicates {key} \"{first}\"{at}; route paths in a site are compared case-insensitively and must be unique"
                ));
                return None;
            }
            seen.insert(folded, (e.key.clone(), e.line, p.clone()));
            Some(p)
        });
        let access = match r.get("access") {
            Some(e) => e.access().map(Some),
            None => Some(None),
        };
        let tunnel_idle_timeout = opt_duration(&mut r, "tunnel_idle_timeout");
        let upstream_response_timeout = opt_duration(&mut r, "upstream_response_timeout");
        let allow = auth::read_allow(&mut r);
        let step_up = auth::read_route_step_up(&mut r);
        r.finish();
        match (
            path,
            access,
            tunnel_idle_timeout,
            upstream_response_timeout,
            allow,
            step_up,
        ) {
            (
                Some(path),
                Some(access),
                Some(tunnel_idle_timeout),
                Some(upstream_response_timeout),
                Some(allow),
                Some(step_up),
            ) => {
                routes.push(RouteConfig {
                    path,
                    access,
                    tunnel_idle_timeout,
                    upstream_response_timeout,
                    allow,
                    step_up: step_up.max_age,
                    step_up_exempt_methods: step_up.exempt,
                    step_up_groups: step_up.groups,
                });
            }
            _ => ok = false,
        }
    }
    ok.then_some(routes)
}

/// A route path must already be what [`crate::canonical::path`] makes of a request path, since
/// routing compares canonical request paths with these prefixes verbatim. Returns the prefix
/// without a trailing `/`, because matching is on segment boundaries anyway.
fn check_route_path(e: &Entry<'_>, raw: &str) -> Option<String> {
    if !raw.starts_with('/') {
        e.report(format!("\"{raw}\" does not start with \"/\"; expected an absolute path prefix such as \"/{raw}\""));
        return None;
    }
    if raw.contains('?') || raw.contains('#') {
        e.report(format!(
            "\"{raw}\" contains a query or fragment; routes match the path only, so expected a path such as \"{}\"",
            raw.split(['?', '#']).next().unwrap_or("/")
        ));
        return None;
    }
    match crate::canonical::path(raw) {
        Err(err) => {
            e.report(format!("\"{raw}\" is not a valid path: {err}; expected an absolute path prefix such as \"/api\""));
            None
        }
        Ok(canon) if canon != raw => {
            e.report(format!(
                "\"{raw}\" is not in canonical form, so no request path could ever match it; write \"{canon}\""
            ));
            None
        }
        Ok(_) if raw == "/" => Some(raw.to_owned()),
        Ok(_) => Some(raw.strip_suffix('/').unwrap_or(raw).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/jumpgate/gateway.toml";

    fn ok(text: &str) -> Config {
        match parse(text, Path::new(FILE)) {
            Ok(c) => c,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        }
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text, Path::new(FILE)) {
            Ok(_) => panic!("expected problems, config was accepted:\n{text}"),
            Err(ConfigError::Invalid(p)) => p,
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    /// The single problem `text` has, as (line, key, message).
    fn one(text: &str) -> (Option<usize>, String, String) {
        let p = problems(text);
        assert_eq!(p.len(), 1, "expected one problem, got {p:#?}");
        let p = &p[0];
        assert_eq!(p.file, Path::new(FILE));
        (p.line, p.key.clone(), p.message.clone())
    }

    const MINIMAL: &str = r#"[server]
listen = "0.0.0.0:8443"
tls_cert = "c.pem"
tls_key = "c.key"

[[site]]
host = "app.example.net"
upstream = "http://127.0.0.1:8000"
"#;

    /// MINIMAL with `extra` appended to the [server] table (line 5 onwards).
    fn server_with(extra: &str) -> String {
        MINIMAL.replacen(
            "tls_key = \"c.key\"\n",
            &format!("tls_key = \"c.key\"\n{extra}\n"),
            1,
        )
    }

    /// MINIMAL with `extra` appended to the site (line 9 onwards).
    fn site_with(extra: &str) -> String {
        format!("{MINIMAL}{extra}\n")
    }

    #[test]
    fn full_config() {
        let c = ok(r#"
[server]
listen = "0.0.0.0:8443"
tls_cert = "certs/gateway.pem"
tls_key = "/abs/gateway.key"
http_redirect_listen = "0.0.0.0:8080"
admin_listen = "127.0.0.1:9090"
trusted_proxies = ["10.0.0.0/8", "192.0.2.10", "2001:db8::/32", "::1"]
shutdown_grace = "10s"

[server.limits]
max_header_bytes = 65536
max_headers = 50
tls_handshake_timeout = "5s"
header_read_timeout = "20s"
upstream_connect_timeout = "3s"
upstream_response_timeout = "90s"
upstream_idle_timeout = "30s"
tunnel_idle_timeout = "10m"
idle_timeout = "45s"

[log]
format = "json"
level = "info,jumpgate=debug"
access = false

[[site]]
host = "Defguard.Example.NET."
upstream = "http://127.0.0.1:8000"
access = "protected"
tunnel_idle_timeout = "1h"
upstream_response_timeout = "5m"

  [[site.route]]
  path = "/api/v1/health"
  access = "public"

  [[site.route]]
  path = "/admin/"
  access = "deny"
  tunnel_idle_timeout = "150s"
  upstream_response_timeout = "12h"

[[site]]
host = "secure.example.net"
upstream = "HTTPS://Secure.Internal:8443/"
upstream_ca_file = "ca/internal.pem"
access = "public"
route = [{ path = "/" , access = "protected" }]
"#);
        assert_eq!(c.source, Path::new(FILE));
        let s = &c.server;
        assert_eq!(s.listen, "0.0.0.0:8443".parse::<SocketAddr>().unwrap());
        assert_eq!(s.tls_cert, Path::new("/etc/jumpgate/certs/gateway.pem"));
        assert_eq!(s.tls_key, Path::new("/abs/gateway.key"));
        assert_eq!(
            s.http_redirect_listen,
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(s.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
        let nets: Vec<String> = s.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(
            nets,
            ["10.0.0.0/8", "192.0.2.10/32", "2001:db8::/32", "::1/128"]
        );
        assert_eq!(s.shutdown_grace, Duration::from_secs(10));
        assert_eq!(
            s.limits,
            Limits {
                max_header_bytes: 65536,
                max_headers: 50,
                tls_handshake_timeout: Duration::from_secs(5),
                header_read_timeout: Duration::from_secs(20),
                upstream_connect_timeout: Duration::from_secs(3),
                upstream_response_timeout: Duration::from_secs(90),
                upstream_idle_timeout: Duration::from_secs(30),
                tunnel_idle_timeout: Duration::from_secs(600),
                idle_timeout: Duration::from_secs(45),
                sign_in_rate: 60,
            }
        );
        assert_eq!(
            c.log,
            LogConfig {
                format: LogFormat::Json,
                level: "info,jumpgate=debug".to_owned(),
                access: false
            }
        );
        assert_eq!(c.sites.len(), 2);
        let d = &c.sites[0];
        assert_eq!(d.host, "defguard.example.net");
        assert_eq!(d.upstream.origin.scheme_str(), Some("http"));
        assert_eq!(
            d.upstream.origin.authority().map(|a| a.as_str()),
            Some("127.0.0.1:8000")
        );
        assert_eq!(d.upstream.origin.path(), "/");
        assert!(!d.upstream.is_tls());
        assert_eq!(d.upstream.ca_file, None);
        assert_eq!(d.access, Access::Protected);
        assert_eq!(d.tunnel_idle_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(d.upstream_response_timeout, Some(Duration::from_secs(300)));
        assert_eq!(
            d.routes,
            [
                RouteConfig {
                    path: "/api/v1/health".to_owned(),
                    access: Some(Access::Public),
                    tunnel_idle_timeout: None,
                    upstream_response_timeout: None,
                    allow: None,
                    step_up: None,
                    step_up_exempt_methods: vec![],
                    step_up_groups: vec![],
                },
                RouteConfig {
                    path: "/admin".to_owned(),
                    access: Some(Access::Deny),
                    tunnel_idle_timeout: Some(Duration::from_secs(150)),
                    upstream_response_timeout: Some(Duration::from_secs(12 * 3600)),
                    allow: None,
                    step_up: None,
                    step_up_exempt_methods: vec![],
                    step_up_groups: vec![],
                },
            ]
        );
        let e = &c.sites[1];
        assert_eq!(
            e.upstream.origin.to_string(),
            "https://secure.internal:8443/"
        );
        assert!(e.upstream.is_tls());
        assert_eq!(
            e.upstream.ca_file.as_deref(),
            Some(Path::new("/etc/jumpgate/ca/internal.pem"))
        );
        assert_eq!(e.access, Access::Public);
        assert_eq!(e.routes.len(), 1);
        assert_eq!(e.routes[0].path, "/");
        assert_eq!(e.routes[0].access, Some(Access::Protected));
    }

    #[test]
    fn defaults() {
        let c = ok(MINIMAL);
        assert_eq!(c.server.http_redirect_listen, None);
        assert_eq!(c.server.admin_listen, None);
        assert!(c.server.trusted_proxies.is_empty());
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.server.limits, Limits::default());
        assert_eq!(c.log, LogConfig::default());
        let site = &c.sites[0];
        assert_eq!(site.access, Access::Protected);
        assert_eq!(site.tunnel_idle_timeout, None);
        assert_eq!(site.upstream_response_timeout, None);
        assert!(site.routes.is_empty());
        assert_eq!(c.server.tls_cert, Path::new("/etc/jumpgate/c.pem"));
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let c = match parse(MINIMAL, Path::new("gateway.toml")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.server.tls_cert, Path::new("c.pem"));
        let c = match parse(MINIMAL, Path::new("conf/gateway.toml")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.server.tls_key, Path::new("conf/c.key"));
    }

    #[test]
    fn reference_config_parses() {
        let text = include_str!("../../config/gateway.toml");
        let c = match parse(text, Path::new("config/gateway.toml")) {
            Ok(c) => c,
            Err(e) => panic!("config/gateway.toml:\n{e}"),
        };
        assert_eq!(c.server.tls_cert, Path::new("config/../certs/gateway.pem"));
        assert_eq!(c.server.tls_key, Path::new("config/../certs/gateway.key"));
        assert_eq!(c.server.limits, Limits::default());
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.log, LogConfig::default());
        let hosts: Vec<&str> = c.sites.iter().map(|s| s.host.as_str()).collect();
        assert_eq!(hosts, ["defguard.example.net", "enroll.example.net"]);
        assert_eq!(c.sites[0].access, Access::Protected);
        assert_eq!(c.sites[0].routes[0].path, "/api/v1/health");
        assert_eq!(c.sites[0].routes[0].access, Some(Access::Public));
        assert_eq!(c.sites[1].access, Access::Public);
        assert_eq!(c.sites[1].routes[0].path, "/api/v1/client-mfa/remote");
        assert_eq!(
            c.sites[1].routes[0].tunnel_idle_timeout,
            Some(Duration::from_secs(150))
        );
    }

    #[test]
    fn reference_config_documents_every_key() {
        // Every key the parser reads must appear in the reference config's text, so the
        // reference stays complete as keys are added.
        let text = include_str!("../../config/gateway.toml");
        for key in [
            "listen",
            "tls_cert",
            "tls_key",
            "http_redirect_listen",
            "admin_listen",
            "trusted_proxies",
            "shutdown_grace",
            "[server.limits]",
            "max_header_bytes",
            "max_headers",
            "tls_handshake_timeout",
            "header_read_timeout",
            "upstream_connect_timeout",
            "upstream_response_timeout",
            "upstream_idle_timeout",
            "tunnel_idle_timeout",
            "[log]",
            "format",
            "level",
            "access",
            "[[site]]",
            "host",
            "upstream",
            "upstream_ca_file",
            "public_port",
            "state_dir",
            "sign_in_rate",
            "[[api_token]]",
            "audience",
            "jwks_uri",
            "api_tokens",
            "[audit]",
            "output",
            "verify_listen",
            "verify_clients",
            "verify_uri_header",
            "[oidc]",
            "issuer",
            "client_id",
            "client_secret_file",
            "client_secret_env",
            "scopes",
            "callback_path",
            "client_auth",
            "clock_skew",
            "ca_file",
            "groups_claim",
            "idp_logout",
            "post_logout_redirect_uri",
            "[session]",
            "store",
            "key_file",
            "lifetime",
            "idle_timeout",
            "login_timeout",
            "max_sessions",
            "max_pending_logins",
            "[identity]",
            "signing_key_file",
            "assertion_ttl",
            "[site.headers]",
            "[directory]",
            "provider",
            "api_url",
            "api_key_file",
            "api_key_env",
            "org_id",
            "sync_interval",
            "max_staleness",
            "cache_file",
            "application_id",
            "request_interval",
            "request_timeout",
            "max_retries",
            "retry_backoff",
            "allow_groups",
            "allow_users",
            "[oidc.step_up]",
            "redis_url",
            "redis_sentinels",
            "redis_sentinel_master",
            "redis_sentinel_password_file",
            "redis_sentinel_password_env",
            "redis_database",
            "redis_password_file",
            "redis_password_env",
            "key_prefix",
            "local_cache_ttl",
            "redis_grace",
            "acr_values",
            "require_amr",
            "step_up",
            "step_up_exempt_methods",
            "step_up_groups",
            "step_up_on_navigation",
            "step_up_time",
            "[[site.route]]",
            "path",
        ] {
            assert!(
                text.contains(key),
                "config/gateway.toml does not mention {key}"
            );
        }
    }

    #[test]
    fn toml_syntax_error_has_its_line() {
        let (line, key, msg) = one("[server]\nlisten = \"0.0.0.0:8443\nx = 1\n");
        assert_eq!(line, Some(2));
        assert_eq!(key, "toml");
        assert!(msg.starts_with("invalid TOML"), "{msg}");
    }

    #[test]
    fn duplicate_toml_key_is_a_syntax_error() {
        let (line, key, _) = one(&server_with("listen = \"0.0.0.0:1\""));
        assert_eq!((line, key.as_str()), (Some(5), "toml"));
    }

    #[test]
    fn unknown_keys_everywhere_with_hints() {
        let text = r#"lisen = 1
[server]
listen = "0.0.0.0:8443"
tls_cert = "c.pem"
tls_key = "c.key"
adminlisten = "127.0.0.1:9090"
[server.limits]
max_header = 1
[log]
colour = true
[[site]]
host = "a.example"
upstrem = "http://x"
upstream = "http://x"
  [[site.route]]
  path = "/a"
  acess = "public"
[sever]
"#;
        let p = problems(text);
        let got: Vec<(Option<usize>, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(1), "lisen"),
                (Some(6), "server.adminlisten"),
                (Some(8), "server.limits.max_header"),
                (Some(10), "log.colour"),
                (Some(13), "site[0].upstrem"),
                (Some(17), "site[0].route[0].acess"),
                (Some(18), "sever"),
            ],
            "{p:#?}"
        );
        assert!(
            p[1].message.contains("did you mean \"admin_listen\"?"),
            "{}",
            p[1].message
        );
        assert!(
            p[2].message.contains("did you mean \"max_headers\"?"),
            "{}",
            p[2].message
        );
        assert!(
            p[3].message
                .contains("known keys here: format, level, access"),
            "{}",
            p[3].message
        );
        assert!(
            p[4].message.contains("did you mean \"upstream\"?"),
            "{}",
            p[4].message
        );
        assert!(
            p[5].message.contains("did you mean \"access\"?"),
            "{}",
            p[5].message
        );
        assert!(
            p[6].message.contains("did you mean \"server\"?"),
            "{}",
            p[6].message
        );
        assert!(
            p[0].message.contains("at the top level"),
            "{}",
            p[0].message
        );
    }

    #[test]
    fn many_problems_at_once_in_file_order() {
        let text = r#"[server]
listen = 8443
tls_cert = "c.pem"
tls_key = "c.key"
shutdown_grace = 30

[[site]]
host = "app.example.net"
upstream = "ftp://127.0.0.1"
access = "maybe"

  [[site.route]]
  path = "api"
"#;
        let p = problems(text);
        let got: Vec<(Option<usize>, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(2), "server.listen"),
                (Some(5), "server.shutdown_grace"),
                (Some(9), "site[0].upstream"),
                (Some(10), "site[0].access"),
                (Some(13), "site[0].route[0].path"),
            ]
        );
        assert_eq!(
            p[0].message,
            "expected a string \"IP:PORT\" such as \"0.0.0.0:8443\", found integer 8443; write \"0.0.0.0:8443\""
        );
        assert!(p[1].message.contains("write \"30s\""), "{}", p[1].message);
        assert!(
            p[2].message.contains("only http:// and https://"),
            "{}",
            p[2].message
        );
        assert!(
            p[3].message.contains("\"maybe\" is not an access rule"),
            "{}",
            p[3].message
        );
        assert!(
            p[4].message.contains("does not start with \"/\""),
            "{}",
            p[4].message
        );
        assert_eq!(
            p[0].to_string(),
            format!("{FILE}:2: server.listen: {}", p[0].message),
            "the display form is FILE:LINE: key: message"
        );
    }

    #[test]
    fn listen_not_an_address() {
        let text = MINIMAL.replace("\"0.0.0.0:8443\"", "\"8443\"");
        let (line, key, msg) = one(&text);
        assert_eq!((line, key.as_str()), (Some(2), "server.listen"));
        assert!(
            msg.starts_with(
                "\"8443\" is not a socket address; expected \"IP:PORT\" such as \"0.0.0.0:8443\""
            ),
            "{msg}"
        );
        let (_, _, msg) = one(&MINIMAL.replace("\"0.0.0.0:8443\"", "\"localhost:8443\""));
        assert!(msg.contains("not a host name"), "{msg}");
    }

    #[test]
    fn missing_required_keys_and_tables() {
        let (line, key, msg) = one(&MINIMAL.replace("tls_cert = \"c.pem\"\n", ""));
        assert_eq!((line, key.as_str()), (Some(1), "server.tls_cert"));
        assert!(msg.contains("missing required key in [server]"), "{msg}");

        let p = problems("[log]\nlevel = \"info\"\n");
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["server", "site"]);
        assert!(p.iter().all(|p| p.line.is_none()));
        assert_eq!(
            p[0].to_string(),
            format!("{FILE}: server: {}", p[0].message)
        );

        let (line, key, _) = one(&MINIMAL.replace("host = \"app.example.net\"\n", ""));
        assert_eq!((line, key.as_str()), (Some(6), "site[0].host"));
    }

    #[test]
    fn wrong_types() {
        let (line, key, msg) = one(&server_with("trusted_proxies = \"10.0.0.0/8\""));
        assert_eq!((line, key.as_str()), (Some(5), "server.trusted_proxies"));
        assert!(
            msg.contains("expected an array of strings")
                && msg.contains("found string \"10.0.0.0/8\""),
            "{msg}"
        );

        let (line, key, msg) = one(&format!(
            "server = 1\n{}",
            &MINIMAL[MINIMAL.find("[[site]]").unwrap_or(0)..]
        ));
        assert_eq!((line, key.as_str()), (Some(1), "server"));
        assert!(
            msg.contains("expected a [server] table, found integer 1"),
            "{msg}"
        );

        let (line, key, msg) = one(&server_with("[log]\naccess = \"yes\""));
        assert_eq!((line, key.as_str()), (Some(6), "log.access"));
        assert!(msg.contains("expected true or false"), "{msg}");

        let (_, key, msg) = one(&site_with("host2 = 1\n")
            .replace("host2 = 1\n", "")
            .replace("host = \"app.example.net\"", "host = [\"a\"]"));
        assert_eq!(key, "site[0].host");
        assert!(msg.contains("found array"), "{msg}");
    }

    #[test]
    fn durations() {
        let (line, key, msg) = one(&server_with("shutdown_grace = \"soon\""));
        assert_eq!((line, key.as_str()), (Some(5), "server.shutdown_grace"));
        assert!(msg.starts_with("\"soon\" is not a duration"), "{msg}");
        assert!(
            msg.contains("expected a duration string such as \"30s\""),
            "{msg}"
        );

        let (line, key, msg) = one(&server_with(
            "[server.limits]\ntunnel_idle_timeout = \"0s\"",
        ));
        assert_eq!(
            (line, key.as_str()),
            (Some(6), "server.limits.tunnel_idle_timeout")
        );
        assert!(msg.contains("greater than zero"), "{msg}");

        let c = ok(&server_with("shutdown_grace = \"0s\""));
        assert_eq!(c.server.shutdown_grace, Duration::ZERO);

        let (line, key, _) = one(&site_with(
            "  [[site.route]]\n  path = \"/x\"\n  tunnel_idle_timeout = 150",
        ));
        assert_eq!(
            (line, key.as_str()),
            (Some(11), "site[0].route[0].tunnel_idle_timeout")
        );
    }

    #[test]
    fn limits_ranges() {
        let p = problems(&server_with(
            "[server.limits]\nmax_header_bytes = 100\nmax_headers = 5000",
        ));
        let got: Vec<(Option<usize>, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(6), "server.limits.max_header_bytes"),
                (Some(7), "server.limits.max_headers")
            ]
        );
        assert!(
            p[0].message
                .contains("expected an integer from 1024 to 1048576"),
            "{}",
            p[0].message
        );
        assert!(
            p[1].message.contains("expected an integer from 8 to 1000"),
            "{}",
            p[1].message
        );
    }

    #[test]
    fn listener_clashes() {
        let (line, key, msg) = one(&server_with("admin_listen = \"0.0.0.0:8443\""));
        assert_eq!((line, key.as_str()), (Some(5), "server.admin_listen"));
        assert!(
            msg.contains("overlaps server.listen 0.0.0.0:8443 (line 2)"),
            "{msg}"
        );

        let (line, key, _) = one(&server_with("http_redirect_listen = \"127.0.0.1:8443\""));
        assert_eq!(
            (line, key.as_str()),
            (Some(5), "server.http_redirect_listen")
        );

        let (_, key, _) = one(&server_with(
            "http_redirect_listen = \"0.0.0.0:8080\"\nadmin_listen = \"0.0.0.0:8080\"",
        ));
        assert_eq!(key, "server.admin_listen");

        ok(&server_with("admin_listen = \"127.0.0.1:8443\"\n")
            .replace("0.0.0.0:8443", "192.0.2.1:8443"));
        let c = ok(&MINIMAL.replace("0.0.0.0:8443", "127.0.0.1:0").replace(
            "tls_key = \"c.key\"\n",
            "tls_key = \"c.key\"\nadmin_listen = \"127.0.0.1:0\"\n",
        ));
        assert_eq!(c.server.admin_listen.map(|a| a.port()), Some(0));
    }

    #[test]
    fn trusted_proxies_each_element_on_its_line() {
        let text = server_with("trusted_proxies = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n  \"10.1.2.3/8\",\n  7,\n]");
        let p = problems(&text);
        let got: Vec<(Option<usize>, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(7), "server.trusted_proxies[1]"),
                (Some(8), "server.trusted_proxies[2]"),
                (Some(9), "server.trusted_proxies[3]"),
            ]
        );
        assert!(
            p[0].message.contains("is not a CIDR block or IP address"),
            "{}",
            p[0].message
        );
        assert!(
            p[1].message.contains("did you mean \"10.0.0.0/8\"?"),
            "{}",
            p[1].message
        );
        assert!(p[2].message.contains("found integer 7"), "{}", p[2].message);
    }

    #[test]
    fn log_settings() {
        let (line, key, msg) = one(&site_with("[log]\nformat = \"xml\""));
        assert_eq!((line, key.as_str()), (Some(10), "log.format"));
        assert!(msg.contains("expected \"text\" or \"json\""), "{msg}");
        let (_, key, msg) = one(&site_with("[log]\nlevel = \"verbose\""));
        assert_eq!(key, "log.level");
        assert!(msg.contains("is not a log level"), "{msg}");
        let (_, key, _) = one(&site_with("[log]\nlevel = \"jumpgate=loud\""));
        assert_eq!(key, "log.level");
        ok(&site_with("[log]\nlevel = \"warn,jumpgate::proxy=trace\""));
        ok(&site_with("[log]\nlevel = \"DEBUG\""));
    }

    #[test]
    fn hosts() {
        let host = |h: &str| MINIMAL.replace("app.example.net", h);
        for bad in [
            "",
            "*.example.net",
            "app.example.net:8443",
            "https://app.example.net",
            "a b",
            "a..b",
            "::1",
        ] {
            let (line, key, msg) = one(&host(bad));
            assert_eq!(
                (line, key.as_str()),
                (Some(7), "site[0].host"),
                "{bad}: {msg}"
            );
            assert!(msg.contains("expected a bare host name"), "{bad}: {msg}");
        }
        assert_eq!(
            ok(&host("App.Example.Net.")).sites[0].host,
            "app.example.net"
        );
        assert_eq!(ok(&host("[::1]")).sites[0].host, "[::1]");
        assert_eq!(ok(&host("192.0.2.1")).sites[0].host, "192.0.2.1");
    }

    #[test]
    fn duplicate_hosts_name_both() {
        let text = site_with(
            "\n[[site]]\nhost = \"APP.example.net.\"\nupstream = \"http://127.0.0.1:9000\"",
        );
        let (line, key, msg) = one(&text);
        assert_eq!((line, key.as_str()), (Some(11), "site[1].host"));
        assert!(
            msg.contains("duplicates site[0].host \"app.example.net\" (line 7)"),
            "{msg}"
        );
    }

    #[test]
    fn upstreams() {
        let up = |u: &str| MINIMAL.replace("http://127.0.0.1:8000", u);
        let cases = [
            ("http://127.0.0.1:8000/app", "has a path \"/app\""),
            ("ftp://127.0.0.1", "only http:// and https://"),
            ("127.0.0.1:8000", "has no scheme"),
            ("http://127.0.0.1:8000/?a=b", "has a query"),
            ("http://user:pw@127.0.0.1:8000", "user info"),
            ("http://", "is not a URL"),
            ("/relative", "has no scheme"),
            ("http://127.0.0.1:8000#frag", ""),
        ];
        for (bad, why) in cases {
            let (line, key, msg) = one(&up(bad));
            assert_eq!(
                (line, key.as_str()),
                (Some(8), "site[0].upstream"),
                "{bad}: {msg}"
            );
            assert!(msg.contains(why), "{bad}: {msg}");
            assert!(msg.contains("expected an origin such as"), "{bad}: {msg}");
        }
        let c = ok(&up("http://Backend.Internal"));
        assert_eq!(
            c.sites[0].upstream.origin.to_string(),
            "http://backend.internal/"
        );
        let c = ok(&up("https://[::1]:8443/"));
        assert_eq!(
            c.sites[0].upstream.origin.to_string(),
            "https://[::1]:8443/"
        );
    }

    #[test]
    fn ca_file_needs_https() {
        let (line, key, msg) = one(&site_with("upstream_ca_file = \"ca.pem\""));
        assert_eq!((line, key.as_str()), (Some(9), "site[0].upstream_ca_file"));
        assert!(
            msg.contains("only applies to an https:// upstream"),
            "{msg}"
        );
    }

    #[test]
    fn route_paths() {
        let route = |p: &str| site_with(&format!("  [[site.route]]\n  path = \"{p}\""));
        let cases = [
            ("api", "does not start with \"/\""),
            ("/a/../b", "write \"/b\""),
            ("/a//b", "write \"/a/b\""),
            ("/a/./b", "write \"/a/b\""),
            ("/%61pi", "write \"/api\""),
            ("/a%2fb", "is not a valid path"),
            ("/a?b=c", "query or fragment"),
            ("/a b", "is not a valid path"),
            ("", "does not start with \"/\""),
        ];
        for (bad, why) in cases {
            let (line, key, msg) = one(&route(bad));
            assert_eq!(
                (line, key.as_str()),
                (Some(10), "site[0].route[0].path"),
                "{bad}: {msg}"
            );
            assert!(msg.contains(why), "{bad}: {msg}");
        }
        assert_eq!(ok(&route("/api/")).sites[0].routes[0].path, "/api");
        assert_eq!(ok(&route("/")).sites[0].routes[0].path, "/");
        assert_eq!(ok(&route("/API/v1")).sites[0].routes[0].path, "/API/v1");
    }

    #[test]
    fn duplicate_route_paths() {
        let text = site_with("  [[site.route]]\n  path = \"/API\"\n  [[site.route]]\n  path = \"/x\"\n  [[site.route]]\n  path = \"/api/\"");
        let (line, key, msg) = one(&text);
        assert_eq!((line, key.as_str()), (Some(14), "site[0].route[2].path"));
        assert!(
            msg.contains("duplicates site[0].route[0].path \"/API\" (line 10)"),
            "{msg}"
        );
        // The same path in different sites is fine.
        ok(&site_with(
            "  [[site.route]]\n  path = \"/a\"\n[[site]]\nhost = \"b.example\"\nupstream = \"http://b\"\n  [[site.route]]\n  path = \"/a\"",
        ));
    }

    #[test]
    fn access_values() {
        let (line, key, msg) = one(&site_with("access = \"maybe\""));
        assert_eq!((line, key.as_str()), (Some(9), "site[0].access"));
        assert_eq!(msg, "\"maybe\" is not an access rule; expected one of \"protected\", \"public\" or \"deny\"");
    }

    #[test]
    fn no_sites() {
        let text = &MINIMAL[..MINIMAL.find("[[site]]").unwrap_or(0)];
        let (line, key, msg) = one(text);
        assert_eq!((line, key.as_str()), (None, "site"));
        assert!(msg.contains("at least one [[site]]"), "{msg}");
        let (line, key, _) = one(&format!("site = []\n{text}"));
        assert_eq!((line, key.as_str()), (Some(1), "site"));
        let (line, key, msg) = one(&format!("{text}[site]\nhost = \"a\"\n"));
        assert_eq!((line, key.as_str()), (Some(6), "site"));
        assert!(
            msg.contains("expected [[site]] tables, found table"),
            "{msg}"
        );
    }

    #[test]
    fn edit_distance_and_hints() {
        assert_eq!(edit_distance("upstrem", "upstream"), 1);
        assert_eq!(edit_distance("acess", "access"), 1);
        assert_eq!(edit_distance("lsiten", "listen"), 1);
        assert_eq!(closest("Listen", &["listen", "tls_key"]), Some("listen"));
        assert_eq!(
            closest("tls-cert", &["listen", "tls_cert"]),
            Some("tls_cert")
        );
        assert_eq!(closest("colour", &["format", "level", "access"]), None);
    }

    #[test]
    fn check_files_reports_missing_files_with_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.toml");
        let text = site_with("upstream_ca_file = \"ca.pem\"")
            .replace("http://127.0.0.1:8000", "https://x");
        std::fs::write(&file, &text).unwrap();
        std::fs::write(dir.path().join("c.pem"), "x").unwrap();
        std::fs::create_dir(dir.path().join("c.key")).unwrap();
        let c = match parse(&text, &file) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let p = check_files(&c);
        let got: Vec<(Option<usize>, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(4), "server.tls_key"),
                (Some(9), "site[0].upstream_ca_file")
            ]
        );
        assert!(
            p[0].message.contains("is not a regular file"),
            "{}",
            p[0].message
        );
        assert!(p[1].message.contains("no such file"), "{}", p[1].message);
        assert_eq!(p[1].file, file);

        std::fs::remove_dir(dir.path().join("c.key")).unwrap();
        std::fs::write(dir.path().join("c.key"), "x").unwrap();
        std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
        assert_eq!(check_files(&c), []);
    }
}
