//! Faults only the sim can inject, on purpose and at the exact moment: dropped watches,
//! forced `410 Gone` on resumption, failed writes of one resource. The real server's own
//! faults (kube-apiserver restarts, etcd compaction, revoked permissions) are in
//! `faults_real.rs`. Always runs on the sim, whatever `PORTWAY_TEST_CLUSTER` says.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use portway_provider::LoadBalancerProvider;
use portway_provider::mock::MockProvider;
use portway_sim::{SimCluster, SimNode};
use portway_tests::process::{get, spawn_with_lease};
use portway_tests::{HOSTPORT, L2, TestCluster, eventually, svc};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn ingress_ip(s: &Service) -> Option<String> {
    s.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .clone()
}

#[tokio::test]
async fn dropped_watches_and_410_lose_no_service() {
    let sim = SimCluster::start().await.expect("sim");
    sim.add_node(SimNode::new("n0").ipv4("10.0.0.1"))
        .await
        .expect("node");
    let providers: Vec<Arc<dyn LoadBalancerProvider>> = vec![
        Arc::new(MockProvider::new(HOSTPORT)),
        Arc::new(MockProvider::new(L2)),
    ];
    let _c = portway_tests::start_service_controller(sim.client(), providers, HOSTPORT);
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    let wait_ip = |name: String| {
        let api = api.clone();
        async move {
            eventually(&format!("{name} to get an address"), T, || async {
                api.get_opt(&name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| ingress_ip(&s))
            })
            .await
        }
    };
    api.create(&PostParams::default(), &svc("before").class(L2).build())
        .await
        .expect("create");
    wait_ip("before".into()).await;
    for i in 0..20 {
        if i % 5 == 0 {
            // Every watch resumes; the first two resumptions get 410 and must relist.
            sim.faults().expire_next_watches(2);
            sim.faults().drop_watches();
        }
        api.create(
            &PostParams::default(),
            &svc(&format!("s{i}")).class(L2).build(),
        )
        .await
        .expect("create");
    }
    for i in 0..20 {
        wait_ip(format!("s{i}")).await;
    }
    assert_eq!(
        sim.faults().expired_watches_pending(),
        0,
        "the watches resumed and met the 410s"
    );
    // A Service created after the last 410 is still seen: the relisted watch is live.
    api.create(&PostParams::default(), &svc("after").class(L2).build())
        .await
        .expect("create");
    wait_ip("after".into()).await;
}

const CONFIG: &str = "pools:\n- name: lan\n  addresses: [192.168.50.0/26]\nl2:\n  pools: [lan]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_when_the_lease_cannot_be_renewed() {
    let cluster = TestCluster::builder()
        .sim_only()
        .start()
        .await
        .expect("sim");
    let sim = cluster.sim().expect("a sim");
    let dir = tempfile::tempdir().expect("tmp");
    // /healthz reports 500 from the renew deadline until the last retry gives
    // up, one retry period later: 1.5 s here, wide enough to see on a loaded
    // machine polling every 50 ms.
    let mut c =
        spawn_with_lease(&cluster, dir.path(), "ctrl", CONFIG, ["6s", "3s", "1500ms"]).await;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), "default");
    eventually("leadership", T, || async {
        leases.get_opt("portway-controller").await.ok().flatten()
    })
    .await;
    assert_eq!(get(c.port, "/healthz").await.map(|r| r.0), Some(200));
    sim.faults().fail_resource_writes("leases", 500);
    // Unhealthy: /healthz answers 500, then the process exits non-zero (lost lease).
    let mut saw_500 = false;
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some((500, _)) = get(c.port, "/healthz").await {
            saw_500 = true;
        }
        if let Ok(Some(status)) = c.child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the controller kept running without its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "a lost lease must exit non-zero");
    assert!(saw_500, "/healthz never reported the overdue renewal");
}

/// Issue 16 #8: a finalizer write that fails is said on the Service
/// (`SyncLoadBalancerFailed`) and retried, not sent silently to backoff.
#[tokio::test]
async fn a_failed_finalizer_write_is_reported_and_retried() {
    let sim = SimCluster::start().await.expect("sim");
    sim.add_node(SimNode::new("n0").ipv4("10.0.0.1"))
        .await
        .expect("node");
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    api.create(&PostParams::default(), &svc("web").class(L2).build())
        .await
        .expect("create");
    sim.faults().fail_resource_writes("services", 409);
    let providers: Vec<Arc<dyn LoadBalancerProvider>> = vec![Arc::new(MockProvider::new(L2))];
    let _c = portway_tests::start_service_controller(sim.client(), providers, HOSTPORT);
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(sim.client(), "default");
    eventually("a warning about the finalizer", T, || async {
        events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("SyncLoadBalancerFailed")
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("cleanup finalizer"))
            })
    })
    .await;
    sim.faults().clear();
    eventually("served once writes pass", T, || async {
        api.get_opt("web")
            .await
            .ok()
            .flatten()
            .and_then(|s| ingress_ip(&s))
    })
    .await;
}

/// A DaemonSet update that meets a 409 (the DaemonSet controller wrote the status between
/// the read and the write, as a real one does) is retried on a fresh read at once, with
/// no Warning: found on the real control plane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_svclb_update_conflict_is_retried_on_a_fresh_read() {
    let sim = SimCluster::start().await.expect("sim");
    for i in 1..=2 {
        sim.add_node(SimNode::new(&format!("node-{i}")).ipv4(&format!("10.0.0.{i}")))
            .await
            .expect("node");
    }
    let config = portway::config::Config::from_yaml("{}").expect("config");
    let built = portway::providers::build(&config, &sim.client())
        .await
        .expect("providers");
    let _c =
        portway_tests::start_built(sim.client(), built, HOSTPORT, portway_tests::fast_config());
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    api.create(&PostParams::default(), &svc("web").build())
        .await
        .expect("create");
    eventually("served on two nodes", T, || async {
        let s = api.get_opt("web").await.ok().flatten()?;
        let n = s.status?.load_balancer?.ingress?.len();
        (n == 2).then_some(())
    })
    .await;
    // The next write (the DaemonSet's new node selector) is refused once with a conflict.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(sim.client());
    let label = serde_json::json!({"metadata": {"labels": {"svccontroller.k3s.cattle.io/enablelb": "true"}}});
    nodes
        .patch(
            "node-1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&label),
        )
        .await
        .expect("label");
    sim.faults().fail_next_writes(1, 409);
    eventually("served on the labelled node only", T, || async {
        let s = api.get_opt("web").await.ok().flatten()?;
        let ips = s.status?.load_balancer?.ingress?;
        (ips.len() == 1).then_some(())
    })
    .await;
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(sim.client(), "default");
    let warnings: Vec<String> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        // The rollout to the new selector may leave no ready pod for a moment
        // (UnAvailableLoadBalancer); what must not happen is a failed sync.
        .filter(|e| e.reason.as_deref() == Some("SyncLoadBalancerFailed"))
        .filter_map(|e| e.message)
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}
