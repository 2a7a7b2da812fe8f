//! The defects a review against recorded device data found (issue #17), each against the
//! simulated BIG-IP that now behaves as a real one does: every test here failed on the
//! provider before its fix.
//!
//! Several use `monitor: /Common/tcp`, an existing monitor, so that what they check is not
//! hidden behind the earlier failure to create a monitor at all (defect 2).

use crate::common::{
    addresses, assert_in_sync, cluster_with_credentials, cluster_with_secret, nodes, port,
    provider, provider_with, svc, writes,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use portway_provider::{LbService, LoadBalancerProvider, Protocol, ProviderError};
use portway_sim::bigip::{BigIpSim, Role, RouteDomainDisplay};
use serde_json::{Value, json};
use std::time::Duration;

fn existing_tcp() -> Value {
    json!({"monitor": "/Common/tcp"})
}

/// The `monitor` of each pool of the partition, by pool name (as the device shows it).
fn pool_monitors(b: &BigIpSim) -> Vec<(String, Option<String>)> {
    b.objects("pool", "portway")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["monitor"].as_str().map(|m| m.trim().to_string()),
            )
        })
        .collect()
}

fn member_paths(b: &BigIpSim) -> Vec<String> {
    b.objects("pool", "portway")
        .iter()
        .flat_map(|p| {
            p["membersReference"]["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|m| m["fullPath"].as_str().map(String::from))
        .collect()
}

/// Defect 1. A pool's monitor reads back as `"/Common/tcp "` (f5-cccl's recorded GET): in
/// sync must still mean no write at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sync_means_no_write_although_the_monitor_reads_back_with_a_space() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider_with(&sim, bigip.url(), existing_tcp());
    p.ensure(&svc(), &nodes(2)).await.expect("ensure");
    assert!(
        bigip.objects("pool", "portway")[0]["monitor"]
            .as_str()
            .is_some_and(|m| m.ends_with(' ')),
        "the device adds the space"
    );
    for _ in 0..3 {
        assert_in_sync(&p, &bigip, 2).await;
    }
    sim.shutdown().await;
}

/// Defect 2. `metadata` is not a property of `ltm monitor`: every body Portway sends must be
/// one the device's schema accepts, for creates and for every drift repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_portway_writes_is_accepted_by_the_device() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider(&sim, bigip.url());
    p.ensure(&svc(), &nodes(2))
        .await
        .expect("the default TCP monitor is created");
    assert_eq!(bigip.objects("monitor/tcp", "portway").len(), 2);
    assert!(
        bigip
            .requests()
            .iter()
            .all(|r| r.body.get("metadata").is_none()),
        "no metadata anywhere"
    );
    // Drift of every kind is repaired with bodies the device accepts.
    let monitor = bigip.objects("monitor/tcp", "portway")[0]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let pool = bigip.objects("pool", "portway")[0]["name"]
        .as_str()
        .expect("name")
        .to_string();
    assert!(bigip.modify_by_hand("monitor/tcp", "portway", &monitor, json!({"interval": 30})));
    assert!(bigip.modify_by_hand(
        "pool",
        "portway",
        &pool,
        json!({"loadBalancingMode": "ratio-member"})
    ));
    bigip.reset_requests();
    p.ensure(&svc(), &nodes(3)).await.expect("repaired");
    let monitor_patch = bigip
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH" && r.path.contains("/monitor/tcp/"))
        .expect("the monitor was patched");
    assert!(
        monitor_patch.body.get("defaultsFrom").is_none(),
        "a parent cannot change (defect 7): {monitor_patch:?}"
    );
    assert_eq!(bigip.objects("monitor/tcp", "portway")[0]["interval"], 5);
    assert_in_sync(&p, &bigip, 3).await;
    sim.shutdown().await;
}

fn three_protocols() -> LbService {
    let mut s = svc();
    s.ports = vec![
        port("http", Protocol::Tcp, 80, 30080),
        port("dns", Protocol::Udp, 53, 30053),
        port("sig", Protocol::Sctp, 9000, 30900),
    ];
    s
}

/// Defect 3. A TCP monitor on a UDP or SCTP port marks every member down: those pools get no
/// monitor unless one is configured for their protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_sctp_ports_get_their_own_monitor_choice() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider_with(&sim, bigip.url(), existing_tcp());
    p.ensure(&three_protocols(), &nodes(1))
        .await
        .expect("ensure");
    let mut m = pool_monitors(&bigip);
    m.sort();
    assert_eq!(
        m,
        [
            ("pw_default_web_sctp_9000".to_string(), None),
            (
                "pw_default_web_tcp_80".to_string(),
                Some("/Common/tcp".to_string())
            ),
            ("pw_default_web_udp_53".to_string(), None),
        ]
    );
    // Configurable per protocol: a gateway ICMP monitor of Portway's for UDP.
    let bigip2 = BigIpSim::start().await.expect("bigip");
    let p2 = provider_with(
        &sim,
        bigip2.url(),
        json!({"monitor": {"udp": "gateway-icmp", "sctp": "/Common/gateway_icmp"}}),
    );
    p2.ensure(&three_protocols(), &nodes(1))
        .await
        .expect("ensure");
    let gw = bigip2.objects("monitor/gateway-icmp", "portway");
    assert_eq!(gw.len(), 1, "{gw:#?}");
    let mut m = pool_monitors(&bigip2);
    m.sort();
    assert_eq!(m[0].1.as_deref(), Some("/Common/gateway_icmp"));
    assert_eq!(
        m[2].1,
        Some(format!(
            "/portway/{}",
            gw[0]["name"].as_str().expect("name")
        ))
    );
    assert!(
        m[1].1
            .as_deref()
            .is_some_and(|t| t.starts_with("/portway/"))
    );
    sim.shutdown().await;
}

/// Defect 4. A permission denial (401 "Authorization failed: user=… resource=… verb=…") is
/// not an expired token: no new login (each would hold one of the account's 100 tokens), a
/// needs-a-fix error that names the fix (the device's message, with its user URL, stays in
/// the controller's log: issue 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permission_denial_is_needs_a_fix_without_a_new_login() {
    let sim = cluster_with_credentials("portway", "pw").await;
    let bigip = BigIpSim::start().await.expect("bigip");
    bigip.add_user(
        "portway",
        "pw",
        Role::Manager {
            partition: "portway".into(),
        },
    );
    let p = provider(&sim, bigip.url());
    for _ in 0..3 {
        let err = p.ensure(&svc(), &nodes(1)).await.expect_err("denied");
        assert!(!err.is_transient(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("may not create it") && text.contains("Administrator"),
            "{err}"
        );
        assert!(!text.contains("Authorization failed"), "{err}");
    }
    assert_eq!(bigip.logins(), 1, "one token, kept");
    assert_eq!(bigip.tokens_held("portway"), 1);
    // Once an administrator made the partition, the Manager account works.
    bigip.set_partition("portway", 0);
    p.ensure(&svc(), &nodes(1))
        .await
        .expect("a Manager may write its partition");
    assert_eq!(bigip.logins(), 1);
    sim.shutdown().await;
}

/// Defect 4. A token that is still valid is deleted before a new login replaces it (a user
/// other than `admin` holds at most 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_login_deletes_the_token_it_replaces() {
    let sim = cluster_with_credentials("portway", "pw").await;
    let bigip = BigIpSim::start().await.expect("bigip");
    bigip.add_user("portway", "pw", Role::Administrator);
    bigip.add_user("portway2", "pw2", Role::Administrator);
    let p = provider_with(
        &sim,
        bigip.url(),
        json!({"monitor": "/Common/tcp", "resyncPeriod": "1s"}),
    );
    p.ensure(&svc(), &nodes(1)).await.expect("ensure");
    assert_eq!(bigip.tokens_held("portway"), 1);
    // The Secret is rotated to another account; it is read again after a resync period.
    Api::<Secret>::namespaced(sim.client(), "portway-system")
        .patch(
            "bigip",
            &PatchParams::default(),
            // base64 of portway2 / pw2
            &Patch::Merge(json!({"data": {"username": "cG9ydHdheTI=", "password": "cHcy"}})),
        )
        .await
        .expect("rotate");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let _ = p.ensure(&svc(), &nodes(1)).await;
    assert_eq!(bigip.tokens_held("portway2"), 1);
    assert_eq!(bigip.tokens_held("portway"), 0, "the old token was deleted");
    sim.shutdown().await;
}

/// Defect 4. Calls refused together because the token expired cause one login, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_refused_together_log_in_once() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = std::sync::Arc::new(provider_with(&sim, bigip.url(), existing_tcp()));
    p.ensure(&svc(), &nodes(1)).await.expect("ensure");
    let before = bigip.logins();
    bigip.expire_tokens();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.ensure(&svc(), &nodes(1)).await })
        })
        .collect();
    for t in tasks {
        let _ = t.await.expect("task");
    }
    assert_eq!(bigip.logins() - before, 1);
    sim.shutdown().await;
}

/// Defect 5. Members carry `partition`: without it a device puts them, and the nodes they
/// create, in `/Common`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_their_nodes_stay_in_the_partition() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider_with(&sim, bigip.url(), existing_tcp());
    p.ensure(&svc(), &nodes(2)).await.expect("ensure");
    assert!(
        bigip.objects("node", "Common").is_empty(),
        "nothing in /Common"
    );
    let paths = member_paths(&bigip);
    assert_eq!(paths.len(), 4);
    assert!(
        paths.iter().all(|m| m.starts_with("/portway/")),
        "{paths:?}"
    );
    assert_eq!(addresses(&bigip, "portway"), ["10.0.0.1", "10.0.0.2"]);
    sim.shutdown().await;
}

/// Defect 5. One IP is a node once per route domain across partitions: an address that is
/// already a node elsewhere is reused (and never deleted); one held where the account cannot
/// read is reported with the device's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_is_a_node_elsewhere_is_reused_or_reported() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    bigip.set_partition("other", 0);
    bigip
        .create_by_hand(
            "node",
            json!({"name": "10.0.0.1", "partition": "other", "address": "10.0.0.1"}),
        )
        .expect("another controller's node");
    let p = provider_with(&sim, bigip.url(), existing_tcp());
    p.ensure(&svc(), &nodes(2)).await.expect("ensure");
    let mut paths = member_paths(&bigip);
    paths.sort();
    assert_eq!(
        paths,
        [
            "/other/10.0.0.1:30080",
            "/other/10.0.0.1:30443",
            "/portway/10.0.0.2:30080",
            "/portway/10.0.0.2:30443"
        ]
    );
    p.ensure_deleted(&svc()).await.expect("delete");
    assert_eq!(
        addresses(&bigip, "other"),
        ["10.0.0.1"],
        "not ours to delete"
    );
    assert!(addresses(&bigip, "portway").is_empty());

    // A Manager of `portway` cannot read `other`: the refusal is reported with the fix and
    // the address Portway asked for (the device's message stays in the log).
    let sim2 = cluster_with_credentials("portway", "pw").await;
    bigip.add_user(
        "portway",
        "pw",
        Role::Manager {
            partition: "portway".into(),
        },
    );
    let p2 = provider_with(&sim2, bigip.url(), existing_tcp());
    let err = p2
        .ensure(&svc(), &nodes(2))
        .await
        .expect_err("held elsewhere");
    assert!(
        matches!(&err, ProviderError::Invalid { reason, .. }
            if reason.contains("10.0.0.1") && reason.contains("cannot read")
                && !reason.contains("Invalid Node")),
        "{err:?}"
    );
    sim.shutdown().await;
    sim2.shutdown().await;
}

/// Defect 6. Node cleanup deletes only nodes Portway created: not one a person made in the
/// partition, nor one a member of Portway's reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cleanup_leaves_nodes_portway_did_not_create() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider_with(&sim, bigip.url(), existing_tcp());
    assert!(p.adopt(&[]).await.is_empty(), "creates the partition");
    let by_hand = |ip: &str| {
        bigip
            .create_by_hand(
                "node",
                json!({"name": ip, "partition": "portway", "address": ip}),
            )
            .expect("a person's node");
    };
    by_hand("10.9.9.9");
    p.ensure(&svc(), &nodes(2)).await.expect("ensure");
    assert!(
        addresses(&bigip, "portway").contains(&"10.9.9.9".to_string()),
        "cleanup after a change deleted the unreferenced node a person made"
    );
    assert_eq!(
        addresses(&bigip, "portway"),
        ["10.0.0.1", "10.0.0.2", "10.9.9.9"]
    );
    // A person's node that Portway's members then use, and leave again.
    by_hand("10.0.0.3");
    p.update(&svc(), &nodes(3)).await.expect("node-3 joins");
    p.update(&svc(), &nodes(1))
        .await
        .expect("nodes 2 and 3 leave");
    p.ensure_deleted(&svc()).await.expect("delete");
    assert_eq!(addresses(&bigip, "portway"), ["10.0.0.3", "10.9.9.9"]);
    sim.shutdown().await;
}

/// Defect 7. A wrong `f5.monitor` path is needs-a-fix naming `f5.monitor`, not retried as
/// transient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_monitor_path_is_needs_a_fix() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider_with(&sim, bigip.url(), json!({"monitor": "/Common/nosuch"}));
    let err = p
        .ensure(&svc(), &nodes(1))
        .await
        .expect_err("no such monitor");
    assert!(
        matches!(&err, ProviderError::Invalid { field, reason }
            if field == "f5.monitor" && reason.contains("/Common/nosuch")),
        "{err:?}"
    );
    sim.shutdown().await;
}

/// Defect 7. Profiles are compared from the expanded read (a plain GET lists none), so a
/// profile changed by hand is put back, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_changed_by_hand_is_repaired_once() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider_with(&sim, bigip.url(), existing_tcp());
    p.ensure(&svc(), &nodes(1)).await.expect("ensure");
    let name = bigip.objects("virtual", "portway")[0]["name"]
        .as_str()
        .expect("name")
        .to_string();
    assert!(bigip.modify_by_hand(
        "virtual",
        "portway",
        &name,
        json!({"profiles": [{"name": "/Common/fastL4", "context": "all"}]})
    ));
    p.ensure(&svc(), &nodes(1)).await.expect("repair");
    let v = bigip
        .objects("virtual", "portway")
        .into_iter()
        .find(|v| v["name"] == name.as_str())
        .expect("virtual");
    assert_eq!(
        v["profilesReference"]["items"][0]["fullPath"], "/Common/tcp",
        "{v}"
    );
    assert_in_sync(&p, &bigip, 1).await;
    sim.shutdown().await;
}

/// Defect 7. In a partition whose `defaultRouteDomain` is 2 the device writes addresses with
/// or without `%2`; either way, in sync is no write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_domain_addresses_compare_with_the_default_stripped() {
    for display in [
        RouteDomainDisplay::Explicit,
        RouteDomainDisplay::StripDefault,
    ] {
        let sim = cluster_with_secret().await;
        let bigip = BigIpSim::start().await.expect("bigip");
        bigip.set_partition("portway", 2);
        bigip.set_route_domain_display(display);
        let p = provider_with(&sim, bigip.url(), existing_tcp());
        p.ensure(&svc(), &nodes(2)).await.expect("ensure");
        bigip.reset_requests();
        p.ensure(&svc(), &nodes(2)).await.expect("ensure");
        assert!(
            writes(&bigip).is_empty(),
            "{display:?}: {:#?}",
            writes(&bigip)
        );
        p.update(&svc(), &nodes(1)).await.expect("node-2 leaves");
        p.ensure_deleted(&svc()).await.expect("delete");
        assert!(
            bigip.objects("node", "portway").is_empty(),
            "{display:?}: {:#?}",
            bigip.objects("node", "portway")
        );
        sim.shutdown().await;
    }
}

/// A transaction the device dropped after its `timeoutSeconds` is a transient failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_transaction_is_transient() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    bigip.set_transaction_timeout(Duration::ZERO);
    let p = provider(&sim, bigip.url());
    let err = p.ensure(&svc(), &nodes(1)).await.expect_err("expired");
    assert!(err.is_transient(), "{err:?}");
    bigip.set_transaction_timeout(Duration::from_secs(120));
    p.ensure(&svc(), &nodes(1)).await.expect("next try");
    sim.shutdown().await;
}
