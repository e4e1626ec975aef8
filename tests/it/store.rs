//! One contract for every session store, run against the embedded store and a real Redis.

use crate::support::redis::RedisServer;
use std::time::Duration;
use vallum::crypto::Key;
use vallum::session::memory::MemoryStore;
use vallum::session::redis::RedisStore;
use vallum::session::{unix_now, Session, SessionStore};

fn session(id: &str, ttl: u64) -> Session {
    let now = unix_now();
    Session {
        id: id.into(),
        user_id: format!("user-{id}"),
        email: Some(format!("{id}@example.com")),
        name: Some("Name".into()),
        groups: vec!["admins".into()],
        claims: serde_json::json!({"sub": format!("user-{id}"), "department": "R&D"})
            .as_object()
            .unwrap()
            .clone(),
        id_token: "header.payload.sig".into(),
        access_token: "access-secret-token".into(),
        refresh_token: Some("refresh-secret-token".into()),
        access_expires_at: Some(now + 300),
        issued_at: now,
        expires_at: now + ttl,
        claims_refreshed_at: now,
    }
}

async fn contract(store: &dyn SessionStore) {
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

    store.put(session("b", 3600)).await.unwrap();
    store.delete("a").await.unwrap();
    assert!(store.get("a").await.unwrap().is_none(), "deleted");
    assert!(store.get("b").await.unwrap().is_some(), "others untouched");
    store.delete("never-existed").await.unwrap();

    store.put(session("short", 1)).await.unwrap();
    assert!(store.get("short").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        store.get("short").await.unwrap().is_none(),
        "expired sessions are gone"
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

#[tokio::test]
async fn redis_store_contract() {
    let redis = RedisServer::start().await;
    let store = RedisStore::new(&redis.url(), "test:", &Key::random()).unwrap();
    contract(&store).await;
}

#[tokio::test]
async fn redis_records_are_encrypted_and_bound_to_the_secret() {
    let redis = RedisServer::start().await;
    let secret = Key::random();
    let store = RedisStore::new(&redis.url(), "vallum:", &secret).unwrap();
    store.put(session("x", 3600)).await.unwrap();

    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let raw: String = redis::cmd("GET")
        .arg("vallum:session:x")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(raw.starts_with("v1:"), "versioned record");
    for secret_text in [
        "access-secret-token",
        "refresh-secret-token",
        "header.payload.sig",
        "admins",
    ] {
        assert!(!raw.contains(secret_text), "{secret_text} stored in clear");
    }
    let ttl: i64 = redis::cmd("TTL")
        .arg("vallum:session:x")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        (3500..=3600).contains(&ttl),
        "Redis expires the record with the session (ttl {ttl})"
    );

    let other = RedisStore::new(&redis.url(), "vallum:", &Key::random()).unwrap();
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
async fn redis_store_reports_unavailability() {
    let port = crate::support::free_port();
    let store =
        RedisStore::new(&format!("redis://127.0.0.1:{port}/"), "x:", &Key::random()).unwrap();
    assert!(
        store.get("a").await.is_err(),
        "an unreachable Redis is an error, not 'no session'"
    );
}
