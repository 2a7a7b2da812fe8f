//! Builds the providers the configuration enables, sharing one address allocator.
//!
//! hostport is on unless `hostport.enabled: false` (it is the default class, as in k3s);
//! switched off, it is *retired*: its provider still runs to delete every svclb DaemonSet
//! (k3s `deleteAllDaemonsets`) and the controller clears its Services' statuses. l2, bgp
//! and f5 are on when their section is present. l2, bgp and f5 draw from one [`VipManager`] so an address is
//! never handed to two classes, each through a handle scoped to the pools its section lists.

use crate::config::Config;
use crate::metrics::Metrics;
use kube::Client;
use portway_provider::LoadBalancerProvider;
use portway_provider::ipam::{VipManager, VipProvider};
use std::sync::Arc;
use std::time::Duration;

pub use crate::names::{BGP, CLASSES, F5, HOSTPORT, L2};

/// The providers for a configuration, and the allocator they share (for metrics).
pub struct Built {
    /// One provider per enabled class.
    pub providers: Vec<Arc<dyn LoadBalancerProvider>>,
    /// The shared allocator.
    pub vips: VipManager,
    /// Classes whose provider only cleans up (hostport switched off).
    pub retired: Vec<String>,
    /// The l2 provider's allocator handle (shared scope), for live pool changes.
    pub l2: Option<VipManager>,
    /// The bgp provider's allocator handle (shared scope), for live pool changes.
    pub bgp: Option<VipManager>,
}

/// The providers for `config`.
pub async fn build(config: &Config, client: &Client) -> anyhow::Result<Built> {
    let vips = VipManager::new(&config.pools).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid pools:\n{}", text.join("\n"))
    })?;
    let mut out: Vec<Arc<dyn LoadBalancerProvider>> = Vec::new();
    let mut retired = Vec::new();
    out.push(Arc::new(portway_hostport::HostportProvider::new(
        portway_hostport::HostportApi::new(client.clone(), &config.hostport.namespace),
        config.hostport.clone(),
    )));
    if !config.hostport.enabled {
        retired.push(HOSTPORT.to_string());
    }
    let mut l2_handle = None;
    if let Some(l2) = &config.l2 {
        let h = vips.scoped(L2, &l2.pools);
        l2_handle = Some(h.share());
        out.push(Arc::new(VipProvider::new(L2, h)));
    }
    let mut bgp_handle = None;
    if config.bgp.is_some() {
        let h = vips.scoped(BGP, &config.bgp_pools());
        bgp_handle = Some(h.share());
        out.push(Arc::new(VipProvider::new(BGP, h)));
    }
    if let Some(f5) = &config.f5 {
        let provider = portway_f5::F5Provider::new(
            portway_f5::CredentialsReader::new(client.clone(), f5),
            f5.clone(),
            vips.scoped(F5, &f5.pools),
        )
        .map_err(|e| anyhow::anyhow!("f5: {e}"))?;
        out.push(Arc::new(provider));
    }
    Ok(Built {
        providers: out,
        vips,
        retired,
        l2: l2_handle,
        bgp: bgp_handle,
    })
}

/// Publishes the allocator's per-pool figures every `every` until the task is dropped.
pub async fn export_pool_metrics(vips: VipManager, metrics: Arc<Metrics>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        for s in vips.stats() {
            // f64 is exact to 2^53 addresses; beyond (IPv6 /64 pools) a rounded gauge is fine.
            #[allow(clippy::cast_precision_loss)]
            let total = s.total as f64;
            metrics.set_pool(&s.name, total, s.in_use, s.failures);
        }
    }
}

/// The cluster's nodes' own addresses that `config`'s pools contain (what `portway
/// check-config --cluster` refuses: the controller would never hand them out, and a user
/// who wrote such a pool meant something else).
pub async fn node_overlaps(
    config: &Config,
    client: &Client,
) -> anyhow::Result<Vec<portway_provider::ipam::NodeOverlap>> {
    use anyhow::Context as _;
    let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .list(&kube::api::ListParams::default())
        .await
        .context("listing the cluster's nodes")?;
    let nodes: Vec<Arc<_>> = nodes.items.into_iter().map(Arc::new).collect();
    let mut allocator =
        portway_provider::ipam::Allocator::new(&config.pools).map_err(|errors| {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("invalid pools:\n{}", text.join("\n"))
        })?;
    Ok(allocator.set_node_addresses(crate::service::rules::node_addresses(&nodes)))
}
