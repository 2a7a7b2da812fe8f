//! `portway explain` (issue 24 #2) on the test world (`PORTWAY_TEST_CLUSTER`): the real
//! controller serves Services, then the report is read back through the API the way an
//! operator's `portway explain NAMESPACE/NAME` reads it, in-process and as the binary.

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::Resource;
use kube::api::{Api, PostParams};
use portway::config::Config;
use portway::events::{Events, Reason};
use portway::explain::report::Report;
use portway_tests::{SimNode, TestCluster, eventually, fast_config, svc};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const CONFIG: &str = "pools:\n- name: lan\n  addresses: [192.168.9.0/28]\nl2:\n  pools: [lan]\n";
const L2: &str = "portway.dev/l2";

/// Two workers and a kubeadm control-plane node (excluded by its label), the controller.
async fn world() -> (TestCluster, portway_tests::Running, Config) {
    let cluster = TestCluster::start().await.expect("cluster");
    for (name, ip) in [("node-1", "10.0.0.1"), ("node-2", "10.0.0.2")] {
        cluster
            .add_node(SimNode::new(name).ipv4(ip))
            .await
            .expect("node");
    }
    cluster
        .add_node(
            SimNode::new("cp")
                .ipv4("10.0.0.3")
                .label("node-role.kubernetes.io/control-plane", "")
                .label(
                    "node.kubernetes.io/exclude-from-external-load-balancers",
                    "",
                ),
        )
        .await
        .expect("node");
    let config = Config::from_yaml(CONFIG).expect("config");
    let built = portway::providers::build(&config, &cluster.client())
        .await
        .expect("providers");
    let c = portway_tests::start_built(
        cluster.client(),
        built,
        &config.default_class,
        fast_config(),
    );
    (cluster, c, config)
}

fn line(r: &Report, node: &str) -> (bool, String) {
    let l = r
        .nodes
        .iter()
        .find(|l| l.node == node)
        .unwrap_or_else(|| panic!("no line for {node} in {r:?}"));
    (l.serves, l.reasons.join("; "))
}

async fn explain_until(
    cluster: &TestCluster,
    config: &Config,
    name: &str,
    what: &str,
    ok: impl Fn(&Report) -> bool,
) -> Report {
    eventually(what, T, || async {
        let r = portway::explain::gather(cluster.client(), config, "default", name)
            .await
            .ok()?;
        ok(&r).then_some(r)
    })
    .await
}

/// Each reason a node may not serve, as the report gives it on this world: the kubeadm
/// exclude label, a hostPort held by another Service, no ready local endpoint under
/// `Local`, who announces an L2 address and what a node's speaker said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_each_reason_a_node_does_not_serve() {
    let (cluster, _c, config) = world().await;
    let svcs: Api<Service> = Api::namespaced(cluster.client(), "default");
    let pp = PostParams::default();

    // Hostport: `first` takes TCP/8080 on both workers; `second` wants it too.
    svcs.create(&pp, &svc("first").ports([8080]).build())
        .await
        .expect("first");
    let r = explain_until(
        &cluster,
        &config,
        "first",
        "first served on both workers",
        |r| line(r, "node-1").0 && line(r, "node-2").0,
    )
    .await;
    let (serves, why) = line(&r, "cp");
    assert!(!serves);
    assert!(
        why.contains("node.kubernetes.io/exclude-from-external-load-balancers")
            && why.contains("kubeadm"),
        "{why}"
    );
    svcs.create(&pp, &svc("second").ports([8080]).build())
        .await
        .expect("second");
    let r = explain_until(
        &cluster,
        &config,
        "second",
        "second's port taken by first",
        |r| {
            line(r, "node-1")
                .1
                .contains("taken by Service default/first")
        },
    )
    .await;
    assert!(!line(&r, "node-1").0, "{r:?}");
    assert!(
        line(&r, "node-2")
            .1
            .contains("hostPort TCP/8080 taken by Service default/first"),
        "{r:?}"
    );

    // L2 under Local: an endpoint on node-1 only.
    svcs.create(&pp, &svc("vip").class(L2).local().build())
        .await
        .expect("vip");
    cluster
        .set_endpoints("default", "vip", &["node-1"])
        .await
        .expect("endpoints");
    let r = explain_until(&cluster, &config, "vip", "vip has an address", |r| {
        !r.summary[0].contains("<pending>")
    })
    .await;
    assert!(line(&r, "node-2").1.contains("no ready endpoint"), "{r:?}");
    assert!(
        line(&r, "node-1").1.contains("no node says it announces"),
        "{r:?}"
    );
    assert!(
        r.summary
            .iter()
            .any(|l| l.contains("condition portway.dev/Serving: True")),
        "{r:?}"
    );

    // A speaker on node-1 says why it cannot announce; the report puts it on node-1's line.
    let vip = svcs.get("vip").await.expect("vip");
    let regarding = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        namespace: vip.meta().namespace.clone(),
        name: vip.meta().name.clone(),
        uid: vip.meta().uid.clone(),
        ..Default::default()
    };
    let speaker = Events::new(cluster.client(), portway::names::SPEAKER, "node-1");
    speaker
        .publish(
            &regarding,
            Reason::AnnounceFailed,
            "no interface on 192.168.9.0/28",
        )
        .await;
    let r = explain_until(&cluster, &config, "vip", "node-1's speaker event", |r| {
        line(r, "node-1").1.contains("AnnounceFailed")
    })
    .await;
    assert!(
        line(&r, "node-1")
            .1
            .contains("speaker on this node said AnnounceFailed: no interface on 192.168.9.0/28"),
        "{r:?}"
    );
    assert!(!line(&r, "node-2").1.contains("AnnounceFailed"), "{r:?}");

    // The binary prints the same, reading with an operator's kubeconfig.
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    cluster
        .write_kubeconfig(&kc, "admin")
        .await
        .expect("kubeconfig");
    let out = tokio::process::Command::new(portway_tests::portway_bin())
        .args(["explain", "default/second", "--kubeconfig"])
        .arg(&kc)
        .output()
        .await
        .expect("portway explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("default/second: class portway.dev/hostport"),
        "{text}"
    );
    assert!(
        text.contains("- node-2: hostPort TCP/8080 taken by Service default/first"),
        "{text}"
    );
    let missing = tokio::process::Command::new(portway_tests::portway_bin())
        .args(["explain", "default/nope", "--kubeconfig"])
        .arg(&kc)
        .output()
        .await
        .expect("portway explain");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("Service default/nope not found"),
        "{missing:?}"
    );
}
