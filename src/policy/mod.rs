//! Access decisions: pure functions from a matched route (and, later, a session and the
//! directory snapshot) to a [`Decision`]. Nothing here knows about HTTP.

pub mod routes;

use crate::config::Access;

pub use routes::{Route, Routes, Site};

/// What the gateway does with a request on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward it.
    Allow,
    /// The route needs a signed-in user and there is none.
    SignIn,
    /// Never forwarded.
    Deny,
}

/// Decides a request on `route` from the route's access rule alone.
pub fn decide(route: &Route) -> Decision {
    match route.access {
        Access::Public => Decision::Allow,
        Access::Protected => Decision::SignIn,
        Access::Deny => Decision::Deny,
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
    fn decisions() {
        assert_eq!(decide(&route(Access::Public)), Decision::Allow);
        assert_eq!(decide(&route(Access::Protected)), Decision::SignIn);
        assert_eq!(decide(&route(Access::Deny)), Decision::Deny);
    }
}
