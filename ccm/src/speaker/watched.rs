//! The node agent's watches: a reflector's store per kind, fed by a task that also tells the
//! loop what changed (`tap`) and whether the API server answered last time it was asked.

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// A reflector's store, its task, and whether its watch last succeeded.
pub(super) struct Watched<K: Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub(super) store: Store<K>,
    pub(super) task: tokio::task::JoinHandle<()>,
    ok: Arc<AtomicBool>,
}

impl<K> Watched<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    /// Starts the watch; `tap` sees every event after the store has applied it. Each
    /// object goes through `trim` before the store keeps it ([`super::trim`]).
    pub(super) fn start(
        api: Api<K>,
        changed: &Arc<Notify>,
        trim: fn(&mut K),
        tap: impl Fn(&watcher::Event<K>) + Send + 'static,
    ) -> Self {
        let (store, writer) = reflector::store::<K>();
        let events = watcher(api, watcher::Config::default()).modify(trim);
        let stream = reflector::reflector(writer, events).default_backoff();
        let changed = changed.clone();
        let ok = Arc::new(AtomicBool::new(true));
        let flag = ok.clone();
        let task = tokio::spawn(stream.for_each(move |ev| {
            flag.store(ev.is_ok(), Ordering::Relaxed);
            if let Ok(ev) = &ev {
                tap(ev);
            }
            changed.notify_one();
            futures::future::ready(())
        }));
        Self { store, task, ok }
    }

    /// Whether the API server answered this watch last time it was asked: the L2
    /// split-brain rule lets a speaker that reaches the API keep announcing.
    pub(super) fn healthy(&self) -> bool {
        self.ok.load(Ordering::Relaxed)
    }
}
