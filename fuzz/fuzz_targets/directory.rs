//! JumpCloud directory JSON on arbitrary input.
//!
//! - `parse_user` never panics on any JSON value, and only a complete, activated record with
//!   an id, an email and state ACTIVATED is ever active.
//! - `Snapshot::build` never panics on any `RawDirectory`, finds every user by id (the first
//!   record of a duplicated id wins), keeps group lists sorted and in range, and never finds
//!   a user by an email that two users share.

#![no_main]

use jumpgate::directory::jumpcloud::parse_user;
use jumpgate::directory::snapshot::{RawDirectory, Snapshot};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check_user(v: &Value) {
    let u = parse_user(v);
    if u.is_active() {
        assert!(!u.id.is_empty(), "{v} active without id");
        assert!(u.email.is_some(), "{v} active without email");
        assert_eq!(u.state, "ACTIVATED", "{v}");
        assert!(u.problem.is_none() && u.activated && !u.suspended && !u.account_locked);
    }
}

fn check_snapshot(raw: &RawDirectory) {
    let mut refs: Vec<String> = raw.groups.iter().take(8).map(|g| g.name.clone()).collect();
    refs.extend(raw.groups.iter().take(8).map(|g| g.id.clone()));
    refs.push("No such group".into());
    let s = Snapshot::build(raw, &refs, 1);
    assert!(s.user_count() <= raw.users.len());
    assert!(s.group_count() == raw.groups.len());
    let mut memberships = 0;
    for u in s.users() {
        assert!(u.groups.windows(2).all(|w| w[0] < w[1]), "groups unsorted");
        assert!(u.groups.iter().all(|&g| (g as usize) < s.group_count()));
        assert_eq!(u.group_names.len(), u.groups.len());
        memberships += u.groups.len();
        for r in 0..refs.len() + 1 {
            let _ = s.in_ref(u, r);
        }
        let _ = s.bound_to_app(u);
    }
    assert_eq!(memberships, s.membership_count());
    let is_first = |i: usize| {
        let id = &raw.users[i].id;
        raw.users.iter().position(|x| &x.id == id) == Some(i)
    };
    let probe = "\u{0}not-an-id";
    let probe_free = !raw.users.iter().any(|x| x.id == probe);
    for (i, ru) in raw.users.iter().enumerate() {
        let found = s.user(&ru.id, None).expect("every user is found by id");
        assert_eq!(&*found.id, ru.id.as_str());
        if !is_first(i) {
            continue;
        }
        assert_eq!(found.active, ru.is_active(), "{ru:?}");
        let Some(email) = &ru.email else { continue };
        if !probe_free {
            continue;
        }
        let sharing = (0..raw.users.len())
            .filter(|&j| is_first(j))
            .filter(|&j| {
                raw.users[j]
                    .email
                    .as_ref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
            .count();
        let by_email = s.user(probe, Some(email));
        if sharing > 1 {
            assert!(by_email.is_none(), "ambiguous email {email:?} matched");
        } else {
            let u = by_email.expect("a unique email finds its user");
            assert_eq!(&*u.id, ru.id.as_str());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        check_user(&v);
        if let Value::Array(items) = &v {
            items.iter().for_each(check_user);
        }
    }
    if let Ok(raw) = serde_json::from_slice::<RawDirectory>(data) {
        if raw.users.len() <= 256 && raw.groups.len() <= 64 {
            check_snapshot(&raw);
        }
    }
});
