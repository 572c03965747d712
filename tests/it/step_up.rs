//! MFA step-up end to end against the fake JumpCloud's second application, the one whose
//! access policy requires MFA: when it is asked for, what proves it, and what never does.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::browser::{idp_get, location, Browser};
use support::env::{Options, SignInEnv};
use support::jumpcloud::Tamper;
use support::site;

const STEP_UP_ID: &str = "jumpgate-step-up";
const STEP_UP_SECRET: &str = "step-up-secret";

struct StepUpEnv {
    env: SignInEnv,
    /// The audit log (JSON lines).
    audit: std::path::PathBuf,
    _secret_dir: tempfile::TempDir,
}

async fn start(step_up_extra: &str, admin_max_age: &str) -> StepUpEnv {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("step-up-secret");
    std::fs::write(&secret, STEP_UP_SECRET).unwrap();
    let echo = support::Echo::start().await;
    let url = echo.url();
    std::mem::forget(echo);
    let sites = format!(
        "{}  [[site.route]]\n  path = \"/admin\"\n  step_up = \"{admin_max_age}\"\n  step_up_exempt_methods = []\n  [[site.route]]\n  path = \"/api\"\n  step_up = \"15m\"\n",
        site("app.test", &url, "protected", &[("/public", "public")])
    );
    let env = SignInEnv::start_with(Options {
        sites: Some(sites),
        oidc: format!(
            "\n[oidc.step_up]\nclient_id = \"{STEP_UP_ID}\"\nclient_secret_file = \"{}\"\n{step_up_extra}\n",
            secret.display()
        ),
        session: format!(
            "\n[audit]\noutput = \"{}\"\n",
            secret_dir.path().join("audit.jsonl").display()
        ),
        ..Options::default()
    })
    .await;
    register_step_up_app(&env);
    // The step-up client discovers the provider on its own; readiness waits for it.
    env.wait_ready().await;
    StepUpEnv {
        env,
        audit: secret_dir.path().join("audit.jsonl"),
        _secret_dir: secret_dir,
    }
}

/// Registers the step-up application at the fake: its access policy requires MFA, and it
/// is bound to everyone.
fn register_step_up_app(env: &SignInEnv) {
    env.register_step_up_app(STEP_UP_ID, STEP_UP_SECRET);
}

/// From a 302 into the step-up application to the reply of our step-up callback.
async fn through_step_up(b: &mut Browser, challenge: &support::Reply) -> support::Reply {
    assert_eq!(challenge.status, 302, "{}", challenge.text());
    let to = location(challenge);
    assert!(to.contains(&format!("client_id={STEP_UP_ID}")), "{to}");
    assert!(
        to.contains("prompt=login") && to.contains("max_age=0"),
        "{to}"
    );
    let idp = idp_get(&to).await;
    assert_eq!(idp.status, 302, "{}", idp.text());
    b.follow(&idp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_step_up_is_asked_for_accepted_reused_and_asked_again_when_old() {
    let s = start("", "3s").await;
    let mut b = s.env.browser();
    assert_eq!(b.sign_in("/dashboard").await.status, 200);
    assert_eq!(
        b.get("/public/x").await.status,
        200,
        "a public route never asks"
    );

    let before = b.cookie(jumpgate::session::cookie::SESSION).unwrap();
    let challenge = b.get("/admin/users?tab=1").await;
    let back = through_step_up(&mut b, &challenge).await;
    assert_eq!(back.status, 302, "{}", back.text());
    assert_eq!(location(&back), "/admin/users?tab=1");
    // A privilege change gets a new session id; the old one no longer works at all.
    let after = b.cookie(jumpgate::session::cookie::SESSION).unwrap();
    assert_ne!(before, after, "the step-up rotated the session id");
    let mut old = s.env.browser();
    old.set_cookie(jumpgate::session::cookie::SESSION, &before);
    assert_eq!(
        old.get("/dashboard").await.status,
        302,
        "the old id is dead"
    );
    let page = b.follow(&back).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let t: i64 = page
        .upstream_header("x-jumpgate-step-up-time")
        .unwrap()
        .parse()
        .unwrap();
    assert!((t - jumpgate::clock::now()).abs() < 60);
    let assertion = page.upstream_header("x-jumpgate-assertion").unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            assertion.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["step_up_time"], t);
    let issued = s.env.fake.issued();
    assert!(
        issued.iter().any(|i| i.client_id == STEP_UP_ID && i.mfa),
        "the step-up went through the MFA app"
    );
    let audit = std::fs::read_to_string(&s.audit).unwrap();
    let line = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["event"] == "step_up" && l["decision"] == "ok")
        .unwrap_or_else(|| panic!("no step_up/ok audit line in:\n{audit}"));
    assert_eq!(line["user"], s.env.alice.as_str());
    assert!(
        audit.contains("\"decision\":\"step_up\""),
        "the challenge itself is an access line: {audit}"
    );

    // Within the window: no new step-up; other routes do not get the step-up header.
    assert_eq!(b.get("/admin/other").await.status, 200);
    let plain = b.get("/dashboard").await;
    assert_eq!(plain.upstream_header("x-jumpgate-step-up-time"), None);
    // Past it: asked again.
    // Times are whole seconds: move past the limit by more than one.
    s.env.gw.advance(Duration::from_millis(4600));
    let again = b.get("/admin/users").await;
    assert_eq!(again.status, 302);
    assert!(location(&again).contains(STEP_UP_ID));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_get_the_rfc_9470_challenge_and_methods_scope_it() {
    let s = start("", "15m").await;
    let mut b = s.env.browser();
    assert_eq!(b.sign_in("/dashboard").await.status, 200);
    assert_eq!(
        b.request("GET", "/api/v1/user", &[("accept", "application/json")])
            .await
            .status,
        200,
        "GET is not scoped"
    );
    let r = b
        .request("POST", "/api/v1/user", &[("accept", "application/json")])
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer error=\"insufficient_user_authentication\", error_description=\"A recent multi-factor sign-in is required\", max_age=\"900\""
    );
    let body = r.json();
    assert_eq!(body["error"], "insufficient_user_authentication");
    let url = body["step_up_url"].as_str().unwrap().to_owned();
    assert!(
        url.ends_with("/.jumpgate/step-up?rd=%2Fapi%2Fv1%2Fuser"),
        "{url}"
    );
    assert_eq!(b.request("DELETE", "/api/v1/user/1", &[]).await.status, 401);
    // The safe methods are exempt; every other method is not, whether or not anyone
    // thought of it, and a WebSocket handshake is decided as the write it leads to.
    for safe in ["HEAD", "OPTIONS"] {
        assert_eq!(
            b.request(safe, "/api/v1/user", &[]).await.status,
            200,
            "{safe} is exempt"
        );
    }
    for method in ["PUT", "PATCH", "PROPFIND", "FOO", "MKCOL"] {
        assert_eq!(
            b.request(method, "/api/v1/user", &[("accept", "application/json")])
                .await
                .status,
            401,
            "{method} needs the step-up"
        );
    }
    let r = b
        .request(
            "GET",
            "/api/v1/stream",
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        )
        .await;
    assert_eq!(r.status, 401, "a WebSocket handshake needs the step-up");
    assert!(r.upstream_header("x-jumpgate-user").is_none());
    // An XHR GET on a route that always needs it also gets the challenge, never a redirect.
    let r = b
        .request("GET", "/admin", &[("x-requested-with", "XMLHttpRequest")])
        .await;
    assert_eq!(r.status, 401);
    // The front end opens step_up_url, then retries: now allowed.
    let start_at = b.get(&support::browser::gateway_path(&url)).await;
    let back = through_step_up(&mut b, &start_at).await;
    assert_eq!(location(&back), "/api/v1/user");
    let r = b
        .request("POST", "/api/v1/user", &[("accept", "application/json")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.upstream_header("x-jumpgate-step-up-time").is_some());
}

/// Runs a step-up whose token is altered by `tamper` (or by a fault set by `prepare`) and
/// asserts it is refused and grants nothing.
async fn refused(s: &StepUpEnv, prepare: impl FnOnce(&SignInEnv)) {
    let mut b = s.env.browser();
    assert_eq!(b.sign_in("/dashboard").await.status, 200);
    let challenge = b.get("/admin").await;
    prepare(&s.env);
    let back = through_step_up(&mut b, &challenge).await;
    assert_eq!(
        back.status,
        403,
        "step-up should be refused: {}",
        back.text()
    );
    assert!(back.text().contains("Additional sign-in not accepted"));
    let after = b.get("/admin").await;
    assert_eq!(after.status, 302, "a refused step-up must grant nothing");
    assert!(location(&after).contains(STEP_UP_ID));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_do_not_prove_a_fresh_step_up_are_refused() {
    let s = start("", "15m").await;
    // A token for the ordinary client, not the MFA application.
    refused(&s, |env| {
        env.fake
            .tamper_next_id_token(Tamper::claims(|c| c["aud"] = json!(["jumpgate-test"])));
    })
    .await;
    // Another user's login.
    refused(&s, |env| {
        env.fake.tamper_next_id_token(Tamper::claims(|c| {
            c["sub"] = json!("5f0000000000000000000000")
        }));
    })
    .await;
    // An old authentication (the provider reused a sign-in from 10 minutes ago).
    refused(&s, |env| {
        let old = jumpgate::clock::now() - 600;
        env.fake
            .tamper_next_id_token(Tamper::claims(move |c| c["auth_time"] = json!(old)));
    })
    .await;
    // No auth_time at all.
    refused(&s, |env| {
        env.fake.tamper_next_id_token(Tamper::claims(|c| {
            c.as_object_mut().unwrap().remove("auth_time");
        }));
    })
    .await;
    // The user's MFA fails at the provider: JumpCloud answers access_denied.
    refused(&s, |env| {
        env.fake.update_user(&env.alice, |u| u.mfa_ok = false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_amr_and_acr_are_enforced_whatever_the_browser_asks_for() {
    let s = start("require_amr = [\"mfa\"]\nacr_values = \"phr\"\n", "15m").await;
    // JumpCloud sends neither amr nor acr: refused.
    refused(&s, |_| {}).await;
    // amr present but acr wrong.
    refused(&s, |env| {
        env.fake.tamper_next_id_token(Tamper::claims(|c| {
            c["amr"] = json!(["pwd", "mfa"]);
            c["acr"] = json!("basic");
        }));
    })
    .await;
    // Both right: accepted. The browser editing acr_values in the URL changes nothing: only
    // the token's claims count.
    let mut b = s.env.browser();
    assert_eq!(b.sign_in("/dashboard").await.status, 200);
    let challenge = b.get("/admin").await;
    let edited = location(&challenge).replace("acr_values=phr", "acr_values=none");
    s.env.fake.tamper_next_id_token(Tamper::claims(|c| {
        c["amr"] = json!(["pwd", "mfa"]);
        c["acr"] = json!("phr");
    }));
    let idp = idp_get(&edited).await;
    let back = b.follow(&idp).await;
    assert_eq!(back.status, 302, "{}", back.text());
    assert_eq!(b.follow(&back).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_callback_is_single_use_and_never_signs_anyone_in() {
    let s = start("", "15m").await;
    let mut b = s.env.browser();
    assert_eq!(b.sign_in("/dashboard").await.status, 200);
    let challenge = b.get("/admin").await;
    let idp = idp_get(&location(&challenge)).await;
    let callback = support::browser::gateway_path(&location(&idp));
    // Another browser with no session cannot use the callback to get anything.
    let mut other = Browser::new(s.env.gw.client(), "app.test");
    let r = other.get(&callback).await;
    assert_eq!(r.status, 400);
    // The state was consumed by that attempt: the real browser must start again.
    let r = b.get(&callback).await;
    assert_eq!(r.status, 400);
    assert_eq!(b.get("/admin").await.status, 302);
}

/// A site that steps up at page load, with admin-only step-up routes: an admin's page load
/// goes through the step-up when less than half of the window is left, so the page's own
/// script can write afterwards without a 401 it cannot handle; an ordinary user is never
/// asked, at page load or on self-service writes; scripts keep the RFC 9470 challenge, and
/// a native form post is sent through the step-up and back to the page that posted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_step_up_at_page_load_and_ordinary_users_are_never_asked() {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("step-up-secret");
    std::fs::write(&secret, STEP_UP_SECRET).unwrap();
    let echo = support::Echo::start().await;
    let url = echo.url();
    std::mem::forget(echo);
    let sites = format!(
        "[[site]]\nhost = \"app.test\"\nupstream = \"{url}\"\naccess = \"protected\"\nallow_groups = [\"Staff\", \"Admins\"]\nstep_up_on_navigation = true\n  [[site.route]]\n  path = \"/public\"\n  access = \"public\"\n  [[site.route]]\n  path = \"/api/settings\"\n  allow_groups = [\"Admins\"]\n  step_up = \"6s\"\n  [[site.route]]\n  path = \"/api/user\"\n  step_up = \"15m\"\n  step_up_groups = [\"Admins\"]\n"
    );
    let env = SignInEnv::start_with(Options {
        sites: Some(sites),
        directory: Some(String::new()),
        oidc: format!(
            "\n[oidc.step_up]\nclient_id = \"{STEP_UP_ID}\"\nclient_secret_file = \"{}\"\n",
            secret.display()
        ),
        ..Options::default()
    })
    .await;
    register_step_up_app(&env);
    // bob is staff only; wait for a directory sync that started after he was added.
    let served = env.fake.systemusers_pages_served();
    let bob = env.fake.add_user(support::jumpcloud::User::new("bob"));
    let staff = env.fake.with_state(|s| {
        s.groups
            .iter()
            .find(|g| g.name == "Staff")
            .unwrap()
            .id
            .clone()
    });
    env.fake.add_member(&staff, &bob);
    assert!(
        support::eventually(Duration::from_secs(10), async || env
            .fake
            .systemusers_pages_served()
            >= served + 2)
        .await,
        "no directory sync saw bob"
    );
    let json = [("accept", "application/json"), ("sec-fetch-mode", "cors")];

    // An ordinary user: page loads and self-service writes, never a step-up.
    env.fake.set_next_login(Some(&bob));
    let mut user = env.browser();
    let page = user.sign_in("/dashboard").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(user.get("/settings-page").await.status, 200);
    let r = user
        .request("PUT", "/api/user/change_password", &json)
        .await;
    assert_eq!(r.status, 200, "self-service: {}", r.text());
    let r = user.request("PUT", "/api/settings", &json).await;
    assert_eq!(r.status, 403, "not an admin");

    // An admin: the first page load goes through the step-up application and back.
    env.fake.set_next_login(Some(&env.alice));
    let mut admin = env.browser();
    let first = admin.sign_in_callback("/settings-page").await;
    assert_eq!(location(&first), "/settings-page");
    let challenge = admin.follow(&first).await;
    let back = through_step_up(&mut admin, &challenge).await;
    assert_eq!(back.status, 302, "{}", back.text());
    assert_eq!(location(&back), "/settings-page");
    let page = admin.follow(&back).await;
    assert_eq!(page.status, 200, "{}", page.text());
    // The page's script writes without any challenge; another page load within the first
    // half of the window is not sent again.
    let r = admin.request("PUT", "/api/settings", &json).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let stepped_up: i64 = r
        .upstream_header("x-jumpgate-step-up-time")
        .expect("the step-up time upstream")
        .parse()
        .unwrap();
    assert_eq!(admin.get("/other-page").await.status, 200);
    // The window is in whole seconds from the step-up's auth_time: wait for the clock.
    let until = |t: i64| async move {
        while support::unix_now() < t {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Script requests never get a redirect: past the window, the RFC 9470 challenge.
    until(stepped_up + 4).await;
    let r = admin.request("GET", "/api/user/me", &json).await;
    assert_eq!(r.status, 200, "reads need no step-up");
    let load = admin.get("/settings-page").await;
    assert_eq!(
        load.status, 302,
        "past half the window, a page load steps up"
    );
    assert!(location(&load).contains(STEP_UP_ID), "{}", location(&load));
    until(stepped_up + 7).await;
    let r = admin.request("PUT", "/api/settings", &json).await;
    assert_eq!(r.status, 401, "the window lapsed: {}", r.text());
    // A native form post that needs the step-up goes through it and back to its page.
    let origin = format!("https://app.test:{}", env.gw.addr.port());
    let referer = format!("{origin}/consent?client_id=x");
    let form = admin
        .request(
            "POST",
            "/api/settings/form",
            &[
                ("sec-fetch-mode", "navigate"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("accept", "text/html"),
                ("referer", &referer),
            ],
        )
        .await;
    assert_eq!(form.status, 303, "{}", form.text());
    assert_eq!(
        location(&form),
        format!("{origin}/.jumpgate/step-up?rd=%2Fconsent%3Fclient_id%3Dx")
    );
    // A referer from elsewhere is not followed back.
    let form = admin
        .request(
            "POST",
            "/api/settings/form",
            &[
                ("sec-fetch-mode", "navigate"),
                ("referer", "https://evil.example/consent"),
            ],
        )
        .await;
    assert_eq!(form.status, 303);
    assert!(
        location(&form).ends_with("/.jumpgate/step-up?rd=%2F"),
        "{}",
        location(&form)
    );
}
