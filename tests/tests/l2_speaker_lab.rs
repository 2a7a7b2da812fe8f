//! `portway speaker` itself, three of them in node network namespaces, against the test
//! world's API server (`PORTWAY_TEST_CLUSTER`) reached over the lab's switch: they find each other from the Node
//! objects, elect one owner for the l2 Service's addresses, which answers `arping` and
//! `ndisc6` from the router, carries TCP through the VIP and names itself on the Service;
//! when its speaker is killed another node takes over, the router's neighbour cache follows
//! and the annotation names the new owner; when the new owner's cable is pulled it concedes
//! once it has lost the API server too, and the last node answers.
//!
//! The lab is `l2_lab` (see `l2_interop.rs` for the drawing); the speakers here are the real
//! binary, not `l2-test-speaker`. Needs root, `ip`, `arping`, `ndisc6`, `iptables`; fails
//! instead of skipping under PORTWAY_REQUIRE_PRIVILEGED=1.

mod l2_lab;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use l2_lab::{Lab, VIP4, VIP6};
use portway_tests::{L2, SimNode, TestCluster, eventually, svc};
use std::time::Duration;

const SPEAKER: &str = "system:serviceaccount:portway-system:portway-speaker";

async fn announced_by(api: &Api<Service>) -> Option<String> {
    api.get("web")
        .await
        .ok()?
        .metadata
        .annotations?
        .get("portway.dev/announced-by")
        .cloned()
}

/// The node whose MAC answers `arping` for the VIP, when exactly one does.
fn arp_owner(lab: &Lab) -> Option<usize> {
    match lab.arping(VIP4).as_slice() {
        [mac] => (1..=3).find(|k| Lab::mac(*k) == *mac),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portway_speakers_elect_one_owner_and_fail_over() {
    let Some(mut lab) = tokio::task::block_in_place(|| Lab::start_bare("portway speaker")) else {
        return;
    };
    let host = lab.host_link();
    let sim = TestCluster::builder()
        .listen(host.parse().expect("addr"))
        .kubelet(false)
        .daemonsets(false)
        .start()
        .await
        .expect("cluster");
    for k in 1..=3 {
        sim.add_node(
            SimNode::new(&Lab::name(k))
                .ipv4(&format!("198.51.100.1{k}"))
                .ipv6(&format!("2001:db8:1::1{k}")),
        )
        .await
        .expect("node");
    }
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    api.create(
        &PostParams::default(),
        &svc("web").class(L2).ports([8080]).build(),
    )
    .await
    .expect("create");
    // The controller's part, done here: the allocated addresses in the status.
    let status = serde_json::json!({"status": {"loadBalancer": {"ingress": [
        {"ip": VIP4, "ipMode": "VIP"}, {"ip": VIP6, "ipMode": "VIP"}]}}});
    api.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    sim.set_endpoints("default", "web", &["n1", "n2", "n3"])
        .await
        .expect("endpoints");

    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("speaker.kubeconfig");
    sim.write_kubeconfig(&kubeconfig, SPEAKER)
        .await
        .expect("kubeconfig");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("pools:\n- name: lan\n  addresses: [{VIP4}/32, {VIP6}/128]\nl2:\n  pools: [lan]\n"),
    )
    .expect("config");
    for k in 1..=3 {
        lab.start_portway_speaker(k, &kubeconfig, &config);
    }

    // One owner: the only MAC that answers, over IPv4 and IPv6, the node TCP reaches and
    // the node the Service names.
    let owner = eventually("one node answers ARP", Duration::from_secs(20), || async {
        tokio::task::block_in_place(|| arp_owner(&lab))
    })
    .await;
    eprintln!("owner: n{owner}");
    let name = Lab::name(owner);
    eventually(
        "announced-by names the owner",
        Duration::from_secs(10),
        || async { (announced_by(&api).await.as_deref() == Some(name.as_str())).then_some(()) },
    )
    .await;
    tokio::task::block_in_place(|| {
        assert_eq!(
            lab.ndisc6(VIP6),
            vec![Lab::mac(owner)],
            "NDP: the owner only"
        );
        assert_eq!(lab.tcp(VIP4).as_deref(), Some(name.as_str()));
        assert_eq!(lab.tcp(VIP6).as_deref(), Some(name.as_str()));
        assert!(
            lab.arping("198.51.100.123").is_empty(),
            "nobody answers for an address no Service has"
        );
    });

    // The owner's speaker (and server) die: another node takes over. A TCP prober in the
    // router (a connection every 5 ms) times it.
    let prober = lab.prober(VIP4);
    tokio::task::block_in_place(|| {
        assert!(
            lab.wait(Duration::from_secs(5), || prober.last_ok().as_deref()
                == Some(name.as_str())),
            "the prober reaches the owner before the kill"
        )
    });
    let t0 = l2_lab::now_ms();
    tokio::task::block_in_place(|| lab.kill_node_processes(owner));
    let (next, ok_at) = eventually(
        "TCP reaches a new owner",
        Duration::from_secs(10),
        || async {
            (1..=3)
                .filter(|k| *k != owner)
                .find_map(|k| prober.first_ok_from(t0, &Lab::name(k)).map(|t| (k, t)))
        },
    )
    .await;
    eprintln!(
        "failover: kill -> TCP through the VIP at n{next}: {} ms",
        ok_at - t0
    );
    drop(prober);
    let arp = eventually(
        "the new owner answers ARP",
        Duration::from_secs(10),
        || async { tokio::task::block_in_place(|| arp_owner(&lab)) },
    )
    .await;
    assert_eq!(arp, next, "ARP and TCP agree on the new owner");
    let next_name = Lab::name(next);
    tokio::task::block_in_place(|| {
        assert!(
            lab.wait(Duration::from_secs(5), || lab.tcp(VIP4).as_deref()
                == Some(next_name.as_str())),
            "TCP through the VIP reaches n{next}"
        );
        assert_eq!(
            lab.neigh(VIP4).as_deref(),
            Some(Lab::mac(next).as_str()),
            "the router's cache moved to the new owner"
        );
        assert_eq!(lab.ndisc6(VIP6), vec![Lab::mac(next)]);
    });
    eventually(
        "announced-by names the new owner",
        Duration::from_secs(10),
        || async {
            (announced_by(&api).await.as_deref() == Some(next_name.as_str())).then_some(())
        },
    )
    .await;

    // A silent cut of the new owner: its cable pulled, so no reset reaches it and its
    // watches stay open without an error. Only the API probe can tell it that it lost the
    // API server too; then, alone among three known speakers, it concedes (Minority),
    // while the third node, which still reaches the API server, takes the VIP.
    let seen = lab.lines_after(next, 0).len();
    let cut = std::time::Instant::now();
    tokio::task::block_in_place(|| lab.set_link(next, false));
    eventually(
        "the cut owner concedes its claim",
        Duration::from_secs(20),
        || async {
            lab.lines_after(next, 0)
                .iter()
                .skip(seen)
                .any(|(_, l)| l.contains("l2 state") && l.contains("may_announce: false"))
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "silent cut: the cut owner conceded {:?} after the cut",
        cut.elapsed()
    );
    let third = (1..=3)
        .find(|k| *k != owner && *k != next)
        .expect("three nodes");
    let arp = eventually(
        "the third node answers ARP",
        Duration::from_secs(10),
        || async { tokio::task::block_in_place(|| arp_owner(&lab)) },
    )
    .await;
    assert_eq!(arp, third);
    tokio::task::block_in_place(|| lab.set_link(next, true));
    drop(lab);
    sim.shutdown().await;
}
