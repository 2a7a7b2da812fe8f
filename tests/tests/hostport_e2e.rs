//! The hostport class end to end: the real controller and provider against the test world
//! (`PORTWAY_TEST_CLUSTER`) with its DaemonSet controller, scheduler and kubelet.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use portway::config::Config;
use portway_tests::{L2, SimNode, TestCluster, eventually, fast_config, svc};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

struct World {
    cluster: TestCluster,
    _c: portway_tests::Running,
}

const CONFIG: &str = "pools:\n- name: lan\n  addresses: [192.168.9.0/28]\nl2:\n  pools: [lan]\n";

/// The service controller with the providers `yaml` configures.
async fn start_controller(cluster: &TestCluster, yaml: &str) -> portway_tests::Running {
    let config = Config::from_yaml(yaml).expect("config");
    let built = portway::providers::build(&config, &cluster.client())
        .await
        .expect("providers");
    portway_tests::start_built(
        cluster.client(),
        built,
        &config.default_class,
        fast_config(),
    )
}

impl World {
    async fn new() -> World {
        Self::with(CONFIG).await
    }

    /// Three nodes, then the controller with `yaml` as its configuration.
    async fn with(yaml: &str) -> World {
        let cluster = TestCluster::start().await.expect("cluster");
        for i in 1..=3 {
            cluster
                .add_node(SimNode::new(&format!("node-{i}")).ipv4(&format!("10.0.0.{i}")))
                .await
                .expect("node");
        }
        let c = start_controller(&cluster, yaml).await;
        World { cluster, _c: c }
    }

    fn svcs(&self) -> Api<Service> {
        Api::namespaced(self.cluster.client(), "default")
    }

    fn daemonsets(&self) -> Api<DaemonSet> {
        Api::namespaced(self.cluster.client(), "kube-system")
    }

    async fn ips(&self, name: &str) -> Vec<String> {
        self.svcs()
            .get(name)
            .await
            .ok()
            .and_then(|s| s.status)
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip)
            .collect()
    }

    async fn wait_ips(&self, name: &str, want: &[&str]) {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        eventually(&format!("{name} to publish {want:?}"), T, || async {
            let got = self.ips(name).await;
            (got == want).then_some(())
        })
        .await;
    }

    async fn label_node(&self, node: &str, value: Option<&str>) {
        self.label(node, "svccontroller.k3s.cattle.io/enablelb", value)
            .await;
    }

    async fn label(&self, node: &str, key: &str, value: Option<&str>) {
        let nodes: Api<Node> = Api::all(self.cluster.client());
        let patch = serde_json::json!({"metadata": {"labels": {key: value}}});
        nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("label");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klipper_parity_end_to_end() {
    let w = World::new().await;
    let created = w
        .svcs()
        .create(&PostParams::default(), &svc("web").build())
        .await
        .expect("create");
    w.wait_ips("web", &["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        .await;
    let uid = created.metadata.uid.clone().expect("uid");
    let ds_name = format!("svclb-web-{}", &uid[..8]);
    let ds = w
        .daemonsets()
        .get(&ds_name)
        .await
        .expect("svclb DaemonSet exists");
    assert!(ds.metadata.owner_references.is_none());

    // Steady state: no DaemonSet or Service writes by the controller.
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.cluster.reset_writes().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        w.cluster
            .writes()
            .await
            .count_for("daemonsets", "kube-system", &ds_name),
        0
    );
    assert_eq!(
        w.cluster
            .writes()
            .await
            .count_for("services", "default", "web"),
        0
    );

    // Allow-list mode: only labelled nodes; the label removed, all nodes again (k3s#14625).
    w.label_node("node-2", Some("true")).await;
    w.wait_ips("web", &["10.0.0.2"]).await;
    assert_eq!(
        w.cluster
            .writes()
            .await
            .count_for("daemonsets", "kube-system", &ds_name),
        1,
        "one DaemonSet write for the change"
    );
    w.label_node("node-2", None).await;
    w.wait_ips("web", &["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        .await;

    // The upstream exclusion label: "true" keeps the node out, "false" lets it in.
    const EXCLUDE: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
    w.label("node-3", EXCLUDE, Some("true")).await;
    w.wait_ips("web", &["10.0.0.1", "10.0.0.2"]).await;
    w.label("node-3", EXCLUDE, Some("false")).await;
    w.wait_ips("web", &["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        .await;

    // A second Service on the same port stays pending with a Warning naming the first.
    w.svcs()
        .create(&PostParams::default(), &svc("clash").build())
        .await
        .expect("create");
    let events: Api<Event> = Api::namespaced(w.cluster.client(), "default");
    let note = eventually("a clash warning", T, || async {
        events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("clash"))
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| e.note)
            .find(|n| n.contains("default/web"))
    })
    .await;
    assert!(note.contains("TCP/80"), "{note}");
    assert!(w.ips("clash").await.is_empty());

    // Local policy: only nodes with a ready endpoint.
    w.svcs()
        .create(
            &PostParams::default(),
            &svc("local").ports([8080]).local().build(),
        )
        .await
        .expect("create");
    w.cluster
        .set_endpoints("default", "local", &["node-3"])
        .await
        .expect("endpoints");
    w.wait_ips("local", &["10.0.0.3"]).await;

    // Another class is never touched by this provider.
    w.svcs()
        .create(
            &PostParams::default(),
            &svc("vip").ports([9090]).class(L2).build(),
        )
        .await
        .expect("create");
    eventually("the l2 Service gets its VIP", T, || async {
        (!w.ips("vip").await.is_empty()).then_some(())
    })
    .await;
    let all = w
        .daemonsets()
        .list(&ListParams::default())
        .await
        .expect("list");
    assert!(
        all.items.iter().all(|d| !d
            .metadata
            .name
            .as_deref()
            .unwrap_or("")
            .starts_with("svclb-vip-")),
        "an svclb DaemonSet was made for an l2 Service"
    );

    // Deleting the first Service frees the port: the clashing one gets its nodes.
    w.svcs()
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the DaemonSet is gone", T, || async {
        w.daemonsets()
            .get_opt(&ds_name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    w.wait_ips("clash", &["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        .await;
    w.cluster.shutdown().await;
}

// ------------------------------------------------- issue 16: k3s servicelb.go parity

impl World {
    async fn events_of(&self, name: &str) -> Vec<(String, String, String)> {
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.cluster.client(), "default");
        events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect()
    }

    async fn wait_event(&self, name: &str, reason: &str, needle: &str) -> String {
        eventually(
            &format!("{reason} on {name} with {needle:?}"),
            T,
            || async {
                self.events_of(name)
                    .await
                    .into_iter()
                    .find(|(_, r, m)| r == reason && m.contains(needle))
                    .map(|(_, _, m)| m)
            },
        )
        .await
    }
}

/// Issue 16 #12: a node's new ExternalIP is published at once (the controller's node
/// snapshot is refreshed before the Service is ensured again), and #16: k3s's events,
/// `AppliedDaemonSet` and `UpdatedLoadBalancer` with old -> new IPs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_address_change_is_published_at_once_with_k3s_events() {
    let w = World::new().await;
    w.svcs()
        .create(&PostParams::default(), &svc("web").build())
        .await
        .expect("create");
    w.wait_ips("web", &["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        .await;
    w.wait_event(
        "web",
        "AppliedDaemonSet",
        "Applied LoadBalancer DaemonSet kube-system/svclb-web-",
    )
    .await;
    let nodes: Api<Node> = Api::all(w.cluster.client());
    let patch = serde_json::json!({"status": {"addresses": [
        {"type": "InternalIP", "address": "10.0.0.1"},
        {"type": "ExternalIP", "address": "203.0.113.1"},
        {"type": "Hostname", "address": "node-1"}]}});
    nodes
        .patch_status("node-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("external ip");
    // k3s: once any serving node has an ExternalIP, ExternalIPs are published.
    eventually(
        "the ExternalIP published",
        Duration::from_secs(10),
        || async { (w.ips("web").await == ["203.0.113.1"]).then_some(()) },
    )
    .await;
    // On a real cluster the pods become ready one by one, each step an event of its own.
    let note = w
        .wait_event("web", "UpdatedLoadBalancer", "-> [\"203.0.113.1\"]")
        .await;
    assert!(note.contains("with new IPs: [\"10.0.0.1\""), "{note}");
}

/// Issue 16 #13: when the status empties (allow-list mode with no node allowed), the
/// Service gets the `UnAvailableLoadBalancer` Warning docs/hostport.md promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_status_says_unavailable() {
    let w = World::new().await;
    w.svcs()
        .create(&PostParams::default(), &svc("web").build())
        .await
        .expect("create");
    w.wait_ips("web", &["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        .await;
    w.label_node("node-1", Some("false")).await;
    w.wait_ips("web", &[]).await;
    let note = w
        .wait_event("web", "UnAvailableLoadBalancer", "no available nodes")
        .await;
    assert!(!note.is_empty());
}

/// Issue 16 #17: k3s's duties at start: the legacy `svccontroller.k3s.cattle.io/daemonset`
/// finalizer is removed from Services, and a missing svclb namespace is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3s_leftovers_are_cleaned_and_the_svclb_namespace_is_made() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .add_node(SimNode::new("node-1").ipv4("10.0.0.1"))
        .await
        .expect("node");
    let svcs: Api<Service> = Api::namespaced(cluster.client(), "default");
    let mut old = svc("old").class(L2).build();
    old.metadata.finalizers = Some(vec!["svccontroller.k3s.cattle.io/daemonset".into()]);
    svcs.create(&PostParams::default(), &old)
        .await
        .expect("create");
    let _c = start_controller(
        &cluster,
        &format!("{CONFIG}hostport:\n  namespace: svclb-fresh\n"),
    )
    .await;
    eventually("the legacy finalizer removed", T, || async {
        let s = svcs.get("old").await.ok()?;
        (!s.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f.starts_with("svccontroller.k3s.cattle.io")))
        .then_some(())
    })
    .await;
    svcs.create(&PostParams::default(), &svc("web").build())
        .await
        .expect("create");
    let ds: Api<DaemonSet> = Api::namespaced(cluster.client(), "svclb-fresh");
    eventually("the DaemonSet in the new namespace", T, || async {
        let l = ds.list(&ListParams::default()).await.ok()?;
        (l.items.len() == 1).then_some(())
    })
    .await;
}

/// Issue 16 #17: hostport switched off deletes every svclb DaemonSet (k3s
/// `deleteAllDaemonsets`) and clears the statuses of its Services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostport_switched_off_removes_every_svclb_and_clears_statuses() {
    let cluster = TestCluster::start().await.expect("cluster");
    for i in 1..=2 {
        cluster
            .add_node(SimNode::new(&format!("node-{i}")).ipv4(&format!("10.0.0.{i}")))
            .await
            .expect("node");
    }
    let svcs: Api<Service> = Api::namespaced(cluster.client(), "default");
    let c = start_controller(&cluster, CONFIG).await;
    svcs.create(
        &PostParams::default(),
        &svc("web").class("portway.dev/hostport").build(),
    )
    .await
    .expect("create");
    let ds: Api<DaemonSet> = Api::namespaced(cluster.client(), "kube-system");
    eventually("served", T, || async {
        let s = svcs.get("web").await.ok()?;
        let ips = s.status?.load_balancer?.ingress?;
        (ips.len() == 2).then_some(())
    })
    .await;
    c.stop().await;
    let _c = start_controller(
        &cluster,
        &format!("defaultClass: portway.dev/l2\n{CONFIG}hostport:\n  enabled: false\n"),
    )
    .await;
    eventually("the DaemonSet deleted, the status cleared", T, || async {
        let left = ds
            .list(&ListParams::default().labels("svccontroller.k3s.cattle.io/svcname"))
            .await
            .ok()?
            .items
            .len();
        let s = svcs.get("web").await.ok()?;
        let cleared = s
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .is_none_or(|i| i.is_empty());
        (left == 0 && cleared).then_some(())
    })
    .await;
}
