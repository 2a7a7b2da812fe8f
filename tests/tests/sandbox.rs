//! `portway sandbox`, the product's demo, run as the real binary: every one of the four
//! classes gets an address, the f5 one with its objects on the simulated BIG-IP, and
//! `--exit-after-demo` exits 0 only when all of them settled. Once as users start it (its
//! own embedded sim), once on the test world (`PORTWAY_TEST_CLUSTER`) through
//! `--kubeconfig`, with the sandbox's three nodes registered there.

use portway_tests::{SimNode, TestCluster};
use std::process::Command;

#[test]
fn sandbox_serves_all_four_classes() {
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("sandbox.kubeconfig");
    let out = Command::new(portway_tests::portway_bin())
        .args(["sandbox", "--exit-after-demo", "--demo-timeout", "60s"])
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running portway sandbox");
    check_demo(&out);
    // It holds the admin's credentials: readable by its owner only (issue 20).
    use std::os::unix::fs::MetadataExt as _;
    let mode = std::fs::metadata(&kubeconfig).expect("kubeconfig").mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_demo_on_the_test_world() {
    let cluster = TestCluster::start().await.expect("cluster");
    for (i, name) in ["node-1", "node-2", "node-3"].iter().enumerate() {
        cluster
            .add_node(
                SimNode::new(name)
                    .ipv4(&format!("10.0.0.{}", 11 + i))
                    .ipv6(&format!("fd00::{}", 11 + i)),
            )
            .await
            .expect("node");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("admin.kubeconfig");
    cluster
        .write_kubeconfig(&kubeconfig, "admin")
        .await
        .expect("kubeconfig");
    let out = tokio::process::Command::new(portway_tests::portway_bin())
        .args(["sandbox", "--exit-after-demo", "--demo-timeout", "60s"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("running portway sandbox");
    check_demo(&out);
}

fn check_demo(out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sandbox failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, class, prefix) in [
        ("demo-hostport", "portway.dev/hostport", "10.0.0."),
        ("demo-l2", "portway.dev/l2", "192.168.100."),
        ("demo-bgp", "portway.dev/bgp", "10.200.0."),
        ("demo-f5", "portway.dev/f5", "172.31.0."),
    ] {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[2], class, "{row}");
        assert!(cols[3].starts_with(prefix), "{name}: {row}");
    }
    // The hostport Service is on all three nodes.
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .map(|l| l.split_whitespace().nth(3).unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(row("demo-hostport").split(',').count(), 3, "{stdout}");
    assert!(
        stdout.contains("2 virtual servers, 2 pools with 6 members, 3 nodes"),
        "{stdout}"
    );
}
