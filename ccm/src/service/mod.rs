//! The service controller: class dispatch, finalizer, status and events.
//!
//! What is watched: Services (kube-runtime `Controller`), Nodes (the eligible node set),
//! Namespaces (pool namespace selectors) and, when a provider reads them, EndpointSlices.
//! What is derived: per Service, a fingerprint of the fields that matter and the node set
//! generation last handed to its provider. One reconcile is [`decide::decide`], a pure
//! function of what it sees, then [`execute::perform`] of the one step it chose.
//!
//! ```text
//!  Service watch ──► Controller ──► reconcile: decide ──► perform ──► Registry[class] ──► provider
//!  Node watch ──► NodeSet (generation) ──┘ ▲
//!  EndpointSlice watch, node details ─────┤ (forced, quiet ensure)
//!  provider.triggers() ───────────────────┘
//!  Service deleted without the finalizer ──► cleanup from what was remembered
//! ```
//!
//! Before the first reconcile every provider's `adopt` gets the Services it
//! already serves, so allocators are rebuilt from published statuses first.

mod context;
mod decide;
mod dispatch;
mod endpoints;
mod execute;
mod nodes;
pub mod rules;
mod status;
pub mod view;
mod writes;

pub use context::SvcState;
pub use decide::{ParkReason, Seen, Step, decide};
pub use dispatch::{Call, Registry, Reply};
pub use execute::Error;
pub use nodes::NodeSet;
pub use view::minimal_view;

use crate::config::ServiceControllerConfig;
use crate::events::{Events, Reason};
use crate::k8s::{
    Action, Api, Controller, Namespace, Node, ObjectRef, ResourceExt, Service, Store, watcher,
};
use crate::metrics::Metrics;
use context::{Context, lock};
use futures::{Future, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::runtime::{WatchStreamExt, reflector};
use portway_provider::{EndpointsUse, LbService, LoadBalancerProvider, ProviderError, ServiceKey};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

/// A Service gone from the cache, or a relist that may have hidden some.
enum Gone {
    Deleted(ObjectRef<Service>),
    Relisted,
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
    retired: Vec<String>,
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
        }
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

        let ns_store = spawn_cache::<Namespace>(&mut tasks, Api::all(client.clone()));
        let slices = self
            .providers
            .iter()
            .any(|p| p.endpoints_use() != EndpointsUse::Never)
            .then(reflector::store::<EndpointSlice>);
        let (node_store, node_writer) = reflector::store::<Node>();
        let node_events = reflector(
            node_writer,
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .map(|_| ())
        .boxed();

        // The Service watch feeds the controller and tells which Services disappeared.
        let (svc_store, svc_writer) = reflector::store::<Service>();
        let (gone_tx, gone_rx) = mpsc::unbounded_channel::<Gone>();
        let svc_stream = watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(svc_writer)
        .inspect(move |ev| {
            let gone = match ev {
                Ok(watcher::Event::Delete(s)) => Some(Gone::Deleted(ObjectRef::from_obj(s))),
                Ok(watcher::Event::InitDone) => Some(Gone::Relisted),
                _ => None,
            };
            if let Some(g) = gone {
                // The receiver lives as long as the controller.
                let _ = gone_tx.send(g);
            }
        })
        .applied_objects();
        let controller = Controller::for_stream(svc_stream, svc_store.clone());

        let (trigger_tx, trigger_rx) = mpsc::unbounded_channel::<ObjectRef<Service>>();
        let (nodes_tx, nodes_rx) = watch::channel(NodeSet::default());
        let (ready_tx, ready_rx) = watch::channel(false);

        let ctx = Arc::new(Context {
            client: client.clone(),
            registry: self.registry.clone(),
            default_class: self.default_class.clone(),
            cfg: self.cfg.clone(),
            events: Events::new(
                client.clone(),
                crate::names::SERVICE_CONTROLLER,
                &self.instance,
            ),
            metrics: self.metrics.clone(),
            namespaces: ns_store.clone(),
            slices: slices.as_ref().map(|(store, _)| store.clone()),
            nodes: nodes_rx,
            ready: ready_rx,
            state: Mutex::default(),
            forced: Mutex::default(),
            busy: Mutex::default(),
            requeue: trigger_tx.clone(),
            retired: self.retired.clone(),
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
            trigger_tx.clone(),
            details_tx,
            self.cfg.node_sync_debounce,
        ));
        tasks.spawn(force_on_node_details(
            ctx.clone(),
            svc_store.clone(),
            details_rx,
        ));
        if let Some((store, writer)) = slices {
            tasks.spawn(force_on_endpoints(
                ctx.clone(),
                svc_store.clone(),
                store,
                writer,
                client.clone(),
            ));
        }
        tasks.spawn(clean_up_gone(ctx.clone(), svc_store.clone(), gone_rx));

        for provider in &self.providers {
            if let Some(mut keys) = provider.triggers() {
                let ctx = ctx.clone();
                tasks.spawn(async move {
                    while let Some(key) = keys.next().await {
                        force(&ctx, ObjectRef::new(&key.name).within(&key.namespace));
                    }
                });
            }
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
                nodes_tx.send_replace(first);
                drop_legacy_finalizers(&ctx, &svc_store.state()).await;
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
            .run(reconcile, error_policy, ctx)
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

/// A reflector cache of every `K`, kept current by a task in `tasks`.
fn spawn_cache<K>(tasks: &mut JoinSet<()>, api: Api<K>) -> Store<K>
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
    let stream = reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tasks.spawn(stream.for_each(|_| futures::future::ready(())));
    store
}

/// Asks for a quiet ensure of `key`, as if its provider had asked.
fn force(ctx: &Context, key: ObjectRef<Service>) {
    lock(&ctx.forced).insert(key.clone());
    // The channel closes only when the controller stops.
    let _ = ctx.requeue.send(key);
}

/// The provider serving `svc`, if it is a LoadBalancer of a configured class.
fn provider_of<'a>(ctx: &'a Context, svc: &Service) -> Option<&'a Arc<dyn LoadBalancerProvider>> {
    let class = rules::effective_class(svc, &ctx.default_class)?;
    ctx.registry.get(class).map(|h| h.provider())
}

/// An address or label of an eligible node changed (not the set): Services whose provider
/// follows node details are ensured again, after the snapshot already holds the change.
async fn force_on_node_details(
    ctx: Arc<Context>,
    services: Store<Service>,
    mut changed: mpsc::UnboundedReceiver<()>,
) {
    while changed.recv().await.is_some() {
        for svc in services.state() {
            if provider_of(&ctx, &svc).is_some_and(|p| p.follows_node_details())
                && ctx.state_of(&ObjectRef::from_obj(&*svc)).is_some()
            {
                force(&ctx, ObjectRef::from_obj(&*svc));
            }
        }
    }
}

/// Keeps the EndpointSlice cache and forces a quiet ensure of a Service whose endpoints
/// changed, when its provider reads them.
async fn force_on_endpoints(
    ctx: Arc<Context>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    writer: reflector::store::Writer<EndpointSlice>,
    client: Client,
) {
    let mut digests = endpoints::Digests::default();
    let mut stream = reflector(
        writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .boxed();
    while let Some(slice) = stream.next().await {
        let Ok(slice) = slice else { continue };
        let (Some(ns), Some(name)) = (
            slice.namespace(),
            slice
                .labels()
                .get(portway_provider::SERVICE_NAME_LABEL)
                .cloned(),
        ) else {
            continue;
        };
        let key = ObjectRef::new(&name).within(&ns);
        let Some(svc) = services.get(&key) else {
            digests.forget(&key);
            continue;
        };
        let wanted = provider_of(&ctx, &svc)
            .is_some_and(|p| p.endpoints_use().applies_to(view::traffic_policy(&svc)));
        if !wanted || ctx.state_of(&key).is_none() {
            continue;
        }
        let now = endpoints::endpoints_of(&slices, &ns, &name);
        if digests.changed(&key, &now) {
            force(&ctx, key);
        }
    }
}

/// Services that left the cache: those deleted with the finalizer were cleaned up by
/// their reconcile; the others (finalizer stripped) are cleaned up here from what was
/// remembered. A relist may have hidden deletions, so after one every remembered
/// Service missing from the cache is looked at.
async fn clean_up_gone(
    ctx: Arc<Context>,
    services: Store<Service>,
    mut gone: mpsc::UnboundedReceiver<Gone>,
) {
    while let Some(g) = gone.recv().await {
        let _ = ctx.ready.clone().wait_for(|r| *r).await;
        let keys: Vec<ObjectRef<Service>> = match g {
            Gone::Deleted(key) => vec![key],
            Gone::Relisted => lock(&ctx.state)
                .keys()
                .filter(|k| services.get(k).is_none())
                .cloned()
                .collect(),
        };
        for key in keys {
            let guard = ctx.key_lock(&key);
            let _held = guard.lock().await;
            if services.get(&key).is_none() {
                execute::cleanup_gone(&ctx, &key).await;
            }
        }
    }
}

/// The reconcile entry point handed to kube-runtime's Controller.
async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _ = ctx.ready.clone().wait_for(|r| *r).await;
    let key = ObjectRef::from_obj(&*svc);
    let guard = ctx.key_lock(&key);
    let _held = guard.lock().await;
    let span = tracing::info_span!(
        "reconcile",
        service = %format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
    );
    let started = std::time::Instant::now();
    ctx.metrics.reconcile_running(true);
    let class = rules::effective_class(&svc, &ctx.default_class);
    let seen = Seen {
        load_balancer: rules::is_load_balancer(&svc),
        deleting: rules::is_deleting(&svc),
        portway_class: class.is_some_and(|c| crate::config::CLASSES.contains(&c)),
        configured: class.is_some_and(|c| ctx.registry.get(c).is_some()),
        retired: class.is_some_and(|c| ctx.retired.iter().any(|r| r == c)),
        has_finalizer: rules::has_finalizer(&svc),
        has_status: !status::current_ingress(&svc).is_empty(),
        fingerprint: class.map_or(0, |c| rules::lb_fingerprint(&svc, c)),
        node_generation: ctx.nodes.borrow().generation,
        forced: ctx.take_forced(&key),
    };
    let step = decide(&seen, ctx.state_of(&key).as_ref());
    let job = execute::Job {
        svc: &svc,
        key: &key,
        ctx: &ctx,
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
                ctx.publish(svc, adopt_reason(&e), &e.to_string()).await;
            } else {
                warn!(service = %key, %e, "provider reported a problem for an unknown Service");
            }
        }
    }
}

/// The finalizer k3s's old ServiceLB put on Services: nothing removes it once k3s's
/// ServiceLB is gone, and it blocks their deletion forever (k3s removes it on start too).
pub const LEGACY_K3S_FINALIZER: &str = "svccontroller.k3s.cattle.io/daemonset";

async fn drop_legacy_finalizers(ctx: &Context, all: &[Arc<Service>]) {
    for svc in all {
        let legacy = svc
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == LEGACY_K3S_FINALIZER));
        if !legacy {
            continue;
        }
        let patch = serde_json::json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": [LEGACY_K3S_FINALIZER]}});
        match ctx
            .services(svc)
            .patch(
                &svc.name_any(),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => {
                info!(service = %ObjectRef::from_obj(&**svc), "removed k3s's legacy svclb finalizer")
            }
            Err(e) => {
                warn!(service = %ObjectRef::from_obj(&**svc), %e, "removing k3s's legacy svclb finalizer")
            }
        }
    }
}

/// The Warning reason for a problem found while adopting: two Services on one address is a
/// conflict; an address kept outside every configured pool is an orphan, which asks for a
/// different fix.
fn adopt_reason(e: &ProviderError) -> Reason {
    match e {
        ProviderError::Conflict { .. } => Reason::AddressConflict,
        ProviderError::Orphaned { .. } => Reason::AddressOrphaned,
        _ => Reason::AdoptionFailed,
    }
}

fn error_policy(svc: Arc<Service>, e: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(&*svc);
    let failures = ctx.update_state(&key, |st| st.failures += 1);
    let delay = ctx.backoff(failures, &ProviderError::transient(e.to_string()));
    warn!(service = %key, %e, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// The key of a Service, as providers name it.
pub fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey::new(svc.namespace().unwrap_or_default(), svc.name_any())
}

/// The delay before the `failures`-th retry: a provider's own `retry_after`, else
/// `min * 2^(failures-1)` capped at `max`.
pub fn backoff_delay(failures: u32, e: &ProviderError, min: Duration, max: Duration) -> Duration {
    if let ProviderError::Transient {
        retry_after: Some(d),
        ..
    } = e
    {
        return *d;
    }
    let exp = failures.saturating_sub(1).min(20);
    min.saturating_mul(1u32 << exp).min(max)
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

    #[test]
    fn adoption_problems_are_named_for_their_fix() {
        let conflict = ProviderError::Conflict {
            what: "address 192.0.2.1".into(),
            holder: "default/a".into(),
        };
        assert_eq!(adopt_reason(&conflict), Reason::AddressConflict);
        let orphan = portway_provider::ipam::AllocError::Orphaned {
            ip: "192.0.2.1".parse().expect("ip"),
        }
        .to_provider_error(&Default::default());
        assert_eq!(adopt_reason(&orphan), Reason::AddressOrphaned);
        let other = ProviderError::invalid("spec.ports", "no port");
        assert_eq!(adopt_reason(&other), Reason::AdoptionFailed);
    }
}
