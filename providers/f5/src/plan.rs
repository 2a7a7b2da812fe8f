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
    /// Members carry only their `name` (`ip:port`): BIG-IP refuses `address` in a PATCH.
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

/// Members as a PATCH sends them: `{"name": "<ip>:<port>"}` only. BIG-IP derives the node
/// from the name and refuses an `address` on a member that exists ("address may not be
/// specified"); `address` belongs in the pool POST that creates the member.
fn patch_members(pool: &Value) -> Value {
    let names = pool["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| json!({"name": m["name"]}));
    Value::Array(names.collect())
}

/// Fields of a monitor that are diffed, and therefore PATCHed when they differ.
const MONITOR_FIELDS: &[&str] = &["interval", "timeout", "defaultsFrom"];
/// Fields of a pool, besides its members, that are diffed and PATCHed.
const POOL_FIELDS: &[&str] = &["monitor", "loadBalancingMode"];
/// Fields of a virtual that are diffed and PATCHed. (A different `destination` or
/// `ipProtocol` recreates the virtual instead.)
const VIRTUAL_FIELDS: &[&str] = &[
    "pool",
    "sourceAddressTranslation",
    "profiles",
    "mask",
    "source",
];

/// A PATCH body with exactly the `fields` of `want` that are diffed: a field that is compared
/// but not sent would differ again after the PATCH and make every ensure write.
fn patch_body(want: &Value, fields: &[&str]) -> Value {
    Value::Object(
        fields
            .iter()
            .filter_map(|f| want.get(*f).map(|v| ((*f).to_string(), v.clone())))
            .collect(),
    )
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
            None => tx.push(Command {
                method: "POST",
                path: "/mgmt/tm/ltm/monitor/tcp".into(),
                body: m.clone(),
            }),
            Some(h) if differs(m, h, MONITOR_FIELDS) => tx.push(Command {
                method: "PATCH",
                path: path("monitor/tcp", partition, m["name"].as_str().unwrap_or("")),
                body: patch_body(m, MONITOR_FIELDS),
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
                if differs(pool, h, POOL_FIELDS) {
                    let mut body = patch_body(pool, POOL_FIELDS);
                    body["members"] = patch_members(pool);
                    tx.push(Command {
                        method: "PATCH",
                        path: path("pool", partition, name),
                        body,
                    });
                } else if members_changed {
                    member_only.push((name.to_string(), patch_members(pool)));
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
            Some(h) if differs(v, h, VIRTUAL_FIELDS) => {
                tx.push(Command {
                    method: "PATCH",
                    path: path("virtual", partition, name),
                    body: patch_body(v, VIRTUAL_FIELDS),
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
        // A member PATCH names members only: BIG-IP refuses `address` there.
        assert!(
            p.member_patches[0]
                .1
                .as_array()
                .is_some_and(|m| m.len() == 2
                    && m.iter()
                        .all(|x| x.get("address").is_none() && x["name"].is_string())),
            "{:?}",
            p.member_patches
        );
        assert_eq!(
            p.member_patches[0].1,
            json!([{"name": "10.0.0.1:30080"}, {"name": "10.0.0.2:30080"}])
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
        // Deleting everything (nothing desired): virtuals, then pools, then monitors.
        let all = plan(&Desired::default(), &cur, "portway").transaction;
        assert_eq!(all.len(), 6);
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

    /// `current` after the PATCHes of `p` (fields merged, members replaced) were applied, as
    /// a BIG-IP would report it.
    fn patched(current: &Current, p: &Plan) -> Current {
        let mut c = current.clone();
        let patches = p
            .transaction
            .iter()
            .filter(|x| x.method == "PATCH")
            .map(|x| (x.path.clone(), x.body.clone()))
            .chain(p.member_patches.iter().map(|(name, members)| {
                (path("pool", "portway", name), json!({"members": members}))
            }));
        for (at, body) in patches {
            let (list, collection) = if at.starts_with("/mgmt/tm/ltm/virtual/") {
                (&mut c.virtuals, "virtual")
            } else if at.starts_with("/mgmt/tm/ltm/pool/") {
                (&mut c.pools, "pool")
            } else {
                (&mut c.monitors, "monitor/tcp")
            };
            let o = list
                .iter_mut()
                .find(|o| path(collection, "portway", o["name"].as_str().unwrap_or("")) == at)
                .expect("PATCH of an object that exists");
            for (k, v) in body.as_object().expect("PATCH body is an object") {
                if k == "members" {
                    o["membersReference"] = json!({"items": v});
                } else {
                    o[k] = v.clone();
                }
            }
        }
        c
    }

    #[test]
    fn every_patch_names_members_without_address() {
        let vip: IpAddr = "203.0.113.10".parse().expect("ip");
        let d = desired(&svc(), &[vip], &members(&["10.0.0.1"]), "portway", "tcp");
        let mut cur = applied(&d);
        // A monitor changed by hand: the pool PATCH (in a transaction) carries the members.
        cur.pools[0]["monitor"] = json!("/Common/http");
        // A member added on the other pool: folded into the same transaction.
        let d2 = desired(
            &svc(),
            &[vip],
            &members(&["10.0.0.1", "fd00::2"]),
            "portway",
            "tcp",
        );
        let p = plan(&d2, &cur, "portway");
        assert!(p.member_patches.is_empty());
        let pool_patches: Vec<&Command> = p
            .transaction
            .iter()
            .filter(|c| c.method == "PATCH" && c.path.starts_with("/mgmt/tm/ltm/pool/"))
            .collect();
        assert_eq!(pool_patches.len(), 2, "{:#?}", p.transaction);
        for c in &pool_patches {
            let ms = c.body["members"].as_array().expect("members");
            assert_eq!(ms.len(), 2, "{c:?}");
            assert!(
                ms.iter()
                    .all(|m| m.get("address").is_none() && m["name"].is_string()),
                "{c:?}"
            );
        }
        assert_eq!(
            pool_patches[0].body["monitor"],
            "/portway/pw_default_web_tcp_80"
        );
        assert_eq!(
            pool_patches[0].body["members"],
            json!([{"name": "10.0.0.1:30080"}, {"name": "fd00::2.30080"}])
        );
        // The POST that creates a pool keeps the address: it creates the node.
        let created = plan(&d2, &Current::default(), "portway");
        assert!(
            created
                .transaction
                .iter()
                .filter(|c| c.method == "POST" && c.path == "/mgmt/tm/ltm/pool")
                .all(|c| {
                    c.body["members"]
                        .as_array()
                        .is_some_and(|ms| ms.iter().all(|m| m["address"].is_string()))
                })
        );
    }

    #[test]
    fn drifted_mask_and_source_are_patched_once() {
        let vip: IpAddr = "203.0.113.10".parse().expect("ip");
        let d = desired(&svc(), &[vip], &members(&["10.0.0.1"]), "portway", "tcp");
        let mut cur = applied(&d);
        cur.virtuals[0]["mask"] = json!("255.255.255.0");
        cur.virtuals[0]["source"] = json!("10.0.0.0/8");
        let p = plan(&d, &cur, "portway");
        assert!(p.member_patches.is_empty());
        assert_eq!(p.transaction.len(), 1, "{:#?}", p.transaction);
        let c = &p.transaction[0];
        assert_eq!(
            (c.method, c.path.as_str()),
            (
                "PATCH",
                "/mgmt/tm/ltm/virtual/~portway~pw_default_web_tcp_80"
            )
        );
        assert_eq!(c.body["mask"], "255.255.255.255");
        assert_eq!(c.body["source"], "0.0.0.0/0");
        let after = patched(&cur, &p);
        assert!(plan(&d, &after, "portway").is_empty());
    }

    /// Whatever field the plan compares, one round of its PATCHes brings the object in sync:
    /// no field is diffed without being sent.
    #[test]
    fn one_round_of_patches_converges_every_diffed_field() {
        let vip: IpAddr = "2001:db8::10".parse().expect("ip");
        let d = desired(&svc(), &[vip], &members(&["fd00::1"]), "portway", "tcp");
        let drift = json!("drifted");
        let cases = MONITOR_FIELDS
            .iter()
            .map(|f| ("monitor", *f))
            .chain(POOL_FIELDS.iter().map(|f| ("pool", *f)))
            .chain(VIRTUAL_FIELDS.iter().map(|f| ("virtual", *f)));
        for (kind, field) in cases {
            let mut cur = applied(&d);
            let list = match kind {
                "monitor" => &mut cur.monitors,
                "pool" => &mut cur.pools,
                _ => &mut cur.virtuals,
            };
            list[1][field] = if field == "sourceAddressTranslation" {
                json!({"type": "none"})
            } else {
                drift.clone()
            };
            let p = plan(&d, &cur, "portway");
            assert_eq!(
                p.transaction.len(),
                1,
                "{kind}.{field}: {:#?}",
                p.transaction
            );
            let again = plan(&d, &patched(&cur, &p), "portway");
            assert!(again.is_empty(), "{kind}.{field}: {again:#?}");
        }
    }
}
