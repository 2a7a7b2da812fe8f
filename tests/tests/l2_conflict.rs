//! Issue 24, item 1: address conflicts caught on the wire, in the network-namespace lab of
//! `l2_interop` plus a foreign host `x` on the same switch (MAC [`FOREIGN_MAC`]).
//!
//! - A pool address the foreign host already holds is probed (RFC 5227 ARP probe, IPv6
//!   DAD) before its owner first announces it: the owner reports the conflict with the
//!   foreign MAC and the interface, and never answers for it; once the host gives the
//!   address up, a re-probe finds it free and the owner announces it.
//! - The foreign host takes an address already announced and says so (gratuitous ARP):
//!   the owner falls silent at once.
//! - An IPVS-like answerer (the address on another interface, the kernel answering
//!   ARP for it on eth0, never announcing) is found by the re-probe of the next refresh.
//!
//! Each check is on the wire, from the router: only the foreign MAC answers. Root and
//! network namespaces are needed; without them the tests skip, and fail under
//! `PORTWAY_REQUIRE_PRIVILEGED=1`.

mod l2_lab;

use l2_lab::{FOREIGN_MAC, Lab, VIP4, VIP6};
use std::time::Duration;

/// The lab speakers' refresh, so also their conflict re-probe.
const REFRESH_MS: u64 = 1000;

/// The node that logged a conflict for `ip` with the foreign MAC since `t0`, and the line.
fn conflict_seen(lab: &Lab, ip: &str, t0: i64, limit: Duration) -> Option<(usize, String)> {
    let want = format!("conflict ip={ip} mac={FOREIGN_MAC} iface=eth0");
    let mut found = None;
    lab.wait(limit, || {
        found = (1..=3).find_map(|k| {
            lab.first_line_after(k, t0, &want)
                .map(|(_, line)| (k, line))
        });
        found.is_some()
    });
    found
}

/// The only MAC answering `ip` (IPv4 by arping, IPv6 by ndisc6) is the foreign host's,
/// over a few rounds spread across more than one refresh.
fn only_the_foreign_host_answers(lab: &Lab, ip: &str) {
    for round in 0..3 {
        let macs = if ip.contains(':') {
            lab.ndisc6(ip)
        } else {
            lab.arping(ip)
        };
        assert_eq!(macs, [FOREIGN_MAC], "round {round}: answers for {ip}");
    }
}

/// Sets the VIPs of every speaker: the lab's two plus `more`.
fn set_vips(lab: &mut Lab, more: &[&str]) {
    let mut all = vec![VIP4, VIP6];
    all.extend_from_slice(more);
    lab.set_vips(&format!("vips {}", all.join(" ")));
}

#[test]
fn a_pool_address_held_by_a_foreign_host_is_probed_and_never_announced() {
    let Some(mut lab) = Lab::start_with_refresh("conflict-before", REFRESH_MS) else {
        return;
    };
    let (v4, v6) = ("198.51.100.150", "2001:db8:1::150");
    lab.foreign(&["ip", "addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
    lab.foreign(&[
        "ip",
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    let t0 = l2_lab::now_ms();
    set_vips(&mut lab, &[v4, v6]);
    let (owner4, line4) = conflict_seen(&lab, v4, t0, Duration::from_secs(5))
        .expect("the ARP probe found the holder");
    let (owner6, _) =
        conflict_seen(&lab, v6, t0, Duration::from_secs(5)).expect("DAD found the holder");
    println!("{}: {line4}", Lab::name(owner4));
    for (k, ip) in [(owner4, v4), (owner6, v6)] {
        assert!(
            lab.first_line_after(k, t0, &format!("takeover ip={ip} "))
                .is_some(),
            "{ip}: the conflict is reported by its elected owner"
        );
    }
    only_the_foreign_host_answers(&lab, v4);
    only_the_foreign_host_answers(&lab, v6);
    assert_ne!(
        lab.neigh(v4).as_deref(),
        Some(Lab::mac(owner4).as_str()),
        "no gratuitous ARP from the owner reached the router"
    );

    // The holder gives the address up: the next re-probe goes unanswered, the owner
    // announces it.
    lab.foreign(&["ip", "addr", "del", &format!("{v4}/24"), "dev", "eth0"]);
    let t1 = l2_lab::now_ms();
    assert!(
        lab.wait(Duration::from_secs(5), || lab
            .first_line_after(owner4, t1, &format!("conflict_cleared ip={v4}"))
            .is_some()),
        "the quarantine lifted after an unanswered re-probe"
    );
    assert_eq!(lab.arping(v4), [Lab::mac(owner4)], "announced by its owner");
}

#[test]
fn a_foreign_host_announcing_an_announced_address_silences_the_owner() {
    let Some(mut lab) = Lab::start_with_refresh("conflict-after", REFRESH_MS) else {
        return;
    };
    let ip = "198.51.100.151";
    set_vips(&mut lab, &[ip]);
    let owner = lab
        .wait_owner(ip, Duration::from_secs(5))
        .expect("an owner");
    assert!(
        lab.wait(Duration::from_secs(3), || lab.arping(ip)
            == [Lab::mac(owner)]),
        "the owner answers before the foreign host takes the address"
    );
    let t0 = l2_lab::now_ms();
    lab.foreign(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    // A DHCP client or an admin's `ip addr add` + `arping -U`: a gratuitous ARP.
    lab.foreign(&["arping", "-U", "-c", "1", "-s", ip, "-I", "eth0", ip]);
    let (k, line) =
        conflict_seen(&lab, ip, t0, Duration::from_secs(5)).expect("the owner saw the claim");
    assert_eq!(k, owner, "{line}");
    only_the_foreign_host_answers(&lab, ip);
}

#[test]
fn an_ipvs_like_second_answerer_is_found_by_the_reprobe() {
    let Some(mut lab) = Lab::start_with_refresh("conflict-ipvs", REFRESH_MS) else {
        return;
    };
    let ip = "198.51.100.152";
    set_vips(&mut lab, &[ip]);
    let owner = lab
        .wait_owner(ip, Duration::from_secs(5))
        .expect("an owner");
    assert!(
        lab.wait(Duration::from_secs(3), || lab.arping(ip)
            == [Lab::mac(owner)]),
        "the owner answers before the second answerer appears"
    );
    // kube-proxy in IPVS mode without strictARP: the address sits on another interface
    // (kube-ipvs0, a dummy; here lo, as CI kernels may lack the dummy module) and the
    // kernel answers ARP for it on eth0 (arp_ignore=0), announcing nothing.
    lab.foreign(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    let t0 = l2_lab::now_ms();
    let (k, line) = conflict_seen(&lab, ip, t0, Duration::from_millis(3 * REFRESH_MS + 2000))
        .expect("the re-probe found the second answerer");
    assert_eq!(k, owner, "{line}");
    let found_after = lab
        .first_line_after(k, t0, "conflict ip=")
        .map(|(t, _)| t - t0)
        .unwrap_or(-1);
    println!(
        "IPVS-like answerer found {found_after} ms after it appeared (refresh {REFRESH_MS} ms)"
    );
    only_the_foreign_host_answers(&lab, ip);
}
