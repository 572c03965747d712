//! Header hygiene between client and upstream: hop-by-hop removal, `X-Forwarded-*`, and the
//! identity namespace that only the gateway may write.
//!
//! Order matters and is fixed by the pipeline: inbound identity headers are stripped before
//! anything reads the request, hop-by-hop headers (including those a client nominates in
//! `Connection`) are removed next, and the gateway's own headers are set last, so no client
//! header can survive under a name the upstream trusts or remove one the gateway set.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// The prefix of every identity header the gateway sets; clients may never send one.
pub const IDENTITY_PREFIX: &str = "x-jumpgate-";

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers that describe one hop and never cross the gateway (RFC 9110 §7.6.1, plus the
/// legacy `Keep-Alive` and `Proxy-Connection`), and `Upgrade`, last.
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];
const CONNECTION_BIT: u32 = 1;
const UPGRADE_BIT: u32 = 1 << 8;

static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_REWRITE_URL: HeaderName = HeaderName::from_static("x-rewrite-url");
static X_HTTP_METHOD_OVERRIDE: HeaderName = HeaderName::from_static("x-http-method-override");
static X_HTTP_METHOD: HeaderName = HeaderName::from_static("x-http-method");
static X_METHOD_OVERRIDE: HeaderName = HeaderName::from_static("x-method-override");
static TRUE_CLIENT_IP: HeaderName = HeaderName::from_static("true-client-ip");
static CF_CONNECTING_IP: HeaderName = HeaderName::from_static("cf-connecting-ip");
static X_CLIENT_IP: HeaderName = HeaderName::from_static("x-client-ip");
static X_CLUSTER_CLIENT_IP: HeaderName = HeaderName::from_static("x-cluster-client-ip");
static FASTLY_CLIENT_IP: HeaderName = HeaderName::from_static("fastly-client-ip");
static X_FORWARDED_SERVER: HeaderName = HeaderName::from_static("x-forwarded-server");
static X_HOST: HeaderName = HeaderName::from_static("x-host");
static X_ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-original-host");

/// Headers through which common frameworks let a request choose the client address, host,
/// path or method the application sees, in place of what the gateway decided on. None of
/// them reaches an upstream from a client; the gateway sets its own `X-Forwarded-*`.
static FORWARDING: [&HeaderName; 23] = [
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &X_FORWARDED_PORT,
    &X_FORWARDED_PREFIX,
    &X_FORWARDED_URI,
    &X_FORWARDED_METHOD,
    &X_REAL_IP,
    &header::FORWARDED,
    &X_ORIGINAL_URL,
    &X_ORIGINAL_URI,
    &X_REWRITE_URL,
    &X_HTTP_METHOD_OVERRIDE,
    &X_HTTP_METHOD,
    &X_METHOD_OVERRIDE,
    &TRUE_CLIENT_IP,
    &CF_CONNECTING_IP,
    &X_CLIENT_IP,
    &X_CLUSTER_CLIENT_IP,
    &FASTLY_CLIENT_IP,
    &X_FORWARDED_SERVER,
    &X_HOST,
    &X_ORIGINAL_HOST,
];
/// Where `name` stands in [`HOP_BY_HOP`].
fn hop_by_hop_index(name: &str) -> Option<u32> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

/// Where `name` stands in [`FORWARDING`].
fn forwarding_index(name: &str) -> Option<u32> {
    Some(match name {
        "x-forwarded-for" => 0,
        "x-forwarded-proto" => 1,
        "x-forwarded-host" => 2,
        "x-forwarded-port" => 3,
        "x-forwarded-prefix" => 4,
        "x-forwarded-uri" => 5,
        "x-forwarded-method" => 6,
        "x-real-ip" => 7,
        "forwarded" => 8,
        "x-original-url" => 9,
        "x-original-uri" => 10,
        "x-rewrite-url" => 11,
        "x-http-method-override" => 12,
        "x-http-method" => 13,
        "x-method-override" => 14,
        "true-client-ip" => 15,
        "cf-connecting-ip" => 16,
        "x-client-ip" => 17,
        "x-cluster-client-ip" => 18,
        "fastly-client-ip" => 19,
        "x-forwarded-server" => 20,
        "x-host" => 21,
        "x-original-host" => 22,
        _ => return None,
    })
}

/// Which names of a table are in `headers`, as bits: one pass over the request's headers
/// (usually a dozen, none of them these) matching names, instead of one hashed probe per
/// name of the table.
fn present(headers: &HeaderMap, index: fn(&str) -> Option<u32>) -> u32 {
    let mut bits = 0;
    for name in headers.keys() {
        if let Some(i) = index(name.as_str()) {
            bits |= 1 << i;
        }
    }
    bits
}

fn remove_present(headers: &mut HeaderMap, names: &[&HeaderName], mut bits: u32) {
    // Visits the set bits only: usually there are none.
    while bits != 0 {
        headers.remove(names[bits.trailing_zeros() as usize]);
        bits &= bits - 1;
    }
}

/// Whether a request asks to switch protocols (`Connection: upgrade` plus `Upgrade`).
/// Only WebSocket is tunneled: other protocols (h2c above all) would let a client speak to
/// the upstream past every rule on the connection.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::UPGRADE).iter();
    let websocket = matches!((values.next(), values.next()), (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    websocket && connection_has(headers, "upgrade")
}

/// The `Sec-WebSocket-Accept` a WebSocket handshake's answer must carry (RFC 6455 §4.2.2),
/// or `None` when the request has no single usable `Sec-WebSocket-Key`.
pub fn websocket_accept(headers: &HeaderMap) -> Option<HeaderValue> {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) if !k.is_empty() && k.len() <= 64 => k,
        _ => return None,
    };
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID);
    let digest = ctx.finish();
    let encoded =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest.as_ref());
    HeaderValue::from_str(&encoded).ok()
}

/// Whether a `101` answers a WebSocket handshake: `Upgrade: websocket`, `Connection:
/// upgrade`, and the `Sec-WebSocket-Accept` computed from the request's key.
pub fn is_websocket_switch(response: &HeaderMap, accept: &HeaderValue) -> bool {
    let mut upgrades = response.get_all(header::UPGRADE).iter();
    let websocket = matches!((upgrades.next(), upgrades.next()), (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let mut accepts = response.get_all(header::SEC_WEBSOCKET_ACCEPT).iter();
    let accepted = matches!((accepts.next(), accepts.next()), (Some(v), None) if v.as_bytes() == accept.as_bytes());
    websocket && accepted && connection_has(response, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Removes hop-by-hop headers: the fixed set and every header named in `Connection`.
/// With `keep_upgrade`, `Upgrade` survives and `Connection: upgrade` is set again, so a
/// WebSocket handshake reaches the upstream intact.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut bits = present(headers, hop_by_hop_index);
    if bits & CONNECTION_BIT != 0 {
        if let Some(named) = connection_named(headers) {
            for name in named {
                if keep_upgrade && name == header::UPGRADE {
                    continue;
                }
                headers.remove(&name);
            }
        }
    }
    if keep_upgrade {
        bits &= !UPGRADE_BIT;
    }
    remove_present(headers, &HOP_BY_HOP, bits);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Header names listed in `Connection`, or `None` when there are none to remove.
fn connection_named(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut out = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        // What almost every upstream answers with, and most clients send: nothing named.
        let whole = value.as_bytes();
        if whole.eq_ignore_ascii_case(b"keep-alive") || whole.eq_ignore_ascii_case(b"close") {
            continue;
        }
        let Ok(s) = value.to_str() else { continue };
        for token in s.split(',') {
            let token = token.trim();
            if token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || token.eq_ignore_ascii_case("keep-alive")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                // Never let a client nominate a header the gateway itself sets afterwards:
                // those are set later anyway, and removing e.g. Host would be harmful.
                if name != header::HOST {
                    out.push(name);
                }
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Whether `name` is in the identity namespace, in any spelling a server might normalise
/// to it (`_` for `-`; names are already lower-case in a `HeaderMap`).
pub fn is_identity_header(name: &str, extra: &[HeaderName]) -> bool {
    let b = name.as_bytes();
    let prefix = IDENTITY_PREFIX.as_bytes();
    let in_namespace = b.len() >= prefix.len()
        && b[..prefix.len()]
            .iter()
            .zip(prefix)
            .all(|(&c, &p)| c.to_ascii_lowercase() == p || (p == b'-' && c == b'_'));
    in_namespace
        || extra.iter().any(|e| {
            e.as_str().len() == b.len()
                && e.as_str()
                    .bytes()
                    .zip(b)
                    .all(|(p, &c)| c.to_ascii_lowercase() == p || (p == b'-' && c == b'_'))
        })
}

/// Removes every identity header a client sent: the `X-Jumpgate-` namespace and any extra
/// configured names, in any case and with `_` in place of `-`.
pub fn strip_inbound_identity(headers: &mut HeaderMap, extra: &[HeaderName]) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if is_identity_header(name.as_str(), extra) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(&name);
    }
}

/// Whether `peer` is one of the configured trusted proxies.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&peer))
}

/// The client address a request is attributed to: the peer, or, behind trusted proxies, the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(s) = value.to_str() else { return client };
        for entry in s.rsplit(',') {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !is_trusted(ip, trusted) {
                        return ip;
                    }
                }
                Err(_) => return client,
            }
        }
    }
    client
}

/// Sets `X-Forwarded-For/-Proto/-Host`, after removing every header in [`FORWARDING`] a
/// client sent. From a trusted proxy only its `X-Forwarded-For` chain is kept, and
/// extended; the protocol is always https (the gateway terminated TLS) and the host always
/// the canonical host the request was decided on (the site's, made once). `peer_value` is
/// the peer's address as a header value, made once per connection.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    peer_value: Option<&HeaderValue>,
    trusted_peer: bool,
    host: &HeaderValue,
) {
    let chain: Option<String> = if trusted_peer {
        let parts: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    } else {
        None
    };
    let lies = present(headers, forwarding_index);
    remove_present(headers, &FORWARDING, lies);
    let value = match (chain, peer_value) {
        (Some(chain), Some(_)) => HeaderValue::from_str(&format!("{chain}, {peer}")).ok(),
        (None, v) => v.cloned(),
        (Some(_), None) => None,
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
    headers.insert(X_FORWARDED_HOST.clone(), host.clone());
}

/// The prefix of every cookie the gateway sets (`__Host-jumpgate`, `__Host-jumpgate-login`).
const GATEWAY_COOKIE_PREFIX: &[u8] = b"__host-jumpgate";

fn is_gateway_cookie(pair: &[u8]) -> bool {
    pair.len() >= GATEWAY_COOKIE_PREFIX.len()
        && pair[..GATEWAY_COOKIE_PREFIX.len()].eq_ignore_ascii_case(GATEWAY_COOKIE_PREFIX)
}

/// The `;`-separated parts of a `Cookie` value, as `<[u8]>::split` yields them.
///
/// The separators are found with `memchr`: a field is mostly one long cookie value, and
/// `split`'s byte-at-a-time scan cost about five instructions a byte, twice a request (once
/// to find the session, once to keep it from the upstream).
pub fn cookie_parts(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let r = rest?;
        Some(match memchr::memchr(b';', r) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                &r[..i]
            }
            None => {
                rest = None;
                r
            }
        })
    })
}

/// The `;`-separated pairs of a `Cookie` value, trimmed, empty ones skipped.
fn cookie_pairs(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    cookie_parts(value)
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
}

/// Removes the gateway's own cookies from a request going upstream, and joins what is left
/// into one `Cookie` field.
///
/// The session cookie is a credential for the gateway alone: an upstream that logs, echoes
/// or leaks request headers must not be able to hand it to anyone. HTTP/2 clients send one
/// `cookie` field per cookie, which RFC 9113 §8.2.3 requires joined with `"; "` before they
/// reach an HTTP/1.1 hop. Names are compared without case, as some servers read them.
pub fn strip_gateway_cookies(headers: &mut HeaderMap) {
    let header::Entry::Occupied(mut entry) = headers.entry(header::COOKIE) else {
        return;
    };
    // What stays, joined. One pass: with a single field, it is only built from the first
    // of ours on, so a field without any (a public route, the application's own cookies)
    // is neither copied nor rebuilt; several fields are always joined into one.
    let several = entry.iter().nth(1).is_some();
    let mut joined: Option<Vec<u8>> = several.then(Vec::new);
    for value in entry.iter() {
        let bytes = value.as_bytes();
        // Pairs passed over while nothing was being built (a single field, none of ours yet).
        let mut passed = 0;
        for pair in cookie_pairs(bytes) {
            let ours = is_gateway_cookie(pair);
            if ours && joined.is_none() {
                // The first of ours: what came before it in this field stays. Nothing is
                // allocated until something stays: a field of ours alone is removed whole.
                let mut kept = Vec::new();
                for before in cookie_pairs(bytes).take(passed) {
                    join_pair(&mut kept, before, bytes.len());
                }
                joined = Some(kept);
            }
            match (&mut joined, ours) {
                (Some(kept), false) => join_pair(kept, pair, bytes.len()),
                (None, false) => passed += 1,
                (_, true) => {}
            }
        }
    }
    let Some(joined) = joined else {
        return;
    };
    if joined.is_empty() {
        entry.remove();
        return;
    }
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        Ok(mut v) => {
            v.set_sensitive(true);
            entry.insert(v);
        }
        // Cannot happen (the bytes come from valid values); if it did, nothing goes.
        Err(_) => {
            entry.remove();
        }
    }
}

/// Appends `pair` to what is kept; the first one allocates room for `field_len` bytes.
fn join_pair(joined: &mut Vec<u8>, pair: &[u8], field_len: usize) {
    if joined.capacity() == 0 {
        joined.reserve(field_len);
    }
    if !joined.is_empty() {
        joined.extend_from_slice(b"; ");
    }
    joined.extend_from_slice(pair);
}

/// The size of a request's header section as HTTP/1.1 carries it: the request line, and
/// every field as `name: value` plus its line end. HTTP/2 requests are measured the same
/// way, so one limit means the same on both.
pub fn section_size(method: &http::Method, uri: &http::Uri, headers: &HeaderMap) -> usize {
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len());
    let line = method.as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    headers
        .iter()
        .fold(line + 2, |n, (k, v)| n + k.as_str().len() + 2 + v.len() + 2)
}

/// Marks credential-bearing headers sensitive so no formatter ever prints their values.
/// One walk over the values with a comparison of standard names is cheaper than three
/// hashed lookups for the few dozen headers a request carries (about 480 instructions a
/// request before).
pub fn mark_sensitive(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        if name == header::COOKIE
            || name == header::AUTHORIZATION
            || name == header::PROXY_AUTHORIZATION
        {
            value.set_sensitive(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret, X-Other"),
            ("connection", "te"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "websocket"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept"]);

        // A field that is only `keep-alive` or `close` names nothing, and a later one still
        // does.
        for plain in ["Keep-Alive", "close"] {
            let mut h = map(&[
                ("connection", plain),
                ("connection", "x-gone"),
                ("x-gone", "1"),
                ("x-kept", "1"),
            ]);
            strip_hop_by_hop(&mut h, false);
            let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(left, vec!["x-kept"], "{plain}");
        }
    }

    /// RFC 6455's own example, and the answers that must not open a tunnel.
    #[test]
    fn websocket_handshake_answers() {
        let req = map(&[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]);
        let accept = websocket_accept(&req).unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let good = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ];
        assert!(is_websocket_switch(&map(&good), &accept));
        let bad: &[(&str, &[(&str, &str)])] = &[
            ("no headers", &[]),
            (
                "wrong accept",
                &[
                    ("upgrade", "websocket"),
                    ("connection", "upgrade"),
                    ("sec-websocket-accept", "AAAA"),
                ],
            ),
            (
                "no accept",
                &[("upgrade", "websocket"), ("connection", "upgrade")],
            ),
            (
                "h2c",
                &[
                    ("upgrade", "h2c"),
                    ("connection", "upgrade"),
                    ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                ],
            ),
            (
                "no connection",
                &[
                    ("upgrade", "websocket"),
                    ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                ],
            ),
            (
                "two accepts",
                &[
                    ("upgrade", "websocket"),
                    ("connection", "upgrade"),
                    ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                    ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                ],
            ),
        ];
        for (why, headers) in bad {
            assert!(!is_websocket_switch(&map(headers), &accept), "{why}");
        }
        assert!(websocket_accept(&map(&[])).is_none(), "no key");
        assert!(
            websocket_accept(&map(&[
                ("sec-websocket-key", "a"),
                ("sec-websocket-key", "b")
            ]))
            .is_none(),
            "two keys"
        );
    }

    #[test]
    fn upgrade_kept_when_tunneling() {
        let mut h = map(&[
            ("connection", "Upgrade, x-a"),
            ("upgrade", "websocket"),
            ("x-a", "1"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert!(h.get("x-a").is_none());
    }

    #[test]
    fn identity_namespace_any_spelling() {
        let extra = [HeaderName::from_static("x-auth-user")];
        for name in [
            "x-jumpgate-user",
            "x_jumpgate_user",
            "x-jumpgate_email",
            "x_jumpgate-assertion",
            "x-auth-user",
            "x_auth_user",
        ] {
            assert!(is_identity_header(name, &extra), "{name}");
        }
        for name in ["x-jumpgate", "x-jumpgat-user", "x-auth-users", "cookie"] {
            assert!(!is_identity_header(name, &extra), "{name}");
        }
        let mut h = map(&[
            ("x-jumpgate-user", "a"),
            ("x_jumpgate_user", "b"),
            ("x-jumpgate-groups", "c"),
            ("accept", "d"),
        ]);
        strip_inbound_identity(&mut h, &[]);
        assert_eq!(h.len(), 1);
    }

    /// Each table's index function must name its own entries at their places, or a header
    /// would be found but another one removed.
    #[test]
    fn name_tables_and_their_indexes_agree() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(i as u32), "{name}");
        }
        for (i, name) in FORWARDING.iter().enumerate() {
            assert_eq!(forwarding_index(name.as_str()), Some(i as u32), "{name}");
        }
        assert_eq!(
            HOP_BY_HOP[CONNECTION_BIT.trailing_zeros() as usize],
            header::CONNECTION
        );
        assert_eq!(
            HOP_BY_HOP[UPGRADE_BIT.trailing_zeros() as usize],
            header::UPGRADE
        );
        assert_eq!(hop_by_hop_index("accept"), None);
        assert_eq!(forwarding_index("x-forwarded"), None);
    }

    #[test]
    fn gateway_cookies_never_go_upstream() {
        let mut h = map(&[
            ("cookie", "a=1; __Host-jumpgate=secret; b=2"),
            ("cookie", "__Host-jumpgate-login=l"),
            ("cookie", "__HOST-JUMPGATE=x;c=3"),
            ("cookie", "jumpgate=kept"),
        ]);
        strip_gateway_cookies(&mut h);
        let all: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3; jumpgate=kept"]);
        assert!(all[0].is_sensitive());

        let mut h = map(&[("cookie", "__Host-jumpgate=secret")]);
        strip_gateway_cookies(&mut h);
        assert!(h.get("cookie").is_none());

        // One field, ours first, between or last: what stays keeps its order.
        for (field, left) in [
            ("__Host-jumpgate=s; a=1;b=2", "a=1; b=2"),
            ("a=1; __Host-jumpgate=s; b=2", "a=1; b=2"),
            ("a=1;; b=2 ;__host-JUMPGATE-login=l", "a=1; b=2"),
            (
                " a=1 ; __Host-jumpgate=s;__Host-jumpgate=t; b=2;",
                "a=1; b=2",
            ),
        ] {
            let mut h = map(&[("cookie", field)]);
            strip_gateway_cookies(&mut h);
            let all: Vec<_> = h.get_all("cookie").iter().collect();
            assert_eq!(all, [left], "{field}");
            assert!(all[0].is_sensitive());
        }

        let mut h = map(&[("cookie", "a=1;b=2")]);
        strip_gateway_cookies(&mut h);
        assert_eq!(
            h.get("cookie").unwrap(),
            "a=1;b=2",
            "untouched when none is ours"
        );

        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes("name=Zo\u{eb}".as_bytes()).unwrap(),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-jumpgate=s"),
        );
        strip_gateway_cookies(&mut h);
        assert_eq!(
            h.get("cookie").unwrap().as_bytes(),
            "name=Zo\u{eb}".as_bytes()
        );
    }

    #[test]
    fn header_section_size() {
        let h = map(&[("host", "app.test"), ("x-a", "12345")]);
        let uri: http::Uri = "/p?q=1".parse().unwrap();
        // "GET /p?q=1 HTTP/1.1\r\n" + "host: app.test\r\n" + "x-a: 12345\r\n" + "\r\n"
        assert_eq!(section_size(&http::Method::GET, &uri, &h), 21 + 16 + 12 + 2);
    }

    #[test]
    fn forwarded_untrusted_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let v = HeaderValue::from_str(&peer.to_string()).ok();
        let host = HeaderValue::from_static("site.example");
        set_forwarded(&mut h, peer, v.as_ref(), false, &host);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.9");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "site.example");
        assert!(h.get("x-real-ip").is_none());
        assert!(h.get("forwarded").is_none());
    }

    #[test]
    fn forwarded_trusted_extended() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = map(&[("x-forwarded-for", "1.2.3.4, 10.0.0.2")]);
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(
            client_ip(&h, peer, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        let v = HeaderValue::from_str(&peer.to_string()).ok();
        let host = HeaderValue::from_static("site.example");
        set_forwarded(&mut h, peer, v.as_ref(), true, &host);
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "1.2.3.4, 10.0.0.2, 10.0.0.9"
        );
        let untrusted_peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(&h, untrusted_peer, &trusted), untrusted_peer);
    }

    /// Headers through which frameworks let a request pick its path, method, host or client
    /// address never reach an upstream, even through a trusted proxy, in any case.
    #[test]
    fn overrides_never_go_upstream() {
        let names = [
            "X-Original-URL",
            "X-Original-URI",
            "X-Rewrite-URL",
            "X-HTTP-Method-Override",
            "X-HTTP-Method",
            "X-Method-Override",
            "True-Client-IP",
            "CF-Connecting-IP",
            "X-Client-IP",
            "X-Cluster-Client-IP",
            "Fastly-Client-IP",
            "X-Forwarded-Server",
            "X-Host",
            "X-Original-Host",
            "X-Forwarded-Port",
            "X-Forwarded-Prefix",
            "X-Forwarded-Uri",
            "X-Forwarded-Method",
            "X-Real-IP",
            "Forwarded",
        ];
        for trusted in [false, true] {
            let mut h = HeaderMap::new();
            for n in names {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_static("/admin"),
                );
            }
            h.append("x-forwarded-host", HeaderValue::from_static("evil.example"));
            h.append("x-forwarded-proto", HeaderValue::from_static("http"));
            h.append("accept", HeaderValue::from_static("*/*"));
            let peer: IpAddr = "10.0.0.9".parse().unwrap();
            let v = HeaderValue::from_str(&peer.to_string()).ok();
            let host = HeaderValue::from_static("site.example");
            set_forwarded(&mut h, peer, v.as_ref(), trusted, &host);
            for n in names {
                assert!(h.get(n).is_none(), "{n} survived (trusted {trusted})");
            }
            assert_eq!(h.get("x-forwarded-host").unwrap(), "site.example");
            assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
            assert_eq!(h.get("accept").unwrap(), "*/*", "others are kept");
        }
    }

    /// Split with `memchr`, a field comes apart exactly as `<[u8]>::split` takes it apart:
    /// every string of up to six bytes over `a`, `;`, space and `=`.
    #[test]
    fn cookie_parts_split_as_the_standard_split_does() {
        let alphabet = [b'a', b';', b' ', b'='];
        let mut inputs = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..6 {
            let longer: Vec<Vec<u8>> = last
                .iter()
                .flat_map(|s| {
                    alphabet.iter().map(move |&b| {
                        let mut t = s.clone();
                        t.push(b);
                        t
                    })
                })
                .collect();
            inputs.extend(longer.iter().cloned());
            last = longer;
        }
        assert_eq!(inputs.len(), 5461);
        for input in &inputs {
            let want: Vec<&[u8]> = input.split(|&b| b == b';').collect();
            let got: Vec<&[u8]> = cookie_parts(input).collect();
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        }
    }
}
