//! A stateless fleet: gateway nodes that share sessions through a real Redis (or a real Redis
//! Cluster, or a real PostgreSQL), hear each other's revocations at once, start late, and ride out
//! an outage of the store.

use crate::signin::{csrf_field, Browser};
use crate::store::{redis_settings, session};
use crate::support::idp::Idp;
use crate::support::postgres::PgServer;
use crate::support::redis::{RedisCluster, RedisServer};
use crate::support::{client, free_port, Gateway, Upstream};
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vallum::config::storage::RedisTarget;
use vallum::crypto::Key;
use vallum::session::cache::CachedStore;
use vallum::session::redis::RedisStore;
use vallum::session::revocations::RevocationListener;
use vallum::session::SessionStore;
use vallum::telemetry::metrics::Metrics;

const SECRETS: &str = "cookie_secret: 8GIP1sU0aqXJZ8T8XkL1zB0cR2P0kTmYxw0a3DkBwsw=\nshared_secret: Wm9vaF9zaGFyZWRfc2VjcmV0XzMyX2J5dGVzX19fXyE=\n";

/// The bound the sign-out propagation test asserts: the 100 ms target plus room for a loaded CI
/// machine running debug builds. The measured figure is printed.
const REVOCATION_BOUND: Duration = Duration::from_millis(250);

/// A port free on 127.0.0.1, .2 and .3, so every node can be addressed as `host:port` like
/// nodes behind a load balancer, and a test browser pick the node by address.
fn fleet_port() -> u16 {
    loop {
        let p = free_port();
        if (2..=3).all(|i| {
            std::net::TcpListener::bind(std::net::SocketAddr::from(([127, 0, 0, i], p))).is_ok()
        }) {
            return p;
        }
    }
}

struct Fleet {
    idp: Idp,
    _up: Upstream,
    /// Every node serves the same `host:port` names, as behind a load balancer.
    nodes: Vec<Gateway>,
    config: String,
    pa: u16,
}

impl Fleet {
    /// `store`: the `databroker_storage_*` keys (`redis_keys`, `postgres_keys`).
    async fn start(store: &str, n: usize, extra: &str) -> Fleet {
        let idp = Idp::start().await;
        let up = Upstream::echo("app").await;
        let pa = fleet_port();
        let config = format!(
            "insecure_server: true\nauthenticate_service_url: http://authenticate.localhost:{pa}\n{SECRETS}{idp}\
             {store}{extra}\
             routes:\n  - from: http://app.localhost\n    to: {u}\n    allow_any_authenticated_user: true\n",
            idp = idp.config(),
            u = up.url()
        );
        let mut fleet = Fleet {
            idp,
            _up: up,
            nodes: Vec::new(),
            config,
            pa,
        };
        for _ in 0..n {
            fleet.add_node().await;
        }
        fleet
    }

    /// Node `i` listens on 127.0.0.{i+1}, on the fleet's one port.
    async fn add_node(&mut self) -> &Gateway {
        let (ip, port) = (self.nodes.len() + 1, self.pa);
        let gw = Gateway::start_with(
            port,
            &format!("address: 127.0.0.{ip}:{port}\n{}", self.config),
            &[],
        )
        .await;
        gw.eventually("identity provider discovered", || async {
            gw.log().contains("identity provider discovered")
        })
        .await;
        gw.eventually("subscribed to session revocations", || async {
            gw.log().contains("subscribed to session revocations")
        })
        .await;
        self.nodes.push(gw);
        self.nodes.last().unwrap()
    }

    /// Signs `user` in through node `i` (browser flow) and returns the app cookie header.
    async fn sign_in(&self, i: usize, user: &str) -> String {
        self.idp.login_as(user);
        let node = &self.nodes[i];
        let b = Browser::resolving(&[
            ("authenticate.localhost", node.addr()),
            ("app.localhost", node.addr()),
        ]);
        let app = format!("http://app.localhost:{}/hello", self.pa);
        let (resp, hops) = b.browse(&app).await;
        assert_eq!(resp.status, 200, "{hops:#?}\n{}", node.log());
        b.cookie_for(&app).unwrap()
    }

    async fn get(&self, i: usize, cookie: &str) -> (u16, String) {
        let r = client()
            .get(self.nodes[i].url("/hello"))
            .header("host", format!("app.localhost:{}", self.pa))
            .header("cookie", cookie)
            .header("accept", "text/html")
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Signs out through node `i` (confirmation page, then the CSRF-protected POST).
    async fn sign_out(&self, i: usize, cookie: &str) {
        let base = "/.pomerium/sign_out";
        let host = format!("app.localhost:{}", self.pa);
        let page = client()
            .get(self.nodes[i].url(base))
            .header("host", &host)
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let r = client()
            .post(self.nodes[i].url(base))
            .header("host", &host)
            .header("cookie", cookie)
            .form(&[("csrf", csrf_field(&page))])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "sign-out accepted");
    }
}

pub fn redis_keys(url: &str) -> String {
    format!("databroker_storage_type: redis\ndatabroker_storage_connection_string: {url}\n")
}

pub fn postgres_keys(url: &str) -> String {
    format!("databroker_storage_type: postgres\ndatabroker_storage_connection_string: {url}\n")
}

/// A store server a test can crash and bring back.
pub trait Crashable {
    fn crash(&mut self);
    fn restart(&mut self) -> impl std::future::Future<Output = ()>;
}

impl Crashable for RedisServer {
    fn crash(&mut self) {
        self.kill()
    }
    async fn restart(&mut self) {
        RedisServer::restart(self).await
    }
}

impl Crashable for PgServer {
    fn crash(&mut self) {
        self.kill()
    }
    async fn restart(&mut self) {
        PgServer::restart(self).await
    }
}

/// Sign in on A, browse on B; sign out on B, refused on A at once; a node started afterwards
/// serves the sessions that exist.
async fn fleet_suite(store: &str) {
    // A long local trust window: only the revocation channel can explain a fast refusal.
    let mut fleet = Fleet::start(store, 2, "databroker_cache_ttl: 60s\n").await;
    let cookie = fleet.sign_in(0, "alice-id").await;
    assert_eq!(
        fleet.get(1, &cookie).await.0,
        200,
        "node B serves A's session"
    );
    assert_eq!(fleet.get(0, &cookie).await.0, 200);

    fleet.add_node().await;
    assert_eq!(
        fleet.get(2, &cookie).await.0,
        200,
        "a node started after sign-in serves the session"
    );

    fleet.sign_out(1, &cookie).await;
    let signed_out = Instant::now();
    loop {
        let (status, _) = fleet.get(0, &cookie).await;
        if status == 302 {
            break;
        }
        assert!(
            signed_out.elapsed() < Duration::from_secs(5),
            "node A still serves a signed-out session"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let latency = signed_out.elapsed();
    println!("sign-out on node B enforced on node A after {latency:?}");
    assert!(
        latency < REVOCATION_BOUND,
        "revocation took {latency:?}\nA:\n{}",
        fleet.nodes[0].log()
    );
    assert_eq!(fleet.get(2, &cookie).await.0, 302, "and on the late node");
}

#[tokio::test]
async fn two_nodes_on_one_redis() {
    let redis = RedisServer::start().await;
    fleet_suite(&redis_keys(&redis.url())).await;
}

#[tokio::test]
async fn two_nodes_on_one_postgres() {
    let pg = PgServer::start().await;
    fleet_suite(&postgres_keys(&pg.url())).await;
}

#[tokio::test]
async fn two_nodes_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3).await;
    fleet_suite(&redis_keys(&cluster.url())).await;
}

#[tokio::test]
async fn redis_outage_and_recovery() {
    let mut redis = RedisServer::start_durable().await;
    let keys = redis_keys(&redis.url());
    outage_suite(&mut redis, &keys).await;
}

#[tokio::test]
async fn postgres_outage_and_recovery() {
    let mut pg = PgServer::start().await;
    let keys = postgres_keys(&pg.url());
    outage_suite(&mut pg, &keys).await;
}

/// The store dies mid-traffic: known sessions keep working from the local cache, an unknown one
/// gets a clear 503, sign-in says sessions cannot be stored, nothing hangs; the store comes back
/// and everything works again with no gateway restart.
async fn outage_suite(server: &mut impl Crashable, keys: &str) {
    let fleet = Fleet::start(keys, 2, "databroker_storage_timeout: 100ms\n").await;
    let alice = fleet.sign_in(0, "alice-id").await;
    // Bob signs in through node B only: node A has never seen his session.
    let bob = fleet.sign_in(1, "bob-id").await;
    assert_eq!(fleet.get(0, &alice).await.0, 200);

    server.crash();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let (status, _) = fleet.get(0, &alice).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 200, "a cached session is served during the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request {slowest:?}"
    );
    let started = Instant::now();
    let (status, body) = fleet.get(0, &bob).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        status,
        503,
        "unknown session during an outage: not a login loop\n{}",
        fleet.nodes[0].log()
    );
    assert!(body.contains("Sessions unavailable"), "{body}");
    let b = Browser::resolving(&[
        ("authenticate.localhost", fleet.nodes[0].addr()),
        ("app.localhost", fleet.nodes[0].addr()),
    ]);
    let (resp, hops) = b
        .browse(&format!("http://app.localhost:{}/", fleet.pa))
        .await;
    assert_eq!(
        resp.status, 503,
        "sign-in cannot store a session: {hops:#?}"
    );
    let log = fleet.nodes[0].log();
    assert!(!log.contains("panicked"), "{log}");

    server.restart().await;
    fleet.nodes[0]
        .eventually("bob's session served again", || async {
            fleet.get(0, &bob).await.0 == 200
        })
        .await;
    let recovered = Instant::now();
    fleet.nodes[1]
        .eventually("node B reads the store again", || async {
            fleet.get(1, &alice).await.0 == 200
        })
        .await;
    println!("node B recovered {:?} after node A", recovered.elapsed());
    let carol = fleet.sign_in(0, "eve-id").await;
    assert_eq!(fleet.get(1, &carol).await.0, 200, "new sign-ins work again");
}

/// `session_idle_timeout`: activity is recorded in the store, so a node that never saw the
/// session finds it idle from the recorded time — driven here by writing that time, not by
/// waiting — and ends it on every node.
#[tokio::test]
async fn an_idle_session_ends_on_every_node() {
    let redis = RedisServer::start().await;
    let fleet = Fleet::start(
        &redis_keys(&redis.url()),
        2,
        "session_idle_timeout: 10m\ndatabroker_cache_ttl: 60s\n",
    )
    .await;
    let cookie = fleet.sign_in(0, "alice-id").await;
    assert_eq!(fleet.get(0, &cookie).await.0, 200);
    let secret = Key::from_base64("Wm9vaF9zaGFyZWRfc2VjcmV0XzMyX2J5dGVzX19fXyE=").unwrap();
    let store = RedisStore::new(
        &redis_settings(RedisTarget::Single(redis.url()), "vallum:"),
        &secret,
        Metrics::new().unwrap(),
    )
    .unwrap();
    // Signed in an hour ago, as far as the store knows.
    let mut session = (*store.sessions_of("alice@example.com").await.unwrap()[0]).clone();
    session.issued_at -= 3600;
    store.put(&session).await.unwrap();
    let id = session.id.clone();
    let recorded = |ago: u64| {
        let t = vallum::clock::unix_now() - ago;
        t.to_string().into_bytes()
    };
    // Seen 9 minutes ago: node C, started now, serves it.
    store
        .put_record(&format!("seen:{id}"), &recorded(540), 600)
        .await
        .unwrap();
    let mut fleet = fleet;
    fleet.add_node().await;
    assert_eq!(fleet.get(2, &cookie).await.0, 200, "used 9 minutes ago");
    // Seen 11 minutes ago: node B, which has not seen it either, ends it, and node A (whose
    // cache would trust the session for a minute) follows at once through the revocation.
    store
        .put_record(&format!("seen:{id}"), &recorded(660), 600)
        .await
        .unwrap();
    assert_eq!(fleet.get(1, &cookie).await.0, 302, "idle for 11 minutes");
    fleet.nodes[0]
        .eventually("node A drops the idle session", || async {
            fleet.get(0, &cookie).await.0 == 302
        })
        .await;
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "ended in the store"
    );
    let log = fleet.nodes[1].log();
    assert!(log.contains("session ended: idle"), "{log}");
    assert!(
        log.contains("reasons=\"session-idle\""),
        "the authorize log says why: {log}"
    );
}

/// The IdP's back-channel logout token, received by one node, ends the session on the other
/// within the bound of any revocation (measured: printed).
#[tokio::test]
async fn a_backchannel_logout_on_one_node_holds_on_every_node() {
    let redis = RedisServer::start().await;
    let fleet = Fleet::start(&redis_keys(&redis.url()), 2, "databroker_cache_ttl: 60s\n").await;
    fleet
        .idp
        .set_extra_claims(serde_json::json!({"sid": "idp-session-9"}));
    let cookie = fleet.sign_in(0, "alice-id").await;
    assert_eq!(fleet.get(1, &cookie).await.0, 200);
    let now = vallum::clock::unix_now();
    let token = fleet.idp.sign_jwt(serde_json::json!({
        "iss": fleet.idp.issuer(), "aud": fleet.idp.client_id, "iat": now, "exp": now + 60,
        "jti": "jti-fleet-1", "sid": "idp-session-9",
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
    }));
    let r = client()
        .post(fleet.nodes[0].url("/.pomerium/backchannel_logout"))
        .header("host", format!("authenticate.localhost:{}", fleet.pa))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let posted = Instant::now();
    while fleet.get(1, &cookie).await.0 == 200 {
        assert!(
            posted.elapsed() < Duration::from_secs(5),
            "node B still serves it"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let latency = posted.elapsed();
    println!("back-channel logout on node A enforced on node B after {latency:?}");
    assert!(latency < REVOCATION_BOUND, "{latency:?}");
    // The same token at the other node is a replay, across the fleet.
    let r = client()
        .post(fleet.nodes[1].url("/.pomerium/backchannel_logout"))
        .header("host", format!("authenticate.localhost:{}", fleet.pa))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "replayed on another node");
}

// The cache and the revocation channel, without gateways in between.

fn cached(redis_url: &str, ttl: Duration) -> Arc<CachedStore> {
    let mut settings = redis_settings(RedisTarget::Single(redis_url.into()), "t:");
    settings.cache_ttl = ttl;
    let secret = Key::from_bytes([7; 32]);
    let metrics = Metrics::new().unwrap();
    let inner = RedisStore::new(&settings, &secret, Arc::clone(&metrics)).unwrap();
    Arc::new(CachedStore::new(
        inner,
        settings.cache_ttl,
        settings.cache_max_stale,
        metrics,
    ))
}

async fn get_calls(redis: &RedisServer) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|r| r.split(',').next())
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test]
async fn cache_hits_make_no_round_trip_and_misses_coalesce() {
    let redis = RedisServer::start().await;
    let writer = cached(&redis.url(), Duration::from_secs(1));
    writer.put(session("s1", 600)).await.unwrap();
    let reader = cached(&redis.url(), Duration::from_secs(30));
    let before = get_calls(&redis).await;
    let gets = (0..50).map(|_| {
        let r = Arc::clone(&reader);
        tokio::spawn(async move { r.get("s1").await.unwrap().is_some() })
    });
    for g in gets {
        assert!(g.await.unwrap());
    }
    for _ in 0..200 {
        assert!(reader.get("s1").await.unwrap().is_some());
    }
    assert_eq!(
        get_calls(&redis).await - before,
        1,
        "50 concurrent misses share one GET; 200 hits make none"
    );

    let short = cached(&redis.url(), Duration::from_millis(100));
    short.get("s1").await.unwrap();
    let before = get_calls(&redis).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    short.get("s1").await.unwrap();
    assert_eq!(
        get_calls(&redis).await - before,
        1,
        "an entry older than the TTL is read again"
    );
}

#[tokio::test]
async fn revocations_reach_every_node_cache() {
    let redis = RedisServer::start().await;
    let (a, b) = (
        cached(&redis.url(), Duration::from_secs(60)),
        cached(&redis.url(), Duration::from_secs(60)),
    );
    let (_stop, rx) = tokio::sync::watch::channel(false);
    for s in [&a, &b] {
        let l = RevocationListener {
            store: Arc::clone(s),
        };
        let rx = rx.clone();
        tokio::spawn(async move { l.start(rx).await });
    }
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("t:revoked")
            .query_async(&mut c)
            .await
            .unwrap();
        if n == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "listeners did not subscribe");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.put(session("s1", 600)).await.unwrap();
    assert!(b.get("s1").await.unwrap().is_some());
    assert_eq!(b.cached(), 1);
    let started = Instant::now();
    a.delete("s1").await.unwrap();
    while b.cached() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "node B never heard of the revocation"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let latency = started.elapsed();
    println!("revocation reached the other cache after {latency:?}");
    assert!(latency < Duration::from_millis(100), "{latency:?}");
    assert!(b.get("s1").await.unwrap().is_none());
}

#[tokio::test]
async fn outage_serves_recent_sessions_only_and_recovers() {
    let mut redis = RedisServer::start_durable().await;
    let store = cached(&redis.url(), Duration::from_millis(50));
    store.put(session("known", 600)).await.unwrap();
    let other = cached(&redis.url(), Duration::from_secs(1));
    other.put(session("unknown", 600)).await.unwrap();
    redis.kill();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert!(
        store.get("known").await.unwrap().is_some(),
        "seen recently: served stale"
    );
    assert!(
        store.get("unknown").await.is_err(),
        "never seen: an error, not 'signed out'"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the store timeout: {:?}",
        started.elapsed()
    );
    assert!(store.put(session("new", 600)).await.is_err());
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.get("unknown").await.ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.put(session("new", 600)).await.unwrap();
}
