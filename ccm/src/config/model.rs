//! The typed configuration: what the controller, the node agent and `check-config` use,
//! each provider section already parsed into its provider's own type (see [`super`]).

use portway_bgp::BgpConfig;
use portway_f5::F5Config;
use portway_hostport::HostportConfig;
use portway_l2::L2Config;
use portway_provider::ipam::PoolConfig;
use serde::Deserialize;
use std::time::Duration;

/// The whole configuration, valid and typed.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Class for LoadBalancer Services without `spec.loadBalancerClass`;
    /// hostport by default, as k3s does.
    pub default_class: String,
    /// Settings of the service controller itself (retries, provider calls).
    pub service_controller: ServiceControllerConfig,
    /// What the cloud node controller writes on nodes it initializes.
    pub nodes: NodesConfig,
    /// Address pools shared by l2, bgp and f5.
    pub pools: Vec<PoolConfig>,
    /// The hostport class (on unless `enabled: false`; defaults when absent).
    pub hostport: HostportConfig,
    /// The l2 class, when configured.
    pub l2: Option<L2Config>,
    /// The bgp class, when configured.
    pub bgp: Option<BgpConfig>,
    /// The f5 class, when configured.
    pub f5: Option<F5Config>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_class: crate::names::HOSTPORT.to_string(),
            service_controller: ServiceControllerConfig::default(),
            nodes: NodesConfig::default(),
            pools: Vec::new(),
            hostport: HostportConfig::default(),
            l2: None,
            bgp: None,
            f5: None,
        }
    }
}

impl Config {
    /// The pools the bgp class allocates from: those its advertisements name.
    pub fn bgp_pools(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for adv in self.bgp.iter().flat_map(|b| &b.advertisements) {
            for p in &adv.pools {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
        }
        out
    }
}

/// Labels the cloud node controller sets on nodes it initializes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodesConfig {
    /// `node.kubernetes.io/instance-type`; `portway` when empty.
    #[serde(default)]
    pub instance_type: String,
    /// `topology.kubernetes.io/zone` for nodes that have none.
    #[serde(default)]
    pub zone: Option<String>,
    /// `topology.kubernetes.io/region` for nodes that have none.
    #[serde(default)]
    pub region: Option<String>,
}

/// How the service controller retries and calls providers.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceControllerConfig {
    /// First delay after a transient failure (upstream: 5s).
    #[serde(default = "min_retry", with = "humantime_serde")]
    pub min_retry_delay: Duration,
    /// Cap of the exponential backoff (upstream: 5m).
    #[serde(default = "max_retry", with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// A provider call that takes longer is abandoned and retried as transient.
    #[serde(default = "provider_timeout", with = "humantime_serde")]
    pub provider_timeout: Duration,
    /// At most this many provider calls run at once, per provider.
    #[serde(default = "provider_concurrency")]
    pub provider_concurrency: usize,
    /// Node changes are gathered this long before Services are updated, so a
    /// rolling node restart causes one update rather than one per node.
    #[serde(default = "node_sync_debounce", with = "humantime_serde")]
    pub node_sync_debounce: Duration,
}

fn min_retry() -> Duration {
    Duration::from_secs(5)
}
fn max_retry() -> Duration {
    Duration::from_secs(300)
}
fn provider_timeout() -> Duration {
    Duration::from_secs(60)
}
fn provider_concurrency() -> usize {
    16
}
fn node_sync_debounce() -> Duration {
    Duration::from_secs(1)
}

impl Default for ServiceControllerConfig {
    fn default() -> Self {
        Self {
            min_retry_delay: min_retry(),
            max_retry_delay: max_retry(),
            provider_timeout: provider_timeout(),
            provider_concurrency: provider_concurrency(),
            node_sync_debounce: node_sync_debounce(),
        }
    }
}
