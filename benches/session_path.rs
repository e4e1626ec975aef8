//! Question: what does the signed-in part of a request cost, step by step, beyond routing and
//! policy (benched elsewhere)? Unsealing the session cookie, finding the session in the memory
//! store, and shaping the upstream request (hop-by-hop removal, identity-header ownership,
//! forwarding headers, cookie stripping, header sets).

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use vallum::clock::unix_now;
use vallum::crypto::Key;
use vallum::proxy::forward::{shape_request, ForwardInfo};
use vallum::routes::route::Action;
use vallum::session::cookie::{self, Handle};
use vallum::session::memory::MemoryStore;
use vallum::session::{SessionStore, UserSession};

fn session(id: &str) -> UserSession {
    let now = unix_now();
    UserSession {
        id: id.into(),
        user_id: "alice-id".into(),
        email: Some("alice@example.com".into()),
        name: Some("Alice".into()),
        groups: vec!["admins".into(), "engineering".into()],
        claims: Default::default(),
        id_token: "h.p.s".into(),
        access_token: "at".into(),
        refresh_token: None,
        access_expires_at: None,
        issued_at: now,
        expires_at: now + 3600,
        claims_refreshed_at: now,
        idp: String::new(),
        devices: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let key = Key::from_bytes([3; 32]);
    let now = unix_now();
    let value = cookie::seal(
        &key,
        "_pomerium",
        "app.example.com",
        &Handle {
            sid: "s-42".into(),
            exp: now + 3600,
        },
    );
    c.bench_function("cookie_unseal", |b| {
        b.iter(|| cookie::open(&key, "_pomerium", "app.example.com", black_box(&value), now))
    });
    // What the proxy does: the same cookie again, answered from the opened-cookie cache.
    let opened = cookie::OpenedCookies::default();
    c.bench_function("cookie_unseal_remembered", |b| {
        b.iter(|| opened.open(&key, "_pomerium", "app.example.com", black_box(&value), now))
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let store = MemoryStore::default();
    for i in 0..10_000 {
        let _ = rt.block_on(store.put(session(&format!("s-{i}"))));
    }
    c.bench_function("memory_store_get_10k_sessions", |b| {
        b.iter(|| rt.block_on(store.get(black_box("s-4242"))))
    });

    let text = "insecure_server: true\nroutes:\n  - from: http://app.example.com\n    to: http://127.0.0.1:9\n    allow_public_unauthenticated_access: true\n    set_request_headers:\n      X-Team: platform\n    remove_request_headers: [X-Debug]\n";
    let rt_config = vallum::snapshot::Snapshot::from_str(text, &|_| None, None)
        .unwrap_or_else(|e| panic!("config: {e}"));
    let route = rt_config
        .routes
        .find("app.example.com", 80, "/")
        .unwrap_or_else(|| panic!("route"))
        .clone();
    let Action::Upstream(pool) = &route.action else {
        panic!("upstream route")
    };
    let target = pool.targets[0].clone();
    let strip = ["_pomerium", "_pomerium_authenticate"];
    let identity_list =
        vallum::config::ops::StripList::new(vallum::config::ops::DEFAULT_STRIP_IDENTITY);
    // The headers as Vallum shapes them: the request's own map, Pingora's case map gone.
    let mut template = http::HeaderMap::new();
    for (k, v) in [
        ("host", "app.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0"),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-language", "en-GB,en;q=0.9"),
        (
            "cookie",
            "_pomerium=abcdefghijklmnopqrstuvwxyz0123456789; theme=dark",
        ),
        ("x-forwarded-for", "203.0.113.9"),
        ("connection", "keep-alive"),
    ] {
        template.insert(k, http::HeaderValue::from_static(v));
    }
    c.bench_function("shape_upstream_request", |b| {
        b.iter(|| {
            let mut req = template.clone();
            let info = ForwardInfo {
                identity: None,
                pass_assertion: false,
                strip_cookies: &strip,
                original_host: "app.example.com",
                client_ip: "198.51.100.7".parse().ok(),
                scheme: "https",
                skip_xff_append: false,
                upgrade: false,
                trusted_peer: false,
                strip_identity: &identity_list,
                claim_headers: &[],
                client_cert: None,
            };
            let _ = shape_request(&mut req, &route, &target, &info);
            black_box(req)
        })
    });
}

/// A workload JWT (`bearer_token_format: jwt`): the signature check and claim validation each
/// new token costs, with the issuer's keys cached as they are after the first request.
fn workload(c: &mut Criterion) {
    use base64::Engine;
    use vallum::config::workload::WorkloadIssuer;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let kp = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
    let raw = kp.public_key_raw();
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        "kid": "k1", "alg": "ES256", "use": "sig"}]}))
    .unwrap_or_else(|e| panic!("jwks: {e}"));
    let issuer = std::sync::Arc::new(WorkloadIssuer {
        name: "ci".into(),
        issuer: "https://token.actions.githubusercontent.com".into(),
        jwks_url: None,
        audiences: vec!["https://vallum.example".into()],
        algorithms: vec![jsonwebtoken::Algorithm::ES256],
    });
    let keys = vallum::identity::workload::WorkloadKeys::default();
    keys.preload(&issuer, jwks);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let now = unix_now();
    let claims = serde_json::json!({"iss": issuer.issuer, "aud": "https://vallum.example",
        "sub": "repo:acme/app:ref:refs/heads/main", "repository": "acme/app", "iat": now, "exp": now + 600});
    let pem = kp.serialize_pem();
    let ek = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes())
        .unwrap_or_else(|e| panic!("pem: {e}"));
    let token = jsonwebtoken::encode(&header, &claims, &ek).unwrap_or_else(|e| panic!("{e}"));
    let accepted = [issuer];
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    assert!(rt.block_on(keys.verify(&token, &accepted)).is_ok());
    c.bench_function("workload_jwt_verify", |b| {
        b.iter(|| rt.block_on(keys.verify(black_box(&token), &accepted)))
    });
}

criterion_group!(benches, bench, workload);
criterion_main!(benches);
