//! REST calls the f5 provider makes per ensure / no-op / member update / delete, for N ports
//! and M nodes, against the simulated BIG-IP (counted from its request log). The simulated
//! BIG-IP answers as a real one does (a pool's monitor read back with a trailing space,
//! subcollections only when expanded, per-kind property schema), so "no write in sync" here
//! is the figure a device gives.
//!
//! `cargo bench -p portway-f5 --bench rest_calls`

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use portway_f5::{F5Config, F5Provider};
use portway_provider::ipam::{VipManager, parse_pools};
use portway_provider::{LbNode, LbPort, LbService, LoadBalancerProvider, Protocol, ServiceKey};
use portway_sim::SimCluster;
use portway_sim::bigip::BigIpSim;
use serde_json::json;

fn nodes(n: usize) -> Vec<LbNode> {
    (0..n)
        .map(|i| LbNode {
            name: format!("node-{i}"),
            internal_ips: vec![
                format!("10.0.{}.{}", i / 250, i % 250 + 1)
                    .parse()
                    .expect("ip"),
            ],
            ready: true,
            ..Default::default()
        })
        .collect()
}

/// `calls / writes`, and the pool PATCHes among the writes.
fn counts(b: &BigIpSim) -> String {
    let r = b.requests();
    let writes = r.iter().filter(|x| x.is_write()).count();
    let patches = r
        .iter()
        .filter(|x| x.method == "PATCH" && x.path.starts_with("/mgmt/tm/ltm/pool/"))
        .count();
    format!("{} / {writes} ({patches} PATCH)", r.len())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sim = SimCluster::builder().kubelet(false).daemonsets(false).start().await?;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "portway-system"}}))?;
        Api::<Namespace>::all(sim.client()).create(&PostParams::default(), &ns).await?;
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "bigip"},
            "data": {"username": "YWRtaW4=", "password": "YWRtaW4="}}))?;
        Api::<Secret>::namespaced(sim.client(), "portway-system").create(&PostParams::default(), &secret).await?;
        println!("| ports N | nodes M | ensure (create) | no-op | +1 node | -1 node | delete |");
        println!("|---:|---:|---|---|---|---|---|");
        for (n_ports, n_nodes) in [(1usize, 3usize), (2, 10), (4, 50), (8, 200)] {
            let bigip = BigIpSim::start().await?;
            let pools = parse_pools(&[json!({"name": "vips", "addresses": ["203.0.113.0/24"]})]).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let vips = VipManager::new(&pools).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let cfg = F5Config::from_value(&json!({"url": bigip.url(),
                "credentialsSecret": {"namespace": "portway-system", "name": "bigip"}, "pools": ["vips"]}), None)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let secrets = portway_f5::CredentialsReader::new(sim.client(), &cfg);
            let p = F5Provider::new(secrets, cfg, vips.scoped("portway.dev/f5", &["vips".into()]))?;
            let svc = LbService {
                key: ServiceKey::new("default", "bench"),
                uid: format!("uid-{n_ports}-{n_nodes}"),
                ports: (0..n_ports)
                    .map(|i| LbPort { name: format!("p{i}"), protocol: Protocol::Tcp, port: 8000 + i as u16, node_port: Some(30000 + i as u16) })
                    .collect(),
                ..Default::default()
            };
            let ns = nodes(n_nodes);
            // Warm the session (login, partition) so the rows show the steady state.
            p.ensure_deleted(&svc).await?;
            bigip.reset_requests();
            p.ensure(&svc, &ns).await?;
            let create = counts(&bigip);
            bigip.reset_requests();
            p.ensure(&svc, &ns).await?;
            let noop = counts(&bigip);
            bigip.reset_requests();
            p.update(&svc, &nodes(n_nodes + 1)).await?;
            let join = counts(&bigip);
            bigip.reset_requests();
            p.update(&svc, &ns).await?;
            let leave = counts(&bigip);
            bigip.reset_requests();
            p.ensure_deleted(&svc).await?;
            let delete = counts(&bigip);
            println!("| {n_ports} | {n_nodes} | {create} | {noop} | {join} | {leave} | {delete} |");
        }
        sim.shutdown().await;
        anyhow::Ok(())
    })
}
