//! A whole sign-in environment: the fake JumpCloud, an echo upstream and a gateway whose
//! `[oidc]` points at the fake, with an SSO application registered for the gateway.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use super::browser::Browser;
use super::jumpcloud::{App, FakeJumpCloud, User};
use super::{site, Echo, Gateway};

pub const CLIENT_ID: &str = "jumpgate-test";
pub const CLIENT_SECRET: &str = "s3cret-for-tests";

/// Knobs for [`SignInEnv::start_with`].
#[derive(Default)]
pub struct Options {
    /// Site blocks; default: `app.test` protected with `/public` public.
    pub sites: Option<String>,
    /// Extra `[oidc]` keys.
    pub oidc: String,
    /// Extra `[session]` keys.
    pub session: String,
    /// Extra `[server]` keys.
    pub server: String,
    /// `[server.limits]` keys.
    pub limits: String,
    /// When set, a `[directory]` table pointing at the fake's directory API, with these
    /// extra keys (fast sync and retry settings are filled in unless given here).
    pub directory: Option<String>,
    /// The directory cache file; default: in the environment's temporary directory.
    pub cache_file: Option<std::path::PathBuf>,
}

pub struct SignInEnv {
    pub fake: FakeJumpCloud,
    pub echo: Echo,
    pub gw: Gateway,
    /// The default user, `alice`, member of "Admins" and "Staff", next to sign in.
    pub alice: String,
    pub dir: tempfile::TempDir,
    /// The gateway's config (after `[server]`), to start another with the same settings.
    pub rest: String,
    pub server: String,
    pub limits: String,
}

/// Registers the gateway's callback on every test host for `port`.
fn register_redirects(fake: &FakeJumpCloud, port: u16) {
    fake.update_app(CLIENT_ID, |app| {
        for host in ["app.test", "other.test", "enroll.test", "localhost"] {
            app.redirect_uris
                .push(format!("https://{host}:{port}/.jumpgate/callback"));
        }
    });
}

impl SignInEnv {
    pub async fn start() -> SignInEnv {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> SignInEnv {
        Self::start_custom(opts, Custom::default()).await
    }

    /// Starts another gateway instance with the same settings (and `replace` applied to its
    /// config text), as a second instance behind a load balancer would be.
    pub async fn another_gateway(&self, replace: &[(&str, &str)]) -> Gateway {
        let mut rest = self.rest.clone();
        for (from, to) in replace {
            rest = rest.replace(from, to);
        }
        let gw = Gateway::start_with(&rest, &self.server, &self.limits).await;
        register_redirects(&self.fake, gw.addr.port());
        gw
    }

    /// Replaces the gateway with a new one (new process state, same config and key files),
    /// as a restart would, and waits until it is ready.
    pub async fn restart_gateway(&mut self) {
        let task = self.gw.shutdown();
        let _ = task.await;
        self.gw = Gateway::start_with(&self.rest, &self.server, &self.limits).await;
        register_redirects(&self.fake, self.gw.addr.port());
    }

    /// Waits until the gateway has discovered the provider.
    pub async fn wait_ready(&self) {
        for _ in 0..100 {
            if self.gw.admin_get("/readyz").await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "gateway never became ready: {}",
            self.gw.admin_get("/readyz").await.1
        );
    }

    pub fn browser(&self) -> Browser {
        Browser::new(self.gw.client(), "app.test")
    }
}

/// What [`SignInEnv::start_custom`] changes from [`SignInEnv::start_with`].
#[derive(Default)]
pub struct Custom {
    /// `oidc.issuer` as written in the config, made from the fake's base URL
    /// (`http://127.0.0.1:PORT`, no trailing slash); default: the fake's own issuer.
    pub issuer: Option<fn(&str) -> String>,
    /// Applied to the fake before the gateway starts, so discovery already sees it.
    pub quirks: Option<fn(&mut super::jumpcloud::Quirks)>,
    /// Stop the fake before the gateway starts; readiness is then not awaited.
    pub fake_down: bool,
}

impl SignInEnv {
    /// [`SignInEnv::start_with`] plus the changes in `custom`.
    pub async fn start_custom(opts: Options, custom: Custom) -> SignInEnv {
        let fake = FakeJumpCloud::start().await;
        if let Some(q) = custom.quirks {
            fake.quirks(q);
        }
        let issuer = match custom.issuer {
            Some(f) => f(&fake.base_url()),
            None => fake.issuer(),
        };
        let echo = Echo::start().await;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("client-secret");
        std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
        let sites = opts.sites.unwrap_or_else(|| {
            site(
                "app.test",
                &echo.url(),
                "protected",
                &[("/public", "public")],
            )
        });
        // Users, groups and the application exist before the gateway starts, so its first
        // directory sync already sees them.
        let alice = fake.add_user(User::new("alice"));
        let admins = fake.add_group("Admins");
        let staff = fake.add_group("Staff");
        fake.add_member(&admins, &alice);
        fake.add_member(&staff, &alice);
        let mut app = App::new(CLIENT_ID, CLIENT_SECRET, "https://unused.invalid/");
        app.refresh_grant = true;
        app.groups_claim = Some("memberOf".into());
        app.bound_groups = vec![admins, staff];
        fake.add_app(app);
        fake.set_next_login(Some(&alice));
        let directory = match &opts.directory {
            None => String::new(),
            Some(extra) => {
                let key = dir.path().join("api-key");
                std::fs::write(&key, fake.api_key()).unwrap();
                let cache = opts
                    .cache_file
                    .clone()
                    .unwrap_or_else(|| dir.path().join("directory.json"));
                let mut table = format!(
                    "[directory]\nprovider = \"jumpcloud\"\napi_url = \"{}\"\napi_key_file = \"{}\"\ncache_file = \"{}\"\n",
                    fake.base_url(),
                    key.display(),
                    cache.display()
                );
                for (k, v) in [
                    ("sync_interval", "\"1s\""),
                    ("request_interval", "\"1ms\""),
                    ("retry_backoff", "\"50ms\""),
                    ("request_timeout", "\"5s\""),
                ] {
                    if !extra.contains(k) {
                        table.push_str(&format!("{k} = {v}\n"));
                    }
                }
                table.push_str(extra);
                table
            }
        };
        let rest = format!(
            "{sites}\n[oidc]\nissuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"{}\"\nscopes = [\"openid\", \"profile\", \"email\", \"offline_access\"]\ngroups_claim = \"memberOf\"\n{}\n[session]\nkey_file = \"{}\"\n{}\n[identity]\nsigning_key_file = \"{}\"\n{directory}\n",
            secret.display(),
            opts.oidc,
            dir.path().join("session.key").display(),
            opts.session,
            dir.path().join("assertion.key").display(),
        );
        if custom.fake_down {
            fake.stop().await;
        }
        // Tests sign in many times from one address; the rate limit has tests of its own.
        let limits = if opts.limits.contains("sign_in_rate") {
            opts.limits.clone()
        } else {
            format!("sign_in_rate = 100000\n{}", opts.limits)
        };
        let gw = Gateway::start_with(&rest, &opts.server, &limits).await;
        register_redirects(&fake, gw.addr.port());
        let env = SignInEnv {
            fake,
            echo,
            gw,
            alice,
            dir,
            rest,
            server: opts.server,
            limits,
        };
        if !custom.fake_down {
            env.wait_ready().await;
        }
        env
    }

    /// Registers the step-up application `client_id` at the fake, its callback on this
    /// gateway's app.test: its access policy requires MFA, and it is bound to everyone.
    pub fn register_step_up_app(&self, client_id: &str, secret: &str) {
        let port = self.gw.addr.port();
        let mut app = App::new(
            client_id,
            secret,
            &format!("https://app.test:{port}/.jumpgate/step-up/callback"),
        );
        app.require_mfa = true;
        app.bind_everyone = true;
        self.fake.add_app(app);
    }

    /// The id of the fake's group named `name`.
    /// Waits until a directory sync that started after this call has finished: the count
    /// of records fetched moves twice (the first move may end a sync already under way).
    pub async fn wait_for_a_sync(&self) {
        const FETCHED: &str = "jumpgate_directory_records_fetched_total ";
        let fetched = || async {
            let (_, text) = self.gw.admin_get("/metrics").await;
            text.lines()
                .find_map(|l| l.strip_prefix(FETCHED)?.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {FETCHED}in the metrics:\n{text}"))
        };
        let mut last = fetched().await;
        let mut moves = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while moves < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "no directory sync finished within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = fetched().await;
            if now > last {
                moves += 1;
                last = now;
            }
        }
    }

    pub fn group_id(&self, name: &str) -> String {
        self.fake.with_state(|s| {
            s.groups
                .iter()
                .find(|g| g.name == name)
                .map(|g| g.id.clone())
                .unwrap_or_else(|| panic!("no group {name}"))
        })
    }
}

/// Whether `reply` sends the browser to the provider's authorization endpoint.
pub fn is_idp_redirect(env: &SignInEnv, reply: &super::Reply) -> bool {
    reply.status == 302
        && reply
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|l| l.starts_with(&format!("{}/oauth2/auth?", env.fake.base_url())))
}
