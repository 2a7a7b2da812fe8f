//! The controller defects the chaos runs and the L2/BGP labs exposed (issue 19), each as
//! the deterministic sequence that showed it, on the test world (`PORTWAY_TEST_CLUSTER`):
//!
//! - a class changed while no controller leads: the old class's address is not adopted by
//!   the new class, and what the old class made (an svclb DaemonSet) is released at once;
//! - a leader paused (SIGSTOP) past its lease writes nothing after it resumes: its writes
//!   are fenced by the clock, and its status writes carry a resourceVersion precondition.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use portway::config::Config;
use portway_tests::process::{get, spawn_with_lease};
use portway_tests::{BGP, L2, SimNode, TestCluster, eventually, fast_config, svc};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"
pools:
  - name: lan
    addresses: ["192.168.9.0/28"]
  - name: dc
    addresses: ["198.51.100.0/28"]
l2:
  pools: [lan]
bgp:
  localASN: 64512
  peers: [{address: 10.0.0.254, asn: 64500}]
  advertisements: [{pools: [dc]}]
"#;

fn ips(s: &Service) -> Vec<String> {
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}

async fn world() -> TestCluster {
    let c = TestCluster::start().await.expect("cluster");
    for i in 1..=3 {
        c.add_node(SimNode::new(&format!("node-{i}")).ipv4(&format!("10.0.0.{i}")))
            .await
            .expect("node");
    }
    c
}

async fn controller(c: &TestCluster) -> portway_tests::Running {
    let config = Config::from_yaml(CONFIG).expect("config");
    let built = portway::providers::build(&config, &c.client())
        .await
        .expect("providers");
    portway_tests::start_built(c.client(), built, &config.default_class, fast_config())
}

async fn wait_ips(api: &Api<Service>, name: &str, prefix: &str) -> Vec<String> {
    eventually(
        &format!("{name} to get an address in {prefix}*"),
        T,
        || async {
            let got = ips(&api.get(name).await.ok()?);
            (!got.is_empty() && got.iter().all(|ip| ip.starts_with(prefix))).then_some(got)
        },
    )
    .await
}

/// Issue 19 defect 1, as reported: `web` (hostport) and `vip` (bgp) served; the controller
/// stops; each goes to ClusterIP and back to LoadBalancer with class l2; the controller
/// starts. Before the fix `web` got a node's own address as its l2 VIP, `vip` kept its bgp
/// address under l2, and `svclb-web-*` survived until the next restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_changed_while_no_controller_leads_is_released_and_reallocated() {
    let c = world().await;
    let api: Api<Service> = Api::namespaced(c.client(), "default");
    let running = controller(&c).await;
    api.create(&PostParams::default(), &svc("web").ports([8080]).build())
        .await
        .expect("create web");
    api.create(&PostParams::default(), &svc("vip").class(BGP).build())
        .await
        .expect("create vip");
    wait_ips(&api, "web", "10.0.0.").await;
    wait_ips(&api, "vip", "198.51.100.").await;
    let svclb: Api<DaemonSet> = Api::namespaced(c.client(), "kube-system");
    let web_ds = || async {
        svclb
            .list(&ListParams::default().labels("svccontroller.k3s.cattle.io/svcname=web"))
            .await
            .expect("list")
            .items
            .len()
    };
    assert_eq!(web_ds().await, 1);
    running.stop().await;

    for (name, port) in [("web", 8080), ("vip", 80)] {
        let down = serde_json::json!({"spec": {"type": "ClusterIP", "loadBalancerClass": null,
            "ports": [{"name": format!("tcp-{port}"), "port": port, "protocol": "TCP", "nodePort": null}]}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&down))
            .await
            .expect("to ClusterIP");
        let up = serde_json::json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": L2}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&up))
            .await
            .expect("back to LoadBalancer, class l2");
    }

    let _running = controller(&c).await;
    let web = wait_ips(&api, "web", "192.168.9.").await;
    let vip = wait_ips(&api, "vip", "192.168.9.").await;
    assert_ne!(web, vip, "one address on two Services");
    eventually("the svclb DaemonSet of web released", T, || async {
        (web_ds().await == 0).then_some(())
    })
    .await;
}

/// Issue 19 defect 2: the leader is paused (SIGSTOP) for longer than its lease; the
/// standby takes over and serves a Service created meanwhile; when the old leader resumes
/// it writes nothing (not even the Service it still had queued) and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_writes_nothing_when_it_resumes() {
    let c = world().await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = "pools:\n- name: lan\n  addresses: [192.168.50.0/26]\nl2:\n  pools: [lan]\n";
    let lease = ["3s", "2s", "500ms"];
    let a = spawn_with_lease(&c, dir.path(), "ctrl-a", config, lease).await;
    let api: Api<Service> = Api::namespaced(c.client(), "default");
    api.create(&PostParams::default(), &svc("first").class(L2).build())
        .await
        .expect("create");
    wait_ips(&api, "first", "192.168.50.").await;
    let b = spawn_with_lease(&c, dir.path(), "ctrl-b", config, lease).await;
    eventually("the standby serving /healthz", T, || async {
        (get(b.port, "/healthz").await.map(|r| r.0) == Some(200)).then_some(())
    })
    .await;

    let pid = a.child.id().to_string();
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill");
    assert!(stop.success());
    // The standby takes over (lease 3 s, retry 0.5 s) and serves a Service made now, which
    // the paused leader's watch also delivers once it resumes.
    api.create(&PostParams::default(), &svc("second").class(L2).build())
        .await
        .expect("create");
    wait_ips(&api, "second", "192.168.50.").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.reset_writes().await;
    let resumed = Instant::now();
    let cont = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .expect("kill");
    assert!(cont.success());
    // Give the resumed process time to work off its queue (or to exit).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let by_a: Vec<_> = c
        .writes()
        .await
        .by_user("ctrl-a")
        .into_iter()
        .filter(|w| w.resource != "leases")
        .collect();
    assert!(
        by_a.is_empty(),
        "the old leader wrote {:?} in the {:?} after it resumed",
        by_a,
        resumed.elapsed()
    );
    drop(a);
    drop(b);
}
