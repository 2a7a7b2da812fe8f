//! Portway's configuration file: typed, layered and validated up front.
//!
//! One YAML file (see DESIGN §7) is read with the `config` crate and may be
//! overridden by `PORTWAY_*` environment variables (`PORTWAY_DEFAULTCLASS`,
//! `PORTWAY_SERVICECONTROLLER__MAXRETRYDELAY`: `__` separates levels, names are
//! matched without regard to case). Unknown keys and bad values are refused
//! with the path of the offending key, so a typo never silently becomes a
//! default. `portway check-config FILE` runs exactly this code.

use serde::Deserialize;
use std::fmt;
use std::path::Path;
use std::time::Duration;

pub use crate::providers::CLASSES;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Class for LoadBalancer Services without `spec.loadBalancerClass`;
    /// hostport by default, as k3s does.
    #[serde(default = "default_class")]
    pub default_class: String,
    /// Settings of the service controller itself (retries, provider calls).
    #[serde(default)]
    pub service_controller: ServiceControllerConfig,
    /// What the cloud node controller writes on nodes it initializes.
    #[serde(default)]
    pub nodes: NodesConfig,
    /// Address pools shared by l2, bgp and f5 (validated by the allocator).
    #[serde(default)]
    pub pools: Vec<serde_json::Value>,
    /// hostport provider settings; the provider is enabled unless `enabled: false`.
    #[serde(default)]
    pub hostport: Option<serde_json::Value>,
    /// l2 provider settings; absent disables the class.
    #[serde(default)]
    pub l2: Option<serde_json::Value>,
    /// bgp provider settings; absent disables the class.
    #[serde(default)]
    pub bgp: Option<serde_json::Value>,
    /// f5 provider settings; absent disables the class.
    #[serde(default)]
    pub f5: Option<serde_json::Value>,
}

fn default_class() -> String {
    CLASSES[0].to_string()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_class: default_class(),
            service_controller: ServiceControllerConfig::default(),
            nodes: NodesConfig::default(),
            pools: Vec::new(),
            hostport: None,
            l2: None,
            bgp: None,
            f5: None,
        }
    }
}

/// Labels the cloud node controller sets on nodes it initializes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodesConfig {
    /// `node.kubernetes.io/instance-type`; `portway` when empty.
    #[serde(default)]
    pub instance_type: String,
    /// `topology.kubernetes.io/zone` for nodes that have none.
    #[serde(default)]
    pub zone: Option<String>,
    /// `topology.kubernetes.io/region` for nodes that have none.
    #[serde(default)]
    pub region: Option<String>,
}

/// How the service controller retries and calls providers.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceControllerConfig {
    /// First delay after a transient failure (upstream: 5s).
    #[serde(default = "min_retry", with = "humantime_serde")]
    pub min_retry_delay: Duration,
    /// Cap of the exponential backoff (upstream: 5m).
    #[serde(default = "max_retry", with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// A provider call that takes longer is abandoned and retried as transient.
    #[serde(default = "provider_timeout", with = "humantime_serde")]
    pub provider_timeout: Duration,
    /// At most this many provider calls run at once, per provider.
    #[serde(default = "provider_concurrency")]
    pub provider_concurrency: usize,
    /// Node changes are gathered this long before Services are updated, so a
    /// rolling node restart causes one update rather than one per node.
    #[serde(default = "node_sync_debounce", with = "humantime_serde")]
    pub node_sync_debounce: Duration,
}

fn min_retry() -> Duration {
    Duration::from_secs(5)
}
fn max_retry() -> Duration {
    Duration::from_secs(300)
}
fn provider_timeout() -> Duration {
    Duration::from_secs(60)
}
fn provider_concurrency() -> usize {
    16
}
fn node_sync_debounce() -> Duration {
    Duration::from_secs(1)
}

impl Default for ServiceControllerConfig {
    fn default() -> Self {
        Self {
            min_retry_delay: min_retry(),
            max_retry_delay: max_retry(),
            provider_timeout: provider_timeout(),
            provider_concurrency: provider_concurrency(),
            node_sync_debounce: node_sync_debounce(),
        }
    }
}

/// One problem in the configuration, with the key to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Key path such as `pools[1].addresses[0]`; empty for the file itself.
    pub path: String,
    /// What is wrong and what would fix it.
    pub message: String,
}

impl ConfigError {
    /// An error at a key path, for the provider sections parsed elsewhere.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(path, message)
    }

    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Every problem found, so a user fixes them in one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads `path` (if given) and the `PORTWAY_*` environment, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let mut file = serde_json::Value::Object(serde_json::Map::new());
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigErrors(vec![ConfigError::new(
                    "",
                    format!("configuration file {} does not exist", path.display()),
                )]));
            }
            file = config::Config::builder()
                .add_source(
                    config::File::from(path)
                        .format(config::FileFormat::Yaml)
                        .required(true),
                )
                .build()
                .and_then(|c| c.try_deserialize())
                .map_err(|e| ConfigErrors(vec![ConfigError::new("", e.to_string())]))?;
        }
        let env: serde_json::Value = config::Config::builder()
            .add_source(
                config::Environment::with_prefix("PORTWAY")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigErrors(vec![ConfigError::new("", e.to_string())]))?;
        // Other tools share the PORTWAY_ prefix (the test scripts' PORTWAY_KUBECTL, ...):
        // only variables naming a configuration section override the file; unknown keys in
        // the file itself are still refused.
        merge(&mut file, env_overrides(env));
        Self::from_value(file)
    }

    /// Parses a YAML document (used by tests and `check-config` on stdin).
    pub fn from_yaml(text: &str) -> Result<Config, ConfigErrors> {
        let merged: serde_json::Value = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Yaml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigErrors(vec![ConfigError::new("", e.to_string())]))?;
        Self::from_value(merged)
    }

    /// Deserializes with key paths in errors, then runs every validation.
    pub fn from_value(value: serde_json::Value) -> Result<Config, ConfigErrors> {
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            ConfigErrors(vec![ConfigError::new(path, e.inner().to_string())])
        })?;
        let errors = config.validate();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Checks values serde cannot: names a class we serve, sane delays.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if !CLASSES.contains(&self.default_class.as_str()) {
            errors.push(ConfigError::new(
                "defaultClass",
                format!(
                    "{:?} is not a Portway class; use one of {}",
                    self.default_class,
                    CLASSES.join(", ")
                ),
            ));
        }
        let sc = &self.service_controller;
        if sc.min_retry_delay.is_zero() {
            errors.push(ConfigError::new(
                "serviceController.minRetryDelay",
                "must be greater than 0, e.g. 5s",
            ));
        }
        if sc.max_retry_delay < sc.min_retry_delay {
            errors.push(ConfigError::new(
                "serviceController.maxRetryDelay",
                "must not be smaller than minRetryDelay",
            ));
        }
        if sc.provider_timeout.is_zero() {
            errors.push(ConfigError::new(
                "serviceController.providerTimeout",
                "must be greater than 0, e.g. 60s",
            ));
        }
        if sc.provider_concurrency == 0 {
            errors.push(ConfigError::new(
                "serviceController.providerConcurrency",
                "must be at least 1",
            ));
        }
        if let Err(es) = crate::sections::parse(self) {
            errors.extend(es);
        }
        errors
    }
}

/// The top-level keys of the file, the only ones environment variables may set.
const TOP_LEVEL_KEYS: &[&str] = &[
    "defaultClass",
    "serviceController",
    "nodes",
    "pools",
    "hostport",
    "l2",
    "bgp",
    "f5",
];

/// The configuration part of the `PORTWAY_*` environment: camelCase keys, sections only.
fn env_overrides(env: serde_json::Value) -> serde_json::Value {
    let mut env = fix_env_case(env);
    if let Some(m) = env.as_object_mut() {
        m.retain(|k, _| TOP_LEVEL_KEYS.contains(&k.as_str()));
    }
    env
}

/// Overlays `over` on `base`: objects merge key by key, anything else replaces.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
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
const ENV_CAMEL_KEYS: [&str; 33] = [
    "aggregationLength",
    "aggregationLengthV6",
    "autoAssign",
    "avoidBuggyIPs",
    "caBundle",
    "credentialsSecret",
    "defaultClass",
    "ebgpMultihop",
    "garpRefresh",
    "gossipPort",
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
    "resyncPeriod",
    "routerID",
    "serviceAllocation",
    "serviceController",
    "serviceSelector",
    "sourceAddress",
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
        let doc = include_str!("../../docs/configuration.md");
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

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_yaml("{}").expect("valid");
        assert_eq!(c, Config::default());
        assert_eq!(c.default_class, "portway.dev/hostport");
        assert_eq!(
            c.service_controller.max_retry_delay,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_yaml("defaultClas: portway.dev/l2").expect_err("typo");
        assert!(err.0[0].message.contains("defaultClas"), "{err}");
    }

    #[test]
    fn nested_bad_value_has_path() {
        let err =
            Config::from_yaml("serviceController:\n  maxRetryDelay: soon\n").expect_err("bad");
        assert_eq!(err.0[0].path, "serviceController.maxRetryDelay", "{err}");
    }

    #[test]
    fn foreign_default_class_is_refused() {
        let err = Config::from_yaml("defaultClass: example.com/lb").expect_err("foreign");
        assert_eq!(err.0[0].path, "defaultClass");
    }

    #[test]
    fn every_delay_error_is_reported_at_once() {
        let err = Config::from_yaml(
            "serviceController:\n  minRetryDelay: 0s\n  providerConcurrency: 0\n  providerTimeout: 0s\n",
        )
        .expect_err("bad");
        let paths: Vec<_> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "serviceController.minRetryDelay",
                "serviceController.providerTimeout",
                "serviceController.providerConcurrency"
            ]
        );
    }
}
