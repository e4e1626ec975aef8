//! Assembles the Pingora server: the proxy listener (TLS with SNI certificates and HTTP/2, or
//! plain HTTP), the optional HTTPS-redirect listener, and the background services (config
//! reload, upstream health checks).

pub mod acme_alpn;
pub mod discovery;
pub mod health;
pub mod https_redirect;
pub mod readiness;
pub mod reload;
pub mod shutdown;
pub mod tls_hooks;

use crate::acme::Acme;
use crate::authn::AuthState;
use crate::config::settings::Codec;
use crate::config::storage::Storage;
use crate::proxy::wire::TappedApp;
use crate::proxy::Gateway;
use crate::server::acme_alpn::AlpnChallenge;
use crate::server::discovery::IdpWatcher;
use crate::server::https_redirect::HttpsRedirect;
use crate::server::readiness::ReadinessProbe;
use crate::server::reload::Reloader;
use crate::server::tls_hooks::SniResolver;
use crate::server::tls_hooks::{ClientCertGate, HandshakeRecorder};
use crate::session::cache::CachedStore;
use crate::session::memory::MemoryStore;
use crate::session::postgres::PgStore;
use crate::session::redis::RedisStore;
use crate::session::revocations::{Feed, RevocationListener};
use crate::session::SessionStore;
use crate::snapshot::SharedSnapshot;
use crate::telemetry::listener::{Endpoints, OpsListener};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::probes::Readiness;
use health::HealthSupervisor;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::ALPN;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use shutdown::Node;
use std::path::PathBuf;
use std::sync::Arc;

/// Process-level switches, mostly Pingora's own (graceful upgrade, daemon, its server conf).
#[derive(Debug, Default, Clone)]
pub struct ServerOptions {
    pub config: PathBuf,
    pub upgrade: bool,
    pub daemon: bool,
    pub test: bool,
    /// Pingora server conf (threads, pid file, upgrade socket, grace periods).
    pub pingora_conf: Option<String>,
}

/// The listener that keeps this node's cache in step with the fleet's revocations.
type Listener = Box<dyn pingora_core::services::ServiceWithDependents>;

/// A fleet's store: this node's cache in front of it, and the listener that keeps the cache in
/// step with revocations announced by the other nodes.
fn shared<S: Feed>(
    inner: S,
    ttl: std::time::Duration,
    max_stale: std::time::Duration,
    metrics: &Arc<Metrics>,
) -> (Arc<dyn SessionStore>, Option<Listener>) {
    let store = Arc::new(CachedStore::new(inner, ttl, max_stale, Arc::clone(metrics)));
    let listener = RevocationListener {
        store: Arc::clone(&store),
    };
    (
        store,
        Some(Box::new(background_service(REVOCATIONS, listener))),
    )
}

/// The session store and, for a shared store, its revocation listener.
fn session_store(
    settings: &crate::config::Settings,
    metrics: &Arc<Metrics>,
) -> Result<(Arc<dyn SessionStore>, Option<Listener>), ServerError> {
    match settings
        .auth
        .as_ref()
        .map(|a| (&a.storage, &a.shared_secret))
    {
        Some((Storage::Redis(redis), secret)) => {
            let inner =
                RedisStore::new(redis, secret, Arc::clone(metrics)).map_err(ServerError::Store)?;
            Ok(shared(
                inner,
                redis.cache_ttl,
                redis.cache_max_stale,
                metrics,
            ))
        }
        Some((Storage::Postgres(pg), secret)) => {
            let inner =
                PgStore::new(pg, secret, Arc::clone(metrics)).map_err(ServerError::Store)?;
            Ok(shared(inner, pg.cache_ttl, pg.cache_max_stale, metrics))
        }
        Some((Storage::File(file), secret)) => {
            let store = crate::session::file::FileStore::open(&file.dir, secret.clone())
                .map_err(ServerError::Store)?;
            tracing::info!(path = %store.path().display(), "sessions kept in a local database");
            let cached = CachedStore::new(
                store,
                file.cache_ttl,
                file.cache_max_stale,
                Arc::clone(metrics),
            );
            Ok((Arc::new(cached), None))
        }
        _ => Ok((Arc::new(MemoryStore::default()), None)),
    }
}

const REVOCATIONS: &str = "session revocations";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot set up the session store: {0}")]
    Store(String),
    #[error("cannot load the Pingora server conf {path}: {reason}")]
    PingoraConf { path: String, reason: String },
    #[error("cannot set up the TLS listener: {0}")]
    Tls(String),
    #[error("cannot set up metrics: {0}")]
    Metrics(String),
}

/// The whole node: the proxy listener (TLS hooks installed), the HTTPS redirect listener, and
/// the background services (reload, health checks, revocations, readiness, IdP discovery, the
/// metrics and probe listeners). The only code that holds the live snapshot handle.
pub fn build(runtime: SharedSnapshot, opts: &ServerOptions) -> Result<Node, ServerError> {
    // Sessions live for the process, across config reloads; a storage change needs a restart.
    let metrics = Metrics::new().map_err(|e| ServerError::Metrics(e.to_string()))?;
    let (store, revocations) = session_store(&runtime.load().settings, &metrics)?;
    let acme = Arc::new(Acme::new(Arc::clone(&store), Arc::clone(&metrics)));
    let auth = Arc::new(AuthState::new(store, Arc::clone(&metrics)));
    let mut server = pingora_server(opts, runtime.load().settings.ops.threads)?;
    add_listeners(&mut server, &runtime, &auth, &acme, &metrics)?;
    server.add_service(background_service(
        "autocert",
        crate::acme::worker::Worker {
            acme: Arc::clone(&acme),
            runtime: Arc::clone(&runtime),
        },
    ));
    server.add_service(background_service(
        "config reload",
        Reloader::new(
            opts.config.clone(),
            Arc::clone(&runtime),
            Arc::clone(&metrics),
        ),
    ));
    server.add_service(background_service(
        "upstream health",
        HealthSupervisor::new(Arc::clone(&runtime), Arc::clone(&metrics)),
    ));
    if let Some(listener) = revocations {
        server.add_boxed_service(listener);
    }
    let readiness = Arc::new(Readiness::default());
    server.add_service(background_service(
        "readiness",
        ReadinessProbe {
            runtime: Arc::clone(&runtime),
            auth: Arc::clone(&auth),
            acme,
            readiness: Arc::clone(&readiness),
            metrics: Arc::clone(&metrics),
        },
    ));
    add_ops_listeners(
        &mut server,
        &runtime.load().settings.ops,
        readiness,
        &metrics,
    );
    server.add_service(background_service(
        "identity provider",
        IdpWatcher::new(runtime, auth),
    ));
    Ok(Node { server, metrics })
}

/// Pingora's server with its conf: the config's `threads` wins over the Pingora conf's (one
/// place to size a node).
fn pingora_server(opts: &ServerOptions, threads: Option<usize>) -> Result<Server, ServerError> {
    let mut conf = match &opts.pingora_conf {
        Some(path) => ServerConf::load_from_yaml(path).map_err(|e| ServerError::PingoraConf {
            path: path.clone(),
            reason: e.to_string(),
        })?,
        None => ServerConf {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            ..ServerConf::default()
        },
    };
    if let Some(t) = threads {
        conf.threads = t;
    }
    if conf.grace_period_seconds.is_none() {
        conf.grace_period_seconds = Some(shutdown::DEFAULT_GRACE_SECONDS);
    }
    tracing::info!(threads = conf.threads, "proxy worker threads");
    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        nocapture: false,
        test: opts.test,
        conf: None,
    };
    // The conf must go in at construction: setting it after `Server::new` breaks graceful
    // upgrade since Pingora 0.8.1.
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    Ok(server)
}

/// The proxy listener (TLS with the snapshot-reading hooks, or plain) and the HTTP→HTTPS one.
fn add_listeners(
    server: &mut Server,
    runtime: &SharedSnapshot,
    auth: &Arc<AuthState>,
    acme: &Arc<Acme>,
    metrics: &Arc<Metrics>,
) -> Result<(), ServerError> {
    let snap = runtime.load_full();
    let settings = &snap.settings;
    let tls = settings.tls();
    // Every connection is read through a `WireTap`, so the hygiene step can refuse a request
    // line Pingora repaired rather than serve the repair.
    let mut app = pingora_proxy::http_proxy(
        &server.configuration,
        Gateway::new(Arc::clone(runtime), tls, Arc::clone(auth)),
    );
    if !tls && settings.codec != Codec::Http1 {
        // h2c with prior knowledge (gRPC clients without TLS); HTTP/1.1 is told apart by its
        // first bytes.
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        app.server_options = Some(options);
    }
    let tapped = TappedApp {
        app: Arc::new(app),
        snapshot: Arc::clone(runtime),
    };
    let mut proxy = Service::new("vallum proxy".to_string(), tapped);
    let addr = settings.address.to_string();
    if tls {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let recorder = HandshakeRecorder::new(Arc::clone(runtime), Arc::clone(metrics));
        let mut tls_settings = TlsSettings::with_callbacks(Box::new(recorder))
            .map_err(|e| ServerError::Tls(e.to_string()))?;
        tls_settings.set_cert_resolver(Arc::new(SniResolver::new(
            Arc::clone(runtime),
            Arc::clone(acme),
        )));
        // Always installed: whether a certificate is asked for is read per handshake, so a reload
        // can turn downstream mTLS on or off.
        tls_settings.set_client_cert_verifier(Arc::new(ClientCertGate::new(
            Arc::clone(runtime),
            Arc::clone(metrics),
        )));
        match settings.codec {
            Codec::Auto => tls_settings.enable_h2(),
            Codec::Http1 => tls_settings.set_alpn(ALPN::H1),
            Codec::Http2 => tls_settings.set_alpn(ALPN::H2),
        }
        // Always installed: autocert can be turned on by a reload.
        proxy
            .endpoints()
            .set_pre_tls_callback(Arc::new(AlpnChallenge {
                runtime: Arc::clone(runtime),
                acme: Arc::clone(acme),
            }));
        proxy.add_tls_with_settings(&addr, None, tls_settings);
    } else {
        proxy.add_tcp(&addr);
    }
    server.add_service(proxy);
    if let Some(redirect_addr) = settings.http_redirect_addr {
        let mut svc = Service::new(
            "vallum https redirect".to_string(),
            HttpsRedirect {
                https_port: settings.address.port(),
                acme: Arc::clone(acme),
            },
        );
        svc.add_tcp(&redirect_addr.to_string());
        server.add_service(svc);
    }
    Ok(())
}

/// `health_check_addr` (probes) and `metrics_address`.
fn add_ops_listeners(
    server: &mut Server,
    ops: &crate::config::ops::OpsSettings,
    readiness: Arc<Readiness>,
    metrics: &Arc<Metrics>,
) {
    if let Some(addr) = ops.health_check_addr {
        server.add_service(background_service(
            "probe listener",
            OpsListener {
                name: "health_check_addr",
                addr,
                endpoints: Arc::new(Endpoints::Probes { readiness }),
            },
        ));
    }
    if let Some(addr) = ops.metrics_address {
        server.add_service(background_service(
            "metrics listener",
            OpsListener {
                name: "metrics_address",
                addr,
                endpoints: Arc::new(Endpoints::Metrics {
                    metrics: Arc::clone(metrics),
                    authorization: ops.metrics_authorization.as_deref().map(str::to_string),
                }),
            },
        ));
    }
}
