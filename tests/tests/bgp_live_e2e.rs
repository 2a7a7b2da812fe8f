//! BGPPeer and BGPAdvertisement resources changed live in `portway speaker` (issue 23),
//! against gobgpd with two neighbour configurations (the node speaks from two addresses
//! to two router addresses): a peer created with the API starts its session without a
//! speaker restart; a changed password Secret restarts only that peer's session (the
//! other keeps its uptime); an advertisement's new community reaches gobgpd's RIB without
//! a session restart; a deleted peer ends its session; each peer's status shows this
//! node's session state (and why, when its Secret is missing).
//!
//! Needs root (a namespace and gobgpd): skipped with a reason otherwise, failed instead
//! under PORTWAY_REQUIRE_PRIVILEGED=1.

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use portway::config::Config;
use portway::crd::{BGPAdvertisement, BGPPeer};
use portway_tests::{BGP, SimNode, TestCluster, eventually, svc};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

mod gobgp_router;
use gobgp_router::*;

/// The node's second address and the router's second one: peer B.
const NODE_B: &str = "10.199.78.11";
const ROUTER_B: &str = "10.199.78.3";
const PASSWORD_B: &str = "other-md5";
const T: Duration = Duration::from_secs(20);

fn secret(name: &str, password: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "portway-system"},
        "data": {"password": k8s_openapi::ByteString(password.as_bytes().to_vec())},
    }))
    .expect("secret")
}

fn peer(name: &str, router: &str, node: &str, secret: &str) -> BGPPeer {
    serde_json::from_value(json!({
        "apiVersion": "portway.dev/v1alpha1", "kind": "BGPPeer",
        "metadata": {"name": name},
        "spec": {"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": router,
                 "sourceAddress": node,
                 "passwordSecret": {"name": secret, "namespace": "portway-system"}},
    }))
    .expect("peer")
}

/// gobgpd's view of the neighbour at `addr`: (Established, its uptime stamp).
fn session(router: &Router, addr: &str) -> (bool, Value) {
    let n = router.gobgp(&["neighbor", addr]).unwrap_or(Value::Null);
    (
        n["state"]["session_state"].as_i64() == Some(6),
        n["timers"]["state"]["uptime"].clone(),
    )
}

/// This node's entry in the BGPPeer's status.
async fn status_of(peers: &Api<BGPPeer>, name: &str) -> Option<(String, Option<String>)> {
    let p = peers.get(name).await.ok()?;
    let s = p.status?.sessions.into_iter().find(|s| s.node == "n1")?;
    Some((s.state, s.message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bgp_peers_and_advertisements_change_live_one_session_at_a_time() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let missing = (!root).then(|| "needs root for network namespaces".to_string());
    let start = || Router::start_with(&[(NODE_V4, PASSWORD), (NODE_B, PASSWORD_B)], &[ROUTER_B]);
    let router = match missing.map_or_else(start, Err) {
        Ok(r) => r,
        Err(e) => {
            if portway_tests::privileged("BGP live resources e2e", Some(e)).is_err() {
                return;
            }
            unreachable!("privileged() panics when required");
        }
    };
    portway_tests::init_tracing();
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .add_node(SimNode::new("n1").ipv4(NODE_V4).ipv6(NODE_V6))
        .await
        .expect("node");
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    for crd in portway::crd::all() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("crd");
    }
    let peers: Api<BGPPeer> = Api::all(cluster.client());
    let advs: Api<BGPAdvertisement> = Api::all(cluster.client());
    eventually("the CRDs served", T, || async {
        advs.list(&ListParams::default()).await.ok().map(|_| ())
    })
    .await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.client());
    let ns = serde_json::from_value(json!({"metadata": {"name": "portway-system"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), "portway-system");
    secrets
        .create(&PostParams::default(), &secret("pw-b", PASSWORD_B))
        .await
        .expect("secret");
    // The file has a bgp section without peers: every peer is a resource.
    let config = Config::from_yaml(&format!(
        "pools:\n- name: dc\n  addresses: [198.51.100.96/28]\nbgp:\n  localASN: {NODE_ASN}\n"
    ))
    .expect("config");
    let api: Api<Service> = Api::namespaced(cluster.client(), "default");
    api.create(&PostParams::default(), &svc("web").class(BGP).build())
        .await
        .expect("create web");
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.97"}]}}});
    api.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    cluster
        .set_endpoints("default", "web", &["n1"])
        .await
        .expect("endpoints");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let client = cluster
        .client_as("system:serviceaccount:portway-system:portway-speaker")
        .await
        .expect("speaker client");
    let opts = portway::speaker::SpeakerOptions {
        password_refresh: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let speaker = tokio::spawn(portway::speaker::run_with_options(
        client,
        config,
        "n1".into(),
        std::sync::Arc::new(portway::speaker::metrics::SpeakerMetrics::new()),
        opts,
        async {
            let _ = stop_rx.await;
        },
    ));

    // Peer B and the advertisement, created with the API: a session, the route.
    peers
        .create(&PostParams::default(), &peer("b", ROUTER_B, NODE_B, "pw-b"))
        .await
        .expect("peer b");
    let adv: BGPAdvertisement = serde_json::from_value(json!({
        "apiVersion": "portway.dev/v1alpha1", "kind": "BGPAdvertisement",
        "metadata": {"name": "dc"}, "spec": {"pools": ["dc"]},
    }))
    .expect("adv");
    advs.create(&PostParams::default(), &adv)
        .await
        .expect("adv");
    eventually("peer B's session and route", T, || async {
        (session(&router, NODE_B).0 && router.prefixes() == ["198.51.100.97/32"]).then_some(())
    })
    .await;
    eventually("B's status Established", T, || async {
        (status_of(&peers, "b").await? == ("Established".to_string(), None)).then_some(())
    })
    .await;
    let b_up = session(&router, NODE_B).1;
    eprintln!("B's uptime stamp: {b_up}");

    // Peer A whose Secret is missing: left out, its status says why, B untouched.
    peers
        .create(
            &PostParams::default(),
            &peer("a", ROUTER_V4, NODE_V4, "pw-a"),
        )
        .await
        .expect("peer a");
    let (state, message) = eventually("A's status names the missing Secret", T, || async {
        status_of(&peers, "a")
            .await
            .filter(|(_, m)| m.as_deref().is_some_and(|m| m.contains("pw-a")))
    })
    .await;
    assert_eq!(state, "Idle");
    assert!(
        !message.unwrap_or_default().contains(PASSWORD),
        "no password in status"
    );
    // The Secret appears: A starts, B keeps its session.
    secrets
        .create(&PostParams::default(), &secret("pw-a", PASSWORD))
        .await
        .expect("secret a");
    eventually("A established once its Secret exists", T, || async {
        session(&router, NODE_V4).0.then_some(())
    })
    .await;
    assert_eq!(
        session(&router, NODE_B),
        (true, b_up.clone()),
        "B kept its session"
    );

    // A's password changes (to one gobgpd does not know): A's session ends at once
    // (Cease, no hold-time wait), B stays.
    let wrong = json!({"data": {"password": k8s_openapi::ByteString(b"changed-md5".to_vec())}});
    secrets
        .patch("pw-a", &PatchParams::default(), &Patch::Merge(&wrong))
        .await
        .expect("patch secret");
    eventually("A's session restarted by the new password", T, || async {
        (!session(&router, NODE_V4).0).then_some(())
    })
    .await;
    assert_eq!(
        session(&router, NODE_B),
        (true, b_up.clone()),
        "B untouched by A's password"
    );
    // Back to the password the router knows: A is up again.
    let right =
        json!({"data": {"password": k8s_openapi::ByteString(PASSWORD.as_bytes().to_vec())}});
    secrets
        .patch("pw-a", &PatchParams::default(), &Patch::Merge(&right))
        .await
        .expect("patch secret");
    eventually("A back with the right password", T, || async {
        session(&router, NODE_V4).0.then_some(())
    })
    .await;
    eventually("A's status Established", T, || async {
        (status_of(&peers, "a").await?.0 == "Established").then_some(())
    })
    .await;
    let a_up = session(&router, NODE_V4).1;

    // A community added to the advertisement reaches the RIB; no session restarts.
    let community = json!({"spec": {"communities": ["64513:200"]}});
    advs.patch("dc", &PatchParams::default(), &Patch::Merge(&community))
        .await
        .expect("patch adv");
    eventually("the community in gobgpd's RIB", T, || async {
        let rib = router.rib("ipv4");
        let paths = rib.get("198.51.100.97/32")?.as_array()?.clone();
        paths
            .iter()
            .all(|p| attr(p, 8)["communities"] == json!([(64513u32 << 16) + 200]))
            .then_some(())
    })
    .await;
    assert_eq!(
        session(&router, NODE_B),
        (true, b_up.clone()),
        "B not restarted"
    );
    assert_eq!(session(&router, NODE_V4), (true, a_up), "A not restarted");

    // B deleted: its session ends (Cease), A stays.
    peers
        .delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    eventually("B's session ended", Duration::from_secs(5), || async {
        (!session(&router, NODE_B).0).then_some(())
    })
    .await;
    assert!(session(&router, NODE_V4).0, "A untouched by B's deletion");

    let _ = stop_tx.send(());
    speaker.await.expect("join").expect("speaker ran cleanly");
    cluster.shutdown().await;
}
