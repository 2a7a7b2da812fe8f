//! The `hostport:` section of the configuration.

pub use portway_provider::ConfigIssue;
use serde::Deserialize;

/// Settings of the hostport class; every key has the k3s default.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostportConfig {
    /// Serve the class at all (off for clusters that only use VIP classes).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Namespace of the svclb DaemonSets (k3s: `kube-system`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The klipper-lb image.
    #[serde(default = "default_image")]
    pub image: String,
    /// Priority class of svclb pods unless the Service names one.
    #[serde(default = "default_priority")]
    pub priority_class_name: String,
}

fn default_enabled() -> bool {
    true
}
fn default_namespace() -> String {
    "kube-system".into()
}
fn default_image() -> String {
    "rancher/klipper-lb:v0.4.17".into()
}
fn default_priority() -> String {
    "system-node-critical".into()
}

impl Default for HostportConfig {
    fn default() -> Self {
        HostportConfig {
            enabled: true,
            namespace: default_namespace(),
            image: default_image(),
            priority_class_name: default_priority(),
        }
    }
}

impl HostportConfig {
    /// Parses the section (`null` or absent gives the defaults).
    pub fn from_value(
        value: Option<&serde_json::Value>,
    ) -> Result<HostportConfig, Vec<ConfigIssue>> {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Ok(HostportConfig::default());
        };
        let cfg: HostportConfig =
            portway_provider::parse_section("hostport", value).map_err(|e| vec![e])?;
        let mut issues = Vec::new();
        if cfg.namespace.is_empty() {
            issues.push(ConfigIssue::new(
                "hostport.namespace",
                "must not be empty; k3s uses kube-system",
            ));
        }
        if cfg.image.is_empty() {
            issues.push(ConfigIssue::new(
                "hostport.image",
                "must not be empty, e.g. rancher/klipper-lb:v0.4.17",
            ));
        }
        if issues.is_empty() {
            Ok(cfg)
        } else {
            Err(issues)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        assert_eq!(
            HostportConfig::from_value(None).expect("ok"),
            HostportConfig::default()
        );
        let err =
            HostportConfig::from_value(Some(&serde_json::json!({"imag": "x"}))).expect_err("bad");
        assert!(err[0].message.contains("imag"), "{err:?}");
    }
}
