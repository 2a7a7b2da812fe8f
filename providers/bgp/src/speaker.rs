//! The tokio side: one task per peer owns the TCP connection and loops over
//! the [`Session`]'s handle/poll/sleep; [`SpeakerHandle`] is what the node
//! agent holds.
//!
//! Routes: the handle keeps the full desired set and, per peer, the prefixes changed
//! since that peer last looked; a `watch` counter wakes the peer tasks, so a burst of
//! changes collapses into one pass that touches only the changed prefixes (the set is
//! compared once, in [`SpeakerHandle::set_routes`]; [`SpeakerHandle::update`] skips even
//! that). Per-peer status (state, UPDATEs
//! sent, prefixes advertised, flaps) is published on another `watch`
//! channel for metrics.

use crate::bfd::BfdStatus;
use crate::bfd::driver::{self as bfd_driver, BfdPeer};
use crate::config::{BgpConfig, ConfigIssue, SecretRef};
use crate::md5;
use crate::route::{RouteAttrs, RouteSet, Routes};
use crate::session::{Output, Session, SessionConfig, SessionStats, State};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The node the speaker runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name, for logs.
    pub name: String,
    /// The node's IPv4: router ID by default, and the IPv4 next hop on IPv6 sessions.
    pub ipv4: Option<Ipv4Addr>,
    /// The node's IPv6: the IPv6 next hop on IPv4 sessions.
    pub ipv6: Option<Ipv6Addr>,
    /// Node labels, matched against each peer's `nodeSelector`.
    pub labels: BTreeMap<String, String>,
}

/// Tunables that are not part of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerOptions {
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// First reconnect delay after a failure.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// How long shutdown waits for the final messages to be written.
    pub flush_timeout: Duration,
}

impl Default for SpeakerOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            flush_timeout: Duration::from_secs(2),
        }
    }
}

/// Why a speaker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpeakerError {
    /// The configuration has problems (each names its key).
    #[error("invalid bgp configuration: {}", .0.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("; "))]
    InvalidConfig(Vec<ConfigIssue>),
    /// Neither `routerID` nor the node's IPv4 address is known.
    #[error("no BGP router ID: set bgp.routerID or give the node an IPv4 address")]
    NoRouterId,
    /// The password Secret of a peer could not be read.
    #[error("password for peer {peer} not found in Secret {}/{} key {}", .secret.namespace, .secret.name, .secret.key)]
    MissingPassword {
        /// The peer's address.
        peer: IpAddr,
        /// Where the password should be.
        secret: SecretRef,
    },
    /// TCP MD5 keys are at most 80 bytes.
    #[error("password for peer {peer} is longer than {} bytes", md5::MAX_KEY_LEN)]
    PasswordTooLong {
        /// The peer's address.
        peer: IpAddr,
    },
    /// `spawn` was called outside a tokio runtime.
    #[error("the BGP speaker must be started inside a tokio runtime")]
    NoRuntime,
}

/// What a peer's session is doing, for status pages and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// The router's address and port.
    pub address: SocketAddr,
    /// The router's ASN.
    pub asn: u32,
    /// Session state.
    pub state: State,
    /// Counters (UPDATEs sent, prefixes advertised, flaps, last error, ...).
    #[serde(flatten)]
    pub stats: SessionStats,
    /// The BFD session with this router, when the peer has `bfd:`.
    pub bfd: Option<BfdStatus>,
}

/// Starts speakers; see [`Speaker::spawn`].
#[derive(Debug)]
pub struct Speaker;

/// Controls a running speaker. Dropping it stops the peers too (without
/// waiting); prefer [`SpeakerHandle::shutdown`].
#[derive(Debug)]
pub struct SpeakerHandle {
    routes: Arc<Mutex<RouteState>>,
    wake: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    status: watch::Receiver<Vec<PeerStatus>>,
    tasks: Vec<JoinHandle<()>>,
    skipped: Vec<SpeakerError>,
}

/// The routes to advertise, shared by the handle and the peer tasks.
#[derive(Debug, Default)]
struct RouteState {
    set: RouteSet,
    /// Per peer task: prefixes changed since it last applied the set.
    pending: Vec<BTreeSet<IpNet>>,
}

/// Locks the route state; a panic elsewhere never leaves it half-written (every
/// change is a single assignment), so a poisoned lock is still usable.
fn lock(m: &Mutex<RouteState>) -> std::sync::MutexGuard<'_, RouteState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything one peer task needs to open connections.
#[derive(Clone)]
struct Dialer {
    remote: SocketAddr,
    source: Option<IpAddr>,
    password: Option<Arc<[u8]>>,
    ttl: Option<u8>,
}

/// Says whether a TCP MD5 password is set, never what it is: a `{:?}` in a log line or a
/// panic message must not print it.
impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("remote", &self.remote)
            .field("source", &self.source)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Speaker {
    /// Validates `config`, selects the peers whose `nodeSelector` matches
    /// `node`, resolves their passwords with `passwords` and starts one task
    /// per peer. Routes start empty; call [`SpeakerHandle::set_routes`].
    pub fn spawn(
        config: &BgpConfig,
        node: &NodeInfo,
        passwords: impl Fn(&SecretRef) -> Option<String>,
    ) -> Result<SpeakerHandle, SpeakerError> {
        Self::spawn_with(config, node, passwords, SpeakerOptions::default())
    }

    /// [`Speaker::spawn`] with explicit [`SpeakerOptions`].
    pub fn spawn_with(
        config: &BgpConfig,
        node: &NodeInfo,
        passwords: impl Fn(&SecretRef) -> Option<String>,
        options: SpeakerOptions,
    ) -> Result<SpeakerHandle, SpeakerError> {
        let issues = config.validate();
        if !issues.is_empty() {
            return Err(SpeakerError::InvalidConfig(issues));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SpeakerError::NoRuntime)?;
        let router_id = config
            .router_id
            .parse()
            .ok()
            .or(node.ipv4)
            .ok_or(SpeakerError::NoRouterId)?;
        let mut peers = Vec::new();
        let mut skipped = Vec::new();
        for p in config.peers.iter().filter(|p| p.selects(&node.labels)) {
            // Validated above: addresses parse.
            let Ok(address) = p.address.parse::<IpAddr>() else {
                continue;
            };
            // A peer without its password is left out, not the speaker: the
            // other routers keep their sessions while that Secret is fixed.
            let password = match &p.password_secret {
                None => None,
                Some(secret) => match passwords(secret) {
                    None => {
                        skipped.push(SpeakerError::MissingPassword {
                            peer: address,
                            secret: secret.clone(),
                        });
                        continue;
                    }
                    Some(pw) if pw.len() > md5::MAX_KEY_LEN => {
                        skipped.push(SpeakerError::PasswordTooLong { peer: address });
                        continue;
                    }
                    Some(pw) => Some(Arc::from(pw.into_bytes())),
                },
            };
            let ebgp = p.asn != config.local_asn;
            let dialer = Dialer {
                remote: SocketAddr::new(address, p.port),
                source: p.source_address.parse().ok(),
                password,
                ttl: ebgp.then_some(p.ebgp_multihop),
            };
            let session = SessionConfig {
                local_asn: config.local_asn,
                peer_asn: p.asn,
                router_id,
                // Validated above: whole seconds within u16.
                hold_time: p.hold_time.as_secs().min(u64::from(u16::MAX)) as u16,
                keepalive_time: p.keepalive_time.as_secs().min(u64::from(u16::MAX)) as u16,
                // Validated above: 1..=4095 s.
                graceful_restart_time: p.graceful_restart.then(|| {
                    p.graceful_restart_time
                        .as_secs()
                        .min(crate::config::MAX_RESTART_TIME) as u16
                }),
                node_ipv4: node.ipv4,
                node_ipv6: node.ipv6,
                connect_timeout: options.connect_timeout,
                open_hold_time: Duration::from_secs(240),
                backoff_min: options.backoff_min,
                backoff_max: options.backoff_max,
            };
            let bfd = p.bfd.as_ref().map(|b| BfdPeer {
                remote: address,
                source: dialer.source,
                timers: b.timers(),
            });
            peers.push((dialer, p.asn, session, bfd));
        }
        let initial: Vec<PeerStatus> = peers
            .iter()
            .map(|(d, asn, _, bfd)| PeerStatus {
                address: d.remote,
                asn: *asn,
                state: State::Idle,
                stats: SessionStats::default(),
                bfd: bfd.as_ref().map(|_| BfdStatus::default()),
            })
            .collect();
        let routes = Arc::new(Mutex::new(RouteState {
            set: RouteSet::default(),
            pending: vec![BTreeSet::new(); peers.len()],
        }));
        let (wake_tx, _) = watch::channel(0u64);
        let (shutdown_tx, _) = watch::channel(false);
        let (status_tx, status_rx) = watch::channel(initial);
        let status_tx = Arc::new(status_tx);
        let _guard = runtime.enter();
        let bfd_peers: Vec<BfdPeer> = peers.iter().filter_map(|p| p.3.clone()).collect();
        let mut bfd_task = None;
        let mut bfd_status = Vec::new().into_iter();
        if !bfd_peers.is_empty() {
            let h = bfd_driver::spawn(bfd_peers, shutdown_tx.subscribe());
            bfd_task = Some(h.task);
            bfd_status = h.status.into_iter();
        }
        let mut tasks: Vec<JoinHandle<()>> = peers
            .into_iter()
            .enumerate()
            .map(|(index, (dialer, asn, session, bfd))| {
                let task = PeerTask {
                    index,
                    asn,
                    dialer,
                    session: Session::new(session),
                    routes: routes.clone(),
                    wake: wake_tx.subscribe(),
                    shutdown: shutdown_tx.subscribe(),
                    status: status_tx.clone(),
                    flush_timeout: options.flush_timeout,
                    node: node.name.clone(),
                    bfd: bfd.and_then(|_| bfd_status.next()),
                    bfd_downs: 0,
                };
                runtime.spawn(task.run())
            })
            .collect();
        tasks.extend(bfd_task);
        Ok(SpeakerHandle {
            routes,
            wake: wake_tx,
            shutdown: shutdown_tx,
            status: status_rx,
            tasks,
            skipped,
        })
    }
}

impl SpeakerHandle {
    /// Replaces the full set of routes to advertise. Each peer gets the
    /// routes whose `peers` list is empty or names it; only differences go
    /// on the wire.
    pub fn set_routes(&self, routes: impl Into<RouteSet>) {
        let routes = routes.into();
        {
            let mut st = lock(&self.routes);
            // Callers pass their whole view on every pass; only a change wakes the sessions.
            let changed = st.set.changed_prefixes(&routes);
            if changed.is_empty() {
                return;
            }
            for p in &mut st.pending {
                p.extend(changed.iter().copied());
            }
            st.set = routes;
        }
        self.wake.send_modify(|v| *v += 1);
    }

    /// Changes some prefixes only: each gets the given attribute sets, an empty list
    /// withdraws it. The cost follows the number of changes, not the table.
    pub fn update(&self, changes: impl IntoIterator<Item = (IpNet, Vec<RouteAttrs>)>) {
        {
            let mut st = lock(&self.routes);
            let mut touched = Vec::new();
            for (prefix, attrs) in changes {
                st.set.set(prefix, attrs);
                touched.push(prefix);
            }
            if touched.is_empty() {
                return;
            }
            for p in &mut st.pending {
                p.extend(touched.iter().copied());
            }
        }
        self.wake.send_modify(|v| *v += 1);
    }

    /// Peers left out because their password is missing or too long: the
    /// caller reports them and starts again once the Secret is fixed.
    pub fn skipped(&self) -> &[SpeakerError] {
        &self.skipped
    }

    /// A snapshot of every peer's status.
    pub fn peer_states(&self) -> Vec<PeerStatus> {
        self.status.borrow().clone()
    }

    /// A channel that changes whenever a peer's status does.
    pub fn watch_status(&self) -> watch::Receiver<Vec<PeerStatus>> {
        self.status.clone()
    }

    /// Withdraws everything, sends Cease (Administrative Shutdown) to every
    /// peer, closes the connections and waits for the tasks to end.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for t in std::mem::take(&mut self.tasks) {
            if let Err(e) = t.await {
                tracing::warn!(error = %e, "BGP peer task ended abnormally");
            }
        }
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

struct PeerTask {
    index: usize,
    asn: u32,
    dialer: Dialer,
    session: Session,
    routes: Arc<Mutex<RouteState>>,
    wake: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    status: Arc<watch::Sender<Vec<PeerStatus>>>,
    flush_timeout: Duration,
    node: String,
    bfd: Option<watch::Receiver<BfdStatus>>,
    bfd_downs: u64,
}

/// The open connection, split so reads and writes proceed independently.
#[derive(Default)]
struct Conn {
    reader: Option<OwnedReadHalf>,
    writer: Option<OwnedWriteHalf>,
    connecting: Option<Connecting>,
    pending: Vec<u8>,
}

impl Conn {
    async fn close(&mut self, flush_timeout: Duration) {
        self.connecting = None;
        self.reader = None;
        if let Some(mut w) = self.writer.take() {
            let pending = std::mem::take(&mut self.pending);
            let flush = async {
                w.write_all(&pending).await?;
                w.shutdown().await
            };
            let _ = tokio::time::timeout(flush_timeout, flush).await;
        }
        self.pending.clear();
    }
}

async fn connecting(c: Option<&mut Connecting>) -> io::Result<TcpStream> {
    match c {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn read(r: Option<&mut OwnedReadHalf>, buf: &mut [u8]) -> io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn write(w: Option<&mut OwnedWriteHalf>, buf: &[u8]) -> io::Result<usize> {
    match w {
        Some(w) if !buf.is_empty() => w.write(buf).await,
        _ => std::future::pending().await,
    }
}

/// How often the BFD session has gone down from Up, at its next change; `None` once the
/// BFD task is gone.
async fn bfd_changed(rx: Option<&mut watch::Receiver<BfdStatus>>) -> Option<u64> {
    match rx {
        Some(rx) => {
            rx.changed().await.ok()?;
            Some(rx.borrow_and_update().downs)
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn dial(d: Dialer) -> io::Result<TcpStream> {
    let sock = if d.remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(key) = &d.password {
        md5::set_md5sig(&sock, d.remote.ip(), key)?;
    }
    if let Some(src) = d.source {
        sock.bind(SocketAddr::new(src, 0))?;
    }
    if let Some(hops) = d.ttl {
        // Before connect, so the SYN already carries it: IPv4 TTL or IPv6 hop limit.
        let s = socket2::SockRef::from(&sock);
        if d.remote.is_ipv4() {
            s.set_ttl_v4(u32::from(hops))?;
        } else {
            s.set_unicast_hops_v6(u32::from(hops))?;
        }
    }
    let stream = sock.connect(d.remote).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl PeerTask {
    /// All the routes of the current set that this peer gets.
    fn desired(&mut self) -> Routes {
        let ip = self.dialer.remote.ip();
        let mut st = lock(&self.routes);
        if let Some(p) = st.pending.get_mut(self.index) {
            p.clear();
        }
        st.set.for_peer(ip)
    }

    /// The prefixes changed since the last look, as this peer gets them now.
    fn changes(&mut self) -> Vec<(IpNet, Option<RouteAttrs>)> {
        let ip = self.dialer.remote.ip();
        let mut st = lock(&self.routes);
        let touched = st
            .pending
            .get_mut(self.index)
            .map(std::mem::take)
            .unwrap_or_default();
        touched
            .into_iter()
            .map(|p| (p, st.set.for_peer_one(&p, ip)))
            .collect()
    }

    fn publish(&self) {
        let new = PeerStatus {
            address: self.dialer.remote,
            asn: self.asn,
            state: self.session.state(),
            stats: self.session.stats().clone(),
            bfd: self.bfd.as_ref().map(|b| b.borrow().clone()),
        };
        self.status.send_if_modified(|all| match all.get_mut(self.index) {
            Some(slot) if *slot != new => {
                if slot.state != new.state {
                    tracing::info!(node = %self.node, peer = %new.address, from = %slot.state, to = %new.state,
                        error = new.stats.last_error.as_deref().unwrap_or(""), "BGP session state");
                }
                *slot = new;
                true
            }
            _ => false,
        });
    }

    /// Applies the session's outputs; returns after a Disconnect was flushed.
    async fn drain(&mut self, conn: &mut Conn) {
        while let Some(out) = self.session.poll_output() {
            match out {
                Output::Connect => conn.connecting = Some(Box::pin(dial(self.dialer.clone()))),
                Output::Transmit(bytes) if conn.writer.is_some() => {
                    conn.pending.extend_from_slice(&bytes)
                }
                Output::Transmit(_) => {}
                Output::Disconnect => conn.close(self.flush_timeout).await,
            }
        }
    }

    async fn run(mut self) {
        let mut conn = Conn::default();
        let mut buf = vec![0u8; 64 * 1024];
        let initial = self.desired();
        self.session.set_routes(Instant::now().into_std(), initial);
        self.session.start(Instant::now().into_std());
        loop {
            self.drain(&mut conn).await;
            self.publish();
            let deadline = self.session.poll_timeout().map(Instant::from_std);
            tokio::select! {
                res = connecting(conn.connecting.as_mut()) => {
                    conn.connecting = None;
                    let now = Instant::now().into_std();
                    match res.and_then(|s| Ok((s.local_addr()?, s))) {
                        Ok((local, stream)) => {
                            let (r, w) = stream.into_split();
                            (conn.reader, conn.writer) = (Some(r), Some(w));
                            self.session.handle_connected(now, local);
                        }
                        Err(e) => self.session.handle_connect_failed(now, &e.to_string()),
                    }
                }
                res = read(conn.reader.as_mut(), &mut buf) => {
                    let now = Instant::now().into_std();
                    match res {
                        Ok(0) | Err(_) => {
                            conn.close(Duration::ZERO).await;
                            self.session.handle_closed(now);
                        }
                        Ok(n) => self.session.handle_data(now, &buf[..n]),
                    }
                }
                res = write(conn.writer.as_mut(), &conn.pending) => match res {
                    Ok(n) => { conn.pending.drain(..n); }
                    Err(_) => {
                        conn.close(Duration::ZERO).await;
                        self.session.handle_closed(Instant::now().into_std());
                    }
                },
                () = sleep_until(deadline) => self.session.handle_timeout(Instant::now().into_std()),
                res = self.wake.changed() => {
                    if res.is_err() {
                        break;
                    }
                    let changes = self.changes();
                    self.session.update_routes(Instant::now().into_std(), changes);
                }
                res = bfd_changed(self.bfd.as_mut()) => match res {
                    // Counted, not compared state to state: a Down and Up again between two
                    // looks is still a failure the BGP session must not outlive.
                    Some(downs) if downs > self.bfd_downs => {
                        self.bfd_downs = downs;
                        // The router stopped hearing us, or we it: the BGP session is dead too.
                        self.session.handle_bfd_down(Instant::now().into_std());
                    }
                    Some(_) => {}
                    None => self.bfd = None,
                },
                _ = self.shutdown.changed() => break,
            }
        }
        self.session.stop(Instant::now().into_std());
        self.drain(&mut conn).await;
        conn.close(self.flush_timeout).await;
        self.publish();
    }
}

#[cfg(test)]
#[path = "speaker_tests.rs"]
mod tests;
