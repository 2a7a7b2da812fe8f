//! Several cores wired back to back through an in-memory network on a
//! virtual clock: no sockets, no sleeps.

use super::*;

const LATENCY: Duration = Duration::from_millis(1);

struct Net {
    now: Instant,
    cores: BTreeMap<String, MembershipCore>,
    addrs: BTreeMap<SocketAddr, String>,
    /// Speakers that crashed: they neither run nor receive.
    dead: BTreeSet<String>,
    /// Pairs that cannot talk (a partition), both directions.
    cut: BTreeSet<(String, String)>,
    in_flight: Vec<(Instant, String, SocketAddr, Vec<u8>)>,
    events: Vec<(Instant, String, MembershipEvent)>,
    keys: GossipKeys,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8], 7947))
}

fn id(i: usize, bump: u64) -> SpeakerId {
    SpeakerId {
        name: format!("n{i}"),
        addr: addr(i),
        bump,
        nets: vec!["10.0.0.0/24".parse().expect("net")],
    }
}

impl Net {
    fn new(n: usize, seed: u64) -> Net {
        Net::keyed(n, seed, GossipKeys::default())
    }

    /// Every speaker holds `keys`.
    fn keyed(n: usize, seed: u64, keys: GossipKeys) -> Net {
        let now = Instant::now();
        let mut net = Net {
            now,
            cores: BTreeMap::new(),
            addrs: BTreeMap::new(),
            dead: BTreeSet::new(),
            cut: BTreeSet::new(),
            in_flight: Vec::new(),
            events: Vec::new(),
            keys,
        };
        for i in 1..=n {
            net.add(i, 1, seed);
        }
        net
    }

    fn add(&mut self, i: usize, bump: u64, seed: u64) {
        let mut core = MembershipCore::new(
            id(i, bump),
            MembershipTuning::default(),
            seed * 100 + i as u64,
        );
        core.set_keys(&self.keys);
        // Every node is handed every node's address, as the speaker does
        // from the API's Node list; only the first one would be enough.
        core.join(
            self.now,
            (1..=5).map(|i| (format!("n{i}"), addr(i))).collect(),
        );
        self.cores.insert(format!("n{i}"), core);
        self.addrs.insert(addr(i), format!("n{i}"));
        self.dead.remove(&format!("n{i}"));
    }

    fn blocked(&self, a: &str, b: &str) -> bool {
        self.cut.contains(&(a.to_string(), b.to_string()))
            || self.cut.contains(&(b.to_string(), a.to_string()))
    }

    fn flush(&mut self) {
        for (name, core) in self.cores.iter_mut() {
            if self.dead.contains(name) {
                continue;
            }
            while let Some((to, data)) = core.poll_transmit() {
                self.in_flight
                    .push((self.now + LATENCY, name.clone(), to, data));
            }
            while let Some(ev) = core.poll_event() {
                self.events.push((self.now, name.clone(), ev));
            }
        }
    }

    /// Advances virtual time to `until`, delivering datagrams and timers.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.flush();
            let next_timer = self
                .cores
                .iter()
                .filter(|(n, _)| !self.dead.contains(*n))
                .filter_map(|(_, c)| c.poll_timeout())
                .min();
            let next_packet = self.in_flight.iter().map(|p| p.0).min();
            let next = match (next_timer, next_packet) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|p| p.0 <= self.now);
            self.in_flight = later;
            for (_, from, to, data) in due {
                let Some(dst) = self.addrs.get(&to).cloned() else {
                    continue;
                };
                if self.dead.contains(&dst) || self.blocked(&from, &dst) {
                    continue;
                }
                let from_addr = self.cores[&from].me().addr;
                if let Some(core) = self.cores.get_mut(&dst) {
                    core.handle_datagram(self.now, from_addr, &data);
                }
            }
            for (name, core) in self.cores.iter_mut() {
                if !self.dead.contains(name) && core.poll_timeout().is_some_and(|t| t <= self.now) {
                    core.handle_timeout(self.now);
                }
            }
        }
        self.now = until;
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn live_names(&self, of: &str) -> Vec<String> {
        self.cores[of].live().keys().cloned().collect()
    }

    fn all_see_each_other(&self) -> bool {
        self.cores
            .keys()
            .filter(|n| !self.dead.contains(*n))
            .all(|n| {
                let live = self.live_names(n);
                self.cores
                    .keys()
                    .filter(|o| *o != n && !self.dead.contains(*o))
                    .all(|o| live.contains(o))
            })
    }

    /// When each observer saw `who` go down after `since`.
    fn downs(&self, who: &str, since: Instant) -> BTreeMap<String, (Duration, Departure)> {
        self.events
            .iter()
            .filter(|(t, _, _)| *t >= since)
            .filter_map(|(t, observer, ev)| match ev {
                MembershipEvent::Down(id, d) if id.name == who => {
                    Some((observer.clone(), (*t - since, *d)))
                }
                _ => None,
            })
            .collect()
    }
}

#[test]
fn speakers_find_each_other_from_seeds() {
    let mut net = Net::new(3, 1);
    net.run_for(Duration::from_millis(500));
    assert!(net.all_see_each_other(), "{:?}", net.cores);
    assert_eq!(net.live_names("n1"), ["n2", "n3"]);
    assert_eq!(
        net.cores["n1"].known().iter().collect::<Vec<_>>(),
        ["n2", "n3"]
    );
    let n2 = &net.cores["n1"].live()["n2"];
    assert_eq!(n2.nets, id(2, 1).nets, "networks travel with the identity");
    assert_eq!(net.cores["n1"].errors(), 0);
}

#[test]
fn a_crashed_speaker_is_detected_well_under_a_second() {
    let mut worst = Duration::ZERO;
    let mut all = Vec::new();
    for seed in 0..20 {
        let mut net = Net::new(3, seed);
        net.run_for(Duration::from_secs(2));
        assert!(net.all_see_each_other(), "seed {seed}");
        // Crash at a random phase of the probe cycle.
        net.run_for(Duration::from_millis(seed * 7));
        let crash = net.now;
        net.dead.insert("n2".into());
        net.run_for(Duration::from_secs(2));
        let downs = net.downs("n2", crash);
        assert_eq!(
            downs.keys().collect::<Vec<_>>(),
            ["n1", "n3"],
            "seed {seed}"
        );
        for (observer, (after, departure)) in &downs {
            assert!(!departure.graceful);
            assert!(
                *after < Duration::from_secs(1),
                "seed {seed}: {observer} took {after:?}"
            );
            let heard = departure.last_heard.expect("heard before");
            assert!(heard <= crash && departure.at - heard >= *after);
            worst = worst.max(*after);
            all.push(after.as_millis());
        }
        // Crashing is not leaving: n2 stays known for the split-brain rule.
        assert!(net.cores["n1"].known().contains("n2"));
        assert_eq!(net.live_names("n1"), ["n3"]);
    }
    all.sort_unstable();
    println!(
        "virtual detection times (ms), 3 speakers, 20 runs x 2 observers: {all:?}; worst {worst:?}"
    );
}

#[test]
fn a_graceful_leave_is_seen_at_once_and_forgotten_by_quorum() {
    let mut net = Net::new(3, 7);
    net.run_for(Duration::from_secs(1));
    let t = net.now;
    net.cores.get_mut("n3").expect("n3").leave(t);
    net.run_for(Duration::from_millis(20));
    net.dead.insert("n3".into());
    let downs = net.downs("n3", t);
    assert_eq!(downs.len(), 2);
    for (after, d) in downs.values() {
        assert!(d.graceful);
        assert!(*after <= Duration::from_millis(5), "{after:?}");
    }
    assert!(!net.cores["n1"].known().contains("n3"));
    // Nothing flaps afterwards.
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.live_names("n1"), ["n2"]);
    assert_eq!(net.downs("n3", t).len(), 2);
}

#[test]
fn a_restarted_speaker_replaces_its_old_self() {
    let mut net = Net::new(3, 3);
    net.run_for(Duration::from_secs(1));
    net.dead.insert("n2".into());
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.live_names("n1"), ["n3"]);
    let t = net.now;
    net.add(2, 2, 99); // new process: larger bump
    net.run_for(Duration::from_secs(2));
    assert!(net.all_see_each_other());
    assert_eq!(net.cores["n1"].live()["n2"].bump, 2);
    let ups = net
        .events
        .iter()
        .filter(|(at, who, ev)| {
            *at >= t && who == "n1" && matches!(ev, MembershipEvent::Up(id) if id.name == "n2")
        })
        .count();
    assert_eq!(ups, 1);
}

#[test]
fn a_restart_with_a_clock_gone_backwards_still_rejoins() {
    let mut net = Net::new(3, 4);
    net.run_for(Duration::from_secs(1));
    // n2 restarts once with a start time of 5 000 000 ms, then crashes.
    net.dead.insert("n2".into());
    net.run_for(Duration::from_secs(2));
    net.add(2, 5_000_000, 96);
    net.run_for(Duration::from_secs(1));
    assert!(net.all_see_each_other());
    net.dead.insert("n2".into());
    net.run_for(Duration::from_secs(2));
    // The others hold that identity as down; the next process starts with a
    // smaller bump (its clock went backwards), so it loses the conflict, is
    // told it is down, renews with a large jump and wins.
    net.add(2, 1000, 97);
    net.run_for(Duration::from_secs(1));
    assert!(
        net.all_see_each_other(),
        "rejoined despite the lower start time"
    );
    assert!(net.cores["n1"].live()["n2"].bump > 5_000_000);
}

#[test]
fn a_partition_is_seen_from_both_sides_and_heals() {
    let mut net = Net::new(3, 5);
    net.run_for(Duration::from_secs(1));
    for other in ["n1", "n2"] {
        net.cut.insert(("n3".into(), other.into()));
    }
    let t = net.now;
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.live_names("n3"), Vec::<String>::new());
    assert_eq!(net.live_names("n1"), ["n2"]);
    assert!(
        net.downs("n3", t)
            .values()
            .all(|(d, _)| *d < Duration::from_secs(1))
    );
    net.cut.clear();
    net.run_for(Duration::from_secs(5));
    assert!(net.all_see_each_other(), "healed: {:?}", net.cores);
}

#[test]
fn changed_networks_reach_the_peers() {
    let mut net = Net::new(2, 11);
    net.run_for(Duration::from_secs(1));
    let nets: Vec<IpNet> = vec![
        "0.0.0.0/0".parse().expect("net"),
        "::/0".parse().expect("net"),
    ];
    let now = net.now;
    net.cores
        .get_mut("n2")
        .expect("n2")
        .set_nets(now, nets.clone());
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.cores["n1"].live()["n2"].nets, nets);
    assert!(net.all_see_each_other());
}

#[test]
fn garbage_is_counted_not_fatal() {
    let mut core = MembershipCore::new(id(1, 1), MembershipTuning::default(), 1);
    let now = Instant::now();
    let from = addr(2);
    for data in [
        &[][..],
        &[0],
        &[1],
        &[1, 0xff, 0xff, 0xff],
        &[2, 0, 0],
        &[2, 0, 0, 0, 0, 0, 0, 0, 1, 0xff],
        &[9; 40],
    ] {
        core.handle_datagram(now, from, data);
    }
    let mut x: u64 = 12345;
    for len in 0..600 {
        let data: Vec<u8> = (0..len % 120)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        core.handle_datagram(now, from, &data);
    }
    assert!(core.errors() + core.refused().values().sum::<u64>() > 0);
    assert!(core.live().is_empty());
}

fn key(k: &str) -> GossipKeys {
    GossipKeys::new(vec![k.as_bytes().to_vec()])
}

/// The goodbye the unauthenticated gossip accepted from anyone: `2`, bump, name.
fn forged_goodbye(bump: u64, name: &str) -> Vec<u8> {
    let mut d = vec![TAG_GOODBYE];
    d.extend_from_slice(&bump.to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    d
}

/// Issue 20, defect 4: anything that reached UDP 7947 could say goodbye for a live node
/// and force a failover (two nodes answering one VIP). With a key, only a holder can.
#[test]
fn a_forged_goodbye_without_the_key_is_refused() {
    let mut net = Net::keyed(3, 11, key("cluster-secret"));
    net.run_for(Duration::from_secs(1));
    assert!(net.all_see_each_other());
    let bump = net.cores["n3"].me().bump;
    let now = net.now;
    // From n3's own address, even: the key is what counts.
    let core = net.cores.get_mut("n1").expect("n1");
    core.handle_datagram(now, addr(3), &forged_goodbye(bump, "n3"));
    // Signed with another key.
    let other = crate::wire::Sealer::new(&key("guess"));
    let body = &forged_goodbye(bump, "n3")[1..];
    core.handle_datagram(now, addr(3), &other.seal(0, TAG_GOODBYE, body));
    assert!(core.live().contains_key("n3"), "n3 still live");
    assert_eq!(core.refused().get(&Refused::Unsigned), Some(&1));
    assert_eq!(core.refused().get(&Refused::BadSignature), Some(&1));
    net.run_for(Duration::from_secs(1));
    assert!(net.all_see_each_other());
}

/// A speaker without the key cannot join a keyed cluster; with it, it can.
#[test]
fn a_speaker_without_the_key_never_becomes_a_member() {
    let mut net = Net::keyed(2, 12, key("k1"));
    net.keys = key("wrong");
    net.add(3, 1, 12);
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.live_names("n1"), ["n2"]);
    assert!(net.live_names("n3").is_empty());
    assert!(
        net.cores["n1"]
            .refused()
            .get(&Refused::BadSignature)
            .is_some()
    );
}

/// Only Nodes known from the API, sending from one of their addresses, are members; the
/// key alone is not enough (a pod on the host network of a node that holds it).
#[test]
fn only_nodes_known_from_the_api_gossip() {
    let mut net = Net::keyed(4, 13, key("k"));
    let allowed: Allowed = (1..=3)
        .map(|i| (format!("n{i}"), [addr(i).ip()].into()))
        .collect();
    let now = net.now;
    for n in ["n1", "n2", "n3"] {
        net.cores
            .get_mut(n)
            .expect("core")
            .set_allowed(now, Some(allowed.clone()));
    }
    net.run_for(Duration::from_secs(3));
    for n in ["n1", "n2", "n3"] {
        assert!(
            !net.live_names(n).contains(&"n4".to_string()),
            "{n} took n4"
        );
        assert_eq!(net.live_names(n).len(), 2, "{n}");
    }
    assert!(
        net.cores["n1"]
            .refused()
            .get(&Refused::UnknownSender)
            .is_some()
    );
    // n2 speaking for n3 from its own address is refused too.
    let bump = net.cores["n3"].me().bump;
    let sealer = crate::wire::Sealer::new(&key("k"));
    let body = &forged_goodbye(bump, "n3")[1..];
    let ms = net.cores["n1"].unix_ms(net.now);
    let now = net.now;
    let core = net.cores.get_mut("n1").expect("n1");
    core.handle_datagram(now, addr(2), &sealer.seal(ms, TAG_GOODBYE, body));
    assert!(core.live().contains_key("n3"));
    // A Node removed from the API leaves the membership.
    let fewer: Allowed = allowed.into_iter().filter(|(n, _)| n != "n3").collect();
    core.set_allowed(now, Some(fewer));
    assert!(!core.live().contains_key("n3"));
}

/// The release of make-before-break reaches every live member, signed.
#[test]
fn a_release_reaches_the_live_members() {
    let mut net = Net::keyed(3, 14, key("k"));
    net.run_for(Duration::from_secs(1));
    let t = net.now;
    let ip: std::net::IpAddr = "198.51.100.100".parse().expect("ip");
    net.cores.get_mut("n1").expect("n1").release(t, &[ip]);
    net.run_for(Duration::from_millis(10));
    let got: Vec<&String> = net
        .events
        .iter()
        .filter(|(at, _, _)| *at >= t)
        .filter_map(|(_, who, ev)| match ev {
            MembershipEvent::Released { from, ips } if from == "n1" && ips == &[ip] => Some(who),
            _ => None,
        })
        .collect();
    assert_eq!(got, ["n2", "n3"]);
}

/// A speaker whose networks change while it is cut off (its cable is cut: the carrier
/// goes and with it the subnet) must still find itself alone, so the split-brain rule
/// silences it; foca alone stops probing after an identity change until a member
/// acknowledges it. When the cut heals, it sees the others again.
#[test]
fn a_speaker_cut_off_while_its_networks_change_finds_itself_alone() {
    let mut net = Net::new(3, 15);
    net.run_for(Duration::from_secs(1));
    assert!(net.all_see_each_other());
    for other in ["n2", "n3"] {
        net.cut.insert(("n1".into(), other.into()));
    }
    let now = net.now;
    net.cores
        .get_mut("n1")
        .expect("n1")
        .set_nets(now, vec!["10.9.0.0/24".parse().expect("net")]);
    net.run_for(Duration::from_secs(2));
    assert!(
        net.live_names("n1").is_empty(),
        "{:?}",
        net.live_names("n1")
    );
    net.cut.clear();
    net.run_for(Duration::from_secs(3));
    assert!(net.all_see_each_other());
    assert_eq!(
        net.cores["n2"].live()["n1"].nets,
        vec!["10.9.0.0/24".parse::<IpNet>().expect("net")]
    );
}
