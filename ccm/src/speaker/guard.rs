//! What the L2 speaker refuses to announce (issue 20, defect 5), and the traps of peers'
//! setups it detects and reports (issue 24, item 4).
//!
//! A Service's status is written by whoever may write `services/status`, and a controller
//! bug has once adopted a node's own IP as a VIP. Answering ARP for such an address makes
//! a node steal a gateway's or another node's traffic, so the speaker hands the election
//! only addresses inside the configured `l2.pools` that are no Node's address. The rest
//! is refused: a Warning on the Service, a metric, and a log line, once per address.
//!
//! The same pool-against-nodes comparison also tells when a pool overlaps a node's
//! address at run time (nodes join and change addresses after `check-config` ran):
//! [`L2Guard::pool_overlaps`].
//!
//! Traps, each reported by the speaker on the lowest-named Node only (one report per
//! cluster, not one per node):
//! - every Node carries `node.kubernetes.io/exclude-from-external-load-balancers`
//!   (kubeadm sets it on control-plane nodes, so a control-plane-only cluster has no node
//!   that may announce; MetalLB #2274): [`all_excluded`];
//! - kube-proxy in IPVS mode without `strictARP: true` (every node's kernel answers ARP
//!   for every Service address, so the L2 owner is one answerer of many; MetalLB #153):
//!   [`ipvs_without_strict_arp`], read from `kube-system/kube-proxy`.

use super::l2_policy::Scopes;
use crate::names::EXCLUDE_LABEL;
use crate::service::rules::node_eligible;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::Client;
use kube::ResourceExt;
use kube::api::Api;
use portway_l2::{L2Config, VipInput};
use portway_provider::ipam::{AddrRange, PoolConfig};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// Why an address in an l2 Service's status is not announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No pool listed in `l2.pools` holds it.
    OutsidePools,
    /// It is an address of this Node.
    NodeAddress(String),
}

impl Refusal {
    /// The Warning's text for `ip`: what is wrong and what to do.
    pub fn message(&self, ip: IpAddr) -> String {
        match self {
            Refusal::OutsidePools => format!(
                "{ip} is in no pool listed in l2.pools, so no node announces it over ARP/NDP; \
                 give the Service an address from an l2 pool (remove the status or the \
                 requested address) or add a pool holding it to l2.pools"
            ),
            Refusal::NodeAddress(node) => format!(
                "{ip} is an address of node {node}; announcing it would take that node's \
                 traffic, so no node does. Remove {ip} from the l2 pools and give the Service \
                 another address"
            ),
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::OutsidePools => "outside_pools",
            Refusal::NodeAddress(_) => "node_address",
        }
    }
}

/// The l2 pools' ranges and every Node's addresses; the addresses are read again only
/// when a Node changed ([`L2Guard::with_nodes_of`]).
#[derive(PartialEq)]
pub struct L2Guard {
    ranges: Vec<AddrRange>,
    /// Shared: a pass without a Node change reuses the last one's.
    node_addrs: Arc<HashMap<IpAddr, String>>,
    /// The announcement policies' restriction per pool, stamped on the kept VIPs (part of
    /// the guard so that a policy change re-checks every VIP, as a pool change does).
    scopes: Scopes,
}

impl L2Guard {
    /// From the configured pools, the `l2` section and every Node (eligible or not).
    pub fn new(pools: &[PoolConfig], l2: &L2Config, nodes: &[Arc<Node>]) -> Self {
        let ranges = pools
            .iter()
            .filter(|p| l2.pools.contains(&p.name))
            .flat_map(|p| p.addresses.iter())
            .filter_map(|a| AddrRange::parse(a).ok())
            .collect();
        let node_addrs = nodes
            .iter()
            .flat_map(|n| {
                let name = n.name_any();
                n.status
                    .as_ref()
                    .and_then(|s| s.addresses.as_ref())
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.address.parse::<IpAddr>().ok())
                    .map(move |ip| (ip, name.clone()))
            })
            .collect();
        Self {
            ranges,
            node_addrs: Arc::new(node_addrs),
            scopes: Scopes::default(),
        }
    }

    /// As [`Self::new`] with the Node addresses of `last` (no Node changed since): a pass
    /// then costs nothing per Node.
    pub fn with_nodes_of(pools: &[PoolConfig], l2: &L2Config, last: &L2Guard) -> Self {
        Self {
            node_addrs: last.node_addrs.clone(),
            ..Self::new(pools, l2, &[])
        }
    }

    /// The guard with the announcement policies' scopes ([`Scopes`]).
    pub fn with_scopes(self, scopes: Scopes) -> Self {
        Self { scopes, ..self }
    }

    /// The announcement policies' scopes.
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    /// Whether `ip` may be announced.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        if let Some(node) = self.node_addrs.get(&ip) {
            return Err(Refusal::NodeAddress(node.clone()));
        }
        if !self.ranges.iter().any(|r| r.contains(ip)) {
            return Err(Refusal::OutsidePools);
        }
        Ok(())
    }

    /// Keeps the VIPs that may be announced, each with its policies' scope; returns the
    /// refused ones with why.
    pub fn split(&self, vips: Vec<VipInput>) -> (Vec<VipInput>, BTreeMap<IpAddr, Refusal>) {
        let mut refused = BTreeMap::new();
        let mut kept: Vec<VipInput> = vips
            .into_iter()
            .filter(|v| match self.check(v.ip) {
                Ok(()) => true,
                Err(why) => {
                    refused.insert(v.ip, why);
                    false
                }
            })
            .collect();
        self.scopes.stamp(&mut kept);
        (kept, refused)
    }

    /// Node addresses inside an l2 pool, with their node: the controller may hand them
    /// to a Service, and the speaker would refuse to announce it. Reported as a metric and
    /// a log line whenever the Node list changes.
    pub fn pool_overlaps(&self) -> BTreeMap<IpAddr, String> {
        self.node_addrs
            .iter()
            .filter(|(ip, _)| self.ranges.iter().any(|r| r.contains(**ip)))
            .map(|(ip, n)| (*ip, n.clone()))
            .collect()
    }
}

/// When Nodes exist and every one is excluded by [`EXCLUDE_LABEL`], the message that says
/// so (and how to fix it); `None` otherwise.
pub fn all_excluded(nodes: &[Arc<Node>]) -> Option<String> {
    let labelled = |n: &Node| n.labels().contains_key(EXCLUDE_LABEL);
    if nodes.is_empty() || nodes.iter().any(|n| node_eligible(n)) {
        return None;
    }
    if !nodes.iter().all(|n| labelled(n)) {
        return None; // ineligible for other reasons (not initialized, deleting)
    }
    let names: Vec<String> = nodes.iter().map(|n| n.name_any()).collect();
    Some(format!(
        "every node carries {EXCLUDE_LABEL} (kubeadm sets it on control-plane nodes), so no \
         node may announce load-balancer addresses: nodes {}. On a control-plane-only \
         cluster remove it: kubectl label node --all {EXCLUDE_LABEL}-",
        names.join(", ")
    ))
}

/// Whether kube-proxy's configuration (`kube-system/kube-proxy`, key `config.conf`, as
/// kubeadm writes it) runs IPVS mode without `strictARP: true`.
pub fn ipvs_without_strict_arp(cm: &ConfigMap) -> bool {
    let Some(text) = cm.data.as_ref().and_then(|d| d.get("config.conf")) else {
        return false;
    };
    let parsed: Result<serde_json::Value, _> = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize());
    let Ok(v) = parsed else {
        return false;
    };
    // Keys compared without case: some versions of the `config` crate lower-case them.
    let get = |path: &[&str]| {
        path.iter()
            .try_fold(&v, |v, k| {
                v.as_object()?
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v)
            })
            .and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or(v.as_bool().map(|b| b.to_string()))
            })
    };
    get(&["mode"]).as_deref() == Some("ipvs")
        && get(&["ipvs", "strictarp"]).as_deref() != Some("true")
}

/// Whether `me` is the node that reports cluster-wide traps: the lowest name.
pub fn reports_traps(me: &str, nodes: &[Arc<Node>]) -> bool {
    nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .min()
        == Some(me)
}

/// How often kube-proxy's ConfigMap is read for the IPVS trap.
const KUBE_PROXY_EVERY: Duration = Duration::from_secs(60);

/// Reads `kube-system/kube-proxy` now and every [`KUBE_PROXY_EVERY`]: whether kube-proxy
/// runs IPVS without strictARP ([`ipvs_without_strict_arp`]). Absent (k3s, other
/// proxies) or not readable (RBAC): false.
pub(super) fn follow_kube_proxy(client: Client) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let api: Api<ConfigMap> = Api::namespaced(client, "kube-system");
    tokio::spawn(async move {
        let mut told = false;
        loop {
            let trap = match api.get_opt("kube-proxy").await {
                Ok(cm) => cm.as_ref().is_some_and(ipvs_without_strict_arp),
                Err(e) => {
                    if !told {
                        debug!(error = %e, "reading kube-system/kube-proxy (the IPVS strictARP check)");
                        told = true;
                    }
                    false
                }
            };
            tx.send_if_modified(|v| std::mem::replace(v, trap) != trap);
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(KUBE_PROXY_EVERY).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use portway_provider::TrafficPolicy;
    use serde_json::json;

    fn node(name: &str, ip: &str, labels: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
            }))
            .expect("node"),
        )
    }

    fn pools() -> Vec<PoolConfig> {
        serde_json::from_value(json!([
            {"name": "lan", "addresses": ["192.168.1.0/24"]},
            {"name": "bgp", "addresses": ["203.0.113.0/24"]}
        ]))
        .expect("pools")
    }

    fn vip(ip: &str) -> VipInput {
        VipInput {
            ip: ip.parse().expect("ip"),
            traffic_policy: TrafficPolicy::Cluster,
            ready_nodes: ["n1".to_string()].into(),
            scope: None,
        }
    }

    /// Issue 20, defect 5: a status naming an address outside the l2 pools, or a node's
    /// own address, is not announced; before, every address in an l2 status was.
    #[test]
    fn only_pool_addresses_that_no_node_holds_are_announced() {
        let l2 = L2Config {
            pools: vec!["lan".into()],
            ..L2Config::default()
        };
        let nodes = [
            node("n1", "192.168.1.10", json!({})),
            node("n2", "10.0.0.2", json!({})),
        ];
        let guard = L2Guard::new(&pools(), &l2, &nodes);
        let (kept, refused) = guard.split(vec![
            vip("192.168.1.100"),
            vip("192.168.1.10"),
            vip("203.0.113.5"),
            vip("10.0.0.2"),
        ]);
        assert_eq!(kept, vec![vip("192.168.1.100")]);
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            refused,
            [
                (ip("192.168.1.10"), Refusal::NodeAddress("n1".into())),
                (ip("203.0.113.5"), Refusal::OutsidePools),
                (ip("10.0.0.2"), Refusal::NodeAddress("n2".into())),
            ]
            .into()
        );
        assert!(
            Refusal::OutsidePools
                .message(ip("203.0.113.5"))
                .contains("l2.pools")
        );
        // n1's address lies in the l2 pool: the run-time overlap report.
        assert_eq!(
            guard.pool_overlaps(),
            [(ip("192.168.1.10"), "n1".to_string())].into()
        );
    }

    #[test]
    fn a_control_plane_only_cluster_is_reported() {
        let excluded = json!({EXCLUDE_LABEL: ""});
        let cp = [
            node("cp1", "10.0.0.1", excluded.clone()),
            node("cp2", "10.0.0.2", excluded.clone()),
        ];
        let msg = all_excluded(&cp).expect("reported");
        assert!(
            msg.contains("cp1, cp2") && msg.contains("kubectl label node --all"),
            "{msg}"
        );
        let mixed = [cp[0].clone(), node("w1", "10.0.0.3", json!({}))];
        assert_eq!(all_excluded(&mixed), None);
        assert_eq!(all_excluded(&[]), None);
        assert!(reports_traps("cp1", &cp) && !reports_traps("cp2", &cp));
    }

    #[test]
    fn kube_proxy_in_ipvs_mode_needs_strict_arp() {
        let cm = |conf: &str| -> ConfigMap {
            serde_json::from_value(json!({"metadata": {"name": "kube-proxy"},
                "data": {"config.conf": conf}}))
            .expect("cm")
        };
        let kubeadm = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  strictARP: false\n  scheduler: \"\"\n";
        assert!(ipvs_without_strict_arp(&cm(kubeadm)));
        assert!(ipvs_without_strict_arp(&cm("mode: ipvs\n")));
        assert!(!ipvs_without_strict_arp(&cm(
            "mode: ipvs\nipvs:\n  strictARP: true\n"
        )));
        assert!(!ipvs_without_strict_arp(&cm("mode: iptables\n")));
        assert!(!ipvs_without_strict_arp(&cm("mode: \"\"\n")));
        assert!(!ipvs_without_strict_arp(&cm(": not yaml [")));
    }
}
