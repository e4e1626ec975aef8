//! The `vallum` binary: CLI parsing, logging set-up, and the hand-off to the Pingora server.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vallum::cli::args::{Cli, Command, DevicesAction, RunArgs, SessionsAction};
use vallum::server::{self, ServerOptions};
use vallum::snapshot::Snapshot;

/// mimalloc instead of glibc's malloc: Pingora allocates and frees dozens of small objects per
/// request (header maps, buffers, futures), and under callgrind glibc's allocator was about a
/// fifth of every proxied request's instructions. See docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { files, pomerium }) => check_config(&files, pomerium),
        Some(Command::Run(args)) => run(args),
        Some(Command::Demo { port }) => demo(port),
        Some(Command::Sessions { action }) => sessions(action),
        Some(Command::Devices { action }) => devices(action),
        Some(Command::Tcp {
            target,
            listen,
            gateway,
            token,
            insecure,
        }) => tcp(target, listen, gateway, token, insecure),
        Some(Command::Login {
            url,
            print_token,
            json,
            no_browser,
            insecure,
            timeout,
        }) => login(&url, print_token, json, !no_browser, insecure, timeout),
        None => run(cli.run),
    }
}

/// Libraries whose debug and trace output dumps request and response heads and bodies (cookies,
/// tokens): capped at `info` whatever `log_level` or `VALLUM_LOG` asks for.
const PAYLOAD_LOGGERS: &[&str] = &[
    "pingora",
    "pingora_core",
    "pingora_proxy",
    "pingora_load_balancing",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "redis",
    "openidconnect",
    "oauth2",
];

/// `log_level` for Vallum; `proxy_log_level`, when set, for the access lines and the proxy
/// engine (whose debug output stays capped at `info`, see [`PAYLOAD_LOGGERS`]). `VALLUM_LOG`,
/// when set, replaces both.
fn init_logging(
    level: &str,
    proxy_level: Option<&str>,
    otel: Option<&vallum::config::otel::OtelSettings>,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let from_env = std::env::var("VALLUM_LOG").is_ok_and(|v| !v.is_empty());
    let engine = match proxy_level {
        Some("trace" | "debug" | "info") => "info",
        Some(other) => other,
        None => "warn",
    };
    let mut filter = match (from_env, proxy_level) {
        (true, _) => tracing_subscriber::EnvFilter::from_env("VALLUM_LOG"),
        (false, Some(p)) => {
            tracing_subscriber::EnvFilter::new(format!("{level},vallum::access={p}"))
        }
        (false, None) => tracing_subscriber::EnvFilter::new(level),
    };
    for target in PAYLOAD_LOGGERS {
        let cap = match (target.starts_with("pingora"), from_env) {
            (true, false) => engine,
            _ => "info",
        };
        if let Ok(d) = format!("{target}={cap}").parse() {
            filter = filter.add_directive(d);
        }
    }
    // Spans meant for the trace exporter never show in the log; the exporter's own lines
    // follow `otel_log_level`.
    for d in [
        format!("{}=off", vallum::telemetry::traces::TARGET),
        format!(
            "{}::export={}",
            vallum::telemetry::traces::TARGET,
            otel.map_or(tracing::Level::WARN, |o| o.log_level)
        ),
    ] {
        if let Ok(d) = d.parse() {
            filter = filter.add_directive(d);
        }
    }
    let text = std::env::var("VALLUM_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    // The per-request lines have their own writer (telemetry::lines), in the same format.
    vallum::telemetry::lines::install(!text).context("cannot start the log writer")?;
    match otel {
        None => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(vallum::telemetry::lines::tracing_writer());
            if text {
                builder.init();
            } else {
                builder.json().flatten_event(true).init();
            }
        }
        Some(otel) => with_traces(filter, text, otel)?,
    }
    // The filter is fixed from here on: whether the per-request lines are on is asked once.
    vallum::telemetry::logs::settle();
    Ok(())
}

/// The log layer and the OpenTelemetry layer, each with its own filter (per-layer filtering
/// costs a little, so it is used only when tracing is on).
fn with_traces(
    filter: tracing_subscriber::EnvFilter,
    text: bool,
    otel: &vallum::config::otel::OtelSettings,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(vallum::telemetry::lines::tracing_writer());
    let log: Boxed = if text {
        Box::new(fmt.with_filter(filter))
    } else {
        Box::new(fmt.json().flatten_event(true).with_filter(filter))
    };
    let spans = vallum::telemetry::traces::layer(otel)
        .context("cannot start the trace exporter")?
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target(vallum::telemetry::traces::TARGET, tracing::Level::INFO),
        );
    tracing_subscriber::registry().with(log).with(spans).init();
    Ok(())
}

fn run(args: RunArgs) -> ExitCode {
    match try_run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // What was logged before the failure reaches the log first.
            vallum::telemetry::lines::flush_before_exit();
            eprintln!("vallum: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.config.context(
        "no config file given; use `vallum run -c FILE` (or `vallum check-config FILE`)",
    )?;
    let runtime = Snapshot::from_file(&config, None)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    init_logging(
        &runtime.settings.log_level,
        runtime.settings.proxy_log_level.as_deref(),
        runtime.settings.otel.as_ref(),
    )?;
    for w in &runtime.warnings {
        tracing::warn!("{w}");
    }
    if runtime
        .settings
        .auth
        .as_ref()
        .is_some_and(|a| a.generated_secrets)
    {
        tracing::warn!(
            "cookie_secret and/or shared_secret are not set: using random ones generated for this process. \
             Sessions will NOT survive a restart and will NOT work across several Vallum nodes. \
             Set both (32 random bytes, base64: `head -c32 /dev/urandom | base64`) in production."
        );
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.display(),
        checksum = %runtime.checksum,
        routes = runtime.routes.len(),
        address = %runtime.settings.address,
        tls = runtime.settings.tls(),
        "starting vallum"
    );
    let shared = Arc::new(ArcSwap::from_pointee(runtime));
    let opts = ServerOptions {
        config,
        upgrade: args.upgrade,
        daemon: args.daemon,
        test: args.test,
        pingora_conf: args.pingora_conf,
    };
    let server = server::build(shared, &opts)?;
    server.run_forever()
}

fn demo(port: u16) -> ExitCode {
    if std::env::var("VALLUM_LOG_FORMAT").is_err() {
        std::env::set_var("VALLUM_LOG_FORMAT", "text");
    }
    if let Err(e) = init_logging("warn,vallum=info", None, None) {
        eprintln!("vallum demo: {e:#}");
        return ExitCode::FAILURE;
    }
    match vallum::demo::build(port) {
        Ok((server, banner)) => {
            println!("{banner}");
            server.run_forever()
        }
        Err(e) => {
            eprintln!("vallum demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn login(url: &str, reuse: bool, json: bool, open: bool, insecure: bool, timeout: u64) -> ExitCode {
    let run = || -> anyhow::Result<(String, String)> {
        let url = url::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
        let host = vallum::cli::login::host_key(&url)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let token = rt.block_on(async {
            if reuse {
                if let Some(t) = vallum::cli::login::cached_valid(&url, insecure).await {
                    return Ok::<_, anyhow::Error>(t);
                }
            }
            let opts = vallum::cli::login::LoginOptions {
                url: url.clone(),
                insecure,
                open_browser: open,
                timeout: std::time::Duration::from_secs(timeout),
            };
            Ok(vallum::cli::login::login(&opts).await?)
        })?;
        Ok((host, token))
    };
    match run() {
        Ok((host, token)) => {
            if json {
                println!("{}", serde_json::json!({ "host": host, "token": token }));
            } else {
                println!("{token}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vallum login: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tcp(
    target: String,
    listen: std::net::SocketAddr,
    gateway: Option<String>,
    token: Option<String>,
    insecure: bool,
) -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let host = target
            .rsplit_once(':')
            .map(|(h, _)| h)
            .context("the target must be HOST:PORT")?;
        let gateway = url::Url::parse(&gateway.unwrap_or_else(|| format!("https://{host}")))
            .context("--gateway is not a URL")?;
        let token = match token.or_else(|| std::env::var("VALLUM_TOKEN").ok()) {
            Some(t) => t,
            None => {
                let path =
                    vallum::cli::login::cache_path(&vallum::cli::login::cache_dir(), &gateway)?;
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_string())
                    .with_context(|| {
                        format!(
                            "no token: run `vallum login {gateway}` first (looked in {})",
                            path.display()
                        )
                    })?
            }
        };
        let opts = vallum::cli::tcp::TunnelOptions {
            target,
            gateway,
            token,
            insecure,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(vallum::cli::tcp::serve(listen, opts))?;
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vallum tcp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The operator commands' common ground: the config's store (Redis, or the local database) and a
/// runtime to talk to it.
fn admin_store(
    config: &std::path::Path,
) -> anyhow::Result<(
    std::sync::Arc<dyn vallum::session::SessionStore>,
    tokio::runtime::Runtime,
)> {
    let runtime = Snapshot::from_file(config, None)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let store = vallum::cli::sessions::connect(&runtime.settings)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok((store, rt))
}

/// An operator command's exit: its error on stderr, prefixed with its name.
fn exit_code(command: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vallum {command}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sessions(action: SessionsAction) -> ExitCode {
    exit_code("sessions", try_sessions(action))
}

fn try_sessions(action: SessionsAction) -> anyhow::Result<()> {
    let config = match &action {
        SessionsAction::List { config, .. } | SessionsAction::Revoke { config, .. } => config,
    };
    let (store, rt) = admin_store(config)?;
    rt.block_on(async {
        match action {
            SessionsAction::List { user, json, .. } => {
                for s in store.sessions_of(&user).await? {
                    println!("{}", vallum::cli::sessions::describe(&s, json));
                }
            }
            SessionsAction::Revoke { user, session, .. } => {
                let n = vallum::cli::sessions::revoke(&*store, user.as_deref(), session.as_deref())
                    .await?;
                println!("revoked {n} session(s)");
            }
        }
        Ok(())
    })
}

fn devices(action: DevicesAction) -> ExitCode {
    exit_code("devices", try_devices(action))
}

fn try_devices(action: DevicesAction) -> anyhow::Result<()> {
    use vallum::cli::sessions::{change_device, devices_of, DeviceChange};
    let config = match &action {
        DevicesAction::List { config, .. }
        | DevicesAction::Approve { config, .. }
        | DevicesAction::Unapprove { config, .. }
        | DevicesAction::Remove { config, .. } => config,
    };
    let (store, rt) = admin_store(config)?;
    rt.block_on(async {
        let (user, device, change) = match action {
            DevicesAction::List { user, json, .. } => {
                let (subject, devices) = devices_of(&*store, &user).await?;
                for d in devices {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"user": subject, "device": d.id, "name": d.name, "type": d.type_id, "approved": d.approved, "created_at": d.created_at})
                        );
                    } else {
                        println!(
                            "{}  {}  {}{}",
                            d.id,
                            d.type_id,
                            d.name,
                            if d.approved { "  approved" } else { "" }
                        );
                    }
                }
                return Ok(());
            }
            DevicesAction::Approve { user, device, .. } => (user, device, DeviceChange::Approve),
            DevicesAction::Unapprove { user, device, .. } => (user, device, DeviceChange::Revoke),
            DevicesAction::Remove { user, device, .. } => (user, device, DeviceChange::Remove),
        };
        change_device(&*store, &user, &device, change).await?;
        println!("{change:?}: {device}");
        Ok(())
    })
}

/// Upstream names that do not resolve from here, as warnings (`Snapshot::unresolved_names`).
fn unresolved_names(snap: &Snapshot) -> Vec<String> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(snap.unresolved_names()),
        Err(e) => vec![format!("cannot look upstream names up: {e}")],
    }
}

fn check_config(files: &[PathBuf], pomerium: bool) -> ExitCode {
    use std::io::Write;
    let mut failed = false;
    // A closed pipe (`| head`) is not an error worth a panic: write errors are ignored.
    let mut out = std::io::stdout().lock();
    for f in files {
        if pomerium {
            match std::fs::read_to_string(f) {
                Ok(text) => {
                    let (lines, clean) = vallum::cli::migrate::report(&text);
                    let _ = writeln!(out, "{}: key by key", f.display());
                    for l in lines {
                        let _ = writeln!(out, "{l}");
                    }
                    failed |= !clean;
                }
                Err(e) => {
                    eprintln!("{}: {e}", f.display());
                    failed = true;
                    continue;
                }
            }
        }
        match Snapshot::from_file(f, None) {
            Ok(rt) => {
                let short = rt.checksum.get(..12).unwrap_or(&rt.checksum);
                let _ = writeln!(
                    out,
                    "{}: OK ({} routes, checksum {short})",
                    f.display(),
                    rt.routes.len()
                );
                for line in rt.routes.summary() {
                    let _ = writeln!(out, "  {line}");
                }
                for w in rt.warnings.iter().chain(&unresolved_names(&rt)) {
                    let _ = writeln!(out, "  warning: {w}");
                }
            }
            Err(errors) => {
                failed = true;
                eprint!("{}: {errors}", f.display());
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
