//! `portway sandbox`: the whole product against a simulated cluster.
//!
//! Starts the simulated API server (with its kubelet and DaemonSet
//! controller), three nodes, a simulated BIG-IP, the service and node
//! controllers with every provider, and one demo Service per class; prints a
//! `kubectl get svc`-like table and keeps serving so a user can explore with
//! kubectl. Services created later are handled like the demo ones.

use crate::config::{Config, ServiceControllerConfig};
use crate::k8s::{Api, PostParams, Service};
use crate::node::NodeController;
use crate::node::plan::NodeSettings;
use crate::providers;
use crate::service::ServiceController;
use anyhow::Context as _;
use futures::FutureExt;
use portway_sim::{SimCluster, SimNode};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Flags of `portway sandbox`.
#[derive(clap::Args, Clone, Debug)]
pub struct SandboxArgs {
    /// Address of the simulated API server.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Where to write the kubeconfig for kubectl.
    #[arg(long, default_value = "portway-sandbox.kubeconfig")]
    pub kubeconfig_out: PathBuf,
    /// Print the table once every demo Service is settled, then exit 0.
    #[arg(long)]
    pub exit_after_demo: bool,
    /// How long to wait for the demo Services.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub demo_timeout: Duration,
    /// Run the demo on an existing cluster (its API server and its nodes) instead of the
    /// simulated one; the BIG-IP is still simulated. Used by the tests to run the same
    /// demo on the real control plane.
    #[arg(long, conflicts_with = "listen")]
    pub kubeconfig: Option<PathBuf>,
}

/// The sandbox's configuration: a pool per VIP class, all classes enabled.
pub const SANDBOX_CONFIG: &str = r#"
defaultClass: portway.dev/hostport
pools:
  - name: sandbox-l2
    addresses: ["192.168.100.240-192.168.100.250", "fd00:100::/124"]
  - name: sandbox-bgp
    addresses: ["10.200.0.0/28"]
    avoidBuggyIPs: true
  - name: sandbox-f5
    addresses: ["172.31.0.10-172.31.0.20"]
hostport: {}
l2:
  pools: [sandbox-l2]
bgp:
  localASN: 64512
  peers:
    - address: 10.0.0.1
      asn: 64500
  advertisements:
    - pools: [sandbox-bgp]
f5:
  url: http://127.0.0.1:1                # replaced by the simulated BIG-IP's address
  credentialsSecret: { namespace: portway-system, name: bigip }
  pools: [sandbox-f5]
  resyncPeriod: 30s
"#;

/// The demo Services: (name, class, ports).
const DEMOS: [(&str, &str, &[i32]); 4] = [
    ("demo-hostport", "portway.dev/hostport", &[8080]),
    ("demo-l2", "portway.dev/l2", &[80]),
    ("demo-bgp", "portway.dev/bgp", &[443]),
    ("demo-f5", "portway.dev/f5", &[80, 443]),
];

/// `portway sandbox`.
pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    // Kept alive until the end: dropping the sim stops it.
    let (_sim, client, kubeconfig) = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            (None, kube::Client::try_from(cfg)?, path.clone())
        }
        None => {
            let sim = start_sim(&args).await?;
            let client = sim.client();
            (Some(sim), client, args.kubeconfig_out.clone())
        }
    };
    let mut config = Config::from_yaml(SANDBOX_CONFIG).map_err(|e| anyhow::anyhow!("{e}"))?;
    config.service_controller = ServiceControllerConfig {
        min_retry_delay: Duration::from_millis(500),
        max_retry_delay: Duration::from_secs(10),
        node_sync_debounce: Duration::from_millis(200),
        ..config.service_controller
    };
    let bigip = portway_sim::bigip::BigIpSim::start()
        .await
        .context("starting the simulated BIG-IP")?;
    prepare_f5(&client, &mut config, bigip.url()).await?;
    let sandbox_extras = Some(format!(
        "simulated BIG-IP: {} (admin/admin), partition portway",
        bigip.url()
    ));
    let built = providers::build(&config, &client).await?;
    let providers = built.providers;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = stop_rx.map(|_| ()).shared();
    let service = ServiceController::new(
        client.clone(),
        providers,
        &config.default_class,
        config.service_controller.clone(),
    )
    .allocator(built.vips);
    let svc_task = tokio::spawn(service.run(stop.clone()));
    let node_task = tokio::spawn(
        NodeController::new(
            client.clone(),
            NodeSettings::default(),
            Duration::from_secs(60),
        )
        .run(stop.clone()),
    );

    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    for (name, class, ports) in DEMOS {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "default" },
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": class,
                "selector": { "app": name },
                "ports": ports.iter().map(|p| serde_json::json!({ "name": format!("p{p}"), "port": p })).collect::<Vec<_>>(),
            }
        }))?;
        api.create(&PostParams::default(), &svc).await?;
    }

    let started = Instant::now();
    let settled = loop {
        let list = api.list(&Default::default()).await?;
        let demo: Vec<&Service> = list
            .items
            .iter()
            .filter(|s| {
                DEMOS
                    .iter()
                    .any(|(n, ..)| s.metadata.name.as_deref() == Some(n))
            })
            .collect();
        let done = demo.iter().filter(|s| !external_ips(s).is_empty()).count();
        let hostport = demo
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(DEMOS[0].0)); // hostport's
        let complete =
            done == DEMOS.len() && on_every_svclb_node(&client, &config, hostport.copied()).await;
        if complete || started.elapsed() > args.demo_timeout {
            break complete;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let list = api.list(&Default::default()).await?;
    println!("{}", table(&list.items, &config.default_class));
    println!(
        "kubeconfig: {}  (try: kubectl --kubeconfig {} get svc -A)",
        kubeconfig.display(),
        kubeconfig.display()
    );
    if let Some(extra) = &sandbox_extras {
        println!("{extra}");
        let pools = bigip.objects("pool", "portway");
        let members: usize = pools
            .iter()
            .filter_map(|p| {
                p.pointer("/membersReference/items")
                    .and_then(|m| m.as_array())
            })
            .map(Vec::len)
            .sum();
        println!(
            "  {} virtual servers, {} pools with {members} members, {} nodes",
            bigip.objects("virtual", "portway").len(),
            pools.len(),
            bigip.objects("node", "portway").len()
        );
    }
    if args.exit_after_demo {
        let _ = stop_tx.send(());
        let _ = svc_task.await;
        let _ = node_task.await;
        if !settled {
            anyhow::bail!(
                "not every demo Service got an address within {:?}",
                args.demo_timeout
            );
        }
        return Ok(());
    }
    println!("sandbox running; Ctrl-C to stop");
    crate::process::shutdown_signal().await;
    let _ = stop_tx.send(());
    let _ = svc_task.await;
    let _ = node_task.await;
    Ok(())
}

/// The simulated cluster with the sandbox's three nodes, its kubeconfig written.
async fn start_sim(args: &SandboxArgs) -> anyhow::Result<SimCluster> {
    let sim = SimCluster::builder()
        .listen(args.listen)
        .start()
        .await
        .context("starting the simulated API server")?;
    sim.write_kubeconfig(&args.kubeconfig_out, "admin")
        .with_context(|| format!("writing {}", args.kubeconfig_out.display()))?;
    for (i, name) in ["node-1", "node-2", "node-3"].iter().enumerate() {
        sim.add_node(
            SimNode::new(name)
                .ipv4(&format!("10.0.0.{}", 11 + i))
                .ipv6(&format!("fd00::{}", 11 + i)),
        )
        .await?;
    }
    Ok(sim)
}

/// Points the f5 section at the simulated BIG-IP and stores its credentials in a Secret,
/// as a user would for a real device.
async fn prepare_f5(client: &kube::Client, config: &mut Config, url: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "portway-system"}}))?;
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bigip", "namespace": "portway-system"},
        "stringData": {"username": "admin", "password": "admin"},
        "data": {"username": "YWRtaW4=", "password": "YWRtaW4="},
    }))?;
    let _ = Api::<Secret>::namespaced(client.clone(), "portway-system")
        .create(&PostParams::default(), &secret)
        .await;
    if let Some(f5) = config.f5.as_mut() {
        f5.url = url.to_string();
    }
    Ok(())
}

/// Whether the hostport demo lists a node for every pod its svclb DaemonSet schedules: its
/// pods become ready one by one, and the status grows with them (the table printed at the
/// first address showed two nodes of three).
async fn on_every_svclb_node(
    client: &kube::Client,
    config: &Config,
    svc: Option<&Service>,
) -> bool {
    use k8s_openapi::api::apps::v1::DaemonSet;
    let Some(svc) = svc else { return false };
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &config.hostport.namespace);
    let selector = format!(
        "{}={}",
        portway_hostport::SVCNAME,
        svc.metadata.name.as_deref().unwrap_or_default()
    );
    let Ok(list) = daemonsets
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
    else {
        return false;
    };
    let scheduled: usize = list
        .items
        .iter()
        .filter_map(|d| d.status.as_ref())
        .map(|st| usize::try_from(st.desired_number_scheduled).unwrap_or(0))
        .sum();
    scheduled > 0 && external_ips(svc).len() >= scheduled
}

fn external_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
        .collect()
}

/// A `kubectl get svc`-like table of every Service, with Portway's class and state.
pub fn table(services: &[Service], default_class: &str) -> String {
    let mut rows = vec![[
        "NAMESPACE".to_string(),
        "NAME".to_string(),
        "CLASS".to_string(),
        "EXTERNAL-IP".to_string(),
        "PORT(S)".to_string(),
        "STATE".to_string(),
    ]];
    for s in services {
        let spec = s.spec.clone().unwrap_or_default();
        if spec.type_.as_deref() != Some("LoadBalancer") {
            continue;
        }
        let class = spec
            .load_balancer_class
            .clone()
            .unwrap_or_else(|| format!("{default_class} (default)"));
        let ips = external_ips(s);
        let ports: Vec<String> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| match p.node_port {
                Some(np) => format!(
                    "{}:{}/{}",
                    p.port,
                    np,
                    p.protocol.as_deref().unwrap_or("TCP")
                ),
                None => format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP")),
            })
            .collect();
        rows.push([
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone().unwrap_or_default(),
            class,
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            },
            ports.join(","),
            if ips.is_empty() {
                "Pending".into()
            } else {
                "Ready".into()
            },
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("   ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
