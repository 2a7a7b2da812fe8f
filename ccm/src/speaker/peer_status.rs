//! Each speaker writes its own node's entry in `status.sessions` of every BGPPeer that
//! selects it: the session state and, when it is not Established, why.
//!
//! Many speakers write one object, so each uses server-side apply with a field manager of
//! its own (`portway-speaker/<node>`) on a list the schema declares a map keyed by `node`
//! (`x-kubernetes-list-type: map`): the server merges the entries and each speaker owns
//! only its own, without read-modify-write races. An entry is written only when its state
//! or message changes (never per keepalive); a peer that stops selecting the node gets an
//! empty apply, which removes the entry this manager owned. There is no summed count
//! ([`crate::crd::bgp::BGPPeerStatus`] says why); `kubectl get bgppeers` lists every node's
//! state.

use super::bgp_merge::EffectiveBgp;
use crate::crd::BGPPeer;
use crate::crd::bgp::SessionState;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use portway_bgp::{PeerStatus, SpeakerError, State};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{debug, info};

/// The field manager of `node`'s speaker.
pub(crate) fn manager(node: &str) -> String {
    format!("portway-speaker/{node}")
}

/// This node's entry for every BGPPeer that selects it, from the running sessions.
pub(crate) fn entries(
    node: &str,
    eff: &EffectiveBgp,
    states: &[PeerStatus],
    skipped: &[SpeakerError],
) -> BTreeMap<String, SessionState> {
    let mut out = BTreeMap::new();
    for (name, at) in &eff.named {
        let skip = skipped.iter().find(|e| match e {
            SpeakerError::MissingPassword { peer, .. } | SpeakerError::PasswordTooLong { peer } => {
                *peer == at.ip()
            }
            _ => false,
        });
        let (state, message) = match (states.iter().find(|s| s.address == *at), skip) {
            (_, Some(e)) => (State::Idle.to_string(), Some(e.to_string())),
            (Some(s), None) => (
                s.state.to_string(),
                (s.state != State::Established)
                    .then(|| s.stats.last_error.clone())
                    .flatten(),
            ),
            (None, None) => (
                State::Idle.to_string(),
                Some("the BGP speaker is not running on this node (see its log)".into()),
            ),
        };
        out.insert(
            name.clone(),
            SessionState {
                node: node.to_string(),
                state,
                message,
            },
        );
    }
    for (name, why) in &eff.refused {
        out.insert(
            name.clone(),
            SessionState {
                node: node.to_string(),
                state: State::Idle.to_string(),
                message: Some(why.clone()),
            },
        );
    }
    out
}

/// Writes this node's entries when they change.
pub(crate) struct PeerStatusWriter {
    api: Api<BGPPeer>,
    node: String,
    written: BTreeMap<String, SessionState>,
}

impl PeerStatusWriter {
    pub(crate) fn new(client: Client, node: String) -> Self {
        Self {
            api: Api::all(client),
            node,
            written: BTreeMap::new(),
        }
    }

    /// Applies the entries that differ from the last written ones and removes the entries
    /// of peers no longer in `want`. A failed write is tried again on the next pass.
    pub(crate) async fn sync(&mut self, want: BTreeMap<String, SessionState>) {
        let gone: Vec<String> = self
            .written
            .keys()
            .filter(|n| !want.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            // A deleted BGPPeer answers 404: nothing left to remove either way.
            let _ = self.apply(&name, None).await;
            self.written.remove(&name);
        }
        for (name, entry) in want {
            if self.written.get(&name) == Some(&entry) {
                continue;
            }
            if self.apply(&name, Some(&entry)).await {
                info!(peer = %name, node = %self.node, state = %entry.state, "BGPPeer session status");
                self.written.insert(name, entry);
            }
        }
    }

    async fn apply(&self, name: &str, entry: Option<&SessionState>) -> bool {
        let sessions: Vec<&SessionState> = entry.into_iter().collect();
        let body = json!({
            "apiVersion": "portway.dev/v1alpha1",
            "kind": "BGPPeer",
            "metadata": {"name": name},
            "status": {"sessions": sessions},
        });
        let params = PatchParams::apply(&manager(&self.node)).force();
        // Bounded: this runs in the announcement loop, which must not wait on a slow API.
        let patch = Patch::Apply(&body);
        let write = self.api.patch_status(name, &params, &patch);
        match tokio::time::timeout(Duration::from_secs(5), write).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                debug!(peer = %name, %e, "writing the BGPPeer session status");
                false
            }
            Err(_) => {
                debug!(peer = %name, "writing the BGPPeer session status timed out");
                false
            }
        }
    }
}
