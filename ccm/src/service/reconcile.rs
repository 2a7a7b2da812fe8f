//! One reconcile of one Service: decide, call the provider, write what differs.
//!
//! ```text
//!  not ours ──────────────────────────────► leave alone
//!  ours, wants no LB (deleting, type changed) ─► ensure_deleted, clear status, drop finalizer
//!  ours, wants an LB:
//!     spec fingerprint changed / first sync / provider trigger ─► finalizer, ensure, status
//!     only the eligible node set changed ─────────────────────► update
//!     nothing changed ────────────────────────────────────────► nothing (0 writes)
//! ```
//!
//! Transient provider errors back off per Service (5 s doubling to 5 min by
//! default); needs-a-fix errors give one Warning event and park the Service
//! until its spec changes, so a bad annotation never hot-loops.

use super::dispatch::{Call, Handle, Reply};
use super::nodes::NodeSet;
use super::rules::{self, FINALIZER};
use super::status::{current_ingress, desired_ingress, ingress_equal, ingress_patch};
use super::view::service_view;
use super::{Context, SvcState, finalizer};
use crate::events::Kind as EventType;
use crate::k8s::{Action, Api, ObjectRef, Patch, PatchParams, Resource, ResourceExt, Service};
use portway_provider::{LbService, ProviderError};
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, debug, info, warn};

/// Why a reconcile failed in a way the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A write to the API server failed (conflict, 5xx, network).
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
}

/// The reconcile entry point handed to kube-runtime's Controller.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _ = ctx.ready.clone().wait_for(|r| *r).await;
    let key = ObjectRef::from_obj(&*svc);
    let span = tracing::info_span!(
        "reconcile",
        service = %format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
    );
    let started = std::time::Instant::now();
    ctx.metrics.reconcile_running(true);
    let result = reconcile_inner(&svc, &key, &ctx).instrument(span).await;
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

async fn reconcile_inner(
    svc: &Service,
    key: &ObjectRef<Service>,
    ctx: &Context,
) -> Result<Action, Error> {
    let forced = ctx.take_forced(key);
    let class = rules::effective_class(svc, &ctx.default_class);
    let handle = class.and_then(|c| ctx.registry.get(c));
    let wants = handle.is_some() && !rules::is_deleting(svc);

    // A Service that names a Portway class whose section is not configured (removed, or
    // not yet added) keeps its address and finalizer: tearing it down would lose the
    // allocation on a configuration mistake. It is told so once; its deletion still
    // goes through (below), so the finalizer never blocks it.
    let named = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_class.as_deref());
    if let Some(c) = named.filter(|c| handle.is_none() && crate::config::CLASSES.contains(c))
        && !rules::is_deleting(svc)
    {
        let fingerprint = rules::lb_fingerprint(svc, c);
        if ctx.state_of(key).and_then(|st| st.parked) == Some(fingerprint) {
            return Ok(Action::await_change());
        }
        let e = ProviderError::invalid(
            "spec.loadBalancerClass",
            format!(
                "{c} is not configured in this controller: add its section to the configuration; \
                 the Service keeps its address and finalizer until then"
            ),
        );
        return Ok(park(svc, key, c, fingerprint, &e, ctx).await);
    }

    if !wants {
        if rules::has_finalizer(svc) {
            return cleanup(svc, key, class, ctx).await;
        }
        ctx.forget(key);
        return Ok(Action::await_change());
    }
    let (Some(class), Some(handle)) = (class, handle) else {
        // `wants` implies both; keep the compiler and the reader in agreement.
        return Ok(Action::await_change());
    };

    let fingerprint = rules::lb_fingerprint(svc, class);
    let nodes = ctx.nodes.borrow().clone();
    let state = ctx.state_of(key);

    if let Some(st) = state.as_ref().filter(|_| !forced) {
        if st.parked == Some(fingerprint) {
            return Ok(Action::await_change());
        }
        if st.ensured == Some(fingerprint) {
            if st.node_generation == nodes.generation {
                return Ok(Action::await_change());
            }
            return update(svc, key, class, handle, &nodes, ctx).await;
        }
    }
    ensure(
        svc,
        key,
        class,
        handle,
        &nodes,
        fingerprint,
        state.is_none(),
        forced,
        ctx,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn ensure(
    svc: &Service,
    key: &ObjectRef<Service>,
    class: &str,
    handle: &Handle,
    nodes: &NodeSet,
    fingerprint: u64,
    first_sync: bool,
    forced: bool,
    ctx: &Context,
) -> Result<Action, Error> {
    let ns_labels = ctx.namespace_labels(svc);
    let view = match service_view(svc, class, &ns_labels) {
        Ok(v) => v,
        Err(e) => return Ok(park(svc, key, class, fingerprint, &e, ctx).await),
    };
    // A restart re-ensures every Service; one already in sync stays quiet.
    let quiet =
        forced || (first_sync && rules::has_finalizer(svc) && !current_ingress(svc).is_empty());
    if !quiet {
        ctx.publish(
            svc,
            EventType::Normal,
            "EnsuringLoadBalancer",
            "Ensuring load balancer",
        )
        .await;
    }
    if let Some(patch) = finalizer::add_patch(svc) {
        ctx.services(svc)
            .patch(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::<()>::Json(serde_json::from_value(patch).map_err(kube::Error::SerdeError)?),
            )
            .await?;
    }
    if nodes.nodes.is_empty() {
        unavailable(svc, ctx).await;
    }
    let result = ctx
        .call(class, handle, Call::Ensure(view, nodes.nodes.clone()))
        .await;
    let status = match result {
        Ok(Reply::Status(status)) => status,
        Ok(other) => {
            warn!(?other, "provider answered ensure with a non-status reply");
            return Ok(fail(
                svc,
                key,
                class,
                fingerprint,
                ProviderError::transient("provider returned no status"),
                ctx,
            )
            .await);
        }
        Err(e) => return Ok(fail(svc, key, class, fingerprint, e, ctx).await),
    };
    for warning in &status.warnings {
        ctx.publish(
            svc,
            EventType::Warning,
            warning_reason(warning),
            &warning.to_string(),
        )
        .await;
    }
    if status.ingress.is_empty() && !status.warnings.is_empty() {
        // Nothing could be served at all (every node refused): say so like upstream does.
        unavailable(svc, ctx).await;
    }
    let desired = desired_ingress(&status);
    let previous = current_ingress(svc);
    let changed = !ingress_equal(&desired, &previous);
    // A Service that moved off an address released it.
    let released = changed && !previous.is_empty();
    if changed {
        let patch = ingress_patch(&desired);
        match ctx
            .services(svc)
            .patch_status(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !quiet || changed {
        let ips: Vec<String> = desired.iter().filter_map(|i| i.ip.clone()).collect();
        ctx.publish(
            svc,
            EventType::Normal,
            "EnsuredLoadBalancer",
            &if ips.is_empty() {
                "Ensured load balancer".to_string()
            } else {
                format!("Ensured load balancer at {}", ips.join(", "))
            },
        )
        .await;
    }
    info!(class, changed, "ensured load balancer");
    ctx.set_state(
        key,
        SvcState {
            class: class.to_string(),
            ensured: Some(fingerprint),
            parked: None,
            node_generation: nodes.generation,
            failures: 0,
            waiting_for_address: false,
        },
    );
    if released {
        ctx.retry_waiting_for_address();
    }
    Ok(Action::await_change())
}

async fn update(
    svc: &Service,
    key: &ObjectRef<Service>,
    class: &str,
    handle: &Handle,
    nodes: &NodeSet,
    ctx: &Context,
) -> Result<Action, Error> {
    let ns_labels = ctx.namespace_labels(svc);
    let fingerprint = rules::lb_fingerprint(svc, class);
    let view = match service_view(svc, class, &ns_labels) {
        Ok(v) => v,
        Err(e) => return Ok(park(svc, key, class, fingerprint, &e, ctx).await),
    };
    let result = ctx
        .call(class, handle, Call::Update(view, nodes.nodes.clone()))
        .await;
    match result {
        Ok(_) => {
            if nodes.nodes.is_empty() {
                unavailable(svc, ctx).await;
            } else {
                ctx.publish(
                    svc,
                    EventType::Normal,
                    "UpdatedLoadBalancer",
                    "Updated load balancer with new hosts",
                )
                .await;
            }
            ctx.update_state(key, |st| {
                st.node_generation = nodes.generation;
                st.failures = 0;
            });
            Ok(Action::await_change())
        }
        Err(e) => {
            ctx.publish(
                svc,
                EventType::Warning,
                "UpdateLoadBalancerFailed",
                &format!("Error updating load balancer with new hosts: {e}"),
            )
            .await;
            // Escalate to a full ensure on the next attempt, as upstream does.
            let failures = ctx.update_state(key, |st| {
                st.ensured = None;
                st.failures += 1;
            });
            Ok(Action::requeue(ctx.backoff(failures, &e)))
        }
    }
}

async fn cleanup(
    svc: &Service,
    key: &ObjectRef<Service>,
    class: Option<&str>,
    ctx: &Context,
) -> Result<Action, Error> {
    if class.is_some_and(|c| !crate::config::CLASSES.contains(&c)) {
        return release_foreign(svc, key, ctx).await;
    }
    // Which providers may hold something: the class the Service still names,
    // the one that last ensured it, or (after a restart with the class gone
    // from the spec) every provider: ensure_deleted is idempotent.
    let mut handles: Vec<(&str, &Handle)> = Vec::new();
    let known = class
        .map(str::to_string)
        .or_else(|| ctx.state_of(key).map(|s| s.class));
    match known
        .as_deref()
        .and_then(|c| ctx.registry.get(c).map(|h| (c, h)))
    {
        Some((c, h)) => handles.push((c, h)),
        None => handles.extend(ctx.registry.iter()),
    }
    let class_name = known.clone().unwrap_or_else(|| ctx.default_class.clone());
    let view = service_view(svc, &class_name, &ctx.namespace_labels(svc))
        .unwrap_or_else(|_| minimal_view(svc, &class_name));

    ctx.publish(
        svc,
        EventType::Normal,
        "DeletingLoadBalancer",
        "Deleting load balancer",
    )
    .await;
    for (c, handle) in &handles {
        if let Some(retry) = delete_in(svc, key, c, handle, view.clone(), ctx).await {
            return Ok(retry);
        }
    }
    if !rules::is_deleting(svc) && !current_ingress(svc).is_empty() {
        // `null` removes the list; an empty object would merge nothing and leave it.
        let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": null } } });
        match ctx
            .services(svc)
            .patch_status(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(patch) = finalizer::remove_patch(svc) {
        let patch = serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
        match ctx
            .services(svc)
            .patch(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.publish(
        svc,
        EventType::Normal,
        "DeletedLoadBalancer",
        "Deleted load balancer",
    )
    .await;
    debug!(finalizer = FINALIZER, "load balancer cleaned up");
    ctx.forget(key);
    ctx.retry_waiting_for_address();
    Ok(Action::await_change())
}

/// A Service another controller serves, carrying the cleanup finalizer: the
/// finalizer is the upstream name every load-balancer controller shares and
/// the status is that controller's, so neither is touched. Only what Portway
/// provisioned itself, when it served the Service under one of its classes
/// before a change it did not see, is released.
async fn release_foreign(
    svc: &Service,
    key: &ObjectRef<Service>,
    ctx: &Context,
) -> Result<Action, Error> {
    let ours = ctx
        .state_of(key)
        .map(|s| s.class)
        .and_then(|c| ctx.registry.get(&c).map(|h| (c, h)));
    if let Some((class, handle)) = ours {
        let view = minimal_view(svc, &class);
        if let Some(retry) = delete_in(svc, key, &class, handle, view, ctx).await {
            return Ok(retry);
        }
    }
    ctx.forget(key);
    ctx.retry_waiting_for_address();
    Ok(Action::await_change())
}

/// `ensure_deleted` on one provider; on failure, a Warning and the retry to
/// return (the finalizer stays until every provider has cleaned up).
async fn delete_in(
    svc: &Service,
    key: &ObjectRef<Service>,
    class: &str,
    handle: &Handle,
    view: LbService,
    ctx: &Context,
) -> Option<Action> {
    let e = ctx.call(class, handle, Call::Delete(view)).await.err()?;
    ctx.publish(
        svc,
        EventType::Warning,
        "DeleteLoadBalancerFailed",
        &format!("Error deleting load balancer: {e}"),
    )
    .await;
    let failures = ctx.update_state(key, |st| st.failures += 1);
    Some(Action::requeue(ctx.backoff(failures, &e)))
}

/// A view with only identity and status, for cleanup and adoption when the
/// Service's annotations no longer parse: deletion must never be blocked by
/// a bad annotation. Every annotation [`service_view`] reads is dropped, the
/// MetalLB aliases included, so the view cannot fail and its key is the Service's.
pub fn minimal_view(svc: &Service, class: &str) -> LbService {
    use portway_provider::ipam::{IPS_ANNOTATIONS, POOL_ANNOTATIONS, SHARING_ANNOTATIONS};
    let mut bare = svc.clone();
    if let Some(a) = bare.metadata.annotations.as_mut() {
        a.retain(|k, _| {
            let read = IPS_ANNOTATIONS
                .iter()
                .chain(&POOL_ANNOTATIONS)
                .chain(&SHARING_ANNOTATIONS)
                .chain(&[super::view::SOURCE_RANGES]);
            !k.starts_with("portway.dev/") && !read.into_iter().any(|r| r == k)
        });
    }
    if let Some(spec) = bare.spec.as_mut() {
        spec.load_balancer_ip = None;
        spec.load_balancer_source_ranges = None;
        spec.ports = None;
    }
    service_view(&bare, class, &Default::default()).unwrap_or_default()
}

/// A needs-a-fix error before or from the provider: one Warning event, then
/// wait for the Service to change.
async fn park(
    svc: &Service,
    key: &ObjectRef<Service>,
    class: &str,
    fingerprint: u64,
    e: &ProviderError,
    ctx: &Context,
) -> Action {
    ctx.publish(
        svc,
        EventType::Warning,
        "SyncLoadBalancerFailed",
        &format!("Error syncing load balancer: {e}"),
    )
    .await;
    ctx.metrics.observe_user_error(class, e.kind());
    let generation = ctx.nodes.borrow().generation;
    ctx.upsert_state(key, class, |st| {
        st.waiting_for_address = false;
        st.parked = Some(fingerprint);
        st.ensured = None;
        st.node_generation = generation;
    });
    Action::await_change()
}

async fn fail(
    svc: &Service,
    key: &ObjectRef<Service>,
    class: &str,
    fingerprint: u64,
    e: ProviderError,
    ctx: &Context,
) -> Action {
    // Exhausted pools fill and empty without the Service changing: retried
    // like a transient error (and at once after a cleanup), never parked.
    let exhausted = matches!(e, ProviderError::Exhausted { .. });
    if !e.is_transient() && !exhausted {
        return park(svc, key, class, fingerprint, &e, ctx).await;
    }
    if exhausted {
        ctx.metrics.observe_user_error(class, e.kind());
    }
    ctx.publish(
        svc,
        EventType::Warning,
        "SyncLoadBalancerFailed",
        &format!("Error syncing load balancer: {e}"),
    )
    .await;
    let failures = ctx.upsert_state(key, class, |st| {
        st.ensured = None;
        st.parked = None;
        st.failures += 1;
        st.waiting_for_address = exhausted;
    });
    let delay = ctx.backoff(failures, &e);
    debug!(
        ?delay,
        failures, exhausted, "provider error worth retrying, retrying"
    );
    Action::requeue(delay)
}

/// The upstream controller's Warning when a load balancer has nowhere to send traffic.
async fn unavailable(svc: &Service, ctx: &Context) {
    ctx.publish(
        svc,
        EventType::Warning,
        "UnAvailableLoadBalancer",
        "There are no available nodes for LoadBalancer",
    )
    .await;
}

fn warning_reason(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::Conflict { .. } => "LoadBalancerConflict",
        ProviderError::Exhausted { .. } => "AllocationFailed",
        _ => "SyncLoadBalancerWarning",
    }
}

/// The API handle for a Service's namespace.
pub(super) fn services_api(client: &kube::Client, svc: &Service) -> Api<Service> {
    Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default())
}

/// The delay before the `failures`-th retry: a provider's own `retry_after`,
/// else `min * 2^(failures-1)` capped at `max`.
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

/// Whether `svc` has an object reference the event recorder can use.
pub(super) fn reference(svc: &Service) -> crate::k8s::ObjectReference {
    svc.object_ref(&())
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

    /// A bad value under any spelling of the annotations (MetalLB's `metallb.io/` ones
    /// included) must still give the Service's own key, or cleanup would release nothing.
    #[test]
    fn minimal_view_survives_every_spelling_of_a_bad_annotation() {
        use portway_provider::ServiceKey;
        use portway_provider::ipam::{IPS_ANNOTATIONS, POOL_ANNOTATIONS, SHARING_ANNOTATIONS};
        use std::net::IpAddr;
        for key in IPS_ANNOTATIONS
            .iter()
            .chain(&POOL_ANNOTATIONS)
            .chain(&SHARING_ANNOTATIONS)
            .chain(&[super::super::view::SOURCE_RANGES])
        {
            let svc: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "namespace": "prod",
                    "annotations": {*key: "not-an-ip,,300.1.1.1,x/99"}},
                "spec": {"type": "LoadBalancer", "loadBalancerIP": "nonsense"},
                "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.7"}]}}
            }))
            .expect("fixture");
            let v = minimal_view(&svc, "portway.dev/l2");
            assert_eq!(v.key, ServiceKey::new("prod", "web"), "{key}");
            assert_eq!(
                v.current_ips,
                ["10.0.0.7".parse::<IpAddr>().expect("ip")],
                "{key}"
            );
        }
    }
}
