//! Reading `[[site]]` and its `[[site.route]]` tables.

use std::collections::HashMap;
use std::time::Duration;

use http::Uri;

use super::auth;
use super::raw::{kind, Key, Raw};
use super::reader::{get, need, Entry, Reader};
use super::schema::{RouteFile, SiteFile};
use crate::config::{Access, RouteConfig, SiteConfig, Upstream};

pub(super) fn read_sites(readers: Vec<Reader<'_, SiteFile>>) -> Option<Vec<SiteConfig>> {
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
fn host_as_written(r: &Reader<'_, SiteFile>) -> Option<(String, Option<usize>, String)> {
    let e = get!(r, host)?;
    let Raw::Str(raw) = &r.file.host.as_ref()?.raw else {
        return None;
    };
    Some((e.key, e.line, raw.clone()))
}

fn read_site(r: Reader<'_, SiteFile>) -> Option<SiteConfig> {
    let host = need!(r, host, "a host name such as \"app.example.net\"").and_then(|e| {
        e.str("a host name string such as \"app.example.net\"")
            .and_then(|s| check_host(&e, s))
    });
    let upstream =
        need!(r, upstream, "an origin such as \"http://127.0.0.1:8000\"").and_then(|e| {
            e.str("an origin string such as \"http://127.0.0.1:8000\"")
                .and_then(|s| check_upstream(&e, s))
        });
    // `Some(None)`: absent; `None`: present but unusable.
    let ca_file = match get!(r, upstream_ca_file) {
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
    let access = match get!(r, access) {
        Some(e) => e.access(),
        None => Some(Access::Protected),
    };
    let tunnel_idle_timeout = opt_duration(get!(r, tunnel_idle_timeout));
    let upstream_response_timeout = opt_duration(get!(r, upstream_response_timeout));
    let headers = match get!(r, headers) {
        Some(e) => e
            .table("a [site.headers] table")
            .and_then(auth::read_headers),
        None => Some(crate::config::IdentityHeaders::default()),
    };
    let allow = auth::read_allow(get!(r, allow_groups), get!(r, allow_users))
        .map(Option::unwrap_or_default);
    let api_tokens = match get!(r, api_tokens) {
        Some(e) => e.bool(),
        None => Some(false),
    };
    let step_up_on_navigation = match get!(r, step_up_on_navigation) {
        Some(e) => e.bool().map(|b| (b, e.line)),
        None => Some((false, None)),
    };
    let routes = match get!(r, route) {
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
fn opt_duration(e: Option<Entry<'_, Key<kind::Duration>>>) -> Option<Option<Duration>> {
    match e {
        Some(e) => e.duration(false).map(Some),
        None => Some(None),
    }
}

fn check_host(e: &Entry<'_, Key<kind::Str>>, raw: &str) -> Option<String> {
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

fn check_upstream(e: &Entry<'_, Key<kind::Str>>, raw: &str) -> Option<Uri> {
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

fn read_routes(readers: Vec<Reader<'_, RouteFile>>) -> Option<Vec<RouteConfig>> {
    let mut routes = Vec::new();
    let mut ok = true;
    // Lower-cased path → (key, line, as written) of the first route with it.
    let mut seen: HashMap<String, (String, Option<usize>, String)> = HashMap::new();
    for r in readers {
        let path = need!(r, path, "an absolute path prefix such as \"/api\"").and_then(|e| {
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
        let access = match get!(r, access) {
            Some(e) => e.access().map(Some),
            None => Some(None),
        };
        let tunnel_idle_timeout = opt_duration(get!(r, tunnel_idle_timeout));
        let upstream_response_timeout = opt_duration(get!(r, upstream_response_timeout));
        let allow = auth::read_allow(get!(r, allow_groups), get!(r, allow_users));
        let step_up = auth::read_route_step_up(&r);
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
fn check_route_path(e: &Entry<'_, Key<kind::Str>>, raw: &str) -> Option<String> {
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
    use super::super::tests::*;

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
        assert_eq!(
            msg,
            "\"maybe\" is not an access rule; expected one of \"protected\", \"public\" or \"deny\""
        );
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
}
