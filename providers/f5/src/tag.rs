//! How Portway marks the objects it owns on the BIG-IP: in their `description`.
//!
//! Not in `metadata`: `metadata` is not a property of `ltm monitor` (only of pool, virtual
//! and node, F5Networks/f5-appsvcs-extension `src/lib/properties.json`; the device refuses a
//! monitor that carries it with 400 "Found unexpected json pair"), and a Manager-role account
//! is denied `metadata` on virtuals and pools ("01070822:3: Access Denied: user (…) does not
//! have create access to object (virtual_server_metadata)", F5Networks/f5-ansible issue
//! #1175, F5Networks/k8s-bigip-ctlr issue #2029). Every object kind Portway writes takes a
//! `description`, so one tag works for all of them and for either role. Objects tagged with
//! `metadata` by an earlier Portway are still recognised, and their `description` is then
//! written.

use portway_provider::LbService;
use serde_json::Value;

/// Description key holding the Service UID.
pub const UID_TAG: &str = "portway-uid";
/// Description key holding `namespace/name`, for orphan sweeps.
pub const SERVICE_TAG: &str = "portway-service";
/// The description of a node Portway created (nodes are shared by the Services that use an
/// address, so they carry no Service): node cleanup deletes only nodes so marked.
pub const NODE_TAG: &str = "portway-node";

/// The `description` that tags an object as `svc`'s.
pub fn description(svc: &LbService) -> String {
    format!(
        "{SERVICE_TAG}={}/{} {UID_TAG}={}",
        svc.key.namespace, svc.key.name, svc.uid
    )
}

fn from_description<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.get("description")?
        .as_str()?
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn from_metadata<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.get("metadata")?
        .as_array()?
        .iter()
        .find(|m| m["name"] == key)?
        .get("value")?
        .as_str()
}

/// The Service UID an object is tagged with.
pub fn tagged_uid(o: &Value) -> Option<&str> {
    from_description(o, UID_TAG).or_else(|| from_metadata(o, UID_TAG))
}

/// The `namespace/name` an object is tagged with.
pub fn tagged_service(o: &Value) -> Option<&str> {
    from_description(o, SERVICE_TAG).or_else(|| from_metadata(o, SERVICE_TAG))
}

/// Whether a node is one Portway created.
pub fn is_portway_node(node: &Value) -> bool {
    node["description"] == NODE_TAG
}

#[cfg(test)]
mod tests {
    use super::*;
    use portway_provider::ServiceKey;
    use serde_json::json;

    #[test]
    fn description_round_trips_and_metadata_is_still_read() {
        let svc = LbService {
            key: ServiceKey::new("default", "web"),
            uid: "u-1".into(),
            ..Default::default()
        };
        let o = json!({"description": description(&svc)});
        assert_eq!(
            o["description"],
            "portway-service=default/web portway-uid=u-1"
        );
        assert_eq!(tagged_uid(&o), Some("u-1"));
        assert_eq!(tagged_service(&o), Some("default/web"));
        let old = json!({"metadata": [{"name": "portway-uid", "value": "u-2", "persist": "true"}]});
        assert_eq!(tagged_uid(&old), Some("u-2"));
        assert_eq!(tagged_uid(&json!({"description": "made by hand"})), None);
    }
}
