//! The command line's reports, each a read of the live services that prints and exits:
//! `check` against the directory, `directory sync` (and its dry run) with who would gain or
//! lose access, `sessions list|revoke` in Redis, and `explain` (what the gateway would
//! decide on one request, and why).

pub mod check;
pub mod explain;
pub mod sessions;
pub mod sync;
