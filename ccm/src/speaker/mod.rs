//! `portway speaker`: the node agent. It runs on every node (DaemonSet, host network) and
//! announces the addresses the controller allocated: the L2 announcer (gossip membership,
//! rendezvous owner, ARP/NDP) for the l2 class and the BGP speaker for the bgp class.
//!
//! It only reads the cluster (Services, Nodes, EndpointSlices) and writes two kinds of
//! feedback: the `portway.dev/announced-by` annotation on an l2 Service when this node takes
//! it over, and events on the Service.

pub mod desired;
pub mod metrics;

use crate::config::Config;
use crate::events::{Events, Kind};
use crate::k8s::wait_until_ready;
use crate::sections;
use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use portway_bgp::{NodeInfo, SecretRef, Speaker as BgpSpeaker};
use portway_l2::{L2Speaker, SpeakerConfig, SpeakerEvent};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// The annotation naming the node that answers for an l2 address.
pub const ANNOUNCED_BY: &str = "portway.dev/announced-by";

/// Flags of `portway speaker`.
#[derive(clap::Args, Clone, Debug)]
pub struct SpeakerArgs {
    /// This node's name (the DaemonSet passes `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Kubeconfig; in-cluster configuration when absent.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Portway's configuration file (the same as the controller's).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// JSON logs.
    #[arg(long)]
    pub log_json: bool,
    /// Where to serve `/metrics` and `/healthz` (port 0 disables). 7473, not MetalLB's 7472,
    /// so both can run side by side during a migration.
    #[arg(long, default_value = "0.0.0.0:7473")]
    pub metrics_bind_address: std::net::SocketAddr,
}

/// Runs the speaker until SIGTERM/Ctrl-C, then withdraws (BGP Cease) and stops announcing.
pub async fn run(args: SpeakerArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    let client = crate::cli::client(args.kubeconfig.as_deref()).await?;
    run_with(
        client,
        config,
        args.node_name,
        crate::cli::shutdown_signal(),
    )
    .await
}

/// The speaker loop for `node`, until `shutdown` completes (in-process tests use this).
pub async fn run_with(
    client: Client,
    config: Config,
    node: String,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with_metrics(
        client,
        config,
        node,
        Arc::new(metrics::SpeakerMetrics::new()),
        shutdown,
    )
    .await
}

/// [`run_with`], recording into `m`.
pub async fn run_with_metrics(
    client: Client,
    config: Config,
    node: String,
    m: Arc<metrics::SpeakerMetrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let sections = sections::parse(&config).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid configuration:\n{}", text.join("\n"))
    })?;
    let changed = Arc::new(Notify::new());
    let api_ok = Arc::new(AtomicBool::new(true));
    let services = watch_store::<Service>(Api::all(client.clone()), &changed, &api_ok);
    let nodes = watch_store::<Node>(Api::all(client.clone()), &changed, &api_ok);
    let slices = watch_store::<EndpointSlice>(Api::all(client.clone()), &changed, &api_ok);
    wait_until_ready(&services.0).await;
    wait_until_ready(&nodes.0).await;
    wait_until_ready(&slices.0).await;

    let me = nodes
        .0
        .state()
        .into_iter()
        .find(|n| n.name_any() == node)
        .with_context(|| format!("node {node} not found; --node-name must name this node"))?;
    let addrs = desired::node_addrs(&me);
    let events = Arc::new(Events::new(client.clone(), "portway-speaker", &node));

    let l2 = match (&sections.l2, addrs.first()) {
        (Some(l2), Some(addr)) => {
            let speaker = L2Speaker::start(SpeakerConfig::new(node.clone(), *addr, l2.clone()))
                .await
                .context("starting the L2 speaker")?;
            info!(node, %addr, "L2 speaker started");
            Some(speaker)
        }
        (Some(_), None) => {
            warn!(
                node,
                "the node has no InternalIP yet; the L2 speaker is not started"
            );
            None
        }
        (None, _) => None,
    };
    let bgp = match &sections.bgp {
        Some(cfg) => {
            let info = NodeInfo {
                name: node.clone(),
                ipv4: addrs.iter().find_map(|a| match a {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                }),
                ipv6: addrs.iter().find_map(|a| match a {
                    IpAddr::V6(v6) => Some(*v6),
                    IpAddr::V4(_) => None,
                }),
                labels: me.labels().clone(),
            };
            let passwords = fetch_passwords(&client, cfg).await;
            let handle = BgpSpeaker::spawn(cfg, &info, |r: &SecretRef| {
                passwords
                    .get(&(r.namespace.clone(), r.name.clone(), r.key.clone()))
                    .cloned()
            })
            .context("starting the BGP speaker")?;
            info!(node, peers = cfg.peers.len(), "BGP speaker started");
            Some(handle)
        }
        None => None,
    };

    // Feedback on takeovers: annotation and event on the Service.
    let feedback = l2.as_ref().map(|s| {
        let mut rx = s.events();
        let services = services.0.clone();
        let client = client.clone();
        let events = events.clone();
        let node = node.clone();
        let m = m.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(SpeakerEvent::Takeover(t)) => {
                        m.takeover(t.since_last_heard.or(t.since_detected));
                        announce(&client, &events, &services, &node, t.ip).await;
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        })
    });

    tokio::pin!(shutdown);
    let mut advertised: std::collections::BTreeSet<IpAddr> = Default::default();
    loop {
        let svcs = services.0.state();
        let all_nodes = nodes.0.state();
        let all_slices = slices.0.state();
        if let Some(l2) = &l2 {
            l2.set_nodes(desired::node_inputs(&all_nodes));
            l2.set_vips(desired::vip_inputs(
                &svcs,
                &all_slices,
                &config.default_class,
            ));
            l2.set_api_reachable(api_ok.load(Ordering::Relaxed));
            let st = l2.status().borrow().clone();
            m.set_l2(&st);
            tracing::debug!(owners = ?st.owners, announcing = ?st.announcing, quorum = ?st.quorum,
                live = ?st.live, starting = st.starting, "l2 state");
        }
        if let (Some(handle), Some(cfg)) = (&bgp, &sections.bgp) {
            let me = all_nodes.iter().find(|n| n.name_any() == node).cloned();
            let routes = match me {
                Some(me) => desired::bgp_routes(
                    &svcs,
                    &all_slices,
                    &me,
                    &config.default_class,
                    &sections.pools,
                    cfg,
                ),
                None => Default::default(),
            };
            // A Service event the first time this node advertises one of its addresses.
            for svc in svcs.iter() {
                let ips = desired::status_ips(svc);
                let newly: Vec<IpAddr> = ips
                    .iter()
                    .filter(|ip| {
                        routes.keys().any(|net| net.contains(*ip)) && advertised.insert(**ip)
                    })
                    .copied()
                    .collect();
                for ip in newly {
                    events
                        .publish(
                            &svc.object_ref(&()),
                            Kind::Normal,
                            "AdvertisingIP",
                            "Advertise",
                            &format!("{ip} is advertised over BGP by node {node}"),
                        )
                        .await;
                }
            }
            advertised.retain(|ip| routes.keys().any(|net| net.contains(ip)));
            handle.set_routes(routes);
            m.set_bgp(&handle.peer_states());
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changed.notified() => {
                // Gather a burst of changes into one recomputation.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    info!(
        node,
        "shutting down: withdrawing routes and stopping announcements"
    );
    if let Some(f) = feedback {
        f.abort();
    }
    if let Some(h) = bgp {
        h.shutdown().await;
    }
    if let Some(s) = l2 {
        s.shutdown().await;
    }
    services.1.abort();
    nodes.1.abort();
    slices.1.abort();
    Ok(())
}

type Watched<K> = (Store<K>, tokio::task::JoinHandle<()>);

fn watch_store<K>(api: Api<K>, changed: &Arc<Notify>, api_ok: &Arc<AtomicBool>) -> Watched<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store::<K>();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let changed = changed.clone();
    let api_ok = api_ok.clone();
    let task = tokio::spawn(stream.for_each(move |ev| {
        api_ok.store(ev.is_ok(), Ordering::Relaxed);
        changed.notify_one();
        futures::future::ready(())
    }));
    (store, task)
}

async fn fetch_passwords(
    client: &Client,
    cfg: &portway_bgp::BgpConfig,
) -> BTreeMap<(String, String, String), String> {
    let mut out = BTreeMap::new();
    for peer in &cfg.peers {
        let Some(r) = &peer.password_secret else {
            continue;
        };
        let api: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
        match api.get(&r.name).await {
            Ok(secret) => {
                if let Some(v) = secret.data.as_ref().and_then(|d| d.get(&r.key)) {
                    out.insert(
                        (r.namespace.clone(), r.name.clone(), r.key.clone()),
                        String::from_utf8_lossy(&v.0).into_owned(),
                    );
                }
            }
            Err(e) => {
                warn!(secret = %r.name, namespace = %r.namespace, %e, "reading a BGP password Secret")
            }
        }
    }
    out
}

async fn announce(
    client: &Client,
    events: &Events,
    services: &Store<Service>,
    node: &str,
    ip: IpAddr,
) {
    for svc in services.state() {
        if !desired::status_ips(&svc).contains(&ip) {
            continue;
        }
        if svc.annotations().get(ANNOUNCED_BY).map(String::as_str) == Some(node) {
            continue;
        }
        let api: Api<Service> =
            Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
        let patch = serde_json::json!({"metadata": {"annotations": {ANNOUNCED_BY: node}}});
        if let Err(e) = api
            .patch(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            warn!(service = %svc.name_any(), %e, "writing {ANNOUNCED_BY}");
            continue;
        }
        events
            .publish(
                &svc.object_ref(&()),
                Kind::Normal,
                "AnnouncingFromNode",
                "Announce",
                &format!("{ip} is announced over ARP/NDP by node {node}"),
            )
            .await;
    }
}
