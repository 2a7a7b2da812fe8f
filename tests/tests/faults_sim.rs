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
