//! A private MariaDB server for tests: its own data directory and loopback
//! port, created with mariadb-install-db, stopped (and its files removed)
//! on drop. `stop` and `start` let a test simulate an outage.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::skip;

pub struct MariaDb {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const SCHEMA: &str = include_str!("../../../include/rsec-mysql.sql");

impl MariaDb {
    /// A fresh server with database `rsec` (schema loaded when `schema`)
    /// and user rsec/rsecpw; None (after [`skip`]) without MariaDB.
    pub fn start_new(test: &str, schema: bool) -> Option<MariaDb> {
        let (Some(install), Some(_)) = (which("mariadb-install-db"), which("mariadbd")) else {
            skip(test, "no MariaDB server found (install mariadb-server)");
            return None;
        };
        let dir = std::env::temp_dir().join(format!(
            "rsec-mariadb-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        // A private tmpdir: a server starting up deletes every `#sql*` file
        // in its tmpdir, so a shared /tmp lets a parallel test's server pull
        // the bootstrap's temporary tables from under mariadb-install-db.
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let out = Command::new(install)
            .args([
                "--no-defaults",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = MariaDb {
            dir,
            port: free_port(),
            child: None,
        };
        db.start();
        db.root_sql("CREATE DATABASE rsec; CREATE USER 'rsec'@'%' IDENTIFIED BY 'rsecpw'; GRANT ALL ON rsec.* TO 'rsec'@'%';");
        if schema {
            db.sql(SCHEMA);
        }
        Some(db)
    }

    /// Starts (or restarts) the server and waits until it answers. A port
    /// picked as free can be taken by a parallel test's server before ours
    /// binds it; then our server exits and we retry on a new port (only on
    /// the first start: a restart must keep its port for the clients).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let first = !self.dir.join("started").exists();
        for _attempt in 0..5 {
            let mut child = Command::new(which("mariadbd").unwrap())
                .args([
                    "--no-defaults",
                    "--user=root",
                    "--bind-address=127.0.0.1",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=16M",
                ])
                .arg(format!("--datadir={}", self.dir.join("data").display()))
                .arg(format!("--tmpdir={}", self.dir.join("tmp").display()))
                .arg(format!("--port={}", self.port))
                .arg(format!("--socket={}", self.socket().display()))
                .arg(format!("--pid-file={}", self.dir.join("pid").display()))
                .arg(format!(
                    "--log-error={}",
                    self.dir.join("error.log").display()
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start mariadbd");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // ours died: port taken, or worse (see error.log)
                }
                // Ask through our own socket, so another server on the port cannot answer.
                if self.socket_client_ok() {
                    std::fs::write(self.dir.join("started"), b"").unwrap();
                    self.child = Some(child);
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "MariaDB did not start: {}",
                    self.error_log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(
                first,
                "MariaDB did not restart on port {}: {}",
                self.port,
                self.error_log()
            );
            self.port = free_port();
        }
        panic!(
            "MariaDB could not start after 5 ports: {}",
            self.error_log()
        );
    }

    fn socket_client_ok(&self) -> bool {
        Command::new(
            which("mariadb")
                .or_else(|| which("mysql"))
                .expect("mariadb client"),
        )
        .args(["--no-defaults", "-uroot", "-e", "SELECT 1"])
        .arg(format!("--socket={}", self.socket().display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    }

    /// Stops the server (SIGKILL: an abrupt outage) and waits for it to go.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    pub fn url(&self) -> String {
        format!("mysql://rsec:rsecpw@127.0.0.1:{}/rsec", self.port)
    }

    fn client(&self, auth: &[&str], sql: &str) -> (bool, String) {
        let out = Command::new(
            which("mariadb")
                .or_else(|| which("mysql"))
                .expect("mariadb client"),
        )
        .arg("--no-defaults")
        .args(auth)
        .args(["-h127.0.0.1", "--batch", "--skip-column-names"])
        .arg(format!("-P{}", self.port))
        .args(["-e", sql])
        .output()
        .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    pub fn root_sql(&self, sql: &str) -> String {
        let (ok, out) = self.client(&["-uroot"], sql);
        assert!(ok, "SQL failed: {sql}\n{out}");
        out
    }

    /// Runs SQL in database rsec as user rsec; the tab-separated output.
    pub fn sql(&self, sql: &str) -> String {
        let (ok, out) = self.client(&["-ursec", "-prsecpw", "-Drsec"], sql);
        assert!(ok, "SQL failed: {sql}\n{out}");
        out
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
