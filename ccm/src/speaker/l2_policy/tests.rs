use super::*;
use portway_l2::InterfaceChoice;
use portway_provider::TrafficPolicy;
use serde_json::json;

fn pools() -> Vec<PoolConfig> {
    serde_json::from_value(json!([
        {"name": "lan", "addresses": ["192.168.1.0/24"]},
        {"name": "dmz", "addresses": ["203.0.113.0/24"]}
    ]))
    .expect("pools")
}

fn policy(name: &str, spec: serde_json::Value) -> L2AnnouncementPolicy {
    serde_json::from_value(json!({
        "apiVersion": "portway.dev/v1alpha1", "kind": "L2AnnouncementPolicy",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("policy")
}

fn node(name: &str, labels: serde_json::Value) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
            .expect("node"),
    )
}

fn labels(v: serde_json::Value) -> BTreeMap<String, String> {
    serde_json::from_value(v).expect("labels")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn a_pool_no_policy_covers_has_no_scope() {
    let s = Scopes::new(&pools(), &[]);
    assert_eq!(s, Scopes::default());
    let p = policy(
        "dmz-only",
        json!({"pools": ["dmz"], "nodeSelectors": [{"matchLabels": {"zone": "b"}}]}),
    );
    let s = Scopes::new(&pools(), &[p]);
    assert!(s.scope_of(ip("192.168.1.7")).is_none());
    let dmz = s.scope_of(ip("203.0.113.7")).expect("scope");
    assert!(dmz.selects(&labels(json!({"zone": "b"}))));
    assert!(!dmz.selects(&labels(json!({"zone": "a"}))));
    assert_eq!(dmz.policies, ["dmz-only"]);
}

#[test]
fn policies_on_one_pool_are_a_union_and_a_policy_without_pools_covers_all() {
    let a = policy(
        "a",
        json!({"pools": ["lan"], "nodeSelectors": [{"matchLabels": {"zone": "a"}}], "interfaces": ["eth1"]}),
    );
    let b = policy(
        "b",
        json!({"nodeSelectors": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}],
               "interfaces": ["eth2"]}),
    );
    // The store's order does not matter.
    let s = Scopes::new(&pools(), &[b.clone(), a.clone()]);
    assert_eq!(s, Scopes::new(&pools(), &[a, b]));
    let lan = s.scope_of(ip("192.168.1.7")).expect("lan");
    assert_eq!(lan.policies, ["a", "b"]);
    for zone in ["a", "b"] {
        assert!(lan.selects(&labels(json!({ "zone": zone }))), "{zone}");
    }
    assert!(!lan.selects(&labels(json!({"zone": "c"}))));
    assert_eq!(
        lan.interface_choice(),
        InterfaceChoice::Named(["eth1".to_string(), "eth2".to_string()].into())
    );
    // `b` names no pool: it covers dmz alone.
    let dmz = s.scope_of(ip("203.0.113.1")).expect("dmz");
    assert_eq!(dmz.policies, ["b"]);
    assert!(!dmz.selects(&labels(json!({"zone": "a"}))));
}

#[test]
fn a_policy_decides_for_a_pool_the_file_also_lists() {
    // The file lists lan in l2.pools with every node; a policy narrows it to zone b.
    let p = policy(
        "p",
        json!({"pools": ["lan"], "nodeSelectors": [{"matchLabels": {"zone": "b"}}]}),
    );
    let s = Scopes::new(&pools(), &[p]);
    let lan = s.scope_of(ip("192.168.1.7")).expect("lan");
    assert_eq!(lan.policies, ["p"]);
    assert!(lan.selects(&labels(json!({"zone": "b"}))));
    assert!(!lan.selects(&labels(json!({}))));
}

#[test]
fn vips_are_stamped_and_deleting_policies_are_ignored() {
    let mut p = policy(
        "p",
        json!({"nodeSelectors": [{"matchLabels": {"zone": "b"}}]}),
    );
    let s = Scopes::new(&pools(), std::slice::from_ref(&p));
    let mut vips = vec![VipInput {
        ip: ip("192.168.1.9"),
        traffic_policy: TrafficPolicy::Cluster,
        ready_nodes: BTreeSet::new(),
        scope: None,
    }];
    s.stamp(&mut vips);
    assert_eq!(vips[0].scope.as_ref(), s.scope_of(ip("192.168.1.9")));
    p.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).expect("time"));
    assert_eq!(Scopes::new(&pools(), &[p]), Scopes::default());
}

#[test]
fn a_scope_selecting_no_ready_node_is_reported_with_the_policy_and_the_fix() {
    let p = policy(
        "edge",
        json!({"pools": ["lan"], "nodeSelectors": [{"matchLabels": {"zone": "b"}}]}),
    );
    let s = Scopes::new(&pools(), &[p]);
    let mut vips = vec![
        VipInput {
            ip: ip("192.168.1.9"),
            traffic_policy: TrafficPolicy::Cluster,
            ready_nodes: BTreeSet::new(),
            scope: None,
        },
        VipInput {
            ip: ip("203.0.113.9"),
            traffic_policy: TrafficPolicy::Cluster,
            ready_nodes: BTreeSet::new(),
            scope: None,
        },
    ];
    s.stamp(&mut vips);
    let nodes = [node("n1", json!({"zone": "a"}))];
    let unselected = s.unselected(&nodes);
    let notes = unselected_vips(vips.iter(), &unselected);
    assert_eq!(
        notes.keys().copied().collect::<Vec<_>>(),
        [ip("192.168.1.9")]
    );
    let note = &notes[&ip("192.168.1.9")];
    assert!(note.contains("L2AnnouncementPolicy edge"), "{note}");
    assert!(note.contains("spec.nodeSelectors"), "{note}");
    // A node in zone b, but excluded from load balancers: still nobody.
    let excluded = node(
        "n2",
        json!({"zone": "b", "node.kubernetes.io/exclude-from-external-load-balancers": ""}),
    );
    assert_eq!(s.unselected(&[nodes[0].clone(), excluded]).len(), 1);
    let nodes = [nodes[0].clone(), node("n2", json!({"zone": "b"}))];
    assert!(s.unselected(&nodes).is_empty());
}
