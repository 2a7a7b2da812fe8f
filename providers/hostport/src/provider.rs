//! The hostport provider: applies the svclb DaemonSet, reads pods, EndpointSlices and Nodes
//! from reflector caches, and asks the controller to re-sync a Service when any of them
//! changes for it.

use crate::config::HostportConfig;
use crate::daemonset::{
    ENABLELB, SPEC_HASH, SVCNAME, SVCNAMESPACE, build_daemonset, daemonset_name,
};
use crate::status::{PodView, compute_status};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use portway_provider::{
    LbNode, LbService, LbStatus, LoadBalancerProvider, ProviderError, ServiceKey, TrafficPolicy,
};
use std::collections::{BTreeMap, BTreeSet};
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

fn api_error(what: &str, e: kube::Error) -> ProviderError {
    match &e {
        kube::Error::Api(s) if matches!(s.code, 400 | 403 | 422) => {
            ProviderError::invalid("hostport", format!("{what}: {}", s.message))
        }
        _ => ProviderError::transient(format!("{what}: {e}")),
    }
}

/// The `portway.dev/hostport` provider.
pub struct HostportProvider {
    client: Client,
    cfg: HostportConfig,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    managed: Shared<BTreeSet<ServiceKey>>,
    triggers: Mutex<Option<mpsc::UnboundedReceiver<ServiceKey>>>,
    account_ready: AtomicBool,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for HostportProvider {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The node facts whose change can change a hostport status or node selector.
fn node_fingerprint(n: &Node) -> String {
    let addrs = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .map(|x| format!("{}={}", x.type_, x.address))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    format!("{:?}|{addrs}", n.labels())
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
    /// Starts the caches (svclb pods in the configured namespace, all EndpointSlices and
    /// Nodes). Must be called inside a tokio runtime.
    pub fn new(client: Client, cfg: HostportConfig) -> Self {
        let managed: Shared<BTreeSet<ServiceKey>> = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();

        let (pods, writer) = reflector::store::<Pod>();
        let stream = reflector::reflector(
            writer,
            watcher(
                Api::<Pod>::namespaced(client.clone(), &cfg.namespace),
                watcher::Config::default().labels(SVCNAME),
            ),
        )
        .default_backoff()
        .touched_objects();
        let (m, t) = (managed.clone(), tx.clone());
        tasks.push(tokio::spawn(stream.for_each(move |p| {
            if let Ok(p) = p {
                let labels = p.labels();
                if let (Some(ns), Some(name)) = (labels.get(SVCNAMESPACE), labels.get(SVCNAME)) {
                    let key = ServiceKey::new(ns.clone(), name.clone());
                    if lock(&m).contains(&key) {
                        let _ = t.send(key);
                    }
                }
            }
            futures::future::ready(())
        })));

        let (slices, writer) = reflector::store::<EndpointSlice>();
        let stream = reflector::reflector(
            writer,
            watcher(
                Api::<EndpointSlice>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .touched_objects();
        let (m, t) = (managed.clone(), tx.clone());
        tasks.push(tokio::spawn(stream.for_each(move |s| {
            if let Ok(s) = s
                && let (Some(ns), Some(name)) = (
                    s.namespace(),
                    s.labels().get(portway_provider::SERVICE_NAME_LABEL),
                )
            {
                let key = ServiceKey::new(ns, name.clone());
                if lock(&m).contains(&key) {
                    let _ = t.send(key);
                }
            }
            futures::future::ready(())
        })));

        let (nodes, writer) = reflector::store::<Node>();
        let stream = reflector::reflector(
            writer,
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .touched_objects();
        let (m, t) = (managed.clone(), tx);
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        tasks.push(tokio::spawn(stream.for_each(move |n| {
            if let Ok(n) = n {
                let fp = node_fingerprint(&n);
                if seen.insert(n.name_any(), fp.clone()).as_ref() != Some(&fp) {
                    for key in lock(&m).iter() {
                        let _ = t.send(key.clone());
                    }
                }
            }
            futures::future::ready(())
        })));

        HostportProvider {
            client,
            cfg,
            pods,
            slices,
            nodes,
            managed,
            triggers: Mutex::new(Some(rx)),
            account_ready: AtomicBool::new(false),
            tasks,
        }
    }

    fn daemonsets(&self) -> Api<DaemonSet> {
        Api::namespaced(self.client.clone(), &self.cfg.namespace)
    }

    async fn ensure_account(&self) -> Result<(), ProviderError> {
        if self.account_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        match api.get_opt("svclb").await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "svclb", "namespace": self.cfg.namespace}
                }))
                .map_err(|e| ProviderError::transient(e.to_string()))?;
                match api.create(&PostParams::default(), &sa).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(api_error("creating ServiceAccount svclb", e)),
                }
            }
            Err(e) => return Err(api_error("reading ServiceAccount svclb", e)),
        }
        self.account_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Applies the DaemonSet with one write when it differs; none when in sync.
    async fn apply(&self, svc: &LbService) -> Result<(), ProviderError> {
        wait_ready(&self.nodes).await;
        let allow_list = self
            .nodes
            .state()
            .iter()
            .any(|n| n.labels().contains_key(ENABLELB));
        let desired = build_daemonset(svc, &self.cfg, allow_list)?;
        let name = desired.name_any();
        let want_hash = desired.annotations().get(SPEC_HASH).cloned();
        let api = self.daemonsets();
        match api
            .get_opt(&name)
            .await
            .map_err(|e| api_error("reading the svclb DaemonSet", e))?
        {
            None => {
                self.ensure_account().await?;
                match api.create(&PostParams::default(), &desired).await {
                    Ok(_) => {
                        info!(daemonset = %name, service = %svc.key, "created svclb DaemonSet")
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        return Err(ProviderError::transient(
                            "the DaemonSet appeared concurrently; retrying",
                        ));
                    }
                    Err(e) => return Err(api_error("creating the svclb DaemonSet", e)),
                }
            }
            Some(existing) if existing.annotations().get(SPEC_HASH) != want_hash.as_ref() => {
                let mut next = desired;
                next.metadata.resource_version = existing.metadata.resource_version.clone();
                api.replace(&name, &PostParams::default(), &next)
                    .await
                    .map_err(|e| api_error("updating the svclb DaemonSet", e))?;
                info!(daemonset = %name, service = %svc.key, "updated svclb DaemonSet");
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn status(&self, svc: &LbService, nodes: &[LbNode]) -> LbStatus {
        let pods: Vec<PodView> = self
            .pods
            .state()
            .iter()
            .filter_map(|p| PodView::of(p))
            .collect();
        let local = (svc.external_traffic_policy == TrafficPolicy::Local).then(|| {
            self.slices
                .state()
                .iter()
                .filter(|s| {
                    s.namespace().as_deref() == Some(svc.key.namespace.as_str())
                        && s.labels().get(portway_provider::SERVICE_NAME_LABEL)
                            == Some(&svc.key.name)
                })
                .flat_map(|s| s.endpoints.clone())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .filter_map(|e| e.node_name)
                .collect::<BTreeSet<String>>()
        });
        compute_status(svc, &pods, nodes, local.as_ref()).0
    }
}

#[async_trait]
impl LoadBalancerProvider for HostportProvider {
    fn class(&self) -> &str {
        crate::CLASS
    }

    async fn adopt(&self, existing: &[LbService]) -> Vec<(ServiceKey, ProviderError)> {
        {
            let mut m = lock(&self.managed);
            m.extend(existing.iter().map(|s| s.key.clone()));
        }
        // Orphans: svclb DaemonSets whose Service is gone (or was recreated with a new uid).
        let list = match self
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
            let labels = ds.labels();
            let (Some(ns), Some(name)) = (labels.get(SVCNAMESPACE), labels.get(SVCNAME)) else {
                continue;
            };
            let svc = Api::<Service>::namespaced(self.client.clone(), ns)
                .get_opt(name)
                .await;
            let orphan = match svc {
                Ok(None) => true,
                Ok(Some(s)) => daemonset_name(name, &s.uid().unwrap_or_default()) != ds.name_any(),
                Err(_) => false,
            };
            if orphan {
                info!(daemonset = %ds.name_any(), "deleting orphaned svclb DaemonSet");
                let _ = self
                    .daemonsets()
                    .delete(&ds.name_any(), &DeleteParams::default())
                    .await;
            }
        }
        Vec::new()
    }

    async fn get(&self, svc: &LbService) -> Result<Option<LbStatus>, ProviderError> {
        let name = daemonset_name(&svc.key.name, &svc.uid);
        let found = self
            .daemonsets()
            .get_opt(&name)
            .await
            .map_err(|e| api_error("reading the svclb DaemonSet", e))?;
        Ok(found.map(|_| LbStatus::default()))
    }

    async fn ensure(&self, svc: &LbService, nodes: &[LbNode]) -> Result<LbStatus, ProviderError> {
        lock(&self.managed).insert(svc.key.clone());
        self.apply(svc).await?;
        wait_ready(&self.pods).await;
        wait_ready(&self.slices).await;
        Ok(self.status(svc, nodes))
    }

    async fn update(&self, svc: &LbService, _nodes: &[LbNode]) -> Result<(), ProviderError> {
        // The DaemonSet follows the nodes by itself; only the enablelb mode can change it.
        lock(&self.managed).insert(svc.key.clone());
        self.apply(svc).await
    }

    async fn ensure_deleted(&self, svc: &LbService) -> Result<(), ProviderError> {
        lock(&self.managed).remove(&svc.key);
        let name = daemonset_name(&svc.key.name, &svc.uid);
        match self
            .daemonsets()
            .delete(&name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_error("deleting the svclb DaemonSet", e)),
        }
    }

    fn triggers(&self) -> Option<BoxStream<'static, ServiceKey>> {
        let rx = lock(&self.triggers).take()?;
        Some(tokio_stream_from(rx))
    }
}

fn tokio_stream_from(
    mut rx: mpsc::UnboundedReceiver<ServiceKey>,
) -> BoxStream<'static, ServiceKey> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
