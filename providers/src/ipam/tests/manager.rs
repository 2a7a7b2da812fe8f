//! `VipManager`: shared allocator across providers, error mapping, status order.

use crate::ipam::testkit::{SvcExt, ip, svc};
use crate::ipam::{PoolConfig, VipManager};
use crate::{IpFamily, IpFamilyPolicy, LbStatus, ProviderError, ServiceKey};

fn manager() -> VipManager {
    VipManager::new(&[
        PoolConfig::new("lan", &["10.0.0.0/30", "fd00::/126"]),
        PoolConfig::new("dc", &["10.1.0.0/30"]),
    ])
    .expect("valid")
}

#[test]
fn providers_share_one_allocator_but_only_draw_from_their_pools() {
    let root = manager();
    let l2 = root.scoped("portway.dev/l2", &["lan".to_string()]);
    let bgp = root.scoped("portway.dev/bgp", &["lan".to_string(), "dc".to_string()]);
    let a = svc("d", "a");
    let b = svc("d", "b");
    assert_eq!(l2.ensure(&a), Ok(LbStatus::vips([ip("10.0.0.0")])));
    assert_eq!(
        bgp.ensure(&b).map(|s| s.ingress[0].ip),
        Ok(ip("10.1.0.0")),
        "dc sorts first"
    );
    let c = svc("d", "c").pool("lan");
    assert_eq!(
        bgp.ensure(&c),
        Ok(LbStatus::vips([ip("10.0.0.1")])),
        "never 10.0.0.0 twice"
    );
    assert_eq!(l2.get(&a.key), Some(LbStatus::vips([ip("10.0.0.0")])));
    assert_eq!(l2.stats().len(), 1);
    assert_eq!(bgp.stats().iter().map(|s| s.in_use).sum::<u64>(), 3);
    // l2 may not release what bgp allocated (a class change in flight).
    assert!(l2.release(&c.key).is_empty());
    assert_eq!(bgp.release(&c.key), vec![ip("10.0.0.1")]);
    assert_eq!(l2.get(&c.key), None);
    // A pool-list change applies to new allocations only.
    l2.set_pools(&["dc".to_string()]);
    assert_eq!(l2.ensure(&a), Ok(LbStatus::vips([ip("10.0.0.0")])), "kept");
    assert_eq!(
        l2.ensure(&svc("d", "n")),
        Ok(LbStatus::vips([ip("10.1.0.1")]))
    );
}

#[test]
fn errors_name_the_field_the_user_wrote() {
    let m = manager();
    m.ensure(&svc("d", "holder").request(&["10.0.0.2"]))
        .expect("free");
    let cases: Vec<(crate::LbService, ProviderError)> = vec![
        (
            svc("d", "x").request(&["172.16.0.1"]),
            ProviderError::invalid("metadata.annotations[portway.dev/load-balancer-ips]", ""),
        ),
        (
            svc("d", "x").load_balancer_ip("172.16.0.1"),
            ProviderError::invalid("spec.loadBalancerIP", ""),
        ),
        (
            {
                let mut s = svc("d", "x").load_balancer_ip("172.16.0.1");
                s.annotations.insert(
                    "metallb.universe.tf/loadBalancerIPs".into(),
                    "172.16.0.1".into(),
                );
                s
            },
            ProviderError::invalid(
                "metadata.annotations[metallb.universe.tf/loadBalancerIPs]",
                "",
            ),
        ),
        (
            svc("d", "x").pool("missing"),
            ProviderError::invalid("metadata.annotations[portway.dev/address-pool]", ""),
        ),
        (
            svc("d", "x").pool("dc").families(
                IpFamilyPolicy::RequireDualStack,
                &[IpFamily::V4, IpFamily::V6],
            ),
            ProviderError::invalid("spec.ipFamilyPolicy", ""),
        ),
    ];
    for (s, want) in cases {
        match (m.ensure(&s), want) {
            (
                Err(ProviderError::Invalid { field, reason }),
                ProviderError::Invalid { field: want, .. },
            ) => {
                assert_eq!(field, want, "{reason}");
                assert!(!reason.is_empty());
            }
            (got, want) => panic!("{s:?}: got {got:?}, want {want:?}"),
        }
    }
    match m.ensure(&svc("d", "y").request(&["10.0.0.2"])) {
        Err(ProviderError::Conflict { what, holder }) => {
            assert!(what.starts_with("address 10.0.0.2"), "{what}");
            assert_eq!(holder, "d/holder");
        }
        other => panic!("{other:?}"),
    }
    let full = VipManager::new(&[PoolConfig::new("one", &["10.5.0.1"])]).expect("valid");
    full.ensure(&svc("d", "a")).expect("room");
    match full.ensure(&svc("d", "b")) {
        Err(e @ ProviderError::Exhausted { .. }) => {
            assert_eq!(e.kind(), "exhausted");
            assert!(e.to_string().contains("one"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(full.stats()[0].failures, 1);
}

#[test]
fn status_is_ordered_by_ip_families_and_adopt_reports() {
    let m = manager();
    let s = svc("d", "dual").families(
        IpFamilyPolicy::RequireDualStack,
        &[IpFamily::V6, IpFamily::V4],
    );
    let st = m.ensure(&s).expect("room");
    assert_eq!(
        st.ingress.iter().map(|i| i.ip).collect::<Vec<_>>(),
        [ip("fd00::"), ip("10.0.0.0")]
    );
    assert!(st.ingress.iter().all(|i| !i.proxy), "VIP mode");

    let restarted = manager();
    let mut published = s.clone();
    published.current_ips = st.ingress.iter().map(|i| i.ip).collect();
    let copy = svc("d", "copy")
        .created("2030-01-01T00:00:00Z")
        .current(&["10.0.0.0"]);
    let gone = svc("d", "gone").current(&["192.0.2.1"]);
    let problems = restarted.adopt(&[copy.clone(), published, gone.clone()]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    // Processed oldest first: d/dual, d/gone (same time, by name), then the copy.
    assert!(matches!(&problems[0], (k, ProviderError::Orphaned { .. }) if *k == gone.key));
    assert!(
        matches!(&problems[1], (k, ProviderError::Conflict { holder, .. })
        if *k == copy.key && holder == "d/dual")
    );
    assert_eq!(restarted.get(&s.key), Some(st));
    assert_eq!(restarted.orphans().len(), 1);
    // Reload without the orphan's pool (still none): reported again.
    let warn = restarted
        .reconfigure(&[PoolConfig::new("lan", &["10.0.0.0/30", "fd00::/126"])])
        .expect("valid");
    let warned: Vec<&ServiceKey> = warn.iter().map(|(k, _)| k).collect();
    assert_eq!(warned, [&gone.key]);
    assert!(restarted.with_allocator(|a| a.check_invariants()).is_ok());
    assert_eq!(
        restarted.release(&ServiceKey::new("d", "gone")),
        [ip("192.0.2.1")]
    );
    assert!(restarted.orphans().is_empty());
}

#[test]
fn handles_are_shared_safely_across_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<VipManager>();
    let root = std::sync::Arc::new(
        VipManager::new(&[PoolConfig::new("lan", &["10.0.0.0/24"])]).expect("valid"),
    );
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let h = root.scoped(&format!("class-{t}"), &["lan".to_string()]);
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| h.ensure(&svc(&format!("t{t}"), &format!("s{i}"))))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        for r in w.join().expect("worker") {
            all.push(r.expect("room for 200 in a /24").ingress[0].ip);
        }
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "an address was handed out twice");
    assert!(root.with_allocator(|a| a.check_invariants()).is_ok());
}

/// Issue 23: an address two Services claim is remembered beside the allocator (which a
/// refusal leaves untouched) until one side lets go, for the pool's status.
#[test]
fn an_address_claimed_by_two_services_is_a_contest_until_one_lets_go() {
    let root = manager();
    let l2 = root.scoped("portway.dev/l2", &["lan".to_string()]);
    let holder = svc("d", "holder").request(&["10.0.0.2"]);
    let claimant = svc("d", "claimant").request(&["10.0.0.2"]);
    l2.ensure(&holder).expect("free");
    assert!(root.contests().is_empty());
    assert!(matches!(
        l2.ensure(&claimant),
        Err(ProviderError::Conflict { .. })
    ));
    let want = crate::ipam::Contest {
        ip: ip("10.0.0.2"),
        pool: Some("lan".into()),
        holder: holder.key.clone(),
        claimant: claimant.key.clone(),
    };
    // Every handle sees it; one scoped to other pools does not.
    assert_eq!(root.contests(), std::slice::from_ref(&want));
    assert_eq!(l2.contests(), std::slice::from_ref(&want));
    assert!(
        root.scoped("portway.dev/bgp", &["dc".to_string()])
            .contests()
            .is_empty()
    );
    // The claimant asks for another address: no contest.
    let moved = svc("d", "claimant").request(&["10.0.0.3"]);
    l2.ensure(&moved).expect("free");
    assert!(root.contests().is_empty());
    // Claimed again, then the claimant is deleted.
    l2.release(&moved.key);
    assert!(l2.ensure(&claimant).is_err());
    assert_eq!(root.contests().len(), 1);
    l2.release(&claimant.key);
    assert!(root.contests().is_empty());
    // Claimed again, then the holder is deleted: the address is free.
    assert!(l2.ensure(&claimant).is_err());
    l2.release(&holder.key);
    assert!(root.contests().is_empty());
    assert_eq!(l2.ensure(&claimant), Ok(LbStatus::vips([ip("10.0.0.2")])));
    // Published by both before a restart: the younger one's adopt refusal is a contest.
    let restarted = manager();
    let older = svc("d", "older")
        .created("2020-01-01T00:00:00Z")
        .current(&["10.0.0.1"]);
    let younger = svc("d", "younger")
        .created("2030-01-01T00:00:00Z")
        .current(&["10.0.0.1"]);
    restarted.adopt(&[younger.clone(), older.clone()]);
    assert_eq!(
        restarted.contests(),
        [crate::ipam::Contest {
            ip: ip("10.0.0.1"),
            pool: Some("lan".into()),
            holder: older.key.clone(),
            claimant: younger.key.clone(),
        }]
    );
}
