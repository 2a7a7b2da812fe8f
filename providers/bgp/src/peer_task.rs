//! One peer's task: owns the TCP connection (active connect, MD5, TTL) and loops over the
//! [`Session`]'s handle/poll/sleep. Split from [`crate::speaker`] so the handle's
//! lifecycle (start, reconfigure, shutdown) reads apart from the per-connection I/O.

use crate::bfd::BfdStatus;
use crate::md5;
use crate::route::{RouteAttrs, RouteSet, Routes};
use crate::session::{Output, Session};
use crate::speaker::PeerStatus;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// The routes to advertise, shared by the handle and the peer tasks.
#[derive(Debug, Default)]
pub(crate) struct RouteState {
    pub(crate) set: RouteSet,
    /// Per peer task (by its id): prefixes changed since it last applied the set. A task
    /// added by a reconfiguration gets an entry when it starts and reads the whole set.
    pub(crate) pending: BTreeMap<u64, BTreeSet<IpNet>>,
}

/// Locks the route state; a panic elsewhere never leaves it half-written (every
/// change is a single assignment), so a poisoned lock is still usable.
pub(crate) fn lock(m: &Mutex<RouteState>) -> std::sync::MutexGuard<'_, RouteState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything one peer task needs to open connections.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Dialer {
    pub(crate) remote: SocketAddr,
    pub(crate) source: Option<IpAddr>,
    pub(crate) password: Option<Arc<[u8]>>,
    pub(crate) ttl: Option<u8>,
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

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// One peer's loop. `stop` is this peer's own: a reconfiguration ends one session (Cease)
/// and leaves the others running.
pub(crate) struct PeerTask {
    /// Its key in [`RouteState::pending`].
    pub(crate) id: u64,
    pub(crate) asn: u32,
    pub(crate) dialer: Dialer,
    pub(crate) session: Session,
    pub(crate) routes: Arc<Mutex<RouteState>>,
    pub(crate) wake: watch::Receiver<u64>,
    pub(crate) stop: watch::Receiver<bool>,
    /// Every peer's status; this task writes the entry with its `remote` address (unique
    /// per speaker: the configuration refuses two peers with one address and port).
    pub(crate) status: Arc<watch::Sender<Vec<PeerStatus>>>,
    pub(crate) flush_timeout: Duration,
    pub(crate) node: String,
    pub(crate) bfd: Option<watch::Receiver<BfdStatus>>,
    pub(crate) bfd_downs: u64,
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

pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn dial(d: Dialer) -> io::Result<TcpStream> {
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
        st.pending.insert(self.id, BTreeSet::new());
        st.set.for_peer(ip)
    }

    /// The prefixes changed since the last look, as this peer gets them now.
    fn changes(&mut self) -> Vec<(IpNet, Option<RouteAttrs>)> {
        let ip = self.dialer.remote.ip();
        let mut st = lock(&self.routes);
        let touched = st
            .pending
            .get_mut(&self.id)
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
        let remote = self.dialer.remote;
        self.status.send_if_modified(|all| match all.iter_mut().find(|s| s.address == remote) {
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

    pub(crate) async fn run(mut self) {
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
                _ = self.stop.changed() => break,
            }
        }
        self.session.stop(Instant::now().into_std());
        self.drain(&mut conn).await;
        conn.close(self.flush_timeout).await;
        self.publish();
        lock(&self.routes).pending.remove(&self.id);
    }
}
