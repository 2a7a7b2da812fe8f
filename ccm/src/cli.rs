//! Flags of `portway controller` (named as the upstream CCM names them, where
//! they apply) and the wiring from flags and configuration to running controllers.

use crate::config::Config;
use crate::health::{self, Health};
use crate::leader::{Elector, LeaderConfig, default_identity};
use crate::metrics::Metrics;
use crate::node::NodeController;
use crate::node::plan::NodeSettings;
pub use crate::process::{client, shutdown_signal};
use crate::providers;
use crate::service::ServiceController;
use anyhow::Context as _;
use clap::Args;
use futures::FutureExt;
use portway_provider::LoadBalancerProvider;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// Flags of `portway controller`.
#[derive(Args, Clone, Debug)]
pub struct ControllerArgs {
    /// Kubeconfig to reach the API server; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Portway's configuration file (YAML).
    #[arg(long, alias = "cloud-config")]
    pub config: Option<PathBuf>,
    /// Accepted for compatibility with CCM manifests; must be `portway` or `external`.
    #[arg(long, default_value = "portway")]
    pub cloud_provider: String,
    /// Controllers to run: `*` for all, `-name` to disable (`service`, `cloud-node`).
    #[arg(long, default_value = "*", value_delimiter = ',')]
    pub controllers: Vec<String>,
    /// Services reconciled at once.
    #[arg(long, default_value_t = 4)]
    pub concurrent_service_syncs: u16,
    /// Nodes initialized at once.
    #[arg(long, default_value_t = 1)]
    pub concurrent_node_syncs: u16,
    /// How often addresses of initialized nodes are refreshed.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub node_status_update_frequency: Duration,
    /// Run controllers only while holding the lease.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How long a lease is valid without renewal.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// A leader that cannot renew within this gives up (and exits).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try to acquire and leaders renew.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub leader_elect_retry_period: Duration,
    /// The Lease's name.
    #[arg(long, default_value = "portway-controller")]
    pub leader_elect_resource_name: String,
    /// The Lease's namespace (default: the pod's namespace, else kube-system).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    /// Address of the health and metrics server (plain HTTP, no authentication): loopback
    /// unless told otherwise, so that nothing off the host reads `/metrics` by default. The
    /// manifests bind the pod's IP (the node's: host network), which the kubelet's probes
    /// reach; SECURITY.md says how to restrict it.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: std::net::IpAddr,
    /// Port of the health and metrics server (plain HTTP); 0 disables it.
    #[arg(long, default_value_t = 10258)]
    pub secure_port: u16,
}

impl ControllerArgs {
    /// Whether the named controller is enabled by `--controllers`.
    pub fn enabled(&self, name: &str) -> bool {
        let disabled = self.controllers.iter().any(|c| c == &format!("-{name}"));
        let listed = self.controllers.iter().any(|c| c == name || c == "*");
        listed && !disabled
    }
}

/// Sets up tracing: text by default, JSON lines on request; `RUST_LOG`
/// filters (default `info`). Colours only on a terminal: a log file, a pipe or a
/// container runtime's log gets plain text.
pub fn init_logging(json: bool) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// `portway controller`.
pub async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    if !matches!(args.cloud_provider.as_str(), "portway" | "external") {
        anyhow::bail!(
            "--cloud-provider={} is not served by Portway; use --cloud-provider=portway",
            args.cloud_provider
        );
    }
    let config = Config::load(args.config.as_deref())
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    // The elector renews with a plain client; everything else writes through the fence.
    let lease_client = client(args.kubeconfig.as_deref()).await?;
    let elector = args.leader_elect.then(|| {
        Arc::new(Elector::new(
            lease_client.clone(),
            LeaderConfig {
                name: args.leader_elect_resource_name.clone(),
                namespace: args.leader_elect_resource_namespace.clone(),
                identity: default_identity(),
                lease_duration: args.leader_elect_lease_duration,
                renew_deadline: args.leader_elect_renew_deadline,
                retry_period: args.leader_elect_retry_period,
            },
        ))
    });
    let fence = match &elector {
        Some(e) => crate::fence::Fence::lease(e.state(), args.leader_elect_renew_deadline),
        None => crate::fence::Fence::always(),
    };
    let client = crate::process::fenced_client(args.kubeconfig.as_deref(), fence.clone()).await?;
    let built = providers::build(&config, &client).await?;
    // AddressPools and the classes' pool lists from resources, applied live; listed before
    // the service controller adopts, so their addresses are not taken for orphans.
    let live_pools = crate::pools::run(
        client.clone(),
        &config,
        &built,
        &default_identity(),
        Duration::from_secs(10),
        Duration::from_secs(1),
    )
    .await;
    let providers = built.providers;
    let retired = built.retired;
    info!(classes = ?providers.iter().map(|p| p.class().to_string()).collect::<Vec<_>>(), "providers ready");
    let metrics = Arc::new(Metrics::new());
    let allocator = built.vips.share();
    let pool_metrics = tokio::spawn(providers::export_pool_metrics(
        built.vips,
        metrics.clone(),
        std::time::Duration::from_secs(5),
    ));
    if args.secure_port != 0 {
        let addr = health::serve(
            SocketAddr::new(args.bind_address, args.secure_port),
            Health {
                metrics: metrics.clone(),
                leader: elector.as_ref().map(|e| e.state()),
                renew_deadline: args.leader_elect_renew_deadline,
            },
        )
        .await
        .with_context(|| format!("binding {}:{}", args.bind_address, args.secure_port))?;
        info!(%addr, "serving /healthz, /readyz and /metrics");
    }
    let shutdown = shutdown_signal().boxed().shared();
    if let Some(elector) = &elector {
        info!(lease = %args.leader_elect_resource_name, "waiting for leadership");
        tokio::select! {
            _ = elector.acquire() => {}
            _ = shutdown.clone() => {
                // A standby never adopted, so providers hold little; close them anyway.
                close_providers(&providers).await;
                return Ok(());
            }
        }
        metrics.set_leader(true);
    }
    let mut running = Vec::new();
    let to_close = providers.clone();
    if args.enabled("service") {
        let service = ServiceController::new(
            client.clone(),
            providers,
            &config.default_class,
            config.service_controller.clone(),
        )
        .workers(args.concurrent_service_syncs)
        .retired(retired.clone())
        .pool_changes(live_pools.pools.changes.clone())
        .fence(fence.clone())
        .allocator(allocator)
        .metrics(metrics.clone());
        running.push(tokio::spawn(service.run(shutdown.clone())));
    }
    if args.enabled("cloud-node") {
        let settings = NodeSettings {
            instance_type: config.nodes.instance_type.clone(),
            zone: config.nodes.zone.clone(),
            region: config.nodes.region.clone(),
        };
        let nodes =
            NodeController::new(client.clone(), settings, args.node_status_update_frequency)
                .workers(args.concurrent_node_syncs);
        running.push(tokio::spawn(nodes.run(shutdown.clone())));
    }
    let all = futures::future::join_all(running);
    match &elector {
        Some(elector) => {
            tokio::select! {
                _ = elector.hold() => {
                    // Upstream exits so the pod restarts clean; never keep writing without the lease.
                    error!("leaderelection lost");
                    std::process::exit(1);
                }
                _ = all => {}
            }
            elector.release().await;
        }
        None => {
            all.await;
        }
    }
    pool_metrics.abort();
    drop(live_pools);
    close_providers(&to_close).await;
    Ok(())
}

/// Gives every provider a moment to release what it holds outside the cluster (the F5
/// session token); a provider that hangs does not hold the exit up for long.
async fn close_providers(providers: &[Arc<dyn LoadBalancerProvider>]) {
    let all = futures::future::join_all(providers.iter().map(|p| p.shutdown()));
    if tokio::time::timeout(Duration::from_secs(5), all)
        .await
        .is_err()
    {
        warn!("a provider did not shut down within 5 s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Controller {
        #[command(flatten)]
        args: ControllerArgs,
    }

    #[derive(Parser)]
    struct Speaker {
        #[command(flatten)]
        args: crate::speaker::SpeakerArgs,
    }

    /// Unauthenticated HTTP is not offered to every network the host is on unless asked
    /// for (issue 20, defect 6).
    #[test]
    fn health_and_metrics_listen_on_loopback_by_default() {
        let c = Controller::parse_from(["portway"]);
        assert!(c.args.bind_address.is_loopback(), "{}", c.args.bind_address);
        let s = Speaker::parse_from(["portway", "--node-name", "n1"]);
        assert!(
            s.args.metrics_bind_address.ip().is_loopback(),
            "{}",
            s.args.metrics_bind_address
        );
    }
}
