//! The `l2:` section of Portway's configuration file (DESIGN §7).
//!
//! ```yaml
//! l2:
//!   pools: [lan]          # address pools whose IPs are announced over ARP/NDP
//!   interfaces: []        # empty: the interfaces whose subnet holds the IP
//!   nodeSelector: {}      # labels a node needs to announce (all must match)
//!   gossipPort: 7947      # UDP port of the speakers' SWIM membership
//!   garpRefresh: 10s      # gratuitous ARP / unsolicited NA refresh period
//! ```
//!
//! The controller keeps the section as a JSON value; [`L2Config::from_value`]
//! turns it into this struct with the key path of every problem
//! (`l2.interfaces[1]`), so a typo never silently becomes a default.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Settings shared by the l2 class on the controller (its pools, for `VipProvider`) and
/// every speaker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct L2Config {
    /// Pools (by name, from the top-level `pools`) this class allocates from;
    /// the controller refuses l2 Services whose pool is not listed.
    pub pools: Vec<String>,
    /// Interfaces to answer ARP/NDP on. Empty means "whichever interfaces
    /// have a subnet holding the IP", which is right for a flat LAN; a list
    /// is for multi-homed nodes where the VIP's subnet is not configured on
    /// the host (MetalLB's `interfaces`).
    pub interfaces: Vec<String>,
    /// Node labels a node needs to be allowed to announce (all must match);
    /// empty selects every node, like a Pod's `nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// UDP port of the gossip membership between speakers; one port per
    /// cluster so every speaker finds its peers at `<node IP>:gossipPort`.
    pub gossip_port: u16,
    /// How often the owner repeats its gratuitous ARP / unsolicited NA after
    /// the takeover burst, so switch FDB entries and router caches that aged
    /// out are refreshed (MetalLB issue #2910 shows the black hole without it).
    #[serde(with = "humantime_serde")]
    pub garp_refresh: Duration,
}

/// Default UDP port of the gossip membership (MetalLB's memberlist uses 7946).
pub const DEFAULT_GOSSIP_PORT: u16 = 7947;
/// Default refresh period of gratuitous announcements.
pub const DEFAULT_GARP_REFRESH: Duration = Duration::from_secs(10);

impl Default for L2Config {
    fn default() -> Self {
        Self {
            pools: Vec::new(),
            interfaces: Vec::new(),
            node_selector: BTreeMap::new(),
            gossip_port: DEFAULT_GOSSIP_PORT,
            garp_refresh: DEFAULT_GARP_REFRESH,
        }
    }
}

/// One problem in the `l2` section (key path such as `l2.interfaces[1]`): the contract's
/// [`portway_provider::ConfigIssue`].
pub type L2ConfigError = portway_provider::ConfigIssue;

impl L2Config {
    /// Deserializes the `l2` section (as the controller keeps it) and
    /// validates it; `known_pools` are the names of the top-level pools, or
    /// `None` to skip that cross-check (a speaker does not need it).
    pub fn from_value(
        value: serde_json::Value,
        known_pools: Option<&[&str]>,
    ) -> Result<L2Config, Vec<L2ConfigError>> {
        let config: L2Config = portway_provider::parse_section("l2", value).map_err(|e| vec![e])?;
        let errors = config.validate(known_pools);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// Checks what serde cannot; every error names its key path.
    pub fn validate(&self, known_pools: Option<&[&str]>) -> Vec<L2ConfigError> {
        let mut errors = Vec::new();
        for (i, pool) in self.pools.iter().enumerate() {
            if let Some(known) = known_pools
                && !known.contains(&pool.as_str())
            {
                errors.push(L2ConfigError::new(
                    format!("l2.pools[{i}]"),
                    format!("no pool named {pool:?}; define it under `pools` or remove it"),
                ));
            }
            if self.pools[..i].contains(pool) {
                errors.push(L2ConfigError::new(
                    format!("l2.pools[{i}]"),
                    format!("pool {pool:?} is listed twice"),
                ));
            }
        }
        for (i, name) in self.interfaces.iter().enumerate() {
            if let Some(reason) = interface_name_problem(name) {
                errors.push(L2ConfigError::new(format!("l2.interfaces[{i}]"), reason));
            }
        }
        for (key, value) in &self.node_selector {
            if let Some(reason) = label_key_problem(key) {
                errors.push(L2ConfigError::new(format!("l2.nodeSelector.{key}"), reason));
            }
            if let Some(reason) = label_value_problem(value) {
                errors.push(L2ConfigError::new(format!("l2.nodeSelector.{key}"), reason));
            }
        }
        if self.gossip_port == 0 {
            errors.push(L2ConfigError::new(
                "l2.gossipPort",
                "must be a UDP port between 1 and 65535, e.g. 7947",
            ));
        }
        if self.garp_refresh < Duration::from_secs(1)
            || self.garp_refresh > Duration::from_secs(3600)
        {
            errors.push(L2ConfigError::new(
                "l2.garpRefresh",
                "must be between 1s and 1h (switch FDB entries age out after about 5m), e.g. 10s",
            ));
        }
        errors
    }

    /// Whether a node with these labels may announce at all.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selector
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
    }
}

/// Linux interface names: 1..=15 bytes, no `/`, no whitespace, not `.`/`..`.
fn interface_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 15 {
        Some(format!(
            "{name:?} is not an interface name (1 to 15 characters)"
        ))
    } else if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        Some(format!(
            "{name:?} is not an interface name (no '/', ':' or spaces)"
        ))
    } else {
        None
    }
}

/// Kubernetes label keys: optional DNS-subdomain prefix and a name of at most
/// 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let ok = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return Some(format!(
                "label key prefix {prefix:?} is not a DNS subdomain"
            ));
        }
    }
    if !label_name_ok(name) || name.is_empty() {
        return Some(format!(
            "label key {key:?} is not valid (name part: 1-63 alphanumerics, '-', '_', '.')"
        ));
    }
    None
}

fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() || label_name_ok(value) {
        None
    } else {
        Some(format!(
            "label value {value:?} is not valid (at most 63 alphanumerics, '-', '_', '.')"
        ))
    }
}

fn label_name_ok(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_section_gives_design_defaults() {
        let c = L2Config::from_value(json!({}), Some(&[])).expect("valid");
        assert_eq!(c, L2Config::default());
        assert_eq!(c.gossip_port, 7947);
        assert_eq!(c.garp_refresh, Duration::from_secs(10));
        assert!(c.interfaces.is_empty());
    }

    #[test]
    fn design_example_parses_from_yaml() {
        let yaml = "pools: [lan]\ninterfaces: [eth0]\nnodeSelector: {kubernetes.io/os: linux}\ngossipPort: 7000\ngarpRefresh: 30s\n";
        let value: serde_json::Value = serde_yaml::from_str(yaml).expect("yaml");
        let c = L2Config::from_value(value, Some(&["lan"])).expect("valid");
        assert_eq!(c.pools, ["lan"]);
        assert_eq!(c.interfaces, ["eth0"]);
        assert_eq!(c.gossip_port, 7000);
        assert_eq!(c.garp_refresh, Duration::from_secs(30));
        assert_eq!(
            c.node_selector.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
    }

    #[test]
    fn unknown_key_is_refused_with_its_path() {
        let errs = L2Config::from_value(json!({"gosipPort": 1}), None).expect_err("typo");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("gosipPort"), "{}", errs[0]);
        let errs = L2Config::from_value(json!({"garpRefresh": "soon"}), None).expect_err("bad");
        assert_eq!(errs[0].path, "l2.garpRefresh");
        let errs = L2Config::from_value(json!({"interfaces": ["eth0", 3]}), None).expect_err("bad");
        assert_eq!(errs[0].path, "l2.interfaces[1]");
    }

    #[test]
    fn validation_names_every_key() {
        let value = json!({
            "pools": ["lan", "nope", "lan"],
            "interfaces": ["eth0", "this-name-is-far-too-long", "a/b"],
            "nodeSelector": {"bad key!": "x", "ok": "bad value!"},
            "gossipPort": 0,
            "garpRefresh": "100ms"
        });
        let errs = L2Config::from_value(value, Some(&["lan"])).expect_err("invalid");
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "l2.pools[1]",
                "l2.pools[2]",
                "l2.interfaces[1]",
                "l2.interfaces[2]",
                "l2.nodeSelector.bad key!",
                "l2.nodeSelector.ok",
                "l2.gossipPort",
                "l2.garpRefresh"
            ]
        );
    }

    #[test]
    fn selector_matches_all_labels() {
        let mut c = L2Config::default();
        let labels: BTreeMap<String, String> = [
            ("zone".to_string(), "a".to_string()),
            ("os".to_string(), "linux".to_string()),
        ]
        .into();
        assert!(c.selects(&labels), "empty selector selects every node");
        c.node_selector.insert("zone".into(), "a".into());
        assert!(c.selects(&labels));
        c.node_selector.insert("role".into(), "edge".into());
        assert!(!c.selects(&labels));
    }
}
