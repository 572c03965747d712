//! Integration tests of `jumpgate check --config FILE`: the exit code, the summary on stdout,
//! and one `FILE:LINE: key: message` line on stderr per problem in a broken config.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::support;

/// EX_USAGE from sysexits.h: the config file is wrong.
const EXIT_BAD_CONFIG: i32 = 64;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_check(config: &Path) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_jumpgate"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run jumpgate");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A temp dir holding a real certificate and key (`gw.pem`, `gw.key`), so that only the
/// config text decides whether `check` passes.
fn dir_with_certs() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_certs(dir.path(), "gw.pem", "gw.key");
    dir
}

fn write_certs(dir: &Path, cert: &str, key: &str) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["defguard.example.net".to_owned()]).expect("cert");
    std::fs::write(dir.join(cert), ck.cert.pem()).expect("write cert");
    std::fs::write(dir.join(key), ck.key_pair.serialize_pem()).expect("write key");
}

/// A valid config whose lines are numbered in comments, so tests can name lines reliably.
const BASE: &str = r#"[server]
listen = "0.0.0.0:8443"
tls_cert = "gw.pem"
tls_key = "gw.key"
shutdown_grace = "30s"

[[site]]
host = "defguard.example.net"
upstream = "http://127.0.0.1:8000"
access = "protected"

  [[site.route]]
  path = "/api/v1/health"
  access = "public"
"#;
// Line map of BASE: 1 [server], 2 listen, 3 tls_cert, 4 tls_key, 5 shutdown_grace,
// 7 [[site]], 8 host, 9 upstream, 10 access, 12 [[site.route]], 13 path, 14 access.

/// Writes `text` as gateway.toml in a dir with certs, runs check, and expects exit 64.
fn broken(text: &str) -> (TempDir, PathBuf, Run) {
    let dir = dir_with_certs();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, text).expect("write config");
    let run = run_check(&file);
    assert_eq!(
        run.code,
        Some(EXIT_BAD_CONFIG),
        "expected exit {EXIT_BAD_CONFIG}\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    (dir, file, run)
}

/// Asserts stderr has a line `FILE:LINE: key: ...` (or `FILE: key: ...` without a line) whose
/// message contains `needle`.
fn assert_problem(file: &Path, run: &Run, line: Option<usize>, key: &str, needle: &str) {
    let prefix = match line {
        Some(l) => format!("{}:{l}: {key}: ", file.display()),
        None => format!("{}: {key}: ", file.display()),
    };
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(needle)),
        "no stderr line starting with {prefix:?} and containing {needle:?}; stderr:\n{}",
        run.stderr
    );
}

/// Problem lines on stderr: those naming the config file.
fn problem_lines<'r>(file: &Path, run: &'r Run) -> Vec<&'r str> {
    let prefix = format!("{}:", file.display());
    run.stderr
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .collect()
}

fn check_one(text: &str, line: Option<usize>, key: &str, needle: &str) {
    let (_dir, file, run) = broken(text);
    assert_problem(&file, &run, line, key, needle);
    assert_eq!(
        problem_lines(&file, &run).len(),
        1,
        "expected exactly one problem:\n{}",
        run.stderr
    );
}

#[test]
fn reference_config_checks_ok() {
    // The reference config names ../certs/gateway.{pem,key} relative to its own directory.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("config")).expect("mkdir");
    std::fs::create_dir(dir.path().join("certs")).expect("mkdir");
    write_certs(&dir.path().join("certs"), "gateway.pem", "gateway.key");
    let file = dir.path().join("config/gateway.toml");
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml");
    std::fs::copy(&reference, &file).expect("copy reference config");

    let run = run_check(&file);
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    for needle in [
        "0.0.0.0:8443",
        "0.0.0.0:8080",
        "127.0.0.1:9090",
        "defguard.example.net -> http://127.0.0.1:8000",
        "enroll.example.net -> http://127.0.0.1:8081",
        "/api/v1/health",
        "/api/v1/client-mfa/remote",
    ] {
        assert!(
            run.stdout.contains(needle),
            "summary lacks {needle:?}:\n{}",
            run.stdout
        );
    }
}

#[test]
fn base_config_checks_ok() {
    let dir = dir_with_certs();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, BASE).expect("write config");
    let run = run_check(&file);
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains("defguard.example.net"),
        "{}",
        run.stdout
    );
}

/// `run` with a worker count that is not one stops before serving, naming the variable.
#[test]
fn a_bad_worker_count_stops_run() {
    let dir = dir_with_certs();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, BASE).expect("write config");
    for bad in ["0", "many"] {
        let out = Command::new(env!("CARGO_BIN_EXE_jumpgate"))
            .arg("run")
            .arg("--config")
            .arg(&file)
            .env("TOKIO_WORKER_THREADS", bad)
            .output()
            .expect("run jumpgate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_BAD_CONFIG), "{bad}: {stderr}");
        assert!(
            stderr.contains(&format!("TOKIO_WORKER_THREADS=\"{bad}\"")),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn unknown_top_level_key() {
    check_one(
        &format!("lisen = \"0.0.0.0:8443\"\n{BASE}"),
        Some(1),
        "lisen",
        "unknown key \"lisen\" at the top level",
    );
}

#[test]
fn unknown_top_level_table() {
    check_one(
        &format!("[sever]\nx = 1\n{BASE}"),
        Some(1),
        "sever",
        "did you mean \"server\"?",
    );
}

#[test]
fn unknown_key_in_site_suggests_the_known_one() {
    let text = BASE.replace("access = \"protected\"", "acess = \"protected\"");
    check_one(&text, Some(10), "site[0].acess", "did you mean \"access\"?");
}

#[test]
fn listen_not_an_address() {
    let text = BASE.replace("\"0.0.0.0:8443\"", "\"8443\"");
    check_one(
        &text,
        Some(2),
        "server.listen",
        "\"8443\" is not a socket address; expected \"IP:PORT\"",
    );
}

#[test]
fn listen_an_integer() {
    let text = BASE.replace("\"0.0.0.0:8443\"", "8443");
    check_one(&text, Some(2), "server.listen", "found integer 8443");
}

#[test]
fn bad_duration() {
    let text = BASE.replace("\"30s\"", "\"thirty seconds\"");
    check_one(&text, Some(5), "server.shutdown_grace", "is not a duration");
    let text = BASE.replace("\"30s\"", "30");
    check_one(&text, Some(5), "server.shutdown_grace", "write \"30s\"");
}

#[test]
fn duplicate_host() {
    let text = format!("{BASE}\n[[site]]\nhost = \"Defguard.Example.NET.\"\nupstream = \"http://127.0.0.1:9000\"\n");
    check_one(
        &text,
        Some(17),
        "site[1].host",
        "duplicates site[0].host \"defguard.example.net\" (line 8)",
    );
}

#[test]
fn upstream_with_a_path() {
    let text = BASE.replace("http://127.0.0.1:8000", "http://127.0.0.1:8000/app");
    check_one(&text, Some(9), "site[0].upstream", "has a path \"/app\"");
}

#[test]
fn upstream_ftp() {
    let text = BASE.replace("http://127.0.0.1:8000", "ftp://127.0.0.1:21");
    check_one(
        &text,
        Some(9),
        "site[0].upstream",
        "only http:// and https://",
    );
}

#[test]
fn route_path_not_absolute() {
    let text = BASE.replace("\"/api/v1/health\"", "\"api/v1/health\"");
    check_one(
        &text,
        Some(13),
        "site[0].route[0].path",
        "does not start with \"/\"",
    );
}

#[test]
fn route_path_not_canonical() {
    let text = BASE.replace("\"/api/v1/health\"", "\"/a/../b\"");
    check_one(&text, Some(13), "site[0].route[0].path", "write \"/b\"");
    let text = BASE.replace("\"/api/v1/health\"", "\"/a//b\"");
    check_one(&text, Some(13), "site[0].route[0].path", "write \"/a/b\"");
}

#[test]
fn duplicate_route_path() {
    let text =
        format!("{BASE}\n  [[site.route]]\n  path = \"/API/v1/health/\"\n  access = \"deny\"\n");
    check_one(
        &text,
        Some(17),
        "site[0].route[1].path",
        "duplicates site[0].route[0].path",
    );
}

#[test]
fn access_maybe() {
    let text = BASE.replace("access = \"protected\"", "access = \"maybe\"");
    check_one(
        &text,
        Some(10),
        "site[0].access",
        "expected one of \"protected\", \"public\" or \"deny\"",
    );
}

#[test]
fn no_site() {
    let text = &BASE[..BASE.find("[[site]]").expect("BASE has a site")];
    check_one(text, None, "site", "at least one [[site]]");
}

#[test]
fn tls_cert_key_missing() {
    let text = BASE.replace("tls_cert = \"gw.pem\"\n", "");
    check_one(&text, Some(1), "server.tls_cert", "missing required key");
}

#[test]
fn tls_cert_file_missing() {
    let text = BASE.replace("\"gw.pem\"", "\"missing.pem\"");
    let (_dir, file, run) = broken(&text);
    assert_problem(&file, &run, Some(3), "server.tls_cert", "missing.pem");
}

#[test]
fn trusted_proxies_bad_cidr() {
    let text = BASE.replace(
        "shutdown_grace = \"30s\"",
        "trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/40\"]",
    );
    check_one(
        &text,
        Some(5),
        "server.trusted_proxies[1]",
        "\"10.0.0.0/40\" is not a CIDR block",
    );
}

#[test]
fn verify_clients_bad_cidr_and_verify_uri_header_unknown() {
    let text = BASE.replace(
        "shutdown_grace = \"30s\"",
        "verify_clients = [\"127.0.0.1/33\"]",
    );
    check_one(
        &text,
        Some(5),
        "server.verify_clients[0]",
        "\"127.0.0.1/33\" is not a CIDR block",
    );
    let text = BASE.replace(
        "shutdown_grace = \"30s\"",
        "verify_uri_header = \"x-forwarded-url\"",
    );
    check_one(
        &text,
        Some(5),
        "server.verify_uri_header",
        "expected \"x-forwarded-uri\" (Traefik, Caddy, the nginx example) or \"x-original-uri\"",
    );
}

/// The removed step_up_methods stops start-up and names its replacement; the step-up keys
/// need a step_up, step_up_groups needs a directory, and step_up_on_navigation a step-up
/// route.
#[test]
fn step_up_keys_are_checked() {
    let route = "  [[site.route]]\n  path = \"/api/v1/health\"\n  access = \"public\"\n";
    let with_route = |extra: &str| BASE.replace(route, &format!("{route}{extra}"));
    check_one(
        &with_route("  step_up = \"15m\"\n  step_up_methods = [\"POST\"]\n"),
        Some(16),
        "site[0].route[0].step_up_methods",
        "was replaced by step_up_exempt_methods",
    );
    check_one(
        &with_route("  step_up_exempt_methods = [\"GET\"]\n"),
        Some(12),
        "site[0].route[0].step_up_exempt_methods",
        "only applies with step_up",
    );
    check_one(
        &with_route("  step_up_groups = [\"Admins\"]\n"),
        Some(12),
        "site[0].route[0].step_up_groups",
        "only applies with step_up",
    );
    check_one(
        &BASE.replace(
            "access = \"protected\"\n",
            "access = \"protected\"\nstep_up_on_navigation = true\n",
        ),
        Some(11),
        "site[0].step_up_on_navigation",
        "has no effect: no route of this site has step_up",
    );
}

/// An API-token issuer whose audience is the gateway's own client id would take every
/// signed-in user's ID token as an API credential.
#[test]
fn an_api_token_audience_may_not_be_the_gateways_client_id() {
    let text = format!(
        "{BASE}\n[oidc]\nissuer = \"https://oauth.id.jumpcloud.com/\"\nclient_id = \"gateway-client\"\nclient_secret_env = \"JG_TEST_UNUSED\"\n\n[[api_token]]\nissuer = \"https://oauth.id.jumpcloud.com/\"\naudience = \"gateway-client\"\n"
    );
    check_one(
        &text,
        None,
        "api_token[0].audience",
        "is the gateway's own OIDC client id, so ID tokens would pass as API tokens",
    );
}

#[test]
fn upstream_ca_file_with_http_upstream() {
    let text = BASE.replace("access = \"protected\"", "upstream_ca_file = \"gw.pem\"");
    check_one(
        &text,
        Some(10),
        "site[0].upstream_ca_file",
        "only applies to an https:// upstream",
    );
}

#[test]
fn toml_syntax_error() {
    let text = BASE.replace(
        "host = \"defguard.example.net\"",
        "host = \"defguard.example.net",
    );
    let (_dir, file, run) = broken(&text);
    assert_problem(&file, &run, Some(8), "toml", "invalid TOML");
}

#[test]
fn three_problems_reported_at_once() {
    let text = BASE
        .replace("\"0.0.0.0:8443\"", "8443")
        .replace("http://127.0.0.1:8000", "ftp://127.0.0.1:8000")
        .replace("access = \"public\"", "acces = \"public\"");
    let (_dir, file, run) = broken(&text);
    assert_problem(&file, &run, Some(2), "server.listen", "found integer 8443");
    assert_problem(
        &file,
        &run,
        Some(9),
        "site[0].upstream",
        "only http:// and https://",
    );
    assert_problem(
        &file,
        &run,
        Some(14),
        "site[0].route[0].acces",
        "did you mean \"access\"?",
    );
    let lines = problem_lines(&file, &run);
    let numbers: Vec<&str> = lines.iter().filter_map(|l| l.split(':').nth(1)).collect();
    assert_eq!(
        numbers,
        ["2", "9", "14"],
        "all three, in file order:\n{}",
        run.stderr
    );
}

/// `[session]` after BASE: line 16 `[session]`, 17 `store`, then `keys` from line 18.
fn with_session(keys: &str) -> String {
    format!("{BASE}\n[session]\nstore = \"redis\"\n{keys}")
}

/// A dir with certs and the keys instances sharing sessions must share (check insists they
/// exist), and gateway.toml holding BASE with a Redis `[session]` of `keys`.
fn shared_store(keys: &str) -> (TempDir, PathBuf) {
    let dir = dir_with_certs();
    std::fs::create_dir(dir.path().join("state")).expect("state dir");
    for key in ["session.key", "assertion.key"] {
        std::fs::write(dir.path().join("state").join(key), "key").expect("write key");
    }
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, with_session(keys)).expect("write config");
    (dir, file)
}

#[test]
fn redis_sentinels_check_ok() {
    let (_dir, file) = shared_store(
        "redis_sentinels = [\"rediss://10.0.0.1:26379\", \"rediss://10.0.0.2:26379\"]\nredis_sentinel_master = \"mymaster\"\nredis_sentinel_password_env = \"SENTINEL_PASSWORD\"\nredis_password_env = \"REDIS_PASSWORD\"\nredis_database = 1\n",
    );
    let run = run_check(&file);
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
}

#[test]
fn unreadable_redis_password_files_are_named() {
    let (_dir, file) = shared_store(
        "redis_sentinels = [\"redis://10.0.0.1:26379\"]\nredis_sentinel_master = \"mymaster\"\nredis_sentinel_password_file = \"no-such-file\"\nredis_password_file = \"nor-this\"\n",
    );
    let run = run_check(&file);
    assert_eq!(run.code, Some(EXIT_BAD_CONFIG), "stderr:\n{}", run.stderr);
    assert_problem(
        &file,
        &run,
        Some(20),
        "session.redis_sentinel_password_file",
        "no such file",
    );
    assert_problem(
        &file,
        &run,
        Some(21),
        "session.redis_password_file",
        "no such file",
    );
}

#[test]
fn redis_sentinel_master_without_sentinels() {
    check_one(
        &with_session("redis_sentinel_master = \"mymaster\"\n"),
        Some(18),
        "session.redis_sentinel_master",
        "only applies with redis_sentinels",
    );
}

#[test]
fn redis_sentinels_without_a_master() {
    check_one(
        &with_session("redis_sentinels = [\"redis://10.0.0.1:26379\"]\n"),
        Some(16),
        "session.redis_sentinel_master",
        "missing; redis_sentinels needs redis_sentinel_master",
    );
}

#[test]
fn redis_url_and_sentinels_together() {
    check_one(
        &with_session(
            "redis_url = \"redis://10.0.0.9:6379/0\"\nredis_sentinels = [\"redis://10.0.0.1:26379\"]\nredis_sentinel_master = \"mymaster\"\n",
        ),
        Some(19),
        "session.redis_sentinels",
        "set either redis_url (one Redis) or redis_sentinels (Redis through Sentinel), not both",
    );
}

#[test]
fn a_bad_sentinel_url_is_named_by_its_place_in_the_list() {
    check_one(
        &with_session(
            "redis_sentinels = [\n  \"redis://10.0.0.1:26379\",\n  \"10.0.0.2:26379\",\n]\nredis_sentinel_master = \"mymaster\"\n",
        ),
        Some(20),
        "session.redis_sentinels[1]",
        "is not a Redis URL",
    );
}

/// The ready-made Defguard configuration validates (file existence aside: it points at
/// production paths), and routes as documented.
#[test]
fn defguard_config_parses_and_routes_as_documented() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/defguard.toml");
    let config = jumpgate::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let routes = jumpgate::policy::Routes::compile(&config);
    let dash = routes.site("defguard.example.net").unwrap();
    use jumpgate::config::Access;
    let cases = [
        ("/api/v1/health", Access::Public, false),
        ("/api/v1/healthz", Access::Protected, false),
        ("/auth/callback", Access::Protected, false),
        ("/auth/login", Access::Protected, false),
        ("/api/v1/oauth/authorize", Access::Protected, false),
        ("/api/v1/forward_auth", Access::Deny, false),
        ("/api/v1/settings/smtp", Access::Protected, true),
        ("/api/v1/user/bob/password", Access::Protected, true),
        ("/api/v1/oauth/token", Access::Public, false),
        ("/api/v1/oauth/client-1", Access::Protected, true),
        ("/api/v1/ssh_authorized_keys", Access::Deny, false),
        ("/", Access::Protected, false),
    ];
    for (path, access, step_up) in cases {
        let r = dash.find(path);
        assert_eq!(r.access, access, "{path}");
        assert_eq!(r.step_up.is_some(), step_up, "{path}");
    }
    let enroll = routes.site("enroll.example.net").unwrap();
    for path in [
        "/api/v1/enrollment/start",
        "/api/v1/password-reset/request",
        "/api/v1/client-mfa/remote",
        "/api/v1/mfa-flow/remote",
        "/api/v1/poll",
        "/",
    ] {
        assert_eq!(enroll.find(path).access, Access::Public, "{path}");
    }
    assert_eq!(
        enroll
            .find("/api/v1/client-mfa/remote")
            .tunnel_idle_timeout
            .as_secs(),
        150
    );
    // `jumpgate check` accepts it apart from the production files it names.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jumpgate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines() {
        assert!(
            line.contains("tls_cert")
                || line.contains("tls_key")
                || line.contains("client_secret_file")
                || line.contains("api_key_file"),
            "unexpected problem: {line}"
        );
    }
}

/// With a reachable directory, `check` names every `allow_groups` entry that admits no one:
/// a group the directory lacks, or one not bound to `directory.application_id`. These are
/// warnings (exit 0); a key the directory refuses is a problem (exit 64); an unreachable
/// directory is a note and checks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_compares_configured_groups_with_the_directory() {
    let fake = support::jumpcloud::FakeJumpCloud::start().await;
    let admins = fake.add_group("Admins");
    let staff = fake.add_group("Staff");
    let mut app = support::jumpcloud::App::new("dashboard", "secret", "https://unused.invalid/");
    app.bound_groups = vec![admins.clone()];
    let app_id = app.id.clone();
    fake.add_app(app);

    let dir = dir_with_certs();
    let key = dir.path().join("api-key");
    std::fs::write(&key, fake.api_key()).unwrap();
    let text = |application: &str| {
        format!(
            r#"[server]
listen = "0.0.0.0:8443"
tls_cert = "gw.pem"
tls_key = "gw.key"

[[site]]
host = "defguard.example.net"
upstream = "http://127.0.0.1:8000"
access = "protected"
allow_groups = ["Admins", "admins", "{staff}"]

  [[site.route]]
  path = "/api/v1/settings"
  allow_groups = ["{admins}", "Auditors"]

[directory]
provider = "jumpcloud"
api_url = "{}"
api_key_file = "api-key"
request_timeout = "2s"
retry_backoff = "10ms"
{application}
"#,
            fake.base_url()
        )
    };
    // Line map: 10 allow_groups (site), 14 allow_groups (route), 19 api_key_file,
    // 22 application_id.
    let file = dir.path().join("gateway.toml");
    let check = |body: String| {
        std::fs::write(&file, body).unwrap();
        let file = file.clone();
        async move {
            tokio::task::spawn_blocking(move || run_check(&file))
                .await
                .unwrap()
        }
    };

    // Without an application: only names and ids the directory lacks.
    let run = check(text("")).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_problem(
        &file,
        &run,
        Some(10),
        "site[0].allow_groups",
        "warning: group \"admins\" does not exist in the directory",
    );
    assert_problem(
        &file,
        &run,
        Some(14),
        "site[0].route[0].allow_groups",
        "warning: group \"Auditors\" does not exist",
    );
    assert_eq!(problem_lines(&file, &run).len(), 2, "{}", run.stderr);
    assert!(
        run.stdout.contains("defguard.example.net"),
        "the summary is printed"
    );

    // With one: a group that exists but is not bound to it admits no one either.
    let run = check(text(&format!("application_id = \"{app_id}\""))).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_problem(
        &file,
        &run,
        Some(10),
        "site[0].allow_groups",
        &format!("warning: group \"{staff}\" is not bound to application \"{app_id}\""),
    );
    assert_eq!(problem_lines(&file, &run).len(), 3, "{}", run.stderr);
    assert!(
        !run.stderr.contains("\"Admins\""),
        "a bound group is fine: {}",
        run.stderr
    );

    // An application the directory does not know is a problem.
    let run = check(text("application_id = \"5f0000000000000000000000\"")).await;
    assert_eq!(run.code, Some(EXIT_BAD_CONFIG), "{}", run.stderr);
    assert_problem(
        &file,
        &run,
        Some(22),
        "directory.application_id",
        "no such application",
    );

    // A key the directory refuses is a problem, and the key itself is never printed.
    std::fs::write(&key, "not-the-key").unwrap();
    let run = check(text("")).await;
    assert_eq!(run.code, Some(EXIT_BAD_CONFIG), "{}", run.stderr);
    assert_problem(
        &file,
        &run,
        Some(19),
        "directory.api_key_file",
        "refused this key",
    );
    assert!(!run.stderr.contains("not-the-key") && !run.stdout.contains("not-the-key"));

    // A 403 (JumpCloud's answer to a temporarily blocked address too) does not condemn the
    // key: nothing is checked, and it is said so, but it is no problem with the file.
    std::fs::write(&key, fake.api_key()).unwrap();
    fake.directory_faults(|f| f.status_for_prefix = vec![("/api".into(), 403)]);
    let run = check(text("")).await;
    assert_eq!(run.code, Some(0), "a 403 is not a bad key: {}", run.stderr);
    assert!(
        run.stderr
            .contains("note: group names not checked against the directory"),
        "{}",
        run.stderr
    );
    assert!(problem_lines(&file, &run).is_empty(), "{}", run.stderr);
    assert!(!run.stderr.contains("refused this key"), "{}", run.stderr);
    // Control: the same fault as a 401 condemns the key.
    fake.directory_faults(|f| f.status_for_prefix = vec![("/api".into(), 401)]);
    let run = check(text("")).await;
    assert_eq!(run.code, Some(EXIT_BAD_CONFIG), "{}", run.stderr);
    assert_problem(
        &file,
        &run,
        Some(19),
        "directory.api_key_file",
        "refused this key",
    );
    fake.directory_faults(|f| f.status_for_prefix.clear());

    // An unreachable directory checks nothing and says so; the configuration is still valid.
    fake.stop().await;
    let run = check(text("")).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("note: group names not checked against the directory"),
        "{}",
        run.stderr
    );
    assert!(problem_lines(&file, &run).is_empty(), "{}", run.stderr);
}
