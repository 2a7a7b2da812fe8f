//! The `f5:` section of the configuration.

pub use portway_provider::ConfigIssue;
use serde::Deserialize;
use std::time::Duration;

/// Where the BIG-IP credentials live (keys `username` and `password`); never in the file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
}

/// Which addresses become pool members.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MemberMode {
    /// Node InternalIPs × the port's nodePort (works with any CNI).
    #[default]
    Nodeport,
    /// Pod IPs × targetPort from EndpointSlices (the BIG-IP must route to pods).
    Cluster,
}

/// Settings of the f5 class.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct F5Config {
    /// Base URL of the BIG-IP management interface.
    pub url: String,
    /// The Secret with `username` and `password`.
    pub credentials_secret: SecretRef,
    /// Partition for every object Portway makes (created if missing; never `Common`).
    #[serde(default = "default_partition")]
    pub partition: String,
    /// Pools (from the top-level `pools`) the f5 class allocates VIPs from.
    #[serde(default)]
    pub pools: Vec<String>,
    /// `nodeport` (default) or `cluster`.
    #[serde(default)]
    pub member_mode: MemberMode,
    /// `tcp` for a TCP monitor Portway creates per port (interval 5, timeout 16), or the
    /// full path of an existing monitor such as `/Common/http`.
    #[serde(default = "default_monitor")]
    pub monitor: String,
    /// PEM CA bundle to verify the BIG-IP's certificate; empty: the system roots.
    #[serde(default)]
    pub ca_bundle: String,
    /// Skip TLS verification (logged loudly at start).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// How often the partition is re-read and every Service re-asserted (drift repair).
    #[serde(default = "default_resync", with = "humantime_serde")]
    pub resync_period: Duration,
}

fn default_partition() -> String {
    "portway".into()
}
fn default_monitor() -> String {
    "tcp".into()
}
fn default_resync() -> Duration {
    Duration::from_secs(300)
}

fn issue(path: &str, message: impl Into<String>) -> ConfigIssue {
    ConfigIssue::new(path, message)
}

impl F5Config {
    /// Parses and checks the section; `known_pools` cross-checks `pools`.
    pub fn from_value(
        value: &serde_json::Value,
        known_pools: Option<&[&str]>,
    ) -> Result<F5Config, Vec<ConfigIssue>> {
        let cfg: F5Config = portway_provider::parse_section("f5", value).map_err(|e| vec![e])?;
        let mut issues = Vec::new();
        if !(cfg.url.starts_with("https://") || cfg.url.starts_with("http://")) {
            issues.push(issue(
                "f5.url",
                "must be an http(s) URL such as https://bigip.example.net",
            ));
        }
        let p = &cfg.partition;
        if p.eq_ignore_ascii_case("common") {
            issues.push(issue(
                "f5.partition",
                "Portway never writes to /Common; use a dedicated partition such as portway",
            ));
        }
        if p.is_empty()
            || !p.starts_with(|c: char| c.is_ascii_alphabetic())
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            issues.push(issue(
                "f5.partition",
                "must start with a letter and hold only letters, digits, '_', '-' and '.'",
            ));
        }
        if cfg.monitor != "tcp" && !cfg.monitor.starts_with('/') {
            issues.push(issue(
                "f5.monitor",
                "`tcp`, or the full path of an existing monitor such as /Common/http",
            ));
        }
        if cfg.resync_period.is_zero() {
            issues.push(issue("f5.resyncPeriod", "must be greater than 0, e.g. 5m"));
        }
        if let Some(known) = known_pools {
            for (i, pool) in cfg.pools.iter().enumerate() {
                if !known.contains(&pool.as_str()) {
                    issues.push(issue(
                        &format!("f5.pools[{i}]"),
                        format!("no pool named {pool:?}; define it under `pools` or remove it"),
                    ));
                }
            }
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
    use serde_json::json;

    #[test]
    fn defaults_and_errors_name_keys() {
        let c = F5Config::from_value(
            &json!({"url": "https://b", "credentialsSecret": {"namespace": "n", "name": "s"}}),
            None,
        )
        .expect("ok");
        assert_eq!(c.partition, "portway");
        assert_eq!(c.member_mode, MemberMode::Nodeport);
        assert_eq!(c.resync_period, Duration::from_secs(300));
        let e = F5Config::from_value(&json!({"url": "b", "partition": "Common", "credentialsSecret": {"namespace": "n", "name": "s"}, "pools": ["x"]}), Some(&["y"])).expect_err("bad");
        let paths: Vec<&str> = e.iter().map(|i| i.path.as_str()).collect();
        assert!(
            paths.contains(&"f5.url")
                && paths.contains(&"f5.partition")
                && paths.contains(&"f5.pools[0]"),
            "{e:?}"
        );
        let e = F5Config::from_value(&json!({"url": "https://b"}), None).expect_err("missing");
        assert!(e[0].message.contains("credentialsSecret"), "{e:?}");
    }
}
