//! What the partition holds now, normalised so that it compares with what Portway writes.
//!
//! A real device does not read back what it was sent:
//! - a pool's `monitor` has a trailing space (`"/Common/http "` in the recorded GETs of
//!   f5devcentral/f5-cccl `f5_cccl/test/bigip_data.json`); f5-cccl `pool.py` splits on
//!   `" and "` and `rstrip`s, terraform-provider-bigip `resource_bigip_ltm_pool.go`
//!   `strings.TrimSpace`s;
//! - members and profiles are subcollections (`membersReference.items`,
//!   `profilesReference.items`, present only with `expandSubcollections=true`), and a profile
//!   item names itself `{"name": "tcp", "partition": "Common", "fullPath": "/Common/tcp",
//!   "context": "all"}` where Portway sent `{"name": "/Common/tcp", "context": "all"}`
//!   (f5-cccl `f5_cccl/resource/ltm/virtual.py` `_flatten_profiles`);
//! - addresses in the partition's default route domain come back with or without `%N`
//!   (f5-cccl PR #196: "Typically, it doesn't, but it's also not consistent in all cases");
//!   Portway writes them without, so `%N` is stripped before comparing (f5-cccl normalises
//!   the other way, adding it to both sides).

use crate::config::MonitorKind;
use crate::names::{split_host_port, strip_rd};
use serde_json::{Value, json};
use std::net::IpAddr;

/// What the partition holds now (normalised, see the module docs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Current {
    /// Monitors Portway could have made, with their kind.
    pub monitors: Vec<(MonitorKind, Value)>,
    /// Pools, members under `members` (`name`, `partition`, `address`).
    pub pools: Vec<Value>,
    /// Virtual servers, profiles under `profiles` when the device listed them.
    pub virtuals: Vec<Value>,
}

impl Current {
    /// Only the objects `keep` accepts.
    pub fn filter(self, keep: impl Fn(&Value) -> bool) -> Current {
        Current {
            monitors: self.monitors.into_iter().filter(|(_, o)| keep(o)).collect(),
            pools: self.pools.into_iter().filter(|o| keep(o)).collect(),
            virtuals: self.virtuals.into_iter().filter(|o| keep(o)).collect(),
        }
    }
}

/// A pool's monitor reference as written: each part trimmed, `none` or empty as absent.
fn monitor(m: &str) -> Option<String> {
    let parts: Vec<&str> = m.split(" and ").map(str::trim).collect();
    let joined = parts.join(" and ");
    (!joined.is_empty() && joined != "none").then_some(joined)
}

/// A pool as read, normalised.
pub fn pool(mut p: Value, rd: u32) -> Value {
    match p.get("monitor").and_then(Value::as_str).and_then(monitor) {
        Some(m) => p["monitor"] = json!(m),
        None => {
            if let Some(o) = p.as_object_mut() {
                o.remove("monitor");
            }
        }
    }
    let items = p
        .pointer("/membersReference/items")
        .or_else(|| p.get("members"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let members: Vec<Value> = items
        .iter()
        .map(|m| {
            json!({"name": m["name"], "partition": m["partition"],
                "address": m["address"].as_str().map(|a| strip_rd(a, rd))})
        })
        .collect();
    p["members"] = json!(members);
    p
}

/// A virtual as read, normalised.
pub fn virtual_server(mut v: Value, rd: u32) -> Value {
    if let Some(d) = v["destination"].as_str()
        && let Some((partition, rest)) = d.strip_prefix('/').and_then(|d| d.split_once('/'))
        && let Some((host, port)) = split_host_port(rest)
    {
        let sep = if host.contains(':') { '.' } else { ':' };
        v["destination"] = json!(format!("/{partition}/{}{sep}{port}", strip_rd(host, rd)));
    }
    if let Some(s) = v["source"].as_str() {
        let s = match s.rsplit_once('/') {
            Some((a, len)) => format!("{}/{len}", strip_rd(a, rd)),
            None => strip_rd(s, rd).to_string(),
        };
        v["source"] = json!(s);
    }
    if let Some(items) = v
        .pointer("/profilesReference/items")
        .and_then(Value::as_array)
    {
        let mut profiles: Vec<Value> = items
            .iter()
            .map(|p| {
                let full = p["fullPath"].as_str().map(String::from).unwrap_or_else(|| {
                    format!(
                        "/{}/{}",
                        p["partition"].as_str().unwrap_or("Common"),
                        p["name"].as_str().unwrap_or("")
                    )
                });
                json!({"name": full, "context": p["context"]})
            })
            .collect();
        profiles.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        v["profiles"] = json!(profiles);
    }
    v
}

/// A member's `(address, port)`: what Portway compares members by (a member names its
/// node, which may be one Portway reuses in another partition).
pub fn member_key(m: &Value) -> Option<(IpAddr, u16)> {
    let (_, port) = split_host_port(m["name"].as_str()?)?;
    let ip = m["address"].as_str()?.parse().ok()?;
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of pool `test_pool` in f5-cccl's recorded `bigip_data.json` that matter
    /// here.
    #[test]
    fn a_recorded_pool_reads_as_written() {
        let recorded = json!({"fullPath": "/Common/test_pool", "kind": "tm:ltm:pool:poolstate",
            "loadBalancingMode": "least-connections-member",
            "membersReference": {"isSubcollection": true, "items": [
                {"address": "1.2.3.4", "fullPath": "/Common/1.2.3.4:20001",
                 "name": "1.2.3.4:20001", "partition": "Common"}]},
            "monitor": "/Common/http ", "name": "test_pool", "partition": "Common"});
        let p = pool(recorded, 0);
        assert_eq!(p["monitor"], "/Common/http");
        assert_eq!(
            p["members"],
            json!([{"name": "1.2.3.4:20001", "partition": "Common", "address": "1.2.3.4"}])
        );
        assert_eq!(
            member_key(&p["members"][0]),
            Some(("1.2.3.4".parse().expect("ip"), 20001))
        );
        let none = pool(json!({"monitor": "none "}), 0);
        assert!(none.get("monitor").is_none());
        let two = pool(json!({"monitor": "/Common/http  and /Common/tcp "}), 0);
        assert_eq!(two["monitor"], "/Common/http and /Common/tcp");
    }

    #[test]
    fn route_domains_and_profiles_are_normalised() {
        let v = virtual_server(
            json!({"destination": "/p/2001:db8::10%2.443", "source": "::%2/0",
                "profilesReference": {"items": [
                    {"name": "udp", "partition": "Common", "fullPath": "/Common/udp", "context": "all"}]}}),
            2,
        );
        assert_eq!(v["destination"], "/p/2001:db8::10.443");
        assert_eq!(v["source"], "::/0");
        assert_eq!(
            v["profiles"],
            json!([{"name": "/Common/udp", "context": "all"}])
        );
        let p = pool(
            json!({"membersReference": {"items": [{"name": "10.0.0.1%2:80", "partition": "p",
                "address": "10.0.0.1%2"}]}}),
            2,
        );
        assert_eq!(p["members"][0]["address"], "10.0.0.1");
        // Without items (not expanded) nothing is claimed about profiles.
        assert!(
            virtual_server(json!({"profilesReference": {"link": "x"}}), 0)
                .get("profiles")
                .is_none()
        );
    }
}
