//! The tokio driver of [`MembershipCore`]: one task owns the UDP socket and
//! loops over handle / poll / sleep, publishing the live view on a `watch`
//! channel and every change on a `broadcast` channel.

use crate::membership::{
    Allowed, Departure, MembershipCore, MembershipEvent, MembershipTuning, SpeakerId,
};
use crate::wire::{GossipKeys, Refused};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Settings of one speaker's membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// This node's name (the Kubernetes node name).
    pub name: String,
    /// Local address of the UDP socket (usually `0.0.0.0:gossipPort`).
    pub bind: SocketAddr,
    /// Address peers send to (the node IP and `gossipPort`).
    pub advertise: SocketAddr,
    /// Networks this node can announce into (see [`SpeakerId::nets`]).
    pub nets: Vec<IpNet>,
    /// Failure-detector timing.
    pub tuning: MembershipTuning,
    /// Keys that sign and verify every datagram (empty: unsigned).
    pub keys: GossipKeys,
}

/// The membership as one speaker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipView {
    /// This speaker's identity.
    pub me: SpeakerId,
    /// Other live speakers by name.
    pub live: BTreeMap<String, SpeakerId>,
    /// Speakers seen once and not departed gracefully (split-brain rule).
    pub known: BTreeSet<String>,
    /// Speakers that left the live set, and how.
    pub departed: BTreeMap<String, Departure>,
}

enum Cmd {
    Join(Vec<(String, SocketAddr)>),
    Allow(Option<Allowed>),
    Keys(GossipKeys),
    Release(Vec<IpAddr>),
    SetNets(Vec<IpNet>),
    Forget(String),
    Leave(oneshot::Sender<()>),
}

/// Handle to the membership task. Dropping it closes the command channel,
/// which stops the task without a goodbye (peers detect the silence); call
/// [`Membership::leave`] for a planned stop.
#[derive(Debug)]
pub struct Membership {
    cmd: mpsc::UnboundedSender<Cmd>,
    view: watch::Receiver<MembershipView>,
    events: broadcast::Sender<MembershipEvent>,
    task: JoinHandle<()>,
    local: SocketAddr,
    refused: watch::Receiver<BTreeMap<Refused, u64>>,
}

impl Membership {
    /// Binds the UDP socket and starts the task.
    pub async fn start(config: MembershipConfig) -> io::Result<Self> {
        let sock = UdpSocket::bind(config.bind).await?;
        let local = sock.local_addr()?;
        // A restarted process must win over its old identity: start time in
        // milliseconds is larger than any earlier bump (renewals add 1).
        let bump = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        let me = SpeakerId {
            name: config.name,
            addr: config.advertise,
            bump,
            nets: config.nets,
        };
        let mut core = MembershipCore::new(me, config.tuning, random_seed());
        core.set_keys(&config.keys);
        let (cmd, rx) = mpsc::unbounded_channel();
        let (view_tx, view) = watch::channel(snapshot(&core));
        let (refused_tx, refused) = watch::channel(BTreeMap::new());
        let (events, _) = broadcast::channel(1024);
        let out = Outputs {
            view: view_tx,
            events: events.clone(),
            refused: refused_tx,
        };
        let task = tokio::spawn(run(core, sock, rx, out));
        Ok(Self {
            cmd,
            view,
            events,
            task,
            local,
            refused,
        })
    }

    /// The local address of the gossip socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sets the seeds (node name, node IP and gossip port) and announces to
    /// those not live; call again whenever the Node list changes.
    pub fn join(&self, seeds: Vec<(String, SocketAddr)>) {
        let _ = self.cmd.send(Cmd::Join(seeds));
    }

    /// Restricts the membership to these Nodes and the addresses they may send from;
    /// call with every Node (eligible or not) whenever the Node list changes.
    pub fn allow(&self, allowed: Option<Allowed>) {
        let _ = self.cmd.send(Cmd::Allow(allowed));
    }

    /// Replaces the gossip keys (rotation).
    pub fn set_keys(&self, keys: GossipKeys) {
        let _ = self.cmd.send(Cmd::Keys(keys));
    }

    /// Tells the live members that this node stopped answering for `ips`.
    pub fn release(&self, ips: Vec<IpAddr>) {
        let _ = self.cmd.send(Cmd::Release(ips));
    }

    /// Datagrams refused so far, by reason (published at most once a second).
    pub fn refused(&self) -> watch::Receiver<BTreeMap<Refused, u64>> {
        self.refused.clone()
    }

    /// Publishes new networks (interfaces changed).
    pub fn set_nets(&self, nets: Vec<IpNet>) {
        let _ = self.cmd.send(Cmd::SetNets(nets));
    }

    /// Drops a speaker from the known set (its Node was deleted).
    pub fn forget(&self, name: &str) {
        let _ = self.cmd.send(Cmd::Forget(name.to_string()));
    }

    /// A live view of the membership.
    pub fn view(&self) -> watch::Receiver<MembershipView> {
        self.view.clone()
    }

    /// Every change of the live set from now on.
    pub fn events(&self) -> broadcast::Receiver<MembershipEvent> {
        self.events.subscribe()
    }

    /// Says goodbye, leaves the group and stops the task.
    pub async fn leave(self) {
        crate::actor::stop(&self.cmd, self.task, Cmd::Leave).await;
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // std's RandomState is seeded from the OS once per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

fn snapshot(core: &MembershipCore) -> MembershipView {
    MembershipView {
        me: core.me().clone(),
        live: core.live().clone(),
        known: core.known().clone(),
        departed: core.departed().clone(),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Where the driver publishes.
struct Outputs {
    view: watch::Sender<MembershipView>,
    events: broadcast::Sender<MembershipEvent>,
    refused: watch::Sender<BTreeMap<Refused, u64>>,
}

/// How often refused-datagram counts are published: a flood of garbage must not become
/// a flood of status updates.
const REFUSED_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

async fn run(
    mut core: MembershipCore,
    sock: UdpSocket,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    out: Outputs,
) {
    let Outputs {
        view,
        events,
        refused,
    } = out;
    let mut buf = vec![0u8; 2048];
    let mut leaving: Option<oneshot::Sender<()>> = None;
    let mut refused_at = Instant::now();
    loop {
        if refused_at.elapsed() >= REFUSED_EVERY && *refused.borrow() != *core.refused() {
            refused.send_replace(core.refused().clone());
            refused_at = Instant::now();
        }
        while let Some((to, data)) = core.poll_transmit() {
            if let Err(e) = sock.send_to(&data, to).await {
                tracing::debug!(%to, error = %e, "gossip send");
            }
        }
        let mut changed = false;
        while let Some(ev) = core.poll_event() {
            changed = true;
            match &ev {
                MembershipEvent::Up(id) => {
                    tracing::info!(member = %id.name, addr = %id.addr, "speaker up")
                }
                MembershipEvent::Down(id, d) => tracing::info!(
                    member = %id.name,
                    graceful = d.graceful,
                    silent_for_ms = d.last_heard.map(|h| d.at.saturating_duration_since(h).as_millis() as u64),
                    "speaker down"
                ),
                MembershipEvent::Released { from, ips } => {
                    tracing::debug!(member = %from, count = ips.len(), "released by peer")
                }
            }
            let _ = events.send(ev);
        }
        let snap = snapshot(&core);
        if changed || *view.borrow() != snap {
            view.send_replace(snap);
        }
        if let Some(done) = leaving.take() {
            let _ = done.send(());
            return;
        }
        tokio::select! {
            biased;
            cmd = cmds.recv() => {
                let now = Instant::now();
                match cmd {
                    Some(Cmd::Join(seeds)) => core.join(now, seeds),
                    Some(Cmd::Allow(allowed)) => core.set_allowed(now, allowed),
                    Some(Cmd::Keys(keys)) => core.set_keys(&keys),
                    Some(Cmd::Release(ips)) => core.release(now, &ips),
                    Some(Cmd::SetNets(nets)) => core.set_nets(now, nets),
                    Some(Cmd::Forget(name)) => core.forget(&name),
                    Some(Cmd::Leave(done)) => {
                        core.leave(now);
                        leaving = Some(done);
                    }
                    None => return,
                }
            }
            res = sock.recv_from(&mut buf) => match res {
                Ok((n, from)) => core.handle_datagram(Instant::now(), from, &buf[..n]),
                Err(e) => {
                    // ICMP port unreachable from a dead peer surfaces here.
                    tracing::trace!(error = %e, "gossip receive");
                }
            },
            _ = sleep_until(core.poll_timeout()) => core.handle_timeout(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const VIEW_WAIT: Duration = Duration::from_secs(5);

    fn free_port() -> u16 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr").port()
    }

    /// Real sockets on loopback.
    #[tokio::test]
    async fn two_speakers_over_udp_join_and_leave() {
        let mk = |name: &str, port: u16| MembershipConfig {
            name: name.into(),
            bind: SocketAddr::from(([127, 0, 0, 1], port)),
            advertise: SocketAddr::from(([127, 0, 0, 1], port)),
            nets: vec![],
            tuning: MembershipTuning::default(),
            keys: GossipKeys::default(),
        };
        let (p1, p2) = (free_port(), free_port());
        let a = Membership::start(mk("a", p1)).await.expect("a");
        let b = Membership::start(mk("b", p2)).await.expect("b");
        let seeds = vec![
            ("a".to_string(), SocketAddr::from(([127, 0, 0, 1], p1))),
            ("b".to_string(), SocketAddr::from(([127, 0, 0, 1], p2))),
        ];
        a.join(seeds.clone());
        b.join(seeds);
        let mut view = a.view();
        tokio::time::timeout(VIEW_WAIT, view.wait_for(|v| v.live.contains_key("b")))
            .await
            .expect("a sees b")
            .expect("task alive");
        let mut events = a.events();
        b.leave().await;
        let ev = tokio::time::timeout(VIEW_WAIT, events.recv())
            .await
            .expect("event")
            .expect("open");
        match ev {
            MembershipEvent::Down(id, d) => {
                assert_eq!(id.name, "b");
                assert!(d.graceful);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(a.view().borrow().live.is_empty());
        a.leave().await;
    }
}
