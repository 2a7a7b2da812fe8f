//! Pool members and the nodes behind them on the simulated BIG-IP.
//!
//! - A member names its node: `<node>:<port>` (IPv6 `<node>.<port>`) in the member's
//!   `partition`. A node of that name is used as it is; otherwise the node is created, named
//!   as written, from `address` or, when the name is an address, from the name. A member
//!   without `partition` is taken to be in `/Common`, the device's default folder: the
//!   OpenShift router moved to "fully qualified names so that there is no defaulting to
//!   /Common" (openshift/origin PR #13391), the OpenShift routing daemon added the member
//!   partition after false 404s (openshift/origin-server PR #6439), and f5-common-python
//!   makes it a required creation parameter (`f5/bigip/tm/ltm/pool.py` `Members`).
//! - One IP address is a node once per route domain, across partitions: a second node of
//!   the same address is refused with "Invalid Node, the IP address 192.0.2.1 already
//!   exists." (the message F5Networks/f5-appsvcs-extension
//!   `test/integration/bigip/misc/shareNodes.js` expects from the device when two tenants
//!   share a member IP without `shareNodes`; its `01070734:3: Configuration error:` prefix is
//!   mcpd's usual one, which that test does not match on).
//! - A node a member uses cannot be deleted: "01070110:3: Node address '/somepartition/
//!   my-node-name' is referenced by a member of pool '/somepartition/my-pool-name-80'." (as
//!   a terraform-provider-bigip user's module README records it, found by code search).
//! - A PATCH may not give an existing member another address ("address may not be
//!   specified", F5Networks/f5-openstack-agent issue #584).

use super::address::{canonical, host_of, split_rd};
use super::store::{BigIpState, Reply, err};
use serde_json::{Map, Value, json};
use std::net::IpAddr;

/// The refusal of a change that gives an existing pool member another address: a member's
/// address is its node's, fixed when the member was created.
pub(super) fn member_address_change(
    current: &Value,
    patch: &Map<String, Value>,
    state: &BigIpState,
) -> Option<Reply> {
    let have = current["members"].as_array()?;
    patch.get("members")?.as_array()?.iter().find_map(|m| {
        let new = m.get("address")?.as_str()?;
        let old = have.iter().find(|h| h["name"] == m["name"])?;
        let old = old["address"].as_str()?;
        let new = canonical(
            new,
            state.default_rd(m["partition"].as_str().unwrap_or("Common")),
        );
        (old != new).then(|| {
            err(
                400,
                format!(
                    "01070587:3: The requested pool member ({}) address may not be specified: it is {old}, not {new}.",
                    m["name"].as_str().unwrap_or("")
                ),
            )
        })
    })
}

impl BigIpState {
    /// Refuses a node address (canonical `ip%N`) that another node than `full` already has.
    pub(super) fn unique_node(&self, address: &str, full: &str) -> Result<(), Reply> {
        let taken = self
            .objects
            .iter()
            .any(|((c, f), n)| c == "node" && f != full && n["address"] == address);
        if taken {
            let ip = split_rd(address).0;
            return Err(err(
                400,
                format!(
                    "01070734:3: Configuration error: Invalid Node, the IP address {ip} already exists."
                ),
            ));
        }
        Ok(())
    }

    /// The pool one of whose members uses the node at `full`.
    pub(super) fn pool_using_node(&self, full: &str) -> Option<String> {
        self.objects.iter().find_map(|((c, pool), p)| {
            let used = c == "pool"
                && p["members"].as_array().is_some_and(|ms| {
                    ms.iter().any(|m| {
                        let host = m["name"].as_str().and_then(host_of).unwrap_or("");
                        format!("/{}/{host}", m["partition"].as_str().unwrap_or("Common")) == full
                    })
                });
            used.then(|| pool.clone())
        })
    }

    /// The stored form of a pool's inline members, creating the nodes they name.
    pub(super) fn members(&mut self, user: &str, members: &[Value]) -> Result<Vec<Value>, Reply> {
        let mut out = Vec::new();
        for m in members {
            let name = m["name"].as_str().unwrap_or("").to_string();
            let Some(host) = host_of(&name).map(String::from) else {
                return Err(err(
                    400,
                    format!("01070587:3: The requested pool member ({name}) is invalid"),
                ));
            };
            let partition = m["partition"].as_str().unwrap_or("Common").to_string();
            if !self.partitions.contains_key(&partition) {
                return Err(err(
                    400,
                    format!("01070712:3: The folder (/{partition}) does not exist."),
                ));
            }
            let address = self.node_for(user, &partition, &host, m["address"].as_str())?;
            out.push(json!({"name": name, "partition": partition, "address": address,
                "fullPath": format!("/{partition}/{name}"), "kind": "tm:ltm:pool:members:membersstate",
                "state": "unchecked", "session": "user-enabled", "monitor": "default"}));
        }
        Ok(out)
    }

    /// The canonical address of node `/partition/host`, created when it does not exist.
    fn node_for(
        &mut self,
        user: &str,
        partition: &str,
        host: &str,
        address: Option<&str>,
    ) -> Result<String, Reply> {
        let full = format!("/{partition}/{host}");
        if let Some(n) = self.objects.get(&("node".into(), full.clone())) {
            return Ok(n["address"].as_str().unwrap_or("").to_string());
        }
        let written = address.unwrap_or(host);
        if split_rd(written).0.parse::<IpAddr>().is_err() {
            // A missing referenced object is a 400, as for a pool's monitor.
            return Err(err(
                400,
                format!("01020036:3: The requested Node ({full}) was not found."),
            ));
        }
        self.may_write(user, "create", "node_address", partition, None)?;
        let address = canonical(written, self.default_rd(partition));
        self.unique_node(&address, &full)?;
        self.objects.insert(
            ("node".into(), full.clone()),
            json!({"kind": "tm:ltm:node:nodestate", "name": host, "partition": partition,
                "fullPath": full, "address": address, "session": "user-enabled", "state": "unchecked"}),
        );
        Ok(address)
    }
}
