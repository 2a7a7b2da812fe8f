//! Throughput of the simulated API server: 10,000 Service creates then 10,000 status patches
//! through kube-rs with 16 requests in flight, against the server running in a child process
//! so that its peak RSS is its own. The Services do not allocate nodePorts: 10,000 would
//! exhaust the 2,768-port range, on a real server too.
//!
//! `cargo bench -p portway-sim --bench writes`

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

const N: usize = 10_000;
const IN_FLIGHT: usize = 16;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve") {
        return serve();
    }
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let kubeconfig = lines
        .next()
        .ok_or_else(|| anyhow::anyhow!("server printed nothing"))??;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (creates, patches) = rt.block_on(drive(&kubeconfig))?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    drop(child.stdin.take());
    let _ = child.wait();
    println!("sim writes: {N} Service creates, {IN_FLIGHT} in flight: {creates:.0} req/s");
    println!("sim writes: {N} status patches, {IN_FLIGHT} in flight: {patches:.0} req/s");
    println!("sim server peak RSS (VmHWM): {hwm}");
    Ok(())
}

fn serve() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sim = portway_sim::SimCluster::builder()
            .kubelet(false)
            .daemonsets(false)
            .start()
            .await?;
        let dir = std::env::temp_dir().join(format!("portway-sim-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("kubeconfig");
        sim.write_kubeconfig(&path, "bench")?;
        println!("{}", path.display());
        // Serve until the parent closes stdin.
        tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s);
        })
        .await?;
        sim.shutdown().await;
        anyhow::Ok(())
    })
}

async fn drive(kubeconfig: &str) -> anyhow::Result<(f64, f64)> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let api: Api<Service> = Api::namespaced(client, "default");
    let t = Instant::now();
    futures::stream::iter(0..N)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let api = api.clone();
            async move {
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("svc-{i}")},
                    "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                        "ports": [{"port": 80}]}
                }))
                .expect("service");
                api.create(&PostParams::default(), &svc)
                    .await
                    .expect("create");
            }
        })
        .await;
    let creates = N as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    futures::stream::iter(0..N)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let api = api.clone();
            async move {
                let ip = format!("198.51.{}.{}", i / 250, i % 250 + 1);
                let patch =
                    serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
                api.patch_status(
                    &format!("svc-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .expect("patch");
            }
        })
        .await;
    let patches = N as f64 / t.elapsed().as_secs_f64();
    Ok((creates, patches))
}
