//! The BIG-IP objects a Service should have (pure).
//!
//! Per VIP and port: a pool, a virtual server and, when the port's protocol is configured
//! to use one Portway makes, a monitor of that kind. Every body holds only properties of its
//! object kind (F5Networks/f5-appsvcs-extension `src/lib/properties.json`: a device refuses
//! anything else with 400 "Found unexpected json pair"), and the tag is a `description`
//! (see [`crate::tag`]).

use crate::config::{MonitorChoice, Monitors};
use crate::names::{destination, monitor_name, object_name};
use crate::tag::description;
use portway_provider::{LbService, Protocol};
use serde_json::{Value, json};
use std::net::IpAddr;

/// A pool and the `(address, port)` of its members (which node each names is decided
/// against the device's nodes, [`crate::nodes::NodeIndex`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredPool {
    /// The pool's own properties (`name`, `partition`, `loadBalancingMode`, `monitor` unless
    /// none, `description`).
    pub body: Value,
    /// Members, sorted and without duplicates.
    pub members: Vec<(IpAddr, u16)>,
}

/// The objects a Service should have.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// Monitors Portway makes, with their kind.
    pub monitors: Vec<(crate::config::MonitorKind, Value)>,
    /// Pools.
    pub pools: Vec<DesiredPool>,
    /// Virtual servers.
    pub virtuals: Vec<Value>,
}

fn profile(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "/Common/udp",
        Protocol::Sctp => "/Common/sctp",
        _ => "/Common/tcp",
    }
}

/// The desired objects: per VIP and port `i` a pool (members from `members[i]`), a virtual
/// and the monitor `monitors` names for the port's protocol.
pub fn desired(
    svc: &LbService,
    vips: &[IpAddr],
    members: &[Vec<(IpAddr, u16)>],
    partition: &str,
    monitors: &Monitors,
) -> Desired {
    let mut d = Desired::default();
    let ns = &svc.key.namespace;
    let name = &svc.key.name;
    let tag = description(svc);
    let dual = vips.len() > 1;
    for vip in vips {
        let v6 = dual && vip.is_ipv6();
        for (i, port) in svc.ports.iter().enumerate() {
            let base = object_name(ns, name, port.protocol.as_str(), port.port, v6);
            let choice = match port.protocol {
                Protocol::Udp => &monitors.udp,
                Protocol::Sctp => &monitors.sctp,
                _ => &monitors.tcp,
            };
            let monitor = match choice {
                MonitorChoice::Make(kind) => {
                    let m = monitor_name(&base, *kind);
                    d.monitors.push((
                        *kind,
                        json!({"name": m, "partition": partition, "defaultsFrom": kind.parent(),
                            "interval": 5, "timeout": 16, "description": tag}),
                    ));
                    Some(format!("/{partition}/{m}"))
                }
                MonitorChoice::Existing(path) => Some(path.clone()),
                MonitorChoice::None => None,
            };
            let mut ms: Vec<(IpAddr, u16)> = members
                .get(i)
                .into_iter()
                .flatten()
                .filter(|(ip, _)| ip.is_ipv6() == vip.is_ipv6() || !dual)
                .copied()
                .collect();
            ms.sort();
            ms.dedup();
            let mut pool = json!({"name": base, "partition": partition,
                "loadBalancingMode": "round-robin", "description": tag});
            if let Some(m) = monitor {
                pool["monitor"] = json!(m);
            }
            d.pools.push(DesiredPool {
                body: pool,
                members: ms,
            });
            let (mask, source) = if vip.is_ipv6() {
                ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0")
            } else {
                ("255.255.255.255", "0.0.0.0/0")
            };
            d.virtuals.push(json!({"name": base, "partition": partition,
                "destination": destination(partition, *vip, port.port), "mask": mask, "source": source,
                "ipProtocol": port.protocol.as_str().to_lowercase(),
                "pool": format!("/{partition}/{base}"),
                "sourceAddressTranslation": {"type": "automap"},
                "profiles": [{"name": profile(port.protocol), "context": "all"}],
                "description": tag}));
        }
    }
    d
}
