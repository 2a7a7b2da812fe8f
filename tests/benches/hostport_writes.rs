//! API writes of the hostport class for 1,000 Services: DaemonSet writes per Service change
//! and writes when everything is in sync, counted by the simulated API server's write log.
//!
//! `cargo bench -p portway-tests --bench hostport_writes -- [SERVICES]`

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use portway::config::Config;
use portway_sim::{SimCluster, SimNode};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| a != "--bench")
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let sim = SimCluster::start().await?;
        for i in 1..=3 {
            sim.add_node(SimNode::new(&format!("node-{i}")).ipv4(&format!("10.0.0.{i}"))).await?;
        }
        let config = Config::from_yaml("{}").map_err(|e| anyhow::anyhow!("{e}"))?;
        let built = portway::providers::build(&config, &sim.client()).await?;
        let cfg = portway::config::ServiceControllerConfig {
            node_sync_debounce: Duration::from_millis(100),
            ..Default::default()
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let controller = portway::service::ServiceController::new(sim.client(), built.providers, "portway.dev/hostport", cfg)
            .workers(16);
        let task = tokio::spawn(controller.run(async move {
            let _ = stop_rx.await;
        }));
        let api: Api<Service> = Api::namespaced(sim.client(), "default");
        let t = Instant::now();
        for i in 0..n {
            let svc: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("svc-{i}")},
                "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                    "ports": [{"port": 10000 + i, "protocol": "TCP"}]}
            }))?;
            api.create(&PostParams::default(), &svc).await?;
        }
        loop {
            let list = api.list(&ListParams::default()).await?;
            let ready = list.items.iter().filter(|s| {
                s.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref()).is_some_and(|i| i.len() == 3)
            }).count();
            if ready == n {
                break;
            }
            if t.elapsed() > Duration::from_secs(600) {
                anyhow::bail!("only {ready}/{n} Services got 3 addresses in 600 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let settle = t.elapsed();
        let ds_writes = sim.writes().all().iter().filter(|w| w.resource == "daemonsets" && w.user == "admin" && w.subresource.is_empty()).count();
        tokio::time::sleep(Duration::from_secs(2)).await;
        sim.writes().reset();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let idle: Vec<_> = sim.writes().all().into_iter().filter(|w| w.user == "admin").collect();
        // One change per Service (a label): the DaemonSet labels do not depend on it, so the
        // provider must not write; then a port change: exactly one DaemonSet write each.
        sim.writes().reset();
        for i in 0..n.min(100) {
            let patch = serde_json::json!({"spec": {"ports": [{"port": 20000 + i, "protocol": "TCP"}]}});
            api.patch(&format!("svc-{i}"), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let changed = sim.writes().all().iter().filter(|w| w.resource == "daemonsets" && w.user == "admin").count();
        println!("| services | nodes | time to all addressed | DaemonSet writes per Service (create) | API writes in 5 s in sync | DaemonSet writes per port change |");
        println!("|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {n} | 3 | {:.1} s | {:.2} | {} | {:.2} |",
            settle.as_secs_f64(),
            ds_writes as f64 / n as f64,
            idle.len(),
            changed as f64 / n.min(100) as f64
        );
        let _ = stop_tx.send(());
        let _ = task.await;
        sim.shutdown().await;
        anyhow::Ok(())
    })
}
