//! The hostport class end to end: the real controller and provider against the test world
//! (`PORTWAY_TEST_CLUSTER`) with its DaemonSet controller, scheduler and kubelet.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use portway::config::Config;
use portway_tests::{
    L2, SimNode, TestCluster, eventually, fast_config, start_service_controller_with, svc,
};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

struct World {
    cluster: TestCluster,
    _c: portway_tests::Running,
}

impl World {
    async fn new() -> World {
        let cluster = TestCluster::start().await.expect("cluster");
        for i in 1..=3 {
            cluster
                .add_node(SimNode::new(&format!("node-{i}")).ipv4(&format!("10.0.0.{i}")))
                .await
                .expect("node");
        }
        let config = Config::from_yaml(
            "pools:\n- name: lan\n  addresses: [192.168.9.0/28]\nl2:\n  pools: [lan]\n",
        )
        .expect("config");
        let built = portway::providers::build(&config, &cluster.client())
            .await
            .expect("providers");
        let c = start_service_controller_with(
            cluster.client(),
            built.providers,
            "portway.dev/hostport",
            fast_config(),
        );
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
