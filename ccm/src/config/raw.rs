//! The file as written: the keys checked with their paths, the provider sections still
//! JSON until [`super::sections`] parses each into its provider's type; and the
//! `PORTWAY_*` environment layered on top.

use super::model::{NodesConfig, ServiceControllerConfig};
use serde::Deserialize;

/// The configuration file before its provider sections are parsed.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawConfig {
    /// `defaultClass`.
    #[serde(default = "default_class")]
    pub default_class: String,
    /// `serviceController`.
    #[serde(default)]
    pub service_controller: ServiceControllerConfig,
    /// `nodes`.
    #[serde(default)]
    pub nodes: NodesConfig,
    /// `pools`.
    #[serde(default)]
    pub pools: Vec<serde_json::Value>,
    /// `hostport`.
    #[serde(default)]
    pub hostport: Option<serde_json::Value>,
    /// `l2`.
    #[serde(default)]
    pub l2: Option<serde_json::Value>,
    /// `bgp`.
    #[serde(default)]
    pub bgp: Option<serde_json::Value>,
    /// `f5`.
    #[serde(default)]
    pub f5: Option<serde_json::Value>,
}

fn default_class() -> String {
    crate::names::HOSTPORT.to_string()
}

/// The top-level keys of the file, the only ones environment variables may set.
const TOP_LEVEL_KEYS: &[&str] = &[
    "defaultClass",
    "detectMultiplier",
    "serviceController",
    "nodes",
    "pools",
    "hostport",
    "l2",
    "bgp",
    "f5",
];

/// The configuration part of the `PORTWAY_*` environment: camelCase keys, sections only.
pub(super) fn env_overrides(env: serde_json::Value) -> serde_json::Value {
    let mut env = fix_env_case(env);
    if let Some(m) = env.as_object_mut() {
        m.retain(|k, _| TOP_LEVEL_KEYS.contains(&k.as_str()));
    }
    env
}

/// Overlays `over` on `base`: objects merge key by key, anything else replaces.
pub(super) fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Every camelCase key of the file, in any section: the `config` crate hands
/// environment keys over lower-cased, and these restore them. A test checks
/// that each key documented in docs/configuration.md is here.
const ENV_CAMEL_KEYS: [&str; 38] = [
    "aggregationLength",
    "aggregationLengthV6",
    "autoAssign",
    "avoidBuggyIPs",
    "caBundle",
    "credentialsSecret",
    "defaultClass",
    "detectMultiplier",
    "ebgpMultihop",
    "garpRefresh",
    "gossipPort",
    "gracefulRestart",
    "gracefulRestartTime",
    "holdTime",
    "insecureSkipVerify",
    "instanceType",
    "keepaliveTime",
    "largeCommunities",
    "localASN",
    "localPref",
    "maxRetryDelay",
    "memberMode",
    "minRetryDelay",
    "namespaceSelector",
    "nodeSelector",
    "nodeSyncDebounce",
    "passwordSecret",
    "priorityClassName",
    "providerConcurrency",
    "providerTimeout",
    "receiveInterval",
    "resyncPeriod",
    "routerID",
    "serviceAllocation",
    "serviceController",
    "serviceSelector",
    "sourceAddress",
    "transmitInterval",
];

/// The `config` crate lower-cases keys that come from the environment; map
/// them back onto the camelCase keys of the file so both layers meet.
fn fix_env_case(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let v = fix_env_case(v);
                let key = ENV_CAMEL_KEYS
                    .iter()
                    .find(|known| known.eq_ignore_ascii_case(&k) && **known != k)
                    .map(|known| known.to_string())
                    .unwrap_or(k);
                match (out.get_mut(&key), v) {
                    (Some(serde_json::Value::Object(existing)), serde_json::Value::Object(new)) => {
                        existing.extend(new);
                    }
                    (_, v) => {
                        out.insert(key, v);
                    }
                }
            }
            serde_json::Value::Object(out)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_key_can_come_from_the_environment() {
        let doc = include_str!("../../../docs/configuration.md");
        for line in doc.lines().filter(|l| l.starts_with("| `")) {
            let key = line[3..].split('`').next().unwrap_or_default();
            for part in key.split('.').map(|p| p.trim_end_matches("[]")) {
                if part.chars().any(|c| c.is_ascii_uppercase()) {
                    assert!(
                        ENV_CAMEL_KEYS.contains(&part),
                        "{part} (from `{key}`) is missing from ENV_CAMEL_KEYS"
                    );
                }
            }
        }
        let env = serde_json::json!({"f5": {"membermode": "cluster"}, "l2": {"gossipport": 7000}});
        assert_eq!(
            env_overrides(env),
            serde_json::json!({"f5": {"memberMode": "cluster"}, "l2": {"gossipPort": 7000}})
        );
    }

    #[test]
    fn unrelated_portway_variables_are_ignored() {
        let env = serde_json::json!({"kubectl": "/usr/bin/kubectl", "require_privileged": 1,
            "defaultclass": "portway.dev/l2", "servicecontroller": {"minretrydelay": "1s"}});
        let mut file = serde_json::json!({"defaultClass": "portway.dev/bgp", "pools": []});
        merge(&mut file, env_overrides(env));
        assert_eq!(
            file,
            serde_json::json!({"defaultClass": "portway.dev/l2", "pools": [],
                "serviceController": {"minRetryDelay": "1s"}})
        );
    }
}
