//! The plan that brings a Service's objects on the partition from what they are
//! ([`Current`], normalised) to what they should be ([`Desired`]) (pure).
//!
//! Three outcomes: nothing to write; only pool members changed (nodes Portway must create
//! first, then one PATCH per pool, since a PATCH of `members` replaces the set and keeps
//! everything else: scottdware/go-bigip issue #85 / PR #86); or anything larger, as one
//! transaction in dependency order (nodes, monitors, pools, virtuals; deletions in reverse,
//! F5Networks/f5-bigip-rest-go `ResOrder`). Every property compared is also sent, so one
//! round converges; a monitor's `defaultsFrom` is sent only when the monitor is created (a
//! parent cannot change, F5Networks/f5-common-python `f5/bigip/mixins.py` strips it from
//! every update).

use crate::current::{Current, member_key};
use crate::desired::{Desired, DesiredPool};
use crate::names::uri_name;
use crate::nodes::NodeIndex;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::IpAddr;

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

/// What to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Nodes to create before the member PATCHes (only when there is no transaction; with
    /// one they are its first commands).
    pub nodes: Vec<Command>,
    /// Members-only changes: (pool name, new members), one PATCH each, outside a transaction.
    /// Members carry `name` and `partition` only: BIG-IP refuses `address` in a PATCH.
    pub member_patches: Vec<(String, Value)>,
    /// Everything else, as one transaction.
    pub transaction: Vec<Command>,
}

impl Plan {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.member_patches.is_empty() && self.transaction.is_empty()
    }
}

/// Properties of a monitor that are compared and PATCHed (never `defaultsFrom`).
const MONITOR_FIELDS: &[&str] = &["interval", "timeout", "description"];
/// Properties of a pool, besides its members, that are compared and PATCHed.
const POOL_FIELDS: &[&str] = &["monitor", "loadBalancingMode", "description"];
/// Properties of a virtual that are compared and PATCHed. (A different `destination` or
/// `ipProtocol` recreates the virtual instead.)
const VIRTUAL_FIELDS: &[&str] = &[
    "pool",
    "sourceAddressTranslation",
    "profiles",
    "mask",
    "source",
    "description",
];

/// A PATCH body with the `fields` of `want`; a pool field `want` lacks but the device has
/// is cleared (`monitor: none`, the tmsh keyword for no monitor).
fn patch_body(want: &Value, have: &Value, fields: &[&str]) -> Value {
    Value::Object(
        fields
            .iter()
            .filter_map(|f| match (want.get(*f), have.get(*f)) {
                (Some(v), _) => Some(((*f).to_string(), v.clone())),
                (None, Some(_)) if *f == "monitor" => Some(("monitor".into(), json!("none"))),
                _ => None,
            })
            .collect(),
    )
}

/// Profiles as a set of `(full path, context)`.
fn profile_set(v: &Value) -> BTreeSet<(String, String)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["context"].as_str().unwrap_or("all").to_string(),
            )
        })
        .collect()
}

fn differs(want: &Value, have: &Value, fields: &[&str]) -> bool {
    fields.iter().any(|f| {
        let (w, h) = (want.get(*f), have.get(*f));
        match *f {
            "sourceAddressTranslation" => {
                w.and_then(|v| v.get("type")) != h.and_then(|v| v.get("type"))
            }
            // Listed only with expandSubcollections=true; unknown otherwise.
            "profiles" => h.is_some_and(|h| w.is_some_and(|w| profile_set(w) != profile_set(h))),
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

fn member_keys(pool: &Value) -> BTreeSet<(IpAddr, u16)> {
    pool["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(member_key)
        .collect()
}

/// Whether planning needs the device's nodes: some member's address is not yet a member of
/// one of the Service's pools (whose members name their nodes already,
/// [`NodeIndex::from_members`]).
pub fn needs_nodes(want: &Desired, current: &Current) -> bool {
    let known = NodeIndex::from_members("", current);
    want.pools
        .iter()
        .flat_map(|p| &p.members)
        .any(|(ip, _)| !known.knows(*ip))
}

/// Member bodies of a pool, collecting the nodes to create into `nodes`.
fn members(pool: &DesiredPool, index: &NodeIndex, nodes: &mut Vec<Command>) -> Value {
    let list = pool.members.iter().map(|(ip, port)| {
        let (member, create) = index.member(*ip, *port);
        if let Some(c) = create
            && !nodes.iter().any(|n| n.path == c.path && n.body == c.body)
        {
            nodes.push(c);
        }
        member
    });
    Value::Array(list.collect())
}

/// The plan from `current` (already filtered to this Service's tagged objects) to `want`;
/// `index` names the nodes members use (empty unless [`needs_nodes`]).
pub fn plan(want: &Desired, current: &Current, partition: &str, index: &NodeIndex) -> Plan {
    let mut p = Plan::default();
    let mut nodes = Vec::new();
    let mut tx = Vec::new();
    let mut member_only = Vec::new();
    for (kind, m) in &want.monitors {
        let collection = format!("monitor/{}", kind.collection());
        let have = current
            .monitors
            .iter()
            .find(|(k, h)| k == kind && h["name"] == m["name"]);
        match have {
            None => tx.push(Command {
                method: "POST",
                path: format!("/mgmt/tm/ltm/{collection}"),
                body: m.clone(),
            }),
            Some((_, h)) if differs(m, h, MONITOR_FIELDS) => tx.push(Command {
                method: "PATCH",
                path: path(&collection, partition, m["name"].as_str().unwrap_or("")),
                body: patch_body(m, h, MONITOR_FIELDS),
            }),
            Some(_) => {}
        }
    }
    for pool in &want.pools {
        let name = pool.body["name"].as_str().unwrap_or("");
        match find(&current.pools, &pool.body["name"]) {
            None => {
                let mut body = pool.body.clone();
                body["members"] = members(pool, index, &mut nodes);
                tx.push(Command {
                    method: "POST",
                    path: "/mgmt/tm/ltm/pool".into(),
                    body,
                });
            }
            Some(h) => {
                let members_changed = member_keys(h) != pool.members.iter().copied().collect();
                if differs(&pool.body, h, POOL_FIELDS) {
                    let mut body = patch_body(&pool.body, h, POOL_FIELDS);
                    if members_changed {
                        body["members"] = members(pool, index, &mut nodes);
                    }
                    tx.push(Command {
                        method: "PATCH",
                        path: path("pool", partition, name),
                        body,
                    });
                } else if members_changed {
                    member_only.push((name.to_string(), members(pool, index, &mut nodes)));
                }
            }
        }
    }
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
            Some(h) if differs(v, h, VIRTUAL_FIELDS) => tx.push(Command {
                method: "PATCH",
                path: path("virtual", partition, name),
                body: patch_body(v, h, VIRTUAL_FIELDS),
            }),
            Some(_) => {}
        }
    }
    tx.extend(deletes(want, current, partition));
    if tx.is_empty() {
        p.nodes = nodes;
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
        nodes.extend(tx);
        p.transaction = nodes;
    }
    p
}

/// Objects of `current` that `want` no longer has: virtuals, then pools, then monitors.
fn deletes(want: &Desired, current: &Current, partition: &str) -> Vec<Command> {
    let delete = |collection: &str, o: &Value| Command {
        method: "DELETE",
        path: path(collection, partition, o["name"].as_str().unwrap_or("")),
        body: Value::Null,
    };
    let virtuals = current
        .virtuals
        .iter()
        .filter(|h| find(&want.virtuals, &h["name"]).is_none())
        .map(|h| delete("virtual", h));
    let pools = current
        .pools
        .iter()
        .filter(|h| !want.pools.iter().any(|p| p.body["name"] == h["name"]))
        .map(|h| delete("pool", h));
    let monitors = current
        .monitors
        .iter()
        .filter(|(k, h)| {
            !want
                .monitors
                .iter()
                .any(|(wk, w)| wk == k && w["name"] == h["name"])
        })
        .map(|(k, h)| delete(&format!("monitor/{}", k.collection()), h));
    virtuals.chain(pools).chain(monitors).collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
