//! Nodes' own addresses inside pools: skipped by auto-assignment, refused when requested,
//! kept by a Service that already holds one, and free again when the node lets go.

use crate::ipam::testkit::{SvcExt, ip, svc};
use crate::ipam::{AllocError, Allocator, PoolConfig, Scope};
use std::collections::BTreeMap;
use std::net::IpAddr;

fn nodes(list: &[(&str, &str)]) -> BTreeMap<IpAddr, String> {
    list.iter()
        .map(|(a, n)| (ip(a), (*n).to_string()))
        .collect()
}

fn allocator() -> Allocator {
    Allocator::new(&[
        PoolConfig::new("other", &["198.51.100.0/30"]),
        PoolConfig::new("lan", &["10.0.0.9/32", "10.0.0.1-10.0.0.3"]),
    ])
    .expect("pools")
}

#[test]
fn a_node_address_in_a_pool_is_never_handed_out() {
    let mut a = allocator();
    let found = a.set_node_addresses(nodes(&[("10.0.0.1", "n1"), ("192.0.2.5", "n2")]));
    assert_eq!(found.len(), 1, "only the address inside a pool: {found:?}");
    assert_eq!(found[0].node, "n1");
    assert_eq!(found[0].pool, "lan");
    assert_eq!(found[0].key_path, "pools[1].addresses[1]");
    assert!(found[0].holders.is_empty());
    a.check_invariants().expect("invariants");
    let scope = Scope::new("portway.dev/l2", ["lan"]);
    let got = a.allocate(&svc("d", "s1"), &scope).expect("allocated");
    assert_eq!(got, [ip("10.0.0.2")], "the lowest free but the node's");
    let got = a.allocate(&svc("d", "s2"), &scope).expect("allocated");
    assert_eq!(got, [ip("10.0.0.3")]);
    let got = a.allocate(&svc("d", "s3"), &scope).expect("allocated");
    assert_eq!(got, [ip("10.0.0.9")]);
    let full = a.allocate(&svc("d", "s4"), &scope).expect_err("full");
    assert!(matches!(full, AllocError::Exhausted { .. }), "{full:?}");
    a.check_invariants().expect("invariants");
    assert_eq!(a.stats()[1].in_use, 3, "a node's address is not in use");
}

#[test]
fn a_request_for_a_node_address_is_refused_naming_the_node() {
    let mut a = allocator();
    a.set_node_addresses(nodes(&[("10.0.0.2", "worker-7")]));
    let e = a
        .allocate(&svc("d", "s").request(&["10.0.0.2"]), &Scope::all())
        .expect_err("refused");
    assert!(
        matches!(&e, AllocError::NodeAddress { node, .. } if node == "worker-7"),
        "{e:?}"
    );
    assert!(e.to_string().contains("worker-7"), "{e}");
    assert!(a.is_empty(), "a refusal leaves no trace");
    a.check_invariants().expect("invariants");
}

#[test]
fn a_holder_keeps_a_node_address_and_release_does_not_free_it() {
    let mut a = allocator();
    let held = svc("d", "old");
    a.assign(&held, &[ip("10.0.0.1")], &Scope::all())
        .expect("held before the node came");
    let found = a.set_node_addresses(nodes(&[("10.0.0.1", "n1")]));
    assert_eq!(found[0].holders.len(), 1, "reported with its holder");
    assert_eq!(found[0].holders[0], held.key);
    assert_eq!(
        a.allocate(&held, &Scope::all()).expect("kept"),
        [ip("10.0.0.1")],
        "never taken away silently"
    );
    a.check_invariants().expect("invariants");
    assert_eq!(a.release(&held.key), [ip("10.0.0.1")]);
    a.check_invariants().expect("invariants after release");
    let next = a
        .allocate(&svc("d", "new"), &Scope::new("l2", ["lan"]))
        .expect("allocated");
    assert_eq!(next, [ip("10.0.0.2")], "still skipped once released");
}

#[test]
fn a_node_that_lets_go_of_its_address_frees_it_and_a_new_pool_list_keeps_the_rule() {
    let mut a = Allocator::new(&[PoolConfig::new("lan", &["10.0.0.9/32"])]).expect("pool");
    a.set_node_addresses(nodes(&[("10.0.0.9", "n1")]));
    let scope = Scope::new("l2", ["lan"]);
    let e = a
        .allocate(&svc("d", "s1"), &scope)
        .expect_err("only the node's");
    assert!(matches!(e, AllocError::Exhausted { .. }), "{e:?}");
    assert!(a.set_node_addresses(BTreeMap::new()).is_empty());
    a.check_invariants().expect("invariants");
    assert_eq!(
        a.allocate(&svc("d", "s1"), &scope).expect("ip"),
        [ip("10.0.0.9")]
    );
    // The node takes 10.0.0.3; a new pool list must not put it back in free space.
    a.set_node_addresses(nodes(&[("10.0.0.3", "n1")]));
    a.reconfigure(&[PoolConfig::new(
        "lan",
        &["10.0.0.1-10.0.0.4", "10.0.0.9/32"],
    )])
    .expect("reconfigured");
    a.check_invariants().expect("invariants after reconfigure");
    for (name, want) in [("s2", "10.0.0.1"), ("s3", "10.0.0.2"), ("s4", "10.0.0.4")] {
        assert_eq!(a.allocate(&svc("d", name), &scope).expect("ip"), [ip(want)]);
    }
    assert_eq!(a.node_overlaps()[0].key_path, "pools[0].addresses[0]");
}

/// Issue 24: a Service that lets Portway move it (`portway.dev/reallocate-on-conflict`)
/// gets a new address when a speaker writes that another host uses its own; the address is
/// not handed out again. Without the opt-in, or for a requested address, nothing moves.
#[test]
fn a_service_that_allows_it_moves_off_an_address_another_host_uses() {
    use crate::ipam::VipManager;
    use crate::{CONFLICT_ANNOTATION, REALLOCATE_ANNOTATION};
    let m = VipManager::new(&[PoolConfig::new("lan", &["10.0.0.1-10.0.0.4"])]).expect("pool");
    let first = |s: crate::LbStatus| s.ingress[0].ip;
    let movable = svc("d", "movable").annotate(REALLOCATE_ANNOTATION, "true");
    let stays = svc("d", "stays");
    assert_eq!(first(m.ensure(&movable).expect("ip")), ip("10.0.0.1"));
    assert_eq!(first(m.ensure(&stays).expect("ip")), ip("10.0.0.2"));
    let conflict = "mac=02:00:00:00:00:99 node=n1 iface=eth0";
    let movable = movable.annotate(CONFLICT_ANNOTATION, &format!("10.0.0.1 {conflict}"));
    let stays = stays.annotate(CONFLICT_ANNOTATION, &format!("10.0.0.2 {conflict}"));
    assert_eq!(
        first(m.ensure(&movable).expect("ip")),
        ip("10.0.0.3"),
        "moved"
    );
    assert_eq!(
        first(m.ensure(&movable).expect("ip")),
        ip("10.0.0.3"),
        "stable"
    );
    assert_eq!(
        first(m.ensure(&stays).expect("ip")),
        ip("10.0.0.2"),
        "not allowed"
    );
    assert_eq!(
        first(m.ensure(&svc("d", "new")).expect("ip")),
        ip("10.0.0.4")
    );
    let e = m
        .ensure(&svc("d", "asks").request(&["10.0.0.1"]))
        .expect_err("refused");
    assert!(e.to_string().contains("another host"), "{e}");
    m.with_allocator(|a| a.check_invariants())
        .expect("invariants");
    // A requested address is the user's choice: it stays even when allowed to move.
    let m = VipManager::new(&[PoolConfig::new("lan", &["10.0.0.1-10.0.0.4"])]).expect("pool");
    let pinned = svc("d", "pinned")
        .request(&["10.0.0.2"])
        .annotate(REALLOCATE_ANNOTATION, "true");
    assert_eq!(first(m.ensure(&pinned).expect("ip")), ip("10.0.0.2"));
    let pinned = pinned.annotate(CONFLICT_ANNOTATION, "10.0.0.2 mac=02:00:00:00:00:99");
    assert_eq!(first(m.ensure(&pinned).expect("ip")), ip("10.0.0.2"));
    // Garbage in the annotation moves nothing and fails nothing.
    let odd = svc("d", "odd")
        .annotate(REALLOCATE_ANNOTATION, "true")
        .annotate(CONFLICT_ANNOTATION, "not-an-ip");
    assert_eq!(first(m.ensure(&odd).expect("ip")), ip("10.0.0.1"));
    assert_eq!(first(m.ensure(&odd).expect("ip")), ip("10.0.0.1"));
}
