//! The provider sections of the configuration, parsed into each provider's own typed
//! configuration and cross-checked (pool references, the default class) so that
//! `check-config` and start-up report every problem with its key path before anything runs.

use super::model::Config;
use super::raw::RawConfig;
use portway_bgp::BgpConfig;
use portway_f5::F5Config;
use portway_hostport::HostportConfig;
use portway_l2::L2Config;
use portway_provider::ConfigIssue;
use portway_provider::ipam::parse_pools;

/// Parses every provider section and cross-checks them (pool references, the default
/// class), reporting every problem at once.
pub fn build(config: RawConfig) -> Result<Config, Vec<ConfigIssue>> {
    let mut errors = Vec::new();
    let pools = match parse_pools(&config.pools) {
        Ok(p) => p,
        Err(es) => {
            errors.extend(es.into_iter().map(|e| ConfigIssue::new(e.path, e.message)));
            Vec::new()
        }
    };
    let hostport = match HostportConfig::from_value(config.hostport.as_ref()) {
        Ok(h) => h,
        Err(es) => {
            errors.extend(es.into_iter().map(|e| ConfigIssue::new(e.path, e.message)));
            HostportConfig::default()
        }
    };
    let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    let l2 = match &config.l2 {
        None => None,
        Some(v) => match L2Config::from_value(v.clone(), Some(&names)) {
            Ok(c) => Some(c),
            Err(es) => {
                errors.extend(es.into_iter().map(|e| ConfigIssue::new(e.path, e.message)));
                None
            }
        },
    };
    let bgp = match &config.bgp {
        None => None,
        Some(v) => match BgpConfig::from_value(v.clone()) {
            Ok(c) => {
                for (i, adv) in c.advertisements.iter().enumerate() {
                    for (j, p) in adv.pools.iter().enumerate() {
                        if !names.contains(&p.as_str()) {
                            errors.push(ConfigIssue::new(
                                format!("bgp.advertisements[{i}].pools[{j}]"),
                                format!(
                                    "no pool named {p:?}; define it under `pools` or remove it"
                                ),
                            ));
                        }
                    }
                }
                Some(c)
            }
            Err(es) => {
                errors.extend(es.into_iter().map(|e| ConfigIssue::new(e.path, e.message)));
                None
            }
        },
    };
    let f5 = match &config.f5 {
        None => None,
        Some(v) => match F5Config::from_value(v, Some(&names)) {
            Ok(c) => Some(c),
            Err(es) => {
                errors.extend(es.into_iter().map(|e| ConfigIssue::new(e.path, e.message)));
                None
            }
        },
    };
    // A default class that serves nothing would send every Service without a class down
    // the cleanup path (or leave it parked): refuse it, naming what to add.
    let default_on = match config.default_class.as_str() {
        crate::names::HOSTPORT => hostport.enabled,
        crate::names::L2 => config.l2.is_some(),
        crate::names::BGP => config.bgp.is_some(),
        crate::names::F5 => config.f5.is_some(),
        _ => true, // not a Portway class: config.rs reports that
    };
    if !default_on {
        let fix = if config.default_class == crate::names::HOSTPORT {
            "hostport is switched off (hostport.enabled: false); set defaultClass to a \
             configured class, or enable hostport"
                .to_string()
        } else {
            let section = config
                .default_class
                .trim_start_matches("portway.dev/")
                .to_string();
            format!(
                "{} has no `{section}:` section; add the section, or set defaultClass to a \
                 configured class",
                config.default_class
            )
        };
        errors.push(ConfigIssue::new("defaultClass", fix));
    }
    if errors.is_empty() {
        Ok(Config {
            default_class: config.default_class,
            service_controller: config.service_controller,
            nodes: config.nodes,
            pools,
            hostport,
            l2,
            bgp,
            f5,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn unknown_pool_references_name_the_key() {
        let cfg = Config::from_yaml(
            "pools:\n- name: lan\n  addresses: [192.0.2.0/28]\nl2:\n  pools: [lan, nope]\n",
        );
        let err = cfg.expect_err("bad ref");
        assert!(err.0.iter().any(|e| e.path == "l2.pools[1]"), "{err}");
    }

    #[test]
    fn overlapping_pools_are_refused() {
        let err = Config::from_yaml(
            "pools:\n- name: a\n  addresses: [192.0.2.0/28]\n- name: b\n  addresses: [192.0.2.8-192.0.2.9]\n",
        )
        .expect_err("overlap");
        assert!(
            err.0.iter().any(|e| e.path.starts_with("pools[1]")),
            "{err}"
        );
    }

    #[test]
    fn valid_sections_parse() {
        let cfg = Config::from_yaml(
            "pools:\n- name: lan\n  addresses: [192.0.2.0/28]\n- name: dc\n  addresses: [198.51.100.0/28]\nl2:\n  pools: [lan]\nbgp:\n  localASN: 64512\n  peers: [{address: 10.0.0.1, asn: 64500}]\n  advertisements: [{pools: [dc]}]\n",
        )
        .expect("valid");
        assert_eq!(cfg.l2.as_ref().expect("l2").pools, vec!["lan".to_string()]);
        assert_eq!(cfg.bgp_pools(), vec!["dc".to_string()]);
    }

    /// Issue 16 #1: a default class that is not enabled is refused with its key.
    #[test]
    fn a_default_class_that_is_not_enabled_is_refused() {
        let err = Config::from_yaml("defaultClass: portway.dev/l2\n").expect_err("no l2");
        assert!(
            err.0
                .iter()
                .any(|e| e.path == "defaultClass" && e.message.contains("l2:")),
            "{err}"
        );
        let err = Config::from_yaml("hostport:\n  enabled: false\n").expect_err("off");
        assert!(
            err.0
                .iter()
                .any(|e| e.path == "defaultClass" && e.message.contains("hostport.enabled")),
            "{err}"
        );
        Config::from_yaml(
            "defaultClass: portway.dev/l2\nhostport:\n  enabled: false\npools:\n- name: lan\n  addresses: [192.0.2.0/28]\nl2:\n  pools: [lan]\n",
        )
        .expect("l2 as the default, hostport off");
    }
}
