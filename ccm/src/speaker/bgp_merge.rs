//! The `bgp` configuration one node's speaker runs: the file's `bgp` section plus the
//! `BGPPeer` and `BGPAdvertisement` resources (issue 23). Pure, so the rules are tested
//! without a cluster.
//!
//! Which wins (docs/configuration.md#bgp-peers-and-advertisements-as-resources): the file,
//! as for pools. A BGPPeer with the address and port of a file peer is left out (and
//! logged by the caller), so a `kubectl apply` can never take over a session the file
//! configures; between two resources the older one (creation time, then name) wins.
//! A resource peer whose fields the speaker refuses (timers, ASN) is left out with the
//! reason. Node selectors are evaluated here, against this node's labels, because a
//! BGPPeer's `nodeSelectors` are full label selectors (any of them matches), which the
//! file's `nodeSelector` map cannot express; the peers handed on select this node.

use crate::crd::{BGPAdvertisement, BGPPeer};
use crate::pools::merge::selector;
use kube::ResourceExt;
use portway_bgp::{AdvertisementConfig, BgpConfig, PeerConfig, SecretRef};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The merged configuration and what became of each resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EffectiveBgp {
    /// File peers and advertisements first, then the accepted resources'.
    pub config: BgpConfig,
    /// BGPPeer name -> its session's address, for the peers that select this node.
    pub named: BTreeMap<String, SocketAddr>,
    /// BGPPeer name -> why it is left out on this node (shown in its status).
    pub refused: BTreeMap<String, String>,
}

/// Merges `file` with the resources for a node with `labels`. The file's own peers keep
/// their `nodeSelector` (the speaker applies it).
pub fn effective(
    file: &BgpConfig,
    peers: &[BGPPeer],
    advertisements: &[BGPAdvertisement],
    labels: &BTreeMap<String, String>,
) -> EffectiveBgp {
    let mut out = EffectiveBgp {
        config: file.clone(),
        ..EffectiveBgp::default()
    };
    let mut taken: Vec<SocketAddr> = file.peers.iter().filter_map(socket).collect();
    let mut sorted: Vec<&BGPPeer> = peers
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    sorted.sort_by_key(|p| (p.metadata.creation_timestamp.clone(), p.name_any()));
    for p in sorted {
        let name = p.name_any();
        let selected = p.spec.node_selectors.is_empty()
            || p.spec
                .node_selectors
                .iter()
                .any(|s| selector(Some(s)).matches(labels));
        if !selected {
            continue;
        }
        let peer = match to_peer(p, file.local_asn) {
            Ok(peer) => peer,
            Err(why) => {
                out.refused.insert(name, why);
                continue;
            }
        };
        let Some(at) = socket(&peer) else {
            out.refused
                .insert(name, "spec.peerAddress is not an IP address".into());
            continue;
        };
        if taken.contains(&at) {
            out.refused.insert(
                name,
                format!("{at} is already a peer (the configuration file's or an older BGPPeer's); the first one wins"),
            );
            continue;
        }
        taken.push(at);
        out.named.insert(name, at);
        out.config.peers.push(peer);
    }
    for a in advertisements
        .iter()
        .filter(|a| a.metadata.deletion_timestamp.is_none())
    {
        let Some(adv) = to_advertisement(a, &out.named) else {
            continue;
        };
        // The schema checks communities already; an advertisement the speaker would still
        // refuse is left out alone, never the whole configuration.
        let alone = BgpConfig {
            advertisements: vec![adv.clone()],
            ..out.config.clone()
        };
        if alone.validate().is_empty() {
            out.config.advertisements.push(adv);
        } else {
            tracing::warn!(advertisement = %a.name_any(), "BGPAdvertisement left out: the speaker refuses its values");
        }
    }
    out
}

fn socket(p: &PeerConfig) -> Option<SocketAddr> {
    Some(SocketAddr::new(p.address.parse::<IpAddr>().ok()?, p.port))
}

/// A BGPPeer as a file peer, checked as the speaker checks the file.
fn to_peer(p: &BGPPeer, file_asn: u32) -> Result<PeerConfig, String> {
    let s = &p.spec;
    let asn = |v: i64, field: &str| {
        u32::try_from(v).map_err(|_| format!("spec.{field}: {v} is not a 32-bit AS number"))
    };
    let duration = |v: &Option<String>, field: &str, default: u64| match v {
        None => Ok(Duration::from_secs(default)),
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| format!("spec.{field}: {t:?} is not a duration ({e})")),
    };
    let my_asn = asn(s.my_asn, "myASN")?;
    let peer = PeerConfig {
        address: s.peer_address.clone(),
        asn: asn(s.peer_asn, "peerASN")?,
        local_asn: (my_asn != file_asn).then_some(my_asn),
        port: u16::try_from(s.peer_port)
            .map_err(|_| format!("spec.peerPort: {} is not a port", s.peer_port))?,
        hold_time: duration(&s.hold_time, "holdTime", 90)?,
        keepalive_time: duration(&s.keepalive_time, "keepaliveTime", 30)?,
        source_address: s.source_address.clone().unwrap_or_default(),
        // 0 or absent: directly connected, as the CRD documents.
        ebgp_multihop: s
            .ebgp_multihop
            .and_then(|h| u8::try_from(h).ok())
            .filter(|h| *h > 0)
            .unwrap_or(1),
        node_selector: BTreeMap::new(),
        password_secret: s.password_secret.as_ref().map(|r| SecretRef {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            key: r.key.clone(),
        }),
        graceful_restart: s.graceful_restart,
        graceful_restart_time: Duration::from_secs(120),
        bfd: None,
    };
    let alone = BgpConfig {
        local_asn: file_asn,
        router_id: String::new(),
        peers: vec![peer.clone()],
        advertisements: Vec::new(),
    };
    let issues = alone.validate();
    if issues.is_empty() {
        Ok(peer)
    } else {
        // The speaker's key paths (`bgp.peers[0].holdTime`) name the spec field.
        Err(issues
            .iter()
            .map(|i| i.to_string().replace("bgp.peers[0].", "spec."))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// A BGPAdvertisement in the file's shape; its `peers` are BGPPeer names, turned into
/// addresses. One that names peers none of which peer from this node is left out here
/// (rather than read as "every peer").
fn to_advertisement(
    a: &BGPAdvertisement,
    named: &BTreeMap<String, SocketAddr>,
) -> Option<AdvertisementConfig> {
    let s = &a.spec;
    let peers: Vec<String> = s
        .peers
        .iter()
        .filter_map(|n| named.get(n).map(|at| at.ip().to_string()))
        .collect();
    if !s.peers.is_empty() && peers.is_empty() {
        return None;
    }
    let len = |v: i32, default: u8| u8::try_from(v).ok().filter(|l| *l > 0).unwrap_or(default);
    Some(AdvertisementConfig {
        pools: s.pools.clone(),
        aggregation_length: len(s.aggregation_length, 32),
        aggregation_length_v6: len(s.aggregation_length_v6, 128),
        communities: s.communities.clone(),
        large_communities: s.large_communities.clone(),
        local_pref: u32::try_from(s.local_pref).unwrap_or(0),
        peers,
    })
}

#[cfg(test)]
#[path = "bgp_merge_tests.rs"]
mod tests;
