//! An immutable, indexed view of the directory, built once per sync and swapped whole.
//!
//! A lookup by user id is one hash probe on a borrowed `&str`, with no allocation and no
//! lock; group membership is a sorted list of group indices, and every group the
//! configuration names is resolved to indices when the snapshot is built.

use std::collections::HashMap;

use http::HeaderValue;
use serde::{Deserialize, Serialize};

/// The snapshot's maps. Their keys are the provider's data, so the hasher is seeded per
/// process, as SipHash (the standard one) is; foldhash costs a fraction of it per lookup,
/// and a protected request looks a user up on every request.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

fn map<K, V>(capacity: usize) -> Map<K, V> {
    Map::with_capacity_and_hasher(capacity, Default::default())
}

/// A user as fetched, before indexing. This is also what the cache file stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawUser {
    /// JumpCloud user id (`_id`), equal to the OIDC `sub`.
    pub id: String,
    /// Email, when the record has one.
    pub email: Option<String>,
    /// Username.
    pub username: Option<String>,
    /// `state` as JumpCloud wrote it.
    pub state: String,
    /// `activated`.
    pub activated: bool,
    /// `suspended`.
    pub suspended: bool,
    /// `account_locked`.
    pub account_locked: bool,
    /// `password_expired`.
    pub password_expired: bool,
    /// Why the record could not be read fully; such a user is kept but never active.
    pub problem: Option<String>,
}

impl RawUser {
    /// The active-user rule: activated, not locked, not suspended, state ACTIVATED, password
    /// not expired, and a record that was read without problems.
    pub fn is_active(&self) -> bool {
        self.activated
            && !self.account_locked
            && !self.suspended
            && self.state == "ACTIVATED"
            && !self.password_expired
            && self.problem.is_none()
    }
}

/// A user group as fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawGroup {
    /// Group id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Member user ids.
    pub members: Vec<String>,
}

/// One complete sync's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawDirectory {
    /// When the sync completed (seconds since the epoch).
    pub taken_at: i64,
    /// Every user.
    pub users: Vec<RawUser>,
    /// Every user group with its members.
    pub groups: Vec<RawGroup>,
    /// Ids of the groups bound to the configured application, when one is configured.
    pub app_groups: Option<Vec<String>>,
}

/// One user in a snapshot.
#[derive(Debug)]
pub struct UserEntry {
    /// The user's id.
    pub id: Box<str>,
    /// Email, lower-cased.
    pub email: Option<Box<str>>,
    /// Username.
    pub username: Option<Box<str>>,
    /// Whether the user may use anything at all.
    pub active: bool,
    /// Indices of the user's groups, sorted.
    pub groups: Vec<u32>,
    /// Comma-separated group names, ready to forward.
    pub groups_header: Option<HeaderValue>,
    /// Group names, for the assertion.
    pub group_names: Vec<String>,
}

/// One group in a snapshot.
#[derive(Debug)]
pub struct GroupEntry {
    /// Group id.
    pub id: Box<str>,
    /// Display name.
    pub name: Box<str>,
}

/// The indexed directory.
#[derive(Debug)]
pub struct Snapshot {
    /// Monotonic per process; identifies the snapshot in caches.
    pub version: u64,
    /// When the data was fetched.
    pub taken_at: i64,
    users: Vec<UserEntry>,
    by_id: Map<Box<str>, u32>,
    by_email: Map<Box<str>, u32>,
    groups: Vec<GroupEntry>,
    /// Groups bound to the application (sorted), when configured.
    app_groups: Option<Vec<u32>>,
    /// For each group reference in the configuration, the groups it names.
    resolved: Vec<Vec<u32>>,
}

/// What a group reference in the configuration (a name or an id) finds in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// One or more groups its members can pass through.
    Found,
    /// No group: it admits no one.
    Missing,
    /// Groups, but none bound to the configured application, whose other rules refuse
    /// everyone else: it admits no one either.
    Unbound,
}

/// Email value shared by several users: never used to find a user.
const AMBIGUOUS: u32 = u32::MAX;

impl Snapshot {
    /// Indexes `raw`, resolving each of `group_refs` (names or ids) to group indices.
    pub fn build(raw: &RawDirectory, group_refs: &[String], version: u64) -> Snapshot {
        let mut groups = Vec::with_capacity(raw.groups.len());
        let mut group_by_id: Map<&str, u32> = map(raw.groups.len());
        let mut groups_by_name: Map<&str, Vec<u32>> = map(raw.groups.len());
        for (i, g) in raw.groups.iter().enumerate() {
            let i = i as u32;
            groups.push(GroupEntry {
                id: g.id.as_str().into(),
                name: g.name.as_str().into(),
            });
            group_by_id.insert(&g.id, i);
            groups_by_name.entry(&g.name).or_default().push(i);
        }

        let mut by_id: Map<Box<str>, u32> = map(raw.users.len());
        let mut by_email: Map<Box<str>, u32> = map(raw.users.len());
        let mut users: Vec<UserEntry> = Vec::with_capacity(raw.users.len());
        for u in &raw.users {
            if by_id.contains_key(u.id.as_str()) {
                continue;
            }
            let i = users.len() as u32;
            by_id.insert(u.id.as_str().into(), i);
            let email = u
                .email
                .as_ref()
                .map(|e| e.to_ascii_lowercase().into_boxed_str());
            if let Some(e) = &email {
                by_email
                    .entry(e.clone())
                    .and_modify(|v| *v = AMBIGUOUS)
                    .or_insert(i);
            }
            users.push(UserEntry {
                id: u.id.as_str().into(),
                email,
                username: u.username.as_deref().map(Into::into),
                active: u.is_active(),
                groups: Vec::new(),
                groups_header: None,
                group_names: Vec::new(),
            });
        }
        for (gi, g) in raw.groups.iter().enumerate() {
            for m in &g.members {
                if let Some(&ui) = by_id.get(m.as_str()) {
                    users[ui as usize].groups.push(gi as u32);
                }
            }
        }
        for u in &mut users {
            u.groups.sort_unstable();
            u.groups.dedup();
            u.group_names = u
                .groups
                .iter()
                .map(|&g| groups[g as usize].name.to_string())
                .collect();
            if !u.group_names.is_empty() {
                let joined = u
                    .group_names
                    .iter()
                    .map(|n| n.replace(',', " "))
                    .collect::<Vec<_>>()
                    .join(",");
                u.groups_header = HeaderValue::from_str(&joined).ok();
            }
        }

        let resolved = group_refs
            .iter()
            .map(|r| {
                let mut found: Vec<u32> =
                    group_by_id.get(r.as_str()).copied().into_iter().collect();
                if let Some(named) = groups_by_name.get(r.as_str()) {
                    found.extend(named);
                }
                found.sort_unstable();
                found.dedup();
                found
            })
            .collect();
        let app_groups = raw.app_groups.as_ref().map(|ids| {
            let mut v: Vec<u32> = ids
                .iter()
                .filter_map(|id| group_by_id.get(id.as_str()).copied())
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        });
        Snapshot {
            version,
            taken_at: raw.taken_at,
            users,
            by_id,
            by_email,
            groups,
            app_groups,
            resolved,
        }
    }

    /// The user with id `sub`, else the only user with this email (case-insensitive).
    pub fn user(&self, sub: &str, email: Option<&str>) -> Option<&UserEntry> {
        self.user_index(sub, email).and_then(|i| self.user_at(i))
    }

    /// Like [`Snapshot::user`], returning the user's index.
    pub fn user_index(&self, sub: &str, email: Option<&str>) -> Option<u32> {
        if let Some(&i) = self.by_id.get(sub) {
            return Some(i);
        }
        let email = email?;
        let i = if email.bytes().any(|b| b.is_ascii_uppercase()) {
            *self.by_email.get(email.to_ascii_lowercase().as_str())?
        } else {
            *self.by_email.get(email)?
        };
        (i != AMBIGUOUS).then_some(i)
    }

    /// The user at `index`.
    pub fn user_at(&self, index: u32) -> Option<&UserEntry> {
        self.users.get(index as usize)
    }

    /// Whether `user` is in any group that group reference `r` resolves to.
    pub fn in_ref(&self, user: &UserEntry, r: usize) -> bool {
        self.resolved
            .get(r)
            .is_some_and(|gs| gs.iter().any(|g| user.groups.binary_search(g).is_ok()))
    }

    /// What group reference `r` finds in this directory.
    pub fn reference(&self, r: usize) -> Reference {
        let Some(groups) = self.resolved.get(r).filter(|gs| !gs.is_empty()) else {
            return Reference::Missing;
        };
        match &self.app_groups {
            Some(bound) if !groups.iter().any(|g| bound.binary_search(g).is_ok()) => {
                Reference::Unbound
            }
            _ => Reference::Found,
        }
    }

    /// Whether `user` may use the application at all: always true without an application,
    /// else membership of one of its bound groups.
    pub fn bound_to_app(&self, user: &UserEntry) -> bool {
        match &self.app_groups {
            None => true,
            Some(gs) => gs.iter().any(|g| user.groups.binary_search(g).is_ok()),
        }
    }

    /// Number of users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Number of groups.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Number of user-group memberships.
    pub fn membership_count(&self) -> usize {
        self.users.iter().map(|u| u.groups.len()).sum()
    }

    /// Every user, for reports.
    pub fn users(&self) -> &[UserEntry] {
        &self.users
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, email: &str, state: &str) -> RawUser {
        RawUser {
            id: id.into(),
            email: Some(email.into()),
            username: Some(id.into()),
            state: state.into(),
            activated: true,
            suspended: state == "SUSPENDED",
            account_locked: false,
            password_expired: false,
            problem: None,
        }
    }

    fn raw() -> RawDirectory {
        RawDirectory {
            taken_at: 1,
            users: vec![
                user("u1", "Alice@Example.com", "ACTIVATED"),
                user("u2", "bob@example.com", "SUSPENDED"),
                user("u3", "dup@example.com", "ACTIVATED"),
                user("u4", "DUP@example.com", "ACTIVATED"),
            ],
            groups: vec![
                RawGroup {
                    id: "g1".into(),
                    name: "Admins".into(),
                    members: vec!["u1".into(), "u9".into()],
                },
                RawGroup {
                    id: "g2".into(),
                    name: "Staff, Ops".into(),
                    members: vec!["u1".into(), "u2".into()],
                },
            ],
            app_groups: Some(vec!["g2".into()]),
        }
    }

    #[test]
    fn lookups_and_resolution() {
        let refs = vec!["Admins".to_string(), "g2".to_string(), "Nope".to_string()];
        let s = Snapshot::build(&raw(), &refs, 7);
        let a = s.user("u1", None).unwrap();
        assert!(a.active);
        assert!(s.in_ref(a, 0) && s.in_ref(a, 1) && !s.in_ref(a, 2));
        assert_eq!(a.groups_header.as_ref().unwrap(), "Admins,Staff  Ops");
        assert!(s.bound_to_app(a));
        assert!(!s.user("u2", None).unwrap().active);
        assert_eq!(
            s.user("unknown", Some("alice@example.COM")).map(|u| &*u.id),
            Some("u1")
        );
        assert!(
            s.user("unknown", Some("dup@example.com")).is_none(),
            "ambiguous email never matches"
        );
        assert!(!s.bound_to_app(s.user("u3", None).unwrap()));
        assert_eq!(s.reference(2), Reference::Missing, "Nope");
        assert_eq!(
            s.reference(0),
            Reference::Unbound,
            "Admins is not bound to the app"
        );
        assert_eq!(s.reference(1), Reference::Found);
        assert_eq!(s.membership_count(), 3);
    }

    #[test]
    fn active_rule() {
        let mut u = user("x", "x@e", "ACTIVATED");
        assert!(u.is_active());
        for f in [
            |u: &mut RawUser| u.activated = false,
            |u: &mut RawUser| u.account_locked = true,
            |u: &mut RawUser| u.suspended = true,
            |u: &mut RawUser| u.password_expired = true,
            |u: &mut RawUser| u.state = "STAGED".into(),
            |u: &mut RawUser| u.state = "SOMETHING_NEW".into(),
            |u: &mut RawUser| u.problem = Some("null email".into()),
        ] {
            let mut v = u.clone();
            f(&mut v);
            assert!(!v.is_active(), "{v:?}");
        }
        u.email = None;
        assert!(
            u.is_active(),
            "a missing email alone does not make a user inactive"
        );
    }
}
