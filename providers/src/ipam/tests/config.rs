//! Configuration parsing and validation: every error with its key path.

use crate::ipam::{
    LabelSelectorRequirement, PoolConfig, PoolError, ServiceAllocation, parse_pools,
    validate_pool_refs, validate_pools,
};

fn paths(errors: &[PoolError]) -> Vec<&str> {
    errors.iter().map(|e| e.path.as_str()).collect()
}

fn only(errors: &[PoolError], path: &str, needle: &str) {
    assert_eq!(paths(errors), [path], "{errors:?}");
    assert!(
        errors[0].message.contains(needle),
        "{path}: {:?} lacks {needle:?}",
        errors[0].message
    );
}

#[test]
fn design_example_parses_with_defaults() {
    let yaml = r#"
- name: lan
  addresses: ["192.168.1.240-192.168.1.250", "fd00:1::/120"]
  autoAssign: true
  avoidBuggyIPs: false
  serviceAllocation: { priority: 0, namespaces: [], namespaceSelector: {}, serviceSelector: {} }
- name: dc
  addresses: ["10.20.0.0/24"]
"#;
    let values: Vec<serde_json::Value> = serde_yaml::from_str(yaml).expect("yaml");
    let pools = parse_pools(&values).expect("valid");
    assert_eq!(pools[0].addresses.len(), 2);
    assert!(pools[1].auto_assign, "autoAssign defaults to true");
    assert!(!pools[1].avoid_buggy_ips);
    assert_eq!(pools[1].service_allocation, None);
    assert_eq!(
        pools[0].service_allocation,
        Some(ServiceAllocation::default())
    );
}

#[test]
fn parse_errors_carry_the_key_path() {
    let values: Vec<serde_json::Value> = serde_yaml::from_str(
        r#"
- name: ok
  addresses: ["10.0.0.0/24"]
- name: typo
  addresses: ["10.1.0.0/24"]
  autoAsign: false
- name: deep
  addresses: ["10.2.0.0/24"]
  serviceAllocation: { namespaceSelector: { matchLabel: {} } }
"#,
    )
    .expect("yaml");
    let errs = parse_pools(&values).expect_err("unknown fields");
    assert_eq!(
        paths(&errs),
        [
            "pools[1].autoAsign",
            "pools[2].serviceAllocation.namespaceSelector.matchLabel"
        ]
    );
    assert!(errs[0].message.contains("autoAsign"), "{errs:?}");
    // Semantic errors come after the shape is right.
    let values = vec![serde_json::json!({ "name": "x", "addresses": ["10.0.0.0/40"] })];
    only(
        &parse_pools(&values).expect_err("bad"),
        "pools[0].addresses[0]",
        "CIDR",
    );
}

#[test]
fn every_address_error_names_its_entry() {
    let cases = [
        ("10.0.0.300", "not an address"),
        ("10.0.0.0/33", "not a valid CIDR"),
        ("10.0.0.9-10.0.0.1", "reversed"),
        ("10.0.0.1-fd00::1", "mixes"),
        ("", "empty address entry"),
    ];
    for (bad, needle) in cases {
        let pools = [
            PoolConfig::new("good", &["10.9.0.0/24"]),
            PoolConfig::new("bad", &["10.8.0.0/24", bad]),
        ];
        only(&validate_pools(&pools), "pools[1].addresses[1]", needle);
    }
}

#[test]
fn empty_and_unusable_pools() {
    only(
        &validate_pools(&[PoolConfig::new("e", &[])]),
        "pools[0].addresses",
        "empty",
    );
    let mut p = PoolConfig::new("b", &["10.0.0.0/32", "10.0.0.255"]);
    p.avoid_buggy_ips = true;
    only(&validate_pools(&[p]), "pools[0].addresses", "avoidBuggyIPs");
}

#[test]
fn overlaps_name_both_pools() {
    let pools = [
        PoolConfig::new("a", &["10.0.0.0/24", "fd00::/64"]),
        PoolConfig::new("b", &["10.1.0.0/24", "10.0.0.128-10.0.0.130"]),
        PoolConfig::new("c", &["fd00::5"]),
    ];
    let errs = validate_pools(&pools);
    assert_eq!(
        paths(&errs),
        ["pools[1].addresses[1]", "pools[2].addresses[0]"]
    );
    assert!(
        errs[0]
            .message
            .contains("pool \"a\" (pools[0].addresses[0])"),
        "{errs:?}"
    );
    assert!(
        errs[1]
            .message
            .contains("pool \"a\" (pools[0].addresses[1])"),
        "{errs:?}"
    );
    // Within one pool too; touching ranges do not overlap.
    let same = [PoolConfig::new(
        "a",
        &["10.0.0.0/25", "10.0.0.127-10.0.0.200"],
    )];
    only(
        &validate_pools(&same),
        "pools[0].addresses[1]",
        "the same pool",
    );
    let touching = [PoolConfig::new("a", &["10.0.0.0/25", "10.0.0.128/25"])];
    assert!(validate_pools(&touching).is_empty());
    // IPv4 and IPv6 with equal integer values do not overlap.
    let fams = [
        PoolConfig::new("a", &["0.0.0.1"]),
        PoolConfig::new("b", &["::1"]),
    ];
    assert!(validate_pools(&fams).is_empty());
}

#[test]
fn names_must_be_unique_and_writable() {
    let pools = [
        PoolConfig::new("lan", &["10.0.0.0/30"]),
        PoolConfig::new("lan", &["10.1.0.0/30"]),
        PoolConfig::new("Bad Name", &["10.2.0.0/30"]),
    ];
    let errs = validate_pools(&pools);
    assert_eq!(paths(&errs), ["pools[1].name", "pools[2].name"]);
    assert!(errs[0].message.contains("pools[0]"));
}

#[test]
fn selector_and_priority_errors() {
    let mut p = PoolConfig::new("p", &["10.0.0.0/30"]);
    let mut sa = ServiceAllocation {
        priority: -1,
        ..ServiceAllocation::default()
    };
    sa.service_selector
        .match_expressions
        .push(LabelSelectorRequirement {
            key: "tier".into(),
            operator: "Equals".into(),
            values: vec!["gold".into()],
        });
    sa.namespace_selector
        .match_expressions
        .push(LabelSelectorRequirement {
            key: "env".into(),
            operator: "In".into(),
            values: vec![],
        });
    sa.namespaces.push(String::new());
    p.service_allocation = Some(sa);
    let errs = validate_pools(&[p]);
    assert_eq!(
        paths(&errs),
        [
            "pools[0].serviceAllocation.priority",
            "pools[0].serviceAllocation.namespaces[0]",
            "pools[0].serviceAllocation.namespaceSelector.matchExpressions[0].values",
            "pools[0].serviceAllocation.serviceSelector.matchExpressions[0].operator",
        ]
    );
    assert!(errs[3].message.contains("Equals"));
}

#[test]
fn provider_pool_references() {
    let pools = [PoolConfig::new("lan", &["10.0.0.0/30"])];
    let refs = vec!["lan".to_string(), "dc".to_string()];
    let errs = validate_pool_refs("bgp.advertisements[0].pools", &refs, &pools);
    only(
        &errs,
        "bgp.advertisements[0].pools[1]",
        "unknown pool \"dc\"",
    );
    assert!(errs[0].message.contains("lan"), "lists the known pools");
    let errs = validate_pool_refs("l2.pools", &refs, &[]);
    assert_eq!(paths(&errs), ["l2.pools[0]", "l2.pools[1]"]);
    assert!(validate_pool_refs("f5.pools", &refs[..1], &pools).is_empty());
}

#[test]
fn errors_display_path_then_message() {
    let e = &validate_pools(&[PoolConfig::new("e", &[])])[0];
    assert!(
        e.to_string()
            .starts_with("pools[0].addresses: the pool is empty")
    );
}
