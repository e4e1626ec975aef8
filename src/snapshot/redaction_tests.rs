//! A config full of secrets, formatted with `{:?}` at every stage (raw, compiled, snapshot),
//! shows none of them: a debug log line or a panic message cannot leak a key.

use super::Snapshot;
use base64::Engine;
use p256::pkcs8::EncodePrivateKey;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn debug_output_holds_no_secret() {
    let cookie_secret = b64(&[0x11; 32]);
    let shared_secret = b64(&[0x22; 32]);
    let signing_key = p256::SecretKey::from_slice(&[0x33; 32])
        .unwrap()
        .to_pkcs8_pem(Default::default())
        .unwrap()
        .to_string();
    let signing_key_b64 = b64(signing_key.as_bytes());
    let basic = b64(b"scraper:metrics-pass-5150");
    let secrets = [
        cookie_secret.as_str(),
        shared_secret.as_str(),
        "idp-client-secret-8086",
        "redis-pass-6502",
        "metrics-pass-5150",
        basic.as_str(),
        signing_key_b64.as_str(),
        "CERTIFICATE-KEY-Z80",
        "CERT-LIST-KEY-68000",
        "ROUTE-CLIENT-KEY-6809",
    ];
    let yaml = format!(
        "insecure_server: true\n\
         address: 127.0.0.1:0\n\
         authenticate_service_url: http://authenticate.localhost\n\
         idp_provider: oidc\n\
         idp_provider_url: https://idp.example.com\n\
         idp_client_id: vallum\n\
         idp_client_secret: idp-client-secret-8086\n\
         cookie_secret: {cookie_secret}\n\
         shared_secret: {shared_secret}\n\
         signing_key: {signing_key_b64}\n\
         databroker_storage_type: redis\n\
         databroker_storage_connection_string: redis://:redis-pass-6502@127.0.0.1:6379\n\
         metrics_address: 127.0.0.1:0\n\
         metrics_basic_auth: {basic}\n\
         routes:\n\
         - from: http://app.localhost\n\
         \x20 to: http://127.0.0.1:9\n\
         \x20 allow_public_unauthenticated_access: true\n"
    );
    let snap = Snapshot::from_str(&yaml, &|_| None, None).unwrap_or_else(|e| panic!("{e}"));
    let mut errs = crate::config::error::Errors::default();
    let raw_with_keys = format!(
        "{yaml}certificate: CERT\ncertificate_key: CERTIFICATE-KEY-Z80\n\
         certificates:\n- cert: C\n  key: CERT-LIST-KEY-68000\n"
    )
    .replace(
        "  allow_public_unauthenticated_access: true\n",
        "  allow_public_unauthenticated_access: true\n  tls_client_key: ROUTE-CLIENT-KEY-6809\n",
    );
    let raw = crate::config::load::parse(&raw_with_keys, &|_| None, &mut errs).unwrap();
    assert!(raw.routes[0].is_some(), "the route decoded");
    for (what, text) in [
        ("raw config", format!("{raw:?}")),
        ("snapshot", format!("{snap:?}")),
        ("settings", format!("{:?}", snap.settings)),
    ] {
        assert!(
            text.contains("<redacted>") || what != "raw config",
            "{what}: {text}"
        );
        for s in secrets {
            assert!(!text.contains(s), "{what} shows the secret {s:?}");
        }
    }
    // The values are really there, just not shown.
    assert_eq!(
        raw.settings.idp_client_secret.as_deref(),
        Some("idp-client-secret-8086")
    );
}
