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
}

pub struct SignInEnv {
    pub fake: FakeJumpCloud,
    pub echo: Echo,
    pub gw: Gateway,
    /// The default user, `alice`, member of "Admins" and "Staff", next to sign in.
    pub alice: String,
    pub dir: tempfile::TempDir,
}

impl SignInEnv {
    pub async fn start() -> SignInEnv {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> SignInEnv {
        let fake = FakeJumpCloud::start().await;
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
        let rest = format!(
            "{sites}\n[oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"{}\"\nscopes = [\"openid\", \"profile\", \"email\", \"offline_access\"]\ngroups_claim = \"memberOf\"\n{}\n[session]\nkey_file = \"{}\"\n{}\n[identity]\nsigning_key_file = \"{}\"\n",
            fake.issuer(),
            secret.display(),
            opts.oidc,
            dir.path().join("session.key").display(),
            opts.session,
            dir.path().join("assertion.key").display(),
        );
        let gw = Gateway::start_with(&rest, &opts.server, "").await;
        let port = gw.addr.port();
        let mut app = App::new(
            CLIENT_ID,
            CLIENT_SECRET,
            &format!("https://app.test:{port}/.jumpgate/callback"),
        );
        for host in ["other.test", "enroll.test", "localhost"] {
            app.redirect_uris
                .push(format!("https://{host}:{port}/.jumpgate/callback"));
        }
        app.refresh_grant = true;
        app.groups_claim = Some("memberOf".into());
        let alice = fake.add_user(User::new("alice"));
        let admins = fake.add_group("Admins");
        let staff = fake.add_group("Staff");
        fake.add_member(&admins, &alice);
        fake.add_member(&staff, &alice);
        app.bound_groups = vec![admins, staff];
        fake.add_app(app);
        fake.set_next_login(Some(&alice));
        let env = SignInEnv {
            fake,
            echo,
            gw,
            alice,
            dir,
        };
        env.wait_ready().await;
        env
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
