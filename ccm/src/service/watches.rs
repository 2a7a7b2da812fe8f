//! The tasks beside the Service watch that ask for reconciles: a provider's inputs changed
//! (endpoints, an eligible node's details), or a Service left the cache without the
//! finalizer and must be cleaned up from what was remembered.

use super::context::{Context, lock};
use super::{endpoints, rules, view};
use crate::k8s::{Api, ObjectRef, ResourceExt, Service, Store, watcher};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::runtime::{WatchStreamExt, reflector};
use portway_provider::LoadBalancerProvider;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// A reflector cache of every `K`, kept current by a task in `tasks`.
pub(super) fn spawn_cache<K>(tasks: &mut JoinSet<()>, api: Api<K>) -> Store<K>
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
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(writer);
    tasks.spawn(stream.for_each(|_| futures::future::ready(())));
    store
}

/// Asks for a quiet ensure of `key`, as if its provider had asked.
pub(super) fn force(ctx: &Context, key: ObjectRef<Service>) {
    lock(&ctx.forced).insert(key.clone());
    ctx.queue.add(key);
}

/// The provider serving `svc`, if it is a LoadBalancer of a configured class.
fn provider_of<'a>(ctx: &'a Context, svc: &Service) -> Option<&'a Arc<dyn LoadBalancerProvider>> {
    let class = rules::effective_class(svc, &ctx.default_class)?;
    ctx.registry.get(class).map(|h| h.provider())
}

/// Address pools changed: every LoadBalancer Service of a pool class (l2, bgp, f5) that has
/// no address yet is ensured again now, so a pool created for it serves it at once.
pub(super) async fn force_on_pool_change(
    ctx: Arc<Context>,
    services: Store<Service>,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    while changes.changed().await.is_ok() {
        for svc in services.state() {
            let class = rules::effective_class(&svc, &ctx.default_class);
            let pooled = class.is_some_and(|c| crate::names::POOL_CLASSES.contains(&c));
            if pooled
                && rules::is_load_balancer(&svc)
                && provider_of(&ctx, &svc).is_some()
                && super::status::current_ingress(&svc).is_empty()
            {
                force(&ctx, super::view::object_key(&svc));
            }
        }
    }
}

/// An address or label of an eligible node changed (not the set): Services whose provider
/// follows node details are ensured again, after the snapshot already holds the change.
pub(super) async fn force_on_node_details(
    ctx: Arc<Context>,
    services: Store<Service>,
    mut changed: mpsc::UnboundedReceiver<()>,
) {
    while changed.recv().await.is_some() {
        for svc in services.state() {
            if provider_of(&ctx, &svc).is_some_and(|p| p.follows_node_details())
                && ctx.state_of(&super::view::object_key(&svc)).is_some()
            {
                force(&ctx, super::view::object_key(&svc));
            }
        }
    }
}

/// Keeps the EndpointSlice cache and forces a quiet ensure of a Service whose endpoints
/// changed, when its provider reads them.
pub(super) async fn force_on_endpoints(
    ctx: Arc<Context>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    writer: reflector::store::Writer<EndpointSlice>,
    client: Client,
) {
    let mut digests = endpoints::Digests::default();
    let mut stream = watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|s| s.managed_fields_mut().clear())
    .reflect(writer)
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
        // A Service whose first reconcile is still in flight is forced too: that reconcile
        // may have read the endpoints before this change reached the cache, and nothing
        // else would ensure it again (its spec does not change).
        if !wanted {
            continue;
        }
        let now = endpoints::endpoints_of(&slices, &ns, &name);
        if digests.changed(&key, &now) {
            force(&ctx, key);
        }
    }
}

/// Keeps the Service cache and queues every Service an event touches, a deleted one
/// included. A relist may have hidden deletions, so after one every Service the
/// controller remembers and the cache lost is queued too. `managedFields` and kubectl's
/// applied copy are dropped before caching ([`crate::trim::service`]): the controller never
/// reads them, and on a real server they are most of a Service's bytes.
pub(super) async fn queue_services(
    ctx: Arc<Context>,
    api: Api<Service>,
    writer: reflector::store::Writer<Service>,
    store: Store<Service>,
) {
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(crate::trim::service)
        .reflect(writer)
        .boxed();
    // A relist's objects reach the store all at once, at InitDone: queued earlier, a key
    // would be reconciled against the copy from before the relist (a Service deleted or
    // created while the watch was down looked settled, and nothing queued it again).
    let mut relisted: Vec<ObjectRef<Service>> = Vec::new();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(watcher::Event::Apply(s) | watcher::Event::Delete(s)) => {
                ctx.queue.add(super::view::object_key(&s));
            }
            Ok(watcher::Event::Init) => relisted.clear(),
            Ok(watcher::Event::InitApply(s)) => relisted.push(super::view::object_key(&s)),
            Ok(watcher::Event::InitDone) => {
                let lost: Vec<ObjectRef<Service>> = lock(&ctx.state)
                    .keys()
                    .filter(|k| store.get(k).is_none())
                    .cloned()
                    .collect();
                for key in relisted.drain(..).chain(lost) {
                    ctx.queue.add(key);
                }
            }
            Err(_) => {}
        }
    }
}
