//! The hostport provider: applies the svclb DaemonSet and computes the status from its
//! pods, the eligible nodes and (under `Local` policy) the endpoints the controller hands
//! it. It watches only its own svclb pods; Services, EndpointSlices and Nodes come from
//! the controller, which calls `ensure` again when the endpoints or a node's addresses
//! change.

use crate::api::HostportApi;
use crate::config::HostportConfig;
use crate::daemonset::{
    ENABLELB, SPEC_HASH, SVCNAME, SVCNAMESPACE, build_daemonset, daemonset_name,
};
use crate::status::{PodView, compute_status, local_nodes};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use portway_provider::{
    EndpointsUse, LbNode, LbService, LbStatus, LoadBalancerProvider, ProviderError, ServiceKey,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn api_error(what: &str, e: kube::Error) -> ProviderError {
    match &e {
        kube::Error::Api(s) if matches!(s.code, 400 | 403 | 422) => {
            ProviderError::invalid("hostport", format!("{what}: {}", s.message))
        }
        _ => ProviderError::transient(format!("{what}: {e}")),
    }
}

/// How often a DaemonSet update is retried on a fresh read when another writer (the
/// DaemonSet controller writing its status) got in between.
const CONFLICT_RETRIES: usize = 3;

/// The `portway.dev/hostport` provider.
pub struct HostportProvider {
    api: HostportApi,
    cfg: HostportConfig,
    pods: Store<Pod>,
    managed: Shared<BTreeSet<ServiceKey>>,
    triggers: Mutex<Option<mpsc::UnboundedReceiver<ServiceKey>>>,
    prepared: AtomicBool,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for HostportProvider {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn wait_ready<K>(store: &Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    // kube-runtime 5.0's readiness future wakes only its last poller; re-poll on a timer.
    while tokio::time::timeout(Duration::from_millis(50), store.wait_until_ready())
        .await
        .is_err()
    {}
}

impl HostportProvider {
    /// Starts the cache of svclb pods in the configured namespace (not when the class is
    /// switched off: then the provider only removes what is left). Must be called inside a
    /// tokio runtime.
    pub fn new(api: HostportApi, cfg: HostportConfig) -> Self {
        let managed: Shared<BTreeSet<ServiceKey>> = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let (pods, writer) = reflector::store::<Pod>();
        let stream = reflector::reflector(
            writer,
            watcher(api.pods(), watcher::Config::default().labels(SVCNAME)),
        )
        .default_backoff()
        .touched_objects();
        let m = managed.clone();
        let enabled = cfg.enabled;
        let watch_pods = async move {
            if enabled {
                stream
                    .for_each(move |p| {
                        if let Ok(p) = p {
                            let labels = p.labels();
                            if let (Some(ns), Some(name)) =
                                (labels.get(SVCNAMESPACE), labels.get(SVCNAME))
                            {
                                let key = ServiceKey::new(ns.clone(), name.clone());
                                if lock(&m).contains(&key) {
                                    let _ = tx.send(key);
                                }
                            }
                        }
                        futures::future::ready(())
                    })
                    .await;
            }
        };
        let task = tokio::spawn(watch_pods);
        HostportProvider {
            api,
            cfg,
            pods,
            managed,
            triggers: Mutex::new(Some(rx)),
            prepared: AtomicBool::new(false),
            tasks: vec![task],
        }
    }

    /// The svclb ServiceAccount (and its namespace) exist (k3s creates both).
    async fn prepare(&self) -> Result<(), ProviderError> {
        if self.prepared.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.api.ensure_account().await?;
        self.prepared.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Applies the DaemonSet with one write when it differs, none when in sync; returns
    /// k3s's note when it wrote.
    async fn apply(
        &self,
        svc: &LbService,
        nodes: &[LbNode],
    ) -> Result<Option<String>, ProviderError> {
        // Allow-list mode: some eligible node carries the enablelb label (k3s#14625).
        let allow_list = nodes.iter().any(|n| n.labels.contains_key(ENABLELB));
        let desired = build_daemonset(svc, &self.cfg, allow_list)?;
        let name = desired.name_any();
        let want_hash = desired.annotations().get(SPEC_HASH).cloned();
        let api = self.api.daemonsets();
        for _ in 0..CONFLICT_RETRIES {
            let existing = api
                .get_opt(&name)
                .await
                .map_err(|e| api_error("reading the svclb DaemonSet", e))?;
            let result = match existing {
                None => {
                    self.prepare().await?;
                    api.create(&PostParams::default(), &desired)
                        .await
                        .map(|_| ())
                }
                Some(e) if e.annotations().get(SPEC_HASH) != want_hash.as_ref() => {
                    let mut next = desired.clone();
                    next.metadata.resource_version = e.metadata.resource_version.clone();
                    api.replace(&name, &PostParams::default(), &next)
                        .await
                        .map(|_| ())
                }
                Some(_) => return Ok(None),
            };
            match result {
                Ok(()) => {
                    info!(daemonset = %name, service = %svc.key, "applied svclb DaemonSet");
                    return Ok(Some(format!(
                        "Applied LoadBalancer DaemonSet {}/{name}",
                        self.cfg.namespace
                    )));
                }
                // Created meanwhile, or its status written since our read: read again.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(api_error("writing the svclb DaemonSet", e)),
            }
        }
        Err(ProviderError::transient(
            "the svclb DaemonSet kept changing under the update; retrying",
        ))
    }

    fn status(&self, svc: &LbService, nodes: &[LbNode]) -> LbStatus {
        let pods: Vec<PodView> = self
            .pods
            .state()
            .iter()
            .filter_map(|p| PodView::of(p))
            .collect();
        compute_status(svc, &pods, nodes, local_nodes(svc).as_ref()).0
    }
}

#[async_trait]
impl LoadBalancerProvider for HostportProvider {
    fn class(&self) -> &str {
        crate::CLASS
    }

    /// Remembers the Services it serves and deletes the svclb DaemonSets of any other: a
    /// Service deleted, recreated (new uid) or moved to another class while no controller
    /// ran. With the class disabled, every svclb DaemonSet goes (k3s `deleteAllDaemonsets`).
    async fn adopt(&self, existing: &[LbService]) -> Vec<(ServiceKey, ProviderError)> {
        lock(&self.managed).extend(existing.iter().map(|s| s.key.clone()));
        let keep: BTreeSet<String> = if self.cfg.enabled {
            existing
                .iter()
                .map(|s| daemonset_name(&s.key.name, &s.uid))
                .collect()
        } else {
            BTreeSet::new()
        };
        let list = match self
            .api
            .daemonsets()
            .list(&ListParams::default().labels(SVCNAME))
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                warn!(%e, "listing svclb DaemonSets for orphan cleanup");
                return Vec::new();
            }
        };
        for ds in list {
            let name = ds.name_any();
            if keep.contains(&name) {
                continue;
            }
            info!(daemonset = %name, "deleting svclb DaemonSet of no Service of this class");
            if let Err(e) = self
                .api
                .daemonsets()
                .delete(&name, &DeleteParams::background())
                .await
            {
                warn!(daemonset = %name, %e, "deleting an orphaned svclb DaemonSet");
            }
        }
        Vec::new()
    }

    async fn ensure(&self, svc: &LbService, nodes: &[LbNode]) -> Result<LbStatus, ProviderError> {
        lock(&self.managed).insert(svc.key.clone());
        let note = self.apply(svc, nodes).await?;
        wait_ready(&self.pods).await;
        let mut status = self.status(svc, nodes);
        status.notes.extend(note);
        Ok(status)
    }

    async fn update(&self, svc: &LbService, nodes: &[LbNode]) -> Result<(), ProviderError> {
        // The DaemonSet follows the nodes by itself; only the enablelb mode can change it.
        lock(&self.managed).insert(svc.key.clone());
        self.apply(svc, nodes).await.map(|_| ())
    }

    async fn ensure_deleted(&self, svc: &LbService) -> Result<(), ProviderError> {
        lock(&self.managed).remove(&svc.key);
        let name = daemonset_name(&svc.key.name, &svc.uid);
        match self
            .api
            .daemonsets()
            .delete(&name, &DeleteParams::background())
            .await
        {
            Ok(_) => {
                info!(daemonset = %name, service = %svc.key, "deleted svclb DaemonSet");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_error("deleting the svclb DaemonSet", e)),
        }
    }

    fn endpoints_use(&self) -> EndpointsUse {
        EndpointsUse::LocalPolicy
    }

    fn follows_node_details(&self) -> bool {
        true
    }

    fn triggers(&self) -> Option<BoxStream<'static, ServiceKey>> {
        let mut rx = lock(&self.triggers).take()?;
        Some(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed())
    }
}
