//! `portway sim --listen --kubeconfig-out`, the process: the kubeconfig it writes lets an
//! ordinary client in, and the server serves until it is killed.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portway");

#[tokio::test]
async fn the_written_kubeconfig_lets_a_client_in() {
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("sim.kubeconfig");
    let mut child = Command::new(BIN)
        .args(["sim", "--listen", "127.0.0.1:0", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("portway sim");
    let start = Instant::now();
    while !kubeconfig.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("portway sim exited early: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no kubeconfig written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).expect("kubeconfig parses"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("client config");
    let client = kube::Client::try_from(config).expect("client");
    let names: Vec<String> = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .expect("list namespaces")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(
        names.iter().any(|n| n == "default") && names.iter().any(|n| n == "kube-system"),
        "{names:?}"
    );
    assert!(child.try_wait().expect("wait").is_none(), "still serving");
    let _ = child.kill();
    let _ = child.wait();
}
