//! Private PostgreSQL servers on free ports for one test, stopped when dropped. The cluster is
//! made once per test run with `initdb` and copied for each server (a copy takes milliseconds,
//! `initdb` seconds). PostgreSQL refuses to run as root, so under root the servers run as the
//! `postgres` system user that Debian's packages create.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where `initdb` and `postgres` are: on the PATH, else Debian's versioned directory.
fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            let real = std::fs::canonicalize(&p).unwrap_or_else(|_| PathBuf::from(&p));
            return real.parent().unwrap().to_path_buf();
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL server binaries (initdb, postgres) not found; install them (Debian: apt-get install postgresql)")
    })
}

/// The user the server runs as: `postgres` when the tests run as root.
fn run_as() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user.
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("tests run as root need the postgres system user to run PostgreSQL (Debian: apt-get install postgresql)");
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().unwrap(), f[3].parse().unwrap()))
}

fn command(bin: &str) -> Command {
    let mut c = Command::new(bin_dir().join(bin));
    if let Some((uid, gid)) = run_as() {
        c.uid(uid).gid(gid);
    }
    c
}

fn chown(path: &Path) {
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// The cluster every server copies, made once.
fn template() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            root.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        chown(&data);
        let out = command("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "-N",
                "--no-instructions",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("cannot run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (root, data)
    })
    .1
}

pub struct PgServer {
    pub port: u16,
    child: Option<Child>,
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

impl PgServer {
    pub async fn start() -> PgServer {
        Self::start_with(super::free_port(), &[], |_| {}).await
    }

    /// On a port chosen beforehand (a gateway configured while the server was still down).
    pub async fn start_on(port: u16) -> PgServer {
        Self::start_with(port, &[], |_| {}).await
    }

    /// A server that accepts only TLS connections with a client certificate from `ca`.
    pub async fn start_tls(ca: &Path, cert: &Path, key: &Path) -> PgServer {
        let files = [
            (ca.to_path_buf(), "ca.pem"),
            (cert.to_path_buf(), "server.pem"),
            (key.to_path_buf(), "server.key"),
        ];
        Self::start_with(
            super::free_port(),
            &[
                "-c",
                "ssl=on",
                "-c",
                "ssl_ca_file=ca.pem",
                "-c",
                "ssl_cert_file=server.pem",
                "-c",
                "ssl_key_file=server.key",
            ],
            move |data| {
                for (from, to) in &files {
                    let dest = data.join(to);
                    std::fs::copy(from, &dest).unwrap();
                    std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                        .unwrap();
                    chown(&dest);
                }
                std::fs::write(
                    data.join("pg_hba.conf"),
                    "local all all trust\nhostnossl all all all reject\nhostssl all all all trust clientcert=verify-ca\n",
                )
                .unwrap();
            },
        )
        .await
    }

    async fn start_with(port: u16, extra: &[&str], prepare: impl FnOnce(&Path)) -> PgServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let data = dir.path().join("data");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(template())
            .arg(&data)
            .status()
            .unwrap();
        assert!(
            copied.success(),
            "cannot copy the PostgreSQL template cluster"
        );
        prepare(&data);
        let mut s = PgServer {
            port,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        s.spawn();
        s.wait_ready().await;
        s
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = command("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&data)
            // No fsync (the OS keeps what a killed server wrote), but every commit is written
            // before it returns, so a crash loses nothing acknowledged.
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start postgres");
        self.child = Some(child);
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let sock = self.dir.path().join("data");
        loop {
            let ok = Command::new(bin_dir().join("pg_isready"))
                .arg("-h")
                .arg(&sock)
                .args(["-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start on port {}: {}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `psql` as the superuser over the server's Unix socket.
    fn psql_command(&self, sql: &str) -> Command {
        let mut c = Command::new(bin_dir().join("psql"));
        c.arg("-h")
            .arg(self.dir.path().join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        c
    }

    /// Runs SQL in the background (a transaction that holds a lock, say).
    pub fn psql_background(&self, sql: &str) -> Child {
        self.psql_command(sql)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run psql")
    }

    /// Runs SQL and returns what it printed, for what tests provoke and check.
    pub fn psql(&self, sql: &str) -> String {
        let out = self.psql_command(sql).output().expect("cannot run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// An immediate shutdown (SIGQUIT): clients are cut off with no goodbye and the next start
    /// runs crash recovery, as after a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}
