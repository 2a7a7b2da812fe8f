//! Keeps this node's BGP speaker in step with its Node object and the password Secrets.
//!
//! The `bgp` section applies to a node through the peers' `nodeSelector`s, and the
//! speaker's identity (router id, next hops) comes from the node's addresses, so both are
//! read from the live Node: a label added later starts the sessions it selects, a label
//! removed ends them with a Cease. Passwords are read from their Secrets at start and
//! re-read every [`PASSWORD_REFRESH`]; a changed password restarts that peer's session only,
//! since TCP MD5 keys only apply to new connections. A missing Secret is retried every
//! [`RETRY`], not fatal: the peer that needs it is left out (and logged as waiting), the
//! speaker keeps serving L2 and every other peer.
//!
//! The configuration itself changes too (BGPPeer and BGPAdvertisement resources, see
//! [`super::live_bgp`]): a running speaker is moved to the new one with
//! [`SpeakerHandle::reconfigure`], which restarts only the sessions whose peer changed and
//! keeps the others, with their routes, untouched.

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};
use portway_bgp::{BgpConfig, NodeInfo, SecretRef, Speaker, SpeakerHandle};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tracing::{info, warn};

use super::desired::node_addrs;

/// How often password Secrets are read again.
pub const PASSWORD_REFRESH: Duration = Duration::from_secs(60);
/// How soon a failed start, or a peer left out for a missing Secret, is tried again.
const RETRY: Duration = Duration::from_secs(10);

type SecretKey = (String, String, String);

/// What a running speaker was last configured from; a difference means a reconfiguration.
#[derive(Clone, PartialEq)]
struct Started {
    config: BgpConfig,
    peers: Vec<usize>,
    ipv4: Option<std::net::Ipv4Addr>,
    ipv6: Option<std::net::Ipv6Addr>,
    passwords: Vec<Option<String>>,
}

/// Says which peers have a password, never what it is.
impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let passwords: Vec<Option<&str>> = self
            .passwords
            .iter()
            .map(|p| p.as_ref().map(|_| "<redacted>"))
            .collect();
        f.debug_struct("Started")
            .field("config", &self.config)
            .field("peers", &self.peers)
            .field("ipv4", &self.ipv4)
            .field("ipv6", &self.ipv6)
            .field("passwords", &passwords)
            .finish()
    }
}

/// The BGP side of the node agent.
pub(crate) struct BgpRunner {
    client: Client,
    node: String,
    /// How often password Secrets are read again ([`PASSWORD_REFRESH`] unless a test asks).
    refresh: Duration,
    running: Option<(Started, SpeakerHandle)>,
    status: Option<tokio::sync::watch::Receiver<Vec<portway_bgp::PeerStatus>>>,
    passwords: BTreeMap<SecretKey, String>,
    passwords_read: Option<Instant>,
    failed: Option<(Started, Instant)>,
    generation: u64,
}

impl BgpRunner {
    pub(crate) fn new(client: Client, node: String, refresh: Duration) -> Self {
        Self {
            client,
            node,
            refresh,
            running: None,
            status: None,
            passwords: BTreeMap::new(),
            passwords_read: None,
            failed: None,
            generation: 0,
        }
    }

    /// Counts the speakers started: a new one begins with no routes, so the loop hands it
    /// the whole table instead of the latest changes.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Starts, reconfigures or stops the speaker for the node and `config` as they are now;
    /// returns the running speaker, if any.
    pub(crate) async fn reconcile(
        &mut self,
        me: &Node,
        config: &BgpConfig,
    ) -> Option<&SpeakerHandle> {
        let labels = me.labels();
        let peers: Vec<usize> = (0..config.peers.len())
            .filter(|i| config.peers[*i].selects(labels))
            .collect();
        if peers.is_empty() {
            if let Some((_, handle)) = self.running.take() {
                info!(node = %self.node, "no BGP peer selects this node any more; stopping the sessions");
                handle.shutdown().await;
            }
            return None;
        }
        let secrets: Vec<&SecretRef> = peers
            .iter()
            .filter_map(|i| config.peers[*i].password_secret.as_ref())
            .collect();
        let waiting = self.failed.is_some()
            || self
                .running
                .as_ref()
                .is_some_and(|(_, h)| !h.skipped().is_empty());
        let stale = self
            .passwords_read
            .is_none_or(|t| t.elapsed() >= self.refresh || (waiting && t.elapsed() >= RETRY));
        if !secrets.is_empty() && stale {
            let refs: Vec<SecretRef> = secrets.into_iter().cloned().collect();
            read_passwords(&self.client, &refs, &mut self.passwords).await;
            self.passwords_read = Some(Instant::now());
        }
        let addrs = node_addrs(me);
        let want = Started {
            config: config.clone(),
            ipv4: addrs.iter().find_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            }),
            ipv6: addrs.iter().find_map(|a| match a {
                IpAddr::V6(v6) => Some(*v6),
                IpAddr::V4(_) => None,
            }),
            passwords: peers
                .iter()
                .map(|i| {
                    config.peers[*i]
                        .password_secret
                        .as_ref()
                        .and_then(|r| self.passwords.get(&key(r)).cloned())
                })
                .collect(),
            peers,
        };
        if self.running.as_ref().is_some_and(|(s, _)| *s == want) {
            return self.running.as_ref().map(|(_, h)| h);
        }
        if self
            .failed
            .as_ref()
            .is_some_and(|(s, at)| *s == want && at.elapsed() < RETRY)
        {
            return self.running.as_ref().map(|(_, h)| h);
        }
        let info = NodeInfo {
            name: self.node.clone(),
            ipv4: want.ipv4,
            ipv6: want.ipv6,
            labels: labels.clone(),
        };
        let passwords = &self.passwords;
        let lookup = |r: &SecretRef| passwords.get(&key(r)).cloned();
        if let Some((started, handle)) = &mut self.running {
            match handle.reconfigure(config, &info, lookup).await {
                Ok(r) => {
                    if !(r.started.is_empty() && r.stopped.is_empty()) {
                        info!(node = %self.node, started = ?r.started, stopped = ?r.stopped,
                            kept = r.kept.len(), "BGP peers changed; restarted only those sessions");
                    }
                    for e in handle.skipped() {
                        warn!(node = %self.node, error = %e,
                            "BGP peer left out until its password Secret is fixed; the other peers run");
                    }
                    *started = want;
                    self.failed = None;
                }
                Err(e) => {
                    // The running sessions stay as they are; logged once per distinct failure.
                    if self.failed.as_ref().is_none_or(|(s, _)| *s != want) {
                        warn!(node = %self.node, error = %e, "cannot apply the new BGP configuration; the sessions keep the last one");
                    }
                    self.failed = Some((want, Instant::now()));
                }
            }
            return self.running.as_ref().map(|(_, h)| h);
        }
        match Speaker::spawn(config, &info, lookup) {
            Ok(handle) => {
                info!(node = %self.node, peers = want.peers.len() - handle.skipped().len(),
                    router_id = ?want.ipv4, "BGP speaker started");
                for e in handle.skipped() {
                    warn!(node = %self.node, error = %e,
                        "BGP peer left out until its password Secret is fixed; the other peers run");
                }
                self.failed = None;
                self.generation += 1;
                self.status = Some(handle.watch_status());
                self.running = Some((want, handle));
                self.running.as_ref().map(|(_, h)| h)
            }
            Err(e) => {
                // Logged once per distinct failure, retried every RETRY.
                if self.failed.as_ref().is_none_or(|(s, _)| *s != want) {
                    warn!(node = %self.node, error = %e, "cannot start the BGP speaker yet");
                }
                self.failed = Some((want, Instant::now()));
                None
            }
        }
    }

    /// Completes when a peer's session state or counters change (never while stopped), so
    /// the loop reacts to a session coming up — the "first advertised" event — at once.
    pub(crate) async fn status_changed(&mut self) {
        match &mut self.status {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    self.status = None;
                }
            }
            None => std::future::pending().await,
        }
    }

    /// The running speaker, if any.
    pub(crate) fn running(&self) -> Option<&SpeakerHandle> {
        self.running.as_ref().map(|(_, h)| h)
    }

    /// Withdraws everything (Cease to every peer) and stops.
    pub(crate) async fn shutdown(self) {
        if let Some((_, handle)) = self.running {
            handle.shutdown().await;
        }
    }
}

fn key(r: &SecretRef) -> SecretKey {
    (r.namespace.clone(), r.name.clone(), r.key.clone())
}

/// Reads the referenced Secret keys into `out`. A Secret or key that is gone removes the
/// password; any other failure (the API server briefly away) keeps the one read before, so
/// an API blip never restarts healthy sessions.
async fn read_passwords(
    client: &Client,
    refs: &[SecretRef],
    out: &mut BTreeMap<SecretKey, String>,
) {
    let mut done = std::collections::BTreeSet::new();
    for r in refs {
        if !done.insert(key(r)) {
            continue;
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
        // Bounded: this runs in the announcement loop, which must not wait on a slow API.
        let read = tokio::time::timeout(Duration::from_secs(5), api.get_opt(&r.name)).await;
        let Ok(read) = read else {
            warn!(secret = %r.name, namespace = %r.namespace, "reading a BGP password Secret timed out");
            continue;
        };
        match read {
            Ok(Some(secret)) => match secret.data.as_ref().and_then(|d| d.get(&r.key)) {
                Some(v) => {
                    let pw = String::from_utf8_lossy(&v.0);
                    // A trailing newline from `kubectl create secret --from-file` is never
                    // part of a router's password.
                    out.insert(key(r), pw.trim_end_matches(['\r', '\n']).to_string());
                }
                None => {
                    warn!(secret = %r.name, namespace = %r.namespace, key = %r.key,
                        "the BGP password Secret has no such key");
                    out.remove(&key(r));
                }
            },
            Ok(None) => {
                warn!(secret = %r.name, namespace = %r.namespace, "the BGP password Secret does not exist");
                out.remove(&key(r));
            }
            Err(e) => {
                warn!(secret = %r.name, namespace = %r.namespace, %e, "reading a BGP password Secret")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_holds_no_password() {
        let s = Started {
            config: BgpConfig::default(),
            peers: vec![0, 1],
            ipv4: None,
            ipv6: None,
            passwords: vec![Some("md5-secret-value".into()), None],
        };
        let text = format!("{s:?}");
        assert!(!text.contains("md5-secret-value"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}
