//! The service controller: class dispatch, finalizer, status and events.
//!
//! What is watched: Services (kube-runtime `Controller`), Nodes (for the
//! eligible node set) and Namespaces (for pool namespace selectors). What is
//! derived: per Service, a fingerprint of the fields that matter and the node
//! set generation last handed to its provider. The provider is called only
//! when one of them moved, or when the provider itself asks (`triggers()`).
//! A Service whose pools are exhausted is retried with backoff, and at once
//! when a cleanup or a move releases an address.
//!
//! ```text
//!  Service watch ──► Controller ──► reconcile ──► Registry[class] ──► provider
//!  Node watch ──► NodeSet (generation) ──┘ ▲
//!  provider.triggers() ───────────────────┘ (forced ensure)
//! ```
//!
//! Before the first reconcile every provider's `adopt` gets the Services it
//! already serves, so allocators are rebuilt from published status first.

mod dispatch;
mod finalizer;
mod nodes;
mod reconcile;
pub mod rules;
mod status;
pub mod view;

use dispatch::Handle;
pub use dispatch::{Call, Registry, Reply};
pub use nodes::NodeSet;
pub use reconcile::{backoff_delay, minimal_view};

use crate::config::ServiceControllerConfig;
use crate::events::{Events, Kind};
use crate::k8s::{
    Api, Controller, Namespace, Node, ObjectRef, ResourceExt, Service, Store, watcher,
};
use crate::metrics::Metrics;
use futures::{Future, StreamExt};
use kube::Client;
use kube::runtime::{WatchStreamExt, reflector};
use portway_provider::{LbService, LoadBalancerProvider, ProviderError, ServiceKey};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

/// What the controller remembers of a Service between reconciles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SvcState {
    /// The class whose provider last handled it (for cleanup after the class
    /// disappears from the spec, e.g. on a type change).
    pub class: String,
    /// Fingerprint of the spec last ensured successfully.
    pub ensured: Option<u64>,
    /// Fingerprint of a spec that got a needs-a-fix error: wait for a change.
    pub parked: Option<u64>,
    /// Node set generation last handed to the provider.
    pub node_generation: u64,
    /// Consecutive transient failures, for backoff.
    pub failures: u32,
    /// The last ensure found its pools exhausted: retried with backoff, and at
    /// once when a cleanup may have released an address.
    pub waiting_for_address: bool,
}

/// Shared state of the reconciles.
pub struct Context {
    client: Client,
    registry: Registry,
    default_class: String,
    cfg: ServiceControllerConfig,
    events: Events,
    metrics: Arc<Metrics>,
    namespaces: Store<Namespace>,
    nodes: watch::Receiver<NodeSet>,
    ready: watch::Receiver<bool>,
    state: Mutex<HashMap<ObjectRef<Service>, SvcState>>,
    forced: Mutex<HashSet<ObjectRef<Service>>>,
    /// Schedules a reconcile outside the watch (provider triggers, retries).
    requeue: mpsc::UnboundedSender<ObjectRef<Service>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code path panics while holding these locks; recover the data anyway.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Context {
    fn take_forced(&self, key: &ObjectRef<Service>) -> bool {
        lock(&self.forced).remove(key)
    }

    fn state_of(&self, key: &ObjectRef<Service>) -> Option<SvcState> {
        lock(&self.state).get(key).cloned()
    }

    fn set_state(&self, key: &ObjectRef<Service>, st: SvcState) {
        lock(&self.state).insert(key.clone(), st);
    }

    /// Changes an existing state (or a default one) and returns the failure count.
    fn update_state(&self, key: &ObjectRef<Service>, f: impl FnOnce(&mut SvcState)) -> u32 {
        let mut map = lock(&self.state);
        let st = map.entry(key.clone()).or_default();
        f(st);
        st.failures
    }

    fn upsert_state(
        &self,
        key: &ObjectRef<Service>,
        class: &str,
        f: impl FnOnce(&mut SvcState),
    ) -> u32 {
        self.update_state(key, |st| {
            st.class = class.to_string();
            f(st)
        })
    }

    fn forget(&self, key: &ObjectRef<Service>) {
        lock(&self.state).remove(key);
    }

    /// Reconciles at once every Service waiting for an address: a cleanup has
    /// just released what it held, which may be the address one of them needs.
    fn retry_waiting_for_address(&self) {
        let waiting: Vec<_> = lock(&self.state)
            .iter()
            .filter(|(_, st)| st.waiting_for_address)
            .map(|(k, _)| k.clone())
            .collect();
        for key in waiting {
            // The channel closes only when the controller stops.
            let _ = self.requeue.send(key);
        }
    }

    /// One provider call through the middleware, counted and timed.
    async fn call(&self, class: &str, handle: &Handle, call: Call) -> Result<Reply, ProviderError> {
        let op = call.op();
        let started = std::time::Instant::now();
        let result = handle.call(call).await;
        self.metrics
            .observe_provider_call(class, op, result.is_ok(), started.elapsed());
        result
    }

    /// Services waiting for a retry, for the metric (an exhausted pool counts as a
    /// failure too).
    fn retries_pending(&self) -> usize {
        lock(&self.state)
            .values()
            .filter(|st| st.failures > 0)
            .count()
    }

    fn backoff(&self, failures: u32, e: &ProviderError) -> Duration {
        backoff_delay(
            failures,
            e,
            self.cfg.min_retry_delay,
            self.cfg.max_retry_delay,
        )
    }

    fn services(&self, svc: &Service) -> Api<Service> {
        reconcile::services_api(&self.client, svc)
    }

    fn namespace_labels(&self, svc: &Service) -> BTreeMap<String, String> {
        let ns = svc.namespace().unwrap_or_default();
        self.namespaces
            .get(&ObjectRef::new(&ns))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    async fn publish(&self, svc: &Service, kind: Kind, reason: &str, note: &str) {
        let action = match reason {
            "EnsuringLoadBalancer" | "EnsuredLoadBalancer" => "EnsureLoadBalancer",
            "DeletingLoadBalancer" | "DeletedLoadBalancer" | "DeleteLoadBalancerFailed" => {
                "EnsureLoadBalancerDeleted"
            }
            "UpdatedLoadBalancer" | "UpdateLoadBalancerFailed" => "UpdateLoadBalancer",
            _ => "SyncLoadBalancer",
        };
        self.events
            .publish(&reconcile::reference(svc), kind, reason, action, note)
            .await;
    }
}

/// The service controller with its providers, ready to run.
pub struct ServiceController {
    client: Client,
    registry: Registry,
    providers: Vec<Arc<dyn LoadBalancerProvider>>,
    default_class: String,
    cfg: ServiceControllerConfig,
    workers: u16,
    metrics: Arc<Metrics>,
    instance: String,
}

impl ServiceController {
    /// A controller dispatching to `providers` by their class.
    pub fn new(
        client: Client,
        providers: Vec<Arc<dyn LoadBalancerProvider>>,
        default_class: &str,
        cfg: ServiceControllerConfig,
    ) -> Self {
        Self {
            registry: Registry::new(providers.clone(), &cfg),
            client,
            providers,
            default_class: default_class.to_string(),
            cfg,
            workers: 4,
            metrics: Arc::new(Metrics::new()),
            instance: std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "portway".to_string()),
        }
    }

    /// How many Services are reconciled at once (`--concurrent-service-syncs`).
    pub fn workers(mut self, n: u16) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Records into a shared metrics registry.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs until `shutdown` resolves, then finishes the reconciles in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
        let client = self.client.clone();
        let mut tasks = JoinSet::new();

        let (ns_store, ns_writer) = reflector::store::<Namespace>();
        let ns_stream = reflector(
            ns_writer,
            watcher(
                Api::<Namespace>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff();
        tasks.spawn(ns_stream.for_each(|_| futures::future::ready(())));

        let (node_store, node_writer) = reflector::store::<Node>();
        let node_events = reflector(
            node_writer,
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .map(|_| ())
        .boxed();

        let controller = Controller::new(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        );
        let svc_store = controller.store();

        let (trigger_tx, trigger_rx) = mpsc::unbounded_channel::<ObjectRef<Service>>();
        let (nodes_tx, nodes_rx) = watch::channel(NodeSet::default());
        let (ready_tx, ready_rx) = watch::channel(false);

        let ctx = Arc::new(Context {
            client: client.clone(),
            registry: self.registry.clone(),
            default_class: self.default_class.clone(),
            cfg: self.cfg.clone(),
            events: Events::new(client.clone(), "portway", &self.instance),
            metrics: self.metrics.clone(),
            namespaces: ns_store.clone(),
            nodes: nodes_rx,
            ready: ready_rx,
            state: Mutex::default(),
            forced: Mutex::default(),
            requeue: trigger_tx.clone(),
        });

        {
            // Counting is O(Services); every 5 s keeps it off the reconcile path.
            let ctx = ctx.clone();
            tasks.spawn(async move {
                loop {
                    ctx.metrics.set_retries_pending(ctx.retries_pending());
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            });
        }

        tasks.spawn(nodes::sync_nodes(
            node_store.clone(),
            node_events,
            svc_store.clone(),
            nodes_tx.clone(),
            trigger_tx.clone(),
            self.cfg.node_sync_debounce,
        ));

        for provider in &self.providers {
            if let Some(mut keys) = provider.triggers() {
                let ctx = ctx.clone();
                let tx = trigger_tx.clone();
                tasks.spawn(async move {
                    while let Some(key) = keys.next().await {
                        let r = ObjectRef::new(&key.name).within(&key.namespace);
                        lock(&ctx.forced).insert(r.clone());
                        if tx.send(r).is_err() {
                            return;
                        }
                    }
                });
            }
        }

        // Start-up: wait for every cache, take the first node snapshot, let
        // providers adopt what exists, then open the gate for reconciles.
        {
            let ctx = ctx.clone();
            let providers = self.providers.clone();
            let svc_store = svc_store.clone();
            tasks.spawn(async move {
                crate::k8s::wait_until_ready(&svc_store).await;
                crate::k8s::wait_until_ready(&ns_store).await;
                crate::k8s::wait_until_ready(&node_store).await;
                let first = NodeSet::compute(&node_store.state(), &NodeSet::default());
                nodes_tx.send_replace(first);
                adopt_all(&ctx, &providers, &svc_store.state()).await;
                info!("caches synced and providers adopted existing Services; reconciling");
                ready_tx.send_replace(true);
                // Keep the sender alive so reconciles never see a closed gate.
                std::future::pending::<()>().await;
            });
        }

        let cfg = kube::runtime::controller::Config::default().concurrency(self.workers);
        let triggers = tokio_stream::wrappers::UnboundedReceiverStream::new(trigger_rx);
        controller
            .with_config(cfg)
            .reconcile_on(triggers)
            .graceful_shutdown_on(shutdown)
            .run(reconcile::reconcile, error_policy, ctx)
            .for_each(|res| {
                if let Err(e) = res {
                    match e {
                        kube::runtime::controller::Error::ObjectNotFound(_) => {}
                        e => warn!(%e, "reconcile failed"),
                    }
                }
                futures::future::ready(())
            })
            .await;
        tasks.abort_all();
    }
}

async fn adopt_all(
    ctx: &Context,
    providers: &[Arc<dyn LoadBalancerProvider>],
    all: &[Arc<Service>],
) {
    for provider in providers {
        let class = provider.class();
        let mine: Vec<(LbService, Arc<Service>)> = all
            .iter()
            .filter(|s| rules::effective_class(s, &ctx.default_class) == Some(class))
            .map(|s| {
                let view = view::service_view(s, class, &ctx.namespace_labels(s))
                    .unwrap_or_else(|_| minimal_view(s, class));
                (view, s.clone())
            })
            .collect();
        let views: Vec<LbService> = mine.iter().map(|(v, _)| v.clone()).collect();
        let problems = provider.adopt(&views).await;
        for (key, e) in problems {
            if let Some((_, svc)) = mine.iter().find(|(v, _)| v.key == key) {
                ctx.publish(svc, Kind::Warning, adopt_reason(&e), &e.to_string())
                    .await;
            } else {
                warn!(service = %key, %e, "provider reported a problem for an unknown Service");
            }
        }
    }
}

/// The Warning reason for a problem found while adopting: two Services on one
/// address is a conflict; an address kept outside every configured pool is an
/// orphan, which asks for a different fix.
fn adopt_reason(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::Conflict { .. } => "AddressConflict",
        ProviderError::Invalid { field, .. } if field == "status.loadBalancer.ingress" => {
            "AddressOrphaned"
        }
        _ => "AdoptionFailed",
    }
}

fn error_policy(svc: Arc<Service>, e: &reconcile::Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(&*svc);
    let failures = ctx.update_state(&key, |st| st.failures += 1);
    let delay = ctx.backoff(failures, &ProviderError::transient(e.to_string()));
    warn!(service = %key, %e, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

use crate::k8s::Action;

/// The key of a Service, as providers name it.
pub fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey::new(svc.namespace().unwrap_or_default(), svc.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adoption_problems_are_named_for_their_fix() {
        let conflict = ProviderError::Conflict {
            what: "address 192.0.2.1".into(),
            holder: "default/a".into(),
        };
        assert_eq!(adopt_reason(&conflict), "AddressConflict");
        let orphan = portway_provider::ipam::AllocError::Orphaned {
            ip: "192.0.2.1".parse().expect("ip"),
        }
        .to_provider_error(&Default::default());
        assert_eq!(adopt_reason(&orphan), "AddressOrphaned");
        let other = ProviderError::invalid("spec.ports", "no port");
        assert_eq!(adopt_reason(&other), "AdoptionFailed");
    }
}
