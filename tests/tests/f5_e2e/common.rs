//! What the f5 provider tests share: a test world with the credentials Secret, a provider
//! configured from JSON, the Service and nodes they use, the device's write log.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use portway_f5::{F5Config, F5Provider};
use portway_provider::ipam::{VipManager, parse_pools};
use portway_provider::{LbNode, LbPort, LbService, LoadBalancerProvider, Protocol, ServiceKey};
use portway_sim::bigip::BigIpSim;
use portway_tests::TestCluster;
use serde_json::{Value, json};

/// A test world whose Secret `portway-system/bigip` holds `admin` / `admin`.
pub async fn cluster_with_secret() -> TestCluster {
    cluster_with_credentials("admin", "admin").await
}

/// A test world whose Secret `portway-system/bigip` holds `user` / `password`.
pub async fn cluster_with_credentials(user: &str, password: &str) -> TestCluster {
    let sim = TestCluster::builder()
        .kubelet(false)
        .daemonsets(false)
        .start()
        .await
        .expect("cluster");
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "portway-system"}})).expect("ns");
    Api::<Namespace>::all(sim.client())
        .create(&PostParams::default(), &ns)
        .await
        .expect("ns");
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "bigip"},
        "stringData": {"username": user, "password": password}}))
    .expect("secret");
    Api::<Secret>::namespaced(sim.client(), "portway-system")
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    sim
}

/// A provider for the device at `url`; `extra` (a JSON object) is merged into the `f5:`
/// section.
pub fn provider_with(sim: &TestCluster, url: &str, extra: Value) -> F5Provider {
    let pools = parse_pools(&[json!({"name": "vips", "addresses": ["203.0.113.10-203.0.113.20"]})])
        .expect("pools");
    let vips = VipManager::new(&pools).expect("vips");
    let mut section = json!({"url": url,
        "credentialsSecret": {"namespace": "portway-system", "name": "bigip"},
        "pools": ["vips"], "resyncPeriod": "1h"});
    for (k, v) in extra.as_object().into_iter().flatten() {
        section[k] = v.clone();
    }
    let cfg = F5Config::from_value(&section, Some(&["vips"])).expect("config");
    F5Provider::new(
        portway_f5::CredentialsReader::new(sim.client(), &cfg),
        cfg,
        vips.scoped("portway.dev/f5", &["vips".into()]),
    )
    .expect("provider")
}

/// A provider with the default configuration.
pub fn provider(sim: &TestCluster, url: &str) -> F5Provider {
    provider_with(sim, url, json!({}))
}

/// A provider with another resync period.
pub fn provider_with_resync(sim: &TestCluster, url: &str, resync: &str) -> F5Provider {
    provider_with(sim, url, json!({"resyncPeriod": resync}))
}

/// A provider with another member mode.
pub fn provider_in_mode(sim: &TestCluster, url: &str, resync: &str, mode: &str) -> F5Provider {
    provider_with(
        sim,
        url,
        json!({"resyncPeriod": resync, "memberMode": mode}),
    )
}

/// A Service port.
pub fn port(name: &str, protocol: Protocol, port: u16, node_port: u16) -> LbPort {
    LbPort {
        name: name.into(),
        protocol,
        port,
        node_port: Some(node_port),
    }
}

/// Service `default/web` with TCP ports 80 and 443.
pub fn svc() -> LbService {
    LbService {
        key: ServiceKey::new("default", "web"),
        uid: "0f0f0f0f-1111-2222-3333-444444444444".into(),
        class: "portway.dev/f5".into(),
        ports: vec![
            port("http", Protocol::Tcp, 80, 30080),
            port("https", Protocol::Tcp, 443, 30443),
        ],
        ..Default::default()
    }
}

/// The addresses of the nodes of `partition`, sorted.
pub fn addresses(b: &BigIpSim, partition: &str) -> Vec<String> {
    let mut a: Vec<String> = b
        .objects("node", partition)
        .iter()
        .filter_map(|n| n["address"].as_str().map(String::from))
        .collect();
    a.sort();
    a
}

/// `n` Ready nodes `node-i` with InternalIP `10.0.0.i`.
pub fn nodes(n: usize) -> Vec<LbNode> {
    (1..=n)
        .map(|i| LbNode {
            name: format!("node-{i}"),
            internal_ips: vec![format!("10.0.0.{i}").parse().expect("ip")],
            ready: true,
            ..Default::default()
        })
        .collect()
}

/// Writes to the device since the last reset, as `METHOD path` (`tx` when queued in a
/// transaction).
pub fn writes(b: &BigIpSim) -> Vec<String> {
    b.requests()
        .into_iter()
        .filter(|r| r.is_write())
        .map(|r| {
            format!(
                "{}{} {}",
                if r.in_transaction { "tx " } else { "" },
                r.method,
                r.path
            )
        })
        .collect()
}

/// One more ensure of `default/web` on `n` nodes writes nothing to the device.
pub async fn assert_in_sync(p: &F5Provider, bigip: &BigIpSim, n: usize) {
    bigip.reset_requests();
    p.ensure(&svc(), &nodes(n)).await.expect("ensure");
    assert!(writes(bigip).is_empty(), "{:#?}", writes(bigip));
}
