//! The 40 real Pomerium configs in `../shared/compat/pomerium-configs/` (Pomerium's examples and
//! acceptance configs, its documentation's YAML, public homelab and demo deployments), each run
//! through `vallum check-config` as a migrating user would. The table says, per file, which keys
//! Vallum refuses today (empty: the config is accepted). A fix that makes a config start, or a
//! change that breaks one, shows here: update the table with it, and the migration guide.
//!
//! Each file runs with what its operator passes beside it (`operator_env`: the certificate the
//! deployment mounts, the IdP client settings kept in the environment). 26 of the 40 start. The
//! refusals left:
//! - features of other open issues: MCP's authorization server (09),
//!   SSH routes and `upstream_tunnel` (15, 25); Enterprise criteria and Rego (21, 25, 33);
//! - keys Pomerium itself refuses: `allowed_groups` (04), `client_ca` (28), `idp_service_account`
//!   (38); Pomerium's hosted authenticate service, which Vallum does not have (30, 35);
//! - values the deployment fills in or mounts, left as published: `${VAR}` templates (07, 25),
//!   placeholder secrets (06, 10, 33), files mounted at run time that no environment variable
//!   can point elsewhere (08's per-route client CA, 10's `certificates`, 25's keys), and
//!   `insecure_server: ":80"` (36), which Pomerium refuses too.

use crate::support::bin;
use crate::support::certs::TestCa;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// (file, the keys `check-config` refuses, `[N]` indices dropped; empty: accepted). Upstream
/// names that do not resolve are warnings, never refusals (they are looked up when a request
/// needs them), so the table holds whatever the machine's DNS knows.
const EXPECTED: &[(&str, &[&str])] = &[
    ("01-pomerium-config-example.yaml", &[]),
    ("02-pomerium-config-minimal.yaml", &[]),
    ("03-pomerium-config-docker.yaml", &[]),
    (
        "04-pomerium-policy-example.yaml",
        &["policy.allowed_groups"],
    ),
    ("05-pomerium-mutual-tls.yaml", &[]),
    ("06-pomerium-tiddlywiki.yaml", &["cookie_secret"]),
    ("07-pomerium-cloudrun-policy.yaml", &["policy.to"]),
    (
        "08-pomerium-acceptance.yaml",
        &["routes.tls_downstream_client_ca_file"],
    ),
    ("09-pomerium-acceptance-mcp.yaml", &[]),
    (
        "10-pomerium-ospkg-default.yaml",
        &["certificates", "cookie_secret", "shared_secret"],
    ),
    ("11-docs-guide-forgejo.yaml", &[]),
    ("12-docs-guide-jellyfin.yaml", &[]),
    ("13-docs-harness-selftest.yaml", &[]),
    ("14-docs-ssh-tcp-passthrough.yaml", &[]),
    ("15-docs-ssh-tui-routes.yaml", &["routes.upstream_tunnel"]),
    ("16-docs-tcp-routes.yaml", &[]),
    ("17-docs-tooljet.yaml", &[]),
    ("18-docs-ppl-oss.yaml", &[]),
    ("19-docs-ppl-client-certificate.yaml", &[]),
    ("20-docs-ppl-time.yaml", &[]),
    ("21-docs-ppl-enterprise.yaml", &["routes.policy.allow.and"]),
    ("22-docs-ppl-mcp-tool.yaml", &[]),
    ("23-docs-ref-headers-lb-direct.yaml", &[]),
    ("24-docs-ref-tokens-healthcheck.yaml", &[]),
    (
        "25-podhaus-homelab.yaml",
        &[
            "address",
            "http_redirect_addr",
            "routes.from",
            "routes.policy.allow.and",
            "routes.tls_custom_ca",
            "routes.to",
            "runtime_flags.ssh_routes_portal",
            "signing_key_file",
            "ssh_address",
            "ssh_host_key_files",
            "ssh_user_ca_key_file",
        ],
    ),
    ("26-erred-kluster.yaml", &[]),
    ("27-stephen304-portainer.yaml", &[]),
    ("28-devusb-nix-homelab.yaml", &["client_ca"]),
    ("29-ruial-monitoring.yaml", &[]),
    ("30-yegle-your-dns.yaml", &["policy"]),
    ("31-thiagosol-auth-client.yaml", &[]),
    ("32-lintek-hosted-auth.yaml", &[]),
    (
        "33-zero-trust-in-a-box-rego.yaml",
        &["cookie_secret", "routes.policy.allow.rego", "shared_secret"],
    ),
    ("34-ot-lab-grficsv3.yaml", &[]),
    (
        "35-zta-tailscale.yaml",
        &["authenticate_service_url", "policy"],
    ),
    ("36-ztna-lab-keycloak.yaml", &["insecure_server", "routes"]),
    ("37-vigil-agent-gate.yaml", &[]),
    ("38-gitricko-quickstart.yaml", &["idp_service_account"]),
    ("39-homecentr-docker.yaml", &[]),
    ("40-aws-hack-action-gate.yaml", &[]),
];

/// The corpus: `VALLUM_COMPAT_CORPUS`, else the workspace's `shared/` beside the checkout.
fn corpus() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("VALLUM_COMPAT_CORPUS")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/compat/pomerium-configs"),
            PathBuf::from("/work/shared/compat/pomerium-configs"),
        ])
        .collect();
    candidates
        .iter()
        .find(|d| d.is_dir())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the Pomerium config corpus is missing: looked in {candidates:?}; set \
                 VALLUM_COMPAT_CORPUS to the folder of the 40 configs"
            )
        })
}

/// What an operator passes beside the file: its certificate where the deployment mounts one
/// (here a test certificate in its place), and the IdP client settings deployments keep out of
/// the file (`IDP_*` variables), for files that sign users in (`authenticate_service_url` or an
/// `idp_*` key). Only what the file lacks is supplied.
fn operator_env(text: &str, cert: &(PathBuf, PathBuf)) -> Vec<(&'static str, String)> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap_or_default();
    let has = |k: &str| doc.get(k).is_some();
    let mut env = Vec::new();
    let missing_file = |k: &str| {
        doc.get(k)
            .and_then(|v| v.as_str())
            .is_some_and(|p| !std::path::Path::new(p).exists())
    };
    if missing_file("certificate_file") {
        env.push(("CERTIFICATE_FILE", cert.0.display().to_string()));
        env.push(("CERTIFICATE_KEY_FILE", cert.1.display().to_string()));
    }
    let signs_in = has("authenticate_service_url") || has("idp_provider") || has("idp_client_id");
    if signs_in {
        let provider = doc
            .get("idp_provider")
            .and_then(|v| v.as_str())
            .unwrap_or("oidc");
        if provider == "oidc" && !has("idp_provider_url") {
            env.push(("IDP_PROVIDER_URL", "https://idp.example.com".to_string()));
        }
        if !has("idp_client_id") {
            env.push(("IDP_CLIENT_ID", "vallum".to_string()));
        }
        if !has("idp_client_secret") && !has("idp_client_secret_file") {
            env.push(("IDP_CLIENT_SECRET", "from-the-environment".to_string()));
        }
    }
    env
}

/// The keys of the errors `check-config` lists, without list indices.
fn refused_keys(output: &str) -> BTreeSet<String> {
    let location = regex::Regex::new(r"^\S+:\d+:\d+: ").unwrap();
    output
        .lines()
        .filter_map(|l| l.strip_prefix("  - "))
        // `file:line:column: ` first, where the key is in the file.
        .map(|l| match location.find(l) {
            Some(m) if m.start() == 0 => &l[m.end()..],
            _ => l,
        })
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .map(|k| {
            let mut key = String::new();
            let mut in_index = false;
            for c in k.chars() {
                match c {
                    '[' => in_index = true,
                    ']' => in_index = false,
                    c if !in_index => key.push(c),
                    _ => {}
                }
            }
            key
        })
        .collect()
}

#[test]
fn every_real_config_gets_its_recorded_verdict() {
    let dir = corpus();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    let listed: Vec<&str> = EXPECTED.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        files, listed,
        "every config in the corpus has a row, and only those"
    );
    let mut wrong = Vec::new();
    let mut table = Vec::new();
    let tmp = tempfile::tempdir().unwrap();
    let cert = TestCa::new("corpus")
        .server(&["*.localhost.pomerium.io"])
        .write(tmp.path(), "mounted");
    for (file, keys) in EXPECTED {
        // Names are looked up for warnings only; bound the wait where no DNS answers (the
        // `dns_*` keys from the environment, as Pomerium reads them).
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let out = std::process::Command::new(bin())
            .args(["check-config", dir.join(file).to_str().unwrap()])
            .envs(operator_env(&text, &cert))
            .env("DNS_QUERY_TIMEOUT", "300ms")
            .env("DNS_QUERY_TRIES", "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let got = refused_keys(&text);
        let listed: Vec<String> = got.iter().map(|k| format!("{k:?}")).collect();
        table.push(format!("    ({file:?}, &[{}]),", listed.join(", ")));
        let want: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
        if got != want || out.status.success() != keys.is_empty() {
            wrong.push(format!(
                "{file}: refused {got:?}, recorded {want:?}\n{text}"
            ));
        }
    }
    let accepted = EXPECTED.iter().filter(|(_, k)| k.is_empty()).count();
    assert!(
        wrong.is_empty(),
        "{}\n\nthe table as it stands now:\n{}",
        wrong.join("\n"),
        table.join("\n")
    );
    assert!(accepted >= 18, "accepted {accepted} of {}", EXPECTED.len());
}
