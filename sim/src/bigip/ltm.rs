//! The LTM objects of the simulated BIG-IP (monitors, pools, virtuals, nodes, virtual
//! addresses): what a create, PATCH, PUT or DELETE of one does, with the device's own
//! checks and error messages. The session, token and transaction handling is in `store`.

use super::store::{BigIpState, Reply, err};
use axum::http::Method;
use serde_json::{Map, Value, json};
use std::net::IpAddr;

pub(super) fn kind_name(collection: &str) -> &'static str {
    match collection {
        "pool" => "Pool",
        "virtual" => "Virtual Server",
        "node" => "Node",
        "virtual-address" => "Virtual Address",
        _ => "Monitor",
    }
}

pub(super) fn not_found(collection: &str, full: &str) -> Reply {
    err(
        404,
        format!(
            "01020036:3: The requested {} ({full}) was not found.",
            kind_name(collection)
        ),
    )
}

/// `~P~name` (with `%25` for `%`) to `/P/name`.
pub(super) fn full_path(seg: &str) -> String {
    seg.replace("%25", "%").replace('~', "/")
}

/// The address part of a member name (`ip:port`, IPv6 `ip.port`).
pub(super) fn member_address(name: &str) -> String {
    if name.contains(':') && name.matches(':').count() > 1 {
        name.rsplit_once('.')
            .map(|(a, _)| a.to_string())
            .unwrap_or_default()
    } else {
        name.rsplit_once(':')
            .map(|(a, _)| a.to_string())
            .unwrap_or_default()
    }
}

/// The address of a virtual's destination `/P/ip:port` or `/P/ip.port`.
pub(super) fn destination_address(dest: &str) -> Option<(String, String)> {
    let rest = dest.strip_prefix('/')?;
    let (partition, addr_port) = rest.split_once('/')?;
    let addr = member_address(addr_port);
    (!addr.is_empty()).then(|| (partition.to_string(), addr))
}

/// The refusal of a change that gives an existing pool member another address: a member's
/// address is its node's, fixed when the member was created ("address may not be
/// specified", F5Networks/f5-openstack-agent#584). Clients send members by name in a PATCH.
pub(super) fn member_address_change(current: &Value, patch: &Map<String, Value>) -> Option<Reply> {
    let have = current["members"].as_array()?;
    patch.get("members")?.as_array()?.iter().find_map(|m| {
        let new = m.get("address")?.as_str()?;
        let old = have.iter().find(|h| h["name"] == m["name"])?;
        let old = old["address"].as_str()?;
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
    pub(crate) fn ltm(&mut self, method: &Method, rest: &str, query: &str, body: Value) -> Reply {
        let (collection, object) = if let Some(r) = rest.strip_prefix("monitor/") {
            let (ty, obj) = r.split_once('/').unwrap_or((r, ""));
            (format!("monitor/{ty}"), obj)
        } else {
            let (c, obj) = rest.split_once('/').unwrap_or((rest, ""));
            (c.to_string(), obj)
        };
        if !matches!(
            collection.as_str(),
            "pool"
                | "virtual"
                | "node"
                | "virtual-address"
                | "monitor/tcp"
                | "monitor/udp"
                | "monitor/http"
        ) {
            return err(404, format!("URI path /mgmt/tm/ltm/{rest} not registered."));
        }
        if object.contains("/members") {
            return err(
                400,
                "pool member subcollection calls are not simulated; send members inline",
            );
        }
        let full = (!object.is_empty()).then(|| full_path(object));
        let query = query
            .replace("%24", "$")
            .replace("%20", "+")
            .replace(' ', "+");
        match (method.clone(), full) {
            (Method::GET, None) => {
                let partition = query
                    .split('&')
                    .find_map(|q| q.strip_prefix("$filter=partition+eq+"))
                    .map(String::from);
                let expand = query.contains("expandSubcollections=true");
                (
                    200,
                    json!({"kind": format!("tm:ltm:{collection}:{collection}collectionstate"),
                    "items": self.list(&collection, partition.as_deref(), expand)}),
                )
            }
            (Method::GET, Some(full)) => {
                match self.objects.get(&(collection.clone(), full.clone())) {
                    Some(o) => (
                        200,
                        self.render(&collection, o, query.contains("expandSubcollections=true")),
                    ),
                    None => not_found(&collection, &full),
                }
            }
            (Method::POST, None) => self.create(&collection, body),
            (Method::PATCH, Some(full)) => self.modify(&collection, &full, body, false),
            (Method::PUT, Some(full)) => self.modify(&collection, &full, body, true),
            (Method::DELETE, Some(full)) => self.delete(&collection, &full),
            _ => err(405, "method not allowed"),
        }
    }

    fn normalize(
        &mut self,
        collection: &str,
        partition: &str,
        o: &mut Map<String, Value>,
    ) -> Result<(), Reply> {
        match collection {
            "pool" => {
                o.entry("loadBalancingMode").or_insert(json!("round-robin"));
                o.entry("monitor").or_insert(json!(""));
                let members = o
                    .get("members")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut out = Vec::new();
                for m in members {
                    let name = m["name"].as_str().unwrap_or("").to_string();
                    let address = match m["address"].as_str() {
                        Some(a) => a.to_string(),
                        None => self.address_of_member(partition, &name)?,
                    };
                    let node_path = format!("/{partition}/{address}");
                    self.objects.entry(("node".into(), node_path.clone())).or_insert_with(|| {
                        json!({"kind": "tm:ltm:node:nodestate", "name": address, "partition": partition,
                            "fullPath": node_path, "address": address})
                    });
                    out.push(json!({"name": name, "partition": partition, "address": address,
                        "fullPath": format!("/{partition}/{name}"), "state": "unchecked", "session": "user-enabled"}));
                }
                o.insert("members".into(), Value::Array(out));
                if let Some(mon) = o
                    .get("monitor")
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                    && mon.starts_with(&format!("/{partition}/"))
                    && !self
                        .objects
                        .keys()
                        .any(|(c, f)| c.starts_with("monitor/") && f == mon)
                {
                    return Err(err(
                        400,
                        format!("01020036:3: The requested monitor ({mon}) was not found."),
                    ));
                }
            }
            "virtual" => {
                let dest = o
                    .get("destination")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let Some((dp, addr)) = destination_address(&dest) else {
                    return Err(err(
                        400,
                        format!("01070079:3: invalid destination {dest:?}"),
                    ));
                };
                if let Some(pool) = o
                    .get("pool")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                    && !self
                        .objects
                        .contains_key(&("pool".into(), pool.to_string()))
                {
                    return Err(err(400, format!("01070226:3: Pool {pool} does not exist.")));
                }
                o.entry("sourceAddressTranslation")
                    .or_insert(json!({"type": "none"}));
                let va = format!("/{dp}/{addr}");
                self.objects
                    .entry(("virtual-address".into(), va.clone()))
                    .or_insert_with(|| {
                        json!({"kind": "tm:ltm:virtual-address:virtual-addressstate", "name": addr,
                        "partition": dp, "fullPath": va, "address": addr, "autoDelete": "true",
                        "arp": "enabled", "icmpEcho": "enabled"})
                    });
            }
            c if c.starts_with("monitor/") => {
                o.entry("interval").or_insert(json!(5));
                o.entry("timeout").or_insert(json!(16));
                o.entry("defaultsFrom")
                    .or_insert(json!(format!("/Common/{}", &c[8..])));
            }
            _ => {}
        }
        Ok(())
    }

    /// The node address of a member given by name only, as BIG-IP derives it: `a.b.c.d:port`
    /// or (IPv6) `addr.port`, with an optional `%rd`; a name that is not an address names an
    /// existing node of the partition.
    fn address_of_member(&self, partition: &str, name: &str) -> Result<String, Reply> {
        let address = member_address(name);
        if address.is_empty() {
            return Err(err(
                400,
                format!("01070587:3: The requested pool member ({name}) is invalid"),
            ));
        }
        let ip = address.split_once('%').map_or(address.as_str(), |(a, _)| a);
        if ip.parse::<IpAddr>().is_ok() {
            return Ok(address);
        }
        let node = format!("/{partition}/{address}");
        match self.objects.get(&("node".into(), node.clone())) {
            Some(n) => Ok(n["address"].as_str().unwrap_or("").to_string()),
            // A missing referenced object is a 400, as for a pool's monitor.
            None => Err(err(
                400,
                format!("01020036:3: The requested Node ({node}) was not found."),
            )),
        }
    }

    pub(crate) fn create(&mut self, collection: &str, body: Value) -> Reply {
        let Some(mut o) = body.as_object().cloned() else {
            return err(400, "body must be an object");
        };
        let name = o
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() || name.contains('/') || name.contains('~') {
            return err(
                400,
                format!("01070734:3: Configuration error: invalid name {name:?}"),
            );
        }
        let partition = o
            .get("partition")
            .and_then(Value::as_str)
            .unwrap_or("Common")
            .to_string();
        if !self.partitions.contains(&partition) {
            return err(
                400,
                format!("01070712:3: The folder (/{partition}) does not exist."),
            );
        }
        let full = format!("/{partition}/{name}");
        if self
            .objects
            .contains_key(&(collection.to_string(), full.clone()))
        {
            return err(
                409,
                format!(
                    "01020066:3: The requested {} ({full}) already exists in partition {partition}.",
                    kind_name(collection)
                ),
            );
        }
        let snapshot = self.objects.clone();
        if let Err(e) = self.normalize(collection, &partition, &mut o) {
            self.objects = snapshot;
            return e;
        }
        o.insert("partition".into(), json!(partition));
        o.insert("fullPath".into(), json!(full));
        o.insert(
            "kind".into(),
            json!(format!("tm:ltm:{collection}:{collection}state")),
        );
        let v = Value::Object(o);
        self.objects
            .insert((collection.to_string(), full), v.clone());
        (200, self.render(collection, &v, true))
    }

    fn modify(&mut self, collection: &str, full: &str, body: Value, replace: bool) -> Reply {
        let Some(current) = self
            .objects
            .get(&(collection.to_string(), full.to_string()))
            .cloned()
        else {
            return not_found(collection, full);
        };
        let Some(patch) = body.as_object() else {
            return err(400, "body must be an object");
        };
        let mut o: Map<String, Value> = if replace {
            // PUT resets every property it leaves out.
            let mut m = Map::new();
            for k in [
                "name",
                "partition",
                "fullPath",
                "kind",
                "destination",
                "address",
            ] {
                if let Some(v) = current.get(k) {
                    m.insert(k.into(), v.clone());
                }
            }
            m
        } else {
            current.as_object().cloned().unwrap_or_default()
        };
        for (k, v) in patch {
            if matches!(k.as_str(), "name" | "partition" | "fullPath") {
                continue;
            }
            o.insert(k.clone(), v.clone());
        }
        let partition = current["partition"]
            .as_str()
            .unwrap_or("Common")
            .to_string();
        if let Some(e) = member_address_change(&current, patch) {
            return e;
        }
        let snapshot = self.objects.clone();
        if let Err(e) = self.normalize(collection, &partition, &mut o) {
            self.objects = snapshot;
            return e;
        }
        let v = Value::Object(o);
        self.objects
            .insert((collection.to_string(), full.to_string()), v.clone());
        if collection == "virtual" {
            self.auto_delete_addresses();
        }
        (200, self.render(collection, &v, true))
    }

    fn delete(&mut self, collection: &str, full: &str) -> Reply {
        if !self
            .objects
            .contains_key(&(collection.to_string(), full.to_string()))
        {
            return not_found(collection, full);
        }
        match collection {
            "node" => {
                let addr =
                    self.objects[&(collection.to_string(), full.to_string())]["address"].clone();
                if let Some(((_, pool), _)) = self.objects.iter().find(|((c, _), p)| {
                    c == "pool"
                        && p["members"]
                            .as_array()
                            .is_some_and(|ms| ms.iter().any(|m| m["address"] == addr))
                }) {
                    return err(
                        400,
                        format!(
                            "01070110:3: Node address '{full}' is referenced by a member of pool '{pool}'."
                        ),
                    );
                }
            }
            "pool" => {
                if let Some(((_, v), _)) = self
                    .objects
                    .iter()
                    .find(|((c, _), v)| c == "virtual" && v["pool"] == full)
                {
                    return err(
                        400,
                        format!(
                            "01070265:3: The Pool ({full}) cannot be deleted because it is in use by a Virtual Server ({v})."
                        ),
                    );
                }
            }
            c if c.starts_with("monitor/") => {
                if let Some(((_, p), _)) = self
                    .objects
                    .iter()
                    .find(|((c, _), p)| c == "pool" && p["monitor"] == full)
                {
                    return err(
                        400,
                        format!("01070083:3: Monitor {full} is in use by pool {p}."),
                    );
                }
            }
            _ => {}
        }
        self.remove(collection, full);
        (200, Value::Null)
    }
}
