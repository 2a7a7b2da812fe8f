//! Step tables for allocation, requests, pool choice and dual-stack.

use super::Expect::{Err as Fails, Ips};
use super::Step::{Alloc, AllocIn, Release};
use super::run;
use crate::ipam::testkit::{SvcExt, svc};
use crate::ipam::{AllocError, LabelSelector, PoolConfig, Scope, ServiceAllocation};
use crate::{IpFamily, IpFamilyPolicy};
use std::collections::BTreeMap;

use IpFamily::{V4, V6};
use IpFamilyPolicy::{PreferDualStack, RequireDualStack, SingleStack};

fn pool(name: &str, addrs: &[&str]) -> PoolConfig {
    PoolConfig::new(name, addrs)
}

#[test]
fn first_free_reuse_exhaustion_and_stability() {
    let pools = [pool("a", &["10.0.0.1-10.0.0.3"])];
    let a = run(
        &pools,
        vec![
            ("first", Alloc(svc("d", "s1"), Ips(&["10.0.0.1"]))),
            ("second", Alloc(svc("d", "s2"), Ips(&["10.0.0.2"]))),
            ("again keeps", Alloc(svc("d", "s1"), Ips(&["10.0.0.1"]))),
            ("third", Alloc(svc("d", "s3"), Ips(&["10.0.0.3"]))),
            (
                "full",
                Alloc(
                    svc("d", "s4"),
                    Fails(|e| {
                        matches!(e, AllocError::Exhausted { pools, family: Some(IpFamily::V4) }
                            if pools == &["a".to_string()])
                    }),
                ),
            ),
            ("release", Release("d/s2", &["10.0.0.2"])),
            ("release twice is a no-op", Release("d/s2", &[])),
            (
                "lowest free again",
                Alloc(svc("d", "s4"), Ips(&["10.0.0.2"])),
            ),
            (
                "others untouched",
                Alloc(svc("d", "s3"), Ips(&["10.0.0.3"])),
            ),
        ],
    );
    let stats = a.stats();
    assert_eq!(
        (stats[0].total, stats[0].in_use, stats[0].failures),
        (3, 3, 1)
    );
}

#[test]
fn requested_addresses_are_honoured_or_refused_without_substitute() {
    let mut manual = pool("manual", &["192.168.0.0/30"]);
    manual.auto_assign = false;
    let mut buggy = pool("buggy", &["10.1.0.0/24"]);
    buggy.avoid_buggy_ips = true;
    let pools = [pool("a", &["10.0.0.0/29", "fd00::/126"]), manual, buggy];
    run(
        &pools,
        vec![
            (
                "honoured",
                Alloc(svc("d", "s1").request(&["10.0.0.5"]), Ips(&["10.0.0.5"])),
            ),
            (
                "held by another",
                Alloc(
                    svc("d", "s2").request(&["10.0.0.5"]),
                    Fails(|e| {
                        matches!(e, AllocError::InUse { ip, holder, .. }
                            if ip.to_string() == "10.0.0.5" && holder.to_string() == "d/s1")
                    }),
                ),
            ),
            (
                "outside every pool",
                Alloc(
                    svc("d", "s2").request(&["172.16.0.1"]),
                    Fails(|e| matches!(e, AllocError::OutsidePools { .. })),
                ),
            ),
            (
                "non-auto pool by request",
                Alloc(
                    svc("d", "s2").request(&["192.168.0.2"]),
                    Ips(&["192.168.0.2"]),
                ),
            ),
            ("auto skips it", Alloc(svc("d", "s3"), Ips(&["10.0.0.0"]))),
            (
                "request moves a Service",
                Alloc(svc("d", "s3").request(&["10.0.0.7"]), Ips(&["10.0.0.7"])),
            ),
            (
                "old address freed",
                Alloc(svc("d", "s4"), Ips(&["10.0.0.0"])),
            ),
            (
                "two of one family",
                Alloc(
                    svc("d", "s5")
                        .families(PreferDualStack, &[V4, V6])
                        .request(&["10.0.0.1", "10.0.0.2"]),
                    Fails(
                        |e| matches!(e, AllocError::BadRequest { reason } if reason.contains("one address per family")),
                    ),
                ),
            ),
            (
                "family not wanted",
                Alloc(
                    svc("d", "s5").request(&["fd00::1"]),
                    Fails(
                        |e| matches!(e, AllocError::BadRequest { reason } if reason.contains("IPv6")),
                    ),
                ),
            ),
            (
                "buggy address refused",
                Alloc(
                    svc("d", "s5").request(&["10.1.0.255"]),
                    Fails(|e| matches!(e, AllocError::AvoidedAddress { .. })),
                ),
            ),
            (
                "not in the annotated pool",
                Alloc(
                    svc("d", "s5").pool("manual").request(&["10.0.0.3"]),
                    Fails(
                        |e| matches!(e, AllocError::OutsidePools { where_, .. } if where_.contains("manual")),
                    ),
                ),
            ),
            (
                "dual-stack request",
                Alloc(
                    svc("d", "s5")
                        .families(RequireDualStack, &[V6, V4])
                        .request(&["10.0.0.1", "fd00::2"]),
                    Ips(&["fd00::2", "10.0.0.1"]),
                ),
            ),
            (
                "require dual needs both requested",
                Alloc(
                    svc("d", "s6")
                        .families(RequireDualStack, &[V4, V6])
                        .request(&["10.0.0.2"]),
                    Fails(|e| matches!(e, AllocError::BadRequest { .. })),
                ),
            ),
            (
                "second conflict leaves the first free",
                Alloc(
                    svc("d", "s6")
                        .families(RequireDualStack, &[V4, V6])
                        .request(&["10.0.0.2", "fd00::2"]),
                    Fails(|e| matches!(e, AllocError::InUse { .. })),
                ),
            ),
            (
                "so 10.0.0.2 is still free",
                Alloc(svc("d", "s6"), Ips(&["10.0.0.2"])),
            ),
        ],
    );
}

fn allocation(
    priority: i32,
    namespaces: &[&str],
    svc_labels: &[(&str, &str)],
) -> ServiceAllocation {
    ServiceAllocation {
        priority,
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        namespace_selector: LabelSelector::default(),
        service_selector: LabelSelector {
            match_labels: svc_labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            match_expressions: Vec::new(),
        },
    }
}

#[test]
fn pool_choice_by_annotation_selectors_priority_then_name() {
    let mut team = pool("team", &["10.2.0.1"]);
    team.service_allocation = Some(allocation(0, &["team-a"], &[]));
    let mut gold = pool("gold", &["10.3.0.1"]);
    gold.service_allocation = Some(allocation(1, &[], &[("tier", "gold")]));
    let mut silver = pool("silver", &["10.4.0.1"]);
    silver.service_allocation = Some(allocation(2, &[], &[("tier", "gold")]));
    let mut labelled_ns = pool("nsl", &["10.5.0.1"]);
    let mut sa = allocation(0, &[], &[]);
    sa.namespace_selector
        .match_labels
        .insert("env".into(), "prod".into());
    labelled_ns.service_allocation = Some(sa);
    let pools = [
        pool("zz-general", &["10.9.0.1"]),
        pool("general", &["10.1.0.0/30"]),
        team,
        gold,
        silver,
        labelled_ns,
    ];
    run(
        &pools,
        vec![
            (
                "general pools by name",
                Alloc(svc("x", "s1"), Ips(&["10.1.0.0"])),
            ),
            (
                "namespace pool first",
                Alloc(svc("team-a", "s1"), Ips(&["10.2.0.1"])),
            ),
            (
                "then general",
                Alloc(svc("team-a", "s2"), Ips(&["10.1.0.1"])),
            ),
            (
                "priority 1 first",
                Alloc(svc("x", "g1").label("tier", "gold"), Ips(&["10.3.0.1"])),
            ),
            (
                "then priority 2",
                Alloc(svc("x", "g2").label("tier", "gold"), Ips(&["10.4.0.1"])),
            ),
            (
                "namespace labels",
                Alloc(svc("x", "p1").ns_label("env", "prod"), Ips(&["10.5.0.1"])),
            ),
            (
                "annotation",
                Alloc(svc("x", "z").pool("zz-general"), Ips(&["10.9.0.1"])),
            ),
            (
                "unknown pool",
                Alloc(
                    svc("x", "u").pool("nope"),
                    Fails(|e| matches!(e, AllocError::UnknownPool { pool } if pool == "nope")),
                ),
            ),
            (
                "pool closed to the Service",
                Alloc(
                    svc("x", "u").pool("team"),
                    Fails(|e| matches!(e, AllocError::PoolNotAllowed { .. })),
                ),
            ),
            (
                "requested address in a closed pool",
                Alloc(
                    svc("x", "u").request(&["10.3.0.1"]),
                    Fails(|e| matches!(e, AllocError::AddressNotAllowed { .. })),
                ),
            ),
            (
                "pool outside the provider's scope",
                AllocIn(
                    svc("x", "u").pool("general"),
                    Scope::new("portway.dev/l2", ["team"]),
                    Fails(
                        |e| matches!(e, AllocError::PoolNotAllowed { reason, .. } if reason.contains("portway.dev/l2")),
                    ),
                ),
            ),
            (
                "no pool in scope admits",
                AllocIn(
                    svc("x", "u"),
                    Scope::new("portway.dev/l2", ["team"]),
                    Fails(|e| matches!(e, AllocError::NoPool { .. })),
                ),
            ),
            (
                "scope picks its pool",
                AllocIn(
                    svc("x", "u"),
                    Scope::new("portway.dev/l2", ["general"]),
                    Ips(&["10.1.0.2"]),
                ),
            ),
        ],
    );
}

#[test]
fn dual_stack_policies() {
    let pools = [
        pool("a-v4only", &["10.0.0.0/30"]),
        pool("b-dual", &["10.1.0.0/31", "fd00::/127"]),
        pool("c-v6only", &["fd01::/127"]),
    ];
    run(
        &pools,
        vec![
            ("single v4", Alloc(svc("d", "a"), Ips(&["10.0.0.0"]))),
            (
                "single v6 skips the v4-only pool",
                Alloc(svc("d", "b").families(SingleStack, &[V6]), Ips(&["fd00::"])),
            ),
            (
                "require dual in a v4-only pool",
                Alloc(
                    svc("d", "c")
                        .pool("a-v4only")
                        .families(RequireDualStack, &[V4, V6]),
                    Fails(|e| {
                        matches!(e, AllocError::FamilyUnavailable { family: IpFamily::V6, pools }
                            if pools == &["a-v4only".to_string()])
                    }),
                ),
            ),
            (
                "prefer dual falls back in a v4-only pool",
                Alloc(
                    svc("d", "c")
                        .pool("a-v4only")
                        .families(PreferDualStack, &[V4, V6]),
                    Ips(&["10.0.0.1"]),
                ),
            ),
            (
                "require dual ordered by ipFamilies",
                Alloc(
                    svc("d", "e").families(RequireDualStack, &[V6, V4]),
                    Ips(&["fd00::1", "10.1.0.0"]),
                ),
            ),
            (
                "dual pool v6 exhausted: require fails",
                Alloc(
                    svc("d", "f")
                        .pool("b-dual")
                        .families(RequireDualStack, &[V4, V6]),
                    Fails(|e| {
                        matches!(
                            e,
                            AllocError::Exhausted {
                                family: Some(IpFamily::V6),
                                ..
                            }
                        )
                    }),
                ),
            ),
            (
                "prefer dual keeps v4 only",
                Alloc(
                    svc("d", "f")
                        .pool("b-dual")
                        .families(PreferDualStack, &[V4, V6]),
                    Ips(&["10.1.0.1"]),
                ),
            ),
            ("free a v6", Release("d/b", &["fd00::"])),
            (
                "prefer dual gains v6 later",
                Alloc(
                    svc("d", "f")
                        .pool("b-dual")
                        .families(PreferDualStack, &[V4, V6]),
                    Ips(&["10.1.0.1", "fd00::"]),
                ),
            ),
            (
                "back to single stack drops v6",
                Alloc(
                    svc("d", "f").pool("b-dual").families(SingleStack, &[V4]),
                    Ips(&["10.1.0.1"]),
                ),
            ),
            (
                "no ipFamilies: any one family",
                Alloc(
                    svc("d", "g").pool("c-v6only").families(SingleStack, &[]),
                    Ips(&["fd01::"]),
                ),
            ),
        ],
    );
}

/// MetalLB's `namespaces` and `namespaceSelectors` are a union: a namespace listed or one the
/// selector selects may use the pool, and the service selector applies to both. A selector
/// that matches nothing admits only the names listed (MetalLB would admit every namespace).
#[test]
fn listed_and_selected_namespaces_are_a_union_as_in_metallb() {
    let mut sa = allocation(0, &["namespace-a"], &[("app", "bar")]);
    sa.namespace_selector
        .match_labels
        .insert("foo".into(), "bar".into());
    let none = BTreeMap::new();
    let foo: BTreeMap<String, String> = [("foo".to_string(), "bar".to_string())].into();
    let app: BTreeMap<String, String> = [("app".to_string(), "bar".to_string())].into();
    assert!(sa.admits("namespace-a", &none, &app), "listed");
    assert!(sa.admits("team-x", &foo, &app), "selected");
    assert!(!sa.admits("team-y", &none, &app), "neither");
    assert!(
        !sa.admits("namespace-a", &none, &none),
        "the service selector still applies"
    );
    let mut only_selector = allocation(0, &[], &[]);
    only_selector
        .namespace_selector
        .match_labels
        .insert("foo".into(), "bar".into());
    assert!(
        !only_selector.admits("team-y", &none, &none),
        "a selector matching nothing"
    );
    assert!(only_selector.admits("team-x", &foo, &none));
    assert!(
        allocation(0, &[], &[]).admits("any", &none, &none),
        "unrestricted"
    );
}
