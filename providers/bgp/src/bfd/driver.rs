//! The tokio side of BFD: one task per speaker owns the receiving sockets (UDP 3784, IPv4
//! and IPv6 as needed) and one sending socket per peer, and runs every peer's
//! [`BfdSession`]. Each peer's status is published on its own `watch` channel, which the
//! BGP peer task follows: an Up session going Down resets the BGP session.
//!
//! Received packets are matched to a session by Your Discriminator, or, while the router
//! does not know ours yet (0), by its address; a packet whose TTL is not 255 or whose
//! sender is not the session's router is dropped (RFC 5881 §5).

use super::CONTROL_PORT;
use super::packet::Control;
use super::session::{BfdSession, BfdStatus, BfdTimers};
use crate::gtsm;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// RFC 5881 §4: the source port of a session, fixed for its life, is in this range.
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// How soon sockets that could not be opened are tried again.
const RETRY: Duration = Duration::from_secs(10);

/// One router to run BFD with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdPeer {
    /// The router's address (the BGP peer's).
    pub remote: IpAddr,
    /// Our address towards it, as the BGP session's `sourceAddress`; `None` lets the
    /// kernel pick it from the route, as it does for the BGP connection.
    pub source: Option<IpAddr>,
    /// Timers from the peer's `bfd:` settings.
    pub timers: BfdTimers,
}

/// The running task and each peer's status channel, in the order of the peers given.
pub struct BfdHandle {
    /// Per peer: the session's status, changed on every state change.
    pub status: Vec<watch::Receiver<BfdStatus>>,
    /// The task; it ends (after telling every router AdminDown) when `shutdown` turns true.
    pub task: JoinHandle<()>,
}

struct Peer {
    cfg: BfdPeer,
    session: BfdSession,
    tx: Option<UdpSocket>,
    status: watch::Sender<BfdStatus>,
}

/// A pseudo-random u64 from the process's hash keys: discriminators, seeds and ports
/// only need to differ between sessions and restarts, not to be secret.
fn random(salt: u64) -> u64 {
    RandomState::new().hash_one(salt)
}

/// Starts the task on the current runtime.
pub fn spawn(peers: Vec<BfdPeer>, shutdown: watch::Receiver<bool>) -> BfdHandle {
    let now = Instant::now().into_std();
    let mut used = BTreeSet::new();
    let mut status = Vec::new();
    let peers: Vec<Peer> = peers
        .into_iter()
        .enumerate()
        .map(|(i, cfg)| {
            let mut discr = 0u32;
            while discr == 0 || used.contains(&discr) {
                discr = random(i as u64) as u32;
            }
            used.insert(discr);
            let session = BfdSession::new(cfg.timers, discr, random(!(i as u64)), now);
            let (tx, rx) = watch::channel(session.status().clone());
            status.push(rx);
            Peer {
                cfg,
                session,
                tx: None,
                status: tx,
            }
        })
        .collect();
    let task = tokio::spawn(run(peers, shutdown));
    BfdHandle { status, task }
}

/// The receiving socket of one family: port 3784, TTL reported.
fn listen(ipv6: bool) -> io::Result<UdpSocket> {
    let (domain, addr) = if ipv6 {
        (
            socket2::Domain::IPV6,
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, CONTROL_PORT)),
        )
    } else {
        (
            socket2::Domain::IPV4,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, CONTROL_PORT)),
        )
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if ipv6 {
        s.set_only_v6(true)?;
    }
    gtsm::set_recv_ttl(&s, ipv6)?;
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// A peer's sending socket: TTL 255, a fixed source port from [`SOURCE_PORTS`], connected
/// to the router's port 3784.
fn sender(peer: &BfdPeer, salt: u64) -> io::Result<UdpSocket> {
    let remote = SocketAddr::new(peer.remote, CONTROL_PORT);
    let s = socket2::Socket::new(
        socket2::Domain::for_address(remote),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if remote.is_ipv4() {
        s.set_ttl_v4(255)?;
    } else {
        s.set_unicast_hops_v6(255)?;
    }
    let ip = peer.source.unwrap_or(match remote {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let span = u64::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let mut last = io::Error::other("no source port tried");
    for attempt in 0..64u64 {
        let port = SOURCE_PORTS.start() + (random(salt ^ attempt) % span) as u16;
        match s.bind(&SocketAddr::new(ip, port).into()) {
            Ok(()) => {
                s.connect(&remote.into())?;
                s.set_nonblocking(true)?;
                return UdpSocket::from_std(s.into());
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

async fn readable(s: Option<&UdpSocket>) -> &UdpSocket {
    match s {
        Some(s) => {
            // An error here (never seen on UDP) is retried by the caller's try_io.
            let _ = s.readable().await;
            s
        }
        None => std::future::pending().await,
    }
}

async fn run(mut peers: Vec<Peer>, mut shutdown: watch::Receiver<bool>) {
    let mut rx4: Option<UdpSocket> = None;
    let mut rx6: Option<UdpSocket> = None;
    let mut opened: Option<Instant> = None;
    let need4 = peers.iter().any(|p| p.cfg.remote.is_ipv4());
    let need6 = peers.iter().any(|p| p.cfg.remote.is_ipv6());
    let mut buf = [0u8; 512];
    loop {
        if opened.is_none_or(|t| t.elapsed() >= RETRY) {
            open(&mut peers, &mut rx4, &mut rx6, need4, need6);
            opened = Some(Instant::now());
        }
        for p in &mut peers {
            flush(p);
        }
        let deadline = peers
            .iter()
            .filter_map(|p| p.session.poll_timeout())
            .min()
            .map(Instant::from_std);
        let retry = (rx4.is_none() && need4
            || rx6.is_none() && need6
            || peers.iter().any(|p| p.tx.is_none()))
        .then(|| opened.map(|t| t + RETRY))
        .flatten();
        let wake = [deadline, retry].into_iter().flatten().min();
        tokio::select! {
            s = readable(rx4.as_ref()) => receive(s, &mut buf, &mut peers),
            s = readable(rx6.as_ref()) => receive(s, &mut buf, &mut peers),
            () = async {
                match wake {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now().into_std();
                for p in &mut peers {
                    p.session.handle_timeout(now);
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    let now = Instant::now().into_std();
    for p in &mut peers {
        p.session.stop(now);
        flush(p);
    }
}

fn open(
    peers: &mut [Peer],
    rx4: &mut Option<UdpSocket>,
    rx6: &mut Option<UdpSocket>,
    need4: bool,
    need6: bool,
) {
    for (ipv6, need, slot) in [(false, need4, rx4), (true, need6, rx6)] {
        if need && slot.is_none() {
            match listen(ipv6) {
                Ok(s) => *slot = Some(s),
                Err(e) => tracing::warn!(error = %e, ipv6,
                    "cannot open the BFD port 3784 (another BFD daemon on this node?); retrying"),
            }
        }
    }
    for (i, p) in peers.iter_mut().enumerate() {
        if p.tx.is_none() {
            match sender(&p.cfg, i as u64) {
                Ok(s) => p.tx = Some(s),
                Err(e) => tracing::warn!(peer = %p.cfg.remote, error = %e,
                    "cannot open the BFD socket towards this router; retrying"),
            }
        }
    }
}

/// Sends what the session queued (dropped when the socket is not open or its buffer is
/// full: BFD tolerates loss by design) and publishes the status if it changed.
fn flush(p: &mut Peer) {
    while let Some(c) = p.session.poll_transmit() {
        if let Some(tx) = &p.tx {
            let _ = tx.try_send(&c.encode());
        }
    }
    let st = p.session.status();
    p.status.send_if_modified(|cur| {
        let changed = cur != st;
        if changed {
            if cur.state != st.state {
                tracing::info!(peer = %p.cfg.remote, from = ?cur.state, to = ?st.state,
                    diag = st.last_diag, "BFD session state");
            }
            *cur = st.clone();
        }
        changed
    });
}

/// Reads every queued datagram of `sock` and hands each valid one to its session.
fn receive(sock: &UdpSocket, buf: &mut [u8], peers: &mut [Peer]) {
    loop {
        let got = sock.try_io(Interest::READABLE, || gtsm::recv_with_ttl(sock, buf));
        let (n, from, ttl) = match got {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::debug!(error = %e, "BFD receive failed");
                return;
            }
        };
        if ttl != Some(255) {
            tracing::debug!(%from, ?ttl, "BFD packet dropped: not from a neighbour (TTL != 255)");
            continue;
        }
        let Ok(c) = Control::decode(&buf[..n]) else {
            continue;
        };
        let now = Instant::now().into_std();
        let found = if c.your_discr != 0 {
            peers
                .iter_mut()
                .find(|p| p.session.local_discr() == c.your_discr)
        } else {
            peers.iter_mut().find(|p| p.cfg.remote == from.ip())
        };
        if let Some(p) = found.filter(|p| p.cfg.remote == from.ip()) {
            p.session.handle_packet(now, &c);
            flush(p);
        }
    }
}
