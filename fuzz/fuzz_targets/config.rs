//! Configuration parsing on arbitrary text: `config::parse` never panics (nor does TOML
//! parsing on deep nesting), and a configuration it accepts compiles into routes, summarises,
//! and routes any path without panicking.

#![no_main]

use std::path::Path;

use jumpgate::config;
use jumpgate::policy::Routes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(text, Path::new("/etc/jumpgate/gateway.toml")) {
        Ok(cfg) => {
            assert!(!cfg.sites.is_empty(), "a valid configuration has a site");
            let _ = config::summary(&cfg);
            let routes = Routes::compile(&cfg);
            for s in &cfg.sites {
                let site = routes
                    .site(&s.host.to_ascii_lowercase())
                    .expect("every configured host has a site");
                for path in ["/", "/a", "/a/b/", "/.jumpgate/x"] {
                    let _ = site.find(path);
                }
            }
        }
        Err(e) => {
            // Every problem renders as one line.
            let _ = e.to_string();
        }
    }
});
