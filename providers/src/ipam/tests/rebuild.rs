//! Restart (adopt), conflict resolution and configuration reloads.

use crate::ipam::testkit::{SvcExt, ip, svc};
use crate::ipam::{AllocError, Allocator, PoolConfig, Scope};
use crate::{IpFamily, IpFamilyPolicy, LbService, ServiceKey};
use std::net::IpAddr;

fn pools() -> Vec<PoolConfig> {
    vec![
        PoolConfig::new("a", &["10.0.0.0/29"]),
        PoolConfig::new("b", &["10.1.0.0/29", "fd00::/125"]),
    ]
}

fn all(a: &Allocator) -> Vec<(ServiceKey, Vec<IpAddr>)> {
    a.assignments()
        .map(|(k, v)| (k.clone(), v.to_vec()))
        .collect()
}

#[test]
fn oldest_keeps_a_contested_address_and_the_other_moves() {
    let mut a = Allocator::new(&pools()).expect("valid");
    let young = svc("d", "young")
        .created("2024-02-01T00:00:00Z")
        .current(&["10.0.0.1"]);
    let old = svc("d", "old")
        .created("2024-01-01T00:00:00Z")
        .current(&["10.0.0.1"]);
    let problems = a.adopt(&[young.clone(), old.clone()], &Scope::all());
    assert_eq!(problems.len(), 1);
    let (k, e) = &problems[0];
    assert_eq!(k, &young.key);
    assert!(
        matches!(e, AllocError::InUse { holder, .. } if *holder == old.key),
        "{e:?}"
    );
    assert_eq!(a.assigned(&old.key), Some(&[ip("10.0.0.1")][..]));
    assert_eq!(a.assigned(&young.key), None, "the loser holds nothing");
    // Its next ensure gets a fresh address instead of the contested one.
    assert_eq!(a.allocate(&young, &Scope::all()), Ok(vec![ip("10.0.0.0")]));
    a.check_invariants().expect("consistent");

    // Same creation time: namespace/name decides, whatever the input order.
    for order in [[0, 1], [1, 0]] {
        let mut a = Allocator::new(&pools()).expect("valid");
        let svcs = [
            svc("b", "x").current(&["10.0.0.2"]),
            svc("a", "x").current(&["10.0.0.2"]),
        ];
        let input: Vec<LbService> = order.iter().map(|&i| svcs[i].clone()).collect();
        let problems = a.adopt(&input, &Scope::all());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, ServiceKey::new("b", "x"));
        assert_eq!(a.holders(ip("10.0.0.2")), [&ServiceKey::new("a", "x")]);
    }
}

#[test]
fn adopt_keeps_shared_and_orphaned_addresses() {
    let mut a = Allocator::new(&pools()).expect("valid");
    let s1 = svc("d", "s1")
        .sharing("k")
        .ports([80])
        .current(&["10.0.0.3"]);
    let s2 = svc("d", "s2")
        .sharing("k")
        .ports([443])
        .current(&["10.0.0.3"]);
    let gone = svc("d", "gone").current(&["172.16.0.9"]);
    let problems = a.adopt(&[s1.clone(), s2.clone(), gone.clone()], &Scope::all());
    assert_eq!(
        problems,
        vec![(
            gone.key.clone(),
            AllocError::Orphaned {
                ip: ip("172.16.0.9")
            }
        )]
    );
    assert_eq!(a.holders(ip("10.0.0.3")).len(), 2);
    assert_eq!(a.orphans(), vec![(gone.key.clone(), ip("172.16.0.9"))]);
    // Reconciling keeps the orphan rather than moving it.
    assert_eq!(a.allocate(&gone, &Scope::all()), Ok(vec![ip("172.16.0.9")]));
    // Fresh Services never get adopted addresses.
    assert_eq!(
        a.allocate(&svc("d", "new"), &Scope::all()),
        Ok(vec![ip("10.0.0.0")])
    );
    a.check_invariants().expect("consistent");
    // A request moves the orphaned Service; the orphan is forgotten.
    let moved = gone.clone().request(&["10.0.0.5"]);
    assert_eq!(a.allocate(&moved, &Scope::all()), Ok(vec![ip("10.0.0.5")]));
    assert!(a.orphans().is_empty());
    a.check_invariants().expect("consistent");
}

#[test]
fn rebuild_after_restart_equals_state_before() {
    let mut a = Allocator::new(&pools()).expect("valid");
    let svcs = vec![
        svc("d", "one"),
        svc("d", "two").sharing("s").ports([80]),
        svc("d", "three").sharing("s").ports([81]),
        svc("d", "dual").pool("b").families(
            IpFamilyPolicy::RequireDualStack,
            &[IpFamily::V6, IpFamily::V4],
        ),
        svc("e", "req").request(&["10.1.0.7"]),
        svc("e", "loc").local(&[("app", "x")]),
    ];
    for s in &svcs {
        a.allocate(s, &Scope::all()).expect("room");
    }
    a.release(&ServiceKey::new("d", "one"));
    let published: Vec<LbService> = svcs
        .iter()
        .filter_map(|s| {
            let ips = a.assigned(&s.key)?;
            let mut s = s.clone();
            s.current_ips = ips.to_vec();
            Some(s)
        })
        .collect();
    let mut b = Allocator::new(&pools()).expect("valid");
    assert!(b.adopt(&published, &Scope::all()).is_empty());
    assert_eq!(all(&a), all(&b));
    assert_eq!(
        a.stats().iter().map(|s| s.in_use).collect::<Vec<_>>(),
        b.stats().iter().map(|s| s.in_use).collect::<Vec<_>>()
    );
    b.check_invariants().expect("consistent");
    // And the rebuilt allocator converges every Service to the same addresses.
    for s in &published {
        assert_eq!(
            b.allocate(s, &Scope::all()).ok().as_deref(),
            a.assigned(&s.key)
        );
    }
    // The next new Service gets what it would have got before the restart.
    let next = svc("z", "next");
    assert_eq!(
        a.allocate(&next, &Scope::all()),
        b.allocate(&next, &Scope::all())
    );
}

#[test]
fn a_published_address_unknown_to_the_allocator_is_kept_when_free() {
    let mut a = Allocator::new(&pools()).expect("valid");
    let s = svc("d", "late").current(&["10.0.0.6"]);
    assert_eq!(a.allocate(&s, &Scope::all()), Ok(vec![ip("10.0.0.6")]));
    // Held by someone else now: a fresh address instead.
    let t = svc("d", "copy").current(&["10.0.0.6"]);
    assert_eq!(a.allocate(&t, &Scope::all()), Ok(vec![ip("10.0.0.0")]));
    // Outside the provider's pools: not adopted by ensure.
    let u = svc("d", "other").current(&["10.1.0.1"]);
    assert_eq!(
        a.allocate(&u, &Scope::new("portway.dev/l2", ["a"])),
        Ok(vec![ip("10.0.0.1")])
    );
    a.check_invariants().expect("consistent");
}

#[test]
fn reconfigure_keeps_every_assignment_and_reports_orphans() {
    let mut a = Allocator::new(&pools()).expect("valid");
    let s = svc("d", "s");
    let t = svc("d", "t").pool("b");
    assert_eq!(a.allocate(&s, &Scope::all()), Ok(vec![ip("10.0.0.0")]));
    assert_eq!(a.allocate(&t, &Scope::all()), Ok(vec![ip("10.1.0.0")]));
    let _ = a.allocate(&svc("d", "x").pool("nope"), &Scope::all());
    let _ = a.allocate(&svc("d", "y").request(&["10.1.0.0"]), &Scope::all());
    assert_eq!(a.stats()[1].failures, 1);

    // Invalid configuration: refused, nothing changes.
    let before = all(&a);
    let bad = vec![PoolConfig::new("a", &["10.0.0.0/33"])];
    let errs = a.reconfigure(&bad).expect_err("invalid");
    assert_eq!(errs[0].path, "pools[0].addresses[0]");
    assert_eq!(all(&a), before);
    assert_eq!(a.pool_configs(), pools().as_slice());

    // Pool a removed, b shrunk to exclude t's address: both kept, reported.
    let smaller = vec![PoolConfig::new("b", &["10.1.0.4/30"])];
    let orphans = a.reconfigure(&smaller).expect("valid");
    assert_eq!(
        orphans,
        vec![
            (s.key.clone(), ip("10.0.0.0")),
            (t.key.clone(), ip("10.1.0.0"))
        ]
    );
    assert_eq!(all(&a), before, "never moved");
    assert_eq!(a.stats()[0].failures, 1, "failures carried over by name");
    assert_eq!(a.allocate(&s, &Scope::all()), Ok(vec![ip("10.0.0.0")]));
    assert_eq!(a.allocate(&t, &Scope::all()), Ok(vec![ip("10.1.0.0")]));
    assert_eq!(
        a.allocate(&svc("d", "n"), &Scope::all()),
        Ok(vec![ip("10.1.0.4")])
    );
    a.check_invariants().expect("consistent");

    // The pool comes back: addresses re-homed and counted, not handed out twice.
    let orphans = a.reconfigure(&pools()).expect("valid");
    assert!(orphans.is_empty());
    assert_eq!(a.stats()[0].in_use, 1);
    assert_eq!(
        a.allocate(&svc("d", "m"), &Scope::all()),
        Ok(vec![ip("10.0.0.1")])
    );
    a.check_invariants().expect("consistent");
}
