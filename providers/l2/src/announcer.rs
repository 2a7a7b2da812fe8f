//! The tokio driver of the ARP/NDP responder: one task owns the packet
//! sockets and loops over handle / poll / sleep.
//!
//! ```text
//!   set_owned({ip -> choice}) ──cmd──┐
//!   reader task per interface ─frame─┼─> loop: core.handle_* ─> core.poll_transmit ─> socket.send
//!   rescan every 10 s / deadline ────┘
//! ```
//!
//! On every ownership change (and every rescan) the driver lists the
//! interfaces, places each owned IP on its interfaces, opens packet sockets
//! where needed and closes the others, and joins the IPv6 solicited-node
//! groups of the owned IPv6 VIPs through an ordinary UDP socket: that adds
//! the multicast MAC to the NIC's filter *and* sends MLD reports, so
//! snooping switches forward the solicitations. Leaving is automatic when
//! the socket closes, so a crash leaves nothing behind. Commands are served
//! before received frames, so a request for an IP that was just given away
//! is never answered.

use crate::frame::Mac;
use crate::iface::{self, InterfaceChoice, LocalInterface};
use crate::responder::{AnnounceTiming, ArpNdpResponder, InterfaceStats};
use crate::sys::PacketSocket;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Settings of the announcer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnouncerConfig {
    /// `l2.interfaces`: empty means "interfaces whose subnet holds the IP".
    pub interfaces: Vec<String>,
    /// Gratuitous announcement timing (`refresh` is `l2.garpRefresh`).
    pub timing: AnnounceTiming,
    /// How often interfaces are listed again (addresses, MACs, links).
    pub rescan: Duration,
}

impl Default for AnnouncerConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            timing: AnnounceTiming::default(),
            rescan: Duration::from_secs(10),
        }
    }
}

/// What the announcer is doing, for metrics and status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnouncerStatus {
    /// How many IPs are answered for now (the addresses themselves are the speaker's
    /// `announcing`, less `unplaced` and `conflicts`: a copy of them here cost a pass over
    /// every address on every change).
    pub answering: usize,
    /// IPs this node should announce but cannot: no usable interface, or its
    /// socket failed (MetalLB's `announceFailed`).
    pub unplaced: BTreeSet<IpAddr>,
    /// Counters per interface.
    pub interfaces: BTreeMap<String, InterfaceStats>,
    /// Socket, send and scan errors so far.
    pub errors: u64,
    /// The latest of those errors.
    pub last_error: Option<String>,
    /// Owned addresses another host uses (quarantined: neither answered nor announced,
    /// see [`crate::claim`]), with that host's MAC and the interface it was seen on.
    pub conflicts: BTreeMap<IpAddr, ConflictSeen>,
    /// Conflicts found so far (each counted when it starts).
    pub conflicts_total: u64,
}

/// Another host seen using an owned address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictSeen {
    /// Its MAC (ARP sender or advertised link-layer address).
    pub mac: Mac,
    /// The interface of this node it was seen on.
    pub iface: String,
}

/// A MAC as `02:00:00:00:00:0a`, for logs and events.
pub fn mac_text(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A change to the IPs answered for, naming only what changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedDelta {
    /// IPs to answer for from now on, or whose interface choice changed.
    pub set: BTreeMap<IpAddr, InterfaceChoice>,
    /// IPs no longer to answer for.
    pub remove: BTreeSet<IpAddr>,
    /// Of the new IPs in `set`, those to probe first (see [`Announcer::set_owned_probing`]).
    pub probe: BTreeSet<IpAddr>,
}

impl OwnedDelta {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

enum Cmd {
    SetOwned(
        BTreeMap<IpAddr, InterfaceChoice>,
        BTreeSet<IpAddr>,
        oneshot::Sender<()>,
    ),
    Update(OwnedDelta, oneshot::Sender<()>),
    Rescan(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the announcer task. Dropping it stops the task.
#[derive(Debug)]
pub struct Announcer {
    cmd: mpsc::UnboundedSender<Cmd>,
    status: watch::Receiver<AnnouncerStatus>,
    task: JoinHandle<()>,
}

impl Announcer {
    /// Starts the task (needs CAP_NET_RAW once an IP is owned; failures
    /// show up in [`AnnouncerStatus`], never as a crash).
    pub fn start(config: AnnouncerConfig) -> Self {
        let (cmd, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(AnnouncerStatus::default());
        let task = tokio::spawn(Driver::new(config, status_tx).run(rx));
        Self { cmd, status, task }
    }

    /// Sets the IPs to answer for. Returns once the change is in effect:
    /// removed IPs are no longer answered and new ones have had their first
    /// gratuitous announcement sent.
    pub async fn set_owned(&self, owned: BTreeMap<IpAddr, InterfaceChoice>) {
        self.set_owned_probing(owned, BTreeSet::new()).await;
    }

    /// As [`Self::set_owned`]; the new addresses in `probe` are probed first (RFC 5227 /
    /// DAD) and answered only if nobody else holds them: addresses nobody in the cluster
    /// announced before, which a host outside it may already use.
    pub async fn set_owned_probing(
        &self,
        owned: BTreeMap<IpAddr, InterfaceChoice>,
        probe: BTreeSet<IpAddr>,
    ) {
        crate::actor::ask(&self.cmd, |tx| Cmd::SetOwned(owned, probe, tx)).await;
    }

    /// Changes only the IPs `delta` names; returns once in effect, as
    /// [`Self::set_owned`]. They are placed on the interfaces as last listed (a change of
    /// the interfaces themselves is seen by the periodic and netlink-triggered rescans),
    /// so one address costs its own placement, not a pass over every address.
    pub async fn update(&self, delta: OwnedDelta) {
        if delta.is_empty() {
            return;
        }
        crate::actor::ask(&self.cmd, |tx| Cmd::Update(delta, tx)).await;
    }

    /// Lists the interfaces again and places every address anew, now (a link or an
    /// address changed); returns once done.
    pub async fn rescan(&self) {
        crate::actor::ask(&self.cmd, Cmd::Rescan).await;
    }

    /// A live view of the announcer's status.
    pub fn status(&self) -> watch::Receiver<AnnouncerStatus> {
        self.status.clone()
    }

    /// Stops answering and closes every socket.
    pub async fn shutdown(self) {
        crate::actor::stop(&self.cmd, self.task, Cmd::Shutdown).await;
    }
}

struct OpenSocket {
    index: u32,
    sock: Arc<AsyncFd<PacketSocket>>,
    reader: JoinHandle<()>,
}

struct Driver {
    config: AnnouncerConfig,
    core: ArpNdpResponder,
    desired: BTreeMap<IpAddr, InterfaceChoice>,
    /// The interfaces as last listed (by [`Driver::reconcile`]).
    ifaces: Vec<LocalInterface>,
    sockets: BTreeMap<String, OpenSocket>,
    frames_tx: mpsc::Sender<(String, Vec<u8>)>,
    frames_rx: mpsc::Receiver<(String, Vec<u8>)>,
    groups: BTreeSet<(Ipv6Addr, u32)>,
    mcast: Option<UdpSocket>,
    status_tx: watch::Sender<AnnouncerStatus>,
    status: AnnouncerStatus,
    /// What is answered changed since the status was last published.
    dirty: bool,
    published: Instant,
}

/// How often the counters alone are published.
const STATS_EVERY: Duration = Duration::from_secs(1);

impl Driver {
    fn new(config: AnnouncerConfig, status_tx: watch::Sender<AnnouncerStatus>) -> Self {
        let (frames_tx, frames_rx) = mpsc::channel(1024);
        Self {
            core: ArpNdpResponder::new(config.timing),
            config,
            desired: BTreeMap::new(),
            ifaces: Vec::new(),
            sockets: BTreeMap::new(),
            frames_tx,
            frames_rx,
            groups: BTreeSet::new(),
            mcast: None,
            status_tx,
            status: AnnouncerStatus::default(),
            dirty: true,
            published: Instant::now(),
        }
    }

    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut rescan = tokio::time::interval(self.config.rescan);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.flush();
            let deadline = self.core.poll_timeout().map(Instant::from_std);
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::SetOwned(owned, probe, done)) => {
                        self.desired = owned;
                        self.core.probe_before_announcing(probe);
                        self.reconcile();
                        self.flush();
                        let _ = done.send(());
                    }
                    Some(Cmd::Update(delta, done)) => {
                        self.update(delta);
                        self.flush();
                        let _ = done.send(());
                    }
                    Some(Cmd::Rescan(done)) => {
                        self.reconcile();
                        self.flush();
                        let _ = done.send(());
                    }
                    Some(Cmd::Shutdown(done)) => {
                        self.close_all();
                        let _ = done.send(());
                        return;
                    }
                    None => break,
                },
                Some((iface, frame)) = self.frames_rx.recv() => {
                    self.core.handle_frame(std::time::Instant::now(), &iface, &frame);
                }
                _ = sleep_until(deadline) => {
                    self.core.handle_timeout(std::time::Instant::now());
                }
                _ = rescan.tick() => self.reconcile(),
            }
        }
        self.close_all();
    }

    fn error(&mut self, what: String) {
        tracing::warn!(error = %what, "l2 announcer");
        self.status.errors += 1;
        self.status.last_error = Some(what);
    }

    /// Places the desired IPs on interfaces and brings sockets, multicast
    /// groups and the core in line; sends due announcements at once.
    fn reconcile(&mut self) {
        self.dirty = true;
        let now = std::time::Instant::now();
        let ifaces = match iface::scan() {
            Ok(i) => i,
            Err(e) => {
                self.error(format!("listing interfaces: {e}"));
                return;
            }
        };
        let mut placement: BTreeMap<IpAddr, BTreeSet<String>> = self
            .desired
            .iter()
            .map(|(ip, choice)| {
                (
                    *ip,
                    iface::interfaces_for(*ip, choice, &self.config.interfaces, &ifaces),
                )
            })
            .collect();
        let needed: BTreeMap<String, &LocalInterface> = placement
            .values()
            .flatten()
            .filter_map(|name| {
                ifaces
                    .iter()
                    .find(|i| &i.sys.name == name)
                    .map(|i| (name.clone(), i))
            })
            .collect();
        let stale: Vec<String> = self
            .sockets
            .iter()
            .filter(|(name, s)| {
                needed
                    .get(name.as_str())
                    .is_none_or(|i| i.sys.index != s.index)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(s) = self.sockets.remove(&name) {
                s.reader.abort();
            }
        }
        let mut failed = BTreeSet::new();
        for (name, local) in needed.iter() {
            if self.sockets.contains_key(name) {
                continue;
            }
            match PacketSocket::open_async(local.sys.index).map(Arc::new) {
                Ok(sock) => {
                    let reader = tokio::spawn(read_loop(
                        name.to_string(),
                        sock.clone(),
                        self.frames_tx.clone(),
                    ));
                    self.sockets.insert(
                        name.to_string(),
                        OpenSocket {
                            index: local.sys.index,
                            sock,
                            reader,
                        },
                    );
                }
                Err(e) => {
                    failed.insert(name.to_string());
                    self.error(format!("opening a packet socket on {name}: {e}"));
                }
            }
        }
        for ifs in placement.values_mut() {
            ifs.retain(|i| !failed.contains(i));
        }
        self.status.unplaced = placement
            .iter()
            .filter(|(_, i)| i.is_empty())
            .map(|(ip, _)| *ip)
            .collect();
        placement.retain(|_, i| !i.is_empty());
        let infos = needed.values().filter_map(|i| i.info()).collect();
        self.core.set_interfaces(now, infos);
        self.core.set_owned(now, placement);
        self.sync_groups(&ifaces);
        self.core.handle_timeout(now);
        self.ifaces = ifaces;
    }

    /// Applies a delta on the interfaces as last listed; an address that needs an
    /// interface with no socket open yet, or finds none (the listing may predate a link
    /// coming back), or any before the first listing, takes the whole path,
    /// [`Self::reconcile`], which lists the interfaces and opens sockets.
    fn update(&mut self, delta: OwnedDelta) {
        let OwnedDelta { set, remove, probe } = delta;
        for ip in &remove {
            self.desired.remove(ip);
        }
        let mut placed = BTreeMap::new();
        let mut full = self.ifaces.is_empty();
        for (ip, choice) in &set {
            let ifs = iface::interfaces_for(*ip, choice, &self.config.interfaces, &self.ifaces);
            full |= ifs.is_empty() || ifs.iter().any(|i| !self.sockets.contains_key(i));
            placed.insert(*ip, ifs);
        }
        let v6 = set.keys().chain(&remove).any(IpAddr::is_ipv6);
        self.desired.extend(set);
        self.core.probe_before_announcing(probe);
        if full {
            return self.reconcile();
        }
        self.dirty = true;
        let now = std::time::Instant::now();
        for ip in &remove {
            self.status.unplaced.remove(ip);
        }
        for (ip, ifs) in &placed {
            match ifs.is_empty() {
                true => self.status.unplaced.insert(*ip),
                false => self.status.unplaced.remove(ip),
            };
        }
        placed.retain(|_, ifs| !ifs.is_empty());
        self.core.update_owned(now, placed, &remove);
        if v6 {
            let ifaces = std::mem::take(&mut self.ifaces);
            self.sync_groups(&ifaces);
            self.ifaces = ifaces;
        }
        self.core.handle_timeout(now);
    }

    /// Joins the solicited-node groups of owned IPv6 VIPs, leaves the rest.
    fn sync_groups(&mut self, ifaces: &[LocalInterface]) {
        let want: BTreeSet<(Ipv6Addr, u32)> = self
            .core
            .owned()
            .iter()
            .filter_map(|(ip, ifs)| match ip {
                IpAddr::V6(v6) => Some((crate::frame::solicited_node_group(*v6), ifs)),
                IpAddr::V4(_) => None,
            })
            .flat_map(|(group, ifs)| {
                ifs.iter()
                    .filter_map(|name| ifaces.iter().find(|i| &i.sys.name == name))
                    .map(move |i| (group, i.sys.index))
            })
            .collect();
        if want == self.groups {
            return;
        }
        if self.mcast.is_none() {
            match UdpSocket::bind("[::]:0") {
                Ok(s) => self.mcast = Some(s),
                Err(e) => {
                    self.error(format!("IPv6 socket for solicited-node groups: {e}"));
                    return;
                }
            }
        }
        let Some(sock) = self.mcast.as_ref() else {
            return;
        };
        let mut errors = Vec::new();
        for (group, index) in self.groups.difference(&want) {
            // The interface may be gone, which left the group already.
            let _ = sock.leave_multicast_v6(group, *index);
        }
        let mut joined = BTreeSet::new();
        for (group, index) in &want {
            if self.groups.contains(&(*group, *index)) {
                joined.insert((*group, *index));
                continue;
            }
            match sock.join_multicast_v6(group, *index) {
                Ok(()) => {
                    joined.insert((*group, *index));
                }
                Err(e) => errors.push(format!("joining {group} on ifindex {index}: {e}")),
            }
        }
        self.groups = joined;
        for e in errors {
            self.error(e);
        }
    }

    /// Sends what the core queued and publishes the status if it changed.
    ///
    /// The status is published when what is answered changed ([`Self::dirty`]), after a
    /// send error, or at most every [`STATS_EVERY`] for the counters alone: a takeover of a
    /// thousand addresses wakes this loop for every burst round, and copying the whole
    /// status on every wake made the cost grow with the square of the addresses.
    fn flush(&mut self) {
        let mut failed: BTreeMap<String, (u64, String)> = BTreeMap::new();
        while let Some(t) = self.core.poll_transmit() {
            let Some(s) = self.sockets.get(&t.iface) else {
                continue;
            };
            if let Err(e) = s.sock.get_ref().send(&t.frame) {
                let entry = failed.entry(t.iface.clone()).or_insert((0, e.to_string()));
                entry.0 += 1;
            }
        }
        let any_error = !failed.is_empty();
        for (iface, (n, e)) in failed {
            self.error(format!("sending {n} frame(s) on {iface}: {e}"));
        }
        while let Some((ip, c)) = self.core.poll_conflict() {
            tracing::warn!(%ip, mac = %mac_text(&c.mac), iface = %c.iface, "l2 address conflict: another host uses this address; quarantined (not announced)");
            self.status.conflicts_total += 1;
            self.dirty = true;
        }
        // Usually empty (no allocation); compared to see conflicts lift.
        let conflicts: BTreeMap<IpAddr, ConflictSeen> = self
            .core
            .conflicts()
            .iter()
            .map(|(ip, c)| {
                (
                    *ip,
                    ConflictSeen {
                        mac: c.mac,
                        iface: c.iface.clone(),
                    },
                )
            })
            .collect();
        if conflicts != self.status.conflicts {
            self.status.conflicts = conflicts;
            self.dirty = true;
        }
        if !self.dirty && !any_error && self.published.elapsed() < STATS_EVERY {
            return;
        }
        self.dirty = false;
        self.published = Instant::now();
        self.status.answering = self.core.owned().len();
        self.status.interfaces = self.core.stats().clone();
        let status = self.status.clone();
        self.status_tx.send_if_modified(|s| {
            if *s == status {
                false
            } else {
                *s = status;
                true
            }
        });
    }

    fn close_all(&mut self) {
        self.dirty = true;
        self.core
            .set_owned(std::time::Instant::now(), BTreeMap::new());
        for (_, s) in std::mem::take(&mut self.sockets) {
            s.reader.abort();
        }
        self.mcast = None;
        self.groups.clear();
        self.flush();
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn read_loop(
    iface: String,
    sock: Arc<AsyncFd<PacketSocket>>,
    tx: mpsc::Sender<(String, Vec<u8>)>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let mut guard = match sock.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(%iface, error = %e, "packet socket failed");
                return;
            }
        };
        match guard.try_io(|s| s.get_ref().recv(&mut buf)) {
            Ok(Ok(n)) => {
                // A full queue means we are flooded; dropping is the answer.
                let _ = tx.try_send((iface.clone(), buf[..n].to_vec()));
            }
            Ok(Err(e)) => {
                tracing::debug!(%iface, error = %e, "packet socket read");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_would_block) => continue,
        }
    }
}
