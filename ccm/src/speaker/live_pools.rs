//! The pools the L2 speaker may announce from, live (issue 23).
//!
//! The controller allocates from the file's pools and from `AddressPool` resources, and
//! the l2 class draws from the pools `l2.pools` and the `L2AnnouncementPolicy` resources
//! name ([`crate::pools`]). The speaker's guard must agree, or an address the controller
//! handed out from a pool made with `kubectl apply` would be refused as "outside the l2
//! pools". So the speaker watches the same two kinds and computes the same merge on every
//! pass: no restart, and the file still wins over a resource that clashes with it. Without
//! the CRDs installed the watches fail quietly and the file's pools are used alone.

use crate::crd::{AddressPool, L2AnnouncementPolicy};
use crate::pools::merge::{class_pools, l2_named, merge};
use kube::Client;
use kube::runtime::reflector::Store;
use portway_l2::L2Config;
use portway_provider::ipam::PoolConfig;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

/// The watched resources; dropping it stops the watches.
pub(crate) struct LivePools {
    pools: Store<AddressPool>,
    policies: Store<L2AnnouncementPolicy>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LivePools {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LivePools {
    /// Starts both watches; every change wakes the speaker's loop through `changed`.
    pub(crate) fn start(client: &Client, changed: Arc<Notify>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (pools, p) = crate::pools::watch::cache::<AddressPool>(client, tx.clone());
        let (policies, l) = crate::pools::watch::cache::<L2AnnouncementPolicy>(client, tx);
        let task = tokio::spawn(async move {
            let wake = async move {
                while rx.recv().await.is_some() {
                    changed.notify_one();
                }
            };
            futures::join!(p, l, wake);
        });
        Self {
            pools,
            policies,
            task,
        }
    }

    /// The AddressPool cache, for the BGP side to read instead of opening its own watch.
    pub(crate) fn pool_store(&self) -> Store<AddressPool> {
        self.pools.clone()
    }

    /// The pools to check addresses against and the l2 configuration with the pool names
    /// the class uses now (the file's `l2.pools` and those the policies name).
    pub(crate) fn effective(
        &self,
        file_pools: &[PoolConfig],
        l2: &L2Config,
    ) -> (Vec<PoolConfig>, L2Config) {
        let resources: Vec<AddressPool> =
            self.pools.state().iter().map(|p| (**p).clone()).collect();
        let merged = merge(file_pools, &resources);
        let policies = self.policies();
        let mut cfg = l2.clone();
        cfg.pools = class_pools(&l2.pools, &l2_named(&policies), &merged.pools);
        (merged.pools, cfg)
    }

    /// The L2AnnouncementPolicies now (their nodes and interfaces: [`super::l2_policy`]).
    pub(crate) fn policies(&self) -> Vec<L2AnnouncementPolicy> {
        self.policies
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect()
    }
}
