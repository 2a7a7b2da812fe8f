//! The `portway` binary's logs off a terminal, as a kubelet or `journalctl` collects them:
//! stderr is a pipe, so text logs carry no ANSI colour codes (ccm/src/cli.rs
//! `init_logging`), and `--log-json` still gives one JSON object per line.

use portway_tests::TestCluster;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `portway controller` against a test world with stderr through a pipe until it logs
/// that it serves its health port, and returns the lines it logged.
async fn controller_log(extra: &[&str]) -> Vec<String> {
    let c = TestCluster::start().await.expect("cluster");
    let dir = tempfile::tempdir().expect("tmp");
    let kc = dir.path().join("admin.kubeconfig");
    c.write_kubeconfig(&kc, "admin").await.expect("kubeconfig");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "defaultClass: portway.dev/hostport\n").expect("config");
    let port = portway_tests::process::free_port().to_string();
    let mut child = Command::new(portway_tests::portway_bin())
        .args(extra)
        .args(["controller", "--kubeconfig"])
        .arg(&kc)
        .arg("--config")
        .arg(&cfg)
        .args([
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port",
            &port,
        ])
        // Colours are never asked for: whatever the environment says, a pipe is not a tty.
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("PORTWAY_LOG_JSON")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("portway controller");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !lines
        .iter()
        .any(|l: &String| l.contains("serving /healthz"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "no `serving /healthz` line within 60 s; logged:\n{}",
                    lines.join("\n")
                );
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    c.shutdown().await;
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_through_a_pipe_carry_no_colour_codes() {
    let lines = controller_log(&[]).await;
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        assert!(
            !line.contains('\u{1b}'),
            "an ANSI escape in a log line written to a pipe: {line:?}"
        );
    }
    // Still the text format, with its level.
    assert!(
        lines.iter().any(|l| l.contains(" INFO ")),
        "no plain ` INFO ` in {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let lines = controller_log(&["--log-json"]).await;
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{v}");
    }
}
