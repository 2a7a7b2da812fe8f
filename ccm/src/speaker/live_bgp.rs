//! The BGP side of the speaker follows `BGPPeer`, `BGPAdvertisement` and `AddressPool`
//! resources live (issue 23), as [`super::live_pools`] does for the l2 side: every change
//! wakes the loop, which merges the file's `bgp` section with the resources
//! ([`super::bgp_merge`], the file wins) and hands the result to the runner, which restarts
//! only the sessions that differ. Without the CRDs installed the watches fail quietly and
//! the file's section is used alone.

use super::bgp_merge::{EffectiveBgp, effective};
use crate::crd::{AddressPool, BGPAdvertisement, BGPPeer};
use crate::pools::merge::merge;
use futures::FutureExt;
use kube::Client;
use kube::runtime::reflector::Store;
use portway_bgp::BgpConfig;
use portway_provider::ipam::PoolConfig;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

/// The watched resources; dropping it stops the watches.
pub(crate) struct LiveBgp {
    peers: Store<BGPPeer>,
    advertisements: Store<BGPAdvertisement>,
    pools: Store<AddressPool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LiveBgp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LiveBgp {
    /// Starts the watches; every change wakes the speaker's loop through `changed`. With
    /// `shared_pools` (the L2 side's AddressPool cache, when it runs) no second AddressPool
    /// watch is opened: that cache already wakes the loop.
    pub(crate) fn start(
        client: &Client,
        changed: Arc<Notify>,
        shared_pools: Option<Store<AddressPool>>,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (peers, p) = crate::pools::watch::cache::<BGPPeer>(client, tx.clone());
        let (advertisements, a) =
            crate::pools::watch::cache::<BGPAdvertisement>(client, tx.clone());
        let (pools, o) = match shared_pools {
            Some(store) => (store, futures::future::ready(()).boxed()),
            None => {
                let (store, watch) = crate::pools::watch::cache::<AddressPool>(client, tx);
                (store, watch.boxed())
            }
        };
        let task = tokio::spawn(async move {
            let wake = async move {
                while rx.recv().await.is_some() {
                    changed.notify_one();
                }
            };
            futures::join!(p, a, o, wake);
        });
        Self {
            peers,
            advertisements,
            pools,
            task,
        }
    }

    /// The pools (file and resources, merged as the controller merges them) and the bgp
    /// configuration for a node with `labels`.
    pub(crate) fn effective(
        &self,
        file_pools: &[PoolConfig],
        file: &BgpConfig,
        labels: &BTreeMap<String, String>,
    ) -> (Vec<PoolConfig>, EffectiveBgp) {
        let resources: Vec<AddressPool> =
            self.pools.state().iter().map(|p| (**p).clone()).collect();
        let pools = merge(file_pools, &resources).pools;
        let peers: Vec<BGPPeer> = self.peers.state().iter().map(|p| (**p).clone()).collect();
        let advertisements: Vec<BGPAdvertisement> = self
            .advertisements
            .state()
            .iter()
            .map(|a| (**a).clone())
            .collect();
        (pools, effective(file, &peers, &advertisements, labels))
    }
}

/// The pools and bgp configuration of this pass: the file's alone without the watches
/// (or before this node's Node is seen), merged with the resources otherwise. A resource
/// peer left out is logged once per reason (`warned` remembers), since the loop runs
/// every few seconds.
pub(crate) fn current(
    file_pools: &[PoolConfig],
    file: Option<&BgpConfig>,
    live: Option<&LiveBgp>,
    me: Option<&k8s_openapi::api::core::v1::Node>,
    warned: &mut BTreeMap<String, String>,
) -> Option<(Vec<PoolConfig>, EffectiveBgp)> {
    let file = file?;
    let (Some(live), Some(me)) = (live, me) else {
        let eff = EffectiveBgp {
            config: file.clone(),
            ..EffectiveBgp::default()
        };
        return Some((file_pools.to_vec(), eff));
    };
    let (pools, eff) = live.effective(file_pools, file, kube::ResourceExt::labels(me));
    for (name, why) in &eff.refused {
        if warned.get(name) != Some(why) {
            tracing::warn!(peer = %name, reason = %why, "BGPPeer left out on this node");
        }
    }
    *warned = eff.refused.clone();
    Some((pools, eff))
}
