//! Which speakers are alive: SWIM gossip (the `foca` crate) over UDP, as a
//! sans-IO core. [`crate::gossip`] is the tokio driver around it.
//!
//! Every speaker runs one [`MembershipCore`]. Peers are found from outside:
//! the caller hands in seed addresses (node IPs and `l2.gossipPort`), the
//! core announces itself to those not yet seen, and SWIM spreads the rest.
//! A member that stops answering direct and indirect probes is suspected,
//! then declared down after `suspect_to_down_after`, unless it refutes. A
//! speaker that shuts down says goodbye first, so its IPs move at once.
//!
//! Datagrams carry one tag byte: `1` = a foca message, `2` = goodbye
//! (`bump` u64 BE + node name), which marks the departure as graceful: a
//! planned leave also removes the node from the known set of the
//! split-brain rule, where a crash does not; `3` = release (a node stopped
//! answering for some addresses, so their new owner may start: make before
//! break). With a gossip key every datagram is signed and timestamped
//! ([`crate::wire`]).
//!
//! Who may talk: once the caller hands in the Nodes ([`MembershipCore::set_allowed`]),
//! a datagram is accepted only from an address of a Node, and only when the
//! member it speaks for (the foca sender, the goodbye's or release's name) is
//! that Node; members that are no Node never become live. The membership is
//! capped at [`MAX_MEMBERS`] whatever the senders say.
//!
//! Timing (defaults of [`MembershipTuning`]): a probe every 150 ms, 50 ms to
//! answer before 3 indirect probes, 250 ms of suspicion. A dead member is
//! probed within one or two periods, fails its probe at the end of that
//! period and is declared down 250 ms later: about 0.4–0.6 s in all.

use foca::{
    Codec, Config, Foca, Identity, Notification, OwnedNotification, PeriodicParams, PostcardCodec,
    Timer,
};
use foca_rand::SeedableRng;
use foca_rand::rngs::SmallRng;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::{Duration, Instant};

use crate::wire::{self, GossipKeys, Refused, Sealer, TAG_FOCA, TAG_GOODBYE, TAG_RELEASE};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// The most members one speaker tracks: past it, datagrams from members not yet known
/// are refused (a cluster of Portway's size has a few hundred nodes).
pub const MAX_MEMBERS: usize = 5000;

const RENEW_JUMP: u64 = 1 << 20;

/// A speaker's identity in the gossip group.
///
/// foca keys members by [`Identity::addr`], here the node name, and keeps
/// the identity with the larger `bump` when two share a name: a restarted
/// speaker (larger bump: its start time) replaces its old self at once
/// instead of waiting for the old identity to be forgotten.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SpeakerId {
    /// Kubernetes node name: the name the election hashes.
    pub name: String,
    /// Where its gossip socket listens.
    pub addr: SocketAddr,
    /// Incarnation of the process; larger wins.
    pub bump: u64,
    /// Networks this speaker can announce into (its interface subnets, or
    /// 0.0.0.0/0 and ::/0 when `l2.interfaces` lists one of its
    /// interfaces); other speakers need them for interface eligibility.
    pub nets: Vec<IpNet>,
}

impl Identity for SpeakerId {
    type Addr = String;

    /// Called when the cluster declared this identity down (or holds a
    /// newer one with our name, e.g. after a restart with a clock that went
    /// backwards). The jump of 2^20 (about 17 minutes of start-time
    /// milliseconds) beats any such stale identity within a round trip or
    /// two, instead of one millisecond per round trip.
    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(RENEW_JUMP),
            ..self.clone()
        })
    }

    fn addr(&self) -> String {
        self.name.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

impl SpeakerId {
    /// A stand-in for a seed: foca accepts an announce addressed to any
    /// identity with the receiver's name, whatever its bump.
    fn seed(name: &str, addr: SocketAddr) -> Self {
        Self {
            name: name.to_string(),
            addr,
            bump: 0,
            nets: Vec::new(),
        }
    }
}

/// Failure-detector timing. The defaults detect a dead speaker in about half
/// a second on a LAN; raise them on lossy or overloaded networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipTuning {
    /// How often each speaker probes one other member.
    pub probe_period: Duration,
    /// How long to wait for a direct ack before asking others to probe.
    pub probe_rtt: Duration,
    /// Members asked to probe indirectly (covers one lossy path).
    pub indirect_probes: usize,
    /// How long a suspected member has to refute before it is down.
    pub suspect_to_down_after: Duration,
    /// How often to re-announce to seeds not in the live set, which heals
    /// partitions and finds speakers that started later.
    pub rejoin_interval: Duration,
    /// How often updates are pushed to a few random members.
    pub gossip_interval: Duration,
}

impl Default for MembershipTuning {
    fn default() -> Self {
        Self {
            probe_period: Duration::from_millis(150),
            probe_rtt: Duration::from_millis(50),
            indirect_probes: 3,
            suspect_to_down_after: Duration::from_millis(250),
            rejoin_interval: Duration::from_secs(1),
            gossip_interval: Duration::from_millis(100),
        }
    }
}

impl MembershipTuning {
    fn foca_config(&self) -> Config {
        let one = NonZeroUsize::MIN;
        Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: NonZeroUsize::new(self.indirect_probes).unwrap_or(one),
            max_transmissions: NonZeroU8::new(10).unwrap_or(NonZeroU8::MIN),
            suspect_to_down_after: self.suspect_to_down_after,
            // Down identities are remembered for a day so a stale packet from
            // one cannot resurrect it; restarts use a larger bump anyway.
            remove_down_after: Some(Duration::from_secs(24 * 3600)),
            max_packet_size: NonZeroUsize::new(1400).unwrap_or(one),
            notify_down_members: true,
            periodic_announce: Some(PeriodicParams {
                frequency: Duration::from_secs(5),
                num_members: one,
            }),
            periodic_announce_to_down_members: Some(PeriodicParams {
                frequency: self.rejoin_interval,
                num_members: NonZeroUsize::new(2).unwrap_or(one),
            }),
            periodic_gossip: Some(PeriodicParams {
                frequency: self.gossip_interval,
                num_members: NonZeroUsize::new(3).unwrap_or(one),
            }),
        }
    }
}

/// How a member left the live set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Departure {
    /// When this speaker learned it.
    pub at: Instant,
    /// When this speaker last received anything from it; `at - last_heard`
    /// bounds the detection time from above.
    pub last_heard: Option<Instant>,
    /// It said goodbye (planned shutdown) rather than fell silent.
    pub graceful: bool,
}

/// A change of the live set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member became live (or restarted, or changed its networks).
    Up(SpeakerId),
    /// A member left the live set.
    Down(SpeakerId, Departure),
    /// A live member stopped answering for these addresses.
    Released {
        /// Its node name.
        from: String,
        /// The addresses.
        ips: Vec<IpAddr>,
    },
}

/// Node name -> the addresses its speaker may send from (the Node's addresses).
pub type Allowed = BTreeMap<String, BTreeSet<IpAddr>>;

/// The sans-IO membership state machine.
pub struct MembershipCore {
    foca: Foca<SpeakerId, PostcardCodec, SmallRng, foca::NoCustomBroadcast>,
    tuning: MembershipTuning,
    timers: BTreeMap<(Instant, u64), Timer<SpeakerId>>,
    timer_seq: u64,
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<MembershipEvent>,
    live: BTreeMap<String, SpeakerId>,
    known: BTreeSet<String>,
    departed: BTreeMap<String, Departure>,
    last_heard: BTreeMap<String, Instant>,
    seeds: Vec<(String, SocketAddr)>,
    next_rejoin: Option<Instant>,
    errors: u64,
    refused: BTreeMap<Refused, u64>,
    left: bool,
    sealer: Sealer,
    allowed: Option<Allowed>,
    /// Since our identity changed (new networks) and no member has acknowledged it yet.
    /// foca stops probing until one does, so a speaker cut off right then would keep
    /// its stale view forever; past [`MembershipCore::isolation_after`] it drops every
    /// member instead, and takes foca's members back when one answers.
    disconnected_since: Option<Instant>,
    /// Wall clock at `clock_base.0`: timestamps of signed datagrams are derived from the
    /// monotonic `now` handed in, so a virtual clock drives them in tests.
    clock_base: (Instant, u64),
}

struct Rt<'a> {
    now: Instant,
    unix_ms: u64,
    sealer: &'a Sealer,
    timers: &'a mut BTreeMap<(Instant, u64), Timer<SpeakerId>>,
    timer_seq: &'a mut u64,
    outbox: &'a mut VecDeque<(SocketAddr, Vec<u8>)>,
    notes: &'a mut Vec<OwnedNotification<SpeakerId>>,
}

impl foca::Runtime<SpeakerId> for Rt<'_> {
    fn notify(&mut self, notification: Notification<'_, SpeakerId>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: SpeakerId, data: &[u8]) {
        let datagram = self.sealer.seal(self.unix_ms, TAG_FOCA, data);
        self.outbox.push_back((to.addr, datagram));
    }

    fn submit_after(&mut self, event: Timer<SpeakerId>, after: Duration) {
        *self.timer_seq += 1;
        self.timers
            .insert((self.now + after, *self.timer_seq), event);
    }
}

impl MembershipCore {
    /// A core for `me`; `seed` feeds foca's random member choice (any value
    /// works; tests pass fixed ones for reproducible runs).
    pub fn new(me: SpeakerId, tuning: MembershipTuning, seed: u64) -> Self {
        let foca = Foca::new(
            me,
            tuning.foca_config(),
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
        );
        Self {
            foca,
            tuning,
            timers: BTreeMap::new(),
            timer_seq: 0,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            live: BTreeMap::new(),
            known: BTreeSet::new(),
            departed: BTreeMap::new(),
            last_heard: BTreeMap::new(),
            seeds: Vec::new(),
            next_rejoin: None,
            errors: 0,
            refused: BTreeMap::new(),
            left: false,
            sealer: Sealer::new(&GossipKeys::default()),
            allowed: None,
            disconnected_since: None,
            clock_base: (
                Instant::now(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            ),
        }
    }

    /// Sets the gossip keys (first signs, all verify); empty: unsigned datagrams.
    pub fn set_keys(&mut self, keys: &GossipKeys) {
        self.sealer = Sealer::new(keys);
    }

    /// Restricts the membership to these Nodes and their addresses (from the API);
    /// `None` accepts anyone who holds the key. Live members that are no longer allowed
    /// are dropped as if they had crashed.
    pub fn set_allowed(&mut self, now: Instant, allowed: Option<Allowed>) {
        self.allowed = allowed;
        let gone: Vec<String> = self
            .live
            .keys()
            .filter(|n| !self.may_be_member(n))
            .cloned()
            .collect();
        for name in gone {
            self.depart(now, &name, false);
        }
    }

    fn may_be_member(&self, name: &str) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.contains_key(name))
    }

    /// Whether `name` may speak from `from`.
    fn sender_ok(&self, name: &str, from: IpAddr) -> bool {
        let from = match from {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(from),
            v4 => v4,
        };
        match &self.allowed {
            None => true,
            Some(a) => a.get(name).is_some_and(|addrs| addrs.contains(&from)),
        }
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        let (base, ms) = self.clock_base;
        match now.checked_duration_since(base) {
            Some(d) => ms.saturating_add(d.as_millis() as u64),
            None => ms.saturating_sub(base.duration_since(now).as_millis() as u64),
        }
    }

    fn refuse(&mut self, why: Refused) {
        *self.refused.entry(why).or_default() += 1;
        tracing::debug!(reason = why.as_str(), "gossip datagram refused");
    }

    /// This speaker's current identity.
    pub fn me(&self) -> &SpeakerId {
        self.foca.identity()
    }

    fn run(
        &mut self,
        now: Instant,
        f: impl FnOnce(
            &mut Foca<SpeakerId, PostcardCodec, SmallRng, foca::NoCustomBroadcast>,
            &mut Rt<'_>,
        ) -> Result<(), foca::Error>,
    ) {
        let mut notes = Vec::new();
        let mut rt = Rt {
            now,
            unix_ms: self.unix_ms(now),
            sealer: &self.sealer,
            timers: &mut self.timers,
            timer_seq: &mut self.timer_seq,
            outbox: &mut self.outbox,
            notes: &mut notes,
        };
        if let Err(e) = f(&mut self.foca, &mut rt) {
            self.errors += 1;
            tracing::debug!(error = %e, "gossip message or timer rejected");
        }
        for note in notes {
            self.apply_note(now, note);
        }
    }

    fn apply_note(&mut self, now: Instant, note: OwnedNotification<SpeakerId>) {
        match note {
            OwnedNotification::Active if self.disconnected_since.take().is_some() => {
                self.resync_live(now);
            }
            OwnedNotification::MemberUp(id) | OwnedNotification::Rename(_, id)
                if self.foca.iter_members().any(|m| m.id() == &id)
                    && self.may_be_member(&id.name) =>
            {
                self.departed.remove(&id.name);
                self.known.insert(id.name.clone());
                self.last_heard.insert(id.name.clone(), now);
                if self.live.get(&id.name) != Some(&id) {
                    self.live.insert(id.name.clone(), id.clone());
                    self.events.push_back(MembershipEvent::Up(id));
                }
            }
            OwnedNotification::MemberDown(id) if self.live.get(&id.name) == Some(&id) => {
                self.depart(now, &id.name, false);
            }
            _ => {}
        }
    }

    /// Makes the live view foca's active members again (after an isolation).
    fn resync_live(&mut self, now: Instant) {
        let active: Vec<SpeakerId> = self
            .foca
            .iter_members()
            .map(|m| m.id().clone())
            .filter(|id| self.may_be_member(&id.name))
            .collect();
        let names: BTreeSet<String> = active.iter().map(|id| id.name.clone()).collect();
        let gone: Vec<String> = self
            .live
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.depart(now, &name, false);
        }
        for id in active {
            if self.live.get(&id.name) != Some(&id) {
                self.departed.remove(&id.name);
                self.known.insert(id.name.clone());
                self.last_heard.insert(id.name.clone(), now);
                self.live.insert(id.name.clone(), id.clone());
                self.events.push_back(MembershipEvent::Up(id));
            }
        }
    }

    /// How long a changed identity may go unacknowledged before this speaker counts itself
    /// cut off: as long as a probe and the suspicion of a dead member take.
    fn isolation_after(&self) -> Duration {
        self.tuning.probe_period * 2 + self.tuning.suspect_to_down_after
    }

    fn depart(&mut self, now: Instant, name: &str, graceful: bool) {
        let Some(id) = self.live.remove(name) else {
            return;
        };
        let departure = Departure {
            at: now,
            last_heard: self.last_heard.get(name).copied(),
            graceful,
        };
        if graceful {
            self.known.remove(name);
        }
        self.departed.insert(name.to_string(), departure);
        self.events.push_back(MembershipEvent::Down(id, departure));
    }

    /// Sets the seeds, (node name, node IP and gossip port) from the API's
    /// Node list (this node may be among them), and announces to those not
    /// live now. Names are needed because foca only accepts an announce
    /// addressed to the receiver's name.
    pub fn join(&mut self, now: Instant, seeds: Vec<(String, SocketAddr)>) {
        self.seeds = seeds;
        self.rejoin(now);
    }

    fn rejoin(&mut self, now: Instant) {
        self.next_rejoin = Some(now + self.tuning.rejoin_interval);
        if self.left {
            return;
        }
        let me = self.me().name.clone();
        let targets: Vec<SpeakerId> = self
            .seeds
            .iter()
            .filter(|(name, _)| *name != me && !self.live.contains_key(name))
            .map(|(name, addr)| SpeakerId::seed(name, *addr))
            .collect();
        for seed in targets {
            self.run(now, |foca, rt| foca.announce(seed, rt));
        }
    }

    /// Changes the networks this speaker publishes (an interface came or
    /// went); peers see an [`MembershipEvent::Up`] with the new identity.
    pub fn set_nets(&mut self, now: Instant, nets: Vec<IpNet>) {
        if self.me().nets == nets || self.left {
            return;
        }
        let mut id = self.me().clone();
        id.bump = id.bump.wrapping_add(1);
        id.nets = nets;
        self.run(now, |foca, rt| foca.change_identity(id, rt));
        // Ask every live member directly, so a reachable one acknowledges at once.
        self.disconnected_since = Some(now);
        let members: Vec<SpeakerId> = self.live.values().cloned().collect();
        for m in members {
            self.run(now, |foca, rt| foca.announce(m, rt));
        }
    }

    /// Handles one datagram received from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let unix_ms = self.unix_ms(now);
        let (tag, body) = match self.sealer.open(unix_ms, data) {
            Ok(v) => v,
            Err(why) => return self.refuse(why),
        };
        match tag {
            TAG_FOCA => {
                let header = match Codec::<SpeakerId>::decode_header(&mut PostcardCodec, body) {
                    Ok(h) => h,
                    Err(_) => return self.refuse(Refused::Malformed),
                };
                if !self.sender_ok(&header.src.name, from.ip()) {
                    return self.refuse(Refused::UnknownSender);
                }
                if !self.live.contains_key(&header.src.name)
                    && self.foca.num_members() >= MAX_MEMBERS
                {
                    return self.refuse(Refused::Full);
                }
                if self.live.get(&header.src.name) == Some(&header.src) {
                    self.last_heard.insert(header.src.name.clone(), now);
                }
                self.run(now, |foca, rt| foca.handle_data(body, rt));
            }
            TAG_GOODBYE if body.len() > 8 => {
                let (bump, name) = body.split_at(8);
                let mut b = [0u8; 8];
                b.copy_from_slice(bump);
                let bump = u64::from_be_bytes(b);
                let Ok(name) = std::str::from_utf8(name) else {
                    return self.refuse(Refused::Malformed);
                };
                if !self.sender_ok(name, from.ip()) {
                    return self.refuse(Refused::UnknownSender);
                }
                if self.live.get(name).is_some_and(|m| m.bump == bump) {
                    self.depart(now, name, true);
                }
            }
            TAG_RELEASE => {
                let Some((name, ips)) = wire::parse_release(body) else {
                    return self.refuse(Refused::Malformed);
                };
                if !self.sender_ok(&name, from.ip()) {
                    return self.refuse(Refused::UnknownSender);
                }
                if self.live.contains_key(&name) {
                    self.events
                        .push_back(MembershipEvent::Released { from: name, ips });
                }
            }
            _ => self.refuse(Refused::Malformed),
        }
    }

    /// Tells every live member that this speaker stopped answering for `ips`, so the new
    /// owner announces at once instead of waiting out its bound (make before break).
    pub fn release(&mut self, now: Instant, ips: &[IpAddr]) {
        if self.left || ips.is_empty() {
            return;
        }
        let unix_ms = self.unix_ms(now);
        let me = self.me().name.clone();
        for chunk in ips.chunks(wire::RELEASE_CHUNK) {
            let datagram = self
                .sealer
                .seal(unix_ms, TAG_RELEASE, &wire::release_body(&me, chunk));
            for member in self.live.values() {
                self.outbox.push_back((member.addr, datagram.clone()));
            }
        }
    }

    /// Runs the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            self.run(now, |foca, rt| foca.handle_timer(timer, rt));
        }
        if self.next_rejoin.is_some_and(|t| t <= now) {
            self.rejoin(now);
        }
        if let Some(since) = self.disconnected_since
            && now.saturating_duration_since(since) >= self.isolation_after()
            && !self.live.is_empty()
        {
            let names: Vec<String> = self.live.keys().cloned().collect();
            for name in names {
                self.depart(now, &name, false);
            }
        }
    }

    /// Leaves the group: goodbye to every live member, then foca's own leave
    /// (which gossips our down state). Send what [`Self::poll_transmit`]
    /// yields before closing the socket.
    pub fn leave(&mut self, now: Instant) {
        if self.left {
            return;
        }
        let me = self.me().clone();
        let mut body = me.bump.to_be_bytes().to_vec();
        body.extend_from_slice(me.name.as_bytes());
        let goodbye = self.sealer.seal(self.unix_ms(now), TAG_GOODBYE, &body);
        for member in self.live.values() {
            self.outbox.push_back((member.addr, goodbye.clone()));
        }
        self.run(now, |foca, rt| foca.leave_cluster(rt));
        self.left = true;
        self.next_rejoin = None;
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.outbox.pop_front()
    }

    /// The next change of the live set.
    pub fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.keys().next().map(|(t, _)| *t);
        let isolation = self
            .disconnected_since
            .filter(|_| !self.live.is_empty())
            .map(|t| t + self.isolation_after());
        [timer, self.next_rejoin, isolation]
            .into_iter()
            .flatten()
            .min()
    }

    /// Live members other than this speaker, by name.
    pub fn live(&self) -> &BTreeMap<String, SpeakerId> {
        &self.live
    }

    /// Speakers seen alive at some point and not departed gracefully
    /// (this one excluded): the "known" set of the split-brain rule.
    pub fn known(&self) -> &BTreeSet<String> {
        &self.known
    }

    /// Members that left the live set, and how.
    pub fn departed(&self) -> &BTreeMap<String, Departure> {
        &self.departed
    }

    /// Forgets a speaker for the split-brain rule (its Node was deleted).
    pub fn forget(&mut self, name: &str) {
        self.known.remove(name);
    }

    /// Datagrams or timers foca refused (malformed, from a down member…).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Datagrams refused before foca saw them, by reason (unsigned, bad signature,
    /// unknown sender…): a non-zero count means something on the network speaks the
    /// gossip without being a speaker of this cluster, or a node's key is wrong.
    pub fn refused(&self) -> &BTreeMap<Refused, u64> {
        &self.refused
    }
}

impl std::fmt::Debug for MembershipCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipCore")
            .field("me", self.me())
            .field("live", &self.live.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
