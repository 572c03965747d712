//! The command line's reports, each a read of the live services that prints and exits:
//! `check` against the directory, `directory sync` (and its dry run) with who would gain or
//! lose access, and `sessions list|revoke` in Redis.

pub mod check;
pub mod sessions;
pub mod sync;
