//! The session store's own rules, in memory: absolute ends, idle time, ended sessions,
//! cookie bounds and the pending sign-in bound.

use super::*;
use crate::config::{SessionConfig, StoreKind};
use crate::oidc::verify::IdClaims;

fn sessions() -> Sessions {
    let config = SessionConfig {
        store: StoreKind::Memory,
        key_file: "unused".into(),
        lifetime: Duration::from_secs(12 * 3600),
        idle_timeout: Duration::from_secs(3600),
        login_timeout: Duration::from_secs(600),
        max_sessions: 1000,
        max_pending_logins: 100_000,
        redis: None,
    };
    Sessions::new(&config, CookieKey::from_bytes(&[7; 32]))
}

fn login(sub: &str, exp: i64) -> VerifiedLogin {
    VerifiedLogin {
        claims: IdClaims {
            sub: sub.into(),
            exp,
            iat: 0,
            auth_time: None,
            email: Some(format!("{sub}@example.com")),
            email_verified: Some(true),
            email_matches: false,
            username: None,
            name: None,
            groups: vec![],
            sid: None,
            amr: vec![],
            acr: None,
        },
        refresh_token: Some(Secret::new("refresh".into())),
    }
}

/// The memory store never waits.
fn now_or_never<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_util::FutureExt::now_or_never(f).expect("the memory store never waits")
}

/// The session `id` names, looked up as a request would at the store's clock's present.
fn look(store: &Sessions, id: [u8; 32]) -> Option<Arc<Session>> {
    now_or_never(store.lookup(id, key_of(&id), store.clock.now_ms()))
}

fn record(sub: &str, expires: i64) -> SessionRecord {
    let now = crate::clock::now();
    SessionRecord {
        site: "site".into(),
        sub: sub.into(),
        email: None,
        username: None,
        name: None,
        groups: vec![],
        auth_time: None,
        created: now - 100,
        expires,
        refresh_token: Some(Secret::new("r".into())),
        id_token_exp: now,
        step_up_time: 0,
        sid: None,
        email_matches: false,
        legacy_id_token: (),
    }
}

/// The absolute end counts from the first sign-in: a refresh or a step-up rotation
/// carries it, and the caches' own lifetimes (12 h here) never extend it.
#[test]
fn the_absolute_end_holds_through_refresh_and_step_up() {
    let store = sessions();
    let now = crate::clock::now();
    let (alive, _) =
        now_or_never(store.store_new(random_bytes(), Arc::from("site"), record("a", now + 60)))
            .unwrap();
    assert!(look(&store, alive.id).is_some(), "control");
    let (ended, _) =
        now_or_never(store.store_new(random_bytes(), Arc::from("site"), record("b", now))).unwrap();
    assert!(look(&store, ended.id).is_none(), "past its end");
    // A refresh with a new, later ID token does not start a new lifetime.
    now_or_never(store.refreshed(&ended, login("b", now + 3600)));
    assert!(look(&store, ended.id).is_none(), "after a refresh");
    // Nor does a step-up's new id.
    let (rotated, _) = now_or_never(store.rotate(&ended, now)).unwrap();
    assert_eq!(rotated.expires, now);
    assert!(look(&store, rotated.id).is_none(), "after a step-up");
}

/// A refresh that completes after the session ended (logout, revocation, rotation)
/// never brings it back; the race is forced by ending it between claim and completion.
#[test]
fn an_ended_session_never_returns() {
    let store = sessions();
    let now = crate::clock::now();
    for ending in ["logout", "revocation", "rotation"] {
        let (s, _) = now_or_never(store.create(Arc::from("site"), login("u", now + 30))).unwrap();
        let claimed = s.claim_refresh(now, 300);
        assert!(claimed.is_some(), "{ending}: the refresh is claimed");
        let rotated = match ending {
            "logout" => {
                now_or_never(store.remove(&s));
                None
            }
            "revocation" => {
                now_or_never(store.revoke_user("u"));
                None
            }
            _ => Some(now_or_never(store.rotate(&s, now)).unwrap().0),
        };
        store.local.run_pending_tasks();
        now_or_never(store.refreshed(&s, login("u", now + 3600)));
        store.local.run_pending_tasks();
        assert!(
            look(&store, s.id).is_none(),
            "{ending}: the refresh wrote the ended session back"
        );
        if let Some(r) = rotated {
            let r = look(&store, r.id).expect("the rotated session lives");
            assert_eq!(r.step_up_time(), Some(now));
            assert_eq!(
                s.step_up_time(),
                None,
                "the old id never carries the step-up"
            );
        }
    }
    // Control: a refresh of a live session is kept.
    let (s, _) = now_or_never(store.create(Arc::from("site"), login("v", now + 30))).unwrap();
    let _ = s.claim_refresh(now, 300);
    now_or_never(store.refreshed(&s, login("v", now + 3600)));
    let after = look(&store, s.id).expect("still signed in");
    assert!(
        after.claim_refresh(now, 300).is_none(),
        "the new ID token was kept"
    );
}

/// Only the first two session cookies of a request are looked up, however many are
/// validly signed.
#[test]
fn at_most_two_session_cookies_are_read() {
    let store = sessions();
    let now = crate::clock::now();
    let (s, set) = now_or_never(store.create(Arc::from("site"), login("u", now + 3600))).unwrap();
    let live = set.to_str().unwrap().split(';').next().unwrap().to_owned();
    let stale = |i: u8| {
        format!(
            "{}={}",
            cookie::SESSION,
            store.key.seal(SESSION_PURPOSE, &[i; 32])
        )
    };
    let ask = |cookies: Vec<String>| {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&cookies.join("; ")).unwrap(),
        );
        now_or_never(store.from_headers(&h, "site")).map(|found| found.id)
    };
    assert_eq!(ask(vec![live.clone()]), Some(s.id));
    assert_eq!(ask(vec![stale(1), live.clone()]), Some(s.id), "second");
    assert_eq!(ask(vec![stale(1), stale(2), live.clone()]), None, "third");
    let mut many: Vec<String> = (0..200).map(stale).collect();
    many.push(live);
    assert_eq!(ask(many), None);
}

/// A connection's remembered cookie saves the opening, never the store's answer: the same
/// bytes find the session until it ends, and then find nothing; any other bytes (a tampered
/// copy, another session's cookie, one for another site) are opened and checked afresh.
#[test]
fn a_remembered_cookie_is_still_checked_against_the_store() {
    let store = sessions();
    let now = crate::clock::now();
    let cookie_of = |set: &HeaderValue| set.to_str().unwrap().split(';').next().unwrap().to_owned();
    let (s, set) = now_or_never(store.create(Arc::from("site"), login("u", now + 3600))).unwrap();
    let (other, other_set) =
        now_or_never(store.create(Arc::from("site"), login("v", now + 3600))).unwrap();
    let (_, foreign_set) =
        now_or_never(store.create(Arc::from("elsewhere"), login("w", now + 3600))).unwrap();
    let conn = OpenedCookie::default();
    let ask = |cookie: &str| {
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        now_or_never(store.from_headers_on(&h, "site", Some(&conn), store.clock.now_ms()))
            .map(|found| found.id)
    };
    let live = cookie_of(&set);
    assert_eq!(ask(&live), Some(s.id), "first request opens it");
    let value = &live[cookie::SESSION.len() + 1..];
    assert!(conn.recall(value.as_bytes()).is_some(), "and remembers it");
    assert_eq!(ask(&live), Some(s.id), "the next one recalls it");
    // The bytes as sent are compared before any parsing; other spellings of the same value
    // (spaces around it, quotes) are parsed and opened, and find the same session.
    let name = cookie::SESSION;
    assert_eq!(ask(&format!("{name}=  {value} ")), Some(s.id), "spaces");
    assert_eq!(ask(&format!("{name}=\"{value}\"")), Some(s.id), "quoted");
    assert_eq!(ask(&format!("{name}={value}x")), None, "one byte more");

    let mut tampered = live.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        ask(std::str::from_utf8(&tampered).unwrap()),
        None,
        "tampered"
    );
    assert_eq!(
        ask(&cookie_of(&foreign_set)),
        None,
        "another site's session"
    );
    assert_eq!(ask(&live), Some(s.id), "still remembered after the misses");
    assert_eq!(
        ask(&cookie_of(&other_set)),
        Some(other.id),
        "another user on the connection"
    );
    assert_eq!(ask(&live), Some(s.id), "and back");

    now_or_never(store.remove(&s));
    assert_eq!(
        ask(&live),
        None,
        "an ended session ends on this connection too"
    );
    // The directory suspends the other user.
    now_or_never(store.revoke_user("v"));
    assert_eq!(
        ask(&cookie_of(&other_set)),
        None,
        "revoked while remembered"
    );
}

/// A store full of sign-ins a flood started still admits a real one.
#[test]
fn a_flood_of_sign_in_starts_never_refuses_a_new_one() {
    let store = sessions();
    let now = crate::clock::now();
    let pending = |i: u64| PendingLogin {
        state: format!("flood-{i}"),
        nonce: String::new(),
        verifier: Secret::new(String::new()),
        return_to: "/".into(),
        site: Arc::from("site"),
        redirect_uri: String::new(),
        binding: [0; 32],
        started: now,
        step_up: false,
    };
    for i in 0..store.max_pending_logins + 1000 {
        now_or_never(store.start_login(pending(i))).unwrap();
    }
    store.pending.run_pending_tasks();
    let mut real = pending(0);
    real.state = "real-user".into();
    now_or_never(store.start_login(real)).unwrap();
    store.pending.run_pending_tasks();
    assert!(store.pending.entry_count() <= store.max_pending_logins);
    let taken = now_or_never(store.take_login("real-user")).unwrap();
    assert_eq!(taken.map(|l| l.state).as_deref(), Some("real-user"));
}

/// An in-memory session ends after the idle timeout on the store's clock, and every use
/// starts the idle time again; the end of its lifetime holds however often it is used.
#[test]
fn idle_time_and_lifetime_are_counted_on_the_stores_clock() {
    let config = SessionConfig {
        store: StoreKind::Memory,
        key_file: "unused".into(),
        lifetime: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(600),
        login_timeout: Duration::from_secs(600),
        max_sessions: 1000,
        max_pending_logins: 100_000,
        redis: None,
    };
    let clock = Clock::adjustable();
    let store = Sessions::with_shared(
        &config,
        CookieKey::from_bytes(&[7; 32]),
        None,
        clock.clone(),
    );
    let exp = crate::clock::now() + 7200;
    let (used, _) = now_or_never(store.create("site".into(), login("used", exp))).unwrap();
    let (idle, _) = now_or_never(store.create("site".into(), login("idle", exp))).unwrap();
    for minutes in [9, 9, 9, 9, 9, 9] {
        assert!(clock.advance(Duration::from_secs(minutes * 60)));
        assert!(look(&store, used.id).is_some(), "in use");
    }
    assert!(look(&store, idle.id).is_none(), "idle 54 min");
    assert!(clock.advance(Duration::from_secs(9 * 60)));
    assert!(
        look(&store, used.id).is_none(),
        "in use, but past its lifetime of an hour"
    );
}

#[test]
fn store_keys_hash_by_their_first_eight_bytes() {
    use std::hash::BuildHasher;
    let hashing = StoreKeyHashing::default();
    for _ in 0..1000 {
        let key = key_of(&random_bytes());
        let first = u64::from_le_bytes(key[..8].try_into().unwrap());
        // The array's length, hashed first, must not disturb the bytes' contribution.
        assert_eq!(hashing.hash_one(key), first);
    }
    // A cache built with it finds what it holds and nothing else.
    let cache: Cache<[u8; 32], u32, StoreKeyHashing> =
        Cache::builder().build_with_hasher(StoreKeyHashing::default());
    let (a, b) = (key_of(&[1; 32]), key_of(&[2; 32]));
    cache.insert(a, 1);
    assert_eq!(cache.get(&a), Some(1));
    assert_eq!(cache.get(&b), None);
}
