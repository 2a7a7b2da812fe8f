//! The test-world harness itself, on whichever world `PORTWAY_TEST_CLUSTER` names: what
//! every end-to-end suite relies on behaves the same on the sim and on the real server.

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use portway_tests::{SimNode, TestCluster, eventually, svc};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_as_a_kubelet_with_an_external_cloud_provider_does() {
    let c = TestCluster::start().await.expect("cluster");
    let node = c
        .add_node(
            SimNode::new("n1")
                .ipv4("10.0.0.1")
                .taint(
                    "node.cloudprovider.kubernetes.io/uninitialized",
                    "NoSchedule",
                )
                .annotation("alpha.kubernetes.io/provided-node-ip", "10.0.0.1"),
        )
        .await
        .expect("node");
    let addrs = node.status.and_then(|s| s.addresses).unwrap_or_default();
    assert!(
        addrs
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "10.0.0.1"),
        "{addrs:?}"
    );
    c.set_node_ready("n1", false).await.expect("not ready");
    let nodes: Api<Node> = Api::all(c.client());
    let ready = nodes
        .get("n1")
        .await
        .expect("get")
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False"),
        "{ready:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_logged_with_their_user() {
    let c = TestCluster::start().await.expect("cluster");
    let api: Api<Service> = Api::namespaced(c.client(), "default");
    api.create(&PostParams::default(), &svc("web").build())
        .await
        .expect("create");
    let other = c.client_as("someone").await.expect("client");
    let patch = serde_json::json!({"metadata": {"labels": {"x": "y"}}});
    Api::<Service>::namespaced(other, "default")
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let w = c.writes().await;
    assert_eq!(
        w.count_for("services", "default", "web"),
        2,
        "{:?}",
        w.all()
    );
    assert_eq!(w.by_user("someone").len(), 1, "{:?}", w.all());
    assert_eq!(
        w.by_user("admin")
            .iter()
            .filter(|r| r.resource == "services")
            .count(),
        1
    );
    c.reset_writes().await;
    assert_eq!(c.writes().await.count_for("services", "default", "web"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_off_lets_users_do_everything_and_enforced_only_what_is_bound() {
    let c = TestCluster::start().await.expect("cluster");
    let sa = c
        .client_as("system:serviceaccount:default:robot")
        .await
        .expect("client");
    let nodes: Api<Node> = Api::all(sa.clone());
    nodes
        .list(&ListParams::default())
        .await
        .expect("allowed while RBAC is off");
    c.enforce_rbac(true).await.expect("enforce");
    let err = nodes
        .list(&ListParams::default())
        .await
        .expect_err("forbidden");
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 403),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_the_nodes_asked_for() {
    let c = TestCluster::start().await.expect("cluster");
    for i in 1..=2 {
        c.add_node(SimNode::new(&format!("n{i}")).ipv4(&format!("10.0.0.{i}")))
            .await
            .expect("node");
    }
    let api: Api<Service> = Api::namespaced(c.client(), "default");
    api.create(&PostParams::default(), &svc("web").build())
        .await
        .expect("create");
    c.set_endpoints("default", "web", &["n1", "n2"])
        .await
        .expect("two");
    c.set_endpoints("default", "web", &["n2"])
        .await
        .expect("one");
    c.set_endpoints("default", "web", &[]).await.expect("none");
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(c.client(), "default");
    eventually("no ready endpoint", T, || async {
        let l = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?;
        l.items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .all(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(true))
            .then_some(())
    })
    .await;
}

/// A kubeconfig holds a token: the harness writes it 0600 and never through a symbolic link
/// planted at its path or beside it (issue 20, defect 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfigs_are_written_private_and_through_no_link() {
    use std::os::unix::fs::{MetadataExt as _, symlink};
    let c = TestCluster::start().await.expect("cluster");
    let dir = tempfile::tempdir().expect("tmp");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").expect("victim");
    let path = dir.path().join("admin.kubeconfig");
    symlink(&victim, &path).expect("link");
    symlink(&victim, dir.path().join("admin.kubeconfig.partial")).expect("link");
    c.write_kubeconfig(&path, "admin")
        .await
        .expect("kubeconfig");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "untouched"
    );
    let meta = std::fs::symlink_metadata(&path).expect("written");
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o777, 0o600, "{:o}", meta.mode());
    c.shutdown().await;
}
