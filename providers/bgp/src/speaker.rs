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
//!
//! Peers have their own lifecycle: [`SpeakerHandle::reconfigure`] compares each peer's
//! [`PeerPlan`] and restarts only the sessions whose plan changed (a new password, a new
//! timer), so editing one BGPPeer never drops the others' routes.

use crate::bfd::BfdStatus;
use crate::bfd::driver::{self as bfd_driver, BfdPeer};
use crate::config::{BgpConfig, ConfigIssue, SecretRef};
use crate::md5;
use crate::peer_task::{Dialer, PeerTask, RouteState, lock};
use crate::route::{RouteAttrs, RouteSet};
use crate::session::{Session, SessionConfig, SessionStats, State};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
    status_tx: Arc<watch::Sender<Vec<PeerStatus>>>,
    status: watch::Receiver<Vec<PeerStatus>>,
    /// The running peers, in configuration order.
    peers: Vec<RunningPeer>,
    /// The BFD driver serves a fixed set of routers: a change of that set restarts it
    /// with the peers that use it.
    bfd: Option<(Vec<BfdPeer>, watch::Sender<bool>, JoinHandle<()>)>,
    /// The BFD driver's status channels, in the order of its set.
    bfd_status: Vec<watch::Receiver<BfdStatus>>,
    skipped: Vec<SpeakerError>,
    options: SpeakerOptions,
    node: String,
    next_id: u64,
}

/// One peer's task and what it was started from.
#[derive(Debug)]
struct RunningPeer {
    plan: PeerPlan,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Everything that makes a peer's session what it is: two peers with equal plans are the
/// same session, a difference in any field (address, port, ASNs, password, timers, source,
/// TTL, router ID, next hops, graceful restart, BFD) needs a new connection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PeerPlan {
    dialer: Dialer,
    asn: u32,
    session: SessionConfig,
    bfd: Option<BfdPeer>,
}

/// What [`SpeakerHandle::reconfigure`] did, by peer address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Sessions started (new peers, and changed peers again).
    pub started: Vec<SocketAddr>,
    /// Sessions ended with a Cease (removed peers, and changed peers before their restart).
    pub stopped: Vec<SocketAddr>,
    /// Sessions left running untouched.
    pub kept: Vec<SocketAddr>,
}

/// Validates `config` and turns every peer that selects `node` (and has its password)
/// into a plan; peers left out for their password are returned apart.
fn plan(
    config: &BgpConfig,
    node: &NodeInfo,
    passwords: impl Fn(&SecretRef) -> Option<String>,
    options: &SpeakerOptions,
) -> Result<(Vec<PeerPlan>, Vec<SpeakerError>), SpeakerError> {
    let issues = config.validate();
    if !issues.is_empty() {
        return Err(SpeakerError::InvalidConfig(issues));
    }
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
        let local_asn = p.local_asn.unwrap_or(config.local_asn);
        let ebgp = p.asn != local_asn;
        let dialer = Dialer {
            remote: SocketAddr::new(address, p.port),
            source: p.source_address.parse().ok(),
            password,
            ttl: ebgp.then_some(p.ebgp_multihop),
        };
        let session = SessionConfig {
            local_asn,
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
        peers.push(PeerPlan {
            dialer,
            asn: p.asn,
            session,
            bfd,
        });
    }
    Ok((peers, skipped))
}

fn idle(p: &PeerPlan) -> PeerStatus {
    PeerStatus {
        address: p.dialer.remote,
        asn: p.asn,
        state: State::Idle,
        stats: SessionStats::default(),
        bfd: p.bfd.as_ref().map(|_| BfdStatus::default()),
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
        let (plans, skipped) = plan(config, node, passwords, &options)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SpeakerError::NoRuntime)?;
        let _guard = runtime.enter();
        let (wake, _) = watch::channel(0u64);
        let (status_tx, status) = watch::channel(plans.iter().map(idle).collect());
        let mut handle = SpeakerHandle {
            routes: Arc::new(Mutex::new(RouteState::default())),
            wake,
            status_tx: Arc::new(status_tx),
            status,
            peers: Vec::new(),
            bfd: None,
            bfd_status: Vec::new(),
            skipped,
            options,
            node: node.name.clone(),
            next_id: 0,
        };
        handle.start_bfd(&plans);
        handle.peers = plans.into_iter().map(|p| handle.start_peer(p)).collect();
        Ok(handle)
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
            for p in st.pending.values_mut() {
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
            for p in st.pending.values_mut() {
                p.extend(touched.iter().copied());
            }
        }
        self.wake.send_modify(|v| *v += 1);
    }

    /// Moves the running speaker to a new configuration (peers added or removed in
    /// BGPPeer resources, a password changed in its Secret, the node's labels or
    /// addresses changed) while touching only the sessions that differ: a peer whose
    /// [`PeerPlan`] is unchanged keeps its connection and its routes, a removed or changed
    /// one ends with a Cease, and a new or changed one starts and gets the whole current
    /// route set. A change of the BFD routers restarts the peers that use BFD, since one
    /// driver serves them all. On an error (invalid configuration, no router ID) nothing
    /// changes.
    pub async fn reconfigure(
        &mut self,
        config: &BgpConfig,
        node: &NodeInfo,
        passwords: impl Fn(&SecretRef) -> Option<String>,
    ) -> Result<Reconfigured, SpeakerError> {
        let (plans, skipped) = plan(config, node, passwords, &self.options)?;
        self.skipped = skipped;
        self.node = node.name.clone();
        let bfd_set: Vec<BfdPeer> = plans.iter().filter_map(|p| p.bfd.clone()).collect();
        let bfd_changed = match &self.bfd {
            Some((running, _, _)) => *running != bfd_set,
            None => !bfd_set.is_empty(),
        };
        let mut out = Reconfigured::default();
        let mut old = std::mem::take(&mut self.peers);
        let mut keep: Vec<Option<RunningPeer>> = Vec::with_capacity(plans.len());
        for p in &plans {
            let same = old
                .iter()
                .position(|r| r.plan == *p && !(bfd_changed && p.bfd.is_some()));
            keep.push(same.map(|i| old.swap_remove(i)));
        }
        // Stop first, so a changed peer's final status lands before its successor's.
        for r in &old {
            r.stop.send_replace(true);
        }
        if bfd_changed && let Some((_, stop, task)) = self.bfd.take() {
            stop.send_replace(true);
            await_task(task).await;
        }
        for r in old {
            out.stopped.push(r.plan.dialer.remote);
            await_task(r.task).await;
        }
        let previous = self.status.borrow().clone();
        self.status_tx.send_modify(|all| {
            *all = plans
                .iter()
                .map(|p| {
                    previous
                        .iter()
                        .find(|s| s.address == p.dialer.remote)
                        .filter(|_| keep.iter().flatten().any(|r| r.plan == *p))
                        .cloned()
                        .unwrap_or_else(|| idle(p))
                })
                .collect();
        });
        if bfd_changed {
            self.start_bfd(&plans);
        }
        let mut peers = Vec::with_capacity(plans.len());
        for (p, kept) in plans.into_iter().zip(keep) {
            match kept {
                Some(r) => {
                    out.kept.push(r.plan.dialer.remote);
                    peers.push(r);
                }
                None => {
                    out.started.push(p.dialer.remote);
                    peers.push(self.start_peer(p));
                }
            }
        }
        self.peers = peers;
        Ok(out)
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
        for p in &self.peers {
            p.stop.send_replace(true);
        }
        if let Some((_, stop, _)) = &self.bfd {
            stop.send_replace(true);
        }
        for p in std::mem::take(&mut self.peers) {
            await_task(p.task).await;
        }
        if let Some((_, _, task)) = self.bfd.take() {
            await_task(task).await;
        }
    }

    /// Starts the BFD driver for the plans that ask for BFD (none: no driver).
    fn start_bfd(&mut self, plans: &[PeerPlan]) {
        let set: Vec<BfdPeer> = plans.iter().filter_map(|p| p.bfd.clone()).collect();
        if set.is_empty() {
            self.bfd = None;
            self.bfd_status.clear();
            return;
        }
        let (stop, rx) = watch::channel(false);
        let h = bfd_driver::spawn(set.clone(), rx);
        self.bfd_status = h.status;
        self.bfd = Some((set, stop, h.task));
    }

    /// Spawns one peer's task; it reads the whole route set when it starts.
    fn start_peer(&mut self, plan: PeerPlan) -> RunningPeer {
        let id = self.next_id;
        self.next_id += 1;
        let (stop, stop_rx) = watch::channel(false);
        let bfd = plan.bfd.as_ref().and_then(|b| {
            let set = &self.bfd.as_ref()?.0;
            let i = set.iter().position(|x| x == b)?;
            self.bfd_status.get(i).cloned()
        });
        let task = PeerTask {
            id,
            asn: plan.asn,
            dialer: plan.dialer.clone(),
            session: Session::new(plan.session.clone()),
            routes: self.routes.clone(),
            wake: self.wake.subscribe(),
            stop: stop_rx,
            status: self.status_tx.clone(),
            flush_timeout: self.options.flush_timeout,
            node: self.node.clone(),
            bfd,
            bfd_downs: 0,
        };
        RunningPeer {
            plan,
            stop,
            task: tokio::spawn(task.run()),
        }
    }
}

/// Waits for a task to end; a panic in it is logged, not passed on.
async fn await_task(task: JoinHandle<()>) {
    if let Err(e) = task.await {
        tracing::warn!(error = %e, "BGP peer task ended abnormally");
    }
}

#[cfg(test)]
#[path = "speaker_tests.rs"]
mod tests;
