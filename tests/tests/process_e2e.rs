//! The real `portway controller` binary against the test world (`PORTWAY_TEST_CLUSTER`):
//! node initialization, two replicas with leader election and failover, `/metrics` scraped
//! and parsed. `/healthz` when the lease cannot be renewed is in `faults_sim.rs` and
//! `faults_real.rs`.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, PostParams};
use portway_tests::process::{get, spawn};
use portway_tests::{SimNode, TestCluster};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

async fn eventually<F, Fut, R>(what: &str, mut f: F) -> R
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<R>>,
{
    let deadline = Instant::now() + T;
    loop {
        if let Some(r) = f().await {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn lb(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "portway.dev/l2",
            "ports": [{"port": 80}]}
    }))
    .expect("service")
}

async fn has_ip(api: &Api<Service>, name: &str) -> bool {
    api.get(name)
        .await
        .ok()
        .and_then(|s| s.status)
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .is_some_and(|i| !i.is_empty())
}

const CONFIG: &str = "pools:\n- name: lan\n  addresses: [192.168.50.0/26]\nl2:\n  pools: [lan]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tainted_node_is_initialized_and_a_wrong_ip_keeps_the_taint() {
    let sim = TestCluster::start().await.expect("cluster");
    let dir = tempfile::tempdir().expect("tmp");
    let _c = spawn(&sim, dir.path(), "ctrl", CONFIG).await;
    let taint = "node.cloudprovider.kubernetes.io/uninitialized";
    sim.add_node(
        SimNode::new("good")
            .ipv4("10.0.0.5")
            .ipv4("10.0.0.99")
            .ipv6("fd00::5")
            .annotation("alpha.kubernetes.io/provided-node-ip", "10.0.0.5,fd00::5")
            .taint(taint, "NoSchedule"),
    )
    .await
    .expect("node");
    sim.add_node(
        SimNode::new("bad")
            .ipv4("10.0.0.6")
            .annotation("alpha.kubernetes.io/provided-node-ip", "10.9.9.9")
            .taint(taint, "NoSchedule"),
    )
    .await
    .expect("node");
    let nodes: Api<Node> = Api::all(sim.client());
    let good = eventually("node initialized", || async {
        let n = nodes.get("good").await.ok()?;
        let tainted = n
            .spec
            .as_ref()?
            .taints
            .as_ref()
            .is_some_and(|t| t.iter().any(|t| t.key == taint));
        (!tainted).then_some(n)
    })
    .await;
    let spec = good.spec.clone().expect("spec");
    assert_eq!(spec.provider_id.as_deref(), Some("portway://good"));
    let labels = good.metadata.labels.clone().expect("labels");
    assert_eq!(
        labels
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("portway")
    );
    let addrs: Vec<(String, String)> = good
        .status
        .and_then(|s| s.addresses)
        .expect("addresses")
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addrs,
        vec![
            ("InternalIP".into(), "10.0.0.5".into()),
            ("InternalIP".into(), "fd00::5".into()),
            ("Hostname".into(), "good".into()),
        ],
        "provided IPs first, exclusive for their type, dual-stack kept whole"
    );
    // The wrong provided IP keeps the taint and gets a Warning event.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(sim.client());
    eventually("a warning on the bad node", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bad")
                    && e.type_.as_deref() == Some("Warning")
                    && e.note.as_deref().is_some_and(|n| n.contains("10.9.9.9"))
            })
            .map(|_| ())
    })
    .await;
    let bad = nodes.get("bad").await.expect("bad");
    assert!(
        bad.spec
            .and_then(|s| s.taints)
            .is_some_and(|t| t.iter().any(|t| t.key == taint))
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_writes_and_the_standby_takes_over() {
    let sim = TestCluster::start().await.expect("cluster");
    sim.add_node(SimNode::new("n1").ipv4("10.0.0.1"))
        .await
        .expect("node");
    let dir = tempfile::tempdir().expect("tmp");
    let a = spawn(&sim, dir.path(), "ctrl-a", CONFIG).await;
    let b = spawn(&sim, dir.path(), "ctrl-b", CONFIG).await;
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &lb(&format!("s{i}")))
            .await
            .expect("create");
    }
    for i in 0..5 {
        let name = format!("s{i}");
        eventually("addresses", || async {
            has_ip(&api, &name).await.then_some(())
        })
        .await;
    }
    let leases: Api<Lease> = Api::namespaced(sim.client(), "default");
    let holder = leases
        .get("portway-controller")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("holder");
    let (leader, standby) = if holder.starts_with("ctrl-a") {
        (a, b)
    } else {
        (b, a)
    };
    let writers: std::collections::BTreeSet<String> = sim
        .writes()
        .await
        .not_system()
        .into_iter()
        .filter(|w| w.resource == "services" && w.user != "admin")
        .map(|w| w.user)
        .collect();
    assert_eq!(
        writers,
        [leader.user.clone()].into(),
        "only the leader writes Services"
    );
    assert!(
        sim.writes()
            .await
            .by_user(&standby.user)
            .iter()
            .all(|w| w.resource == "leases")
    );

    // Metrics of the leader parse as Prometheus text and count reconciles.
    let (code, text) = get(leader.port, "/metrics").await.expect("metrics");
    assert_eq!(code, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("prometheus text");
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "portway_service_reconciles_total"),
        "{text}"
    );
    assert!(
        scrape.samples.iter().any(|s| s.metric == "portway_leader"),
        "{text}"
    );
    assert_eq!(get(standby.port, "/healthz").await.map(|r| r.0), Some(200));

    // Kill the leader: the standby takes over within the lease duration and converges.
    let killed_at = Instant::now();
    drop(leader);
    api.create(&PostParams::default(), &lb("after"))
        .await
        .expect("create");
    eventually("the standby serves the new Service", || async {
        has_ip(&api, "after").await.then_some(())
    })
    .await;
    let took = killed_at.elapsed();
    assert!(
        sim.writes()
            .await
            .all()
            .iter()
            .any(|w| w.resource == "services" && w.name == "after" && w.user == standby.user),
        "the standby wrote"
    );
    eprintln!("failover: new Service served {took:?} after the leader was killed");
    sim.shutdown().await;
}
