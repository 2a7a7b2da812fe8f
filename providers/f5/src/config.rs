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
    /// The health monitor of each protocol's pools: one value for TCP ports (`tcp`, the
    /// default, or an existing monitor's path such as `/Common/http`), or a map with keys
    /// `tcp`, `udp` and `sctp`. See [`MonitorSetting`].
    #[serde(default)]
    pub monitor: MonitorSetting,
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
fn default_resync() -> Duration {
    Duration::from_secs(300)
}

/// What is wrong with `f5.url`, if anything. A user or password in it (`https://admin:pw@…`)
/// is refused: it would sit in a ConfigMap that many may read and in every log line that
/// quotes the URL, and the credentials belong in `f5.credentialsSecret`. (Plain `http://`
/// is allowed for labs and warned about when the provider starts.)
fn url_problem(url: &str) -> Option<&'static str> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Some("must be an http(s) URL such as https://bigip.example.net");
    }
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Some("is not a valid URL; write it as https://bigip.example.net[:port]");
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some(
            "must not hold a user or password (user:password@); put them in the Secret that f5.credentialsSecret names",
        );
    }
    None
}

fn issue(path: &str, message: impl Into<String>) -> ConfigIssue {
    ConfigIssue::new(path, message)
}

/// What `f5.monitor` says, as written: one value (for TCP ports) or one per protocol.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum MonitorSetting {
    /// `monitor: tcp` or `monitor: /Common/http`: TCP ports; UDP and SCTP keep their default.
    One(String),
    /// `monitor: {tcp: …, udp: …, sctp: …}`; a key left out keeps its default.
    PerProtocol(PerProtocol),
}

impl Default for MonitorSetting {
    fn default() -> Self {
        MonitorSetting::One("tcp".into())
    }
}

/// The per-protocol form of `f5.monitor`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PerProtocol {
    /// TCP ports: `tcp` (default), `gateway-icmp`, `none` or an existing monitor's path.
    pub tcp: Option<String>,
    /// UDP ports: `none` (default), `udp`, `gateway-icmp` or an existing monitor's path.
    pub udp: Option<String>,
    /// SCTP ports: `none` (default), `gateway-icmp` or an existing monitor's path.
    pub sctp: Option<String>,
}

/// A monitor type Portway makes, one per port, in its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MonitorKind {
    /// `ltm monitor tcp`: a TCP connection to the member.
    Tcp,
    /// `ltm monitor udp`: a datagram to the member, down on ICMP port unreachable.
    Udp,
    /// `ltm monitor gateway-icmp`: an ICMP echo to the member's address (the node is up).
    GatewayIcmp,
}

impl MonitorKind {
    /// Every kind, for reading the partition.
    pub const ALL: [MonitorKind; 3] =
        [MonitorKind::Tcp, MonitorKind::Udp, MonitorKind::GatewayIcmp];

    /// The REST collection: `/mgmt/tm/ltm/monitor/<collection>`.
    pub fn collection(self) -> &'static str {
        match self {
            MonitorKind::Tcp => "tcp",
            MonitorKind::Udp => "udp",
            MonitorKind::GatewayIcmp => "gateway-icmp",
        }
    }

    /// The built-in parent (`gateway_icmp` with an underscore: F5Networks/
    /// terraform-provider-bigip issue #553).
    pub fn parent(self) -> &'static str {
        match self {
            MonitorKind::Tcp => "/Common/tcp",
            MonitorKind::Udp => "/Common/udp",
            MonitorKind::GatewayIcmp => "/Common/gateway_icmp",
        }
    }

    /// The suffix of the monitor's name, so a change of kind is a new monitor, not a
    /// clash in the one name space all monitor types share.
    pub fn suffix(self) -> &'static str {
        match self {
            MonitorKind::Tcp => "tcp",
            MonitorKind::Udp => "udp",
            MonitorKind::GatewayIcmp => "gwicmp",
        }
    }
}

/// The monitor of one protocol's pools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MonitorChoice {
    /// A monitor Portway makes per port (interval 5, timeout 16).
    Make(MonitorKind),
    /// An existing monitor, by full path (`/Common/http`).
    Existing(String),
    /// No monitor: a member is used while its node is Ready.
    None,
}

/// The monitor choice per protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Monitors {
    /// TCP ports.
    pub tcp: MonitorChoice,
    /// UDP ports. A TCP monitor on a UDP port marks every member down, so the default is
    /// none (as for SCTP).
    pub udp: MonitorChoice,
    /// SCTP ports.
    pub sctp: MonitorChoice,
}

impl Default for Monitors {
    fn default() -> Self {
        Monitors {
            tcp: MonitorChoice::Make(MonitorKind::Tcp),
            udp: MonitorChoice::None,
            sctp: MonitorChoice::None,
        }
    }
}

/// A full path `/Partition/name` as BIG-IP names objects.
fn is_full_path(s: &str) -> bool {
    let mut parts = s.strip_prefix('/').unwrap_or("").splitn(2, '/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        })
    };
    ok(parts.next()) && ok(parts.next())
}

fn choice(path: &str, value: &str, made: &[MonitorKind]) -> Result<MonitorChoice, ConfigIssue> {
    if value == "none" {
        return Ok(MonitorChoice::None);
    }
    if let Some(kind) = made.iter().find(|k| k.collection() == value) {
        return Ok(MonitorChoice::Make(*kind));
    }
    if is_full_path(value) {
        return Ok(MonitorChoice::Existing(value.to_string()));
    }
    let names: Vec<&str> = made.iter().map(|k| k.collection()).collect();
    Err(issue(
        path,
        format!(
            "{value:?} is not {}, `none` or the full path of an existing monitor such as /Common/http",
            names.join(", ")
        ),
    ))
}

impl MonitorSetting {
    /// The monitor of each protocol, or what is wrong with the setting.
    pub fn choices(&self) -> Result<Monitors, Vec<ConfigIssue>> {
        use MonitorKind::*;
        let mut m = Monitors::default();
        let mut issues = Vec::new();
        let mut set =
            |path: &str, value: Option<&String>, made: &[MonitorKind], slot: &mut MonitorChoice| {
                if let Some(v) = value {
                    match choice(path, v, made) {
                        Ok(c) => *slot = c,
                        Err(e) => issues.push(e),
                    }
                }
            };
        match self {
            MonitorSetting::One(v) => set("f5.monitor", Some(v), &[Tcp, GatewayIcmp], &mut m.tcp),
            MonitorSetting::PerProtocol(p) => {
                set(
                    "f5.monitor.tcp",
                    p.tcp.as_ref(),
                    &[Tcp, GatewayIcmp],
                    &mut m.tcp,
                );
                set(
                    "f5.monitor.udp",
                    p.udp.as_ref(),
                    &[Udp, GatewayIcmp],
                    &mut m.udp,
                );
                set(
                    "f5.monitor.sctp",
                    p.sctp.as_ref(),
                    &[GatewayIcmp],
                    &mut m.sctp,
                );
            }
        }
        if issues.is_empty() {
            Ok(m)
        } else {
            Err(issues)
        }
    }
}

impl F5Config {
    /// The monitor of each protocol. [`F5Config::from_value`] refused a setting that does not
    /// resolve, so the defaults stand in only for a config built some other way.
    pub fn monitors(&self) -> Monitors {
        self.monitor.choices().unwrap_or_default()
    }

    /// Parses and checks the section; `known_pools` cross-checks `pools`.
    pub fn from_value(
        value: &serde_json::Value,
        known_pools: Option<&[&str]>,
    ) -> Result<F5Config, Vec<ConfigIssue>> {
        let cfg: F5Config = portway_provider::parse_section("f5", value).map_err(|e| vec![e])?;
        let mut issues = Vec::new();
        if let Some(problem) = url_problem(&cfg.url) {
            issues.push(issue("f5.url", problem));
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
        if let Err(mut bad) = cfg.monitor.choices() {
            issues.append(&mut bad);
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
        assert_eq!(c.monitors(), Monitors::default());
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

    #[test]
    fn a_url_with_credentials_is_refused() {
        let cfg = |url: &str| {
            F5Config::from_value(
                &json!({"url": url, "credentialsSecret": {"namespace": "n", "name": "s"}}),
                None,
            )
        };
        for url in [
            "https://admin:hunter2@bigip.example.net",
            "https://admin@bigip.example.net:8443/",
        ] {
            let e = cfg(url).expect_err("userinfo");
            assert_eq!(e[0].path, "f5.url", "{e:?}");
            assert!(e[0].message.contains("f5.credentialsSecret"), "{e:?}");
            assert!(!e[0].message.contains("hunter2"), "{e:?}");
        }
        assert!(cfg("https://bigip.example.net:8443").is_ok());
        assert!(
            cfg("http://10.0.0.5").is_ok(),
            "plain http: a warning at start"
        );
        assert!(cfg("https://").is_err());
    }

    #[test]
    fn monitors_per_protocol() {
        let cfg = |m: serde_json::Value| {
            F5Config::from_value(
                &json!({"url": "https://b", "credentialsSecret": {"namespace": "n", "name": "s"},
                    "monitor": m}),
                None,
            )
        };
        let c = cfg(json!("/Common/http")).expect("one path");
        assert_eq!(
            c.monitors().tcp,
            MonitorChoice::Existing("/Common/http".into())
        );
        assert_eq!(c.monitors().udp, MonitorChoice::None);
        let c = cfg(json!({"udp": "gateway-icmp", "sctp": "/Common/gateway_icmp"})).expect("map");
        let m = c.monitors();
        assert_eq!(m.tcp, MonitorChoice::Make(MonitorKind::Tcp));
        assert_eq!(m.udp, MonitorChoice::Make(MonitorKind::GatewayIcmp));
        assert_eq!(
            m.sctp,
            MonitorChoice::Existing("/Common/gateway_icmp".into())
        );
        let e = cfg(json!({"udp": "tcp", "sctp": "http"})).expect_err("bad");
        let paths: Vec<&str> = e.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["f5.monitor.udp", "f5.monitor.sctp"], "{e:?}");
        assert!(cfg(json!({"icmp": "none"})).is_err(), "unknown key");
    }
}
