//! Faults only the sim can inject, on purpose and at the exact moment: dropped watches,
//! forced `410 Gone` on resumption, failed writes of one resource. The real server's own
//! faults (kube-apiserver restarts, etcd compaction, revoked permissions) are in
//! `faults_real.rs`. Always runs on the sim, whatever `PORTWAY_TEST_CLUSTER` says.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use portway_provider::LoadBalancerProvider;
use portway_provider::mock::MockProvider;
use portway_sim::{SimCluster, SimNode};
use portway_tests::process::{Controller, get, spawn, spawn_with_lease};
use portway_tests::{BGP, HOSTPORT, L2, TestCluster, eventually, svc};
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

/// Two address classes on one shared allocator, as most clusters configure them.
const TWO_CLASSES: &str = "pools:
- name: lan
  addresses: [192.168.50.0/26]
- name: dc
  addresses: [198.51.100.0/26]
l2:
  pools: [lan]
bgp:
  localASN: 64512
  peers: [{address: 10.0.0.254, asn: 64500}]
  advertisements: [{pools: [dc]}]
";

/// A sim with one node and a controller process serving [`TWO_CLASSES`].
async fn two_class_world(dir: &std::path::Path) -> (TestCluster, Controller) {
    let cluster = TestCluster::builder()
        .sim_only()
        .start()
        .await
        .expect("sim");
    cluster
        .add_node(SimNode::new("n0").ipv4("10.0.0.1"))
        .await
        .expect("node");
    let c = spawn(&cluster, dir, "ctrl", TWO_CLASSES).await;
    (cluster, c)
}

async fn ip_of(api: &Api<Service>, name: &str) -> Option<String> {
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|s| ingress_ip(&s))
}

async fn wait_ip_in(api: &Api<Service>, name: &str, prefix: &str) -> String {
    eventually(
        &format!("{name} to get an address in {prefix}*"),
        T,
        || async { ip_of(api, name).await.filter(|ip| ip.starts_with(prefix)) },
    )
    .await
}

/// Waits until the controller has released what `class` held for some Service (its
/// `ensure_deleted` answered).
async fn wait_released(c: &Controller, class: &str) {
    let line = format!(
        "portway_provider_calls_total{{class=\"{class}\",op=\"ensure_deleted\",result=\"ok\"}}"
    );
    eventually(&format!("{class} to release"), T, || async {
        get(c.port, "/metrics")
            .await
            .filter(|(_, text)| text.contains(&line))
            .map(|_| ())
    })
    .await;
}

/// Restarts the controller with the faults cleared, and checks that `keeper` keeps `ip`
/// while `mover` is served again in `prefix`.
async fn restart_and_check(
    cluster: &TestCluster,
    dir: &std::path::Path,
    c: Controller,
    keeper: (&str, &str),
    mover: (&str, &str),
) {
    drop(c);
    cluster.sim().expect("a sim").faults().clear();
    let _c = spawn(cluster, dir, "ctrl", TWO_CLASSES).await;
    let api: Api<Service> = Api::namespaced(cluster.client(), "default");
    let (name, ip) = keeper;
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        let now = ip_of(&api, name).await;
        assert_eq!(
            now.as_deref(),
            Some(ip),
            "{name} lost {ip} to a Service that had released it"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !mover.0.is_empty() {
        wait_ip_in(&api, mover.0, mover.1).await;
    }
}

/// Serves bgp Service `x`, then fails every write to its status and changes it to
/// ClusterIP (`loadBalancerClass` is immutable on a LoadBalancer: any class change is a
/// trip through ClusterIP). Returns the address x was served at.
async fn bgp_x_to_cluster_ip_with_its_status_failing(
    cluster: &TestCluster,
    api: &Api<Service>,
) -> String {
    api.create(&PostParams::default(), &svc("x").class(BGP).build())
        .await
        .expect("create");
    let first = wait_ip_in(api, "x", "198.51.100.").await;
    cluster
        .sim()
        .expect("a sim")
        .faults()
        .fail_object_writes("services", "status", "x", 500);
    let to_cluster_ip = serde_json::json!({"spec": {"type": "ClusterIP",
        "loadBalancerClass": null,
        "ports": [{"name": "tcp-80", "port": 80, "protocol": "TCP", "nodePort": null}]}});
    api.patch("x", &PatchParams::default(), &Patch::Merge(&to_cluster_ip))
        .await
        .expect("to ClusterIP");
    first
}

/// Once the controller has tried (and failed) to write x's status, serves bgp Service `y`
/// and checks that it did not get x's address `first`: x holds it until its status is
/// cleared. Returns y's address.
async fn serve_y_while_x_cannot_publish(api: &Api<Service>, first: &str) -> String {
    tokio::time::sleep(Duration::from_secs(1)).await;
    api.create(&PostParams::default(), &svc("y").class(BGP).build())
        .await
        .expect("create");
    let y = wait_ip_in(api, "y", "198.51.100.").await;
    assert_ne!(y, first, "x's address is held until its status is cleared");
    y
}

/// Found by the chaos run on the sim: a Service moved from bgp to l2 released its bgp
/// address, but its status could not be written yet; another Service got the address. The
/// new class had been recorded as the serving class, so a restart adopted the old class's
/// address from the stale status as the new class's, won it as the older Service, and
/// moved the other Service's VIP. The old class's addresses now leave the status before
/// they are released and before the new class is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_change_that_cannot_publish_yet_claims_nothing_at_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let (cluster, c) = two_class_world(dir.path()).await;
    let api: Api<Service> = Api::namespaced(cluster.client(), "default");
    let first = bgp_x_to_cluster_ip_with_its_status_failing(&cluster, &api).await;
    let to_l2 = serde_json::json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": L2}});
    api.patch("x", &PatchParams::default(), &Patch::Merge(&to_l2))
        .await
        .expect("class change");
    let y = serve_y_while_x_cannot_publish(&api, &first).await;
    restart_and_check(&cluster, dir.path(), c, ("y", &y), ("x", "192.168.50.")).await;
}

/// The same for a Service being deleted: the controller releases its address and drops its
/// finalizer, but another finalizer holds the object, status and all, until its owner lets
/// go. A restart meanwhile must not give the address back to it as the older Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_held_in_deletion_does_not_win_its_address_back_at_a_restart() {
    const HOLD: &str = "example.com/hold";
    let dir = tempfile::tempdir().expect("tmp");
    let (cluster, c) = two_class_world(dir.path()).await;
    let api: Api<Service> = Api::namespaced(cluster.client(), "default");
    let mut x = svc("x").class(BGP).build();
    x.metadata.finalizers = Some(vec![HOLD.to_string()]);
    api.create(&PostParams::default(), &x)
        .await
        .expect("create");
    let first = wait_ip_in(&api, "x", "198.51.100.").await;
    api.delete("x", &DeleteParams::default())
        .await
        .expect("delete");
    wait_released(&c, BGP).await;
    api.create(&PostParams::default(), &svc("y").class(BGP).build())
        .await
        .expect("create");
    let y = wait_ip_in(&api, "y", "198.51.100.").await;
    assert_eq!(y, first, "the lowest free address, the one x released");
    restart_and_check(&cluster, dir.path(), c, ("y", &y), ("", "")).await;
    let release = serde_json::json!({"metadata": {"finalizers": null}});
    api.patch("x", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("let go");
    eventually("x to be gone", T, || async {
        api.get_opt("x")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
}

/// A Service changed to ClusterIP whose status cannot be cleared yet keeps its address
/// held: released first, another Service got it, and when the first came back as a
/// LoadBalancer of the same class a restart adopted the stale status for it (the older
/// Service) and moved the other's VIP. The status now goes before the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_change_that_cannot_clear_the_status_keeps_the_address_held() {
    let dir = tempfile::tempdir().expect("tmp");
    let (cluster, c) = two_class_world(dir.path()).await;
    let api: Api<Service> = Api::namespaced(cluster.client(), "default");
    let first = bgp_x_to_cluster_ip_with_its_status_failing(&cluster, &api).await;
    let y = serve_y_while_x_cannot_publish(&api, &first).await;
    let back = serde_json::json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": BGP}});
    api.patch("x", &PatchParams::default(), &Patch::Merge(&back))
        .await
        .expect("back to LoadBalancer");
    tokio::time::sleep(Duration::from_secs(1)).await;
    restart_and_check(&cluster, dir.path(), c, ("y", &y), ("x", "198.51.100.")).await;
}
