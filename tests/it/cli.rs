//! The command line: `check-config`, `--version`, and the shipped example configs.

use crate::support::{bin, certs::TestCa};
use std::process::Command;

#[test]
fn version() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("vallum {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_reports_every_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        r#"
insecure_server: true
address: ":8080"
timeout_idle: 30
routes:
  - from: https://a.example.com
    to: http://127.0.0.1:1
    prefx: /a
    allow_public_unauthenticated_access: true
  - from: https://b.example.com/path
    to: http://127.0.0.1:1
  - from: https://c.example.com
    regex: "("
    response: {status: 200}
    redirect: {https_redirect: true}
  - from: https://d.example.com
    to: http://127.0.0.1:1
    allowed_groups: [admins]
    allow_public_unauthenticated_access: true
    allowed_users: [bob@example.com]
"#,
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check-config"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "timeout_idle: a bare number is not a duration; add a unit, e.g. 30s",
        "routes[0].prefx: unknown key; did you mean prefix?",
        "routes[1].from: must not have a path",
        "routes[2].regex: invalid regular expression",
        "routes[2]: only one of `to`, `redirect` and `response` may be set",
        "routes[3].allowed_groups: removed in Pomerium 0.20",
        "routes[3].allow_public_unauthenticated_access: cannot be combined",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn check_config_prints_a_route_summary() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ok.yaml");
    std::fs::write(
        &f,
        "insecure_server: true\nroutes:\n  - from: https://a.example.com\n    prefix: /api\n    to: http://127.0.0.1:9/v1\n    allow_public_unauthenticated_access: true\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check-config"])
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 routes"), "{text}");
    assert!(
        text.contains("a.example.com /api* -> http://127.0.0.1:9/v1 [public]"),
        "{text}"
    );
}

/// The systemd example's Pingora conf is one Pingora accepts.
#[test]
fn systemd_pingora_conf_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/systemd/pingora.yaml");
    let conf = pingora_core::server::configuration::ServerConf::load_from_yaml(path).unwrap();
    assert_eq!(conf.pid_file, "/run/vallum/vallum.pid");
    assert_eq!(conf.upgrade_sock, "/run/vallum/upgrade.sock");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/systemd/vallum.service"
    ))
    .unwrap();
    assert!(
        unit.contains("PIDFile=/run/vallum/vallum.pid"),
        "unit and conf agree on the PID file"
    );
    assert!(
        unit.contains("run -d -u -c"),
        "reload is the graceful upgrade"
    );
    // The packaged unit is the same but for where the binary lives.
    let packaged = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/debian/vallum.service"
    ))
    .unwrap();
    let directives = |u: &str| -> Vec<String> {
        u.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("Documentation="))
            .map(|l| l.replace("/usr/local/bin/", "/usr/bin/"))
            .filter(|l| !l.is_empty())
            .collect()
    };
    assert_eq!(directives(&unit), directives(&packaged));
}

/// Every example in `conf/` is a valid config. TLS examples point at certificate files and
/// leave secrets to the environment; the test supplies both that way, as an operator would.
#[test]
fn shipped_examples_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("example CA");
    let (cert, key) = ca
        .server(&["*.example.com", "example.com"])
        .write(dir.path(), "tls");
    let confs: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/conf"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        // The Debian package's default config too.
        .chain([std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/conf/debian/config.yaml"
        ))])
        .collect();
    assert!(!confs.is_empty(), "conf/ has examples");
    for f in confs {
        let out = Command::new(bin())
            .arg("check-config")
            .arg(&f)
            .env("CERTIFICATE_FILE", &cert)
            .env("CERTIFICATE_KEY_FILE", &key)
            // Secrets come from the environment, as the examples recommend.
            .env(
                "COOKIE_SECRET",
                "V2JBZ0VvN0hQSEt0d2ZYcTJ1cXZkd0xyM2o4bE9Vd1A=",
            )
            .env(
                "SHARED_SECRET",
                "aGVsbG9oZWxsb2hlbGxvaGVsbG9oZWxsb2hlbGxvMTI=",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} failed:\n{}{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("env.yaml");
    std::fs::write(&f, "http_redirect_addr: 127.0.0.1:0\nroutes: []\n").unwrap();
    // TLS by default (a self-signed certificate when none is configured), so an HTTPS
    // redirect listener makes sense...
    let out = Command::new(bin())
        .arg("check-config")
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("self-signed"));
    // ...until INSECURE_SERVER from the environment turns TLS off, and the redirect is refused.
    let out = Command::new(bin())
        .arg("check-config")
        .arg(&f)
        .env("INSECURE_SERVER", "true")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("http_redirect_addr: redirects to HTTPS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bad value from the environment is reported under its key.
    let out = Command::new(bin())
        .arg("check-config")
        .arg(&f)
        .env("INSECURE_SERVER", "true")
        .env("TIMEOUT_READ", "soon")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeout_read: invalid duration"));
}

/// The migration checker on a realistic Pomerium config: global keys, routes, PPL, legacy keys.
#[test]
fn pomerium_migration_report() {
    let f = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pomerium.yaml");
    let out = Command::new(bin())
        .args(["check-config", "--pomerium", f])
        .output()
        .unwrap();
    assert!(!out.status.success(), "unsupported keys make it fail");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        text.lines()
            .find(|l| {
                l.trim_start().starts_with(key) && l.trim_start()[key.len()..].starts_with(' ')
            })
            .unwrap_or_else(|| panic!("no line for {key}:\n{text}"))
            .to_string()
    };
    for key in [
        "authenticate_service_url",
        "idp_provider",
        "cookie_secret",
        "pass_identity_headers",
        "jwt_claims_headers",
        "timeout_idle",
    ] {
        assert!(line(key).ends_with("supported"), "{}", line(key));
    }
    assert!(line("metrics_address").ends_with("supported"));
    assert!(
        line("autocert").ends_with("supported"),
        "{}",
        line("autocert")
    );
    assert!(line("allowed_groups").contains("REMOVED: removed in Pomerium 0.20"));
    assert!(
        line("logo_url").ends_with("supported"),
        "the routes portal shows it"
    );
    assert!(line("regex_priority_order").contains("accepted, no effect"));
    assert!(text.contains("routes[0] (https://grafana.corp.example.com):"));
    let tcp_from = text
        .lines()
        .skip_while(|l| !l.starts_with("routes[3]"))
        .nth(1)
        .unwrap_or("");
    assert!(
        tcp_from.contains("from") && tcp_from.ends_with("supported"),
        "tcp+https routes are tunnels now: {tcp_from}"
    );
    assert!(
        text.contains("supported (2 rule(s))"),
        "the PPL policy parses:\n{text}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 errors") && !err.contains("db.internal"),
        "a tunnel's host name is looked up when a client connects, not refused at load: {err}"
    );
}

/// Pomerium's split-deployment and gRPC keys start unchanged: accepted, with a warning that
/// they do nothing in Vallum's single process.
#[test]
fn split_deployment_keys_are_accepted_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("split.yaml");
    std::fs::write(
        &f,
        "insecure_server: true\ngrpc_address: :5443\ngrpc_insecure: true\n\
         authorize_service_url: https://authorize.internal\ndatabroker_service_urls: [https://db.internal]\n\
         routes: []\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("check-config")
        .arg(&f)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("grpc_address, grpc_insecure") && text.contains("no effect"),
        "{text}"
    );
}

/// A token is base64url and may begin with `-`: `vallum tcp --token -O…` takes it as the value
/// (one programmatic-login token in 32 starts that way; the tunnel tests met one).
#[test]
fn tcp_takes_a_token_that_begins_with_a_dash() {
    use std::io::BufRead;
    let mut child = Command::new(bin())
        .args(["tcp", "db.test:5432", "--listen", "127.0.0.1:0"])
        .args(["--gateway", "http://127.0.0.1:1", "--token", "-Oabc"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.starts_with("listening on 127.0.0.1:"), "{first}");
}

/// Every error names the file, line and column of its key (editors jump there), in file order.
#[test]
fn errors_carry_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vallum.yaml");
    std::fs::write(
        &path,
        "insecure_server: true\n\
         log_level: loud\n\
         routes:\n\
         \x20 - &d\n\
         \x20   from: http://a.test\n\
         \x20   to: http://127.0.0.1:9\n\
         \x20   prefx: /api\n\
         \x20 - <<: *d\n\
         \x20   from: http://b.test\n\
         \x20   timeout: soon\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let f = path.display();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("  - ")).collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in\n{err}"))
    };
    let level = at(&format!("  - {f}:2:1: log_level:"));
    let typo = at(&format!(
        "  - {f}:7:5: routes[0].prefx: unknown key; did you mean prefix?"
    ));
    let value = at(&format!("  - {f}:10:5: routes[1].timeout:"));
    assert!(level < typo && typo < value, "file order:\n{err}");
}

/// Every command's help stands on its own: what it does, and an example.
#[test]
fn every_command_has_help_with_an_example() {
    for cmd in [
        &[][..],
        &["run"],
        &["demo"],
        &["check-config"],
        &["login"],
        &["tcp"],
        &["sessions"],
        &["devices"],
    ] {
        let out = Command::new(bin())
            .args(cmd)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            text.contains("Example"),
            "vallum {cmd:?} --help has no example:\n{text}"
        );
        assert!(text.contains("vallum "), "{text}");
    }
}
