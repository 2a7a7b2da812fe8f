//! `portway speaker` in-process against the test world (`PORTWAY_TEST_CLUSTER`).
//!
//! - L2: it picks up an l2 Service's address, wins the election on its node, writes
//!   `portway.dev/announced-by` with an event, and removes the annotation when nobody can
//!   serve the address any more.
//! - BGP: against gobgpd in a network namespace joined to the host by a veth pair, the
//!   speaker advertises the bgp-class addresses this node may serve (Cluster: all; Local:
//!   only with a ready endpoint here), withdraws on Service delete and endpoint loss, and
//!   sends Cease on shutdown. The MD5 password comes from a Secret.
//!
//! Both need root (a veth pair; a namespace and gobgpd for BGP): skipped with a reason
//! otherwise, failed instead under PORTWAY_REQUIRE_PRIVILEGED=1.

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use portway::config::Config;
use portway_tests::{BGP, L2, SimNode, TestCluster, eventually, svc};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

mod gobgp_router;
use gobgp_router::*;

/// A veth pair with an address, removed on drop: the speaker needs a broadcast-capable
/// interface in the VIP's subnet to be eligible.
struct Veth(String);

impl Veth {
    fn create(name: &str, cidr: &str) -> Result<Veth, String> {
        let run = |args: &[&str]| -> Result<(), String> {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let peer = format!("{name}p");
        let _ = run(&["link", "del", name]);
        run(&["link", "add", name, "type", "veth", "peer", "name", &peer])?;
        let v = Veth(name.to_string());
        run(&["addr", "add", cidr, "dev", name])?;
        run(&["link", "set", name, "up"])?;
        run(&["link", "set", &peer, "up"])?;
        Ok(v)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_announces_and_says_so_on_the_service() {
    let name = format!("pwt{}", std::process::id() % 100_000);
    let _veth = match Veth::create(&name, "10.199.77.1/24") {
        Ok(v) => v,
        Err(e) => {
            if portway_tests::privileged("speaker e2e (needs root for a veth pair)", Some(e))
                .is_err()
            {
                return;
            }
            unreachable!("privileged() panics when required");
        }
    };
    let sim = TestCluster::start().await.expect("cluster");
    sim.add_node(SimNode::new("n1").ipv4("127.0.0.1"))
        .await
        .expect("node");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let config = Config::from_yaml(&format!(
        "pools:\n- name: lan\n  addresses: [10.199.77.64/28]\nl2:\n  pools: [lan]\n  gossipPort: {port}\n"
    ))
    .expect("config");
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    api.create(&PostParams::default(), &svc("web").class(L2).build())
        .await
        .expect("create");
    // The controller's part, done by hand: publish the allocated address.
    let status =
        serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.199.77.70"}]}}});
    api.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    // A Service with no ready endpoint is not announced (nobody could serve it).
    sim.set_endpoints("default", "web", &["n1"])
        .await
        .expect("endpoints");

    portway_tests::init_tracing();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let client = sim
        .client_as("system:serviceaccount:portway-system:portway-speaker")
        .await
        .expect("speaker client");
    let speaker = tokio::spawn(portway::speaker::run_with(
        client,
        config,
        "n1".into(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let by = eventually(
        "the announced-by annotation",
        Duration::from_secs(20),
        || async {
            api.get("web")
                .await
                .ok()?
                .metadata
                .annotations?
                .get("portway.dev/announced-by")
                .cloned()
        },
    )
    .await;
    assert_eq!(by, "n1");
    let events: Api<Event> = Api::namespaced(sim.client(), "default");
    // The event follows the annotation write: wait for it rather than read once.
    eventually(
        "an AnnouncingFromNode event naming the VIP",
        Duration::from_secs(10),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("AnnouncingFromNode")
                        && e.note
                            .as_deref()
                            .is_some_and(|n| n.contains("10.199.77.70"))
                })
                .then_some(())
        },
    )
    .await;
    // No ready endpoint anywhere: nobody announces, and the annotation stops naming n1.
    sim.set_endpoints("default", "web", &[])
        .await
        .expect("endpoints");
    eventually(
        "the announced-by annotation removed",
        Duration::from_secs(10),
        || async {
            let svc = api.get("web").await.ok()?;
            let anns = svc.metadata.annotations.unwrap_or_default();
            (!anns.contains_key("portway.dev/announced-by")).then_some(())
        },
    )
    .await;
    let _ = stop_tx.send(());
    speaker.await.expect("join").expect("speaker ran cleanly");
    sim.shutdown().await;
}

/// Issue 20, defect 5: the speaker announces only addresses inside the l2 pools that are
/// no Node's own. A status naming an address outside the pools, or the node's InternalIP,
/// gets an `AnnounceRefused` Warning and no announcement; before the fix both were
/// announced (and annotated) like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_refuses_addresses_outside_its_pools_and_node_addresses() {
    let name = format!("pwr{}", std::process::id() % 100_000);
    let _veth = match Veth::create(&name, "10.199.78.1/24") {
        Ok(v) => v,
        Err(e) => {
            if portway_tests::privileged("speaker e2e (needs root for a veth pair)", Some(e))
                .is_err()
            {
                return;
            }
            unreachable!("privileged() panics when required");
        }
    };
    let sim = TestCluster::start().await.expect("cluster");
    sim.add_node(SimNode::new("n1").ipv4("10.199.78.5"))
        .await
        .expect("node");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port");
    // The pool holds the node's address too: the speaker must still refuse it.
    let config = Config::from_yaml(&format!(
        "pools:\n- name: lan\n  addresses: [10.199.78.0/25]\nl2:\n  pools: [lan]\n  gossipPort: {port}\n"
    ))
    .expect("config");
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    let (stop_tx, speaker) = l2_services_and_speaker(
        &sim,
        &[
            ("good", "10.199.78.70"),
            ("outside", "10.199.78.200"),
            ("nodeip", "10.199.78.5"),
        ],
        config,
    )
    .await;
    let annotation = |svc: Service| {
        svc.metadata
            .annotations
            .and_then(|a| a.get("portway.dev/announced-by").cloned())
    };
    let by = eventually("good is announced", Duration::from_secs(20), || async {
        annotation(api.get("good").await.ok()?)
    })
    .await;
    assert_eq!(by, "n1");
    let events: Api<Event> = Api::namespaced(sim.client(), "default");
    for (svc_name, ip, why) in [
        ("outside", "10.199.78.200", "no pool listed in l2.pools"),
        ("nodeip", "10.199.78.5", "an address of node n1"),
    ] {
        eventually(
            &format!("an AnnounceRefused Warning on {svc_name}"),
            Duration::from_secs(10),
            || async {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|e| {
                        e.reason.as_deref() == Some("AnnounceRefused")
                            && e.type_.as_deref() == Some("Warning")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                                == Some(svc_name)
                            && e.note
                                .as_deref()
                                .is_some_and(|n| n.contains(ip) && n.contains(why))
                    })
                    .then_some(())
            },
        )
        .await;
        let current = api.get(svc_name).await.expect("get");
        assert_eq!(
            annotation(current),
            None,
            "{svc_name} must not be announced"
        );
    }
    let _ = stop_tx.send(());
    speaker.await.expect("join").expect("speaker ran cleanly");
    sim.shutdown().await;
}

/// Issue 23: the speaker follows AddressPool and L2AnnouncementPolicy resources live. An
/// address in a pool made after the speaker started (and selected by a policy) is refused
/// first, as outside the l2 pools, and announced once the resources exist, without a
/// restart; the file's pools keep working beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_announces_from_pools_made_as_resources_without_a_restart() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::DynamicObject;
    let name = format!("pwp{}", std::process::id() % 100_000);
    let _veth = match Veth::create(&name, "10.199.79.1/24") {
        Ok(v) => v,
        Err(e) => {
            if portway_tests::privileged("speaker e2e (needs root for a veth pair)", Some(e))
                .is_err()
            {
                return;
            }
            unreachable!("privileged() panics when required");
        }
    };
    let sim = TestCluster::start().await.expect("cluster");
    sim.add_node(SimNode::new("n1").ipv4("10.199.79.5"))
        .await
        .expect("node");
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client());
    for crd in portway::crd::all() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("crd");
    }
    let pools: Api<portway::crd::AddressPool> = Api::all(sim.client());
    eventually("the CRDs served", Duration::from_secs(30), || async {
        pools.list(&ListParams::default()).await.ok().map(|_| ())
    })
    .await;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let config = Config::from_yaml(&format!(
        "pools:\n- name: lan\n  addresses: [10.199.79.0/27]\nl2:\n  pools: [lan]\n  gossipPort: {port}\n"
    ))
    .expect("config");
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    let (stop_tx, speaker) = l2_services_and_speaker(
        &sim,
        &[("file", "10.199.79.10"), ("resource", "10.199.79.100")],
        config,
    )
    .await;
    let announced_by = |name: &'static str| {
        let api = api.clone();
        async move {
            api.get(name)
                .await
                .ok()?
                .metadata
                .annotations?
                .get("portway.dev/announced-by")
                .cloned()
        }
    };
    let by = eventually("the file's pool announced", Duration::from_secs(20), || {
        announced_by("file")
    })
    .await;
    assert_eq!(by, "n1");
    let events: Api<Event> = Api::namespaced(sim.client(), "default");
    eventually(
        "a refusal before the pool exists",
        Duration::from_secs(10),
        || async {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("AnnounceRefused")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("resource")
                })
                .then_some(())
        },
    )
    .await;
    let apply = |kind: &str, plural: &str, body: Value| {
        let client = sim.client();
        let (kind, plural) = (kind.to_string(), plural.to_string());
        async move {
            let ar = kube::api::ApiResource {
                group: "portway.dev".into(),
                version: "v1alpha1".into(),
                api_version: "portway.dev/v1alpha1".into(),
                kind,
                plural,
            };
            let obj: DynamicObject = serde_json::from_value(body).expect("object");
            Api::<DynamicObject>::all_with(client, &ar)
                .create(&PostParams::default(), &obj)
                .await
                .expect("create resource");
        }
    };
    apply(
        "AddressPool",
        "addresspools",
        json!({"apiVersion": "portway.dev/v1alpha1", "kind": "AddressPool",
               "metadata": {"name": "extra"}, "spec": {"addresses": ["10.199.79.96/27"]}}),
    )
    .await;
    apply(
        "L2AnnouncementPolicy",
        "l2announcementpolicies",
        json!({"apiVersion": "portway.dev/v1alpha1", "kind": "L2AnnouncementPolicy",
               "metadata": {"name": "extra"}, "spec": {"pools": ["extra"]}}),
    )
    .await;
    let by = eventually(
        "the resource's pool announced without a restart",
        Duration::from_secs(20),
        || announced_by("resource"),
    )
    .await;
    assert_eq!(by, "n1");
    let _ = stop_tx.send(());
    speaker.await.expect("join").expect("speaker ran cleanly");
    sim.shutdown().await;
}

/// l2 Services with these status addresses, endpoints on n1, and the speaker of n1 (as its
/// ServiceAccount) running with `config`: the stop sender and the speaker's task.
async fn l2_services_and_speaker(
    sim: &TestCluster,
    services: &[(&str, &str)],
    config: Config,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    for (svc_name, ip) in services {
        api.create(&PostParams::default(), &svc(svc_name).class(L2).build())
            .await
            .expect("create");
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
        api.patch_status(svc_name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("status");
        sim.set_endpoints("default", svc_name, &["n1"])
            .await
            .expect("endpoints");
    }
    portway_tests::init_tracing();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let client = sim
        .client_as("system:serviceaccount:portway-system:portway-speaker")
        .await
        .expect("speaker client");
    let speaker = tokio::spawn(portway::speaker::run_with(
        client,
        config,
        "n1".into(),
        async {
            let _ = stop_rx.await;
        },
    ));
    (stop_tx, speaker)
}

async fn wait_prefixes(router: &Router, what: &str, want: &[&str]) {
    let start = Instant::now();
    eventually(what, Duration::from_secs(15), || async {
        (router.prefixes() == want).then_some(())
    })
    .await;
    eprintln!("{what}: {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_advertises_over_bgp_and_withdraws() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let missing = (!root).then(|| "needs root for network namespaces".to_string());
    let router = match missing.map_or_else(Router::start, Err) {
        Ok(r) => r,
        Err(e) => {
            if portway_tests::privileged("speaker BGP e2e", Some(e)).is_err() {
                return;
            }
            unreachable!("privileged() panics when required");
        }
    };
    portway_tests::init_tracing();
    let sim = TestCluster::start().await.expect("cluster");
    sim.add_node(SimNode::new("n1").ipv4(NODE_V4).ipv6(NODE_V6))
        .await
        .expect("node");
    // Another node, where some Services have their only endpoint.
    sim.add_node(SimNode::new("n2").ipv4("10.199.79.2"))
        .await
        .expect("node");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(sim.client());
    let ns = serde_json::from_value(json!({"metadata": {"name": "portway-system"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let secrets: Api<Secret> = Api::namespaced(sim.client(), "portway-system");
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("bgp-auth".into()),
            namespace: Some("portway-system".into()),
            ..Default::default()
        },
        data: Some(
            [(
                "password".to_string(),
                k8s_openapi::ByteString(PASSWORD.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let config = Config::from_yaml(&format!(
        "pools:\n- name: dc\n  addresses: [198.51.100.96/28, 2001:db8:96::/124]\n\
         - name: lan\n  addresses: [192.0.2.0/28]\n\
         bgp:\n  localASN: {NODE_ASN}\n  peers:\n  - address: {ROUTER_V4}\n    asn: {ROUTER_ASN}\n\
         \x20   holdTime: 9s\n    keepaliveTime: 3s\n    nodeSelector: {{rack: r1}}\n\
         \x20   passwordSecret: {{namespace: portway-system, name: bgp-auth, key: password}}\n\
         \x20 advertisements:\n  - pools: [dc]\n    communities: [\"64513:100\"]\n"
    ))
    .expect("config");
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    let publish = |name: &'static str, ips: &'static [&'static str]| {
        let api = api.clone();
        async move {
            let ingress: Vec<Value> = ips.iter().map(|ip| json!({ "ip": ip })).collect();
            let status = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("status");
        }
    };
    // Cluster, dual-stack: advertised by every eligible node, here too although its one
    // ready endpoint runs on n2.
    api.create(&PostParams::default(), &svc("web").class(BGP).build())
        .await
        .expect("create web");
    publish("web", &["198.51.100.97", "2001:db8:96::7"]).await;
    sim.set_endpoints("default", "web", &["n2"])
        .await
        .expect("endpoints");
    // Local with a ready endpoint on n1: advertised; Local without one here: not.
    api.create(
        &PostParams::default(),
        &svc("here").class(BGP).local().build(),
    )
    .await
    .expect("create here");
    publish("here", &["198.51.100.98"]).await;
    sim.set_endpoints("default", "here", &["n1"])
        .await
        .expect("endpoints");
    api.create(
        &PostParams::default(),
        &svc("away").class(BGP).local().build(),
    )
    .await
    .expect("create away");
    publish("away", &["198.51.100.99"]).await;
    sim.set_endpoints("default", "away", &["n2"])
        .await
        .expect("endpoints");
    // An address outside the advertised pools is never sent.
    api.create(&PostParams::default(), &svc("odd").class(BGP).build())
        .await
        .expect("create odd");
    publish("odd", &["192.0.2.5"]).await;
    sim.set_endpoints("default", "odd", &["n1"])
        .await
        .expect("endpoints");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let client = sim
        .client_as("system:serviceaccount:portway-system:portway-speaker")
        .await
        .expect("speaker client");
    let speaker = tokio::spawn(portway::speaker::run_with(
        client,
        config,
        "n1".into(),
        async {
            let _ = stop_rx.await;
        },
    ));
    // The peer's nodeSelector does not match n1 yet: no session.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !router.established(),
        "a peer that does not select the node is not dialled"
    );
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(sim.client());
    let rack = json!({"metadata": {"labels": {"rack": "r1"}}});
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&rack))
        .await
        .expect("label");
    wait_prefixes(
        &router,
        "initial advertisement",
        &["198.51.100.97/32", "198.51.100.98/32", "2001:db8:96::7/128"],
    )
    .await;
    let rib = router.rib("ipv4");
    let path = &rib["198.51.100.97/32"][0];
    assert_eq!(attr(path, 3)["nexthop"], NODE_V4, "next hop self");
    assert_eq!(
        attr(path, 8)["communities"],
        json!([(64513u32 << 16) + 100])
    );
    let v6 = router.rib("ipv6");
    assert_eq!(attr(&v6["2001:db8:96::7/128"][0], 14)["nexthop"], NODE_V6);
    assert!(
        router.established(),
        "MD5 session from the Secret's password"
    );

    // The Service event for a first advertisement.
    let events: Api<Event> = Api::namespaced(sim.client(), "default");
    eventually("AdvertisingIP event", Duration::from_secs(10), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("AdvertisingIP")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("here")
            })
            .then_some(())
    })
    .await;

    // The Local Service loses its endpoint here: withdrawn, the rest untouched.
    let age = rib["198.51.100.97/32"][0]["age"].clone();
    sim.set_endpoints("default", "here", &["n2"])
        .await
        .expect("endpoints");
    wait_prefixes(
        &router,
        "withdrawal on endpoint loss",
        &["198.51.100.97/32", "2001:db8:96::7/128"],
    )
    .await;
    assert_eq!(
        router.rib("ipv4")["198.51.100.97/32"][0]["age"],
        age,
        "kept route not re-sent"
    );
    // And comes back with it.
    sim.set_endpoints("default", "here", &["n1", "n2"])
        .await
        .expect("endpoints");
    wait_prefixes(
        &router,
        "re-advertisement",
        &["198.51.100.97/32", "198.51.100.98/32", "2001:db8:96::7/128"],
    )
    .await;
    // A Cluster Service with no ready endpoint anywhere is withdrawn (nothing would
    // answer), and advertised again when one is back.
    sim.set_endpoints("default", "web", &[])
        .await
        .expect("endpoints");
    wait_prefixes(
        &router,
        "withdrawal without endpoints",
        &["198.51.100.98/32"],
    )
    .await;
    sim.set_endpoints("default", "web", &["n2"])
        .await
        .expect("endpoints");
    wait_prefixes(
        &router,
        "back with an endpoint",
        &["198.51.100.97/32", "198.51.100.98/32", "2001:db8:96::7/128"],
    )
    .await;
    // The Service goes: both of its prefixes are withdrawn.
    api.delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    wait_prefixes(&router, "withdrawal on delete", &["198.51.100.98/32"]).await;
    // The node is excluded from load balancers: it withdraws everything, session kept.
    let exclude = json!({"metadata": {"labels":
        {"node.kubernetes.io/exclude-from-external-load-balancers": "true"}}});
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&exclude))
        .await
        .expect("label");
    wait_prefixes(&router, "withdrawal on exclusion", &[]).await;
    assert!(
        router.established(),
        "a withdrawal is a diff, not a session reset"
    );
    let include = json!({"metadata": {"labels":
        {"node.kubernetes.io/exclude-from-external-load-balancers": null}}});
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&include))
        .await
        .expect("label");
    wait_prefixes(&router, "back after inclusion", &["198.51.100.98/32"]).await;

    // Shutdown: Cease, the session goes down and the routes with it.
    let _ = stop_tx.send(());
    speaker.await.expect("join").expect("speaker ran cleanly");
    let start = Instant::now();
    eventually(
        "session down after Cease",
        Duration::from_secs(10),
        || async { (!router.established() && router.prefixes().is_empty()).then_some(()) },
    )
    .await;
    eprintln!("session down after shutdown: {:?}", start.elapsed());
    sim.shutdown().await;
}
