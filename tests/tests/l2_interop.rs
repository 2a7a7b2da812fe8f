//! L2 interop: real speakers in network namespaces, answered by real tools.
//!
//! ```text
//!            ┌──────────── pwl2-<pid>-<n>-sw: br0 ────────────┐
//!          p-r             p-n1             p-n2             p-n3
//!     r: eth0 .1       n1: eth0 .11     n2: eth0 .12     n3: eth0 .13
//!     arping, ndisc6,  speaker+server   speaker+server   speaker+server
//!     TCP probes       VIP on lo        VIP on lo        VIP on lo
//! ```
//!
//! Each node has the VIPs (198.51.100.100, 2001:db8:1::100) on `lo` with
//! `arp_ignore=1`/`arp_announce=2`, so its kernel accepts traffic for them
//! but never answers ARP/NDP: only the speaker that owns a VIP does. The
//! speaker is `l2-test-speaker` (the library's `L2Speaker` fed from its
//! arguments); its TCP server answers with the node name, so the router
//! sees which node the VIP leads to.
//!
//! Needs root, `ip`, `arping` (iputils), `ndisc6` and `iptables`; without
//! them each test prints why and passes, unless PORTWAY_REQUIRE_PRIVILEGED=1
//! makes it fail. Tests run one at a time (a lock), since they time
//! failovers on a shared machine.

mod l2_lab;

use l2_lab::{Lab, VIP4, VIP6};
use std::time::Duration;

/// Initial placement: exactly one answerer per family, the elected node; the
/// data path reaches it; the router's neighbour table holds its MAC.
fn assert_single_owner(lab: &Lab) -> usize {
    let owner = lab
        .wait_owner(VIP4, Duration::from_secs(5))
        .expect("an owner for the IPv4 VIP");
    assert_eq!(
        lab.wait_owner(VIP6, Duration::from_secs(5)),
        Some(owner),
        "both VIPs hash to one node here"
    );
    assert_eq!(
        lab.arping(VIP4),
        vec![Lab::mac(owner)],
        "arping: exactly the owner answers"
    );
    assert_eq!(
        lab.ndisc6(VIP6),
        vec![Lab::mac(owner)],
        "ndisc6 -m: exactly the owner answers"
    );
    assert_eq!(lab.tcp(VIP4).as_deref(), Some(Lab::name(owner).as_str()));
    assert_eq!(lab.tcp(VIP6).as_deref(), Some(Lab::name(owner).as_str()));
    assert_eq!(lab.neigh(VIP4).as_deref(), Some(Lab::mac(owner).as_str()));
    assert_eq!(lab.neigh(VIP6).as_deref(), Some(Lab::mac(owner).as_str()));
    // Nobody answers for an address nobody owns.
    assert!(lab.arping("198.51.100.123").is_empty());
    assert!(lab.ndisc6("2001:db8:1::123").is_empty());
    owner
}

/// After the owner is gone: another node announces, the router's cache was
/// moved by gratuitous ARP / unsolicited NA (not by a new resolution: the
/// router holds an entry and only GARP/NA can change it this fast), and TCP
/// reaches the new node.
fn assert_moved_away_from(lab: &Lab, old: usize) -> usize {
    let new = lab
        .wait_owner_except(VIP4, old, Duration::from_secs(3))
        .expect("a new owner within 3 s");
    let mac = Lab::mac(new);
    assert!(
        lab.wait(Duration::from_secs(3), || lab.neigh(VIP4).as_deref()
            == Some(mac.as_str())),
        "router's IPv4 neighbour entry moved to {mac}: {:?}",
        lab.neigh(VIP4)
    );
    assert!(
        lab.wait(Duration::from_secs(3), || lab.neigh(VIP6).as_deref()
            == Some(mac.as_str())),
        "router's IPv6 neighbour entry moved to {mac}: {:?}",
        lab.neigh(VIP6)
    );
    let name = Lab::name(new);
    assert!(lab.wait(Duration::from_secs(3), || lab.tcp(VIP4).as_deref()
        == Some(name.as_str())));
    assert!(lab.wait(Duration::from_secs(3), || lab.tcp(VIP6).as_deref()
        == Some(name.as_str())));
    new
}

#[test]
fn owner_answers_and_a_killed_owner_fails_over() {
    let Some(mut lab) = Lab::start("kill") else {
        return;
    };
    let owner = assert_single_owner(&lab);
    let t0 = l2_lab::now_ms();
    lab.kill_node_processes(owner);
    let new = assert_moved_away_from(&lab, owner);
    // The survivors saw a crash, not a goodbye, and say how long it took.
    let down = lab.first_line_after(new, t0, &format!("member_down name={}", Lab::name(owner)));
    let down = down.expect("new owner logged the departure");
    assert!(down.1.contains("graceful=false"), "{down:?}");
    let takeover = lab
        .first_line_after(new, t0, &format!("takeover ip={VIP4}"))
        .expect("takeover line");
    assert!(
        takeover
            .1
            .contains(&format!("previous={}", Lab::name(owner))),
        "{takeover:?}"
    );
    println!(
        "kill: detection {} ms, takeover logged {} ms after the kill",
        down.0 - t0,
        takeover.0 - t0
    );
    // Only the new owner answers now.
    assert_eq!(lab.arping(VIP4), vec![Lab::mac(new)]);
    assert_eq!(lab.ndisc6(VIP6), vec![Lab::mac(new)]);
}

#[test]
fn a_cut_link_fails_over_and_the_cut_node_goes_quiet() {
    let Some(lab) = Lab::start("cut") else { return };
    let owner = assert_single_owner(&lab);
    let t0 = l2_lab::now_ms();
    lab.set_link(owner, false);
    let new = assert_moved_away_from(&lab, owner);
    // The cut node releases at once (its link lost carrier), and then sees itself alone
    // among three: a minority.
    assert!(
        lab.wait(Duration::from_secs(3), || lab
            .first_line_after(owner, t0, &format!("release ip={VIP4}"))
            .is_some()),
        "the isolated owner released the VIP"
    );
    assert!(
        lab.wait(Duration::from_secs(3), || lab
            .first_line_after(owner, t0, "quorum may_announce=false")
            .is_some()),
        "the isolated owner lost its quorum"
    );
    let q = lab
        .first_line_after(owner, t0, "quorum may_announce=false")
        .expect("quorum lost");
    assert!(q.1.contains("reason=Minority"), "{q:?}");
    // Link back: the cluster re-forms and still exactly one node answers.
    lab.set_link(owner, true);
    assert!(
        lab.wait(Duration::from_secs(5), || lab.live_count(new) == 3),
        "cluster re-formed"
    );
    // The same three nodes hash the VIP to its first owner again.
    assert!(
        lab.wait_owner_is(VIP4, owner, Duration::from_secs(10)),
        "the first owner took the VIP back"
    );
    assert_eq!(lab.arping(VIP4), vec![Lab::mac(owner)]);
    assert_eq!(lab.ndisc6(VIP6), vec![Lab::mac(owner)]);
}

#[test]
fn a_gossip_partition_leaves_at_most_one_answerer() {
    let Some(lab) = Lab::start("part") else {
        return;
    };
    let owner = assert_single_owner(&lab);
    // Cut only the gossip of the owner: ARP/NDP still flow, so a node that
    // kept announcing would be seen by the router.
    let t0 = l2_lab::now_ms();
    lab.partition_gossip(owner, true);
    // Wait for both halves to act (the minority releases, the majority takes
    // over) rather than a fixed time, which a loaded machine can outrun.
    assert!(
        lab.wait(Duration::from_secs(10), || lab
            .first_line_after(owner, t0, &format!("release ip={VIP4}"))
            .is_some()
            && lab.wait_owner_except(VIP4, owner, Duration::ZERO).is_some()),
        "the minority released and the majority took over"
    );
    let macs4 = lab.arping(VIP4);
    let macs6 = lab.ndisc6(VIP6);
    let elapsed = l2_lab::now_ms() - t0;
    assert_eq!(
        macs4.len(),
        1,
        "IPv4 answerers {elapsed} ms after the partition: {macs4:?}"
    );
    assert_eq!(
        macs6.len(),
        1,
        "IPv6 answerers {elapsed} ms after the partition: {macs6:?}"
    );
    assert_ne!(
        macs4[0],
        Lab::mac(owner),
        "the minority side stopped answering"
    );
    assert_eq!(macs4, macs6);
    let released = lab
        .first_line_after(owner, t0, &format!("release ip={VIP4}"))
        .expect("minority released");
    println!(
        "partition: minority owner released {} ms after the cut",
        released.0 - t0
    );
    // Heal: one answerer again, and the data path works.
    lab.partition_gossip(owner, false);
    assert!(
        lab.wait(Duration::from_secs(5), || lab.live_count(owner) == 3),
        "healed"
    );
    assert!(
        lab.wait_owner_is(VIP4, owner, Duration::from_secs(10)),
        "the first owner took the VIP back"
    );
    assert_eq!(lab.arping(VIP4), vec![Lab::mac(owner)]);
    assert!(lab.wait(Duration::from_secs(3), || lab.tcp(VIP4).as_deref()
        == Some(Lab::name(owner).as_str())));
}

#[test]
fn a_graceful_stop_hands_over_at_once() {
    let Some(mut lab) = Lab::start("term") else {
        return;
    };
    let owner = assert_single_owner(&lab);
    let t0 = l2_lab::now_ms();
    lab.stop_speaker(owner); // SIGTERM: release, goodbye, exit
    let new = assert_moved_away_from(&lab, owner);
    let down = lab
        .first_line_after(new, t0, &format!("member_down name={}", Lab::name(owner)))
        .expect("departure seen");
    assert!(down.1.contains("graceful=true"), "{down:?}");
    // graceful=true: the survivors got the goodbye; they did not have to
    // wait for the failure detector.
    println!("graceful stop: departure seen after {} ms", down.0 - t0);
}

#[test]
fn local_policy_only_moves_to_nodes_with_endpoints() {
    let Some(mut lab) = Lab::start("local") else {
        return;
    };
    let first = assert_single_owner(&lab);
    // Endpoints only on the two other nodes: ownership must go to one of them.
    let others: Vec<usize> = (1..=3).filter(|k| *k != first).collect();
    let list = others
        .iter()
        .map(|k| Lab::name(*k))
        .collect::<Vec<_>>()
        .join(",");
    lab.set_vips(&format!("vips {VIP4}@local={list} {VIP6}@local={list}"));
    let owner = lab
        .wait_owner_except(VIP4, first, Duration::from_secs(3))
        .expect("moved");
    assert!(others.contains(&owner));
    assert!(lab.wait(Duration::from_secs(3), || lab.arping(VIP4)
        == vec![Lab::mac(owner)]));
    // No endpoint anywhere: nobody answers.
    lab.set_vips(&format!("vips {VIP4}@local= {VIP6}@local="));
    assert!(
        lab.wait(Duration::from_secs(3), || lab.arping(VIP4).is_empty()
            && lab.ndisc6(VIP6).is_empty())
    );
}

/// Issue 19, defect 3 (make before break): the owner is excluded (the exclusion label)
/// while it lives, and, as in a cluster, the nodes' API watches deliver that at different
/// times: the other nodes first, the owner 400 ms later. The new owner must wait for the
/// old one's release over the gossip, so no tagged ARP request is answered by two MACs.
/// Before the fix the new owner answered at once and both answered for 400 ms.
#[test]
fn an_excluded_owner_hands_over_without_a_double_answer() {
    let Some(mut lab) = Lab::start("mbb") else {
        return;
    };
    let owner = assert_single_owner(&lab);
    let others: Vec<usize> = (1..=3).filter(|k| *k != owner).collect();
    let probe = lab.arp_probe(VIP4, Duration::from_millis(2000));
    std::thread::sleep(Duration::from_millis(300));
    let exclude = format!("exclude {}", Lab::name(owner));
    for k in &others {
        lab.command(*k, &exclude);
    }
    std::thread::sleep(Duration::from_millis(400));
    lab.command(owner, &exclude);
    let seen = probe.finish();
    println!("exclusion handover: {seen:?}");
    assert!(seen.probes > 500, "the probe ran: {seen:?}");
    assert_eq!(
        seen.double,
        0,
        "requests answered twice, first: {:?}",
        seen.doubles.iter().take(3).collect::<Vec<_>>()
    );
    let new = lab
        .wait_owner_except(VIP4, owner, Duration::from_secs(3))
        .expect("a new owner");
    assert_eq!(seen.macs.len(), 2, "old then new owner answered: {seen:?}");
    assert!(seen.macs.contains(&Lab::mac(new)), "{seen:?}");
    // The wait ended on the release, not on its bound.
    assert!(seen.longest_gap_ms < 300, "{seen:?}");
}

/// Issue 19, defect 3, the other live-owner case: a node that wins the VIP comes back
/// after a restart while the interim owner still answers. It announces only after the
/// interim owner's release.
#[test]
fn a_returning_owner_takes_back_without_a_double_answer() {
    let Some(mut lab) = Lab::start("back") else {
        return;
    };
    let owner = assert_single_owner(&lab);
    lab.kill_node_processes(owner);
    let interim = lab
        .wait_owner_except(VIP4, owner, Duration::from_secs(3))
        .expect("interim owner");
    assert!(lab.wait(Duration::from_secs(3), || lab.arping(VIP4)
        == vec![Lab::mac(interim)]));
    let probe = lab.arp_probe(VIP4, Duration::from_millis(3000));
    std::thread::sleep(Duration::from_millis(200));
    lab.start_server(owner);
    lab.start_speaker(owner);
    let seen = probe.finish();
    println!("restart handover: {seen:?}");
    assert_eq!(
        seen.double,
        0,
        "requests answered twice, first: {:?}",
        seen.doubles.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        lab.wait_owner_is(VIP4, owner, Duration::from_secs(3)),
        "the returning node took its VIP back"
    );
    assert_eq!(lab.arping(VIP4), vec![Lab::mac(owner)]);
}

/// Issue 24, item 3: the link that carries the VIP dies while the node lives (its gossip
/// runs on a management network). The node must stop offering the VIP and another take
/// it within the budget of a crash; before the fix the node kept it (the interface stays
/// administratively up) and nobody answered.
#[test]
fn a_dead_data_link_moves_the_vip_to_another_node() {
    let Some(lab) = Lab::start_with_mgmt("link") else {
        return;
    };
    let owner = assert_single_owner(&lab);
    let t0 = l2_lab::now_ms();
    lab.set_link(owner, false);
    let new = assert_moved_away_from(&lab, owner);
    let taken = lab
        .first_line_after(new, t0, &format!("takeover ip={VIP4}"))
        .expect("takeover line");
    let released = lab
        .first_line_after(owner, t0, &format!("release ip={VIP4}"))
        .expect("the node with the dead link released the VIP");
    println!(
        "dead link: released {} ms, taken over {} ms after the cut",
        released.0 - t0,
        taken.0 - t0
    );
    // Still one cluster: the node is alive, only its data link is gone.
    assert_eq!(lab.live_count(new), 3);
    lab.set_link(owner, true);
    assert!(
        lab.wait_owner_is(VIP4, owner, Duration::from_secs(5)),
        "the first owner took the VIP back when its link returned"
    );
    assert!(lab.wait(Duration::from_secs(3), || lab.arping(VIP4)
        == vec![Lab::mac(owner)]));
}
