//! jumpgate's integration tests, as one test binary: one module per area (the proxy, sign-in
//! and its attacks, step-up, the directory, Redis, forward-auth, Defguard, ...), all sharing
//! `tests/support` (the fake JumpCloud, the browser stand-in, gateways and upstreams on
//! loopback). One binary compiles and links the support code once.
//!
//! `cargo test --test it attacks::` runs one module (`attacks::smuggling::` one attack class); `cargo test --test it` all of them.

#[path = "../support/mod.rs"]
mod support;

mod api_tokens;
mod attacks;
mod audit;
mod backchannel;
mod check;
mod defguard;
mod directory;
mod directory_sync;
mod explain;
mod fake_directory;
mod fake_jumpcloud;
mod forward_auth;
mod lifecycle;
mod monitoring;
mod proxy;
mod redis;
mod redis_sentinel;
mod reload;
mod signin;
mod signin_flow;
mod status;
mod step_up;
mod streaming;
