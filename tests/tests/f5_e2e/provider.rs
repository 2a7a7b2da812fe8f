//! The f5 provider alone against the simulated BIG-IP (request sequences from its log) and
//! the test world (credentials Secret), plus wiremock for exact error handling.

use crate::common::{
    addresses, assert_in_sync, cluster_with_secret, nodes, provider, provider_in_mode,
    provider_with_resync, svc, writes,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use portway_provider::{LoadBalancerProvider, ProviderError};
use portway_sim::bigip::BigIpSim;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_update_noop_drift_delete() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider(&sim, bigip.url());
    let s = svc();

    // Create: login, partition, reads, one transaction (2 nodes, 2 monitors, 2 pools, 2
    // virtuals), commit; status after commit.
    let status = p.ensure(&s, &nodes(2)).await.expect("ensure");
    assert_eq!(status.ingress[0].ip.to_string(), "203.0.113.10");
    let w = writes(&bigip);
    assert_eq!(w[0], "POST /mgmt/tm/auth/partition", "{w:#?}");
    assert_eq!(w[1], "POST /mgmt/tm/transaction", "{w:#?}");
    assert_eq!(
        w.iter().filter(|x| x.starts_with("tx ")).count(),
        8,
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|x| x.starts_with("PATCH /mgmt/tm/transaction/")),
        "{w:#?}"
    );
    let logins = bigip
        .requests()
        .iter()
        .filter(|r| r.path == "/mgmt/shared/authn/login")
        .count();
    assert_eq!(logins, 1);
    let virtuals = bigip.objects("virtual", "portway");
    assert_eq!(virtuals.len(), 2);
    assert_eq!(
        virtuals[0]["destination"]
            .as_str()
            .map(|d| d.starts_with("/portway/203.0.113.10:")),
        Some(true)
    );
    assert_eq!(virtuals[0]["sourceAddressTranslation"]["type"], "automap");
    let pools = bigip.objects("pool", "portway");
    assert!(
        pools
            .iter()
            .all(|p| p["membersReference"]["items"].as_array().map(Vec::len) == Some(2))
    );
    assert_eq!(bigip.objects("node", "portway").len(), 2);

    // No change: zero writes.
    bigip.reset_requests();
    p.ensure(&s, &nodes(2)).await.expect("ensure");
    assert!(writes(&bigip).is_empty(), "{:#?}", writes(&bigip));

    // A node more: its node (tagged as Portway's), then one PATCH per pool, no transaction.
    bigip.reset_requests();
    p.update(&s, &nodes(3)).await.expect("update");
    let w = writes(&bigip);
    assert_eq!(
        w.iter()
            .filter(|x| x.starts_with("PATCH /mgmt/tm/ltm/pool/"))
            .count(),
        2,
        "{w:#?}"
    );
    assert_eq!(w[0], "POST /mgmt/tm/ltm/node", "{w:#?}");
    assert!(!w.iter().any(|x| x.contains("transaction")), "{w:#?}");
    // Members go by name and partition only: BIG-IP refuses `address` in a member PATCH.
    for r in bigip
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.starts_with("/mgmt/tm/ltm/pool/"))
    {
        let ms = r.body["members"].as_array().expect("members");
        assert_eq!(ms.len(), 3, "{r:?}");
        assert!(
            ms.iter().all(|m| m.get("address").is_none()
                && m["name"].is_string()
                && m["partition"] == "portway"),
            "{r:?}"
        );
    }
    assert!(
        bigip
            .objects("pool", "portway")
            .iter()
            .all(|p| p["membersReference"]["items"].as_array().map(Vec::len) == Some(3))
    );
    // PATCH kept the monitor.
    assert!(bigip.objects("pool", "portway").iter().all(|p| {
        p["monitor"]
            .as_str()
            .is_some_and(|m| m.starts_with("/portway/"))
    }));

    // Drift: a virtual deleted by hand is restored on the next pass.
    let name = virtuals[0]["name"].as_str().expect("name").to_string();
    assert!(bigip.delete_by_hand("virtual", "portway", &name));
    p.ensure(&s, &nodes(3)).await.expect("repair");
    assert_eq!(bigip.objects("virtual", "portway").len(), 2);

    // Token expiry mid-flight: exactly one re-login.
    bigip.expire_tokens();
    bigip.reset_requests();
    p.ensure(&s, &nodes(3)).await.expect("after expiry");
    assert_eq!(
        bigip
            .requests()
            .iter()
            .filter(|r| r.path == "/mgmt/shared/authn/login")
            .count(),
        1
    );

    // 503 is transient; the next call goes through.
    bigip.fail_next_503(1);
    let err = p.ensure(&s, &nodes(3)).await.expect_err("503");
    assert!(err.is_transient(), "{err}");
    bigip.fail_next_mcpd(1);
    assert!(
        p.ensure(&s, &nodes(3))
            .await
            .expect_err("mcpd")
            .is_transient()
    );
    p.ensure(&s, &nodes(3)).await.expect("recovered");

    // Delete: one transaction; nothing of ours left, nodes collected.
    p.ensure_deleted(&s).await.expect("delete");
    assert!(bigip.objects("virtual", "portway").is_empty());
    assert!(bigip.objects("pool", "portway").is_empty());
    assert!(bigip.objects("monitor/tcp", "portway").is_empty());
    assert!(bigip.objects("node", "portway").is_empty());
    assert!(
        bigip.objects("virtual-address", "portway").is_empty(),
        "autoDelete removed the address"
    );
    p.ensure_deleted(&s).await.expect("idempotent");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(bigip.saves() >= 1, "configuration saved");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resync_timer_sweeps_orphans_when_no_service_is_left() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    // A controller made the objects of default/web, then went away; the Service was
    // deleted meanwhile (it does not exist in the cluster).
    let before = provider(&sim, bigip.url());
    before.ensure(&svc(), &nodes(2)).await.expect("ensure");
    drop(before);
    assert_eq!(bigip.objects("virtual", "portway").len(), 2);
    // The next controller starts while the device is busy, so its start-up sweep fails,
    // and it has no f5 Service to reconcile: only the timer can clean up.
    let after = provider_with_resync(&sim, bigip.url(), "1s");
    bigip.fail_next_503(3);
    assert!(after.adopt(&[]).await.is_empty());
    assert_eq!(
        bigip.objects("virtual", "portway").len(),
        2,
        "start-up sweep failed"
    );
    // Nodes are collected after the transaction that removes the virtuals, pools and
    // monitors, so every collection is awaited, not only the virtuals.
    let start = std::time::Instant::now();
    loop {
        let left: Vec<&str> = ["virtual", "pool", "monitor/tcp", "node"]
            .into_iter()
            .filter(|c| !bigip.objects(c, "portway").is_empty())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "orphans never swept: {left:?} left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim.shutdown().await;
}

/// The credentials Secret is read once per resync period, not on every reconcile, and at
/// once again after the device refuses what it holds (a rotated password is picked up on
/// the next retry, not an hour later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_cached_until_the_device_refuses_them() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider(&sim, bigip.url());
    p.ensure(&svc(), &nodes(2)).await.expect("ensure");
    let secrets: Api<Secret> = Api::namespaced(sim.client(), "portway-system");
    secrets
        .delete("bigip", &Default::default())
        .await
        .expect("delete secret");
    // The Secret is gone, yet the next reconciles work from the cached credentials.
    bigip.expire_tokens();
    p.update(&svc(), &nodes(3))
        .await
        .expect("cached credentials");
    // The password is rotated on the device: the login is refused and names the Secret.
    bigip.set_credentials("admin", "rotated");
    bigip.expire_tokens();
    let err = p.update(&svc(), &nodes(2)).await.expect_err("refused");
    assert!(
        matches!(&err, ProviderError::Invalid { field, .. } if field == "f5.credentialsSecret"),
        "{err:?}"
    );
    // The Secret is written with the new password: the next retry reads it at once.
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "bigip"},
        "stringData": {"username": "admin", "password": "rotated"}}))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    p.update(&svc(), &nodes(2))
        .await
        .expect("new credentials read");
    sim.shutdown().await;
}

/// At shutdown the provider deletes its token (a BIG-IP user may hold at most 100, and
/// each would otherwise live out its timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deletes_the_session_token() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider(&sim, bigip.url());
    p.ensure(&svc(), &nodes(1)).await.expect("ensure");
    bigip.reset_requests();
    p.shutdown().await;
    let calls: Vec<String> = bigip
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        matches!(calls.as_slice(), [c] if c.starts_with("DELETE /mgmt/shared/authz/tokens/")),
        "{calls:?}"
    );
    sim.shutdown().await;
}

/// The resync timer runs only on the replica that leads: until the controller calls `adopt`
/// the provider sends nothing to the device, then it resyncs every period, and `shutdown`
/// stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_replica_makes_no_requests_until_adopted() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider_with_resync(&sim, bigip.url(), "300ms");
    // Three resync periods as a standby: not even a login.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(bigip.requests().is_empty(), "{:#?}", bigip.requests());
    // Leading: adopt sweeps at once, and the timer reads the partition every period.
    assert!(p.adopt(&[]).await.is_empty());
    // A second adopt (leadership regained) does not start a second timer.
    assert!(p.adopt(&[]).await.is_empty());
    bigip.reset_requests();
    let reads = |b: &BigIpSim| {
        b.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/mgmt/tm/ltm/virtual")
            .count()
    };
    let start = std::time::Instant::now();
    while reads(&bigip) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the timer never resynced: {:#?}",
            bigip.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One timer, not two: about ten sweeps in ten periods (two timers would make twenty).
    bigip.reset_requests();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let sweeps = reads(&bigip);
    assert!(sweeps <= 14, "{sweeps} sweeps in ten periods");
    // Shut down: no request after the token is deleted.
    p.shutdown().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    bigip.reset_requests();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(bigip.requests().is_empty(), "{:#?}", bigip.requests());
    // Adopt after shutdown does not bring the timer back.
    let _ = p.adopt(&[]).await;
    bigip.reset_requests();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(reads(&bigip), 0, "{:#?}", bigip.requests());
    sim.shutdown().await;
}

/// The tags a provider puts on the objects of `svc()`.
fn tags() -> serde_json::Value {
    json!(format!(
        "portway-service=default/web portway-uid={}",
        svc().uid
    ))
}

/// A create that meets an object made between the read and the write (409 "already exists")
/// is not an error: the provider reads again and converges the object with a PATCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_created_meanwhile_is_converged_with_a_patch() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider(&sim, bigip.url());
    // Another writer (a previous leader) creates the port-80 pool, in another state, after
    // our reads and before our transaction.
    let name = portway_f5::object_name("default", "web", "TCP", 80, false);
    bigip.create_before_next_write(
        "pool",
        json!({"name": name, "partition": "portway", "monitor": "/Common/tcp",
            "loadBalancingMode": "least-connections-member",
            "members": [{"name": "10.0.0.9:30080", "partition": "portway"}], "description": tags()}),
    );
    p.ensure(&svc(), &nodes(2))
        .await
        .expect("converged, no error");
    let w = writes(&bigip);
    let opened: Vec<&String> = w
        .iter()
        .filter(|x| *x == "POST /mgmt/tm/transaction")
        .collect();
    assert_eq!(opened.len(), 2, "one failed transaction, one retry: {w:#?}");
    assert!(
        w.iter()
            .any(|x| x == &format!("tx PATCH /mgmt/tm/ltm/pool/~portway~{name}")),
        "the existing pool is PATCHed: {w:#?}"
    );
    let pools = bigip.objects("pool", "portway");
    assert_eq!(pools.len(), 2);
    for pool in &pools {
        assert_eq!(pool["loadBalancingMode"], "round-robin", "{pool}");
        // Read back with the device's trailing space.
        assert_eq!(
            pool["monitor"],
            format!("/portway/{}_tcp ", pool["name"].as_str().expect("name")),
            "{pool}"
        );
        let mut ms: Vec<&str> = pool["membersReference"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|m| m["address"].as_str())
            .collect();
        ms.sort();
        assert_eq!(ms, ["10.0.0.1", "10.0.0.2"], "{pool}");
    }
    assert_eq!(bigip.objects("virtual", "portway").len(), 2);
    // The other writer's node is not Portway's (no node tag): it stays.
    assert_eq!(
        addresses(&bigip, "portway"),
        ["10.0.0.1", "10.0.0.2", "10.0.0.9"]
    );
    // In sync now.
    assert_in_sync(&p, &bigip, 2).await;
    sim.shutdown().await;
}

/// A 404 on a delete is success: an object removed by hand between the read and the
/// commit fails the transaction, and the provider reads again and deletes what is left,
/// for a port removed from the Service and for the whole Service alike; a pool gone under
/// a member PATCH is recreated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_deleted_meanwhile_is_not_an_error() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider(&sim, bigip.url());
    p.ensure(&svc(), &nodes(2)).await.expect("ensure");
    // Port 443 goes; its virtual is deleted by hand just before our transaction.
    let https = portway_f5::object_name("default", "web", "TCP", 443, false);
    bigip.delete_before_next_write("virtual", "portway", &https);
    let mut one_port = svc();
    one_port.ports.truncate(1);
    p.ensure(&one_port, &nodes(2))
        .await
        .expect("the missing virtual is no error");
    assert_eq!(bigip.objects("virtual", "portway").len(), 1);
    assert_eq!(bigip.objects("pool", "portway").len(), 1);
    // A member change while the pool vanishes by hand: its PATCH meets a 404, and the
    // pool is recreated from a fresh read.
    let http_pool = portway_f5::object_name("default", "web", "TCP", 80, false);
    bigip.delete_before_next_write("pool", "portway", &http_pool);
    p.ensure(&one_port, &nodes(3))
        .await
        .expect("the missing pool is recreated, no error");
    let pools = bigip.objects("pool", "portway");
    assert_eq!(pools.len(), 1);
    assert_eq!(
        pools[0]["membersReference"]["items"]
            .as_array()
            .map_or(0, Vec::len),
        3
    );
    // Deleting the Service while its last virtual vanishes by hand.
    let http = portway_f5::object_name("default", "web", "TCP", 80, false);
    bigip.delete_before_next_write("virtual", "portway", &http);
    p.ensure_deleted(&one_port).await.expect("deleted");
    for collection in ["virtual", "pool", "monitor/tcp"] {
        assert!(
            bigip.objects(collection, "portway").is_empty(),
            "{collection} left"
        );
    }
    sim.shutdown().await;
}

/// An object of our name that is not ours (no tag) is never taken over: after one re-read
/// the 409 is reported as needs-a-fix naming the object (not with the device's message),
/// without a retry loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_of_our_name_that_is_not_ours_is_reported_after_one_reread() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider(&sim, bigip.url());
    assert!(p.adopt(&[]).await.is_empty(), "creates the partition");
    let base = portway_f5::object_name("default", "web", "TCP", 443, false);
    let name = portway_f5::monitor_name(&base, portway_f5::MonitorKind::Tcp);
    bigip
        .create_by_hand(
            "monitor/tcp",
            json!({"name": name, "partition": "portway", "interval": 30}),
        )
        .expect("created by hand");
    bigip.reset_requests();
    let err = p.ensure(&svc(), &nodes(1)).await.expect_err("not ours");
    assert!(
        matches!(&err, ProviderError::Invalid { reason, .. }
            if reason.contains("not tagged") && reason.contains(&name)
                && !reason.contains("01020066")),
        "{err:?}"
    );
    let w = writes(&bigip);
    assert_eq!(
        w.iter()
            .filter(|x| *x == "POST /mgmt/tm/transaction")
            .count(),
        2,
        "{w:#?}"
    );
    // Untouched, and nothing else of ours was created (transactions are all-or-nothing).
    let monitors = bigip.objects("monitor/tcp", "portway");
    assert_eq!(monitors.len(), 1);
    assert_eq!(monitors[0]["interval"], 30);
    assert!(bigip.objects("pool", "portway").is_empty());
    sim.shutdown().await;
}

/// A virtual whose mask and source drifted is repaired by one PATCH; the next ensure writes
/// nothing (they used to be compared but not sent, so every ensure wrote).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drifted_mask_and_source_are_repaired_once() {
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider(&sim, bigip.url());
    p.ensure(&svc(), &nodes(1)).await.expect("ensure");
    let name = portway_f5::object_name("default", "web", "TCP", 80, false);
    assert!(bigip.modify_by_hand(
        "virtual",
        "portway",
        &name,
        json!({"mask": "255.255.255.0", "source": "10.0.0.0/8"}),
    ));
    bigip.reset_requests();
    p.ensure(&svc(), &nodes(1)).await.expect("repair");
    let tx: Vec<_> = bigip
        .requests()
        .into_iter()
        .filter(|r| r.in_transaction)
        .collect();
    assert_eq!(tx.len(), 1, "{tx:#?}");
    assert_eq!(
        (tx[0].method.as_str(), tx[0].path.as_str()),
        (
            "PATCH",
            format!("/mgmt/tm/ltm/virtual/~portway~{name}").as_str()
        )
    );
    assert_eq!(tx[0].body["mask"], "255.255.255.255");
    assert_eq!(tx[0].body["source"], "0.0.0.0/0");
    let v = bigip
        .objects("virtual", "portway")
        .into_iter()
        .find(|v| v["name"] == name.as_str())
        .expect("virtual");
    assert_eq!(
        (v["mask"].as_str(), v["source"].as_str()),
        (Some("255.255.255.255"), Some("0.0.0.0/0"))
    );
    assert_in_sync(&p, &bigip, 1).await;
    sim.shutdown().await;
}

/// In `cluster` member mode the pool members are the endpoints the controller hands over
/// (`LbService::endpoints`, ports matched by name); the provider reads no EndpointSlice
/// itself, and says it wants them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_members_are_the_endpoints_handed_over() {
    use portway_provider::{EndpointsUse, LbEndpoint, LbEndpointPort, Protocol};
    let sim = cluster_with_secret().await;
    let bigip = BigIpSim::start().await.expect("bigip");
    let p = provider_in_mode(&sim, bigip.url(), "1h", "cluster");
    assert_eq!(p.endpoints_use(), EndpointsUse::Always);
    let endpoint = |ip: &str, ready: Option<bool>| LbEndpoint {
        addresses: vec![ip.parse().expect("ip")],
        ready,
        serving: true,
        pod: true,
        ports: vec![
            LbEndpointPort {
                name: "http".into(),
                port: 8080,
                protocol: Some(Protocol::Tcp),
            },
            LbEndpointPort {
                name: "https".into(),
                port: 8443,
                protocol: Some(Protocol::Tcp),
            },
        ],
        ..Default::default()
    };
    let mut web = svc();
    web.endpoints = vec![endpoint("10.42.0.1", Some(true))];
    assert!(p.adopt(std::slice::from_ref(&web)).await.is_empty());
    p.ensure(&web, &nodes(1)).await.expect("ensure");
    let members = |b: &BigIpSim| -> Vec<usize> {
        b.objects("pool", "portway")
            .iter()
            .map(|pool| {
                pool["membersReference"]["items"]
                    .as_array()
                    .map_or(0, Vec::len)
            })
            .collect()
    };
    assert_eq!(members(&bigip), [1, 1], "one pod behind each port");
    // A second pod is ready, a third is not, a fourth is of unknown state (counted, as the
    // API says).
    web.endpoints.push(endpoint("10.42.0.2", Some(true)));
    web.endpoints.push(endpoint("10.42.0.3", Some(false)));
    web.endpoints.push(endpoint("10.42.0.4", None));
    p.ensure(&web, &nodes(1)).await.expect("ensure");
    assert_eq!(members(&bigip), [3, 3]);
    p.shutdown().await;
    sim.shutdown().await;
}
