//! The live pool task of the controller: watches AddressPools, L2AnnouncementPolicies and
//! BGPAdvertisements, and applies every change to the running allocator
//! (`VipManager::reconfigure`) and to the pools each class draws from, without a restart.
//!
//! Nothing held ever moves: the allocator re-homes each held address to whichever pool now
//! contains it, and keeps the ones in none as orphans, each reported once with an
//! `AddressOrphaned` Warning on its Service. Services still waiting for an address are
//! reconciled again at once (the `changes` counter the service controller watches).

use super::merge::{Merged, bgp_named, class_pools, l2_named, merge};
use crate::config::Config;
use crate::crd::{AddressPool, BGPAdvertisement, L2AnnouncementPolicy};
use crate::events::{Events, Reason};
use crate::k8s::{Api, Client, ListParams, ObjectReference, Store, watcher};
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, reflector};
use portway_provider::ServiceKey;
use portway_provider::ipam::{PoolConfig, VipManager};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// The allocator handles the task changes: the shared allocator, and the l2 and bgp
/// providers' own handles (made with [`VipManager::share`]) when those classes are on.
pub struct Handles {
    /// Any handle on the shared allocator (its pool list is changed).
    pub all: VipManager,
    /// The l2 provider's handle (its scope is changed).
    pub l2: Option<VipManager>,
    /// The bgp provider's handle.
    pub bgp: Option<VipManager>,
}

impl Handles {
    /// The handles of built providers.
    pub fn of(built: &crate::providers::Built) -> Self {
        Self {
            all: built.vips.share(),
            l2: built.l2.as_ref().map(VipManager::share),
            bgp: built.bgp.as_ref().map(VipManager::share),
        }
    }
}

/// What the file says, kept for every merge.
struct FileSide {
    pools: Vec<PoolConfig>,
    l2: Vec<String>,
    bgp: Vec<String>,
}

/// The caches of the three kinds.
#[derive(Clone)]
pub struct Caches {
    /// Every AddressPool.
    pub pools: Store<AddressPool>,
    /// Every L2AnnouncementPolicy.
    pub l2: Store<L2AnnouncementPolicy>,
    /// Every BGPAdvertisement.
    pub bgp: Store<BGPAdvertisement>,
}

/// The running task: `changes` counts applied pool changes; `merged` is the last merge.
pub struct LivePools {
    /// Bumped after every change applied to the allocator.
    pub changes: watch::Receiver<u64>,
    /// The last merge, for the status writer.
    pub merged: watch::Receiver<Merged>,
    /// The caches, for the status writer.
    pub caches: Caches,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LivePools {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A reflector over every `K`, signalling `tx` on each event.
pub(crate) fn cache<K>(
    client: &Client,
    tx: mpsc::UnboundedSender<()>,
) -> (Store<K>, impl Future<Output = ()> + use<K>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(move |e| {
            if let Err(e) = e {
                // Without the CRDs (not installed yet) the file's pools keep working.
                tracing::debug!(%e, "portway.dev watch");
            }
            let _ = tx.send(());
            futures::future::ready(())
        });
    (store, stream)
}

/// Starts watching and applies the resources present now before returning, so that the
/// service controller adopts existing Services against every pool (an address of a
/// resource's pool is not an orphan at start). Waits at most `settle` for the first lists
/// (the CRDs may not be installed: then the file's pools alone are used).
pub async fn start(
    client: Client,
    config: &Config,
    handles: Handles,
    events: Events,
    settle: Duration,
) -> LivePools {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (pools, p) = cache::<AddressPool>(&client, tx.clone());
    let (l2, l) = cache::<L2AnnouncementPolicy>(&client, tx.clone());
    let (bgp, b) = cache::<BGPAdvertisement>(&client, tx);
    let caches = Caches { pools, l2, bgp };
    let file = FileSide {
        pools: config.pools.clone(),
        l2: config
            .l2
            .as_ref()
            .map(|c| c.pools.clone())
            .unwrap_or_default(),
        bgp: config.bgp_pools(),
    };
    let (changes_tx, changes) = watch::channel(0u64);
    let (merged_tx, merged) = watch::channel(Merged {
        pools: file.pools.clone(),
        ..Merged::default()
    });
    let mut applier = Applier {
        file,
        handles,
        events,
        orphans: BTreeSet::new(),
        last: None,
        changes: changes_tx,
        merged: merged_tx,
    };
    let drivers = tokio::spawn(async move {
        futures::join!(p, l, b);
    });
    // Without the CRDs the lists never complete: do not hold the start-up up for them.
    let installed = !matches!(
        Api::<AddressPool>::all(client.clone())
            .list(&ListParams::default().limit(1))
            .await,
        Err(kube::Error::Api(ref e)) if e.code == 404
    );
    if !installed {
        info!("the portway.dev CRDs are not installed; using the file's pools until they are");
    } else if tokio::time::timeout(settle, async {
        crate::k8s::wait_until_ready(&caches.pools).await;
        crate::k8s::wait_until_ready(&caches.l2).await;
        crate::k8s::wait_until_ready(&caches.bgp).await;
    })
    .await
    .is_err()
    {
        warn!(
            "the portway.dev resources were not listed within {settle:?}; applying them as they come"
        );
    }
    applier.apply(&caches).await;
    let task_caches = caches.clone();
    let task = tokio::spawn(async move {
        let _drivers = AbortOnDrop(drivers);
        while rx.recv().await.is_some() {
            // A burst of events (a list, an apply of several objects) is one change.
            tokio::time::sleep(Duration::from_millis(20)).await;
            while rx.try_recv().is_ok() {}
            applier.apply(&task_caches).await;
        }
    });
    LivePools {
        changes,
        merged,
        caches,
        task,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Applies merges to the allocator and remembers what it applied.
struct Applier {
    file: FileSide,
    handles: Handles,
    events: Events,
    /// Orphans already reported, so each is warned about once.
    orphans: BTreeSet<(ServiceKey, IpAddr)>,
    /// The last applied (pools, l2 scope, bgp scope).
    last: Option<(Vec<PoolConfig>, Vec<String>, Vec<String>)>,
    changes: watch::Sender<u64>,
    merged: watch::Sender<Merged>,
}

impl Applier {
    async fn apply(&mut self, caches: &Caches) {
        let resources: Vec<AddressPool> =
            caches.pools.state().iter().map(|p| (**p).clone()).collect();
        let merged = merge(&self.file.pools, &resources);
        let l2_res: Vec<L2AnnouncementPolicy> =
            caches.l2.state().iter().map(|p| (**p).clone()).collect();
        let bgp_res: Vec<BGPAdvertisement> =
            caches.bgp.state().iter().map(|p| (**p).clone()).collect();
        let l2 = class_pools(&self.file.l2, &l2_named(&l2_res), &merged.pools);
        let bgp = class_pools(&self.file.bgp, &bgp_named(&bgp_res), &merged.pools);
        let now = (merged.pools.clone(), l2.clone(), bgp.clone());
        self.merged.send_replace(merged);
        if self.last.as_ref() == Some(&now) {
            return;
        }
        match self.handles.all.reconfigure(&now.0) {
            Ok(_) => {}
            Err(errors) => {
                // merge() validated the list; a refusal here is a bug, and nothing changed.
                let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                warn!(problems = %text.join("; "), "the merged pools were refused; keeping the old ones");
                return;
            }
        }
        if let Some(h) = &self.handles.l2 {
            h.set_pools(&l2);
        }
        if let Some(h) = &self.handles.bgp {
            h.set_pools(&bgp);
        }
        info!(pools = now.0.len(), ?l2, ?bgp, "address pools applied");
        self.last = Some(now);
        self.warn_orphans().await;
        self.changes.send_modify(|n| *n += 1);
    }

    /// One `AddressOrphaned` Warning per address that newly left every pool.
    async fn warn_orphans(&mut self) {
        let current: BTreeSet<(ServiceKey, IpAddr)> = self
            .handles
            .all
            .with_allocator(|a| a.orphans())
            .into_iter()
            .collect();
        for (key, ip) in current.difference(&self.orphans) {
            let regarding = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                namespace: Some(key.namespace.clone()),
                name: Some(key.name.clone()),
                ..ObjectReference::default()
            };
            let note = format!(
                "{ip} is no longer in any address pool (a pool was deleted or narrowed); the \
                 Service keeps it. Add it back to a pool, or delete spec.loadBalancerIP and \
                 recreate the Service to get a new address"
            );
            self.events
                .publish(&regarding, Reason::AddressOrphaned, &note)
                .await;
        }
        self.orphans = current;
    }
}
