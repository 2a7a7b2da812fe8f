//! Address allocation end to end: the real controller with the l2 and bgp providers built
//! from a configuration file, against the test world (`PORTWAY_TEST_CLUSTER`). 200 Services over two pools
//! keep their addresses across a controller restart, never share one by accident, and bad
//! requests get a Warning event naming the address.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use portway::config::Config;
use portway_tests::{
    BGP, L2, SimNode, TestCluster, eventually, fast_config, start_service_controller_with, svc,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const CONFIG: &str = r#"
pools:
  - name: lan
    addresses: ["192.168.10.0/25", "fd00:10::/120"]
  - name: dc
    addresses: ["198.51.100.0-198.51.100.199"]
l2:
  pools: [lan]
bgp:
  localASN: 64512
  peers: [{address: 10.0.0.254, asn: 64500}]
  advertisements: [{pools: [dc]}]
"#;

const T: Duration = Duration::from_secs(60);

async fn start(sim: &TestCluster) -> portway_tests::Running {
    let config = Config::from_yaml(CONFIG).expect("config");
    let built = portway::providers::build(&config, &sim.client())
        .await
        .expect("providers");
    start_service_controller_with(
        sim.client(),
        built.providers,
        "portway.dev/hostport",
        fast_config(),
    )
}

fn ips(s: &Service) -> Vec<String> {
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}

async fn all_ips(api: &Api<Service>) -> BTreeMap<String, Vec<String>> {
    api.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap_or_default(), ips(s)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_services_keep_their_addresses_across_a_restart() {
    let sim = TestCluster::builder()
        .kubelet(false)
        .daemonsets(false)
        .start()
        .await
        .expect("cluster");
    sim.add_node(SimNode::new("n1").ipv4("10.0.0.1"))
        .await
        .expect("node");
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    let c = start(&sim).await;
    for i in 0..100 {
        api.create(
            &PostParams::default(),
            &svc(&format!("l2-{i}")).class(L2).build(),
        )
        .await
        .expect("create");
        api.create(
            &PostParams::default(),
            &svc(&format!("bgp-{i}")).class(BGP).build(),
        )
        .await
        .expect("create");
    }
    let before = eventually("200 addresses", T, || async {
        let m = all_ips(&api).await;
        (m.values().filter(|v| !v.is_empty()).count() == 200).then_some(m)
    })
    .await;
    let flat: Vec<&String> = before.values().flatten().collect();
    let unique: BTreeSet<&String> = flat.iter().copied().collect();
    assert_eq!(flat.len(), unique.len(), "an address was handed out twice");
    for (name, v) in &before {
        let want = if name.starts_with("l2-") {
            "192.168.10."
        } else {
            "198.51.100."
        };
        assert!(v.iter().all(|ip| ip.starts_with(want)), "{name} got {v:?}");
    }
    c.stop().await;

    // A new controller rebuilds from status before allocating anything new.
    let c = start(&sim).await;
    for i in 100..110 {
        api.create(
            &PostParams::default(),
            &svc(&format!("l2-{i}")).class(L2).build(),
        )
        .await
        .expect("create");
    }
    let after = eventually("210 addresses", T, || async {
        let m = all_ips(&api).await;
        (m.values().filter(|v| !v.is_empty()).count() == 210).then_some(m)
    })
    .await;
    for (name, v) in &before {
        assert_eq!(
            after.get(name),
            Some(v),
            "{name} changed address across the restart"
        );
    }
    let flat: Vec<&String> = after.values().flatten().collect();
    let unique: BTreeSet<&String> = flat.iter().copied().collect();
    assert_eq!(
        flat.len(),
        unique.len(),
        "an address was handed out twice after restart"
    );
    c.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_address_taken_or_outside_pools_is_refused_with_an_event() {
    let sim = TestCluster::builder()
        .kubelet(false)
        .daemonsets(false)
        .start()
        .await
        .expect("cluster");
    sim.add_node(SimNode::new("n1").ipv4("10.0.0.1"))
        .await
        .expect("node");
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    let c = start(&sim).await;
    api.create(
        &PostParams::default(),
        &svc("first")
            .class(L2)
            .annotation("portway.dev/load-balancer-ips", "192.168.10.7")
            .build(),
    )
    .await
    .expect("create");
    eventually("first gets its requested address", T, || async {
        let s = api.get("first").await.expect("get");
        (ips(&s) == vec!["192.168.10.7".to_string()]).then_some(())
    })
    .await;
    api.create(
        &PostParams::default(),
        &svc("second")
            .class(L2)
            .annotation("metallb.universe.tf/loadBalancerIPs", "192.168.10.7")
            .build(),
    )
    .await
    .expect("create");
    api.create(
        &PostParams::default(),
        &svc("outside")
            .class(L2)
            .annotation("portway.dev/load-balancer-ips", "10.9.9.9")
            .build(),
    )
    .await
    .expect("create");
    let events: Api<Event> = Api::namespaced(sim.client(), "default");
    for (name, needle) in [("second", "192.168.10.7"), ("outside", "10.9.9.9")] {
        let note = eventually(&format!("a warning on {name}"), T, || async {
            events
                .list(&ListParams::default())
                .await
                .expect("events")
                .items
                .into_iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                        && e.type_.as_deref() == Some("Warning")
                })
                .filter_map(|e| e.note)
                .find(|n| n.contains(needle))
        })
        .await;
        assert!(note.contains(needle), "{name}: {note}");
        let s = api.get(name).await.expect("get");
        assert!(
            ips(&s).is_empty(),
            "{name} must get nothing in place of its request"
        );
    }
    c.stop().await;
    sim.shutdown().await;
}

/// Issue 24: a pool that contains a node's own address. `check-config --cluster` refuses
/// it with the key path; the running controller never hands the address out (the next
/// free one is given), refuses a request for it naming the node, and puts a Warning on the
/// Node naming the pool and its key path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_overlapping_a_node_address_is_refused_and_never_hands_it_out() {
    const OVERLAPPING: &str = "pools:\n  - name: lan\n    addresses: [\"10.0.0.10/32\", \"192.168.20.1-192.168.20.3\"]\nl2:\n  pools: [lan]\n";
    let cluster = TestCluster::builder()
        .kubelet(false)
        .daemonsets(false)
        .start()
        .await
        .expect("cluster");
    cluster
        .add_node(SimNode::new("n1").ipv4("192.168.20.1"))
        .await
        .expect("node");
    let dir = tempfile::tempdir().expect("tmp");
    let (kubeconfig, file) = (
        dir.path().join("kubeconfig"),
        dir.path().join("config.yaml"),
    );
    cluster
        .write_kubeconfig(&kubeconfig, "admin")
        .await
        .expect("kubeconfig");
    std::fs::write(&file, OVERLAPPING).expect("config");
    let out = std::process::Command::new(portway_tests::portway_bin())
        .args(["check-config", "--cluster"])
        .arg(&file)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("run portway");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains("pools[0].addresses[1]")
            && stderr.contains("node n1's address 192.168.20.1"),
        "{stderr}"
    );
    // Without --cluster the file alone is fine.
    let offline = std::process::Command::new(portway_tests::portway_bin())
        .arg("check-config")
        .arg(&file)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run portway");
    assert!(offline.status.success());

    let config = Config::from_yaml(OVERLAPPING).expect("config");
    let built = portway::providers::build(&config, &cluster.client())
        .await
        .expect("providers");
    let c = portway_tests::start_built(
        cluster.client(),
        built,
        "portway.dev/hostport",
        fast_config(),
    );
    let api: Api<Service> = Api::namespaced(cluster.client(), "default");
    let mut got = Vec::new();
    for name in ["first", "second"] {
        api.create(&PostParams::default(), &svc(name).class(L2).build())
            .await
            .expect("create");
        got.extend(
            eventually("an address", T, || async {
                let s = api.get_opt(name).await.ok().flatten()?;
                let ips = ips(&s);
                (!ips.is_empty()).then_some(ips)
            })
            .await,
        );
    }
    assert_eq!(
        got,
        ["10.0.0.10", "192.168.20.2"],
        "the lowest free addresses, the node's skipped"
    );
    api.create(
        &PostParams::default(),
        &svc("asks")
            .class(L2)
            .annotation("portway.dev/load-balancer-ips", "192.168.20.1")
            .build(),
    )
    .await
    .expect("create");
    let events: Api<Event> = Api::namespaced(cluster.client(), "default");
    let warning_on = |kind: &'static str, name: &'static str, needle: &'static str| {
        let events = events.clone();
        async move {
            eventually(&format!("a warning on {kind} {name}"), T, || async {
                events
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .filter(|e| {
                        e.regarding.as_ref().is_some_and(|r| {
                            r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                        }) && e.type_.as_deref() == Some("Warning")
                    })
                    .filter_map(|e| e.note)
                    .find(|n| n.contains(needle))
            })
            .await
        }
    };
    let note = warning_on("Service", "asks", "node n1's own address").await;
    assert!(note.contains("192.168.20.1"), "{note}");
    let note = warning_on("Node", "n1", "pools[0].addresses[1]").await;
    assert!(
        note.contains("pool lan") && note.contains("192.168.20.1"),
        "{note}"
    );
    assert!(ips(&api.get("asks").await.expect("get")).is_empty());
    c.stop().await;
    cluster.shutdown().await;
}

/// Issue 24: a Service that lets Portway move it (`portway.dev/reallocate-on-conflict`)
/// gets a new address once a speaker writes that another host uses its address
/// (`portway.dev/address-conflict`, as the speaker does on a conflict); that address is not
/// handed out again, and a Service without the opt-in keeps its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_allows_it_moves_off_an_address_another_host_uses() {
    use kube::api::{Patch, PatchParams};
    use portway_provider::{CONFLICT_ANNOTATION, REALLOCATE_ANNOTATION};
    const SMALL: &str = "pools:\n  - name: lan\n    addresses: [\"192.168.30.1-192.168.30.4\"]\nl2:\n  pools: [lan]\n";
    let cluster = TestCluster::builder()
        .kubelet(false)
        .daemonsets(false)
        .start()
        .await
        .expect("cluster");
    cluster
        .add_node(SimNode::new("n1").ipv4("10.0.0.1"))
        .await
        .expect("node");
    let config = Config::from_yaml(SMALL).expect("config");
    let built = portway::providers::build(&config, &cluster.client())
        .await
        .expect("providers");
    let c = portway_tests::start_built(
        cluster.client(),
        built,
        "portway.dev/hostport",
        fast_config(),
    );
    let api: Api<Service> = Api::namespaced(cluster.client(), "default");
    let ip_of = |name: &'static str, not: Option<&'static str>| {
        let api = api.clone();
        async move {
            eventually(&format!("an address for {name}"), T, || async {
                let got = ips(&api.get_opt(name).await.ok().flatten()?);
                got.first().filter(|ip| Some(ip.as_str()) != not).cloned()
            })
            .await
        }
    };
    api.create(
        &PostParams::default(),
        &svc("movable")
            .class(L2)
            .annotation(REALLOCATE_ANNOTATION, "true")
            .build(),
    )
    .await
    .expect("create");
    assert_eq!(ip_of("movable", None).await, "192.168.30.1");
    api.create(&PostParams::default(), &svc("stays").class(L2).build())
        .await
        .expect("create");
    assert_eq!(ip_of("stays", None).await, "192.168.30.2");

    let conflict = |ip: &str| {
        serde_json::json!({"metadata": {"annotations": {
            CONFLICT_ANNOTATION: format!("{ip} mac=02:00:00:00:00:99 node=n1 iface=eth0")
        }}})
    };
    for (name, ip) in [("movable", "192.168.30.1"), ("stays", "192.168.30.2")] {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&conflict(ip)))
            .await
            .expect("patch");
    }
    assert_eq!(
        ip_of("movable", Some("192.168.30.1")).await,
        "192.168.30.3",
        "moved to the next free address"
    );
    api.create(&PostParams::default(), &svc("later").class(L2).build())
        .await
        .expect("create");
    assert_eq!(
        ip_of("later", None).await,
        "192.168.30.4",
        "the address another host uses is not handed out again"
    );
    assert_eq!(
        ips(&api.get("stays").await.expect("get")),
        ["192.168.30.2"],
        "without the opt-in the address stays"
    );
    c.stop().await;
    cluster.shutdown().await;
}
