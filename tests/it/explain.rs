//! `jumpgate explain` against the gateway itself: over a table of users (by directory
//! state and groups) and requests (routes, path tricks, page loads, form posts, scripts),
//! the explanation's status is the status the running gateway answered, and its decision,
//! reason and route are those of the audit line the gateway wrote under the answer's
//! request id. The command line's exit codes and report are checked on the real binary.

use crate::support;

use std::process::Command;

use support::browser::Browser;
use support::env::{Options, SignInEnv};
use support::jumpcloud::User;
use support::site;

use jumpgate::cli::explain::{explain, Outcome, Question};

const STEP_UP_ID: &str = "jumpgate-explain-step-up";

struct Env {
    env: SignInEnv,
    audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("step-up-secret");
    std::fs::write(&secret, "step-up-secret\n").unwrap();
    let echo = support::Echo::start().await;
    let url = echo.url();
    std::mem::forget(echo);
    let sites = format!(
        "{}  [[site.route]]\n  path = \"/admin\"\n  allow_groups = [\"Admins\"]\n  [[site.route]]\n  path = \"/ops\"\n  step_up = \"5m\"\n",
        site(
            "app.test",
            &url,
            "protected",
            &[("/public", "public"), ("/internal", "deny")]
        )
    );
    let audit = dir.path().join("audit.jsonl");
    let env = SignInEnv::start_with(Options {
        sites: Some(sites),
        oidc: format!(
            "\n[oidc.step_up]\nclient_id = \"{STEP_UP_ID}\"\nclient_secret_file = \"{}\"\n",
            secret.display()
        ),
        session: format!("\n[audit]\noutput = \"{}\"\n", audit.display()),
        directory: Some(String::new()),
        ..Options::default()
    })
    .await;
    Env {
        env,
        audit,
        _dir: dir,
    }
}

/// The requests of the table: method, path, and whether a script (not a page) sends it.
const REQUESTS: &[(&str, &str, bool)] = &[
    ("GET", "/dashboard", false),
    ("GET", "/dashboard", true),
    ("GET", "/admin/settings", false),
    ("GET", "/ADMIN;v=1/settings", false),
    ("GET", "/admin/../public/x", false),
    ("GET", "/public/x", true),
    ("GET", "/internal/x", false),
    ("GET", "/ops/run", false),
    ("POST", "/ops/run", false),
    ("PUT", "/ops/run", true),
];

const SCRIPT: &[(&str, &str)] = &[("accept", "application/json"), ("sec-fetch-mode", "cors")];

/// The headers `b` sends with a request, for explain to be asked the same question.
fn headers_of(b: &Browser, script: bool) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in &b.headers {
        if !(script && SCRIPT.iter().any(|(s, _)| s.eq_ignore_ascii_case(k))) {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
    }
    if script {
        for (k, v) in SCRIPT {
            map.insert(*k, v.parse().unwrap());
        }
    }
    map
}

/// Asks the gateway and explain the same question and checks they tell the same story.
async fn compare(e: &Env, b: &mut Browser, user: Option<&str>, request: (&str, &str, bool)) {
    let (method, path, script) = request;
    let extra: &[(&str, &str)] = if script { SCRIPT } else { &[] };
    let reply = b.request(method, path, extra).await;
    let config = jumpgate::config::Config::load(&e.env.gw.config_path).unwrap();
    let question = Question {
        user: user.map(str::to_owned),
        method: method.parse().unwrap(),
        url: format!("https://app.test{path}"),
        headers: headers_of(b, script),
        step_up_age: None,
    };
    let explained = explain(&config, &question, jumpgate::clock::now()).unwrap();
    let case = format!(
        "{user:?} {method} {path} script={script}:\n{}",
        explained.text
    );
    assert_eq!(
        reply.status,
        explained.status.unwrap_or(200),
        "{case}\ngateway: {}",
        reply.text()
    );
    // The audit line under the answer's request id says what the explanation says.
    let id = reply
        .headers
        .get("x-request-id")
        .expect("every answer carries its request id")
        .to_str()
        .unwrap()
        .to_owned();
    let lines = support::audit_lines(&e.audit, |l| l["request_id"] == id.as_str()).await;
    let line = lines
        .iter()
        .find(|l| l["request_id"] == id.as_str() && l["event"] == "access")
        .unwrap_or_else(|| panic!("no audit line for {id}: {case}"));
    assert_eq!(line["decision"], explained.decision, "{case}\n{line}");
    assert_eq!(line["reason"].as_str(), explained.reason, "{case}\n{line}");
    assert_eq!(
        line["route"].as_str(),
        explained.route.as_deref(),
        "{case}\n{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_decides_as_the_gateway_does_and_tells_the_audit_logs_story() {
    let e = start().await;
    let env = &e.env;
    // alice (the environment's own): Admins and Staff. bob: Staff. carol: signed in, then
    // suspended.
    let staff = env.group_id("Staff");
    let bob = env.fake.add_user(User::new("bob"));
    env.fake.add_member(&staff, &bob);
    let carol = env.fake.add_user(User::new("carol"));
    env.fake.add_member(&staff, &carol);
    env.wait_for_a_sync().await;

    let mut anonymous = env.browser();
    for &r in REQUESTS {
        compare(&e, &mut anonymous, None, r).await;
    }
    for user in [&env.alice, &bob] {
        env.fake.set_next_login(Some(user));
        let mut b = env.browser();
        b.sign_in("/dashboard").await;
        assert!(b.cookie_header().is_some(), "{user} has no session");
        for &r in REQUESTS {
            compare(&e, &mut b, Some(user), r).await;
        }
    }
    // A suspended user, asked for by email: refused at the next sync (the first refusal
    // ends the session, so one request is compared).
    env.fake.set_next_login(Some(&carol));
    let mut b = env.browser();
    b.sign_in("/dashboard").await;
    env.fake.update_user(&carol, |u| u.suspend());
    env.wait_for_a_sync().await;
    let email = env.fake.with_state(|s| {
        s.users
            .iter()
            .find(|u| u.id == carol)
            .unwrap()
            .email
            .clone()
    });
    compare(&e, &mut b, Some(&email), ("GET", "/dashboard", false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explain_command_reports_and_exits_by_outcome() {
    let e = start().await;
    let env = &e.env;
    let staff = env.group_id("Staff");
    let bob = env.fake.add_user(User::new("bob"));
    env.fake.add_member(&staff, &bob);
    env.wait_for_a_sync().await;
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_jumpgate"))
            .arg("--config")
            .arg(&env.gw.config_path)
            .arg("explain")
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.code(),
            text,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, text, err) = run(&["--user", &bob, "https://app.test/admin/x"]);
    assert_eq!(code, Some(Outcome::Deny.exit_code().into()), "{text}{err}");
    for want in [
        "site         app.test",
        "path         /admin/x (canonical)",
        "route        /admin (protected, groups: Admins)",
        "users, ",
        &format!("user         {bob} "),
        "active (ACTIVATED), bound to the application",
        "groups       Staff",
        "decided by   /admin",
        "verdict      deny (not_in_allowed_groups): 403 Forbidden",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }

    let (code, text, _) = run(&["--user", &env.alice, "https://app.test/admin/x"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("groups       Admins, Staff"), "{text}");

    let (code, text, _) = run(&["https://app.test/dashboard"]);
    assert_eq!(code, Some(Outcome::SignIn.exit_code().into()), "{text}");
    assert!(text.contains("user         none (no session)"), "{text}");

    let (code, text, _) = run(&[
        "--user",
        &bob,
        "-X",
        "put",
        "-H",
        "Accept: application/json",
        "https://app.test/ops/x",
    ]);
    assert_eq!(code, Some(Outcome::StepUp.exit_code().into()), "{text}");
    assert!(
        text.contains(&format!("401 insufficient_user_authentication, max_age=\"300\"; step_up_url starts the application {STEP_UP_ID}")),
        "{text}"
    );
    // A step-up two minutes ago is within the route's five.
    let (code, text, _) = run(&[
        "--user",
        &bob,
        "-X",
        "PUT",
        "--stepped-up",
        "2m",
        "https://app.test/ops/x",
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("step-up 120 s ago within the route's limit"),
        "{text}"
    );

    // A user the directory lacks, an unknown host, and a bad command line.
    let (code, text, _) = run(&["--user", "nobody@example.com", "https://app.test/dashboard"]);
    assert_eq!(code, Some(10), "{text}");
    assert!(
        text.contains("nobody@example.com: not in the directory snapshot"),
        "{text}"
    );
    assert!(text.contains("deny (unknown_user)"), "{text}");
    let (code, text, _) = run(&["https://elsewhere.test/"]);
    assert_eq!(code, Some(10), "{text}");
    assert!(
        text.contains("none is configured for elsewhere.test"),
        "{text}"
    );
    let (code, _, err) = run(&["-H", "no colon", "https://app.test/"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("write it as Name: value"), "{err}");
    let (code, _, err) = run(&["/relative"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("give the whole URL"), "{err}");
}
