//! A private ACME CA for one test: Let's Encrypt's `pebble` on free ports, with
//! `pebble-challtestsrv` as its DNS server (every name resolves to 127.0.0.1), validating
//! challenges against the ports the test names: the gateway's HTTP listener for HTTP-01 and its
//! TLS listener for TLS-ALPN-01. Both processes stop when dropped.

use super::certs::TestCa;
use super::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Pebble {
    pub port: u16,
    mgmt: u16,
    /// The CA that signed pebble's own HTTPS certificate (for `autocert_trusted_ca_file`).
    pub api_ca: PathBuf,
    children: Vec<Child>,
    pub dir: tempfile::TempDir,
}

fn spawn(cmd: &mut Command, what: &str) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {what} ({e}); install it (Debian: apt-get install pebble)")
        })
}

impl Pebble {
    /// `http_port`/`tls_port`: where pebble's validator connects for HTTP-01 and TLS-ALPN-01.
    pub async fn start(http_port: u16, tls_port: u16) -> Pebble {
        Pebble::start_with(http_port, tls_port, serde_json::json!({})).await
    }

    /// `extra`: more keys of pebble's config (`certificateValidityPeriod` in seconds,
    /// `externalAccountBindingRequired` with `externalAccountMACKeys`).
    pub async fn start_with(http_port: u16, tls_port: u16, extra: serde_json::Value) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("pebble API test CA");
        let api_ca = ca.write(dir.path(), "api-ca");
        let (cert, key) = ca
            .server(&["localhost", "127.0.0.1"])
            .write(dir.path(), "api");
        let (port, mgmt, dns, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
        let mut config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        if let (Some(c), Some(extra)) = (config["pebble"].as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let challtest = spawn(
            Command::new("pebble-challtestsrv").args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{dns_mgmt}"),
            ]),
            "pebble-challtestsrv",
        );
        let pebble = spawn(
            Command::new("pebble")
                .arg("-config")
                .arg(&config_path)
                .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                // No random sleeps before validation, no nonces refused at random, no
                // authorizations reused between orders: each order proves its challenge.
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0"),
            "pebble",
        );
        let p = Pebble {
            port,
            mgmt,
            api_ca,
            children: vec![challtest, pebble],
            dir,
        };
        p.wait_ready(dns_mgmt).await;
        p
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.api_ca).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap()
    }

    /// Until pebble serves its directory and its DNS server (challtestsrv, which answers on its
    /// management port once its DNS is up) accepts: an order placed earlier fails its lookup.
    async fn wait_ready(&self, dns_mgmt: u16) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.client().get(self.directory()).send().await.is_err()
            || tokio::net::TcpStream::connect(("127.0.0.1", dns_mgmt))
                .await
                .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "pebble did not start on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The root pebble issues under (PEM): trusting it, a client accepts what pebble issued.
    pub async fn issuing_root(&self) -> String {
        let url = format!("https://127.0.0.1:{}/roots/0", self.mgmt);
        self.client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The autocert keys pointing at this CA, keeping material under `dir`.
    pub fn autocert_keys(&self, dir: &std::path::Path) -> String {
        format!(
            "autocert: true\nautocert_ca: {}\nautocert_trusted_ca_file: {}\nautocert_dir: {}\nautocert_email: ops@example.com\n",
            self.directory(),
            self.api_ca.display(),
            dir.display()
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
