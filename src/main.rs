//! The `jumpgate` command: parse arguments, then run, check or make development certificates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jumpgate::config::{Config, ConfigError, LogFormat};

/// The process's allocator. A proxied request makes some thirty small allocations (header
/// values, the request id, futures boxed by hyper and the runtime); glibc's `malloc` and
/// `free` took 6-9 % of its instructions, and mimalloc's per-thread free lists take less
/// (BENCHMARKS.md has the figures). Only the binary sets it: the library leaves the choice
/// to whoever embeds it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `EX_USAGE`: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;
/// Clap's own status for a bad command line.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "jumpgate",
    version,
    about = "TLS reverse-proxy authentication gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (for `run`, the default command).
    #[arg(long, short, global = true, default_value = "config/gateway.toml")]
    config: PathBuf,
    /// Write logs as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Validate the configuration and print a summary.
    Check,
    /// Directory operations.
    Directory {
        #[command(subcommand)]
        command: DirectoryCommand,
    },
    /// Sessions shared in Redis (session.store = "redis").
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Say what the gateway would decide on one request, and why, from the configuration and
    /// the cached directory snapshot (no network). Exit status: 0 allow, 10 deny, 11 sign-in,
    /// 12 step-up.
    Explain {
        /// The user's id or email; without it, a request with no session.
        #[arg(long)]
        user: Option<String>,
        /// The request method.
        #[arg(long, short = 'X', default_value = "GET")]
        method: String,
        /// A request header, `Name: value` (repeatable): `Accept: application/json` for a
        /// script, `Sec-Fetch-Mode: cors` for a page's fetch.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// The session's last step-up was this long ago (`90s`, `4m`); default: never.
        #[arg(long)]
        stepped_up: Option<humantime::Duration>,
        /// The URL, as the browser asks for it: `https://host/path?query`.
        url: String,
    },
    /// Write a development CA and a localhost server certificate.
    DevCert {
        /// Directory to write dev-ca.pem, gateway.pem and gateway.key into.
        #[arg(long)]
        out: PathBuf,
        /// Extra host names for the server certificate.
        #[arg(long = "name")]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Read the directory once and report counts and access changes per site.
    Sync {
        /// Report only; leave the cache file as it is.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// List a user's live sessions.
    List {
        /// The user id (the token's sub; JumpCloud's user id).
        #[arg(long)]
        user: String,
    },
    /// End every session of a user, on every instance.
    Revoke {
        /// The user id.
        #[arg(long)]
        user: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::DevCert { out, names } => match jumpgate::devcert::write(&out, &names) {
            Ok(c) => {
                println!(
                    "wrote {}, {} and {}",
                    c.ca.display(),
                    c.cert.display(),
                    c.key.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Check => match load(&cli.config) {
            Ok(config) => {
                let mut problems = jumpgate::config::check_files(&config);
                if problems.is_empty() && config.directory.is_some() {
                    let runtime = match one_thread() {
                        Ok(rt) => rt,
                        Err(e) => return fail(&e),
                    };
                    let found = runtime.block_on(jumpgate::cli::check::groups(&config));
                    found.warnings.iter().for_each(|w| eprintln!("{w}"));
                    if let Some(why) = found.unchecked {
                        eprintln!("note: group names not checked against the directory: {why}");
                    }
                    problems = found.problems;
                }
                if problems.is_empty() {
                    print!("{}", jumpgate::config::summary(&config));
                    ExitCode::SUCCESS
                } else {
                    problems.iter().for_each(|p| eprintln!("{p}"));
                    ExitCode::from(EXIT_CONFIG)
                }
            }
            Err(code) => code,
        },
        Command::Directory {
            command: DirectoryCommand::Sync { dry_run },
        } => {
            let Ok(config) = load(&cli.config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            jumpgate::telemetry::init(&config.log);
            let runtime = match one_thread() {
                Ok(rt) => rt,
                Err(e) => return fail(&e),
            };
            let result = runtime.block_on(jumpgate::cli::sync::sync_report(&config, !dry_run));
            jumpgate::telemetry::flush();
            match result {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Sessions { command } => {
            let Ok(config) = load(&cli.config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            let runtime = match one_thread() {
                Ok(rt) => rt,
                Err(e) => return fail(&e),
            };
            match runtime.block_on(jumpgate::cli::sessions::run(&config, command.into())) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Explain {
            user,
            method,
            headers,
            stepped_up,
            url,
        } => {
            let Ok(config) = load(&cli.config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            let question = match question(user, &method, &headers, stepped_up, url) {
                Ok(q) => q,
                Err(why) => {
                    eprintln!("error: {why}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            match jumpgate::cli::explain::explain(&config, &question, jumpgate::clock::now()) {
                Ok(e) => {
                    print!("{}", e.text);
                    ExitCode::from(e.outcome.exit_code())
                }
                Err(e) => fail(&e),
            }
        }
        Command::Run => {
            let Ok(config) = load(&cli.config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            // The flag changes how this process logs, not the configuration: a reload compares
            // the file with the file, so it must not see a change the flag made.
            let mut log = config.log.clone();
            if cli.log_json {
                log.format = LogFormat::Json;
            }
            jumpgate::telemetry::init(&log);
            let workers = match jumpgate::runtime::workers() {
                Ok(n) => n,
                Err(e) => {
                    fail(&e);
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let runtime = match jumpgate::runtime::build(workers) {
                Ok(rt) => rt,
                Err(e) => return fail(&e),
            };
            runtime
                .block_on(async move {
                    // Handlers first: a SIGTERM that arrives as soon as the listeners are up
                    // must drain, not kill.
                    let stop = jumpgate::shutdown::signal();
                    let listeners = jumpgate::Listeners::bind(&config).await?;
                    jumpgate::run(config, listeners, stop).await
                })
                .map_or_else(
                    |e| fail(&e),
                    |()| {
                        jumpgate::telemetry::flush();
                        ExitCode::SUCCESS
                    },
                )
        }
    }
}

impl From<SessionsCommand> for jumpgate::cli::sessions::Command {
    fn from(c: SessionsCommand) -> Self {
        match c {
            SessionsCommand::List { user } => jumpgate::cli::sessions::Command::List(user),
            SessionsCommand::Revoke { user } => jumpgate::cli::sessions::Command::Revoke(user),
        }
    }
}

/// The request `jumpgate explain` is asked about.
fn question(
    user: Option<String>,
    method: &str,
    headers: &[String],
    stepped_up: Option<humantime::Duration>,
    url: String,
) -> Result<jumpgate::cli::explain::Question, String> {
    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("--method {method:?} is not a method"))?;
    let mut map = http::HeaderMap::new();
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: write it as Name: value"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("--header {h:?}: not a header name"))?;
        let value = http::HeaderValue::from_str(value.trim())
            .map_err(|_| format!("--header {h:?}: not a header value"))?;
        map.append(name, value);
    }
    Ok(jumpgate::cli::explain::Question {
        user,
        method,
        url,
        headers: map,
        step_up_age: stepped_up.map(|d| d.as_secs() as i64),
    })
}

/// A runtime for the one-shot commands.
fn one_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Loads the configuration, printing every problem on failure.
fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        match &e {
            ConfigError::Invalid(_) => eprintln!("{e}"),
            ConfigError::Read { .. } => eprintln!("error: {e}"),
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Prints an error with its `source()` chain and returns the generic failure code.
fn fail(e: &dyn std::error::Error) -> ExitCode {
    // Log lines first, so they come before the error on stderr.
    jumpgate::telemetry::flush();
    eprint!("error: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        eprint!(": {s}");
        source = s.source();
    }
    eprintln!();
    ExitCode::FAILURE
}
