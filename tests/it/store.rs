//! One contract for every session store, run against the embedded store, a real Redis and the
//! local database (PostgreSQL's run is in `postgres.rs`).

use crate::support::redis::{RedisCluster, RedisServer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vallum::clock::unix_now;
use vallum::config::storage::{RedisSettings, RedisTarget};
use vallum::crypto::Key;
use vallum::session::cache::CachedStore;
use vallum::session::memory::MemoryStore;
use vallum::session::redis::RedisStore;
use vallum::session::{SessionStore, StoreError, UserSession};
use vallum::telemetry::metrics::Metrics;

pub fn session(id: &str, ttl: u64) -> UserSession {
    let now = unix_now();
    UserSession {
        id: id.into(),
        user_id: format!("user-{id}"),
        email: Some(format!("{id}@example.com")),
        name: Some("Name".into()),
        groups: vec!["admins".into()],
        claims: serde_json::json!({"sub": format!("user-{id}"), "department": "R&D"})
            .as_object()
            .unwrap()
            .clone()
            .into(),
        id_token: "header.payload.sig".into(),
        access_token: "access-secret-token".into(),
        refresh_token: Some("refresh-secret-token".into()),
        access_expires_at: Some(now + 300),
        issued_at: now,
        expires_at: now + ttl,
        claims_refreshed_at: now,
        idp: String::new(),
        devices: Vec::new(),
    }
}

pub async fn contract(store: &dyn SessionStore) {
    assert!(store.get("missing").await.unwrap().is_none());
    let s = session("a", 3600);
    store.put(s.clone()).await.unwrap();
    assert_eq!(
        store.get("a").await.unwrap().as_deref(),
        Some(&s),
        "round trip"
    );

    let mut updated = s.clone();
    updated.groups = vec!["engineering".into()];
    store.put(updated.clone()).await.unwrap();
    assert_eq!(
        store.get("a").await.unwrap().unwrap().groups,
        vec!["engineering".to_string()],
        "overwrite"
    );

    // A replace updates a stored session and never recreates an ended one.
    updated.groups = vec!["admins".into()];
    assert!(store.replace(updated.clone()).await.unwrap(), "replaced");
    assert_eq!(
        store.get("a").await.unwrap().unwrap().groups,
        vec!["admins".to_string()],
        "replace writes the new version"
    );

    store.put(session("b", 3600)).await.unwrap();
    store.delete("a").await.unwrap();
    assert!(store.get("a").await.unwrap().is_none(), "deleted");
    assert!(
        !store.replace(updated.clone()).await.unwrap(),
        "no replace after a delete"
    );
    assert!(
        store.get("a").await.unwrap().is_none(),
        "a replace that crossed a delete does not bring the session back"
    );
    assert!(store.get("b").await.unwrap().is_some(), "others untouched");
    store.delete("never-existed").await.unwrap();

    // Records beside sessions: round trip, overwrite, delete, expiry.
    assert!(store.get_record("dev:u1").await.unwrap().is_none());
    store
        .put_record("dev:u1", b"one".to_vec(), 0)
        .await
        .unwrap();
    store
        .put_record("dev:u1", b"two".to_vec(), 0)
        .await
        .unwrap();
    assert_eq!(
        store.get_record("dev:u1").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    store.put_record("dev:u2", b"x".to_vec(), 1).await.unwrap();
    store.delete_record("dev:u1").await.unwrap();
    assert!(store.get_record("dev:u1").await.unwrap().is_none());

    store.put(session("short", 1)).await.unwrap();
    assert!(store.get("short").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        store.get("short").await.unwrap().is_none(),
        "expired sessions are gone"
    );
    assert!(
        store.get_record("dev:u2").await.unwrap().is_none(),
        "expired records are gone"
    );
}

#[tokio::test]
async fn memory_store_contract() {
    contract(&MemoryStore::default()).await;
}

#[tokio::test]
async fn memory_store_is_bounded() {
    let store = MemoryStore::new(2);
    store.put(session("a", 3600)).await.unwrap();
    store.put(session("b", 3600)).await.unwrap();
    assert!(store.put(session("c", 3600)).await.is_err(), "full");
    store.put(session("a", 3600)).await.unwrap();
}

pub fn redis_settings(target: RedisTarget, prefix: &str) -> RedisSettings {
    RedisSettings {
        target,
        prefix: prefix.into(),
        timeout: Duration::from_millis(500),
        cache_ttl: Duration::from_secs(1),
        cache_max_stale: Duration::from_secs(300),
        tls: Default::default(),
    }
}

fn single(redis: &RedisServer, prefix: &str) -> RedisSettings {
    redis_settings(RedisTarget::Single(redis.url()), prefix)
}

fn redis_store(settings: &RedisSettings, secret: &Key) -> RedisStore {
    RedisStore::new(settings, secret, Metrics::new().unwrap()).unwrap()
}

/// The plain Redis store behind the trait (no cache), for the contract.
struct Uncached(RedisStore);

#[async_trait::async_trait]
impl SessionStore for Uncached {
    async fn get(&self, id: &str) -> Result<Option<Arc<UserSession>>, StoreError> {
        self.0.get(id).await
    }
    async fn put(&self, s: UserSession) -> Result<(), StoreError> {
        self.0.put(&s).await
    }
    async fn replace(&self, s: UserSession) -> Result<bool, StoreError> {
        self.0.replace(&s).await
    }
    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.0.delete(id).await
    }
    async fn claim_once(&self, key: &str, ttl: u64) -> Result<bool, StoreError> {
        self.0.claim_once(key, ttl).await
    }
    async fn sessions_of(&self, user: &str) -> Result<Vec<Arc<UserSession>>, StoreError> {
        self.0.sessions_of(user).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }
    async fn put_record(&self, key: &str, value: Vec<u8>, ttl: u64) -> Result<(), StoreError> {
        self.0.put_record(key, &value, ttl).await
    }
    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get_record(key).await
    }
    async fn delete_record(&self, key: &str) -> Result<(), StoreError> {
        self.0.delete_record(key).await
    }
    fn backend(&self) -> &'static str {
        "redis"
    }
}

#[tokio::test]
async fn redis_store_contract() {
    let redis = RedisServer::start().await;
    contract(&Uncached(redis_store(
        &single(&redis, "test:"),
        &Key::random(),
    )))
    .await;
}

#[tokio::test]
async fn cached_redis_store_contract() {
    let redis = RedisServer::start().await;
    let mut settings = single(&redis, "test:");
    // A short trust window so the expiry check in the contract reaches Redis.
    settings.cache_ttl = Duration::from_millis(200);
    let store = CachedStore::new(
        redis_store(&settings, &Key::random()),
        settings.cache_ttl,
        settings.cache_max_stale,
        Metrics::new().unwrap(),
    );
    contract(&store).await;
}

#[tokio::test]
async fn redis_cluster_store_contract() {
    let cluster = RedisCluster::start(3).await;
    let settings = redis_settings(
        vallum::config::storage::parse_redis_target(&cluster.url()).unwrap(),
        "test:",
    );
    assert!(matches!(settings.target, RedisTarget::Cluster(ref n) if n.len() == 3));
    let store = Uncached(redis_store(&settings, &Key::random()));
    contract(&store).await;
    // Keys spread over the masters: the store really talks cluster, not one node.
    for i in 0..30 {
        store
            .put(session(&format!("spread-{i}"), 600))
            .await
            .unwrap();
    }
    let per_node = cluster.key_counts().await;
    assert_eq!(per_node.len(), 3);
    assert!(
        per_node.iter().all(|&n| n > 0),
        "keys on every master: {per_node:?}"
    );
}

#[tokio::test]
async fn redis_records_are_compact_encrypted_and_bound_to_the_secret() {
    let redis = RedisServer::start().await;
    let secret = Key::random();
    let settings = single(&redis, "vallum:");
    let store = redis_store(&settings, &secret);
    store.put(&session("x", 3600)).await.unwrap();

    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let raw: Vec<u8> = redis::cmd("GET")
        .arg("vallum:session:x")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(raw.starts_with(b"v2:"), "versioned record");
    let text = String::from_utf8_lossy(&raw);
    for secret_text in [
        "access-secret-token",
        "refresh-secret-token",
        "header.payload.sig",
        "admins",
    ] {
        assert!(!text.contains(secret_text), "{secret_text} stored in clear");
    }
    let json_len = serde_json::to_vec(&session("x", 3600)).unwrap().len();
    assert!(
        raw.len() < json_len,
        "record ({} bytes) is smaller than the session as JSON ({json_len})",
        raw.len()
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg("vallum:session:x")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        (3500..=3600).contains(&ttl),
        "Redis expires the record with the session (ttl {ttl})"
    );

    let other = redis_store(&settings, &Key::random());
    assert!(
        other.get("x").await.unwrap().is_none(),
        "another shared_secret cannot read it"
    );
    redis::cmd("RENAME")
        .arg("vallum:session:x")
        .arg("vallum:session:y")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    assert!(
        store.get("y").await.unwrap().is_none(),
        "a record copied under another id does not open"
    );
}

#[tokio::test]
async fn redis_store_reports_unavailability_within_its_timeout() {
    let port = crate::support::free_port();
    let mut settings = redis_settings(
        RedisTarget::Single(format!("redis://127.0.0.1:{port}/")),
        "x:",
    );
    settings.timeout = Duration::from_millis(50);
    let store = redis_store(&settings, &Key::random());
    let started = Instant::now();
    assert!(
        store.get("a").await.is_err(),
        "an unreachable Redis is an error, not 'no session'"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn users_are_indexed_for_listing_and_revocation() {
    let redis = RedisServer::start().await;
    let key = Key::random();
    let store = redis_store(&single(&redis, "vallum:"), &key);
    // What `vallum sessions` holds: the store behind the trait every backend implements.
    let admin = Uncached(redis_store(&single(&redis, "vallum:"), &key));
    let mut a1 = session("a1", 600);
    a1.email = Some("Alice@Example.com".into());
    let mut a2 = session("a2", 7200);
    a2.email = Some("alice@example.com".into());
    store.put(&a1).await.unwrap();
    store.put(&a2).await.unwrap();
    store.put(&session("b1", 600)).await.unwrap();
    let ids = |v: Vec<Arc<UserSession>>| v.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(store.sessions_of("ALICE@example.com").await.unwrap()),
        ["a1", "a2"]
    );
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("vallum:user:alice@example.com")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        (7100..=7200).contains(&ttl),
        "the index lives as long as the user's longest session (ttl {ttl})"
    );
    let n = vallum::cli::sessions::revoke(&admin, Some("alice@example.com"), None)
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(store
        .sessions_of("alice@example.com")
        .await
        .unwrap()
        .is_empty());
    assert!(
        store.get("b1").await.unwrap().is_some(),
        "other users untouched"
    );
    assert!(
        vallum::cli::sessions::revoke(&admin, None, Some("nope"))
            .await
            .is_err(),
        "an unknown session id is an error"
    );
}

#[tokio::test]
async fn single_use_claims_hold_across_nodes() {
    let redis = RedisServer::start().await;
    let settings = single(&redis, "vallum:");
    let (a, b) = (
        redis_store(&settings, &Key::random()),
        redis_store(&settings, &Key::random()),
    );
    assert!(a.claim_once("state|abc", 60).await.unwrap());
    assert!(
        !b.claim_once("state|abc", 60).await.unwrap(),
        "replay on another node"
    );
    assert!(b.claim_once("state|other", 60).await.unwrap());
    let mem = MemoryStore::default();
    assert!(mem.claim_once("k", 1).await.unwrap());
    assert!(!mem.claim_once("k", 1).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(mem.claim_once("k", 1).await.unwrap(), "claims expire");
}

#[tokio::test]
async fn redis_with_a_password_in_the_url() {
    let redis = RedisServer::start_with_password("s3cret-pass").await;
    let url = format!("redis://:s3cret-pass@127.0.0.1:{}/", redis.port);
    let store = redis_store(
        &redis_settings(RedisTarget::Single(url), "pw:"),
        &Key::random(),
    );
    store.put(&session("p", 600)).await.unwrap();
    assert!(store.get("p").await.unwrap().is_some());
    let wrong = redis_store(
        &redis_settings(
            RedisTarget::Single(format!("redis://:wrong@127.0.0.1:{}/", redis.port)),
            "pw:",
        ),
        &Key::random(),
    );
    assert!(
        wrong.get("p").await.is_err(),
        "a wrong password is an error"
    );
}

#[tokio::test]
async fn redis_over_tls_with_a_private_ca_and_a_client_certificate() {
    use crate::support::certs::TestCa;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("redis CA");
    let ca_path = ca.write(dir.path(), "ca");
    let (cert, key) = ca
        .server(&["127.0.0.1", "localhost"])
        .write(dir.path(), "server");
    let (ccert, ckey) = ca.client("vallum").write(dir.path(), "client");
    let redis = RedisServer::start_tls(&ca_path, &cert, &key, true).await;
    assert!(redis.url().starts_with("rediss://"));

    // Through the config keys, as an operator writes them.
    let yaml = format!(
        "authenticate_service_url: https://auth.example.com\nidp_provider: oidc\nidp_provider_url: https://idp.example.com\n\
         idp_client_id: x\nidp_client_secret: y\ncookie_secret: 8GIP1sU0aqXJZ8T8XkL1zB0cR2P0kTmYxw0a3DkBwsw=\n\
         shared_secret: Wm9vaF9zaGFyZWRfc2VjcmV0XzMyX2J5dGVzX19fXyE=\ninsecure_server: true\n\
         databroker_storage_type: redis\ndatabroker_storage_connection_string: {}\n\
         databroker_storage_ca_file: {}\ndatabroker_storage_cert_file: {}\ndatabroker_storage_key_file: {}\n",
        redis.url(),
        ca_path.display(),
        ccert.display(),
        ckey.display()
    );
    let rt = vallum::snapshot::Snapshot::from_str(&yaml, &|_| None, None).unwrap();
    let auth = rt.settings.auth.as_ref().unwrap();
    let vallum::config::storage::Storage::Redis(settings) = &auth.storage else {
        panic!("redis storage expected")
    };
    let mut settings = settings.clone();
    settings.timeout = Duration::from_secs(2);
    let store = redis_store(&settings, &auth.shared_secret);
    store.put(&session("t", 600)).await.unwrap();
    assert_eq!(
        store.get("t").await.unwrap().unwrap().id,
        "t",
        "round trip over TLS"
    );

    // Without the client certificate the server refuses; without the CA the client does.
    let mut no_client = settings.clone();
    no_client.tls.client = None;
    assert!(redis_store(&no_client, &auth.shared_secret)
        .get("t")
        .await
        .is_err());
    let mut no_ca = settings.clone();
    no_ca.tls.ca_pem = None;
    assert!(redis_store(&no_ca, &auth.shared_secret)
        .get("t")
        .await
        .is_err());

    let bad = vallum::snapshot::Snapshot::from_str(
        &yaml.replace("rediss://", "redis://"),
        &|_| None,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("need rediss://"), "{bad}");
}

#[tokio::test]
async fn file_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = vallum::session::file::FileStore::open(dir.path(), Key::random()).unwrap();
    contract(&store).await;
    // As the gateway holds it: behind the cache (a short trust window, so expiry reaches the file).
    let dir = tempfile::tempdir().unwrap();
    let cached = CachedStore::new(
        vallum::session::file::FileStore::open(dir.path(), Key::random()).unwrap(),
        Duration::from_millis(200),
        Duration::from_secs(300),
        Metrics::new().unwrap(),
    );
    contract(&cached).await;
    assert_eq!(cached.backend(), "file");
}

/// Two handles on one directory are two processes during a graceful upgrade: what one writes,
/// deletes or claims, the other sees at once; nothing is readable without the key.
#[tokio::test]
async fn file_store_is_shared_by_two_processes() {
    use vallum::session::file::FileStore;
    let dir = tempfile::tempdir().unwrap();
    let key = Key::random();
    let old = FileStore::open(dir.path(), key.clone()).unwrap();
    let new = FileStore::open(dir.path(), key.clone()).unwrap();
    let s = session("shared", 3600);
    old.put(s.clone()).await.unwrap();
    assert_eq!(new.get("shared").await.unwrap().as_deref(), Some(&s));
    new.delete("shared").await.unwrap();
    assert!(
        old.get("shared").await.unwrap().is_none(),
        "a sign-out holds in the other process"
    );
    assert!(old.claim_once("state-1", 60).await.unwrap());
    assert!(
        !new.claim_once("state-1", 60).await.unwrap(),
        "single use across both"
    );
    // Sealed at rest: the file holds no token in the clear.
    old.put(session("sealed", 3600)).await.unwrap();
    drop((old, new));
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("access-secret-token") && !text.contains("refresh-secret-token"));
    // Another key opens nothing.
    let stranger = FileStore::open(dir.path(), Key::random()).unwrap();
    assert!(stranger.get("sealed").await.unwrap().is_none());
    assert!(FileStore::open(dir.path(), key)
        .unwrap()
        .get("sealed")
        .await
        .unwrap()
        .is_some());
}

#[test]
fn a_corrupted_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sessions.db"), vec![0x5a; 8192]).unwrap();
    let err = vallum::session::file::FileStore::open(dir.path(), Key::random())
        .err()
        .expect("not a database");
    assert!(
        err.contains("sessions.db") && err.contains("not a database"),
        "{err}"
    );
}

#[test]
fn an_unusable_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let err = vallum::session::file::FileStore::open(&file, Key::random())
        .err()
        .expect("a file where the directory should be");
    assert!(err.contains(&*file.display().to_string()), "{err}");
}

/// `databroker_storage_type: file` through the running gateway: killed (`kill -9`) while users sign
/// in, the database is intact and a user signed in before the crash is still signed in after the
/// restart, with the same cookie.
#[tokio::test]
async fn file_store_sessions_survive_a_killed_gateway() {
    use crate::signin::Env;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "databroker_storage_type: file\ndatabroker_storage_connection_string: file://{}\n",
        dir.path().join("databroker").display()
    );
    let mut env = Env::start(&extra).await;
    let b = env.browser();
    let (r, _) = b.browse(&env.url("app", "/")).await;
    assert_eq!(r.status, 200, "signed in");
    let port = env.gw.port;
    let text = std::fs::read_to_string(&env.gw.config).unwrap();
    // Killed while other users sign in (each sign-in writes a session).
    let signing_in: Vec<_> = (0..6)
        .map(|_| {
            let b = env.browser();
            let url = env.url("app2", "/");
            tokio::spawn(async move {
                for _ in 0..50 {
                    let _ = tokio::time::timeout(Duration::from_secs(2), b.browse(&url)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    env.gw.signal("KILL");
    for t in signing_in {
        t.abort();
    }
    assert!(env
        .gw
        .exited_within(Duration::from_secs(10))
        .await
        .is_some());
    let again = crate::support::Gateway::start_with(port, &text, &[]).await;
    again
        .eventually("identity provider discovered", || async {
            again.log().contains("identity provider discovered")
        })
        .await;
    let (r, _) = b.get(&env.url("app", "/")).await;
    assert_eq!(
        r.status,
        200,
        "the same cookie works on the new process:\n{}",
        again.log()
    );
    assert!(again.log_has("sessions kept in a local database"));
    // The database came through the kill whole.
    let db = rusqlite::Connection::open(dir.path().join("databroker").join("sessions.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let rows: i64 = db
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert!(
        rows >= 2,
        "the sessions written before the kill are there ({rows})"
    );

    // `vallum sessions` reaches the same database while the gateway runs, and a revocation
    // there ends the session in the gateway within its cache's trust window (1 s).
    let config = again.config.to_str().unwrap().to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(crate::support::bin())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = cli(&[
        "sessions",
        "list",
        "--user",
        "alice@example.com",
        "-c",
        &config,
    ]);
    assert_eq!(
        listed.lines().count() as i64,
        rows,
        "every session is alice's: {listed}"
    );
    cli(&[
        "sessions",
        "revoke",
        "--user",
        "alice@example.com",
        "-c",
        &config,
    ]);
    let revoked = Instant::now();
    again
        .eventually("the revocation reaches the gateway", || async {
            b.get(&env.url("app", "/")).await.0.status == 302
        })
        .await;
    assert!(
        revoked.elapsed() < Duration::from_millis(2500),
        "{:?}",
        revoked.elapsed()
    );
}

/// A binary upgrade (`vallum run -u`, then SIGQUIT to the old process) with the file store: the
/// new process takes the sockets and the same cookie still works there; a revocation made while
/// both processes serve holds in both.
#[tokio::test]
async fn file_store_sessions_carry_over_a_binary_upgrade() {
    use crate::signin::{Browser, COOKIE_SECRET, SHARED_SECRET};
    use crate::support::{free_port, Gateway, Upstream};
    let idp = crate::support::idp::Idp::start().await;
    let up = Upstream::echo("app").await;
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\ninsecure_server: true\nauthenticate_service_url: http://authenticate.localhost:{port}\n\
         {}cookie_secret: {COOKIE_SECRET}\nshared_secret: {SHARED_SECRET}\nsignin_rate_limit: 0\nhealth_check_addr: ''\n\
         databroker_storage_type: file\ndatabroker_storage_connection_string: file://{}\n\
         routes:\n  - from: http://app.localhost\n    to: {}\n    allow_any_authenticated_user: true\n",
        idp.config(),
        state.path().join("databroker").display(),
        up.url()
    );
    let pingora = state.path().join("pingora.yaml");
    std::fs::write(
        &pingora,
        format!(
            "version: 1\npid_file: {}\nupgrade_sock: {}\ngrace_period_seconds: 5\ngraceful_shutdown_timeout_seconds: 2\n",
            state.path().join("vallum.pid").display(),
            state.path().join("upgrade.sock").display()
        ),
    )
    .unwrap();
    let conf = pingora.to_str().unwrap();
    let mut old = Gateway::start_with_args(
        tempfile::tempdir().unwrap(),
        port,
        &text,
        &[],
        &["--conf", conf],
    )
    .await;
    old.eventually("identity provider discovered", || async {
        old.log().contains("identity provider discovered")
    })
    .await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let b = Browser::resolving(&[("app.localhost", addr), ("authenticate.localhost", addr)]);
    let app = format!("http://app.localhost:{port}/");
    assert_eq!(
        b.browse(&app).await.0.status,
        200,
        "signed in on the old process"
    );

    let new = Gateway::start_with_args(
        tempfile::tempdir().unwrap(),
        port,
        &text,
        &[],
        &["-u", "--conf", conf],
    )
    .await;
    // The old process hands its sockets over when told to quit, as in `load/zero-downtime.sh`.
    tokio::time::sleep(Duration::from_secs(1)).await;
    old.signal("QUIT");
    new.eventually("the new process holds the sockets", || async {
        new.log().contains("identity provider discovered")
    })
    .await;
    let (r, _) = b.get(&app).await;
    assert_eq!(
        r.status,
        200,
        "the same cookie after the hand-over:\n{}",
        new.log()
    );
    // For its grace period the old process still accepts on the shared socket beside the new
    // one. A revocation written now (as a sign-out on the new process writes it) holds in both
    // within the cache's trust window (1 s).
    let out = std::process::Command::new(crate::support::bin())
        .args(["sessions", "revoke", "--user", "alice@example.com", "-c"])
        .arg(&new.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let cookie = b.cookie_for(&app).unwrap();
    let before_old = old.log().matches("response-code=302").count();
    for _ in 0..32 {
        let r = crate::support::raw_request(
            addr,
            &format!("GET / HTTP/1.1\r\nHost: app.localhost:{port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(
            r.status, 302,
            "revoked on whichever process answered: sign in again"
        );
    }
    assert!(
        old.log().matches("response-code=302").count() > before_old,
        "the old process answered some of them, and refused them too:\n{}",
        old.log()
    );
    assert!(
        old.exited_within(Duration::from_secs(15)).await.is_some(),
        "the old process exits"
    );
}

/// A database the gateway cannot write (another process holds its write lock past the busy
/// timeout) is a 503 at sign-in with the store named, never a panic; the gateway recovers
/// when the lock goes.
#[tokio::test]
async fn a_locked_database_is_a_503_and_then_recovers() {
    use crate::signin::Env;
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("databroker");
    let extra = format!(
        "databroker_storage_type: file\ndatabroker_storage_connection_string: file://{}\n",
        db_dir.display()
    );
    let env = Env::start(&extra).await;
    let blocker = rusqlite::Connection::open(db_dir.join("sessions.db")).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let b = env.browser();
    let (r, _) = b.browse(&env.url("app", "/")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        env.gw.log().contains("database is locked"),
        "the reason is in the log:\n{}",
        env.gw.log()
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    let (r, _) = b.browse(&env.url("app", "/")).await;
    assert_eq!(r.status, 200, "signs in once the lock is gone");
}

/// Expired rows are never served and are deleted in the background as sessions are written, in
/// bounded batches (500 per pass, a pass every 256 writes): no write waits on a backlog.
#[tokio::test]
async fn file_store_deletes_expired_rows_in_bounded_batches() {
    use vallum::session::file::FileStore;
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), Key::random()).unwrap();
    let db = rusqlite::Connection::open(dir.path().join("sessions.db")).unwrap();
    db.execute_batch("BEGIN").unwrap();
    for i in 0..1200 {
        db.execute(
            "INSERT INTO sessions (id, user, issued, expires, data) VALUES (?1, 'old', 1, 2, x'00')",
            [format!("expired-{i}")],
        )
        .unwrap();
    }
    db.execute_batch("COMMIT").unwrap();
    let count = |db: &rusqlite::Connection| -> i64 {
        db.query_row(
            "SELECT count(*) FROM sessions WHERE expires < 10",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert!(
        store.get("expired-1").await.unwrap().is_none(),
        "never served"
    );
    for i in 0..255 {
        store
            .put(session(&format!("live-{i}"), 3600))
            .await
            .unwrap();
    }
    assert_eq!(count(&db), 1200, "no pass before the 256th write");
    store.put(session("live-255", 3600)).await.unwrap();
    let settled = |want: i64| {
        let db = &db;
        async move {
            for _ in 0..100 {
                if count(db) == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    };
    assert!(
        settled(700).await,
        "one pass deletes 500 ({} left)",
        count(&db)
    );
    for i in 256..768 {
        store
            .put(session(&format!("live-{i}"), 3600))
            .await
            .unwrap();
    }
    assert!(
        settled(0).await,
        "two more passes: the rest ({} left)",
        count(&db)
    );
    assert!(
        store.get("live-767").await.unwrap().is_some(),
        "live rows stay"
    );
}
