//! The service controller: class dispatch, finalizer, status and events.
//!
//! What is watched: Services (into a fair [`WorkQueue`]), Nodes (the eligible node set),
//! Namespaces (pool namespace selectors) and, when a provider reads them, EndpointSlices.
//! What is derived: per Service, a fingerprint of the fields that matter and the node set
//! generation last handed to its provider. One reconcile is [`decide::decide`], a pure
//! function of what it sees, then [`execute::perform`] of the one step it chose.
//!
//! ```text
//!  Service watch ──► WorkQueue (fair) ──► reconcile: decide ──► perform ──► Registry[class] ──► provider
//!  Node watch ──► NodeSet (generation) ──┘ ▲
//!  EndpointSlice watch, node details ─────┤ (forced, quiet ensure)
//!  provider.triggers() ───────────────────┘
//!  Service deleted without the finalizer ──► cleanup from what was remembered
//! ```
//!
//! Before the first reconcile every provider's `adopt` gets the Services it
//! already serves, so allocators are rebuilt from published statuses first.

mod adopt;
pub mod condition;
mod context;
mod decide;
mod dispatch;
mod endpoints;
mod execute;
mod nodes;
mod overlaps;
mod queue;
pub mod rules;
mod status;
pub mod view;
mod watches;
mod writes;

pub use adopt::LEGACY_K3S_FINALIZER;
pub use context::{SvcState, backoff_delay};
pub use decide::{ParkReason, Seen, Step, decide};
pub use dispatch::{Registry, Reply, Request};
pub use execute::Error;
pub use nodes::NodeSet;
pub use view::minimal_view;

use crate::config::ServiceControllerConfig;
use crate::events::Events;
use crate::k8s::{Api, Namespace, Node, ObjectRef, ResourceExt, Service, watcher};
use crate::metrics::Metrics;
use context::Context;
use futures::{Future, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::runtime::{WatchStreamExt, reflector};
use portway_provider::{EndpointsUse, LoadBalancerProvider, ProviderError, ServiceKey};
pub use queue::{Action, WorkQueue};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

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
    retired: Vec<String>,
    fence: crate::fence::Fence,
    allocator: Option<portway_provider::ipam::VipManager>,
    pool_changes: Option<watch::Receiver<u64>>,
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
            retired: Vec::new(),
            fence: crate::fence::Fence::always(),
            allocator: None,
            pool_changes: None,
        }
    }

    /// The allocator the providers share: every node's own addresses are kept out of it
    /// (never handed out) and reported where a pool contains one (see `overlaps`).
    pub fn allocator(mut self, vips: portway_provider::ipam::VipManager) -> Self {
        self.allocator = Some(vips);
        self
    }

    /// Services waiting for an address are reconciled again each time this counter moves
    /// (address pools changed live: [`crate::pools`]), instead of after their backoff.
    pub fn pool_changes(mut self, changes: watch::Receiver<u64>) -> Self {
        self.pool_changes = Some(changes);
        self
    }

    /// Provider calls only while this process may write (it leads); the API writes are
    /// fenced by the client (see [`crate::fence`]).
    pub fn fence(mut self, fence: crate::fence::Fence) -> Self {
        self.fence = fence;
        self
    }

    /// Classes switched off in the configuration whose provider only cleans up: their
    /// Services' load balancers are removed and statuses cleared.
    pub fn retired(mut self, classes: Vec<String>) -> Self {
        self.retired = classes;
        self
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
        let guard = self
            .allocator
            .map(|v| Arc::new(overlaps::PoolGuard::new(v)));

        let ns_store = watches::spawn_cache::<Namespace>(&mut tasks, Api::all(client.clone()));
        let slices = self
            .providers
            .iter()
            .any(|p| p.endpoints_use() != EndpointsUse::Never)
            .then(reflector::store::<EndpointSlice>);
        let (node_store, node_writer) = reflector::store::<Node>();
        // Nodes are kept as the node agent keeps them: on a real cluster kubelet's image
        // list alone is most of each Node, and the controller caches every Node.
        let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(crate::trim::node)
            .reflect(node_writer)
            .map(|_| ())
            .boxed();

        // The Service watch fills the cache and queues every Service it touches, deleted
        // ones included (their reconcile finds them gone and cleans up what was held).
        let (svc_store, svc_writer) = reflector::store::<Service>();
        let queue: Arc<WorkQueue<ObjectRef<Service>>> = Arc::default();
        let (nodes_tx, nodes_rx) = watch::channel(NodeSet::default());
        let (ready_tx, ready_rx) = watch::channel(false);

        let ctx = Arc::new(Context {
            client: client.clone(),
            registry: self.registry.clone(),
            default_class: self.default_class.clone(),
            cfg: self.cfg.clone(),
            events: {
                let queue = queue.clone();
                Events::yielding_to(
                    client.clone(),
                    crate::names::SERVICE_CONTROLLER,
                    &self.instance,
                    move || queue.is_busy(),
                )
            },
            metrics: self.metrics.clone(),
            namespaces: ns_store.clone(),
            slices: slices.as_ref().map(|(store, _)| store.clone()),
            nodes: nodes_rx,
            ready: ready_rx,
            state: Mutex::default(),
            forced: Mutex::default(),
            queue: queue.clone(),
            retired: self.retired.clone(),
            fence: self.fence.clone(),
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

        let (details_tx, details_rx) = mpsc::unbounded_channel::<()>();
        tasks.spawn(nodes::sync_nodes(
            node_store.clone(),
            node_events,
            svc_store.clone(),
            nodes_tx.clone(),
            queue.clone(),
            details_tx,
            self.cfg.node_sync_debounce,
        ));
        tasks.spawn(watches::force_on_node_details(
            ctx.clone(),
            svc_store.clone(),
            details_rx,
        ));
        if let Some((store, writer)) = slices {
            tasks.spawn(watches::force_on_endpoints(
                ctx.clone(),
                svc_store.clone(),
                store,
                writer,
                client.clone(),
            ));
        }
        if let Some(changes) = self.pool_changes.clone() {
            tasks.spawn(watches::force_on_pool_change(
                ctx.clone(),
                svc_store.clone(),
                changes,
            ));
        }
        tasks.spawn(watches::queue_services(
            ctx.clone(),
            Api::<Service>::all(client.clone()),
            svc_writer,
            svc_store.clone(),
        ));

        for provider in &self.providers {
            if let Some(mut keys) = provider.triggers() {
                let ctx = ctx.clone();
                tasks.spawn(async move {
                    while let Some(key) = keys.next().await {
                        watches::force(&ctx, ObjectRef::new(&key.name).within(&key.namespace));
                    }
                });
            }
        }

        if let Some(g) = guard.clone() {
            let (ctx, nodes, services) = (ctx.clone(), node_store.clone(), svc_store.clone());
            let mut snapshots = ctx.nodes.clone();
            tasks.spawn(async move {
                let _ = ctx.ready.clone().wait_for(|r| *r).await;
                loop {
                    let addresses = snapshots.borrow_and_update().addresses.clone();
                    g.apply(&ctx, &addresses, &nodes, &services).await;
                    if snapshots.changed().await.is_err() {
                        return;
                    }
                }
            });
        }

        // Start-up: wait for every cache, take the first node snapshot, let providers
        // adopt what exists, then open the gate for reconciles.
        {
            let ctx = ctx.clone();
            let providers = self.providers.clone();
            let svc_store = svc_store.clone();
            tasks.spawn(async move {
                crate::k8s::wait_until_ready(&svc_store).await;
                crate::k8s::wait_until_ready(&ns_store).await;
                crate::k8s::wait_until_ready(&node_store).await;
                let first = NodeSet::compute(&node_store.state(), &NodeSet::default());
                let addresses = first.addresses.clone();
                nodes_tx.send_replace(first);
                adopt::drop_legacy_finalizers(&ctx, &svc_store.state()).await;
                adopt::adopt_all(&ctx, &providers, &svc_store.state()).await;
                // Nodes' own addresses leave the pools before anything is handed out.
                if let Some(g) = &guard {
                    g.apply(&ctx, &addresses, &node_store, &svc_store).await;
                }
                info!("caches synced and providers adopted existing Services; reconciling");
                ready_tx.send_replace(true);
                // Keep the sender alive so reconciles never see a closed gate.
                std::future::pending::<()>().await;
            });
        }

        // The workers: each takes the key due first, reconciles it alone, and hands back
        // when to see it again.
        let mut workers = JoinSet::new();
        for _ in 0..self.workers {
            let (ctx, queue, store) = (ctx.clone(), queue.clone(), svc_store.clone());
            workers.spawn(async move {
                let _ = ctx.ready.clone().wait_for(|r| *r).await;
                while let Some(key) = queue.next().await {
                    let next = match store.get(&key) {
                        Some(svc) => match reconcile(svc.clone(), &ctx).await {
                            Ok(next) => next,
                            Err(e) => error_policy(&svc, &e, &ctx),
                        },
                        None => {
                            execute::cleanup_gone(&ctx, &key).await;
                            Action::await_change()
                        }
                    };
                    if let Some(delay) = next.requeue_after() {
                        queue.add_after(key.clone(), delay);
                    }
                    queue.done(&key);
                }
            });
        }
        shutdown.await;
        // The reconciles in flight finish; nothing new starts.
        queue.close();
        while workers.join_next().await.is_some() {}
        // What the last reconciles said is written before the process goes.
        ctx.events.flush(EVENTS_FLUSH_LIMIT).await;
        tasks.abort_all();
    }
}

/// How long a stopping controller waits for its queued events (a leader that lost its
/// Lease has them refused at once by the fence; this bounds a slow server).
const EVENTS_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// One reconcile of a Service the cache holds: what it sees, the step the table decides,
/// the step performed.
async fn reconcile(svc: Arc<Service>, ctx: &Context) -> Result<Action, Error> {
    let key = view::object_key(&svc);
    let span = tracing::info_span!(
        "reconcile",
        service = %format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
    );
    let started = std::time::Instant::now();
    ctx.metrics.reconcile_running(true);
    let class = rules::effective_class(&svc, &ctx.default_class);
    let fingerprint = class.map_or(0, |c| rules::lb_fingerprint(&svc, c));
    let state = ctx.state_of(&key);
    let seen = Seen {
        load_balancer: rules::is_load_balancer(&svc),
        deleting: rules::is_deleting(&svc),
        portway_class: class.is_some_and(|c| crate::names::CLASSES.contains(&c)),
        configured: class.is_some_and(|c| ctx.registry.get(c).is_some()),
        retired: class.is_some_and(|c| ctx.retired.iter().any(|r| r == c)),
        has_finalizer: rules::has_finalizer(&svc),
        has_status: !status::current_ingress(&svc).is_empty(),
        fingerprint,
        node_generation: ctx.nodes.borrow().generation,
        forced: ctx.take_forced(&key),
    };
    let step = decide(&seen, state.as_ref());
    let job = execute::Job {
        svc: &svc,
        key: &key,
        ctx,
        class,
        fingerprint: seen.fingerprint,
    };
    let result = {
        use tracing::Instrument as _;
        execute::perform(step, &job).instrument(span).await
    };
    ctx.metrics.reconcile_running(false);
    ctx.metrics.observe_reconcile(
        match &result {
            Ok(_) => "ok",
            Err(_) => "error",
        },
        started.elapsed(),
    );
    result
}

/// A reconcile that failed part-way (a 409 on the status write after the provider call)
/// may have consumed a provider's force: the retry must ensure again, not find the spec
/// "ensured" from an earlier success and leave a stale status (table row 9, "retried").
fn error_policy(svc: &Service, e: &Error, ctx: &Context) -> Action {
    let key = view::object_key(svc);
    let failures = ctx.update_state(&key, forget_success);
    let delay = ctx.backoff(failures, &ProviderError::transient(e.to_string()));
    warn!(service = %key, %e, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// What a failed reconcile leaves of a Service's state: one more failure, and nothing
/// that would let the next reconcile skip the ensure.
fn forget_success(st: &mut SvcState) {
    st.ensured = None;
    st.parked = None;
    st.failures += 1;
}

/// The key of a Service, as providers name it.
pub fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey::new(svc.namespace().unwrap_or_default(), svc.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let e = ProviderError::transient("x");
        let (min, max) = (Duration::from_secs(5), Duration::from_secs(300));
        let delays: Vec<u64> = (1..=9)
            .map(|n| backoff_delay(n, &e, min, max).as_secs())
            .collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        let fixed = ProviderError::Transient {
            message: "provisioning".into(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(backoff_delay(7, &fixed, min, max), Duration::from_secs(2));
        assert_eq!(backoff_delay(u32::MAX, &e, min, max), max);
    }

    /// Found by CI: a provider's force was taken by a reconcile whose status write met a
    /// 409; the retry, unforced, found the spec "ensured" and left one node's address.
    #[test]
    fn a_failed_reconcile_is_ensured_again_on_retry() {
        let seen = decide::Seen {
            load_balancer: true,
            portway_class: true,
            configured: true,
            has_finalizer: true,
            fingerprint: 7,
            node_generation: 1,
            ..Default::default()
        };
        let mut st = SvcState {
            ensured: Some(7),
            node_generation: 1,
            served: true,
            ..Default::default()
        };
        assert_eq!(decide::decide(&seen, Some(&st)), decide::Step::Leave);
        forget_success(&mut st);
        assert!(matches!(
            decide::decide(&seen, Some(&st)),
            decide::Step::Ensure { .. }
        ));
        assert_eq!(st.failures, 1);
    }
}
