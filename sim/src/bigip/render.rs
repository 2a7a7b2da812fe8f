//! How the simulated BIG-IP shows an object in a GET, as recorded on real devices:
//!
//! - A pool's `monitor` comes back with a trailing space: `"monitor": "/Common/http "` in the
//!   recorded GETs of f5devcentral/f5-cccl `f5_cccl/test/bigip_data.json` (pools `test_pool`
//!   and `pool1`). Clients strip it: f5-cccl `f5_cccl/resource/ltm/pool.py` (`rstrip`),
//!   F5Networks/terraform-provider-bigip `bigip/resource_bigip_ltm_pool.go`
//!   (`strings.TrimSpace`).
//! - A pool's members and a virtual's profiles are subcollections: a plain GET shows only
//!   `membersReference` / `profilesReference` with `isSubcollection` and a `link`; with
//!   `expandSubcollections=true` they carry `items` (recorded GET in `bigip_data.json`; the
//!   shape of an expanded profile item, `{"kind": "tm:ltm:virtual:profiles:profilesstate",
//!   "name": "clientssl", "partition": "Common", "fullPath": "/Common/clientssl", "context":
//!   "clientside", …}`, from f5-cccl `f5_cccl/resource/ltm/test/test_virtual.py`). A virtual
//!   never shows `profiles` itself, so a client that compares `profiles` without expanding
//!   compares nothing.
//! - Addresses show their route domain by [`super::address::RouteDomainDisplay`].

use super::address::{map_destination, map_source, show};
use super::store::BigIpState;
use serde_json::{Value, json};

/// The `~P~name` form of a full path, `%` written `%25`.
fn tilde(full: &str) -> String {
    full.replace('/', "~").replace('%', "%25")
}

impl BigIpState {
    /// Objects of a collection (in `partition`, or all) that `user` may read, as a GET shows
    /// them.
    pub(crate) fn list(
        &self,
        user: &str,
        collection: &str,
        partition: Option<&str>,
        expand: bool,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((c, _), o)| {
                let p = o["partition"].as_str().unwrap_or("");
                c == collection && partition.is_none_or(|want| p == want) && self.may_read(user, p)
            })
            .map(|((c, _), o)| self.render(c, o, expand))
            .collect()
    }

    fn show_address(&self, address: &Value, partition: &Value) -> Value {
        match address.as_str() {
            Some(a) => json!(show(
                a,
                self.default_rd(partition.as_str().unwrap_or("Common")),
                self.rd_display
            )),
            None => address.clone(),
        }
    }

    pub(super) fn render(&self, collection: &str, o: &Value, expand: bool) -> Value {
        let mut o = o.clone();
        let full = o["fullPath"].as_str().unwrap_or("").to_string();
        let link = format!(
            "https://localhost/mgmt/tm/ltm/{collection}/{}",
            tilde(&full)
        );
        o["selfLink"] = json!(format!("{link}?ver=13.1.0"));
        let rd = self.default_rd(o["partition"].as_str().unwrap_or("Common"));
        match collection {
            "pool" => {
                if let Some(m) = o.get("monitor").and_then(Value::as_str).map(String::from) {
                    o["monitor"] = json!(format!("{m} "));
                }
                let members: Vec<Value> = o
                    .as_object_mut()
                    .and_then(|m| m.remove("members"))
                    .and_then(|m| m.as_array().cloned())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|mut m| {
                        m["address"] = self.show_address(&m["address"], &m["partition"]);
                        m
                    })
                    .collect();
                let mut reference =
                    json!({"isSubcollection": true, "link": format!("{link}/members?ver=13.1.0")});
                if expand {
                    reference["items"] = json!(members);
                }
                o["membersReference"] = reference;
            }
            "virtual" => {
                let shown = |a: &str| show(a, rd, self.rd_display);
                if let Some(d) = o["destination"].as_str() {
                    o["destination"] = json!(map_destination(d, shown));
                }
                if let Some(s) = o["source"].as_str() {
                    o["source"] = json!(map_source(s, shown));
                }
                let profiles = o
                    .as_object_mut()
                    .and_then(|m| m.remove("profiles"))
                    .and_then(|p| p.as_array().cloned())
                    .unwrap_or_default();
                let mut reference =
                    json!({"isSubcollection": true, "link": format!("{link}/profiles?ver=13.1.0")});
                if expand {
                    reference["items"] = profiles
                        .iter()
                        .map(|p| {
                            let path = p["name"].as_str().unwrap_or("");
                            let (partition, name) = path
                                .trim_start_matches('/')
                                .split_once('/')
                                .unwrap_or(("Common", path));
                            json!({"kind": "tm:ltm:virtual:profiles:profilesstate", "name": name,
                                "partition": partition, "fullPath": format!("/{partition}/{name}"),
                                "context": p["context"]})
                        })
                        .collect();
                }
                o["profilesReference"] = reference;
            }
            "node" | "virtual-address" => {
                o["address"] = self.show_address(&o["address"], &o["partition"]);
            }
            _ => {}
        }
        o
    }
}
