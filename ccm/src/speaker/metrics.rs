//! Prometheus metrics of the node agent (`portway_l2_*`, `portway_bgp_*`), refreshed from the
//! announcers' status snapshots and served on `/metrics` next to `/healthz`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use portway_bgp::{PeerStatus, State as BgpState};
use portway_l2::SpeakerStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IpLabels {
    ip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IfaceLabels {
    interface: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrapLabels {
    trap: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

/// The speaker's metrics.
pub struct SpeakerMetrics {
    registry: Mutex<Registry>,
    l2_owner: Family<IpLabels, Gauge>,
    /// The owner series as last set: a status that changed one address touches one series.
    l2_owner_set: Mutex<BTreeMap<IpAddr, i64>>,
    l2_takeovers: Counter,
    l2_takeover_latency: Histogram,
    l2_answered: Family<IfaceLabels, Gauge>,
    l2_live: Gauge,
    l2_known: Gauge,
    l2_unplaced: Gauge,
    l2_quorum: Family<ReasonLabels, Gauge>,
    l2_refused: Family<ReasonLabels, Gauge>,
    l2_gossip_refused: Family<ReasonLabels, Gauge>,
    l2_gossip_signed: Gauge,
    l2_waiting_release: Gauge,
    l2_pool_overlaps: Gauge,
    l2_trap: Family<TrapLabels, Gauge>,
    l2_conflicts: Gauge,
    l2_quarantined: Gauge,
    /// Refusals by the guard (set by the loop) and by the L2 crate (local addresses).
    refused_by_guard: Mutex<BTreeMap<String, i64>>,
    bgp_established: Family<PeerLabels, Gauge>,
    bgp_updates: Family<PeerLabels, Gauge>,
    bgp_prefixes: Family<PeerLabels, Gauge>,
    bgp_flaps: Family<PeerLabels, Gauge>,
    bgp_bfd_up: Family<PeerLabels, Gauge>,
}

impl Default for SpeakerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SpeakerMetrics {
    /// A registry with every series registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portway");
        let m = SpeakerMetrics {
            registry: Mutex::new(Registry::default()),
            l2_owner: Family::default(),
            l2_owner_set: Mutex::new(BTreeMap::new()),
            l2_takeovers: Counter::default(),
            l2_takeover_latency: Histogram::new(exponential_buckets(0.05, 2.0, 10)),
            l2_answered: Family::default(),
            l2_live: Gauge::default(),
            l2_known: Gauge::default(),
            l2_unplaced: Gauge::default(),
            l2_quorum: Family::default(),
            l2_refused: Family::default(),
            l2_gossip_refused: Family::default(),
            l2_gossip_signed: Gauge::default(),
            l2_waiting_release: Gauge::default(),
            l2_pool_overlaps: Gauge::default(),
            l2_trap: Family::default(),
            l2_conflicts: Gauge::default(),
            l2_quarantined: Gauge::default(),
            refused_by_guard: Mutex::new(BTreeMap::new()),
            bgp_established: Family::default(),
            bgp_updates: Family::default(),
            bgp_prefixes: Family::default(),
            bgp_flaps: Family::default(),
            bgp_bfd_up: Family::default(),
        };
        registry.register(
            "l2_owner",
            "1 when this node announces the IP",
            m.l2_owner.clone(),
        );
        registry.register(
            "l2_takeovers",
            "IPs this node took over",
            m.l2_takeovers.clone(),
        );
        registry.register(
            "l2_takeover_latency_seconds",
            "time from the previous owner's last sign of life to this node's takeover",
            m.l2_takeover_latency.clone(),
        );
        registry.register(
            "l2_requests_answered",
            "ARP requests / neighbour solicitations answered per interface since start",
            m.l2_answered.clone(),
        );
        registry.register(
            "l2_live_speakers",
            "speakers this node sees alive, itself included: alert when below the speaker pods",
            m.l2_live.clone(),
        );
        registry.register(
            "l2_known_speakers",
            "speakers known to exist, alive or not, itself included",
            m.l2_known.clone(),
        );
        registry.register(
            "l2_unplaced_ips",
            "IPs this node owns but cannot announce (no usable interface, socket failure)",
            m.l2_unplaced.clone(),
        );
        registry.register(
            "l2_quorum",
            "1 for the branch of the split-brain rule that decides now; ApiReachable, Majority and TieBreakWon may announce",
            m.l2_quorum.clone(),
        );
        registry.register(
            "l2_refused_ips",
            "l2 Service addresses not announced, by reason: outside_pools, node_address (a Node's address), local_address (this node's interface)",
            m.l2_refused.clone(),
        );
        registry.register(
            "l2_gossip_refused",
            "gossip datagrams refused since start, by reason (unsigned, bad_signature, stale, unknown_sender, full, malformed)",
            m.l2_gossip_refused.clone(),
        );
        registry.register(
            "l2_gossip_signed",
            "1 when the gossip is signed with a key from the gossip Secret",
            m.l2_gossip_signed.clone(),
        );
        registry.register(
            "l2_waiting_release",
            "addresses this node won from a live owner and waits to announce until it releases them",
            m.l2_waiting_release.clone(),
        );
        registry.register(
            "l2_pool_node_overlaps",
            "Node addresses inside an l2 pool (remove them from the pool)",
            m.l2_pool_overlaps.clone(),
        );
        registry.register(
            "l2_trap",
            "1 while a known trap holds: all_nodes_excluded, kube_proxy_ipvs_without_strict_arp",
            m.l2_trap.clone(),
        );
        registry.register(
            "l2_address_conflicts",
            "times since start that another host (its MAC) was seen using an address this node owns",
            m.l2_conflicts.clone(),
        );
        registry.register(
            "l2_quarantined_ips",
            "addresses this node owns but does not announce because another host uses them",
            m.l2_quarantined.clone(),
        );
        registry.register(
            "bgp_session_established",
            "1 while the session is Established",
            m.bgp_established.clone(),
        );
        registry.register(
            "bgp_updates_sent",
            "UPDATE messages sent since start",
            m.bgp_updates.clone(),
        );
        registry.register(
            "bgp_prefixes_advertised",
            "prefixes the peer has from us",
            m.bgp_prefixes.clone(),
        );
        registry.register(
            "bgp_flaps",
            "times an Established session went down",
            m.bgp_flaps.clone(),
        );
        registry.register(
            "bgp_bfd_up",
            "1 while the BFD session with the peer is Up (peers with bfd only)",
            m.bgp_bfd_up.clone(),
        );
        *m.registry.lock().unwrap_or_else(|p| p.into_inner()) = registry;
        m
    }

    /// Records a takeover and how long the VIP was unanswered, as far as this node can tell.
    pub fn takeover(&self, latency: Option<Duration>) {
        self.l2_takeovers.inc();
        if let Some(l) = latency {
            self.l2_takeover_latency.observe(l.as_secs_f64());
        }
    }

    /// Refreshes the L2 gauges from a status snapshot.
    pub fn set_l2(&self, st: &SpeakerStatus) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.l2_unplaced.set(count(st.announcer.unplaced.len()));
        self.l2_conflicts
            .set(i64::try_from(st.announcer.conflicts_total).unwrap_or(i64::MAX));
        self.l2_quarantined.set(count(st.announcer.conflicts.len()));
        self.l2_quorum.clear();
        if let Some(q) = &st.quorum {
            self.l2_live.set(count(q.live));
            self.l2_known.set(count(q.known));
            self.l2_quorum
                .get_or_create(&ReasonLabels {
                    reason: format!("{:?}", q.reason),
                })
                .set(1);
        }
        let mut set = self.l2_owner_set.lock().unwrap_or_else(|p| p.into_inner());
        set.retain(|ip, _| {
            let keep = st.owners.contains_key(ip);
            if !keep {
                self.l2_owner.remove(&IpLabels { ip: ip.to_string() });
            }
            keep
        });
        for ip in st.owners.keys() {
            let v = i64::from(st.announcing.contains(ip));
            if set.insert(*ip, v) != Some(v) {
                self.l2_owner
                    .get_or_create(&IpLabels { ip: ip.to_string() })
                    .set(v);
            }
        }
        drop(set);
        for (iface, s) in &st.announcer.interfaces {
            let set = |kind: &str, n: u64| {
                self.l2_answered
                    .get_or_create(&IfaceLabels {
                        interface: iface.clone(),
                        kind: kind.into(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            };
            set("arp", s.arp_answered);
            set("ndp", s.ns_answered);
        }
        self.l2_waiting_release.set(count(st.waiting_release.len()));
        self.l2_gossip_refused.clear();
        for (why, n) in &st.gossip_refused {
            self.l2_gossip_refused
                .get_or_create(&ReasonLabels {
                    reason: why.as_str().into(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        let mut refused = self
            .refused_by_guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        refused.insert("local_address".into(), count(st.refused_local.len()));
        self.l2_refused.clear();
        for (reason, n) in refused {
            self.l2_refused
                .get_or_create(&ReasonLabels { reason })
                .set(n);
        }
    }

    /// The addresses the guard refused, by reason.
    pub fn set_refused(&self, refused: &BTreeMap<std::net::IpAddr, super::guard::Refusal>) {
        let mut by = BTreeMap::new();
        for why in refused.values() {
            *by.entry(why.label().to_string()).or_insert(0) += 1;
        }
        *self
            .refused_by_guard
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = by;
    }

    /// Whether the gossip is signed.
    pub fn set_gossip_signed(&self, signed: bool) {
        self.l2_gossip_signed.set(i64::from(signed));
    }

    /// Node addresses inside l2 pools.
    pub fn set_pool_overlaps(&self, n: usize) {
        self.l2_pool_overlaps
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Whether `trap` holds now.
    pub fn set_trap(&self, trap: &str, holds: bool) {
        self.l2_trap
            .get_or_create(&TrapLabels { trap: trap.into() })
            .set(i64::from(holds));
    }

    /// Refreshes the BGP gauges from the peers' status; a peer no longer configured (or
    /// every peer, when `peers` is empty because no BGP speaker runs) loses its series.
    pub fn set_bgp(&self, peers: &[PeerStatus]) {
        self.bgp_established.clear();
        self.bgp_updates.clear();
        self.bgp_prefixes.clear();
        self.bgp_flaps.clear();
        self.bgp_bfd_up.clear();
        for p in peers {
            let l = PeerLabels {
                peer: p.address.to_string(),
            };
            let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
            self.bgp_established
                .get_or_create(&l)
                .set(i64::from(p.state == BgpState::Established));
            self.bgp_updates
                .get_or_create(&l)
                .set(n(p.stats.updates_sent));
            self.bgp_prefixes
                .get_or_create(&l)
                .set(n(p.stats.prefixes_advertised as u64));
            self.bgp_flaps.get_or_create(&l).set(n(p.stats.flaps));
            if let Some(bfd) = &p.bfd {
                self.bgp_bfd_up
                    .get_or_create(&l)
                    .set(i64::from(bfd.state == portway_bgp::bfd::BfdState::Up));
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

async fn metrics(
    State(m): State<Arc<SpeakerMetrics>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

/// Serves `/metrics` and `/healthz` on `addr`; returns the bound address.
pub async fn serve(addr: SocketAddr, m: Arc<SpeakerMetrics>) -> anyhow::Result<SocketAddr> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(m);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_has(m: &SpeakerMetrics, line: &str) -> bool {
        let text = m.encode();
        text.lines().any(|l| l == line) || {
            eprintln!("{line} not in:\n{text}");
            false
        }
    }

    #[test]
    fn l2_series_render() {
        let m = SpeakerMetrics::new();
        let mut st = SpeakerStatus::default();
        let ip = "192.0.2.1".parse().expect("ip");
        st.owners = Arc::new([(ip, Some("n1".into()))].into());
        st.announcing = Arc::new([ip].into());
        st.quorum = Some(portway_l2::owner::quorum(
            "n1",
            &["n1".to_string(), "n2".to_string(), "n3".to_string()].into(),
            &["n2".to_string()].into(),
            false,
        ));
        m.set_l2(&st);
        assert!(text_has(&m, "portway_l2_live_speakers 2"));
        assert!(text_has(&m, "portway_l2_known_speakers 3"));
        assert!(text_has(&m, "portway_l2_quorum{reason=\"Majority\"} 1"));
        m.takeover(Some(Duration::from_millis(400)));
        let text = m.encode();
        assert!(
            text.contains("portway_l2_owner{ip=\"192.0.2.1\"} 1"),
            "{text}"
        );
        assert!(text.contains("portway_l2_takeovers_total 1"), "{text}");
        assert!(
            text.contains("portway_l2_takeover_latency_seconds_count 1"),
            "{text}"
        );
        // Another address comes, this node stops announcing the first, then it goes.
        let other = "192.0.2.2".parse().expect("ip");
        st.owners = Arc::new([(ip, Some("n2".into())), (other, Some("n1".into()))].into());
        st.announcing = Arc::new([other].into());
        m.set_l2(&st);
        assert!(text_has(&m, "portway_l2_owner{ip=\"192.0.2.1\"} 0"));
        assert!(text_has(&m, "portway_l2_owner{ip=\"192.0.2.2\"} 1"));
        st.owners = Arc::new([(other, Some("n1".into()))].into());
        m.set_l2(&st);
        assert!(
            !m.encode().contains("192.0.2.1"),
            "a gone address keeps no series"
        );
    }

    #[test]
    fn bgp_series_of_a_gone_peer_are_dropped() {
        let m = SpeakerMetrics::new();
        let peer = PeerStatus {
            address: "192.0.2.254:179".parse().expect("addr"),
            asn: 64512,
            state: BgpState::Established,
            stats: Default::default(),
            bfd: Some(portway_bgp::bfd::BfdStatus::default()),
        };
        let mut no_bfd = peer.clone();
        no_bfd.address = "192.0.2.253:179".parse().expect("addr");
        no_bfd.bfd = None;
        m.set_bgp(&[peer, no_bfd]);
        let text = m.encode();
        assert!(
            text.contains("portway_bgp_session_established{peer=\"192.0.2.254:179\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portway_bgp_bfd_up{peer=\"192.0.2.254:179\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("portway_bgp_bfd_up{peer=\"192.0.2.253:179\"}"),
            "no BFD series for a peer without bfd: {text}"
        );
        m.set_bgp(&[]);
        let text = m.encode();
        assert!(!text.contains("192.0.2.254"), "{text}");
    }
}
