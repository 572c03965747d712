//! Access decisions: pure functions from a matched route and the request's session to a
//! [`Decision`]. Nothing here performs I/O or builds HTTP responses.

pub mod routes;

use std::sync::Arc;

use crate::config::Access;
use crate::session::Session;

pub use routes::{Route, Routes, Site};

/// Proof that a request was allowed; forwarding with identity requires one, and only
/// [`decide`] makes them.
#[derive(Debug, Clone)]
pub struct Permit {
    session: Option<Arc<Session>>,
}

impl Permit {
    /// The signed-in session the permit was granted to (none on public routes).
    pub fn session(&self) -> Option<&Arc<Session>> {
        self.session.as_ref()
    }
}

/// What the gateway does with a request on a route.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Forward it.
    Allow(Permit),
    /// The route needs a signed-in user and there is none.
    SignIn,
    /// Never forwarded.
    Deny,
}

/// Decides a request on `route` with `session` (the request's valid session, if any).
pub fn decide(route: &Route, session: Option<Arc<Session>>) -> Decision {
    match route.access {
        Access::Public => Decision::Allow(Permit { session: None }),
        Access::Deny => Decision::Deny,
        Access::Protected => match session {
            Some(session) => Decision::Allow(Permit {
                session: Some(session),
            }),
            None => Decision::SignIn,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn route(access: Access) -> Route {
        Route {
            label: std::sync::Arc::from("/"),
            access,
            tunnel_idle_timeout: Duration::from_secs(1),
            upstream_response_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn decisions_without_session() {
        assert!(
            matches!(decide(&route(Access::Public), None), Decision::Allow(p) if p.session().is_none())
        );
        assert!(matches!(
            decide(&route(Access::Protected), None),
            Decision::SignIn
        ));
        assert!(matches!(decide(&route(Access::Deny), None), Decision::Deny));
    }
}
