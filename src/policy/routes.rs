//! The compiled route table: host → site, then longest path prefix on segment boundaries.
//!
//! Matching is on the canonical path with `;` parameters removed from each segment and ASCII
//! case folded, so `/Admin;x` cannot slip past a rule written for `/admin` to an upstream that
//! ignores parameters or case. The path forwarded upstream is the canonical path itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Access, Config, SiteConfig};

/// One route after compilation.
#[derive(Debug, Clone)]
pub struct Route {
    /// The configured prefix, or `*` for the site's default; used in logs and metrics.
    pub label: Arc<str>,
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
    /// Methods that need it; empty means all.
    pub methods: Vec<http::Method>,
}

impl StepUpRule {
    /// Whether a request with `method` needs the step-up.
    pub fn applies_to(&self, method: &http::Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
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
        let mut sites = HashMap::new();
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
        access: site.access,
        allow: site_allow.clone(),
        step_up: None,
        tunnel_idle_timeout: tunnel,
        upstream_response_timeout: response,
    };
    let mut by_prefix = HashMap::new();
    for route in &site.routes {
        let key = match_key(&route.path).into_owned();
        let key = key.trim_end_matches('/').to_owned();
        by_prefix.insert(
            key,
            Route {
                label: Arc::from(route.path.as_str()),
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
                        methods: route.step_up_methods.clone(),
                    })
                }),
            },
        );
    }
    Site {
        host: Arc::from(site.host.as_str()),
        upstream: index,
        by_prefix,
        default,
        api_tokens: site.api_tokens,
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

impl Site {
    /// The route for a canonical path: the longest configured prefix that matches on a
    /// segment boundary, else the site default.
    pub fn find(&self, canonical_path: &str) -> &Route {
        if self.by_prefix.is_empty() {
            return &self.default;
        }
        let key = match_key(canonical_path);
        let mut candidate: &str = key.trim_end_matches('/');
        loop {
            if let Some(route) = self.by_prefix.get(candidate) {
                return route;
            }
            match candidate.rfind('/') {
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
            routes: routes
                .iter()
                .map(|(p, a)| RouteConfig {
                    path: (*p).into(),
                    access: Some(*a),
                    tunnel_idle_timeout: None,
                    upstream_response_timeout: None,
                    allow: None,
                    step_up: None,
                    step_up_methods: vec![],
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

    #[test]
    fn root_route() {
        let s = site(&[("/", Access::Public), ("/admin", Access::Deny)]);
        assert_eq!(&*s.find("/").label, "/");
        assert_eq!(&*s.find("/x/y").label, "/");
        assert_eq!(&*s.find("/admin/x").label, "/admin");
    }
}
