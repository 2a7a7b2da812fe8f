//! Which node owns each VIP: eligibility filters, then rendezvous hashing.
//!
//! ```text
//!  gossip: live speakers + the networks each can announce into ─┐
//!  API:    node labels (l2.nodeSelector), ready endpoints per VIP ├─> elect() ─> owner per IP
//!  config: l2.interfaces, l2.nodeSelector                        ─┘        └─> quorum verdict
//! ```
//!
//! A node is a candidate for a VIP when it is live in the gossip view, is
//! known to the API with labels matching `l2.nodeSelector`, can reach the
//! VIP's subnet (it published a network holding the IP: one of its interface
//! subnets, or everything when `l2.interfaces` lists one of its interfaces),
//! and, for `externalTrafficPolicy: Local`, hosts a ready endpoint. A Service
//! with no ready endpoint at all is not announced (as MetalLB does): nobody
//! could serve the traffic, and silence lets clients fail fast.
//!
//! Every input is data the speakers share (gossip) or read from the same API,
//! so N speakers fed the same view compute the same owners.

use crate::config::L2Config;
use crate::owner::{Quorum, owner, quorum, score};
use crate::scope::VipScope;
use ipnet::IpNet;
use portway_provider::TrafficPolicy;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// One VIP to place, as the speaker derives it from a Service of class
/// `portway.dev/l2` with an IP in its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipInput {
    /// The address in `status.loadBalancer.ingress`.
    pub ip: IpAddr,
    /// `spec.externalTrafficPolicy`: `Local` restricts owners to nodes with a
    /// ready endpoint, so traffic is never sent to a node that drops it.
    pub traffic_policy: TrafficPolicy,
    /// Nodes hosting at least one ready endpoint (from EndpointSlices).
    pub ready_nodes: BTreeSet<String>,
    /// The nodes and interfaces the announcement policies of its pool allow; `None`:
    /// only the node-wide `l2.nodeSelector` applies. Shared (`Arc`) by every VIP of a pool.
    pub scope: Option<Arc<VipScope>>,
}

/// Why a node cannot own a VIP; shown in status and logs so "why is nobody
/// announcing" has an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ineligible {
    /// The gossip view does not see a live speaker on the node.
    NotLive,
    /// The API does not know the node, or its labels miss `l2.nodeSelector`.
    NotSelected,
    /// The node's labels match no node selector of the announcement policies covering
    /// the VIP's pool ([`VipScope`]).
    NotSelectedByPolicy,
    /// The node has no interface in the VIP's subnet (or in `l2.interfaces`).
    NoInterface,
    /// `Local` policy and no ready endpoint on this node.
    NoLocalEndpoint,
    /// The Service has no ready endpoint anywhere.
    NoEndpoints,
}

/// Everything one election needs; borrowed so the speaker does not copy its
/// state on every membership change.
#[derive(Clone, Copy, Debug)]
pub struct ElectionInput<'a> {
    /// This speaker's node name.
    pub me: &'a str,
    /// The l2 settings (node selector).
    pub config: &'a L2Config,
    /// Node name -> labels, from the API (last known if it is unreachable).
    pub nodes: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// Live speakers (this one included) -> networks each can announce into.
    pub live: &'a BTreeMap<String, Vec<IpNet>>,
    /// Speakers known to exist, live or not (see [`quorum`]).
    pub known: &'a BTreeSet<String>,
    /// Whether this speaker reached the API server recently.
    pub api_reachable: bool,
    /// The VIPs to place.
    pub vips: &'a [VipInput],
}

/// The result of one election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Election {
    /// Owner per VIP (`None`: no eligible node). Computed even without
    /// quorum, for status; announcing additionally needs [`Self::quorum`].
    pub owners: BTreeMap<IpAddr, Option<String>>,
    /// The split-brain verdict for this speaker.
    pub quorum: Quorum,
}

impl Election {
    /// The VIPs `me` must announce now: those it owns, if it has quorum.
    pub fn owned_by(&self, me: &str) -> BTreeSet<IpAddr> {
        if !self.quorum.may_announce {
            return BTreeSet::new();
        }
        self.owners
            .iter()
            .filter(|(_, o)| o.as_deref() == Some(me))
            .map(|(ip, _)| *ip)
            .collect()
    }
}

/// Whether `node` may own `vip` under `input`.
pub fn eligibility(
    input: &ElectionInput<'_>,
    node: &str,
    vip: &VipInput,
) -> Result<(), Ineligible> {
    let nets = input.live.get(node).ok_or(Ineligible::NotLive)?;
    let labels = input.nodes.get(node).ok_or(Ineligible::NotSelected)?;
    match &vip.scope {
        // The policies covering the pool decide; the node-wide selector is the default
        // of the pools no policy covers.
        Some(scope) if !scope.selects(labels) => return Err(Ineligible::NotSelectedByPolicy),
        Some(_) => {}
        None if !input.config.selects(labels) => return Err(Ineligible::NotSelected),
        None => {}
    }
    if !nets.iter().any(|n| n.contains(&vip.ip)) {
        return Err(Ineligible::NoInterface);
    }
    if vip.ready_nodes.is_empty() {
        return Err(Ineligible::NoEndpoints);
    }
    if vip.traffic_policy == TrafficPolicy::Local && !vip.ready_nodes.contains(node) {
        return Err(Ineligible::NoLocalEndpoint);
    }
    Ok(())
}

/// Runs the election: owner of every VIP and this speaker's quorum verdict.
pub fn elect(input: &ElectionInput<'_>) -> Election {
    let mut owners = BTreeMap::new();
    for vip in input.vips {
        let candidates: Vec<&str> = input
            .live
            .keys()
            .map(String::as_str)
            .filter(|n| eligibility(input, n, vip).is_ok())
            .collect();
        owners.insert(vip.ip, owner(vip.ip, &candidates).map(str::to_string));
    }
    let live: BTreeSet<String> = input.live.keys().cloned().collect();
    Election {
        owners,
        quorum: quorum(input.me, input.known, &live, input.api_reachable),
    }
}

/// How many best-scoring nodes [`ScoreCache`] keeps per VIP.
const TOP: usize = 4;

type Ranked = Vec<([u8; 32], String)>;

/// The best-scoring nodes of each VIP among every node name seen so far.
///
/// A rendezvous score depends on the VIP and the node name only, so it never changes;
/// an election then looks at a VIP's few best nodes for the first eligible one instead
/// of hashing every node for every VIP (10,000 VIPs x 500 nodes is 5 million SHA-256 per
/// change). A node name seen for the first time costs one hash per VIP, once; names that
/// go away stay listed (they are simply not eligible), which keeps every list the top of
/// a superset of today's nodes, so its first eligible entry is the true owner. When no
/// listed node is eligible, the election falls back to scoring the eligible ones.
#[derive(Debug, Default)]
pub struct ScoreCache {
    universe: BTreeSet<String>,
    top: HashMap<IpAddr, Ranked>,
}

fn insert_ranked(list: &mut Ranked, entry: ([u8; 32], String)) {
    // Descending score; equal scores (equal names only) by ascending name, as `owner`.
    let pos = list
        .iter()
        .position(|(s, n)| (entry.0, std::cmp::Reverse(&entry.1)) > (*s, std::cmp::Reverse(n)))
        .unwrap_or(list.len());
    if pos < TOP {
        list.insert(pos, entry);
        list.truncate(TOP);
    }
}

impl ScoreCache {
    /// Adds node names not seen before to every VIP's list.
    fn learn<'a>(&mut self, names: impl Iterator<Item = &'a String>) {
        let new: Vec<String> = names
            .filter(|n| !self.universe.contains(*n))
            .cloned()
            .collect();
        for name in new {
            for (ip, list) in self.top.iter_mut() {
                insert_ranked(list, (score(*ip, &name), name.clone()));
            }
            self.universe.insert(name);
        }
    }

    /// Drops the scores of a VIP that is gone.
    pub fn forget(&mut self, ip: &IpAddr) {
        self.top.remove(ip);
    }

    fn ranked(&mut self, ip: IpAddr) -> &Ranked {
        let universe = &self.universe;
        self.top.entry(ip).or_insert_with(|| {
            let mut list = Vec::with_capacity(TOP + 1);
            for name in universe {
                insert_ranked(&mut list, (score(ip, name), name.clone()));
            }
            list
        })
    }
}

/// [`elect`] with a [`ScoreCache`] kept across elections: the same result, at a cost per
/// election that grows with the VIPs but not with VIPs x nodes. `input.vips` is every VIP:
/// the cache forgets the others.
pub fn elect_cached(input: &ElectionInput<'_>, cache: &mut ScoreCache) -> Election {
    let election = elect_some(input, cache);
    let present: BTreeSet<IpAddr> = input.vips.iter().map(|v| v.ip).collect();
    if cache.top.len() > present.len() {
        cache.top.retain(|ip, _| present.contains(ip));
    }
    election
}

/// Owners of only the VIPs in `input.vips`, the others left as they were: an owner
/// depends on its own VIP and the nodes alone (rendezvous hashing), so one changed
/// Service costs one placement, not a pass over every VIP. The cache keeps the other
/// VIPs' scores; [`ScoreCache::forget`] drops a removed VIP's.
pub fn elect_some(input: &ElectionInput<'_>, cache: &mut ScoreCache) -> Election {
    cache.learn(input.nodes.keys().chain(input.live.keys()));
    let mut owners = BTreeMap::new();
    for vip in input.vips {
        let found = cache
            .ranked(vip.ip)
            .iter()
            .find(|(_, n)| eligibility(input, n, vip).is_ok())
            .map(|(_, n)| n.clone());
        let found = found.or_else(|| {
            // Nobody of the best few is eligible: score the eligible ones (for Local
            // policy only the nodes with an endpoint can be).
            let pool: Vec<&str> = if vip.traffic_policy == TrafficPolicy::Local {
                vip.ready_nodes.iter().map(String::as_str).collect()
            } else {
                input.live.keys().map(String::as_str).collect()
            };
            let candidates: Vec<&str> = pool
                .into_iter()
                .filter(|n| eligibility(input, n, vip).is_ok())
                .collect();
            owner(vip.ip, &candidates).map(str::to_string)
        });
        owners.insert(vip.ip, found);
    }
    let live: BTreeSet<String> = input.live.keys().cloned().collect();
    Election {
        owners,
        quorum: quorum(input.me, input.known, &live, input.api_reachable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One cluster view shared by N simulated speakers.
    struct World {
        config: L2Config,
        nodes: BTreeMap<String, BTreeMap<String, String>>,
        live: BTreeMap<String, Vec<IpNet>>,
        known: BTreeSet<String>,
        vips: Vec<VipInput>,
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn vip(ip: &str, policy: TrafficPolicy, ready: &[&str]) -> VipInput {
        VipInput {
            ip: ip.parse().expect("ip"),
            traffic_policy: policy,
            ready_nodes: ready.iter().map(|s| s.to_string()).collect(),
            scope: None,
        }
    }

    fn world(n: usize) -> World {
        let names: Vec<String> = (1..=n).map(|i| format!("node-{i}")).collect();
        World {
            config: L2Config::default(),
            nodes: names
                .iter()
                .map(|n| (n.clone(), [("zone".to_string(), "a".to_string())].into()))
                .collect(),
            live: names
                .iter()
                .map(|n| (n.clone(), vec![net("192.168.1.0/24"), net("fd00:1::/64")]))
                .collect(),
            known: names.iter().cloned().collect(),
            vips: (0..50)
                .map(|i| {
                    vip(
                        &format!("192.168.1.{}", 100 + i),
                        TrafficPolicy::Cluster,
                        &["node-1"],
                    )
                })
                .chain((0..50).map(|i| {
                    vip(
                        &format!("fd00:1::{:x}", 0x100 + i),
                        TrafficPolicy::Cluster,
                        &["node-1"],
                    )
                }))
                .collect(),
        }
    }

    impl World {
        fn input<'a>(&'a self, me: &'a str) -> ElectionInput<'a> {
            ElectionInput {
                me,
                config: &self.config,
                nodes: &self.nodes,
                live: &self.live,
                known: &self.known,
                api_reachable: false,
                vips: &self.vips,
            }
        }

        /// Every live speaker elects; all must agree, and each VIP with an
        /// owner must be announced by exactly that one speaker.
        fn assert_exactly_one_owner(&self) -> BTreeMap<IpAddr, Option<String>> {
            let elections: Vec<(String, Election)> = self
                .live
                .keys()
                .map(|me| (me.clone(), elect(&self.input(me))))
                .collect();
            let reference = &elections[0].1.owners;
            for (me, e) in &elections {
                assert_eq!(&e.owners, reference, "{me} disagrees");
            }
            for (ip, o) in reference {
                let announcers: Vec<&str> = elections
                    .iter()
                    .filter(|(me, e)| e.owned_by(me).contains(ip))
                    .map(|(me, _)| me.as_str())
                    .collect();
                match o {
                    Some(owner) => assert_eq!(announcers, [owner.as_str()], "{ip}"),
                    None => assert!(announcers.is_empty(), "{ip}"),
                }
            }
            reference.clone()
        }
    }

    #[test]
    fn n_speakers_agree_on_exactly_one_owner_and_fail_over() {
        let mut w = world(5);
        let before = w.assert_exactly_one_owner();
        assert!(before.values().all(Option::is_some));
        let owners: BTreeSet<&String> = before.values().flatten().collect();
        assert!(
            owners.len() >= 4,
            "50+50 IPs spread over 5 nodes: {owners:?}"
        );
        // node-2 dies: its IPs move, nobody else's do.
        w.live.remove("node-2");
        let after = w.assert_exactly_one_owner();
        for (ip, o) in &before {
            if o.as_deref() == Some("node-2") {
                assert_ne!(after[ip].as_deref(), Some("node-2"));
                assert!(after[ip].is_some());
            } else {
                assert_eq!(&after[ip], o, "{ip} moved");
            }
        }
        // It comes back: the original placement returns.
        w.live.insert(
            "node-2".into(),
            vec![net("192.168.1.0/24"), net("fd00:1::/64")],
        );
        assert_eq!(w.assert_exactly_one_owner(), before);
    }

    #[test]
    fn local_policy_only_picks_nodes_with_ready_endpoints() {
        let mut w = world(4);
        w.vips = (0..40)
            .map(|i| {
                vip(
                    &format!("192.168.1.{}", 10 + i),
                    TrafficPolicy::Local,
                    &["node-2", "node-4"],
                )
            })
            .collect();
        let owners = w.assert_exactly_one_owner();
        for o in owners.values() {
            assert!(matches!(o.as_deref(), Some("node-2" | "node-4")), "{o:?}");
        }
        // The endpoint on node-4 goes away, then node-2 dies: nobody may own.
        for v in &mut w.vips {
            v.ready_nodes.remove("node-4");
        }
        assert!(
            w.assert_exactly_one_owner()
                .values()
                .all(|o| o.as_deref() == Some("node-2"))
        );
        w.live.remove("node-2");
        assert!(w.assert_exactly_one_owner().values().all(Option::is_none));
        let input = w.input("node-1");
        assert_eq!(
            eligibility(&input, "node-1", &w.vips[0]),
            Err(Ineligible::NoLocalEndpoint)
        );
    }

    #[test]
    fn cluster_policy_without_endpoints_is_not_announced() {
        let mut w = world(3);
        w.vips = vec![vip("192.168.1.7", TrafficPolicy::Cluster, &[])];
        assert_eq!(w.assert_exactly_one_owner().values().next(), Some(&None));
        assert_eq!(
            eligibility(&w.input("node-1"), "node-1", &w.vips[0]),
            Err(Ineligible::NoEndpoints)
        );
    }

    #[test]
    fn interface_eligibility_follows_published_networks() {
        let mut w = world(3);
        // node-1 has no leg in 192.168.1.0/24; node-3 has no IPv6 at all.
        w.live
            .insert("node-1".into(), vec![net("10.0.0.0/8"), net("fd00:1::/64")]);
        w.live.insert("node-3".into(), vec![net("192.168.1.0/24")]);
        let owners = w.assert_exactly_one_owner();
        for (ip, o) in &owners {
            let o = o.as_deref().expect("owner");
            if ip.is_ipv4() {
                assert_ne!(o, "node-1", "{ip}");
            } else {
                assert_ne!(o, "node-3", "{ip}");
            }
        }
        // A listed interface publishes 0.0.0.0/0 and ::/0: eligible for all.
        w.live
            .insert("node-1".into(), vec![net("0.0.0.0/0"), net("::/0")]);
        let input = w.input("node-2");
        assert_eq!(eligibility(&input, "node-1", &w.vips[0]), Ok(()));
        assert_eq!(
            eligibility(&input, "node-3", &w.vips[99]),
            Err(Ineligible::NoInterface)
        );
    }

    #[test]
    fn node_selector_and_unknown_nodes() {
        let mut w = world(3);
        w.config.node_selector.insert("zone".into(), "b".into());
        w.nodes
            .get_mut("node-3")
            .expect("node")
            .insert("zone".into(), "b".into());
        let owners = w.assert_exactly_one_owner();
        assert!(owners.values().all(|o| o.as_deref() == Some("node-3")));
        // A live speaker the API does not know is never a candidate.
        w.config.node_selector.clear();
        w.nodes.remove("node-3");
        let owners = w.assert_exactly_one_owner();
        assert!(owners.values().all(|o| o.as_deref() != Some("node-3")));
        assert_eq!(
            eligibility(&w.input("node-1"), "node-3", &w.vips[0]),
            Err(Ineligible::NotSelected)
        );
        assert_eq!(
            eligibility(&w.input("node-1"), "node-9", &w.vips[0]),
            Err(Ineligible::NotLive)
        );
    }

    /// Issue 23: a VIP whose policy selects one node is owned by that node only, even by
    /// VIPs whose hash the other nodes win; with that node dead nobody owns it (the
    /// reason says the policy), and the node-wide `l2.nodeSelector` yields to the policy.
    #[test]
    fn a_policy_scope_restricts_owners_whatever_the_hash() {
        let mut w = world(3);
        let only_3 = Arc::new(VipScope {
            policies: vec!["p".into()],
            nodes: Some(vec![portway_provider::ipam::LabelSelector {
                match_labels: [("kubernetes.io/hostname".to_string(), "node-3".to_string())].into(),
                ..Default::default()
            }]),
            interfaces: None,
        });
        for (n, labels) in w.nodes.iter_mut() {
            labels.insert("kubernetes.io/hostname".into(), n.clone());
        }
        let free = w.assert_exactly_one_owner();
        assert!(free.values().any(|o| o.as_deref() != Some("node-3")));
        for v in &mut w.vips {
            v.scope = Some(only_3.clone());
        }
        let owners = w.assert_exactly_one_owner();
        assert!(owners.values().all(|o| o.as_deref() == Some("node-3")));
        let mut cache = ScoreCache::default();
        assert_eq!(elect_cached(&w.input("node-1"), &mut cache).owners, owners);
        assert_eq!(
            eligibility(&w.input("node-1"), "node-1", &w.vips[0]),
            Err(Ineligible::NotSelectedByPolicy)
        );
        // The node-wide selector excludes node-3, the policy selects it: the policy wins.
        w.config.node_selector.insert("zone".into(), "b".into());
        assert_eq!(w.assert_exactly_one_owner(), owners);
        w.live.remove("node-3");
        assert!(w.assert_exactly_one_owner().values().all(Option::is_none));
        assert_eq!(
            elect_cached(&w.input("node-1"), &mut cache).owners,
            w.assert_exactly_one_owner()
        );
    }

    #[test]
    fn electing_only_the_changed_vips_gives_the_owners_a_whole_election_gives() {
        let mut w = world(7);
        let mut cache = ScoreCache::default();
        let mut owners = elect_cached(&w.input("node-1"), &mut cache).owners;
        // One VIP's endpoints move, one VIP goes, one comes: elected alone, each gets the
        // owner a whole election gives, and the cache keeps serving the others.
        w.vips[3].ready_nodes = ["node-5".to_string()].into();
        w.vips[3].traffic_policy = TrafficPolicy::Local;
        let gone = w.vips.remove(10).ip;
        cache.forget(&gone);
        owners.remove(&gone);
        w.vips
            .push(vip("192.168.1.250", TrafficPolicy::Cluster, &["node-2"]));
        let changed = [w.vips[3].clone(), w.vips[w.vips.len() - 1].clone()];
        let some = elect_some(
            &ElectionInput {
                vips: &changed,
                ..w.input("node-1")
            },
            &mut cache,
        );
        assert_eq!(
            some.owners.len(),
            2,
            "only the changed VIPs: {:?}",
            some.owners
        );
        assert_eq!(some.owners[&changed[0].ip].as_deref(), Some("node-5"));
        owners.extend(some.owners);
        assert_eq!(owners, w.assert_exactly_one_owner());
        assert_eq!(owners, elect_cached(&w.input("node-1"), &mut cache).owners);
    }

    #[test]
    fn partitioned_minority_stops_announcing() {
        // 5 known speakers; the view splits 3 | 2. Each side elects from its
        // own live set; only the majority side announces, each VIP once.
        let w = world(5);
        let majority: BTreeMap<String, Vec<IpNet>> = w
            .live
            .iter()
            .filter(|(n, _)| *n != "node-4" && *n != "node-5")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let minority: BTreeMap<String, Vec<IpNet>> = w
            .live
            .iter()
            .filter(|(n, _)| *n == "node-4" || *n == "node-5")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut announced: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for (side, live) in [(&majority, &majority), (&minority, &minority)] {
            for me in side.keys() {
                let input = ElectionInput {
                    live,
                    ..w.input(me)
                };
                for ip in elect(&input).owned_by(me) {
                    announced.entry(ip).or_default().push(me.clone());
                }
            }
        }
        assert_eq!(announced.len(), w.vips.len());
        for (ip, who) in &announced {
            assert_eq!(who.len(), 1, "{ip}: {who:?}");
            assert!(
                !who[0].ends_with('4') && !who[0].ends_with('5'),
                "{ip}: {who:?}"
            );
        }
    }

    /// The cache never changes a result: a long random walk of deaths, returns, new
    /// nodes, label and endpoint changes, compared election by election with [`elect`].
    #[test]
    fn the_score_cache_elects_exactly_what_a_full_election_does() {
        let mut w = world(6);
        w.config.node_selector = [("zone".to_string(), "a".to_string())].into();
        let mut cache = ScoreCache::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for step in 0..300 {
            let k = rnd(9) + 1;
            let name = format!("node-{k}");
            match rnd(5) {
                0 => {
                    w.live.remove(&name);
                }
                1 => {
                    w.live.insert(
                        name.clone(),
                        vec![net("192.168.1.0/24"), net("fd00:1::/64")],
                    );
                    w.nodes
                        .entry(name)
                        .or_insert([("zone".to_string(), "a".to_string())].into());
                }
                2 => {
                    let zone = if rnd(2) == 0 { "a" } else { "b" };
                    w.nodes
                        .insert(name, [("zone".to_string(), zone.to_string())].into());
                }
                3 => {
                    let i = rnd(w.vips.len() as u64) as usize;
                    let v = &mut w.vips[i];
                    v.traffic_policy = if rnd(2) == 0 {
                        TrafficPolicy::Local
                    } else {
                        TrafficPolicy::Cluster
                    };
                    v.ready_nodes = (1..=9)
                        .filter(|_| rnd(3) == 0)
                        .map(|j| format!("node-{j}"))
                        .collect();
                }
                _ => {
                    w.live.insert(name, vec![net("fd00:1::/64")]);
                }
            }
            let me = w
                .live
                .keys()
                .next()
                .cloned()
                .unwrap_or_else(|| "node-1".into());
            let input = w.input(&me);
            assert_eq!(
                elect_cached(&input, &mut cache),
                elect(&input),
                "step {step}"
            );
        }
    }
}
