//! The LTM objects of the simulated BIG-IP (monitors, pools, virtuals, nodes, virtual
//! addresses): what a create, PATCH, PUT or DELETE of one does, with the device's own
//! checks and error messages. Pool members and nodes are in `nodes`, the property schema in
//! `schema`, how objects are shown in `render`.
//!
//! Behaviour and sources, beyond those of the modules named:
//! - PATCH merges; PUT resets every property it leaves out (scottdware/go-bigip issue #85
//!   and PR #86: a PUT of a pool's `members` reset its monitor, a PATCH replaced the whole
//!   member set and kept it).
//! - A monitor's parent (`defaultsFrom`) is fixed at creation: F5Networks/f5-common-python
//!   `f5/bigip/mixins.py` `UpdateMonitorMixin` strips it from every update, even an
//!   unchanged one, so the simulator refuses it in any modify (the refusal's wording is the
//!   simulator's; no recording was found). A parent that does not exist is refused with
//!   "01070043:3: Monitor /Common/potential-provider-bug parent not found." (recorded in
//!   F5Networks/terraform-provider-bigip issue #553).
//! - A pool's `monitor` must name existing monitors ("01020036:3: The requested monitor (…)
//!   was not found."), `/Common` ones included; monitor names are one namespace across the
//!   monitor types, since a pool names a monitor by path only.
//! - References hold: a pool used by a virtual, a monitor used by a pool and a node used by
//!   a member cannot be deleted.

use super::address::{canonical, split_destination};
use super::schema;
use super::store::{BigIpState, Reply, err};
use axum::http::Method;
use serde_json::{Map, Value, json};

pub(super) fn kind_name(collection: &str) -> &'static str {
    match collection {
        "pool" => "Pool",
        "virtual" => "Virtual Server",
        "node" => "Node",
        "virtual-address" => "Virtual Address",
        _ => "Monitor",
    }
}

/// The object class mcpd names in an access denial (`virtual_server` is recorded in
/// F5Networks/f5-ansible issue #1175; the others follow its pattern).
fn object_class(collection: &str) -> &'static str {
    match collection {
        "pool" => "pool",
        "virtual" => "virtual_server",
        "node" => "node_address",
        "virtual-address" => "virtual_address",
        _ => "monitor",
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

/// The parent of a monitor type: `gateway-icmp` monitors derive from `gateway_icmp`.
fn parent_of(ty: &str) -> String {
    format!("/Common/{}", ty.replace('-', "_"))
}

impl BigIpState {
    pub(crate) fn ltm(
        &mut self,
        user: &str,
        method: &Method,
        rest: &str,
        query: &str,
        body: Value,
    ) -> Reply {
        let (collection, object) = if let Some(r) = rest.strip_prefix("monitor/") {
            let (ty, obj) = r.split_once('/').unwrap_or((r, ""));
            (format!("monitor/{ty}"), obj)
        } else {
            let (c, obj) = rest.split_once('/').unwrap_or((rest, ""));
            (c.to_string(), obj)
        };
        let known = matches!(
            collection.as_str(),
            "pool" | "virtual" | "node" | "virtual-address"
        ) || matches!(
            collection.strip_prefix("monitor/"),
            Some("tcp" | "udp" | "http" | "https" | "icmp" | "gateway-icmp" | "tcp-half-open")
        );
        if !known {
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
        let expand = query.contains("expandSubcollections=true");
        match (method.clone(), full) {
            (Method::GET, None) => {
                let partition = query
                    .split('&')
                    .find_map(|q| q.strip_prefix("$filter=partition+eq+"))
                    .map(String::from);
                let kind = collection.replace('/', ":");
                let last = collection.rsplit('/').next().unwrap_or("");
                (
                    200,
                    json!({"kind": format!("tm:ltm:{kind}:{last}collectionstate"),
                    "items": self.list(user, &collection, partition.as_deref(), expand)}),
                )
            }
            (Method::GET, Some(full)) => {
                match self.objects.get(&(collection.clone(), full.clone())) {
                    Some(o) if self.may_read(user, o["partition"].as_str().unwrap_or("")) => {
                        (200, self.render(&collection, o, expand))
                    }
                    _ => not_found(&collection, &full),
                }
            }
            (Method::POST, None) => self.create(user, &collection, body),
            (Method::PATCH, Some(full)) => self.modify(user, &collection, &full, body, false),
            (Method::PUT, Some(full)) => self.modify(user, &collection, &full, body, true),
            (Method::DELETE, Some(full)) => self.delete(user, &collection, &full),
            _ => err(405, "method not allowed"),
        }
    }

    /// Whether a monitor of this full path exists, of any type.
    pub(super) fn monitor_exists(&self, full: &str) -> bool {
        self.objects
            .keys()
            .any(|(c, f)| c.starts_with("monitor/") && f == full)
    }

    /// [`Self::normalize`], and on its refusal the device is left as it was. Normalizing
    /// only ever adds nodes (a pool member naming an unknown node creates it, as the device
    /// does), so undoing means removing the nodes it added; copying the whole store per
    /// write instead made each write cost every object in the device (quadratic at a
    /// thousand Services).
    fn normalize_or_undo(
        &mut self,
        user: &str,
        collection: &str,
        partition: &str,
        full: &str,
        o: &mut Map<String, Value>,
    ) -> Result<(), Reply> {
        let nodes_before = self.node_keys();
        let result = self.normalize(user, collection, partition, full, o);
        if result.is_err() {
            for key in self.node_keys() {
                if !nodes_before.contains(&key) {
                    self.objects.remove(&key);
                }
            }
        }
        result
    }

    /// Every node's key: a range of the ordered store (collection first), not a scan.
    fn node_keys(&self) -> std::collections::BTreeSet<(String, String)> {
        let from = ("node".to_string(), String::new());
        let to = ("node\0".to_string(), String::new());
        self.objects
            .range(from..to)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn normalize(
        &mut self,
        user: &str,
        collection: &str,
        partition: &str,
        full: &str,
        o: &mut Map<String, Value>,
    ) -> Result<(), Reply> {
        match collection {
            "pool" => {
                o.entry("loadBalancingMode").or_insert(json!("round-robin"));
                let members = o
                    .get("members")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let members = self.members(user, &members)?;
                o.insert("members".into(), Value::Array(members));
                let monitor = o.get("monitor").and_then(Value::as_str).map(str::trim);
                match monitor {
                    None => {}
                    Some("" | "none") => {
                        o.remove("monitor");
                    }
                    Some(m) => {
                        let m = m.to_string();
                        if let Some(missing) = m
                            .split(" and ")
                            .map(str::trim)
                            .find(|one| !self.monitor_exists(one))
                        {
                            return Err(err(
                                400,
                                format!(
                                    "01020036:3: The requested monitor ({missing}) was not found."
                                ),
                            ));
                        }
                        o.insert("monitor".into(), json!(m));
                    }
                }
            }
            "virtual" => self.normalize_virtual(partition, o)?,
            "node" => {
                let address = o.get("address").and_then(Value::as_str).unwrap_or("");
                let canonical = canonical(address, self.default_rd(partition));
                self.unique_node(&canonical, full)?;
                o.insert("address".into(), json!(canonical));
                o.entry("session").or_insert(json!("user-enabled"));
                o.entry("state").or_insert(json!("unchecked"));
            }
            c if c.starts_with("monitor/") => {
                let ty = &c["monitor/".len()..];
                o.entry("interval").or_insert(json!(5));
                o.entry("timeout").or_insert(json!(16));
                let parent = o
                    .entry("defaultsFrom")
                    .or_insert(json!(parent_of(ty)))
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if !self.objects.contains_key(&(c.to_string(), parent)) {
                    return Err(err(
                        400,
                        format!("01070043:3: Monitor {full} parent not found."),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn normalize_virtual(
        &mut self,
        partition: &str,
        o: &mut Map<String, Value>,
    ) -> Result<(), Reply> {
        let dest = o
            .get("destination")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let Some((dp, host, port, sep)) = split_destination(&dest) else {
            return Err(err(
                400,
                format!("01070079:3: invalid destination {dest:?}"),
            ));
        };
        let address = canonical(host, self.default_rd(dp));
        o.insert(
            "destination".into(),
            json!(format!("/{dp}/{address}{sep}{port}")),
        );
        if let Some(source) = o.get("source").and_then(Value::as_str) {
            let s =
                super::address::map_source(source, |a| canonical(a, self.default_rd(partition)));
            o.insert("source".into(), json!(s));
        }
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
        let default_profile = match o.get("ipProtocol").and_then(Value::as_str) {
            Some("udp") => "/Common/udp",
            Some("sctp") => "/Common/sctp",
            _ => "/Common/tcp",
        };
        let profiles: Vec<Value> = match o.get("profiles").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .map(|p| {
                    let name = p["name"].as_str().or(p.as_str()).unwrap_or("");
                    let name = if name.starts_with('/') {
                        name.to_string()
                    } else {
                        format!("/Common/{name}")
                    };
                    json!({"name": name, "context": p.get("context").cloned().unwrap_or(json!("all"))})
                })
                .collect(),
            None => vec![json!({"name": default_profile, "context": "all"})],
        };
        o.insert("profiles".into(), json!(profiles));
        let va = format!("/{dp}/{host}");
        let name = host.to_string();
        let dp = dp.to_string();
        self.objects
            .entry(("virtual-address".into(), va.clone()))
            .or_insert_with(|| {
                json!({"kind": "tm:ltm:virtual-address:virtual-addressstate", "name": name,
                "partition": dp, "fullPath": va, "address": address, "autoDelete": "true",
                "arp": "enabled", "icmpEcho": "enabled"})
            });
        Ok(())
    }

    pub(crate) fn create(&mut self, user: &str, collection: &str, body: Value) -> Reply {
        let Some(mut o) = body.as_object().cloned() else {
            return err(400, "body must be an object");
        };
        if let Err(e) = schema::check(collection, &format!("/ltm/{collection}"), &o) {
            return e;
        }
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
        if !self.partitions.contains_key(&partition) {
            return err(
                400,
                format!("01070712:3: The folder (/{partition}) does not exist."),
            );
        }
        if let Err(e) = self.may_write(
            user,
            "create",
            object_class(collection),
            &partition,
            Some(&body),
        ) {
            return e;
        }
        let full = format!("/{partition}/{name}");
        let taken = if collection.starts_with("monitor/") {
            self.monitor_exists(&full)
        } else {
            self.objects
                .contains_key(&(collection.to_string(), full.clone()))
        };
        if taken {
            return err(
                409,
                format!(
                    "01020066:3: The requested {} ({full}) already exists in partition {partition}.",
                    kind_name(collection)
                ),
            );
        }
        if let Err(e) = self.normalize_or_undo(user, collection, &partition, &full, &mut o) {
            return e;
        }
        o.insert("partition".into(), json!(partition));
        o.insert("fullPath".into(), json!(full));
        let kind = collection.replace('/', ":");
        let last = collection.rsplit('/').next().unwrap_or("");
        o.insert("kind".into(), json!(format!("tm:ltm:{kind}:{last}state")));
        let v = Value::Object(o);
        self.objects
            .insert((collection.to_string(), full), v.clone());
        (200, self.render(collection, &v, true))
    }

    fn modify(
        &mut self,
        user: &str,
        collection: &str,
        full: &str,
        body: Value,
        replace: bool,
    ) -> Reply {
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
        let item = format!("/ltm/{collection}/{}", full.replace('/', "~"));
        if let Err(e) = schema::check(collection, &item, patch) {
            return e;
        }
        let partition = current["partition"]
            .as_str()
            .unwrap_or("Common")
            .to_string();
        if let Err(e) = self.may_write(
            user,
            "modify",
            object_class(collection),
            &partition,
            Some(&body),
        ) {
            return e;
        }
        if collection.starts_with("monitor/") && patch.contains_key("defaultsFrom") {
            return err(
                400,
                format!(
                    "01070734:3: Configuration error: the parent (defaults-from) of monitor {full} cannot be modified"
                ),
            );
        }
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
                "defaultsFrom",
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
        if let Some(e) = super::nodes::member_address_change(&current, patch, self) {
            return e;
        }
        if let Err(e) = self.normalize_or_undo(user, collection, &partition, full, &mut o) {
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

    fn delete(&mut self, user: &str, collection: &str, full: &str) -> Reply {
        let Some(current) = self
            .objects
            .get(&(collection.to_string(), full.to_string()))
        else {
            return not_found(collection, full);
        };
        let partition = current["partition"].as_str().unwrap_or("").to_string();
        if let Err(e) = self.may_write(user, "delete", object_class(collection), &partition, None) {
            return e;
        }
        match collection {
            "node" => {
                if let Some(pool) = self.pool_using_node(full) {
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
                if let Some(((_, p), _)) = self.objects.iter().find(|((c, _), p)| {
                    c == "pool"
                        && p["monitor"]
                            .as_str()
                            .is_some_and(|m| m.split(" and ").any(|one| one.trim() == full))
                }) {
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
