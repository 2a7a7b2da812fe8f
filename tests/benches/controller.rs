//! Service controller benchmark against the test world: the simulated API server, or the
//! real control plane with `PORTWAY_TEST_CLUSTER=real` (see `scripts/cluster`).
//!
//! For N Services and M nodes: the time until every Service has its status,
//! API writes per Service, p50/p99 of create -> status latency, and the
//! controller's peak RSS. The controller runs in a child process (this same
//! binary, `--child`) so its memory is measured alone; the sim runs here.
//! Beside it, the floor: a plain kube-rs client that watches the Services and
//! does the same two writes per Service (finalizer, status) with the same
//! concurrency. The ratio controller/floor is the controller's overhead. In both runs one
//! warm-up Service is served before the clock starts, so start-up is not counted.
//!
//! ```text
//! cargo bench -p portway-tests --bench controller -- [SERVICES] [NODES]
//! PORTWAY_TEST_CLUSTER=real cargo bench -p portway-tests --bench controller -- [SERVICES] [NODES]
//! ```
//! Without arguments it runs 1,000 and 10,000 Services with 3 and 500 nodes.
//! `PORTWAY_BENCH_WRAP=heaptrack` runs the controller under heaptrack (where its heap
//! goes; the RSS figure then includes heaptrack's own).

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use portway_provider::mock::MockProvider;
use portway_tests::{SimNode, TestCluster};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 16;
const CLASS: &str = "portway.dev/l2";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.first().map(String::as_str) == Some("--child") {
        return rt.block_on(child(&args[1]));
    }
    let cases: Vec<(usize, usize)> = match (args.first(), args.get(1)) {
        (Some(s), Some(n)) => vec![(s.parse()?, n.parse()?)],
        (Some(s), None) => vec![(s.parse()?, 3)],
        _ => vec![(1_000, 3), (1_000, 500), (10_000, 3), (10_000, 500)],
    };
    let world = format!("{:?}", portway_tests::backend()).to_lowercase();
    println!(
        "| world | services | nodes | run | total s | writes/svc | p50 ms | p99 ms | controller peak RSS MiB |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|");
    for (services, nodes) in cases {
        let c = rt.block_on(run_case(services, nodes, false))?;
        let f = rt.block_on(run_case(services, nodes, true))?;
        for (name, r) in [("controller", &c), ("floor", &f)] {
            println!(
                "| {world} | {services} | {nodes} | {name} | {:.2} | {:.2} | {:.0} | {:.0} | {} |",
                r.total.as_secs_f64(),
                r.writes_per_service,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.rss_mib
                    .map(|m| format!("{m:.1}"))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        println!(
            "| {world} | {services} | {nodes} | ratio | {:.2} | | | | |",
            c.total.as_secs_f64() / f.total.as_secs_f64()
        );
    }
    Ok(())
}

struct Outcome {
    total: Duration,
    writes_per_service: f64,
    p50: Duration,
    p99: Duration,
    rss_mib: Option<f64>,
}

async fn run_case(services: usize, nodes: usize, floor: bool) -> anyhow::Result<Outcome> {
    let sim = TestCluster::builder()
        .kubelet(false)
        .daemonsets(false)
        .start()
        .await?;
    for i in 0..nodes {
        sim.add_node(SimNode::new(&format!("node-{i}")).ipv4(&format!(
            "10.{}.{}.{}",
            i / 65536,
            (i / 256) % 256,
            i % 256 + 1
        )))
        .await?;
    }
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "controller").await?;

    // Who watches for status: the bench's own observer.
    let client = sim.client();
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let done: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let observer = {
        let done = done.clone();
        let api: Api<Service> = Api::all(client.clone());
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(svc)) = stream.next().await {
                let has_status = svc
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|l| l.ingress.as_ref())
                    .is_some_and(|i| !i.is_empty());
                if has_status {
                    let name = svc.metadata.name.clone().unwrap_or_default();
                    done.lock()
                        .expect("lock")
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        })
    };

    let mut child = None;
    let floor_task = if floor {
        Some(tokio::spawn(floor_writer(
            sim.client_as("controller").await?,
        )))
    } else {
        let exe = std::env::current_exe()?;
        // PORTWAY_BENCH_WRAP (say `heaptrack`) runs the controller under that tool.
        let mut cmd = match std::env::var("PORTWAY_BENCH_WRAP") {
            Ok(tool) if !tool.is_empty() => {
                let mut c = tokio::process::Command::new(tool);
                c.arg(exe);
                c
            }
            _ => tokio::process::Command::new(exe),
        };
        child = Some(
            cmd.arg("--child")
                .arg(&kubeconfig)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()?,
        );
        None
    };

    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    // One Service served before the clock starts, in both runs: what is measured is
    // create -> status in steady state, not the child process's start and cache sync
    // (the floor runs in this process and is ready at once).
    api.create(&PostParams::default(), &bench_service("warm-up"))
        .await?;
    let warm_deadline = Instant::now() + Duration::from_secs(120);
    while !done.lock().expect("lock").contains_key("warm-up") {
        anyhow::ensure!(
            Instant::now() < warm_deadline,
            "the warm-up Service got no status"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sim.reset_writes().await;
    let start = Instant::now();
    futures::stream::iter(0..services)
        .for_each_concurrent(CONCURRENCY, |i| {
            let api = api.clone();
            let created = created.clone();
            async move {
                let name = format!("svc-{i}");
                let svc = bench_service(&name);
                let t0 = Instant::now();
                match api.create(&PostParams::default(), &svc).await {
                    // Only Services that exist are waited for (a loaded real server can
                    // time a create out).
                    Ok(_) => {
                        created.lock().expect("lock").insert(name, t0);
                    }
                    Err(e) => eprintln!("create failed: {e}"),
                }
            }
        })
        .await;
    let waiting = || {
        let done = done.lock().expect("lock");
        created
            .lock()
            .expect("lock")
            .keys()
            .filter(|k| !done.contains_key(*k))
            .count()
    };
    loop {
        let left = waiting();
        if left == 0 {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("timed out: {left} of {services} Services without a status");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = start.elapsed();
    let writes = sim
        .writes()
        .await
        .all()
        .iter()
        .filter(|w| w.user == "controller" && w.resource == "services")
        .count();

    let rss_mib = match child.take() {
        Some(mut c) => {
            // Closing stdin asks the child to print its peak RSS and exit.
            drop(c.stdin.take());
            let out = c.wait_with_output().await?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("peak_rss_kib=")?.trim().parse::<f64>().ok())
                .map(|k| k / 1024.0)
        }
        None => None,
    };
    if let Some(t) = floor_task {
        t.abort();
    }
    observer.abort();

    let created = created.lock().expect("lock").clone();
    let done = done.lock().expect("lock").clone();
    let mut lat: Vec<Duration> = created
        .iter()
        .filter_map(|(k, t0)| done.get(k).map(|t1| t1.saturating_duration_since(*t0)))
        .collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    sim.shutdown().await;
    Ok(Outcome {
        total,
        writes_per_service: writes as f64 / created.len().max(1) as f64,
        p50: pct(0.50),
        p99: pct(0.99),
        rss_mib,
    })
}

/// A LoadBalancer Service of the benchmarked class.
fn bench_service(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "spec": { "type": "LoadBalancer", "loadBalancerClass": CLASS,
            // 10,000 Services would exhaust the 2,768 nodePorts.
            "allocateLoadBalancerNodePorts": false,
            "ports": [{ "port": 80 }] }
    }))
    .expect("a valid Service")
}

/// The floor: watch Services and, for each, add the finalizer and write the
/// status, 16 at a time, with nothing else.
async fn floor_writer(client: kube::Client) {
    let api: Api<Service> = Api::all(client.clone());
    let seen: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    watcher(api, watcher::Config::default())
        .applied_objects()
        .filter_map(|r| async move { r.ok() })
        .filter(move |s| {
            let name = s.metadata.name.clone().unwrap_or_default();
            let fresh = seen.lock().expect("lock").insert(name);
            async move { fresh }
        })
        .for_each_concurrent(CONCURRENCY, |svc| {
            let client = client.clone();
            async move {
                let name = svc.metadata.name.clone().unwrap_or_default();
                let api: Api<Service> = Api::namespaced(client, "default");
                let fin = serde_json::json!([{ "op": "add", "path": "/metadata/finalizers",
                    "value": ["service.kubernetes.io/load-balancer-cleanup"] }]);
                let fin = serde_json::from_value(fin).expect("patch");
                let _ = api
                    .patch(&name, &PatchParams::default(), &Patch::<()>::Json(fin))
                    .await;
                let status = serde_json::json!({ "status": { "loadBalancer": { "ingress": [
                    { "ip": "203.0.113.1", "ipMode": "VIP" } ] } } });
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
        })
        .await;
}

/// The controller process: the real service controller with a mock provider.
async fn child(kubeconfig: &str) -> anyhow::Result<()> {
    let client = portway::cli::client(Some(std::path::Path::new(kubeconfig))).await?;
    let cfg = portway::config::ServiceControllerConfig::default();
    let controller = portway::service::ServiceController::new(
        client,
        vec![Arc::new(MockProvider::lean(CLASS))],
        "portway.dev/hostport",
        cfg,
    )
    .workers(CONCURRENCY as u16);
    let stop = async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut buf = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
        })
        .await;
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(controller.run(async move {
        let _ = rx.await;
    }));
    stop.await;
    let _ = tx.send(());
    let _ = run.await;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
        .unwrap_or_default();
    println!("peak_rss_kib={hwm}");
    Ok(())
}
