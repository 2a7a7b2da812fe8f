//! Unit tests of the allocator: step tables over one allocator (MetalLB's
//! `allocator_test.go` style). After every step the harness checks the
//! result, that a refusal left no trace, that every internal invariant holds
//! and that the input configuration was not mutated.

mod config;
mod manager;
mod nodes;
mod rebuild;
mod sharing;
mod steps;

use super::testkit::ip;
use super::{AllocError, Allocator, PoolConfig, Scope};
use crate::{LbService, ServiceKey};
use std::net::IpAddr;

/// What a step should produce.
pub(super) enum Expect {
    /// Success with exactly these addresses, in this order.
    Ips(&'static [&'static str]),
    /// A refusal the predicate accepts.
    Err(fn(&AllocError) -> bool),
}

/// One step of a table.
pub(super) enum Step {
    /// `allocate` with the unscoped scope.
    Alloc(LbService, Expect),
    /// `allocate` with a scope.
    AllocIn(LbService, Scope, Expect),
    /// `assign` of the given addresses.
    Assign(LbService, &'static [&'static str], Expect),
    /// `release` of ns/name, expecting these addresses back.
    Release(&'static str, &'static [&'static str]),
}

fn key(s: &str) -> ServiceKey {
    let (ns, name) = s.split_once('/').unwrap_or(("default", s));
    ServiceKey::new(ns, name)
}

type Snapshot = (Vec<(ServiceKey, Vec<IpAddr>)>, Vec<u64>);

fn snapshot(a: &Allocator) -> Snapshot {
    (
        a.assignments()
            .map(|(k, ips)| (k.clone(), ips.to_vec()))
            .collect(),
        a.stats().iter().map(|s| s.in_use).collect(),
    )
}

fn check(desc: &str, got: Result<Vec<IpAddr>, AllocError>, want: &Expect) {
    match (got, want) {
        (Ok(ips), Expect::Ips(w)) => {
            let w: Vec<IpAddr> = w.iter().map(|s| ip(s)).collect();
            assert_eq!(ips, w, "{desc}");
        }
        (Err(e), Expect::Err(pred)) => assert!(pred(&e), "{desc}: unexpected error {e:?}"),
        (Ok(ips), Expect::Err(_)) => panic!("{desc}: expected an error, got {ips:?}"),
        (Err(e), Expect::Ips(w)) => panic!("{desc}: expected {w:?}, got error {e:?} ({e})"),
    }
}

/// Runs the steps over one allocator built from `pools`; returns it for
/// further assertions.
pub(super) fn run(pools: &[PoolConfig], steps: Vec<(&str, Step)>) -> Allocator {
    let original = pools.to_vec();
    let mut a = Allocator::new(pools).expect("valid pools in test");
    for (desc, step) in steps {
        let before = snapshot(&a);
        let failed = match step {
            Step::Alloc(svc, want) => {
                let r = a.allocate(&svc, &Scope::all());
                let failed = r.is_err();
                check(desc, r, &want);
                failed
            }
            Step::AllocIn(svc, scope, want) => {
                let r = a.allocate(&svc, &scope);
                let failed = r.is_err();
                check(desc, r, &want);
                failed
            }
            Step::Assign(svc, ips, want) => {
                let ips: Vec<IpAddr> = ips.iter().map(|s| ip(s)).collect();
                let r = a.assign(&svc, &ips, &Scope::all()).map(|()| ips);
                let failed = r.is_err();
                check(desc, r, &want);
                failed
            }
            Step::Release(k, want) => {
                let got = a.release(&key(k));
                let want: Vec<IpAddr> = want.iter().map(|s| ip(s)).collect();
                assert_eq!(got, want, "{desc}");
                false
            }
        };
        if failed {
            assert_eq!(snapshot(&a), before, "{desc}: a refusal left a trace");
        }
        if let Err(e) = a.check_invariants() {
            panic!("{desc}: invariant broken: {e}");
        }
        assert_eq!(
            a.pool_configs(),
            original.as_slice(),
            "{desc}: config changed"
        );
        assert_eq!(pools, original.as_slice(), "{desc}: input mutated");
    }
    a
}
