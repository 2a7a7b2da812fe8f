//! The f5 provider at scale (issue 21, item 3): N Services of 2 TCP ports on 20 nodes
//! against the simulated BIG-IP with its latency model on (20 ms per call plus 0.1 ms per
//! KiB of response, `portway_sim::bigip::Latency::DEVICE`), driven the way the service
//! controller drives a provider: `ensure` / `update` of every Service with at most 16 at
//! once (the controller's default `providerConcurrency`), and the resync pass with the
//! Services it asks for (its triggers) ensured the same way. The provider is driven
//! directly, not through the controller, so that every call and byte counted is the
//! provider's.
//!
//! Operations, each counted by the simulated BIG-IP (calls, reads, writes, request and
//! response body bytes, the latency the model charged) and timed:
//! - converge: `ensure` of N new Services;
//! - +1 node: a 21st node joins, `update` of every Service;
//! - resync: one resync pass with everything in sync, and the ensures it asks for;
//! - resync, 1 drifted: the same after one virtual was deleted by hand.
//!
//! `cargo bench -p portway-f5 --bench scale` (N = 100 and 1000), or
//! `cargo bench -p portway-f5 --bench scale -- 100 1000 ...`.

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use portway_f5::{F5Config, F5Provider};
use portway_provider::ipam::{VipManager, parse_pools};
use portway_provider::{LbNode, LbPort, LbService, LoadBalancerProvider, Protocol, ServiceKey};
use portway_sim::SimCluster;
use portway_sim::bigip::{BigIpSim, Latency, Traffic};
use serde_json::json;
use std::time::{Duration, Instant};

/// The controller's default `providerConcurrency`.
const CONCURRENCY: usize = 16;
const NODES: usize = 20;

fn nodes(n: usize) -> Vec<LbNode> {
    (0..n)
        .map(|i| LbNode {
            name: format!("node-{i}"),
            internal_ips: vec![format!("10.0.0.{}", i + 1).parse().expect("ip")],
            ready: true,
            ..Default::default()
        })
        .collect()
}

fn services(n: usize) -> Vec<LbService> {
    (0..n)
        .map(|i| LbService {
            key: ServiceKey::new("bench", format!("svc-{i}")),
            uid: format!("00000000-0000-0000-0000-{i:012}"),
            class: portway_f5::CLASS.into(),
            ports: (0..2u16)
                .map(|p| LbPort {
                    name: format!("p{p}"),
                    protocol: Protocol::Tcp,
                    port: 80 + p,
                    node_port: Some(30000 + 2 * i as u16 + p),
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

/// One measured operation.
struct Row {
    op: &'static str,
    n: usize,
    traffic: Traffic,
    wall: Duration,
    ensures: usize,
    failed: usize,
}

impl Row {
    fn print(&self) {
        let t = &self.traffic;
        let n = self.n as f64;
        let bytes = t.request_bytes + t.response_bytes;
        println!(
            "| {} | {} | {} | {} | {} | {:.1} KiB | {:.1} KiB | {:.2} | {:.1} KiB | {:.1} s | {:.1} s | {} |{}",
            self.op,
            self.n,
            t.calls,
            t.reads,
            t.writes,
            t.request_bytes as f64 / 1024.0,
            t.response_bytes as f64 / 1024.0,
            t.calls as f64 / n,
            bytes as f64 / 1024.0 / n,
            t.modelled.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.ensures,
            if self.failed > 0 {
                format!(" {} FAILED", self.failed)
            } else {
                String::new()
            },
        );
    }
}

/// `f(svc)` for every Service, at most [`CONCURRENCY`] at once; the number that failed.
async fn each<'a, F, Fut>(svcs: &'a [LbService], f: F) -> usize
where
    F: Fn(&'a LbService) -> Fut,
    Fut: std::future::Future<Output = Result<(), portway_provider::ProviderError>>,
{
    let results: Vec<_> = futures::stream::iter(svcs.iter().map(f))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let failed: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    if let Some(e) = failed.first() {
        eprintln!("{} failed, the first: {e}", failed.len());
    }
    failed.len()
}

/// Waits for the debounced `sys config save` so that each operation is charged its own.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(2500)).await;
}

async fn run(sim: &SimCluster, n: usize) -> anyhow::Result<Vec<Row>> {
    let bigip = BigIpSim::start().await?;
    let pools = parse_pools(&[json!({"name": "vips", "addresses": ["198.18.0.0/20"]})])
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let vips = VipManager::new(&pools).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let cfg = F5Config::from_value(
        &json!({"url": bigip.url(),
            "credentialsSecret": {"namespace": "portway-system", "name": "bigip"},
            "pools": ["vips"], "resyncPeriod": "1h"}),
        None,
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let secrets = portway_f5::CredentialsReader::new(sim.client(), &cfg);
    let p = F5Provider::new(
        secrets,
        cfg,
        vips.scoped(portway_f5::CLASS, &["vips".into()]),
    )?;
    let mut triggers = p.triggers().ok_or_else(|| anyhow::anyhow!("no triggers"))?;
    bigip.set_latency(Some(Latency::DEVICE));
    // The controller adopts first (login, partition, start-up sweep): not measured.
    p.adopt(&[]).await;
    let svcs = services(n);
    let (before, after) = (nodes(NODES), nodes(NODES + 1));
    let mut rows = Vec::new();
    let measure = |op, start: Instant, ensures, failed| Row {
        op,
        n,
        traffic: bigip.traffic(),
        wall: start.elapsed(),
        ensures,
        failed,
    };

    bigip.reset_traffic();
    let start = Instant::now();
    let failed = each(&svcs, |s| p.ensure(s, &before).map(|r| r.map(|_| ()))).await;
    let wall = start.elapsed();
    settle().await;
    rows.push(Row {
        wall,
        ..measure("converge", start, n, failed)
    });

    bigip.reset_traffic();
    let start = Instant::now();
    let failed = each(&svcs, |s| p.update(s, &after)).await;
    let wall = start.elapsed();
    settle().await;
    rows.push(Row {
        wall,
        ..measure("+1 node", start, n, failed)
    });

    for (op, drift) in [("resync", false), ("resync, 1 drifted", true)] {
        if drift {
            let name = portway_f5::object_name("bench", "svc-0", "TCP", 80, false);
            anyhow::ensure!(
                bigip.delete_by_hand("virtual", "portway", &name),
                "no virtual {name}"
            );
        }
        bigip.reset_traffic();
        let start = Instant::now();
        p.resync_now().await;
        let mut keys = Vec::new();
        // Not `now_or_never`: tokio's cooperative budget makes a receiver answer Pending
        // after 128 messages in one poll, so the rest would be missed (the controller reads
        // its triggers continuously).
        while let Ok(Some(k)) =
            tokio::time::timeout(Duration::from_millis(200), triggers.next()).await
        {
            keys.push(k);
        }
        eprintln!("{op}: {} Services asked for", keys.len());
        let asked: Vec<LbService> = svcs
            .iter()
            .filter(|s| keys.contains(&s.key))
            .cloned()
            .collect();
        let failed = each(&asked, |s| p.ensure(s, &after).map(|r| r.map(|_| ()))).await;
        let wall = start.elapsed();
        settle().await;
        rows.push(Row {
            wall,
            ..measure(op, start, asked.len(), failed)
        });
    }
    if bigip.objects("virtual", "portway").len() != 2 * n {
        rows.iter().for_each(Row::print);
        anyhow::bail!(
            "not converged: {} virtuals",
            bigip.objects("virtual", "portway").len()
        );
    }
    p.shutdown().await;
    Ok(rows)
}

fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1000]
    } else {
        sizes
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sim = SimCluster::builder()
            .kubelet(false)
            .daemonsets(false)
            .start()
            .await?;
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "portway-system"}}))?;
        Api::<Namespace>::all(sim.client())
            .create(&PostParams::default(), &ns)
            .await?;
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "bigip"},
            "data": {"username": "YWRtaW4=", "password": "YWRtaW4="}}))?;
        Api::<Secret>::namespaced(sim.client(), "portway-system")
            .create(&PostParams::default(), &secret)
            .await?;
        println!(
            "model: {:?} per call + {:?} per KiB of response; {CONCURRENCY} at once; 2 ports, {NODES} nodes",
            Latency::DEVICE.per_call,
            Latency::DEVICE.per_kib
        );
        println!(
            "| operation | N | calls | reads | writes | sent | received | calls / Service | KiB / Service | device time (model) | wall | ensures |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for n in sizes {
            for row in run(&sim, n).await? {
                row.print();
            }
        }
        sim.shutdown().await;
        anyhow::Ok(())
    })
}
