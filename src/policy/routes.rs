//! The compiled route table: host → site, then longest path prefix on segment boundaries.
//!
//! One path can mean several resources: an upstream may ignore ASCII case and `;` parameters
//! in segments, or honour them. So a path is matched in each reading (case folded or not,
//! parameters removed or not), and the caller applies the strictest route any reading
//! yields: `/Admin;x` cannot slip past a rule written for `/admin` to an upstream that
//! ignores case and parameters, and `/PUBLIC/x` is not public because `/public` is, when a
//! case-sensitive upstream serves something else there. The path forwarded upstream is the
//! canonical path itself.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Access, Config, SiteConfig};

// FNV rather than the standard SipHash: the keys are the configuration's hosts and prefixes,
// never a client's, so what a client sends cannot crowd the tables; a lookup with any key
// probes no more slots than the table's own layout gives. SipHash of the host and of each
// prefix tried cost every request some 500 instructions (BENCHMARKS.md).
use fnv::FnvHashMap as HashMap;

/// One route after compilation.
#[derive(Debug, Clone)]
pub struct Route {
    /// The configured prefix, or `*` for the site's default; used in logs and metrics.
    pub label: Arc<str>,
    /// Its place among its site's routes (0: the site's default, then as configured), by
    /// which state kept outside the policy (request counters) is found.
    pub slot: usize,
    /// What the route lets through.
    pub access: Access,
    /// Idle limit for upgraded connections.
    pub tunnel_idle_timeout: Duration,
    /// Limit from request sent to response headers received.
    pub upstream_response_timeout: Duration,
    /// Who may pass on a protected route.
    pub allow: Arc<Allowed>,
    /// A fresh multi-factor sign-in this route requires, if any.
    pub step_up: Option<Arc<StepUpRule>>,
}

/// A route's step-up requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpRule {
    /// The longest accepted age of the last step-up, in seconds.
    pub max_age: i64,
    /// Methods that do not need it.
    pub exempt: Vec<http::Method>,
    /// Group references (indices into [`Routes::group_refs`]) whose members are asked;
    /// empty: everyone the route admits.
    pub groups: Vec<usize>,
}

impl StepUpRule {
    /// Whether a request with `method` needs the step-up. An upgrade (WebSocket handshake)
    /// always does: it is a GET that goes on to carry writes.
    pub fn applies_to(&self, method: &http::Method, upgrade: bool) -> bool {
        upgrade || !self.exempt.contains(method)
    }
}

/// A compiled allow list: group references as indices into [`Routes::group_refs`], users
/// lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Indices of the allowed group references.
    pub groups: Vec<usize>,
    /// Allowed user ids or emails, lower-cased.
    pub users: Vec<String>,
}

impl Allowed {
    /// Whether any active user may pass.
    pub fn is_anyone(&self) -> bool {
        self.groups.is_empty() && self.users.is_empty()
    }
}

/// One site after compilation.
#[derive(Debug)]
pub struct Site {
    /// The normalised host.
    pub host: Arc<str>,
    /// Index of this site's upstream in the gateway's upstream list.
    pub upstream: usize,
    /// Routes by match key (lower-cased prefix without trailing `/`).
    by_prefix: HashMap<String, Route>,
    /// The same routes' match keys by their prefix as written (without trailing `/`).
    by_exact: HashMap<String, String>,
    /// Whether any prefix as written differs from its match key.
    exact_differs: bool,
    /// The lengths of the keys of both maps, as [`KeyLengths`].
    key_lengths: KeyLengths,
    /// Match keys of the routes with a step-up.
    step_up_keys: Vec<String>,
    /// Whether page loads go through the step-up first (`step_up_on_navigation`).
    pub step_up_on_navigation: bool,
    /// Applies where no route matches.
    pub default: Route,
    /// Whether bearer API tokens are accepted on protected routes.
    pub api_tokens: bool,
}

/// All sites, by host.
#[derive(Debug, Default)]
pub struct Routes {
    sites: HashMap<String, Site>,
    group_refs: Vec<String>,
}

impl Routes {
    /// Compiles the configured sites; limits come from the server's defaults unless a site or
    /// route overrides them.
    pub fn compile(config: &Config) -> Routes {
        Self::compile_extending(config, &[])
    }

    /// Like [`Routes::compile`], keeping the group references of a previous configuration at
    /// their indices, so routes still in flight from it resolve groups correctly against a
    /// directory snapshot built for the new one.
    pub fn compile_extending(config: &Config, previous_refs: &[String]) -> Routes {
        let limits = &config.server.limits;
        let mut sites = HashMap::default();
        let mut group_refs = previous_refs.to_vec();
        for (index, site) in config.sites.iter().enumerate() {
            sites.insert(
                site.host.clone(),
                compile_site(
                    index,
                    site,
                    limits.tunnel_idle_timeout,
                    limits.upstream_response_timeout,
                    &mut group_refs,
                ),
            );
        }
        Routes { sites, group_refs }
    }

    /// Every distinct group reference in the configuration; [`Allowed::groups`] indexes it.
    pub fn group_refs(&self) -> &[String] {
        &self.group_refs
    }

    /// The site serving `host` (already canonical).
    pub fn site(&self, host: &str) -> Option<&Site> {
        self.sites.get(host)
    }

    /// Number of sites.
    pub fn len(&self) -> usize {
        self.sites.len()
    }

    /// Whether there are no sites.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }
}

fn compile_allow(allow: &crate::config::Allow, refs: &mut Vec<String>) -> Arc<Allowed> {
    let groups = allow
        .groups
        .iter()
        .map(|g| match refs.iter().position(|r| r == g) {
            Some(i) => i,
            None => {
                refs.push(g.clone());
                refs.len() - 1
            }
        })
        .collect();
    Arc::new(Allowed {
        groups,
        users: allow.users.iter().map(|u| u.to_ascii_lowercase()).collect(),
    })
}

fn compile_site(
    index: usize,
    site: &SiteConfig,
    tunnel_default: Duration,
    response_default: Duration,
    refs: &mut Vec<String>,
) -> Site {
    let tunnel = site.tunnel_idle_timeout.unwrap_or(tunnel_default);
    let response = site.upstream_response_timeout.unwrap_or(response_default);
    let site_allow = compile_allow(&site.allow, refs);
    let default = Route {
        label: Arc::from("*"),
        slot: 0,
        access: site.access,
        allow: site_allow.clone(),
        step_up: None,
        tunnel_idle_timeout: tunnel,
        upstream_response_timeout: response,
    };
    let mut by_prefix = HashMap::default();
    let mut by_exact = HashMap::default();
    let mut exact_differs = false;
    let mut key_lengths = KeyLengths::default();
    let mut step_up_keys = Vec::new();
    for (i, route) in site.routes.iter().enumerate() {
        let key = match_key(&route.path).into_owned();
        let key = key.trim_end_matches('/').to_owned();
        let exact = route.path.trim_end_matches('/').to_owned();
        exact_differs |= exact != key;
        key_lengths.add(key.len());
        key_lengths.add(exact.len());
        by_exact.insert(exact, key.clone());
        if route.step_up.is_some() {
            step_up_keys.push(key.clone());
        }
        by_prefix.insert(
            key,
            Route {
                label: Arc::from(route.path.as_str()),
                slot: i + 1,
                access: route.access.unwrap_or(site.access),
                tunnel_idle_timeout: route.tunnel_idle_timeout.unwrap_or(tunnel),
                upstream_response_timeout: route.upstream_response_timeout.unwrap_or(response),
                allow: match &route.allow {
                    Some(a) => compile_allow(a, refs),
                    None => site_allow.clone(),
                },
                step_up: route.step_up.map(|d| {
                    Arc::new(StepUpRule {
                        max_age: d.as_secs() as i64,
                        exempt: route.step_up_exempt_methods.clone(),
                        groups: compile_allow(
                            &crate::config::Allow {
                                groups: route.step_up_groups.clone(),
                                users: Vec::new(),
                            },
                            refs,
                        )
                        .groups
                        .clone(),
                    })
                }),
            },
        );
    }
    Site {
        host: Arc::from(site.host.as_str()),
        upstream: index,
        by_prefix,
        by_exact,
        exact_differs,
        key_lengths,
        step_up_keys,
        step_up_on_navigation: site.step_up_on_navigation,
        default,
        api_tokens: site.api_tokens,
    }
}

/// Which lengths a site's route keys have, so that a prefix no key is as long as is not looked
/// up: most prefixes of a request's path are not routes, and each lookup hashes the prefix.
/// Lengths up to 63 are kept exactly; any key longer than that makes every longer prefix a
/// candidate.
#[derive(Debug, Clone, Copy, Default)]
struct KeyLengths {
    short: u64,
    any_long: bool,
}

impl KeyLengths {
    fn add(&mut self, len: usize) {
        match len {
            0..64 => self.short |= 1 << len,
            _ => self.any_long = true,
        }
    }

    fn may_hold(self, len: usize) -> bool {
        match len {
            0..64 => self.short & (1 << len) != 0,
            _ => self.any_long,
        }
    }
}

/// The form a path is matched in: ASCII lower-case, `;parameters` removed from every segment.
pub fn match_key(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.bytes().any(|b| b == b';' || b.is_ascii_uppercase()) {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let name = seg.split(';').next().unwrap_or(seg);
        for c in name.chars() {
            out.push(c.to_ascii_lowercase());
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `path` with `;parameters` removed from every segment, case kept.
fn without_params(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains(';') {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(seg.split(';').next().unwrap_or(seg));
    }
    std::borrow::Cow::Owned(out)
}

/// The distinct routes a path yields across its readings; the first is the route of the
/// folded reading, which names the request in logs and metrics.
#[derive(Debug, Clone, Copy)]
pub struct Readings<'a> {
    routes: [&'a Route; 4],
    len: usize,
}

impl<'a> Readings<'a> {
    /// The folded reading's route.
    pub fn primary(&self) -> &'a Route {
        self.routes[0]
    }

    /// Every distinct route, the primary first.
    pub fn all(&self) -> &[&'a Route] {
        &self.routes[..self.len]
    }

    fn push(&mut self, route: &'a Route) {
        if !self.all().iter().any(|r| std::ptr::eq(*r, route)) {
            self.routes[self.len] = route;
            self.len += 1;
        }
    }
}

impl Site {
    /// The route for a canonical path in its folded reading (ASCII case folded, `;`
    /// parameters removed): the longest configured prefix that matches on a segment
    /// boundary, else the site default.
    pub fn find(&self, canonical_path: &str) -> &Route {
        self.walk(&match_key(canonical_path), |k| self.by_prefix.get(k))
    }

    /// The routes a canonical path yields in every reading an upstream might give it: case
    /// folded or kept, `;` parameters removed or kept. Usually one.
    pub fn readings(&self, canonical_path: &str) -> Readings<'_> {
        let primary = self.find(canonical_path);
        let mut readings = Readings {
            routes: [primary; 4],
            len: 1,
        };
        let plain = !canonical_path
            .bytes()
            .any(|b| b == b';' || b.is_ascii_uppercase());
        if self.by_prefix.is_empty() || (plain && !self.exact_differs) {
            return readings;
        }
        let folded_with_params = canonical_path.to_ascii_lowercase();
        readings.push(self.walk(&folded_with_params, |k| self.by_prefix.get(k)));
        let exact = |k: &str| self.by_exact.get(k).and_then(|key| self.by_prefix.get(key));
        readings.push(self.walk(canonical_path, exact));
        readings.push(self.walk(&without_params(canonical_path), exact));
        readings
    }

    /// The routes of this site that have a step-up.
    pub fn step_up_routes(&self) -> impl Iterator<Item = &Route> {
        self.step_up_keys
            .iter()
            .filter_map(|k| self.by_prefix.get(k))
    }

    /// The longest prefix of `key` on a segment boundary that `get` knows.
    fn walk<'s>(&'s self, key: &str, get: impl Fn(&str) -> Option<&'s Route>) -> &'s Route {
        if self.by_prefix.is_empty() {
            return &self.default;
        }
        let mut candidate: &str = key.trim_end_matches('/');
        loop {
            if self.key_lengths.may_hold(candidate.len()) {
                if let Some(route) = get(candidate) {
                    return route;
                }
            }
            // A byte search: `str::rfind` with a `char` went through a searcher that the
            // compiler sometimes leaves out of line, at some 130 instructions a request.
            match memchr::memrchr(b'/', candidate.as_bytes()) {
                Some(0) if candidate.len() > 1 => candidate = "",
                Some(i) if i > 0 => candidate = &candidate[..i],
                _ => return &self.default,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteConfig;

    fn site(routes: &[(&str, Access)]) -> Site {
        let cfg = SiteConfig {
            host: "h".into(),
            upstream: crate::config::Upstream {
                origin: "http://127.0.0.1:1".parse().unwrap(),
                ca_file: None,
            },
            access: Access::Protected,
            tunnel_idle_timeout: None,
            upstream_response_timeout: None,
            headers: Default::default(),
            allow: Default::default(),
            api_tokens: false,
            step_up_on_navigation: false,
            routes: routes
                .iter()
                .map(|(p, a)| RouteConfig {
                    path: (*p).into(),
                    access: Some(*a),
                    tunnel_idle_timeout: None,
                    upstream_response_timeout: None,
                    allow: None,
                    step_up: None,
                    step_up_exempt_methods: vec![],
                    step_up_groups: vec![],
                })
                .collect(),
        };
        compile_site(
            0,
            &cfg,
            Duration::from_secs(1),
            Duration::from_secs(1),
            &mut Vec::new(),
        )
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let s = site(&[
            ("/api/v1/health", Access::Public),
            ("/api", Access::Deny),
            ("/assets", Access::Public),
        ]);
        let cases = [
            ("/api/v1/health", "/api/v1/health"),
            ("/api/v1/health/", "/api/v1/health"),
            ("/api/v1/health/deep", "/api/v1/health"),
            ("/api/v1/healthz", "/api"),
            ("/api/v1/health;x", "/api/v1/health"),
            ("/API/V1/Health", "/api/v1/health"),
            ("/api", "/api"),
            ("/apix", "*"),
            ("/", "*"),
            ("/assets/app.js", "/assets"),
            ("/assetsx", "*"),
        ];
        for (path, want) in cases {
            assert_eq!(&*s.find(path).label, want, "{path}");
        }
    }

    /// Prefixes skipped because no key is as long are never routes: every path below finds
    /// what looking up each of its prefixes finds, with keys shorter than, at and beyond the
    /// 63 bytes whose lengths are kept exactly, and a route for the root.
    #[test]
    fn prefixes_skipped_by_length_are_never_routes() {
        let at_edge = format!("/{}", "e".repeat(62));
        let beyond = format!("/{}", "l".repeat(70));
        let under_beyond = format!("/{}/x", "o".repeat(63));
        let paths: Vec<(String, Access)> = vec![
            ("/".into(), Access::Public),
            ("/a".into(), Access::Deny),
            ("/a/bb".into(), Access::Public),
            (at_edge.clone(), Access::Deny),
            (beyond.clone(), Access::Deny),
            (under_beyond.clone(), Access::Public),
        ];
        let routes: Vec<(&str, Access)> = paths.iter().map(|(p, a)| (p.as_str(), *a)).collect();
        let s = site(&routes);
        let every_prefix = |key: &str| -> String {
            let mut c = key.trim_end_matches('/');
            loop {
                if let Some(r) = s.by_prefix.get(c) {
                    return r.label.to_string();
                }
                match c.rfind('/') {
                    Some(0) if c.len() > 1 => c = "",
                    Some(i) if i > 0 => c = &c[..i],
                    _ => return s.default.label.to_string(),
                }
            }
        };
        let mut asked = vec!["/".to_owned(), "/b".to_owned(), "/a/b".to_owned()];
        for (p, _) in &paths {
            for tail in ["", "/", "/x", "x", "/x/y"] {
                asked.push(format!("{p}{tail}"));
            }
        }
        for path in &asked {
            assert_eq!(*s.find(path).label, *every_prefix(path), "{path}");
        }
        assert_eq!(&*s.find(&format!("{beyond}/z")).label, beyond.as_str());
        assert_eq!(
            &*s.find(&format!("{under_beyond}/z")).label,
            under_beyond.as_str()
        );
        assert_eq!(&*s.find(&format!("{at_edge}/z")).label, at_edge.as_str());
    }

    /// Every reading's route, by label, the folded reading's first.
    fn labels(s: &Site, path: &str) -> Vec<String> {
        s.readings(path)
            .all()
            .iter()
            .map(|r| r.label.to_string())
            .collect()
    }

    #[test]
    fn every_reading_of_a_path_yields_its_route() {
        let s = site(&[
            ("/public", Access::Public),
            ("/admin", Access::Deny),
            ("/Reports", Access::Protected),
        ]);
        let cases: &[(&str, &[&str])] = &[
            // One reading when case and parameters cannot matter.
            ("/public/x", &["/public"]),
            ("/x", &["*"]),
            // A case-sensitive upstream serves another resource at /PUBLIC.
            ("/PUBLIC/x", &["/public", "*"]),
            ("/Public", &["/public", "*"]),
            // An upstream that keeps parameters serves /public;x/a as its own segment.
            ("/public;x/a", &["/public", "*"]),
            // Restrictive routes still catch every spelling.
            ("/ADMIN/x", &["/admin", "*"]),
            ("/admin;jsessionid=1", &["/admin", "*"]),
            // A prefix written with capitals is matched as written too.
            ("/Reports/q", &["/Reports"]),
            ("/reports/q", &["/Reports", "*"]),
            ("/REPORTS;x", &["/Reports", "*"]),
        ];
        for (path, want) in cases {
            assert_eq!(labels(&s, path), *want, "{path}");
        }
    }

    #[test]
    fn root_route() {
        let s = site(&[("/", Access::Public), ("/admin", Access::Deny)]);
        assert_eq!(&*s.find("/").label, "/");
        assert_eq!(&*s.find("/x/y").label, "/");
        assert_eq!(&*s.find("/admin/x").label, "/admin");
    }
}
