//! At trace level nothing secret leaves Portway (issue 20, defects 1 and 6): `portway
//! controller` serving an f5 Service through a (simulated) BIG-IP and `portway speaker`
//! dialling a BGP peer with a TCP MD5 password, both at `RUST_LOG=trace`, write logs, Events
//! and metrics that hold neither password, nor the BIG-IP session token, nor their base64
//! forms (a Secret's `data`, a Basic authorization header).
//!
//! The token is what the device handed out: the token-extension call puts it in its URL
//! (`PATCH /mgmt/shared/authz/tokens/<token>`), and the test reads it from the device's
//! request log. Runs on both worlds.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Namespace, Secret, Service};
use kube::api::{Api, ListParams, PostParams};
use portway_sim::bigip::BigIpSim;
use portway_tests::process::{free_port, get};
use portway_tests::{BGP, F5, SimNode, TestCluster, eventually, ingress_ip, svc};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const NS: &str = "portway-system";
const F5_PASSWORD: &str = "f5-Pa55word-4e1b9c";
const BGP_PASSWORD: &str = "bgp-md5-Pa55-71c3d0";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `portway ARGS` at trace level, its stderr (the logs) to `log`.
fn spawn(args: &[&str], log: &Path) -> Proc {
    let file = std::fs::File::create(log).expect("log file");
    let child = Command::new(portway_tests::portway_bin())
        .args(args)
        .env("RUST_LOG", "trace")
        .env("POD_NAMESPACE", NS)
        .env("POD_NAME", "portway-trace")
        .env_remove("PORTWAY_LOG_JSON")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("portway starts");
    Proc(child)
}

/// How `s` looks base64-encoded (a Secret's `data`, a Basic authorization header).
fn base64(s: &str) -> String {
    let quoted = serde_json::to_string(&ByteString(s.as_bytes().to_vec())).expect("json");
    quoted.trim_matches('"').to_string()
}

async fn secret(c: &TestCluster, name: &str, data: serde_json::Value) {
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
        .expect("secret");
    Api::<Secret>::namespaced(c.client(), NS)
        .create(&PostParams::default(), &s)
        .await
        .expect("secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_trace_level_no_password_or_token_reaches_logs_events_or_metrics() {
    let c = TestCluster::start().await.expect("cluster");
    c.add_node(SimNode::new("n1").ipv4("10.0.0.1"))
        .await
        .expect("node");
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).expect("ns");
    Api::<Namespace>::all(c.client())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    secret(
        &c,
        "bigip",
        json!({"username": "admin", "password": F5_PASSWORD}),
    )
    .await;
    secret(&c, "bgp-auth", json!({"password": BGP_PASSWORD})).await;
    let device = BigIpSim::start().await.expect("BIG-IP");
    device.set_credentials("admin", F5_PASSWORD);
    // A closed port: every dial is refused at once, so the speaker sets the MD5 key on a
    // socket, connects and retries (the paths that handle the password) again and again.
    let peer_port = free_port();

    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("admin.kubeconfig");
    c.write_kubeconfig(&kubeconfig, "admin")
        .await
        .expect("kubeconfig");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "pools:\n\
             - {{name: dc, addresses: [198.51.100.0/28]}}\n\
             - {{name: f5-vips, addresses: [203.0.113.10-203.0.113.20]}}\n\
             bgp:\n  localASN: 64512\n  peers:\n\
             \x20   - address: 127.0.0.1\n      asn: 64500\n      port: {peer_port}\n\
             \x20     passwordSecret: {{namespace: {NS}, name: bgp-auth, key: password}}\n\
             \x20 advertisements:\n    - pools: [dc]\n\
             f5:\n  url: {url}\n  credentialsSecret: {{namespace: {NS}, name: bigip}}\n\
             \x20 pools: [f5-vips]\n",
            url = device.url()
        ),
    )
    .expect("config");
    let kc = kubeconfig.to_str().expect("UTF-8");
    let cfg = config.to_str().expect("UTF-8");
    let controller_port = free_port();
    let speaker_port = free_port();
    let controller_log = dir.path().join("controller.log");
    let speaker_log = dir.path().join("speaker.log");
    let controller = spawn(
        &[
            "controller",
            "--kubeconfig",
            kc,
            "--config",
            cfg,
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port",
            &controller_port.to_string(),
        ],
        &controller_log,
    );
    let speaker = spawn(
        &[
            "speaker",
            "--node-name",
            "n1",
            "--kubeconfig",
            kc,
            "--config",
            cfg,
            "--metrics-bind-address",
            &format!("127.0.0.1:{speaker_port}"),
        ],
        &speaker_log,
    );

    let svcs: Api<Service> = Api::namespaced(c.client(), "default");
    for s in [
        svc("web-f5").class(F5).build(),
        svc("web-bgp").class(BGP).build(),
    ] {
        svcs.create(&PostParams::default(), &s)
            .await
            .expect("service");
    }
    for name in ["web-f5", "web-bgp"] {
        eventually(&format!("{name} served"), T, || async {
            ingress_ip(&svcs.get(name).await.ok()?)
        })
        .await;
    }
    // The session token, from the device's log of the token-extension call.
    let token = eventually("the token-extension call", T, || async {
        device.requests().iter().find_map(|r| {
            r.path
                .strip_prefix("/mgmt/shared/authz/tokens/")
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        })
    })
    .await;
    // The speaker has read the password and dialled the peer with it.
    let speaker_metrics = eventually("the speaker's BGP metrics", T, || async {
        let (code, body) = get(speaker_port, "/metrics").await?;
        (code == 200 && body.contains("portway_bgp")).then_some(body)
    })
    .await;
    eventually("the speaker dialled its peer", T, || async {
        let log = std::fs::read_to_string(&speaker_log).ok()?;
        log.contains(&format!("127.0.0.1:{peer_port}"))
            .then_some(())
    })
    .await;
    let (_, controller_metrics) = get(controller_port, "/metrics")
        .await
        .expect("controller /metrics");
    // A few more seconds of trace output (resyncs, redials), then stop both.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(controller);
    drop(speaker);

    let events = Api::<Event>::all(c.client())
        .list(&ListParams::default())
        .await
        .expect("events");
    let services = svcs.list(&ListParams::default()).await.expect("services");
    let outputs = [
        (
            "controller log",
            std::fs::read_to_string(&controller_log).expect("log"),
        ),
        (
            "speaker log",
            std::fs::read_to_string(&speaker_log).expect("log"),
        ),
        ("controller metrics", controller_metrics),
        ("speaker metrics", speaker_metrics),
        (
            "events",
            serde_json::to_string(&events.items).expect("json"),
        ),
        (
            "services",
            serde_json::to_string(&services.items).expect("json"),
        ),
    ];
    // Trace output there is, from the BIG-IP client and the BGP dialler alike.
    let tail = |log: &str| log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
    let (_, clog) = &outputs[0];
    let (_, slog) = &outputs[1];
    assert!(
        clog.contains(" TRACE ") && clog.contains("web-f5"),
        "the controller logged at trace level; its last lines:\n{}",
        tail(clog)
    );
    assert!(
        slog.contains(" TRACE ") && slog.contains("BGP speaker started"),
        "the speaker logged at trace level; its last lines:\n{}",
        tail(slog)
    );
    assert!(!events.items.is_empty(), "events were recorded");
    let needles = [
        ("the BIG-IP password", F5_PASSWORD.to_string()),
        ("the BIG-IP password (base64)", base64(F5_PASSWORD)),
        (
            "the BIG-IP Basic authorization",
            base64(&format!("admin:{F5_PASSWORD}")),
        ),
        ("the BGP password", BGP_PASSWORD.to_string()),
        ("the BGP password (base64)", base64(BGP_PASSWORD)),
        ("the BIG-IP token", token.clone()),
    ];
    for (what, text) in &outputs {
        for (secret, needle) in &needles {
            let line = text.lines().find(|l| l.contains(needle.as_str()));
            assert!(
                line.is_none(),
                "{secret} ({needle}) in the {what}: {}",
                line.unwrap_or_default()
            );
        }
    }
    device.shutdown();
}
