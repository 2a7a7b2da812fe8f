//! `portway speaker` against the simulated API server: it picks up an l2 Service's address,
//! wins the election on its node and writes `portway.dev/announced-by` with an event.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use portway::config::Config;
use portway_sim::{SimCluster, SimNode};
use portway_tests::{L2, eventually, svc};
use std::time::Duration;

/// A veth pair with an address, removed on drop: the speaker needs a broadcast-capable
/// interface in the VIP's subnet to be eligible.
struct Veth(String);

impl Veth {
    fn create(name: &str, cidr: &str) -> Result<Veth, String> {
        let run = |args: &[&str]| -> Result<(), String> {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let peer = format!("{name}p");
        let _ = run(&["link", "del", name]);
        run(&["link", "add", name, "type", "veth", "peer", "name", &peer])?;
        let v = Veth(name.to_string());
        run(&["addr", "add", cidr, "dev", name])?;
        run(&["link", "set", name, "up"])?;
        run(&["link", "set", &peer, "up"])?;
        Ok(v)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_announces_and_says_so_on_the_service() {
    let name = format!("pwt{}", std::process::id() % 100_000);
    let _veth = match Veth::create(&name, "10.199.77.1/24") {
        Ok(v) => v,
        Err(e) => {
            if portway_tests::privileged("speaker e2e (needs root for a veth pair)", Some(e))
                .is_err()
            {
                return;
            }
            unreachable!("privileged() panics when required");
        }
    };
    let sim = SimCluster::start().await.expect("sim");
    sim.add_node(SimNode::new("n1").ipv4("127.0.0.1"))
        .await
        .expect("node");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let config = Config::from_yaml(&format!(
        "pools:\n- name: lan\n  addresses: [10.199.77.64/28]\nl2:\n  pools: [lan]\n  gossipPort: {port}\n"
    ))
    .expect("config");
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    api.create(&PostParams::default(), &svc("web").class(L2).build())
        .await
        .expect("create");
    // The controller's part, done by hand: publish the allocated address.
    let status =
        serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.199.77.70"}]}}});
    api.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    // A Service with no ready endpoint is not announced (nobody could serve it).
    sim.set_endpoints("default", "web", &["n1"])
        .await
        .expect("endpoints");

    portway_tests::init_tracing();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let client = sim.client_as("system:serviceaccount:portway-system:portway-speaker");
    let speaker = tokio::spawn(portway::speaker::run_with(
        client,
        config,
        "n1".into(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let by = eventually(
        "the announced-by annotation",
        Duration::from_secs(20),
        || async {
            api.get("web")
                .await
                .ok()?
                .metadata
                .annotations?
                .get("portway.dev/announced-by")
                .cloned()
        },
    )
    .await;
    assert_eq!(by, "n1");
    let events: Api<Event> = Api::namespaced(sim.client(), "default");
    let list = events.list(&ListParams::default()).await.expect("events");
    assert!(
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("AnnouncingFromNode")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("10.199.77.70"))),
        "no AnnouncingFromNode event"
    );
    let _ = stop_tx.send(());
    speaker.await.expect("join").expect("speaker ran cleanly");
    sim.shutdown().await;
}
