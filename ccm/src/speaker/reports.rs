//! What the speaker reports about the L2 side once per episode: refused addresses, pools
//! overlapping node addresses, and the traps of [`super::guard`]. Each is a log line, a
//! metric, and (for what concerns Services) Warnings on them, the first time it is seen
//! and again only after it cleared.

use super::feedback::Feedback;
use super::guard::Refusal;
use super::metrics::SpeakerMetrics;
use crate::events::Reason;
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use tracing::warn;

/// The trap names used as the `trap` label of `portway_l2_trap`.
pub const TRAP_ALL_EXCLUDED: &str = "all_nodes_excluded";
/// kube-proxy IPVS without strictARP.
pub const TRAP_IPVS: &str = "kube_proxy_ipvs_without_strict_arp";
/// An l2 address whose announcement policies select no ready node.
pub const TRAP_POLICY_NO_NODE: &str = "l2_policy_selects_no_node";

/// Last reported state.
#[derive(Default)]
pub(crate) struct L2Reports {
    refused: BTreeMap<IpAddr, Refusal>,
    unselected: BTreeMap<IpAddr, String>,
    overlaps: BTreeMap<IpAddr, String>,
    excluded: bool,
    ipvs: bool,
}

impl L2Reports {
    /// Addresses the guard refused this pass.
    pub(crate) fn refused(
        &mut self,
        now: BTreeMap<IpAddr, Refusal>,
        fb: &Feedback,
        m: &SpeakerMetrics,
    ) {
        for (ip, why) in &now {
            if self.refused.get(ip) == Some(why) {
                continue;
            }
            let note = why.message(*ip);
            warn!(%ip, reason = why.label(), "{note}");
            fb.warn_services(Reason::AnnounceRefused, note, fb.services_with(*ip));
        }
        m.set_refused(&now);
        self.refused = now;
    }

    /// Addresses whose announcement policies select no ready node, with the Warning's
    /// text (only the reporting node passes them in: the verdict is the API's, the same
    /// on every node).
    pub(crate) fn unselected(
        &mut self,
        now: BTreeMap<IpAddr, String>,
        fb: &Feedback,
        m: &SpeakerMetrics,
    ) {
        for (ip, note) in &now {
            if self.unselected.get(ip) == Some(note) {
                continue;
            }
            warn!(%ip, "{note}");
            fb.warn_services(
                Reason::NotSelectedByPolicy,
                note.clone(),
                fb.services_with(*ip),
            );
        }
        m.set_trap(TRAP_POLICY_NO_NODE, !now.is_empty());
        self.unselected = now;
    }

    /// Node addresses inside l2 pools.
    pub(crate) fn overlaps(&mut self, now: BTreeMap<IpAddr, String>, m: &SpeakerMetrics) {
        for (ip, node) in &now {
            if self.overlaps.get(ip) != Some(node) {
                warn!(%ip, %node, "an l2 pool holds this node's address; remove it from the pool (the speakers refuse to announce it)");
            }
        }
        m.set_pool_overlaps(now.len());
        self.overlaps = now;
    }

    /// The cluster-wide traps (only the reporting node passes them in).
    pub(crate) fn traps(
        &mut self,
        excluded: Option<String>,
        ipvs: bool,
        l2_services: impl Fn() -> Vec<Arc<Service>>,
        fb: &Feedback,
        m: &SpeakerMetrics,
    ) {
        if let Some(note) = &excluded
            && !self.excluded
        {
            warn!("{note}");
            fb.warn_services(Reason::NoAnnouncingNode, note.clone(), l2_services());
        }
        if ipvs && !self.ipvs {
            let note = "kube-proxy runs in IPVS mode without strictARP (kube-system/kube-proxy, \
                        config.conf): every node's kernel answers ARP for every Service address, \
                        so clients may reach any node, not the announcing one. Set \
                        `ipvs: {strictARP: true}` in that ConfigMap and restart kube-proxy"
                .to_string();
            warn!("{note}");
            fb.warn_services(Reason::KubeProxyAnswersArp, note, l2_services());
        }
        self.excluded = excluded.is_some();
        self.ipvs = ipvs;
        m.set_trap(TRAP_ALL_EXCLUDED, self.excluded);
        m.set_trap(TRAP_IPVS, self.ipvs);
    }
}
