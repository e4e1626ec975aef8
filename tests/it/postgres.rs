//! The PostgreSQL store against a private, real PostgreSQL: the store contract, the user index,
//! sealed records, claims, the schema and its migration, expiry, TLS, and revocations over
//! `LISTEN`/`NOTIFY` (the fleet through running gateways is in `fleet.rs`).

use crate::store::{contract, session};
use crate::support::postgres::PgServer;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vallum::config::postgres::{parse_url, PostgresSettings, SslMode};
use vallum::config::storage::Storage;
use vallum::crypto::Key;
use vallum::session::cache::CachedStore;
use vallum::session::postgres::PgStore;
use vallum::session::revocations::RevocationListener;
use vallum::session::{SessionStore, UserSession};
use vallum::telemetry::metrics::Metrics;

pub fn pg_settings(url: &str) -> PostgresSettings {
    PostgresSettings {
        url: url.into(),
        ssl: SslMode::Disable,
        tls: Default::default(),
        skip_verify: false,
        pool_max: 4,
        timeout: Duration::from_millis(500),
        cache_ttl: Duration::from_secs(1),
        cache_max_stale: Duration::from_secs(300),
    }
}

fn store(settings: &PostgresSettings, secret: &Key) -> PgStore {
    PgStore::new(settings, secret, Metrics::new().unwrap()).unwrap()
}

/// The store behind the session-store trait with no cache: every call reaches PostgreSQL.
fn uncached(s: PgStore) -> CachedStore<PgStore> {
    CachedStore::new(s, Duration::ZERO, Duration::ZERO, Metrics::new().unwrap())
}

#[tokio::test]
async fn postgres_store_contract() {
    let pg = PgServer::start().await;
    let settings = pg_settings(&pg.url());
    contract(&uncached(store(&settings, &Key::random()))).await;
    // And behind the cache, with a short trust window so expiry reaches the database.
    let cached = CachedStore::new(
        store(&settings, &Key::random()),
        Duration::from_millis(200),
        Duration::from_secs(300),
        Metrics::new().unwrap(),
    );
    contract(&cached).await;
}

#[tokio::test]
async fn users_are_indexed_records_sealed_and_claims_single_use() {
    let pg = PgServer::start().await;
    let key = Key::random();
    let settings = pg_settings(&pg.url());
    let admin = uncached(store(&settings, &key));
    let mut a1 = session("a1", 600);
    a1.email = Some("Alice@Example.com".into());
    let mut a2 = session("a2", 7200);
    a2.email = Some("alice@example.com".into());
    for s in [a1, a2, session("b1", 600)] {
        admin.put(s).await.unwrap();
    }
    let ids = |v: Vec<Arc<UserSession>>| v.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(admin.sessions_of("ALICE@example.com").await.unwrap()),
        ["a1", "a2"]
    );

    // Nothing readable at rest: no token, no email, no record value.
    admin
        .put_record("dev:alice", b"device-secret-value".to_vec(), 0)
        .await
        .unwrap();
    let dump = pg.psql(
        "SELECT string_agg(encode(data, 'escape'), '') FROM (SELECT data FROM vallum.sessions UNION ALL SELECT data FROM vallum.records) t",
    );
    for secret in [
        "access-secret-token",
        "refresh-secret-token",
        "alice@example.com",
        "device-secret-value",
    ] {
        assert!(!dump.contains(secret), "{secret} stored in the clear");
    }
    // Another shared_secret opens nothing.
    let other = uncached(store(&settings, &Key::random()));
    assert!(other.get("b1").await.unwrap().is_none());
    assert!(other.get_record("dev:alice").await.unwrap().is_none());

    // Single use across nodes; an expired claim can be taken again.
    let b = uncached(store(&settings, &Key::random()));
    assert!(admin.claim_once("state|abc", 1).await.unwrap());
    assert!(
        !b.claim_once("state|abc", 1).await.unwrap(),
        "replay on another node"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        b.claim_once("state|abc", 60).await.unwrap(),
        "claims expire"
    );

    let n = vallum::cli::sessions::revoke(&admin, Some("alice@example.com"), None)
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(admin
        .sessions_of("alice@example.com")
        .await
        .unwrap()
        .is_empty());
    assert!(
        admin.get("b1").await.unwrap().is_some(),
        "other users untouched"
    );
}

#[tokio::test]
async fn nodes_starting_together_create_the_schema_once() {
    let pg = PgServer::start().await;
    let settings = pg_settings(&pg.url());
    let stores: Vec<Arc<PgStore>> = (0..8)
        .map(|_| Arc::new(store(&settings, &Key::random())))
        .collect();
    let tasks: Vec<_> = stores
        .iter()
        .map(|s| {
            let s = Arc::clone(s);
            tokio::spawn(async move { s.ensure_schema().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        pg.psql("SELECT version FROM vallum.schema_version"),
        vallum::session::postgres::schema::latest().to_string()
    );
    assert_eq!(pg.psql("SELECT count(*) FROM vallum.schema_version"), "1");
    let tables = pg.psql(
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'vallum'",
    );
    assert_eq!(tables, "claims,records,schema_version,sessions");
    let log = pg.log();
    assert!(!log.contains("ERROR"), "{log}");
}

#[tokio::test]
async fn expired_rows_are_deleted_in_bounded_batches() {
    let pg = PgServer::start().await;
    let s = store(&pg_settings(&pg.url()), &Key::random());
    s.ensure_schema().await.unwrap();
    pg.psql(
        "INSERT INTO vallum.sessions SELECT 'old' || i, 'u', 0, 1, '\\x00' FROM generate_series(1, 1200) i;
         INSERT INTO vallum.sessions SELECT 'live' || i, 'u', 0, 4000000000, '\\x00' FROM generate_series(1, 10) i;
         INSERT INTO vallum.records SELECT 'keep' || i, 0, '\\x00' FROM generate_series(1, 10) i;
         INSERT INTO vallum.claims SELECT 'c' || i, 1 FROM generate_series(1, 700) i;",
    );
    assert_eq!(s.sweep().await.unwrap(), 1000, "500 per table and pass");
    assert_eq!(pg.psql("SELECT count(*) FROM vallum.sessions"), "710");
    assert_eq!(s.sweep().await.unwrap(), 700);
    assert_eq!(s.sweep().await.unwrap(), 200);
    assert_eq!(s.sweep().await.unwrap(), 0);
    assert_eq!(
        pg.psql("SELECT count(*) FROM vallum.sessions"),
        "10",
        "live rows kept"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM vallum.records"),
        "10",
        "records without expiry kept"
    );
}

/// Two nodes' caches with a long trust window: only the notification can explain a fast refusal.
#[tokio::test]
async fn revocations_reach_every_node_through_listen_notify() {
    let pg = PgServer::start().await;
    let key = Key::random();
    let settings = pg_settings(&pg.url());
    let node = || {
        Arc::new(CachedStore::new(
            store(&settings, &key),
            Duration::from_secs(60),
            Duration::from_secs(300),
            Metrics::new().unwrap(),
        ))
    };
    let (a, b) = (node(), node());
    let (_stop, watch) = tokio::sync::watch::channel(false);
    let listener = RevocationListener {
        store: Arc::clone(&b),
    };
    tokio::spawn(async move { listener.start(watch).await });
    let listening = || {
        pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vallum revocations'",
        )
    };
    wait_for("B listens", || listening() == "1").await;

    a.put(session("s1", 600)).await.unwrap();
    assert!(b.get("s1").await.unwrap().is_some());
    a.delete("s1").await.unwrap();
    let deleted = Instant::now();
    while b.get("s1").await.unwrap().is_some() {
        assert!(
            deleted.elapsed() < Duration::from_secs(2),
            "B still serves a revoked session"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let latency = deleted.elapsed();
    println!("revocation reached the other node's cache after {latency:?}");
    assert!(latency < Duration::from_millis(100), "{latency:?}");

    // The listening connection is cut: B subscribes again and drops its cache, since what was
    // announced in between is unknown to it.
    a.put(session("s2", 600)).await.unwrap();
    assert!(b.get("s2").await.unwrap().is_some());
    assert_eq!(b.cached(), 2);
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'vallum revocations'");
    wait_for("B listens again", || listening() == "1").await;
    wait_for("B's cache is dropped", || b.cached() == 0).await;
    assert!(b.get("s2").await.unwrap().is_some());
    a.delete("s2").await.unwrap();
    wait_for("a revocation after the gap arrives", || b.cached() == 0).await;
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The keys as an operator writes them, compiled the way the gateway compiles them.
fn compiled(store_keys: &str) -> Result<PostgresSettings, String> {
    let yaml = format!(
        "authenticate_service_url: https://auth.example.com\nidp_provider: oidc\nidp_provider_url: https://idp.example.com\n\
         idp_client_id: x\nidp_client_secret: y\ncookie_secret: 8GIP1sU0aqXJZ8T8XkL1zB0cR2P0kTmYxw0a3DkBwsw=\n\
         shared_secret: Wm9vaF9zaGFyZWRfc2VjcmV0XzMyX2J5dGVzX19fXyE=\ninsecure_server: true\n\
         databroker_storage_type: postgres\n{store_keys}"
    );
    let rt =
        vallum::snapshot::Snapshot::from_str(&yaml, &|_| None, None).map_err(|e| e.to_string())?;
    match &rt.settings.auth.as_ref().unwrap().storage {
        Storage::Postgres(p) => Ok(p.clone()),
        other => panic!("postgres storage expected, got {other:?}"),
    }
}

#[tokio::test]
async fn postgres_over_tls_with_a_private_ca_and_a_client_certificate() {
    use crate::support::certs::TestCa;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("postgres CA");
    let ca_path = ca.write(dir.path(), "ca");
    let (cert, key) = ca.server(&["localhost"]).write(dir.path(), "server");
    let (ccert, ckey) = ca.client("vallum").write(dir.path(), "client");
    let pg = PgServer::start_tls(&ca_path, &cert, &key).await;
    let base = format!("postgres://postgres@localhost:{}/postgres", pg.port);
    let secret = Key::random();
    let works = |s: PostgresSettings| {
        let secret = secret.clone();
        async move {
            let mut s = s;
            s.timeout = Duration::from_secs(3);
            let st = uncached(store(&s, &secret));
            st.put(session("t", 600)).await.map(|_| ())
        }
    };

    // libpq's parameters in the URL.
    let url_form = compiled(&format!(
        "databroker_storage_connection_string: {base}?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}\n",
        ca_path.display(),
        ccert.display(),
        ckey.display()
    ))
    .unwrap();
    assert_eq!(url_form.ssl, SslMode::VerifyFull);
    works(url_form.clone()).await.unwrap();
    // Pomerium's keys, the same meaning.
    let key_form = compiled(&format!(
        "databroker_storage_connection_string: {base}?sslmode=verify-full\ndatabroker_storage_ca_file: {}\n\
         databroker_storage_cert_file: {}\ndatabroker_storage_key_file: {}\n",
        ca_path.display(),
        ccert.display(),
        ckey.display()
    ))
    .unwrap();
    works(key_form.clone()).await.unwrap();

    // The server refuses a client without a certificate and a plain connection; the client
    // refuses a server its roots do not vouch for, or one named otherwise under verify-full.
    let mut no_client = key_form.clone();
    no_client.tls.client = None;
    assert!(works(no_client).await.is_err());
    let mut plain = key_form.clone();
    plain.ssl = SslMode::Disable;
    assert!(works(plain).await.is_err());
    let mut system_roots = key_form.clone();
    system_roots.tls.ca_pem = None;
    let e = works(system_roots).await.unwrap_err().to_string();
    assert!(e.contains("certificate") || e.contains("Unknown"), "{e}");
    let mut by_ip = key_form.clone();
    by_ip.url = by_ip.url.replace("localhost", "127.0.0.1");
    assert!(
        works(by_ip.clone()).await.is_err(),
        "verify-full checks the name"
    );
    by_ip.ssl = SslMode::VerifyCa;
    works(by_ip).await.unwrap();

    let refused = compiled(&format!(
        "databroker_storage_connection_string: {base}?sslmode=disable\ndatabroker_storage_ca_file: {}\n",
        ca_path.display()
    ))
    .unwrap_err();
    assert!(
        refused.contains("need an sslmode other than disable"),
        "{refused}"
    );
}

#[test]
fn connection_strings_are_checked_without_connecting() {
    let ok = compiled(
        "databroker_storage_connection_string: postgresql://u:p@db.invalid:5432/vallum?sslmode=require&pool_max_conns=7\n",
    )
    .unwrap();
    assert_eq!((ok.ssl, ok.pool_max), (SslMode::Require, 7));
    assert_eq!(
        ok.timeout,
        Duration::from_millis(50),
        "databroker_storage_timeout's default"
    );
    for (keys, says) in [
        ("", "required with databroker_storage_type: postgres"),
        (
            "databroker_storage_connection_string: mysql://db/x\n",
            "expected postgres://",
        ),
        (
            "databroker_storage_connection_string: postgres://u:hunter2@db/x?sslmode=on\n",
            "sslmode=\"on\"",
        ),
    ] {
        let e = compiled(keys).unwrap_err();
        assert!(
            e.contains("databroker_storage_connection_string") && e.contains(says),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }
    assert!(parse_url("postgres://db/x?pool_max_conns=abc").is_err());
}

// Faults, through a running gateway.

/// `GET app.localhost/hello` with a cookie, as an API client.
async fn json_get(env: &crate::signin::Env, cookie: &str) -> (u16, serde_json::Value, Duration) {
    let started = Instant::now();
    let r = crate::support::client()
        .get(env.gw.url("/hello"))
        .header("host", format!("app.localhost:{}", env.gw.port))
        .header("cookie", cookie)
        .header("accept", "application/json")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let (status, body) = crate::support::status_and_json(r).await;
    (status, body, started.elapsed())
}

/// A table locked by someone else (slow statements) and a pool of one connection exhausted:
/// each request that needs the store gets a quick 503 with the reason in the log, never a hang,
/// and the gateway recovers when the lock goes.
#[tokio::test]
async fn slow_statements_and_an_exhausted_pool_are_quick_503s() {
    let pg = PgServer::start().await;
    let env = crate::signin::Env::start(&format!(
        "{}databroker_storage_timeout: 200ms\ndatabroker_cache_ttl: 0s\n",
        crate::fleet::postgres_keys(&format!("{}?pool_max_conns=1", pg.url()))
    ))
    .await;
    // Four sessions: concurrent reads of one session share one statement (single-flight).
    let app = env.url("app", "/hello");
    let mut cookies = Vec::new();
    for _ in 0..4 {
        let b = env.browser();
        let (r, hops) = b.browse(&app).await;
        assert_eq!(r.status, 200, "{hops:#?}\n{}", env.gw.log());
        cookies.push(b.cookie_for(&app).unwrap());
    }

    let mut holder = pg.psql_background(
        "BEGIN; LOCK TABLE vallum.sessions IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;",
    );
    wait_for("the lock is held", || {
        pg.psql("SELECT count(*) FROM pg_locks WHERE relation = 'vallum.sessions'::regclass AND granted AND mode = 'AccessExclusiveLock'") == "1"
    })
    .await;
    let answers = futures_util::future::join_all(cookies.iter().map(|c| json_get(&env, c))).await;
    for (status, body, took) in &answers {
        assert_eq!(*status, 503, "{body}");
        assert!(body["request_id"].is_string(), "{body}");
        assert!(*took < Duration::from_secs(2), "took {took:?}");
    }
    let log = env.gw.log();
    assert!(
        log.contains("canceling statement due to statement timeout")
            || log.contains("no answer within"),
        "{log}"
    );
    assert!(log.contains("PostgreSQL connections are busy"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    holder.wait().unwrap();
    env.gw
        .eventually("served again once the lock is gone", || async {
            json_get(&env, &cookies[0]).await.0 == 200
        })
        .await;
}

/// PostgreSQL is down when the gateway starts: it starts anyway, reports not ready, answers
/// sign-ins with 503; PostgreSQL comes up and everything works with no restart.
#[tokio::test]
async fn postgres_down_at_start_then_up() {
    let (port, hport) = (crate::support::free_port(), crate::support::free_port());
    let env = crate::signin::Env::start(&format!(
        "health_check_addr: 127.0.0.1:{hport}\n{}",
        crate::fleet::postgres_keys(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
    ))
    .await;
    let ready = || async move {
        crate::support::client()
            .get(format!("http://127.0.0.1:{hport}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    env.gw
        .eventually("not ready", || async { ready().await == 503 })
        .await;
    let app = env.url("app", "/hello");
    let (r, _) = env.browser().browse(&app).await;
    assert_eq!(r.status, 503, "sign-in cannot store its state");

    let _pg = PgServer::start_on(port).await;
    env.gw
        .eventually("ready", || async { ready().await == 200 })
        .await;
    let b = env.browser();
    let (r, hops) = b.browse(&app).await;
    assert_eq!(r.status, 200, "{hops:#?}\n{}", env.gw.log());
    let log = env.gw.log();
    assert!(log.contains("PostgreSQL session tables migrated"), "{log}");
    assert!(log.contains("subscribed to session revocations"), "{log}");
}

/// `vallum sessions` against the PostgreSQL store a running gateway uses: it lists the user's
/// sessions, and a revocation there is refused by the gateway at once (its cache trusts entries
/// for a minute: only the notification explains a quick refusal).
#[tokio::test]
async fn operator_revocation_reaches_the_gateway_through_notify() {
    let pg = PgServer::start().await;
    let env = crate::signin::Env::start(&format!(
        "{}databroker_cache_ttl: 60s\n",
        crate::fleet::postgres_keys(&pg.url())
    ))
    .await;
    env.gw
        .eventually("subscribed", || async {
            env.gw.log().contains("subscribed to session revocations")
        })
        .await;
    let app = env.url("app", "/hello");
    let mut cookies = Vec::new();
    for _ in 0..2 {
        let b = env.browser();
        let (r, hops) = b.browse(&app).await;
        assert_eq!(r.status, 200, "{hops:#?}");
        cookies.push(b.cookie_for(&app).unwrap());
    }
    let config = env.gw.config.to_str().unwrap().to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(crate::support::bin())
            .args(args)
            .args(["--user", "alice@example.com", "-c", &config])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = cli(&["sessions", "list"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert_eq!(json_get(&env, &cookies[1]).await.0, 200);
    cli(&["sessions", "revoke"]);
    let revoked = Instant::now();
    while json_get(&env, &cookies[1]).await.0 == 200 {
        assert!(revoked.elapsed() < Duration::from_secs(5), "still served");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let latency = revoked.elapsed();
    println!("`vallum sessions revoke` enforced by the gateway after {latency:?}");
    assert!(latency < Duration::from_millis(250), "{latency:?}");
    assert_eq!(
        json_get(&env, &cookies[0]).await.0,
        401,
        "both sessions ended"
    );
    assert_eq!(cli(&["sessions", "list"]).lines().count(), 0);
}
