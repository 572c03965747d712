//! A browser stand-in: keeps cookies the way a browser would (Secure, host-only, Max-Age),
//! never follows redirects by itself, and can walk a sign-in through the fake JumpCloud.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use super::{collect, plain_request, Client, Gateway, Reply};

/// A cookie jar for one gateway host plus a TLS client.
#[derive(Clone)]
pub struct Browser {
    pub client: Client,
    pub host: String,
    /// Cookie name → (value, attributes as sent).
    pub cookies: BTreeMap<String, (String, String)>,
    /// Extra headers on every gateway request.
    pub headers: Vec<(String, String)>,
}

impl Browser {
    pub fn new(client: Client, host: &str) -> Browser {
        Browser {
            client,
            host: host.to_owned(),
            cookies: BTreeMap::new(),
            headers: vec![
                ("accept".into(), "text/html,application/xhtml+xml".into()),
                ("sec-fetch-mode".into(), "navigate".into()),
                ("sec-fetch-site".into(), "none".into()),
            ],
        }
    }

    pub fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(k, (v, _))| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Applies every `Set-Cookie` of a gateway reply.
    pub fn store(&mut self, reply: &Reply) {
        for v in reply.headers.get_all("set-cookie") {
            let line = v.to_str().unwrap().to_owned();
            let (pair, attrs) = line.split_once(';').unwrap_or((&line, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let attrs_lower = attrs.to_ascii_lowercase();
            if attrs_lower.contains("max-age=0") {
                self.cookies.remove(name.trim());
            } else {
                self.cookies.insert(
                    name.trim().to_owned(),
                    (value.trim().to_owned(), attrs.trim().to_owned()),
                );
            }
        }
    }

    /// A request to the gateway with this browser's cookies; cookies in the reply are kept.
    pub async fn request(
        &mut self,
        method: &str,
        path_and_query: &str,
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", &self.host);
        for (k, v) in &self.headers {
            if !extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(k)) {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        if let Some(c) = self.cookie_header() {
            req = req.header("cookie", c);
        }
        let reply = self
            .client
            .send(&self.host, req.body(Full::new(Bytes::new())).unwrap())
            .await;
        self.store(&reply);
        reply
    }

    pub async fn get(&mut self, path_and_query: &str) -> Reply {
        self.request("GET", path_and_query, &[]).await
    }

    /// Follows a `Location` that points at this gateway (absolute or relative).
    pub async fn follow(&mut self, reply: &Reply) -> Reply {
        let location = location(reply);
        let path = gateway_path(&location);
        self.get(&path).await
    }

    /// Starts at `path`, goes through the provider (which signs in whoever its next login is)
    /// and returns the reply of the callback (normally a redirect back to `path`).
    pub async fn sign_in_callback(&mut self, path: &str) -> Reply {
        let first = self.get(path).await;
        assert_eq!(
            first.status,
            302,
            "expected a redirect to the provider: {}",
            first.text()
        );
        let idp = idp_get(&location(&first)).await;
        assert_eq!(
            idp.status,
            302,
            "provider did not redirect back: {}",
            idp.text()
        );
        self.follow(&idp).await
    }

    /// Signs in from `path` and returns the page finally served at `path`.
    pub async fn sign_in(&mut self, path: &str) -> Reply {
        let callback = self.sign_in_callback(path).await;
        assert_eq!(
            callback.status,
            302,
            "callback failed: {} {}",
            callback.status,
            callback.text()
        );
        assert_eq!(location(&callback), path, "returned elsewhere");
        self.follow(&callback).await
    }
}

/// The `Location` header of a reply.
pub fn location(reply: &Reply) -> String {
    reply
        .headers
        .get("location")
        .unwrap_or_else(|| panic!("no Location in {} {}", reply.status, reply.text()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The path and query of a gateway URL (`https://host:port/x?y` or `/x?y`).
pub fn gateway_path(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        rest.find('/')
            .map(|i| rest[i..].to_owned())
            .unwrap_or_else(|| "/".to_owned())
    } else {
        url.to_owned()
    }
}

/// GET on the fake provider's plain-HTTP URL.
pub async fn idp_get(url: &str) -> Reply {
    let rest = url.strip_prefix("http://").expect("provider URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = authority.parse().unwrap();
    collect(plain_request(addr, if path.is_empty() { "/" } else { path }, authority).await).await
}

impl Browser {
    /// The value of cookie `name`, if this browser holds it.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.get(name).map(|(v, _)| v.clone())
    }

    /// Sets or replaces cookie `name` by hand, as a tampering client would.
    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.insert(
            name.to_owned(),
            (value.to_owned(), "Path=/; Secure; HttpOnly".to_owned()),
        );
    }

    /// Starts at `path` and lets the provider answer; returns the provider's reply (normally
    /// the redirect back to the callback), without following it.
    pub async fn authorize(&mut self, path: &str) -> Reply {
        let first = self.get(path).await;
        assert_eq!(
            first.status,
            302,
            "expected a redirect to the provider: {}",
            first.text()
        );
        let idp = idp_get(&location(&first)).await;
        assert_eq!(
            idp.status,
            302,
            "provider did not redirect back: {}",
            idp.text()
        );
        idp
    }
}

/// Every `Set-Cookie` line of a reply.
pub fn set_cookies(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Query parameter `name` of a URL or path, decoded.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    super::jumpcloud::parse_query(query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

impl Browser {
    /// Signs out as the gateway's own pages do: a same-origin `POST /.jumpgate/logout`.
    pub async fn logout(&mut self) -> Reply {
        self.request(
            "POST",
            "/.jumpgate/logout",
            &[("sec-fetch-site", "same-origin")],
        )
        .await
    }
}

/// Whether a reply sets a non-empty session cookie.
pub fn sets_session(reply: &Reply) -> bool {
    set_cookies(reply).iter().any(|c| {
        c.strip_prefix(&format!("{}=", super::SESSION))
            .is_some_and(|rest| !rest.starts_with(';') && !rest.is_empty())
    })
}

/// A browser on gateway `gw` carrying `from`'s cookies: the same browser behind a load
/// balancer that picked another instance.
pub fn same_browser_on(gw: &Gateway, from: &Browser) -> Browser {
    let mut b = Browser::new(gw.client(), &from.host);
    b.cookies = from.cookies.clone();
    b
}
