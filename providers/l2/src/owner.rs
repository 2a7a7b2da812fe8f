//! Who announces an IP, and whether this speaker may announce at all.
//!
//! Both are pure functions of their inputs, so every speaker that sees the
//! same live members computes the same answer without talking to the others:
//!
//! - [`owner`]: rendezvous (highest-random-weight) hashing. Every candidate
//!   gets the score `sha256(node + "#" + ip)` and the highest score wins.
//!   Removing a node only moves the IPs it owned; adding one only moves the
//!   IPs it now wins (about 1/N of them). SHA-256 is stable across processes,
//!   versions and architectures, unlike `std`'s randomly keyed hasher. The
//!   input is the one MetalLB uses for its tie-break, so the two agree.
//! - [`quorum`]: the split-brain rule. A speaker that can see neither a
//!   strict majority of the known speakers nor the API server stops
//!   announcing; an exact half wins only if it holds the lowest-named known
//!   speaker, so of two equal halves exactly one keeps announcing.

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The rendezvous score of `node` for `ip`: bigger wins.
pub fn score(ip: IpAddr, node: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update(b"#");
    h.update(ip.to_string().as_bytes());
    h.finalize().into()
}

/// The node that announces `ip` among `candidates` (live, eligible nodes),
/// or `None` when there is no candidate. Order and duplicates in
/// `candidates` do not matter; equal scores (only possible for equal names)
/// fall back to the smaller name so the result is total.
pub fn owner<'a>(ip: IpAddr, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (score(ip, c), *c))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, c)| c)
}

/// Why [`quorum`] allowed or refused announcing; exported as a metric label
/// and shown in status so an operator can tell a partition from a bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuorumReason {
    /// The API server answers, so Kubernetes still sees this node; the
    /// gossip view alone is not trusted to silence it.
    ApiReachable,
    /// This speaker sees more than half of the known speakers.
    Majority,
    /// Exactly half, and this half holds the lowest-named known speaker.
    TieBreakWon,
    /// Exactly half, and the other half holds the lowest-named speaker.
    TieBreakLost,
    /// Fewer than half: this side of the partition must stay quiet.
    Minority,
}

/// The verdict of the split-brain rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quorum {
    /// Whether this speaker may announce the IPs it owns.
    pub may_announce: bool,
    /// Which branch of the rule decided.
    pub reason: QuorumReason,
    /// Speakers this one sees alive, itself included.
    pub live: usize,
    /// Speakers known to exist (live or not), itself included.
    pub known: usize,
}

/// The split-brain rule. `known` are the speakers that should exist (seen
/// alive once and not departed gracefully, not deleted from the API); `live`
/// are those this speaker sees alive now. `me` counts as both known and live.
pub fn quorum(
    me: &str,
    known: &BTreeSet<String>,
    live: &BTreeSet<String>,
    api_reachable: bool,
) -> Quorum {
    let mut all: BTreeSet<&str> = known.iter().map(String::as_str).collect();
    all.extend(live.iter().map(String::as_str));
    all.insert(me);
    let mut seen: BTreeSet<&str> = live.iter().map(String::as_str).collect();
    seen.insert(me);
    let (n, k) = (all.len(), seen.len());
    let reason = if api_reachable {
        QuorumReason::ApiReachable
    } else if 2 * k > n {
        QuorumReason::Majority
    } else if 2 * k == n {
        // `all` is non-empty (it holds `me`), so `first` exists.
        if all.first().is_some_and(|lowest| seen.contains(lowest)) {
            QuorumReason::TieBreakWon
        } else {
            QuorumReason::TieBreakLost
        }
    } else {
        QuorumReason::Minority
    };
    let may_announce = matches!(
        reason,
        QuorumReason::ApiReachable | QuorumReason::Majority | QuorumReason::TieBreakWon
    );
    Quorum {
        may_announce,
        reason,
        live: k,
        known: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn ips(n: u32) -> Vec<IpAddr> {
        (0..n)
            .map(|i| IpAddr::from([10, 0, (i >> 8) as u8, i as u8]))
            .chain((0..n).map(|i| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16])))
            .collect()
    }

    #[test]
    fn score_is_stable_across_processes() {
        // Pinned value: a change here would move every IP in every cluster
        // during an upgrade.
        let s = score("192.168.1.240".parse().expect("ip"), "node-a");
        let mut h = Sha256::new();
        h.update(b"node-a#192.168.1.240");
        assert_eq!(s, <[u8; 32]>::from(h.finalize()));
        assert_eq!(
            owner(
                "192.168.1.240".parse().expect("ip"),
                &["node-a", "node-b", "node-c"]
            ),
            owner(
                "192.168.1.240".parse().expect("ip"),
                &["node-c", "node-a", "node-b"]
            ),
        );
    }

    #[test]
    fn empty_candidates_have_no_owner() {
        assert_eq!(owner("10.0.0.1".parse().expect("ip"), &[]), None);
    }

    #[test]
    fn order_and_duplicates_do_not_matter() {
        let nodes = ["n1", "n2", "n3", "n4", "n5"];
        for ip in ips(200) {
            let a = owner(ip, &nodes);
            let mut rev = nodes;
            rev.reverse();
            assert_eq!(a, owner(ip, &rev));
            assert_eq!(a, owner(ip, &["n5", "n1", "n1", "n4", "n2", "n3", "n3"]));
            assert!(a.is_some());
        }
    }

    #[test]
    fn load_spreads_and_removal_moves_only_the_dead_nodes_ips() {
        let nodes = ["n1", "n2", "n3", "n4"];
        let all = ips(1000);
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        for ip in &all {
            *per_node
                .entry(owner(*ip, &nodes).expect("owner"))
                .or_default() += 1;
        }
        for (node, count) in &per_node {
            assert!((350..=650).contains(count), "{node} owns {count} of 2000");
        }
        let survivors = ["n1", "n2", "n4"];
        for ip in &all {
            let before = owner(*ip, &nodes).expect("owner");
            let after = owner(*ip, &survivors).expect("owner");
            if before != "n3" {
                assert_eq!(before, after, "{ip} moved although its owner lives");
            } else {
                assert_ne!(after, "n3");
            }
        }
    }

    #[test]
    fn majority_minority_and_api() {
        let known = set(&["a", "b", "c", "d", "e"]);
        let q = quorum("a", &known, &set(&["a", "b", "c"]), false);
        assert!(q.may_announce);
        assert_eq!((q.reason, q.live, q.known), (QuorumReason::Majority, 3, 5));
        let q = quorum("d", &known, &set(&["e"]), false);
        assert_eq!((q.may_announce, q.reason), (false, QuorumReason::Minority));
        let q = quorum("d", &known, &set(&["e"]), true);
        assert_eq!(
            (q.may_announce, q.reason),
            (true, QuorumReason::ApiReachable)
        );
        // Alone and forgotten by nobody: a single speaker is its own majority.
        let q = quorum("solo", &BTreeSet::new(), &BTreeSet::new(), false);
        assert_eq!((q.may_announce, q.live, q.known), (true, 1, 1));
    }

    #[test]
    fn even_split_has_exactly_one_winner() {
        let known = set(&["n1", "n2", "n3", "n4"]);
        let left = set(&["n1", "n3"]);
        let right = set(&["n2", "n4"]);
        let verdicts: Vec<bool> = ["n1", "n3"]
            .iter()
            .map(|me| quorum(me, &known, &left, false).may_announce)
            .chain(
                ["n2", "n4"]
                    .iter()
                    .map(|me| quorum(me, &known, &right, false).may_announce),
            )
            .collect();
        assert_eq!(verdicts, [true, true, false, false]);
        assert_eq!(
            quorum("n2", &known, &right, false).reason,
            QuorumReason::TieBreakLost
        );
        assert_eq!(
            quorum("n1", &known, &left, false).reason,
            QuorumReason::TieBreakWon
        );
    }

    #[test]
    fn every_partition_of_five_has_at_most_one_announcing_side() {
        let names = ["a", "b", "c", "d", "e"];
        let known = set(&names);
        // Each speaker is on side 0 or 1 (a bitmask over the five names).
        for mask in 0u32..32 {
            let side = |i: usize| (mask >> i) & 1;
            let mut announcing_sides = BTreeSet::new();
            for (i, me) in names.iter().enumerate() {
                let live: BTreeSet<String> = names
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| side(*j) == side(i))
                    .map(|(_, n)| n.to_string())
                    .collect();
                if quorum(me, &known, &live, false).may_announce {
                    announcing_sides.insert(side(i));
                }
            }
            assert_eq!(announcing_sides.len(), 1, "mask {mask:05b}");
        }
    }
}
