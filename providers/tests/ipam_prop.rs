//! Property tests of the allocator over random sequences of allocate,
//! request, share, release, configuration reload and restart-rebuild.
//!
//! A model plays the controller: it publishes what `allocate` returned as
//! the Service's status and, on restart, rebuilds a fresh allocator from
//! those statuses. After every step: no address is held by two Services that
//! may not share it (and every other invariant holds), the allocator agrees
//! with the published statuses, every release frees, the rebuild equals the
//! state before, and requests are honoured exactly or refused for a reason
//! that is true.

use portway_provider::ipam::testkit::{SvcExt, ip, svc};
use portway_provider::ipam::{AllocError, Allocator, PoolConfig, Scope};
use portway_provider::{IpFamily, IpFamilyPolicy, LbService, Protocol, ServiceKey};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::IpAddr;

fn pools() -> Vec<PoolConfig> {
    let mut b = PoolConfig::new("b", &["10.0.1.0-10.0.1.3"]);
    b.avoid_buggy_ips = true;
    let mut c = PoolConfig::new("c", &["10.0.2.0/30"]);
    c.auto_assign = false;
    vec![PoolConfig::new("a", &["10.0.0.0/29", "fd00::/126"]), b, c]
}

const REQUESTABLE: [&str; 8] = [
    "10.0.0.1",
    "10.0.0.7",
    "10.0.1.0",
    "10.0.1.2",
    "10.0.2.1",
    "172.16.0.1",
    "fd00::1",
    "fd00::3",
];
const PORTS: [(Protocol, u16); 3] = [
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 443),
    (Protocol::Udp, 53),
];

/// What decides one Service's allocation, drawn at random.
#[derive(Clone, Debug)]
struct Spec {
    sharing: Option<&'static str>,
    ports: Vec<usize>,
    local: Option<&'static str>,
    families: usize,
    requested: Vec<usize>,
    pool: Option<&'static str>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::option::of(prop::sample::select(vec!["k1", "k2"])),
        prop::sample::subsequence(vec![0usize, 1, 2], 1..=2),
        prop::option::weighted(0.3, prop::sample::select(vec!["x", "y"])),
        0usize..5,
        prop_oneof![
            5 => Just(Vec::new()),
            4 => (0usize..REQUESTABLE.len()).prop_map(|j| vec![j]),
            1 => prop::collection::vec(0usize..REQUESTABLE.len(), 2),
        ],
        prop::option::weighted(0.25, prop::sample::select(vec!["a", "b", "c", "zz"])),
    )
        .prop_map(|(sharing, ports, local, families, requested, pool)| Spec {
            sharing,
            ports,
            local,
            families,
            requested,
            pool,
        })
}

#[derive(Clone, Debug)]
enum Op {
    Ensure(usize, Spec),
    Release(usize),
    Restart,
    Reload,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..8, spec()).prop_map(|(i, s)| Op::Ensure(i, s)),
        2 => (0usize..8).prop_map(Op::Release),
        1 => Just(Op::Restart),
        1 => Just(Op::Reload),
    ]
}

fn build(i: usize, s: &Spec, current: &[IpAddr]) -> LbService {
    use IpFamily::{V4, V6};
    use IpFamilyPolicy::{PreferDualStack, RequireDualStack, SingleStack};
    let (policy, fams): (IpFamilyPolicy, &[IpFamily]) = match s.families {
        0 => (SingleStack, &[V4]),
        1 => (SingleStack, &[V6]),
        2 => (PreferDualStack, &[V4, V6]),
        3 => (RequireDualStack, &[V4, V6]),
        _ => (RequireDualStack, &[V6, V4]),
    };
    let mut out = svc("ns", &format!("s{i}"))
        .created(&format!("2024-01-0{}T00:00:00Z", 1 + i % 3))
        .proto_ports(s.ports.iter().map(|&p| PORTS[p]))
        .families(policy, fams);
    if let Some(k) = s.sharing {
        out = out.sharing(k);
    }
    if let Some(sel) = s.local {
        out = out.local(&[("app", sel)]);
    }
    if !s.requested.is_empty() {
        let r: Vec<&str> = s.requested.iter().map(|&j| REQUESTABLE[j]).collect();
        out = out.request(&r);
    }
    if let Some(p) = s.pool {
        out = out.pool(p);
    }
    out.current_ips = current.to_vec();
    out
}

fn state(a: &Allocator) -> Vec<(ServiceKey, Vec<IpAddr>)> {
    a.assignments()
        .map(|(k, v)| (k.clone(), v.to_vec()))
        .collect()
}

fn check_refusal(a: &Allocator, svc: &LbService, e: &AllocError) -> Result<(), TestCaseError> {
    match e {
        AllocError::InUse { ip, holder, .. } => {
            prop_assert_ne!(holder, &svc.key);
            prop_assert!(
                a.assigned(holder).is_some_and(|h| h.contains(ip)),
                "{holder} named as holder of {ip} but does not hold it"
            );
        }
        AllocError::OutsidePools { ip, .. } => {
            prop_assert!(svc.requested_ips.contains(ip));
            let pool = a.pool_of(*ip);
            prop_assert!(
                pool.is_none() || pool != svc.pool.as_deref(),
                "{ip} is in {pool:?}"
            );
        }
        AllocError::AvoidedAddress { ip, .. } => prop_assert_eq!(*ip, ip_of("10.0.1.0")),
        AllocError::UnknownPool { pool } => prop_assert_eq!(pool, "zz"),
        AllocError::AddressNotAllowed { .. } | AllocError::PoolNotAllowed { .. } => {
            prop_assert!(false, "no pool is closed in this world: {e:?}")
        }
        _ => {}
    }
    Ok(())
}

fn ip_of(s: &str) -> IpAddr {
    ip(s)
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let config = pools();
    let mut a = Allocator::new(&config).expect("valid");
    // What the controller published: the status of every Service holding addresses.
    let mut published: BTreeMap<ServiceKey, LbService> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Ensure(i, s) => {
                let key = ServiceKey::new("ns", format!("s{i}"));
                let current = published
                    .get(&key)
                    .map(|p| p.current_ips.clone())
                    .unwrap_or_default();
                let service = build(i, &s, &current);
                let before = state(&a);
                match a.allocate(&service, &Scope::all()) {
                    Ok(ips) => {
                        prop_assert!(!ips.is_empty());
                        for r in &service.requested_ips {
                            prop_assert!(a.pool_of(*r).is_some(), "{r} outside every pool granted");
                        }
                        if !service.requested_ips.is_empty() {
                            let mut got = ips.clone();
                            let mut want = service.requested_ips.clone();
                            got.sort();
                            want.sort();
                            want.dedup();
                            prop_assert_eq!(got, want, "request not honoured exactly");
                        }
                        for ip in &ips {
                            prop_assert!(service.ip_families.contains(&IpFamily::of(ip)));
                        }
                        let mut p = service.clone();
                        p.current_ips = ips;
                        published.insert(key, p);
                    }
                    Err(e) => {
                        prop_assert_eq!(&state(&a), &before, "refusal left a trace");
                        check_refusal(&a, &service, &e)?;
                    }
                }
                // An address outside every pool is never handed out.
                for ips in published.values().map(|p| &p.current_ips) {
                    for ip in ips {
                        prop_assert!(a.pool_of(*ip).is_some(), "{ip} outside pools");
                    }
                }
            }
            Op::Release(i) => {
                let key = ServiceKey::new("ns", format!("s{i}"));
                let held = a.assigned(&key).map(<[_]>::to_vec).unwrap_or_default();
                let freed = a.release(&key);
                prop_assert_eq!(&freed, &held);
                for ip in &freed {
                    prop_assert!(!a.holders(*ip).contains(&&key));
                }
                published.remove(&key);
            }
            Op::Restart => {
                let before = state(&a);
                let mut fresh = Allocator::new(&config).expect("valid");
                let services: Vec<LbService> = published.values().cloned().collect();
                let problems = fresh.adopt(&services, &Scope::all());
                prop_assert!(problems.is_empty(), "{problems:?}");
                prop_assert_eq!(&state(&fresh), &before, "rebuild differs");
                prop_assert_eq!(
                    fresh.stats(),
                    a.stats()
                        .into_iter()
                        .map(|mut s| {
                            s.failures = 0;
                            s
                        })
                        .collect::<Vec<_>>()
                );
                a = fresh;
            }
            Op::Reload => {
                let before = state(&a);
                let orphans = a.reconfigure(&config).expect("valid");
                prop_assert!(orphans.is_empty());
                prop_assert_eq!(&state(&a), &before);
            }
        }
        if let Err(e) = a.check_invariants() {
            return Err(TestCaseError::fail(format!("invariant: {e}")));
        }
        let held: BTreeMap<ServiceKey, Vec<IpAddr>> = state(&a).into_iter().collect();
        let model: BTreeMap<ServiceKey, Vec<IpAddr>> = published
            .iter()
            .map(|(k, p)| (k.clone(), p.current_ips.clone()))
            .collect();
        prop_assert_eq!(held, model, "allocator and published statuses disagree");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn allocator_stays_exact(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

/// A fixed sequence exercising every branch the strategy can reach, so a
/// regression shows up even with a lucky seed.
#[test]
fn scripted_sequence() {
    let spec = |sharing, ports: Vec<usize>, families, requested: Vec<usize>, pool| Spec {
        sharing,
        ports,
        local: None,
        families,
        requested,
        pool,
    };
    let ops = vec![
        Op::Ensure(0, spec(Some("k1"), vec![0], 0, vec![], None)),
        Op::Ensure(1, spec(Some("k1"), vec![1], 0, vec![], None)),
        Op::Ensure(2, spec(None, vec![0], 3, vec![], None)),
        Op::Ensure(3, spec(None, vec![0], 0, vec![0], None)),
        Op::Ensure(4, spec(None, vec![0], 0, vec![0], None)),
        Op::Ensure(5, spec(None, vec![0], 0, vec![5], None)),
        Op::Ensure(6, spec(None, vec![0], 0, vec![4], Some("c"))),
        Op::Restart,
        Op::Release(0),
        Op::Reload,
        Op::Ensure(7, spec(None, vec![2], 4, vec![], Some("a"))),
        Op::Restart,
        Op::Release(1),
        Op::Release(2),
    ];
    if let Err(e) = run(ops) {
        panic!("{e}");
    }
}
