//! Which node a pool member names.
//!
//! One IP address is a node once per route domain, across partitions: a second node of the
//! same address is refused "Invalid Node, the IP address … already exists." (what
//! F5Networks/f5-appsvcs-extension `test/integration/bigip/misc/shareNodes.js` expects from
//! the device). So before creating a node Portway looks for the address among the nodes it
//! can read: its own partition's first, then `/Common`'s (where CIS puts shared nodes with
//! `--share-nodes`), then any other partition's; a member names a node it finds by that
//! node's name and partition (members always carry `partition`, as f5-common-python requires
//! and as the OpenShift router learnt, openshift/origin-server PR #6439), and such a node is
//! never Portway's to delete. Only an address no node has gets a node of Portway's own,
//! created explicitly with [`crate::tag::NODE_TAG`] so that node cleanup can tell it from
//! nodes people or other controllers made.

use crate::current::Current;
use crate::names::{member_name, split_host_port, uri_name};
use crate::plan::Command;
use crate::tag::NODE_TAG;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A node a member can name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeRef {
    partition: String,
    name: String,
}

/// The nodes of the route domain Portway's addresses live in, by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeIndex {
    partition: String,
    by_ip: BTreeMap<IpAddr, NodeRef>,
}

fn rank(partition: &str, own: &str) -> u8 {
    if partition == own {
        0
    } else if partition == "Common" {
        1
    } else {
        2
    }
}

impl NodeIndex {
    /// No node known: every member gets a node of Portway's own in `partition`.
    pub fn empty(partition: &str) -> NodeIndex {
        NodeIndex {
            partition: partition.to_string(),
            by_ip: BTreeMap::new(),
        }
    }

    /// The nodes (as `GET /mgmt/tm/ltm/node` lists them, every partition the account may
    /// read) in route domain `rd`, the default of `partition`; `defaults` gives each
    /// partition's `defaultRouteDomain` (an address without `%N` lives there).
    pub fn new(
        partition: &str,
        rd: u32,
        defaults: &BTreeMap<String, u32>,
        nodes: &[Value],
    ) -> NodeIndex {
        let mut index = NodeIndex::empty(partition);
        for n in nodes {
            let (Some(p), Some(name), Some(address)) = (
                n["partition"].as_str(),
                n["name"].as_str(),
                n["address"].as_str(),
            ) else {
                continue;
            };
            let (ip, node_rd) = match address.split_once('%') {
                Some((ip, r)) => (ip, r.parse().ok()),
                None => (address, defaults.get(p).copied().or(Some(0))),
            };
            let Ok(ip) = ip.parse::<IpAddr>() else {
                continue;
            };
            if node_rd == Some(rd) {
                index.offer(ip, p, name);
            }
        }
        index
    }

    /// The nodes the members of `current`'s pools name: enough when a change brings no
    /// address these members do not already have ([`crate::plan::needs_nodes`]).
    pub fn from_members(partition: &str, current: &Current) -> NodeIndex {
        let mut index = NodeIndex::empty(partition);
        for m in current
            .pools
            .iter()
            .flat_map(|p| p["members"].as_array().into_iter().flatten())
        {
            let (Some((host, _)), Some(p), Some(ip)) = (
                m["name"].as_str().and_then(split_host_port),
                m["partition"].as_str(),
                m["address"].as_str().and_then(|a| a.parse::<IpAddr>().ok()),
            ) else {
                continue;
            };
            index.offer(ip, p, host);
        }
        index
    }

    /// Keeps node `partition/name` for `ip` unless a better placed one is known (own
    /// partition, then `/Common`, then others).
    fn offer(&mut self, ip: IpAddr, partition: &str, name: &str) {
        let better = self.by_ip.get(&ip).is_none_or(|have| {
            rank(partition, &self.partition) < rank(&have.partition, &self.partition)
        });
        if better {
            self.by_ip.insert(
                ip,
                NodeRef {
                    partition: partition.to_string(),
                    name: name.to_string(),
                },
            );
        }
    }

    /// Whether the index names a node for `ip`.
    pub fn knows(&self, ip: IpAddr) -> bool {
        self.by_ip.contains_key(&ip)
    }

    /// The member body for `ip:port`, and the node to create first when no node has `ip`.
    pub fn member(&self, ip: IpAddr, port: u16) -> (Value, Option<Command>) {
        match self.by_ip.get(&ip) {
            Some(n) => (
                json!({"name": member_name(&n.name, port), "partition": n.partition}),
                None,
            ),
            None => {
                let name = ip.to_string();
                let create = Command {
                    method: "POST",
                    path: "/mgmt/tm/ltm/node".into(),
                    body: json!({"name": name, "partition": self.partition,
                        "address": name, "description": NODE_TAG}),
                };
                (
                    json!({"name": member_name(&name, port), "partition": self.partition}),
                    Some(create),
                )
            }
        }
    }

    /// Where a node Portway creates for `ip` lives (`/mgmt/tm/ltm/node/~P~ip`).
    pub fn own_node_path(&self, ip: IpAddr) -> String {
        format!(
            "/mgmt/tm/ltm/node/{}",
            uri_name(&self.partition, &ip.to_string())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_found_in_the_route_domain_own_partition_first() {
        let defaults = BTreeMap::from([
            ("portway".to_string(), 0),
            ("Common".to_string(), 0),
            ("rd2".to_string(), 2),
        ]);
        let nodes = vec![
            json!({"partition": "Common", "name": "10.0.0.1", "address": "10.0.0.1"}),
            json!({"partition": "other", "name": "web2", "address": "10.0.0.2"}),
            json!({"partition": "rd2", "name": "10.0.0.3", "address": "10.0.0.3"}),
            json!({"partition": "portway", "name": "10.0.0.1", "address": "10.0.0.1"}),
            json!({"partition": "Common", "name": "fd00::4", "address": "fd00::4%0"}),
        ];
        let idx = NodeIndex::new("portway", 0, &defaults, &nodes);
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            idx.member(ip("10.0.0.1"), 80),
            (json!({"name": "10.0.0.1:80", "partition": "portway"}), None)
        );
        assert_eq!(
            idx.member(ip("10.0.0.2"), 80),
            (json!({"name": "web2:80", "partition": "other"}), None)
        );
        assert_eq!(
            idx.member(ip("fd00::4"), 80).0,
            json!({"name": "fd00::4.80", "partition": "Common"})
        );
        // 10.0.0.3 is a node of route domain 2 only: ours is a new node.
        let (member, create) = idx.member(ip("10.0.0.3"), 80);
        assert_eq!(
            member,
            json!({"name": "10.0.0.3:80", "partition": "portway"})
        );
        assert_eq!(
            create.map(|c| c.body),
            Some(
                json!({"name": "10.0.0.3", "partition": "portway", "address": "10.0.0.3",
                "description": "portway-node"})
            )
        );
    }
}
