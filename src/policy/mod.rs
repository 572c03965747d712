//! Access decisions: a pure function from a matched route, the request's session and the
//! directory snapshot to a [`Decision`]: a [`Verdict`] to act on, or a [`Refusal`]. Nothing
//! here performs I/O or builds HTTP responses.

pub mod return_to;
pub mod routes;

use std::sync::Arc;

use http::Method;

use crate::config::Access;
use crate::directory::{Snapshot, Unavailable, UserEntry};
use crate::session::Session;

pub use routes::{Allowed, Readings, Route, Routes, Site};

/// Proof that a request was allowed; forwarding with identity requires one, and only
/// [`decide`] makes them.
#[derive(Debug, Clone)]
pub struct Permit {
    session: Option<Arc<Session>>,
    user: Option<(Arc<Snapshot>, u32)>,
    step_up_time: Option<i64>,
}

impl Permit {
    /// The signed-in session the permit was granted to (none on public routes).
    pub fn session(&self) -> Option<&Arc<Session>> {
        self.session.as_ref()
    }

    /// The step-up time the request was checked against, when its route required one.
    pub fn step_up_time(&self) -> Option<i64> {
        self.step_up_time
    }

    /// The directory user the permit was checked against, and the snapshot it is from.
    pub fn user(&self) -> Option<(&Snapshot, &UserEntry)> {
        let (snapshot, index) = self.user.as_ref()?;
        Some((snapshot, snapshot.user_at(*index)?))
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The route's access is `deny`.
    Route,
    /// The signed-in user is not in the directory.
    UnknownUser,
    /// The user is suspended, locked, staged, not activated or has an expired password.
    Inactive,
    /// The user is not in any group bound to the application.
    NotBoundToApp,
    /// The user is in none of the route's groups and not among its users.
    NotAllowed,
}

impl DenyReason {
    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Route => "route_denies",
            DenyReason::UnknownUser => "unknown_user",
            DenyReason::Inactive => "inactive_user",
            DenyReason::NotBoundToApp => "not_bound_to_application",
            DenyReason::NotAllowed => "not_in_allowed_groups",
        }
    }

    /// Whether the user's sessions should end: they may not use anything any more.
    pub fn ends_session(self) -> bool {
        matches!(self, DenyReason::UnknownUser | DenyReason::Inactive)
    }
}

/// What the gateway does with a request on a route: a [`Verdict`] to act on, or the
/// [`Refusal`] to answer. Every caller answers a refusal the same way (an error page), so
/// refusals are the error side and callers can pass them on with `?`.
pub type Decision = Result<Verdict, Refusal>;

/// A request the gateway acts on: forwards, or first sends through a sign-in.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Forward it.
    Allow(Permit),
    /// The route needs a signed-in user and there is none.
    SignIn,
    /// Allowed only after a fresh multi-factor sign-in no older than `max_age` seconds.
    StepUp {
        /// The route's limit, in seconds.
        max_age: i64,
    },
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Refused by the route or the directory.
    Deny(DenyReason),
    /// The directory is too old (or was never read) to decide: fail closed.
    Unavailable(Unavailable),
}

/// Whether the directory lets `user` through a protected route with `allow`: active, bound
/// to the application when one is configured, and in the allow lists when there are any.
pub fn admits(snapshot: &Snapshot, user: &UserEntry, allow: &Allowed) -> Result<(), DenyReason> {
    if !user.active {
        return Err(DenyReason::Inactive);
    }
    if !snapshot.bound_to_app(user) {
        return Err(DenyReason::NotBoundToApp);
    }
    if !allow.is_anyone() {
        let by_group = allow.groups.iter().any(|&r| snapshot.in_ref(user, r));
        let by_user = allow
            .users
            .iter()
            .any(|u| **u == *user.id || user.email.as_deref() == Some(u.as_str()));
        if !by_group && !by_user {
            return Err(DenyReason::NotAllowed);
        }
    }
    Ok(())
}

/// Decides a request on `route` with `session` (the request's valid session, if any) and,
/// when a directory is configured, its snapshot (or why there is none fresh enough).
/// `upgrade` says the request asks to switch protocols (a WebSocket handshake).
pub fn decide(
    route: &Route,
    method: &Method,
    upgrade: bool,
    session: Option<Arc<Session>>,
    directory: Option<Result<Arc<Snapshot>, Unavailable>>,
    now: i64,
) -> Decision {
    match route.access {
        Access::Public => {
            return Ok(Verdict::Allow(Permit {
                session: None,
                user: None,
                step_up_time: None,
            }))
        }
        Access::Deny => return Err(Refusal::Deny(DenyReason::Route)),
        Access::Protected => {}
    }
    let Some(session) = session else {
        return Ok(Verdict::SignIn);
    };
    let snapshot = match directory {
        None => None,
        Some(Err(why)) => return Err(Refusal::Unavailable(why)),
        Some(Ok(snapshot)) => Some(snapshot),
    };
    // The directory is consulted before any step-up, so a step-up never gets an inactive or
    // unauthorized user past group policy.
    let user = match snapshot {
        None => None,
        Some(snapshot) => match admitted_user(&snapshot, &session, &route.allow) {
            Ok(index) => Some((snapshot, index)),
            Err(reason) => return Err(Refusal::Deny(reason)),
        },
    };
    let step_up_time = match &route.step_up {
        Some(rule)
            if rule.applies_to(method, upgrade)
                && asks(rule, user.as_ref().map(|(s, i)| (&**s, *i))) =>
        {
            match session.step_up_time() {
                Some(t) if now - t <= rule.max_age => Some(t),
                _ => {
                    return Ok(Verdict::StepUp {
                        max_age: rule.max_age,
                    })
                }
            }
        }
        _ => None,
    };
    Ok(Verdict::Allow(Permit {
        session: Some(session),
        user,
        step_up_time,
    }))
}

/// The request a decision is about, as the policy sees it: canonical, no headers.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// Its site.
    pub site: &'a Site,
    /// The routes its path yields in every reading; the strictest decision of them applies.
    pub readings: Readings<'a>,
    /// Its method.
    pub method: &'a Method,
    /// Whether it asks to switch protocols (a WebSocket handshake).
    pub upgrade: bool,
    /// Whether it is a browser's page load; read only on sites with
    /// `step_up_on_navigation`, so a caller may leave it false on others.
    pub page_load: bool,
}

/// How strict a decision is: where readings of one path disagree, the strictest wins.
fn severity(d: &Decision) -> u8 {
    match d {
        Ok(Verdict::Allow(p)) if p.step_up_time().is_some() => 1,
        Ok(Verdict::Allow(_)) => 0,
        Ok(Verdict::StepUp { .. }) => 2,
        Ok(Verdict::SignIn) => 3,
        Err(Refusal::Unavailable(_)) => 4,
        Err(Refusal::Deny(_)) => 5,
    }
}

/// The gateway's whole decision on a request: every reading of its path decided, the
/// strictest applied, then a page load on a site that steps up at navigation sent through
/// the step-up first (see [`navigation_step_up`]). Returns the route that decided it with
/// the decision. The reverse proxy, forward-auth and `jumpgate explain` all decide here.
pub fn judge<'a>(
    asked: &Asked<'a>,
    session: Option<Arc<Session>>,
    directory: Option<Result<Arc<Snapshot>, Unavailable>>,
    now: i64,
) -> (&'a Route, Decision) {
    let Asked {
        site,
        readings,
        method,
        upgrade,
        page_load,
    } = *asked;
    let mut route = readings.primary();
    let mut decision = decide(
        route,
        method,
        upgrade,
        session.clone(),
        directory.clone(),
        now,
    );
    for &other in &readings.all()[1..] {
        let d = decide(
            other,
            method,
            upgrade,
            session.clone(),
            directory.clone(),
            now,
        );
        if severity(&d) > severity(&decision) {
            (route, decision) = (other, d);
        }
    }
    if let Ok(Verdict::Allow(permit)) = &decision {
        if page_load {
            if let Some(max_age) = navigation_step_up(site, permit, now) {
                decision = Ok(Verdict::StepUp { max_age });
            }
        }
    }
    (route, decision)
}

/// Whether a step-up rule asks this user: every user when it names no groups, else its
/// groups' members. Without a directory to tell, it asks (fail closed).
fn asks(rule: &routes::StepUpRule, user: Option<(&Snapshot, u32)>) -> bool {
    if rule.groups.is_empty() {
        return true;
    }
    let Some((snapshot, index)) = user else {
        return true;
    };
    snapshot
        .user_at(index)
        .is_none_or(|u| rule.groups.iter().any(|&r| snapshot.in_ref(u, r)))
}

/// For a page load allowed by `permit` on `site` (with `step_up_on_navigation`): the
/// step-up window (seconds) to go through first, when a step-up route of the site would ask
/// this user for a write and less than half of its window is left. A single-page app then
/// gets at least half a window of writes after each page load, with no 401 its script
/// cannot handle; users no step-up route asks are never sent.
pub fn navigation_step_up(site: &Site, permit: &Permit, now: i64) -> Option<i64> {
    if !site.step_up_on_navigation {
        return None;
    }
    let session = permit.session()?;
    let user = permit.user.as_ref().map(|(s, i)| (&**s, *i));
    let max_age = site
        .step_up_routes()
        .filter(|r| r.access == Access::Protected)
        .filter(|r| match user {
            Some((snapshot, index)) => snapshot
                .user_at(index)
                .is_some_and(|u| admits(snapshot, u, &r.allow).is_ok()),
            None => r.allow.is_anyone(),
        })
        .filter_map(|r| r.step_up.as_ref())
        .filter(|rule| asks(rule, user))
        .map(|rule| rule.max_age)
        .min()?;
    match session.step_up_time() {
        Some(t) if now - t <= max_age / 2 => None,
        _ => Some(max_age),
    }
}

fn admitted_user(
    snapshot: &Snapshot,
    session: &Session,
    allow: &Allowed,
) -> Result<u32, DenyReason> {
    let identity = &session.identity;
    let index = snapshot
        .user_index(
            &identity.sub,
            identity.email.as_deref().filter(|_| identity.email_matches),
        )
        .ok_or(DenyReason::UnknownUser)?;
    let user = snapshot.user_at(index).ok_or(DenyReason::UnknownUser)?;
    admits(snapshot, user, allow)?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::snapshot::{RawDirectory, RawGroup, RawUser};
    use std::time::Duration;

    fn d(
        route: &Route,
        session: Option<Arc<Session>>,
        dir: Option<Result<Arc<Snapshot>, Unavailable>>,
    ) -> Decision {
        decide(route, &Method::GET, false, session, dir, 1_000)
    }

    fn route(access: Access, groups: Vec<usize>, users: Vec<&str>) -> Route {
        Route {
            label: Arc::from("/"),
            slot: 1,
            access,
            tunnel_idle_timeout: Duration::from_secs(1),
            upstream_response_timeout: Duration::from_secs(1),
            allow: Arc::new(Allowed {
                groups,
                users: users.into_iter().map(str::to_owned).collect(),
            }),
            step_up: None,
        }
    }

    fn session(sub: &str, email: &str) -> Arc<Session> {
        let config = crate::config::SessionConfig {
            store: crate::config::StoreKind::Memory,
            key_file: "unused".into(),
            lifetime: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            login_timeout: Duration::from_secs(60),
            max_sessions: 10,
            max_pending_logins: 100_000,
            redis: None,
        };
        let sessions = crate::session::Sessions::new(
            &config,
            crate::session::cookie::CookieKey::from_bytes(&[1; 32]),
        );
        let claims = crate::oidc::verify::IdClaims {
            sub: sub.into(),
            exp: 0,
            iat: 0,
            auth_time: None,
            email: Some(email.into()),
            email_verified: None,
            email_matches: false,
            username: None,
            name: None,
            groups: vec![],
            sid: None,
            amr: vec![],
            acr: None,
        };
        let login = crate::oidc::VerifiedLogin {
            claims,
            refresh_token: None,
        };
        futures_util::FutureExt::now_or_never(sessions.create(Arc::from("site"), login))
            .expect("the memory store never waits")
            .expect("the memory store never fails")
            .0
    }

    fn user(id: &str, state: &str) -> RawUser {
        RawUser {
            id: id.into(),
            email: Some(format!("{id}@example.com")),
            username: None,
            state: state.into(),
            activated: true,
            suspended: state == "SUSPENDED",
            account_locked: false,
            password_expired: false,
            problem: None,
        }
    }

    /// Refs: 0 = "Admins" (name), 1 = "g-staff" (id), 2 = "Ghost" (missing).
    fn snapshot(app: Option<Vec<&str>>) -> Arc<Snapshot> {
        let raw = RawDirectory {
            taken_at: 0,
            users: vec![
                user("admin", "ACTIVATED"),
                user("staff", "ACTIVATED"),
                user("gone", "SUSPENDED"),
                user("none", "ACTIVATED"),
            ],
            groups: vec![
                RawGroup {
                    id: "g-admins".into(),
                    name: "Admins".into(),
                    members: vec!["admin".into(), "gone".into()],
                },
                RawGroup {
                    id: "g-staff".into(),
                    name: "Staff".into(),
                    members: vec!["staff".into(), "admin".into()],
                },
            ],
            app_groups: app.map(|a| a.into_iter().map(str::to_owned).collect()),
        };
        Arc::new(Snapshot::build(
            &raw,
            &["Admins".into(), "g-staff".into(), "Ghost".into()],
            1,
        ))
    }

    fn verdict(d: Decision) -> String {
        match d {
            Ok(Verdict::Allow(p)) => format!(
                "allow:{}",
                p.user().map_or("-".to_owned(), |(_, u)| u.id.to_string())
            ),
            Ok(Verdict::SignIn) => "sign-in".into(),
            Err(Refusal::Deny(r)) => format!("deny:{}", r.as_str()),
            Err(Refusal::Unavailable(u)) => format!("unavailable:{u:?}"),
            Ok(Verdict::StepUp { max_age }) => format!("step-up:{max_age}"),
        }
    }

    #[test]
    fn decision_table() {
        let snap = || Some(Ok(snapshot(None)));
        let s = |id: &str| Some(session(id, &format!("{id}@example.com")));
        let admins = route(Access::Protected, vec![0], vec![]);
        let staff_by_id = route(Access::Protected, vec![1], vec![]);
        let ghost = route(Access::Protected, vec![2], vec![]);
        let anyone = route(Access::Protected, vec![], vec![]);
        let by_email = route(Access::Protected, vec![], vec!["none@example.com"]);
        let cases: Vec<(&str, Decision, &str)> = vec![
            (
                "public, no session",
                d(&route(Access::Public, vec![], vec![]), None, None),
                "allow:-",
            ),
            (
                "public ignores a stale directory",
                d(
                    &route(Access::Public, vec![], vec![]),
                    s("gone"),
                    Some(Err(Unavailable::Stale)),
                ),
                "allow:-",
            ),
            (
                "deny route",
                d(&route(Access::Deny, vec![], vec![]), s("admin"), snap()),
                "deny:route_denies",
            ),
            ("protected, no session", d(&anyone, None, snap()), "sign-in"),
            (
                "no directory configured",
                d(&anyone, s("whoever"), None),
                "allow:-",
            ),
            (
                "directory never synced",
                d(&anyone, s("admin"), Some(Err(Unavailable::NeverSynced))),
                "unavailable:NeverSynced",
            ),
            (
                "directory stale",
                d(&anyone, s("admin"), Some(Err(Unavailable::Stale))),
                "unavailable:Stale",
            ),
            (
                "unknown user",
                d(&anyone, s("stranger"), snap()),
                "deny:unknown_user",
            ),
            (
                "suspended user",
                d(&anyone, s("gone"), snap()),
                "deny:inactive_user",
            ),
            (
                "suspended even in the allowed group",
                d(&admins, s("gone"), snap()),
                "deny:inactive_user",
            ),
            (
                "any active user",
                d(&anyone, s("none"), snap()),
                "allow:none",
            ),
            (
                "group by name",
                d(&admins, s("admin"), snap()),
                "allow:admin",
            ),
            (
                "not in group",
                d(&admins, s("staff"), snap()),
                "deny:not_in_allowed_groups",
            ),
            (
                "group by id",
                d(&staff_by_id, s("staff"), snap()),
                "allow:staff",
            ),
            (
                "missing group allows no one",
                d(&ghost, s("admin"), snap()),
                "deny:not_in_allowed_groups",
            ),
            (
                "user by email",
                d(&by_email, s("none"), snap()),
                "allow:none",
            ),
            (
                "user list excludes others",
                d(&by_email, s("admin"), snap()),
                "deny:not_in_allowed_groups",
            ),
            (
                "not bound to app",
                d(
                    &anyone,
                    s("none"),
                    Some(Ok(snapshot(Some(vec!["g-staff"])))),
                ),
                "deny:not_bound_to_application",
            ),
            (
                "bound to app",
                d(
                    &anyone,
                    s("staff"),
                    Some(Ok(snapshot(Some(vec!["g-staff"])))),
                ),
                "allow:staff",
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(verdict(got), want, "{name}");
        }
        assert!(DenyReason::Inactive.ends_session() && !DenyReason::NotAllowed.ends_session());
    }

    #[test]
    fn step_up_table() {
        let mut r = route(Access::Protected, vec![0], vec![]);
        r.step_up = Some(Arc::new(routes::StepUpRule {
            max_age: 900,
            exempt: vec![Method::GET, Method::HEAD, Method::OPTIONS],
            groups: vec![],
        }));
        let snap = || Some(Ok(snapshot(None)));
        let at = |t: i64| {
            let s = session("admin", "admin@example.com");
            if t > 0 {
                s.record_step_up(t);
            }
            s
        };
        let case = |method: Method, s: Arc<Session>, dir, now| {
            verdict(decide(&r, &method, false, Some(s), dir, now))
        };
        let upgrade = |method: Method, s: Arc<Session>| {
            verdict(decide(&r, &method, true, Some(s), snap(), 10_000))
        };
        assert_eq!(
            case(Method::POST, at(0), snap(), 10_000),
            "step-up:900",
            "never stepped up"
        );
        assert_eq!(
            case(Method::POST, at(9_500), snap(), 10_000),
            "allow:admin",
            "fresh"
        );
        assert_eq!(
            case(Method::POST, at(9_100), snap(), 10_000),
            "allow:admin",
            "exactly at the limit"
        );
        assert_eq!(
            case(Method::POST, at(9_099), snap(), 10_000),
            "step-up:900",
            "too old"
        );
        for safe in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(
                case(safe.clone(), at(0), snap(), 10_000),
                "allow:admin",
                "{safe} is exempt"
            );
        }
        // Every method that is not exempt needs it, including ones nobody listed.
        for m in ["DELETE", "PUT", "PATCH", "PROPFIND", "FOO", "CONNECT"] {
            let m = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(case(m.clone(), at(0), snap(), 10_000), "step-up:900", "{m}");
        }
        // A WebSocket handshake is a GET that goes on to carry writes.
        assert_eq!(upgrade(Method::GET, at(0)), "step-up:900");
        assert_eq!(upgrade(Method::GET, at(9_500)), "allow:admin");
        assert_eq!(
            case(
                Method::POST,
                session("gone", "gone@example.com"),
                snap(),
                10_000
            ),
            "deny:inactive_user",
            "the directory is checked before the step-up"
        );
        assert_eq!(
            case(
                Method::POST,
                session("staff", "staff@example.com"),
                snap(),
                10_000
            ),
            "deny:not_in_allowed_groups"
        );
        // With step_up_groups, only their members are asked: "Admins" (ref 0) here.
        let mut scoped = route(Access::Protected, vec![], vec![]);
        scoped.step_up = Some(Arc::new(routes::StepUpRule {
            max_age: 900,
            exempt: vec![Method::GET],
            groups: vec![0],
        }));
        let scoped_case = |s: Arc<Session>, dir| {
            verdict(decide(&scoped, &Method::POST, false, Some(s), dir, 10_000))
        };
        assert_eq!(
            scoped_case(at(0), snap()),
            "step-up:900",
            "an admin is asked"
        );
        assert_eq!(
            scoped_case(session("staff", "staff@example.com"), snap()),
            "allow:staff",
            "a user outside the groups is not"
        );
        assert_eq!(
            scoped_case(session("staff", "staff@example.com"), None),
            "step-up:900",
            "without a directory to tell, everyone is asked"
        );
        let mut public = route(Access::Public, vec![], vec![]);
        public.step_up = r.step_up.clone();
        assert_eq!(
            verdict(decide(&public, &Method::POST, false, None, None, 10_000)),
            "allow:-",
            "a public route never asks"
        );
        let s = at(5_000);
        s.record_step_up(4_000);
        assert_eq!(
            s.step_up_time(),
            Some(5_000),
            "an older step-up never replaces a newer one"
        );
    }
}
