//! The cloud node controller in-process against the test world (`PORTWAY_TEST_CLUSTER`):
//! what upstream's node controller, kubelet's address rules and k3s's cloud provider do
//! with nodes that have no address yet, and with nodes whose kubelet was renumbered.

use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, ListParams, Patch, PatchParams};
use portway::node::NodeController;
use portway_tests::{SimNode, TestCluster, eventually};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";

struct World {
    cluster: TestCluster,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl World {
    async fn new() -> World {
        portway_tests::init_tracing();
        let cluster = TestCluster::start().await.expect("cluster");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let ctl = NodeController::new(
            cluster.client(),
            Default::default(),
            Duration::from_secs(60),
        );
        let task = tokio::spawn(ctl.run(async move {
            let _ = rx.await;
        }));
        World {
            cluster,
            stop: Some(tx),
            task,
        }
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.cluster.client())
    }

    async fn node(&self, name: &str) -> Node {
        self.nodes().get(name).await.expect("node")
    }

    async fn events_of(&self, node: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.cluster.client(), "default");
        events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(node))
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

fn tainted(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == TAINT))
}

fn internal_ips(n: &Node) -> Vec<String> {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 16 #2: a kubelet ≥ 1.29 with `--cloud-provider=external` and no `--node-ip`
/// reports no address; the node keeps its taint with one Warning naming the fix, and is
/// initialized as soon as an address appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_an_address_waits_for_one() {
    let w = World::new().await;
    w.cluster
        .add_node(
            SimNode::new("bare")
                .without_addresses()
                .taint(TAINT, "NoSchedule"),
        )
        .await
        .expect("node");
    let warning = eventually("a warning naming the fix", T, || async {
        w.events_of("bare").await.into_iter().find(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("--node-ip"))
        })
    })
    .await;
    assert_eq!(warning.reason.as_deref(), Some("NodeInitializationFailed"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        tainted(&w.node("bare").await),
        "initialized without an address"
    );
    // The operator annotates the node (or restarts kubelet with --node-ip).
    let patch =
        serde_json::json!({"metadata": {"annotations": {"portway.dev/internal-ip": "10.0.0.7"}}});
    w.nodes()
        .patch("bare", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
    let n = eventually("initialized", T, || async {
        let n = w.nodes().get("bare").await.ok()?;
        (!tainted(&n)).then_some(n)
    })
    .await;
    assert_eq!(internal_ips(&n), ["10.0.0.7"]);
}

/// Issue 16 #3: kubelet restarted with a new `--node-ip` keeps the old addresses (it
/// never rewrites existing ones); the provided IP is its statement of truth, so the
/// InternalIP is replaced, with an event saying from what to what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renumbered_node_gets_its_new_address() {
    let w = World::new().await;
    w.cluster
        .add_node(
            SimNode::new("n1")
                .ipv4("10.0.0.5")
                .annotation("alpha.kubernetes.io/provided-node-ip", "10.0.0.5")
                .taint(TAINT, "NoSchedule"),
        )
        .await
        .expect("node");
    eventually("initialized", T, || async {
        (!tainted(&w.nodes().get("n1").await.ok()?)).then_some(())
    })
    .await;
    let patch = serde_json::json!({"metadata": {"annotations": {"alpha.kubernetes.io/provided-node-ip": "10.0.0.9"}}});
    w.nodes()
        .patch("n1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("renumber");
    eventually("the new InternalIP", T, || async {
        (internal_ips(&w.nodes().get("n1").await.ok()?) == ["10.0.0.9"]).then_some(())
    })
    .await;
    let note = eventually("the event", T, || async {
        w.events_of("n1")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("NodeAddressesChanged"))
            .and_then(|e| e.message)
    })
    .await;
    assert!(note.contains("10.0.0.5 -> 10.0.0.9"), "{note}");
}
