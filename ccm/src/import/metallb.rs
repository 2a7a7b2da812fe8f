//! MetalLB's resources (`metallb.io`: IPAddressPool, L2Advertisement, BGPAdvertisement,
//! BGPPeer, Community) translated into Portway's, field by field, with a note for every
//! field that has no equivalent so nothing is dropped silently.

use crate::crd::bgp::SecretKeyRef;
use crate::crd::pool::ServiceAllocationSpec;
use crate::crd::{
    AddressPool, AddressPoolSpec, BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec,
    L2AnnouncementPolicy, L2AnnouncementPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;
use std::collections::BTreeMap;

/// The translation: Portway's resources and what could not be carried over.
#[derive(Debug, Default)]
pub struct Imported {
    /// One per IPAddressPool.
    pub pools: Vec<AddressPool>,
    /// One per L2Advertisement.
    pub l2: Vec<L2AnnouncementPolicy>,
    /// One per BGPPeer.
    pub peers: Vec<BGPPeer>,
    /// One per BGPAdvertisement.
    pub advertisements: Vec<BGPAdvertisement>,
    /// `Kind/name: field: why`, for every field left out or changed.
    pub notes: Vec<String>,
}

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn strings(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn selectors(v: &Value, ptr: &str) -> Vec<LabelSelector> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| serde_json::from_value(x.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A DNS-1123 name for a MetalLB name (`PoolA` -> `poola`), noting a change.
fn dns_name(name: &str, at: &str, notes: &mut Vec<String>) -> String {
    let out: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    if out != name {
        notes.push(format!(
            "{at}: name {name:?} renamed {out:?} (Portway names are DNS names)"
        ));
    }
    out
}

/// Translates MetalLB documents (any order; other kinds are noted and skipped). A name used
/// twice for one kind keeps the last document, as `kubectl apply` would.
pub fn translate(docs: &[Value]) -> Imported {
    let mut out = Imported::default();
    let communities = community_aliases(docs);
    let pool_labels: BTreeMap<String, BTreeMap<String, String>> = docs
        .iter()
        .filter(|d| s(d, "/kind") == Some("IPAddressPool"))
        .filter_map(|d| {
            let name = s(d, "/metadata/name")?.to_string();
            let labels = d
                .pointer("/metadata/labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .unwrap_or_default();
            Some((name, labels))
        })
        .collect();
    for d in docs {
        let kind = s(d, "/kind").unwrap_or("");
        let name = s(d, "/metadata/name").unwrap_or("").to_string();
        let at = format!("{kind}/{name}");
        match kind {
            "IPAddressPool" => {
                let p = pool(d, &name, &at, &mut out.notes);
                out.pools.retain(|x| x.metadata.name != p.metadata.name);
                out.pools.push(p);
            }
            "L2Advertisement" => {
                let p = l2(d, &name, &at, &pool_labels, &mut out.notes);
                out.l2.retain(|x| x.metadata.name != p.metadata.name);
                out.l2.push(p);
            }
            "BGPAdvertisement" => {
                let a = advertisement(d, &name, &at, &pool_labels, &communities, &mut out.notes);
                out.advertisements
                    .retain(|x| x.metadata.name != a.metadata.name);
                out.advertisements.push(a);
            }
            "BGPPeer" => {
                if let Some(p) = peer(d, &name, &at, &mut out.notes) {
                    out.peers.retain(|x| x.metadata.name != p.metadata.name);
                    out.peers.push(p);
                }
            }
            "Community" => {} // resolved into the advertisements that use the aliases
            _ => out.notes.push(format!(
                "{at}: kind {kind} has no Portway equivalent; left out"
            )),
        }
    }
    out
}

fn pool(d: &Value, name: &str, at: &str, notes: &mut Vec<String>) -> AddressPool {
    let mut addresses = Vec::new();
    for a in strings(d, "/spec/addresses") {
        // A CIDR with host bits (198.51.100.10/24) means its network in MetalLB.
        match a.parse::<ipnet::IpNet>() {
            Ok(net) if net.trunc() != net => {
                notes.push(format!(
                    "{at}: spec.addresses: {a} written as {}",
                    net.trunc()
                ));
                addresses.push(net.trunc().to_string());
            }
            _ => addresses.push(a),
        }
    }
    let alloc = d.pointer("/spec/serviceAllocation");
    let service_allocation = alloc.map(|a| {
        let ns_sel = selectors(a, "/namespaceSelectors");
        let svc_sel = selectors(a, "/serviceSelectors");
        if ns_sel.len() > 1 || svc_sel.len() > 1 {
            notes.push(format!(
                "{at}: spec.serviceAllocation: only the first namespaceSelector and \
                 serviceSelector are kept (Portway takes one of each); check the others"
            ));
        }
        ServiceAllocationSpec {
            priority: a
                .pointer("/priority")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
            namespaces: strings(a, "/namespaces"),
            namespace_selector: ns_sel.into_iter().next(),
            service_selector: svc_sel.into_iter().next(),
        }
    });
    AddressPool::new(
        &dns_name(name, at, notes),
        AddressPoolSpec {
            addresses,
            auto_assign: d
                .pointer("/spec/autoAssign")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            avoid_buggy_ips: d
                .pointer("/spec/avoidBuggyIPs")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            service_allocation,
        },
    )
}

/// Pools named, plus those an `ipAddressPoolSelectors` selects among the imported pools.
fn named_pools(
    d: &Value,
    at: &str,
    pool_labels: &BTreeMap<String, BTreeMap<String, String>>,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let mut pools: Vec<String> = strings(d, "/spec/ipAddressPools")
        .iter()
        .map(|p| dns_name(p, &format!("{at}: spec.ipAddressPools"), notes))
        .collect();
    let sels = selectors(d, "/spec/ipAddressPoolSelectors");
    if !sels.is_empty() {
        for (name, labels) in pool_labels {
            if sels.iter().any(|sel| selects(sel, labels)) && !pools.contains(name) {
                pools.push(dns_name(name, at, notes));
            }
        }
        notes.push(format!(
            "{at}: spec.ipAddressPoolSelectors resolved to the pools they select now ({pools:?}); \
             a pool labelled later is not added"
        ));
    }
    pools
}

fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    crate::pools::merge::selector(Some(sel)).matches(labels)
}

fn l2(
    d: &Value,
    name: &str,
    at: &str,
    pool_labels: &BTreeMap<String, BTreeMap<String, String>>,
    notes: &mut Vec<String>,
) -> L2AnnouncementPolicy {
    L2AnnouncementPolicy::new(
        &dns_name(name, at, notes),
        L2AnnouncementPolicySpec {
            pools: named_pools(d, at, pool_labels, notes),
            node_selectors: selectors(d, "/spec/nodeSelectors"),
            interfaces: strings(d, "/spec/interfaces"),
        },
    )
}

fn community_aliases(docs: &[Value]) -> BTreeMap<String, String> {
    docs.iter()
        .filter(|d| s(d, "/kind") == Some("Community"))
        .flat_map(|d| {
            d.pointer("/spec/communities")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| Some((s(&c, "/name")?.to_string(), s(&c, "/value")?.to_string())))
        .collect()
}

fn advertisement(
    d: &Value,
    name: &str,
    at: &str,
    pool_labels: &BTreeMap<String, BTreeMap<String, String>>,
    aliases: &BTreeMap<String, String>,
    notes: &mut Vec<String>,
) -> BGPAdvertisement {
    let (mut communities, mut large) = (Vec::new(), Vec::new());
    for c in strings(d, "/spec/communities") {
        let value = aliases.get(&c).cloned().unwrap_or(c);
        match value.strip_prefix("large:") {
            Some(l) => large.push(l.to_string()),
            None => communities.push(value),
        }
    }
    if !selectors(d, "/spec/nodeSelectors").is_empty() {
        notes.push(format!(
            "{at}: spec.nodeSelectors (advertise from some nodes only) has no equivalent on \
             the advertisement; select the nodes with the BGPPeer's nodeSelectors instead"
        ));
    }
    let mut pools = named_pools(d, at, pool_labels, notes);
    if pools.is_empty() {
        // MetalLB: no pool named means every pool.
        pools = pool_labels.keys().map(|p| dns_name(p, at, notes)).collect();
    }
    let num = |p: &str| d.pointer(p).and_then(Value::as_i64);
    BGPAdvertisement::new(
        &dns_name(name, at, notes),
        BGPAdvertisementSpec {
            pools,
            aggregation_length: num("/spec/aggregationLength")
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| (0..32).contains(n))
                .unwrap_or(0),
            aggregation_length_v6: num("/spec/aggregationLengthV6")
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| (0..128).contains(n))
                .unwrap_or(0),
            communities,
            large_communities: large,
            local_pref: num("/spec/localPref").unwrap_or(0),
            peers: strings(d, "/spec/peers")
                .iter()
                .map(|p| dns_name(p, &format!("{at}: spec.peers"), notes))
                .collect(),
        },
    )
}

fn peer(d: &Value, name: &str, at: &str, notes: &mut Vec<String>) -> Option<BGPPeer> {
    let asn = |p: &str| d.pointer(p).and_then(Value::as_i64);
    let (Some(my_asn), Some(peer_address)) = (asn("/spec/myASN"), s(d, "/spec/peerAddress")) else {
        notes.push(format!("{at}: no myASN or peerAddress; left out"));
        return None;
    };
    let peer_asn = match asn("/spec/peerASN") {
        Some(a) => a,
        None => {
            notes.push(format!(
                "{at}: spec.dynamicASN has no equivalent; set peerASN (used myASN: iBGP)"
            ));
            my_asn
        }
    };
    for (field, why) in [
        (
            "password",
            "an inline password is not accepted: put it in a Secret (key `password`) and set spec.passwordSecret",
        ),
        (
            "bfdProfile",
            "BFD is configured in the file's bgp.peers[].bfd",
        ),
        ("routerID", "the router ID is the node's address"),
        ("vrf", "VRFs are not supported"),
        ("connectTime", "the connect retry timer is fixed"),
        ("disableMP", "multiprotocol BGP is always on"),
    ] {
        if d.pointer(&format!("/spec/{field}")).is_some() {
            notes.push(format!("{at}: spec.{field}: {why}"));
        }
    }
    let password_secret = d.pointer("/spec/passwordSecret").map(|p| SecretKeyRef {
        name: s(p, "/name").unwrap_or_default().to_string(),
        namespace: s(p, "/namespace")
            .or(s(d, "/metadata/namespace"))
            .unwrap_or("metallb-system")
            .to_string(),
        key: "password".to_string(),
    });
    let ebgp_multihop = d
        .pointer("/spec/ebgpMultiHop")
        .and_then(Value::as_bool)
        .filter(|b| *b)
        .map(|_| 255);
    Some(BGPPeer::new(
        &dns_name(name, at, notes),
        BGPPeerSpec {
            my_asn,
            peer_asn,
            peer_address: peer_address.to_string(),
            peer_port: d
                .pointer("/spec/peerPort")
                .and_then(Value::as_i64)
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(179),
            source_address: s(d, "/spec/sourceAddress").map(str::to_string),
            hold_time: s(d, "/spec/holdTime").map(str::to_string),
            keepalive_time: s(d, "/spec/keepaliveTime").map(str::to_string),
            ebgp_multihop,
            password_secret,
            node_selectors: selectors(d, "/spec/nodeSelectors"),
            graceful_restart: d
                .pointer("/spec/enableGracefulRestart")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
    ))
}
