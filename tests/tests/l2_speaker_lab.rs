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
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use l2_lab::{Lab, VIP4, VIP6};
use portway::crd::L2AnnouncementPolicy;
use portway_tests::{L2, SimNode, TestCluster, eventually, svc};
use serde_json::json;
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

/// The lab, a test world whose API server the nodes reach over the lab's switch, the
/// nodes n1..n3, the l2 Service `web` with both VIPs in its status and endpoints on every
/// node, and `portway speaker` on each node: `None` when the lab cannot run here.
async fn lab_with_speakers(tag: &str) -> Option<(Lab, TestCluster, tempfile::TempDir)> {
    let mut lab = tokio::task::block_in_place(|| Lab::start_bare(tag))?;
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
    let status = json!({"status": {"loadBalancer": {"ingress": [
        {"ip": VIP4, "ipMode": "VIP"}, {"ip": VIP6, "ipMode": "VIP"}]}}});
    api.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    sim.set_endpoints("default", "web", &["n1", "n2", "n3"])
        .await
        .expect("endpoints");

    // The Portway CRDs, so the speakers follow L2AnnouncementPolicies from the start.
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client());
    for crd in portway::crd::all() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("crd");
    }
    let policies: Api<L2AnnouncementPolicy> = Api::all(sim.client());
    eventually("the CRDs served", Duration::from_secs(30), || async {
        policies.list(&ListParams::default()).await.ok().map(|_| ())
    })
    .await;

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
    Some((lab, sim, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portway_speakers_elect_one_owner_and_fail_over() {
    let Some((mut lab, sim, _dir)) = lab_with_speakers("portway speaker").await else {
        return;
    };
    let api: Api<Service> = Api::namespaced(sim.client(), "default");

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

/// The node `k` answering ARP for the VIP alone, `what` naming the step.
async fn answered_by(lab: &Lab, k: usize, what: &str) {
    eventually(what, Duration::from_secs(20), || async {
        tokio::task::block_in_place(|| (arp_owner(lab) == Some(k)).then_some(()))
    })
    .await;
}

/// Issue 23: an `L2AnnouncementPolicy`'s `nodeSelectors` and `interfaces` take effect in
/// the running speakers, through the election every node computes alike. A policy
/// selecting one node moves the address there (whichever node wins the hash); editing the
/// selector moves it again; its `interfaces` make the owner answer on that interface only
/// (the LAN gets no answer); a selector matching no node silences every node and puts a
/// `NotSelectedByPolicy` Warning naming the policy on the Service; deleting the policy
/// gives the address back to the file's `l2` section. No speaker restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_policy_moves_the_address_to_the_nodes_it_selects_live() {
    let Some((lab, sim, _dir)) = lab_with_speakers("l2 announcement policy").await else {
        return;
    };
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    let owner = eventually("one node answers ARP", Duration::from_secs(20), || async {
        tokio::task::block_in_place(|| arp_owner(&lab))
    })
    .await;
    let target = owner % 3 + 1;
    let third = target % 3 + 1;
    assert!(target != owner && third != owner && third != target);
    let selecting = |k: usize| json!([{"matchLabels": {"kubernetes.io/hostname": Lab::name(k)}}]);
    let policies: Api<L2AnnouncementPolicy> = Api::all(sim.client());
    let policy: L2AnnouncementPolicy = serde_json::from_value(json!({
        "apiVersion": "portway.dev/v1alpha1", "kind": "L2AnnouncementPolicy",
        "metadata": {"name": "edge"},
        "spec": {"pools": ["lan"], "nodeSelectors": selecting(target)}
    }))
    .expect("policy");
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("create policy");
    answered_by(&lab, target, "the node the policy selects answers ARP").await;
    let name = Lab::name(target);
    eventually("announced-by follows", Duration::from_secs(10), || async {
        (announced_by(&api).await.as_deref() == Some(name.as_str())).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| assert_eq!(lab.ndisc6(VIP6), vec![Lab::mac(target)]));

    let edit = |spec: serde_json::Value| {
        let policies = policies.clone();
        async move {
            policies
                .patch(
                    "edge",
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"spec": spec})),
                )
                .await
                .expect("edit policy");
        }
    };
    edit(json!({"nodeSelectors": selecting(third)})).await;
    answered_by(&lab, third, "the edited selector moves the address").await;

    // Only on an interface the LAN is not on: the owner answers there, the router gets
    // no answer.
    tokio::task::block_in_place(|| lab.add_side_link(third, "side0", "192.0.2.2/24"));
    edit(json!({"interfaces": ["side0"]})).await;
    let side = Lab::name(third);
    eventually(
        "the owner answers on side0 only",
        Duration::from_secs(20),
        || async {
            tokio::task::block_in_place(|| {
                (lab.arping_from(&side, "side0p", VIP4).len() == 1
                    && lab.arping(VIP4).is_empty()
                    && lab.ndisc6(VIP6).is_empty())
                .then_some(())
            })
        },
    )
    .await;

    // A selector no node matches: nobody announces, and the Service says why.
    edit(json!({"nodeSelectors": [{"matchLabels": {"zone": "nowhere"}}], "interfaces": null}))
        .await;
    let events: Api<Event> = Api::namespaced(sim.client(), "default");
    let warning = eventually(
        "a NotSelectedByPolicy Warning on the Service",
        Duration::from_secs(20),
        || async {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("NotSelectedByPolicy")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
                })
        },
    )
    .await;
    let note = warning.note.unwrap_or_default();
    assert!(note.contains("L2AnnouncementPolicy edge"), "{note}");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    tokio::task::block_in_place(|| {
        assert!(
            lab.wait(Duration::from_secs(10), || lab.arping(VIP4).is_empty()),
            "nobody answers when the policy selects no node"
        )
    });

    // The policy deleted: the file's l2 section alone, and its owner, again.
    policies
        .delete("edge", &DeleteParams::default())
        .await
        .expect("delete policy");
    answered_by(&lab, owner, "the file's owner answers again").await;
    drop(lab);
    sim.shutdown().await;
}
