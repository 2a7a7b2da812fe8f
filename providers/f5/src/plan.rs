//! Desired BIG-IP objects of a Service, and the plan that brings the partition there (pure).
//!
//! Three outcomes: nothing to write; only pool members changed (one PATCH per pool, since a
//! PATCH of `members` replaces the set and keeps everything else); or anything larger, as one
//! transaction in dependency order (monitors, pools, virtuals; deletions in reverse).

use crate::names::{destination, member_name, object_name, uri_name};
use portway_provider::{LbService, Protocol};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Metadata key holding the Service UID on every object we own.
pub const UID_TAG: &str = "portway-uid";
/// Metadata key holding `namespace/name`, for orphan sweeps.
pub const SERVICE_TAG: &str = "portway-service";

/// One REST call of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// `POST`, `PATCH` or `DELETE`.
    pub method: &'static str,
    /// Path under the device URL.
    pub path: String,
    /// JSON body (`Null` for DELETE).
    pub body: Value,
}

/// The objects a Service should have (bodies hold only fields we manage).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// TCP monitors (empty when the configuration names an existing monitor).
    pub monitors: Vec<Value>,
    /// Pools with inline members.
    pub pools: Vec<Value>,
    /// Virtual servers.
    pub virtuals: Vec<Value>,
}

/// What the partition holds now (as read, pools with `membersReference.items`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Current {
    /// `GET /mgmt/tm/ltm/monitor/tcp` items.
    pub monitors: Vec<Value>,
    /// `GET /mgmt/tm/ltm/pool?expandSubcollections=true` items.
    pub pools: Vec<Value>,
    /// `GET /mgmt/tm/ltm/virtual` items.
    pub virtuals: Vec<Value>,
}

/// What to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Members-only changes: (pool name, new members), one PATCH each, outside a transaction.
    pub member_patches: Vec<(String, Value)>,
    /// Everything else, as one transaction.
    pub transaction: Vec<Command>,
}

impl Plan {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.member_patches.is_empty() && self.transaction.is_empty()
    }
}

/// The `metadata` value that tags an object as ours.
pub fn tag(svc: &LbService) -> Value {
    json!([
        {"name": UID_TAG, "value": svc.uid, "persist": "true"},
        {"name": SERVICE_TAG, "value": format!("{}/{}", svc.key.namespace, svc.key.name), "persist": "true"},
    ])
}

/// The Service UID an object is tagged with.
pub fn tagged_uid(o: &Value) -> Option<&str> {
    o.get("metadata")?
        .as_array()?
        .iter()
        .find(|m| m["name"] == UID_TAG)?
        .get("value")?
        .as_str()
}

/// The `namespace/name` an object is tagged with.
pub fn tagged_service(o: &Value) -> Option<&str> {
    o.get("metadata")?
        .as_array()?
        .iter()
        .find(|m| m["name"] == SERVICE_TAG)?
        .get("value")?
        .as_str()
}

fn profile(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "/Common/udp",
        Protocol::Sctp => "/Common/sctp",
        _ => "/Common/tcp",
    }
}

/// The desired objects: per VIP and port a pool (members `ip:port` from `members[i]` for
/// port `i`), a virtual and, with `monitor == "tcp"`, a TCP monitor.
pub fn desired(
    svc: &LbService,
    vips: &[IpAddr],
    members: &[Vec<(IpAddr, u16)>],
    partition: &str,
    monitor: &str,
) -> Desired {
    let mut d = Desired::default();
    let ns = &svc.key.namespace;
    let name = &svc.key.name;
    let dual = vips.len() > 1;
    for vip in vips {
        let v6 = dual && vip.is_ipv6();
        for (i, port) in svc.ports.iter().enumerate() {
            let base = object_name(ns, name, port.protocol.as_str(), port.port, v6);
            let monitor_path = if monitor == "tcp" {
                d.monitors.push(json!({"name": base, "partition": partition,
                    "defaultsFrom": "/Common/tcp", "interval": 5, "timeout": 16, "metadata": tag(svc)}));
                format!("/{partition}/{base}")
            } else {
                monitor.to_string()
            };
            let mut ms: Vec<(String, String)> = members
                .get(i)
                .into_iter()
                .flatten()
                .filter(|(ip, _)| ip.is_ipv6() == vip.is_ipv6() || !dual)
                .map(|(ip, p)| (member_name(*ip, *p), ip.to_string()))
                .collect();
            ms.sort();
            ms.dedup();
            d.pools.push(json!({"name": base, "partition": partition, "loadBalancingMode": "round-robin",
                "monitor": monitor_path,
                "members": ms.iter().map(|(n, a)| json!({"name": n, "address": a})).collect::<Vec<_>>(),
                "metadata": tag(svc)}));
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
                "metadata": tag(svc)}));
        }
    }
    d
}

fn member_set(pool: &Value) -> BTreeSet<String> {
    let list = pool
        .pointer("/membersReference/items")
        .or_else(|| pool.get("members"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter_map(|m| m["name"].as_str().map(String::from))
        .collect()
}

fn differs(want: &Value, have: &Value, fields: &[&str]) -> bool {
    fields.iter().any(|f| {
        let (w, h) = (want.get(*f), have.get(*f));
        match *f {
            "sourceAddressTranslation" => {
                w.and_then(|v| v.get("type")) != h.and_then(|v| v.get("type"))
            }
            // A real BIG-IP lists profiles under profilesReference; compare only when shown.
            "profiles" => h.is_some() && w != h,
            _ => w != h,
        }
    })
}

fn find<'a>(list: &'a [Value], name: &Value) -> Option<&'a Value> {
    list.iter().find(|o| o["name"] == *name)
}

fn path(collection: &str, partition: &str, name: &str) -> String {
    format!("/mgmt/tm/ltm/{collection}/{}", uri_name(partition, name))
}

/// The plan from `current` (already filtered to this Service's tagged objects) to `want`.
pub fn plan(want: &Desired, current: &Current, partition: &str) -> Plan {
    let mut p = Plan::default();
    let mut tx = Vec::new();
    let mut member_only = Vec::new();
    for m in &want.monitors {
        match find(&current.monitors, &m["name"]) {
            None => tx.push(Command { method: "POST", path: "/mgmt/tm/ltm/monitor/tcp".into(), body: m.clone() }),
            Some(h) if differs(m, h, &["interval", "timeout", "defaultsFrom"]) => tx.push(Command {
                method: "PATCH",
                path: path("monitor/tcp", partition, m["name"].as_str().unwrap_or("")),
                body: json!({"interval": m["interval"], "timeout": m["timeout"], "defaultsFrom": m["defaultsFrom"]}),
            }),
            Some(_) => {}
        }
    }
    for pool in &want.pools {
        let name = pool["name"].as_str().unwrap_or("");
        match find(&current.pools, &pool["name"]) {
            None => tx.push(Command {
                method: "POST",
                path: "/mgmt/tm/ltm/pool".into(),
                body: pool.clone(),
            }),
            Some(h) => {
                let members_changed = member_set(pool) != member_set(h);
                if differs(pool, h, &["monitor", "loadBalancingMode"]) {
                    tx.push(Command {
                        method: "PATCH",
                        path: path("pool", partition, name),
                        body: json!({"monitor": pool["monitor"], "loadBalancingMode": pool["loadBalancingMode"], "members": pool["members"]}),
                    });
                } else if members_changed {
                    member_only.push((name.to_string(), pool["members"].clone()));
                }
            }
        }
    }
    let mut deletes = Vec::new();
    for v in &want.virtuals {
        let name = v["name"].as_str().unwrap_or("");
        match find(&current.virtuals, &v["name"]) {
            None => tx.push(Command {
                method: "POST",
                path: "/mgmt/tm/ltm/virtual".into(),
                body: v.clone(),
            }),
            Some(h) if differs(v, h, &["destination", "ipProtocol"]) => {
                // A new address or protocol is a new virtual: delete and create.
                tx.push(Command {
                    method: "DELETE",
                    path: path("virtual", partition, name),
                    body: Value::Null,
                });
                tx.push(Command {
                    method: "POST",
                    path: "/mgmt/tm/ltm/virtual".into(),
                    body: v.clone(),
                });
            }
            Some(h)
                if differs(
                    v,
                    h,
                    &[
                        "pool",
                        "sourceAddressTranslation",
                        "profiles",
                        "mask",
                        "source",
                    ],
                ) =>
            {
                tx.push(Command {
                    method: "PATCH",
                    path: path("virtual", partition, name),
                    body: json!({"pool": v["pool"], "sourceAddressTranslation": v["sourceAddressTranslation"], "profiles": v["profiles"]}),
                });
            }
            Some(_) => {}
        }
    }
    for h in &current.virtuals {
        if find(&want.virtuals, &h["name"]).is_none() {
            deletes.push(Command {
                method: "DELETE",
                path: path("virtual", partition, h["name"].as_str().unwrap_or("")),
                body: Value::Null,
            });
        }
    }
    for h in &current.pools {
        if find(&want.pools, &h["name"]).is_none() {
            deletes.push(Command {
                method: "DELETE",
                path: path("pool", partition, h["name"].as_str().unwrap_or("")),
                body: Value::Null,
            });
        }
    }
    for h in &current.monitors {
        if find(&want.monitors, &h["name"]).is_none() {
            deletes.push(Command {
                method: "DELETE",
                path: path("monitor/tcp", partition, h["name"].as_str().unwrap_or("")),
                body: Value::Null,
            });
        }
    }
    tx.extend(deletes);
    if tx.is_empty() {
        p.member_patches = member_only;
    } else {
        // Fold member changes into the transaction so the whole change is atomic.
        for (name, members) in member_only {
            let pos = tx
                .iter()
                .position(|c| c.path.starts_with("/mgmt/tm/ltm/virtual"))
                .unwrap_or(tx.len());
            tx.insert(
                pos,
                Command {
                    method: "PATCH",
                    path: path("pool", partition, &name),
                    body: json!({"members": members}),
                },
            );
        }
        p.transaction = tx;
    }
    p
}

/// Deleting everything of a Service: virtuals, then pools, then monitors.
pub fn plan_delete(current: &Current, partition: &str) -> Vec<Command> {
    plan(&Desired::default(), current, partition).transaction
}

#[cfg(test)]
mod tests {
    use super::*;
    use portway_provider::{LbPort, ServiceKey};

    fn svc() -> LbService {
        LbService {
            key: ServiceKey::new("default", "web"),
            uid: "u-1".into(),
            ports: vec![
                LbPort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: Some(30080),
                },
                LbPort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 53,
                    node_port: Some(30053),
                },
            ],
            ..Default::default()
        }
    }

    fn members(nodes: &[&str]) -> Vec<Vec<(IpAddr, u16)>> {
        vec![
            nodes
                .iter()
                .map(|n| (n.parse().expect("ip"), 30080))
                .collect(),
            nodes
                .iter()
                .map(|n| (n.parse().expect("ip"), 30053))
                .collect(),
        ]
    }

    /// What a BIG-IP would return after applying `d`.
    fn applied(d: &Desired) -> Current {
        Current {
            monitors: d.monitors.clone(),
            pools: d
                .pools
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    let ms = p
                        .as_object_mut()
                        .and_then(|m| m.remove("members"))
                        .unwrap_or_default();
                    p["membersReference"] = json!({"items": ms});
                    p
                })
                .collect(),
            virtuals: d.virtuals.clone(),
        }
    }

    #[test]
    fn create_is_one_ordered_transaction() {
        let vip: IpAddr = "203.0.113.10".parse().expect("ip");
        let d = desired(
            &svc(),
            &[vip],
            &members(&["10.0.0.1", "10.0.0.2"]),
            "portway",
            "tcp",
        );
        let p = plan(&d, &Current::default(), "portway");
        assert!(p.member_patches.is_empty());
        let kinds: Vec<String> = p
            .transaction
            .iter()
            .map(|c| format!("{} {}", c.method, c.path))
            .collect();
        assert_eq!(
            kinds,
            vec![
                "POST /mgmt/tm/ltm/monitor/tcp",
                "POST /mgmt/tm/ltm/monitor/tcp",
                "POST /mgmt/tm/ltm/pool",
                "POST /mgmt/tm/ltm/pool",
                "POST /mgmt/tm/ltm/virtual",
                "POST /mgmt/tm/ltm/virtual",
            ]
        );
        assert_eq!(d.virtuals[1]["ipProtocol"], "udp");
        assert_eq!(d.virtuals[0]["destination"], "/portway/203.0.113.10:80");
    }

    #[test]
    fn in_sync_is_empty_and_members_change_is_patches_only() {
        let vip: IpAddr = "203.0.113.10".parse().expect("ip");
        let d = desired(&svc(), &[vip], &members(&["10.0.0.1"]), "portway", "tcp");
        let cur = applied(&d);
        assert!(plan(&d, &cur, "portway").is_empty());
        let d2 = desired(
            &svc(),
            &[vip],
            &members(&["10.0.0.1", "10.0.0.2"]),
            "portway",
            "tcp",
        );
        let p = plan(&d2, &cur, "portway");
        assert!(p.transaction.is_empty());
        assert_eq!(p.member_patches.len(), 2);
        assert!(
            p.member_patches[0]
                .1
                .as_array()
                .is_some_and(|m| m.len() == 2 && m.iter().all(|x| x.get("address").is_some()))
        );
        // Empty member lists are valid.
        let d3 = desired(&svc(), &[vip], &members(&[]), "portway", "tcp");
        assert_eq!(plan(&d3, &cur, "portway").member_patches[0].1, json!([]));
    }

    #[test]
    fn removed_port_deletes_in_reverse_order_and_delete_plan() {
        let vip: IpAddr = "203.0.113.10".parse().expect("ip");
        let d = desired(&svc(), &[vip], &members(&["10.0.0.1"]), "portway", "tcp");
        let cur = applied(&d);
        let mut one = svc();
        one.ports.truncate(1);
        let p = plan(
            &desired(&one, &[vip], &members(&["10.0.0.1"]), "portway", "tcp"),
            &cur,
            "portway",
        );
        let kinds: Vec<&str> = p.transaction.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            kinds,
            vec![
                "/mgmt/tm/ltm/virtual/~portway~pw_default_web_udp_53",
                "/mgmt/tm/ltm/pool/~portway~pw_default_web_udp_53",
                "/mgmt/tm/ltm/monitor/tcp/~portway~pw_default_web_udp_53",
            ]
        );
        assert_eq!(plan_delete(&cur, "portway").len(), 6);
    }

    #[test]
    fn vip_change_recreates_the_virtual() {
        let d = desired(
            &svc(),
            &["203.0.113.10".parse().expect("ip")],
            &members(&["10.0.0.1"]),
            "portway",
            "tcp",
        );
        let cur = applied(&d);
        let d2 = desired(
            &svc(),
            &["203.0.113.11".parse().expect("ip")],
            &members(&["10.0.0.1"]),
            "portway",
            "tcp",
        );
        let p = plan(&d2, &cur, "portway");
        assert_eq!(
            p.transaction
                .iter()
                .filter(|c| c.method == "DELETE")
                .count(),
            2
        );
        assert_eq!(
            p.transaction.iter().filter(|c| c.method == "POST").count(),
            2
        );
    }
}
