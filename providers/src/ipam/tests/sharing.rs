//! Step tables for sharing, avoidBuggyIPs and pool-annotation changes.

use super::Expect::{Err as Fails, Ips};
use super::Step::{Alloc, Assign, Release};
use super::run;
use crate::Protocol;
use crate::ipam::testkit::{SvcExt, svc};
use crate::ipam::{AllocError, PoolConfig};

fn pool(name: &str, addrs: &[&str]) -> PoolConfig {
    PoolConfig::new(name, addrs)
}

#[test]
fn sharing_rules() {
    let pools = [pool("a", &["10.0.0.1-10.0.0.5"])];
    run(
        &pools,
        vec![
            (
                "web tcp",
                Alloc(svc("d", "tcp").sharing("k").ports([53]), Ips(&["10.0.0.1"])),
            ),
            (
                "udp joins the shared address",
                Alloc(
                    svc("d", "udp")
                        .sharing("k")
                        .proto_ports([(Protocol::Udp, 53)]),
                    Ips(&["10.0.0.1"]),
                ),
            ),
            (
                "port clash takes another address",
                Alloc(
                    svc("d", "clash").sharing("k").ports([53]),
                    Ips(&["10.0.0.2"]),
                ),
            ),
            (
                "request despite clash is refused naming the holder",
                Alloc(
                    svc("d", "clash2")
                        .sharing("k")
                        .ports([53])
                        .request(&["10.0.0.1"]),
                    Fails(|e| {
                        matches!(e, AllocError::InUse { holder, reason, .. }
                            if holder.name == "tcp" && reason.contains("TCP/53"))
                    }),
                ),
            ),
            (
                "other key refused",
                Alloc(
                    svc("d", "other")
                        .sharing("x")
                        .ports([80])
                        .request(&["10.0.0.1"]),
                    Fails(
                        |e| matches!(e, AllocError::InUse { reason, .. } if reason.contains("differ")),
                    ),
                ),
            ),
            (
                "no key refused",
                Alloc(
                    svc("d", "nokey").ports([80]).request(&["10.0.0.1"]),
                    Fails(
                        |e| matches!(e, AllocError::InUse { reason, .. } if reason.contains("has none")),
                    ),
                ),
            ),
            (
                "local with a selector cannot join cluster ones",
                Alloc(
                    svc("d", "loc")
                        .sharing("k")
                        .ports([80])
                        .local(&[("app", "x")])
                        .request(&["10.0.0.1"]),
                    Fails(
                        |e| matches!(e, AllocError::InUse { reason, .. } if reason.contains("Local")),
                    ),
                ),
            ),
            (
                "local one",
                Alloc(
                    svc("d", "l1")
                        .sharing("L")
                        .ports([80])
                        .local(&[("app", "x")]),
                    Ips(&["10.0.0.3"]),
                ),
            ),
            (
                "local same selector joins",
                Alloc(
                    svc("d", "l2")
                        .sharing("L")
                        .ports([81])
                        .local(&[("app", "x")]),
                    Ips(&["10.0.0.3"]),
                ),
            ),
            (
                "local other selector does not",
                Alloc(
                    svc("d", "l3")
                        .sharing("L")
                        .ports([82])
                        .local(&[("app", "y")]),
                    Ips(&["10.0.0.4"]),
                ),
            ),
            ("one holder leaves", Release("d/tcp", &["10.0.0.1"])),
            (
                "address still held by the other",
                Alloc(
                    svc("d", "new").request(&["10.0.0.1"]),
                    Fails(
                        |e| matches!(e, AllocError::InUse { holder, .. } if holder.name == "udp"),
                    ),
                ),
            ),
            ("last holder leaves", Release("d/udp", &["10.0.0.1"])),
            (
                "address free again",
                Alloc(svc("d", "new").request(&["10.0.0.1"]), Ips(&["10.0.0.1"])),
            ),
            (
                "a holder's port change that clashes moves it",
                Alloc(
                    svc("d", "l2")
                        .sharing("L")
                        .ports([80])
                        .local(&[("app", "x")]),
                    Ips(&["10.0.0.5"]),
                ),
            ),
        ],
    );
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_255() {
    let mut p = pool("b", &["10.0.0.254-10.0.1.1"]);
    p.avoid_buggy_ips = true;
    let a = run(
        &[p],
        vec![
            ("254", Alloc(svc("d", "a"), Ips(&["10.0.0.254"]))),
            (
                "skips .255 and .0",
                Alloc(svc("d", "b"), Ips(&["10.0.1.1"])),
            ),
            (
                "full",
                Alloc(
                    svc("d", "c"),
                    Fails(|e| matches!(e, AllocError::Exhausted { .. })),
                ),
            ),
            (
                "adopting a buggy address from status is allowed",
                Assign(svc("d", "c"), &["10.0.0.255"], Ips(&["10.0.0.255"])),
            ),
            (
                "released, never handed out",
                Release("d/c", &["10.0.0.255"]),
            ),
            (
                "still full",
                Alloc(
                    svc("d", "c"),
                    Fails(|e| matches!(e, AllocError::Exhausted { .. })),
                ),
            ),
        ],
    );
    assert_eq!(a.stats()[0].total, 2);
}

#[test]
fn annotation_change_and_stability() {
    let pools = [pool("a", &["10.0.0.0/30"]), pool("b", &["10.1.0.0/30"])];
    run(
        &pools,
        vec![
            ("in a", Alloc(svc("d", "s"), Ips(&["10.0.0.0"]))),
            (
                "annotation to b moves",
                Alloc(svc("d", "s").pool("b"), Ips(&["10.1.0.0"])),
            ),
            (
                "stays in b",
                Alloc(svc("d", "s").pool("b"), Ips(&["10.1.0.0"])),
            ),
            (
                "annotation removed: keeps b",
                Alloc(svc("d", "s"), Ips(&["10.1.0.0"])),
            ),
            (
                "a's address was freed",
                Alloc(svc("d", "t"), Ips(&["10.0.0.0"])),
            ),
            (
                "assign outside every pool is refused",
                Assign(
                    svc("d", "u"),
                    &["172.16.0.1"],
                    Fails(|e| matches!(e, AllocError::OutsidePools { .. })),
                ),
            ),
            (
                "assign of a held address is refused",
                Assign(
                    svc("d", "u"),
                    &["10.0.0.0"],
                    Fails(|e| matches!(e, AllocError::InUse { .. })),
                ),
            ),
        ],
    );
}
