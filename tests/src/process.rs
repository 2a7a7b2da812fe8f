//! `portway controller` as a process against a test world: spawned with a kubeconfig for
//! its own user, fast leader-election timings, its health and metrics port on loopback, and
//! killed when dropped.

use crate::TestCluster;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running controller process.
pub struct Controller {
    /// The process.
    pub child: Child,
    /// Its `/healthz` and `/metrics` port.
    pub port: u16,
    /// The user its kubeconfig authenticates as.
    pub user: String,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Lease 3 s / renew deadline 2 s / retry 500 ms: a fast failover to measure.
pub const FAST_LEASE: [&str; 3] = ["3s", "2s", "500ms"];

/// Starts `portway controller` as `user` with [`FAST_LEASE`] and `config`.
pub async fn spawn(sim: &TestCluster, dir: &Path, user: &str, config: &str) -> Controller {
    spawn_with_lease(sim, dir, user, config, FAST_LEASE).await
}

/// Starts `portway controller` as `user`; `lease` is the lease duration, renew deadline
/// and retry period.
pub async fn spawn_with_lease(
    sim: &TestCluster,
    dir: &Path,
    user: &str,
    config: &str,
    lease: [&str; 3],
) -> Controller {
    let kubeconfig = dir.join(format!("{user}.kubeconfig"));
    sim.write_kubeconfig(&kubeconfig, user)
        .await
        .expect("kubeconfig");
    // One file per controller, written atomically: two controllers started back to back
    // shared one `config.yaml`, and the second write truncated it while the first process
    // read it. That one ran with an empty configuration (hostport only), won the Lease,
    // and left every l2, bgp and f5 Service unserved (a real-world chaos run in CI).
    let cfg = dir.join(format!("{user}.config.yaml"));
    portway_sim::write_private_file(&cfg, config.as_bytes()).expect("config");
    let port = free_port();
    let child = Command::new(crate::portway_bin())
        .args(["controller", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--config")
        .arg(&cfg)
        .args([
            "--leader-elect-lease-duration",
            lease[0],
            "--leader-elect-renew-deadline",
            lease[1],
            "--leader-elect-retry-period",
            lease[2],
            "--leader-elect-resource-namespace",
            "default",
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &port.to_string(),
        ])
        .env("POD_NAME", user)
        .env(
            "RUST_LOG",
            std::env::var("PORTWAY_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("controller starts");
    Controller {
        child,
        port,
        user: user.to_string(),
    }
}

/// A plain HTTP/1.0 GET (the endpoints are plain HTTP; no client library needed).
pub async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}
