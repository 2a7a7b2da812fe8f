//! Performs the [`Step`] that [`super::decide`] chose: the provider call, then only the
//! writes that differ (finalizer, status), each event typed.
//!
//! Transient provider errors back off per Service (5 s doubling to 5 min by default);
//! needs-a-fix errors give one Warning event and park the Service until its spec changes,
//! so a bad annotation never hot-loops. An exhausted pool, or an address or port another
//! Service holds, is retried with backoff and at once when a cleanup releases something.

use super::condition;
use super::context::{Context, SvcState};
use super::decide::{ParkReason, Step};
use super::dispatch::{Handle, Reply, Request};
use super::queue::Action;
use super::status::{current_ingress, desired_ingress, ingress_patch};
use super::view::service_view;
use super::writes::{self, Finalized, add_finalizer, remove_finalizer, served_class};
use crate::events::Reason;
use crate::k8s::{ObjectRef, Service};
use portway_provider::{LbService, LbStatus, ProviderError};
use tracing::{debug, info, warn};

/// Why a reconcile failed in a way the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A write to the API server failed (conflict, 5xx, network).
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
}

/// One Service's reconcile: what it is and where its answers go.
pub(super) struct Job<'a> {
    pub svc: &'a Service,
    pub key: &'a ObjectRef<Service>,
    pub ctx: &'a Context,
    /// The effective class (its own, else the default); `None` when not a LoadBalancer.
    pub class: Option<&'a str>,
    pub fingerprint: u64,
}

impl Job<'_> {
    async fn publish(&self, reason: Reason, note: &str) {
        self.ctx.publish(self.svc, reason, note).await;
    }

    /// The provider's view, with the endpoints when the provider reads them.
    fn view(&self, class: &str, handle: &Handle) -> Result<LbService, ProviderError> {
        let mut view = service_view(self.svc, class, &self.ctx.namespace_labels(self.svc))?;
        let wanted = handle
            .provider()
            .endpoints_use()
            .applies_to(view.external_traffic_policy);
        super::endpoints::fill(&mut view, self.ctx.slices.as_ref(), wanted);
        Ok(view)
    }
}

/// Performs `step`.
pub(super) async fn perform(step: Step, job: &Job<'_>) -> Result<Action, Error> {
    match step {
        Step::Leave => Ok(Action::await_change()),
        Step::Forget => {
            job.ctx.forget(job.key);
            Ok(Action::await_change())
        }
        Step::Park(ParkReason::NotConfigured) => {
            let class = job.class.unwrap_or_default();
            let e = ProviderError::invalid(
                "spec.loadBalancerClass",
                format!(
                    "{class} is not configured in this controller: add its section to the \
                     configuration (or name a configured class); the Service keeps its address \
                     and finalizer until then"
                ),
            );
            Ok(park(job, class, &e).await)
        }
        Step::Ensure { quiet } => ensure(job, quiet).await,
        Step::Update => update(job).await,
        Step::Cleanup => cleanup(job).await,
        Step::ReleaseForeign => release_foreign(job).await,
    }
}

fn handle_of<'a>(job: &Job<'a>) -> Option<(&'a str, &'a Handle)> {
    let class = job.class?;
    job.ctx.registry.get(class).map(|h| (class, h))
}

async fn ensure(job: &Job<'_>, quiet: bool) -> Result<Action, Error> {
    let Some((class, handle)) = handle_of(job) else {
        // decide() only ensures a configured class; keep the two in agreement.
        return Ok(Action::await_change());
    };
    let mut view = match job.view(class, handle) {
        Ok(v) => v,
        Err(e) => return Ok(park(job, class, &e).await),
    };
    // Another class served it before (changed while running, or while no controller
    // ran): what that class made is released at once, and its addresses are not the new
    // class's to adopt.
    let previous = job
        .ctx
        .state_of(job.key)
        .filter(|st| st.served && st.class != class)
        .map(|st| st.class)
        .or_else(|| {
            served_class(job.svc)
                .filter(|c| *c != class)
                .map(String::from)
        });
    if let Some(previous) = previous {
        if !current_ingress(job.svc).is_empty() || condition::is_present(job.svc) {
            // The old class's addresses leave the status before the old class releases
            // them and before the new class is recorded as the serving one: a status never
            // shows an address its Service no longer holds, which a restart would adopt
            // (and win from the Service that got it since, as the older of the two). The
            // cleared copy's event brings the Service back here.
            clear_status(job).await?;
            return Ok(Action::await_change());
        }
        if let Some(old) = job.ctx.registry.get(&previous) {
            let gone = super::view::minimal_view(job.svc, &previous);
            if let Some(retry) = delete_in(job, &previous, old, gone).await {
                return Ok(retry);
            }
        }
        info!(from = %previous, to = class, "class changed: released what the old class held");
        view.current_ips.clear();
    }
    if !quiet {
        job.publish(Reason::EnsuringLoadBalancer, "Ensuring load balancer")
            .await;
    }
    let resource_version = match add_finalizer(job.ctx, job.svc, class).await {
        Ok(Finalized::Current(rv)) => rv,
        Ok(Finalized::Changed) => {
            debug!("changed since the cached read; reconciling the new copy");
            if quiet {
                // A provider's ask (or a repair) on the same spec: the next pass would
                // find the spec ensured and leave it, and the ask would be lost (the
                // sandbox's hostport status stayed at two nodes of three).
                super::watches::force(job.ctx, job.key.clone());
                return Ok(Action::await_change());
            }
            return Ok(Action::requeue(std::time::Duration::ZERO));
        }
        Err(e) => {
            job.publish(
                Reason::SyncLoadBalancerFailed,
                &format!("Error adding the cleanup finalizer: {e}"),
            )
            .await;
            return Err(e.into());
        }
    };
    let nodes = job.ctx.nodes.borrow().clone();
    let generation = nodes.generation;
    job.ctx.update_state(job.key, |st| {
        st.class = class.to_string();
        st.served = true;
        st.uid = job.svc.metadata.uid.clone();
    });
    let result = job
        .ctx
        .call(class, handle, Request::Ensure(view, nodes.nodes.clone()))
        .await;
    let status = match result {
        Ok(Reply::Status(status)) => status,
        Ok(other) => {
            warn!(?other, "provider answered ensure with a non-status reply");
            let e = ProviderError::transient("provider returned no status");
            return Ok(fail(job, class, e).await);
        }
        Err(e) => return Ok(fail(job, class, e).await),
    };
    publish_status(
        job,
        class,
        &status,
        quiet,
        nodes.nodes.is_empty(),
        resource_version.as_deref(),
    )
    .await?;
    job.ctx.update_state(job.key, |st| {
        *st = SvcState {
            class: class.to_string(),
            ensured: Some(job.fingerprint),
            node_generation: generation,
            served: true,
            uid: st.uid.take(),
            // The status just written: the next decision is judged against it too.
            published: st.published,
            ..Default::default()
        }
    });
    Ok(Action::await_change())
}

/// Writes the status when it differs and says what happened.
async fn publish_status(
    job: &Job<'_>,
    class: &str,
    status: &LbStatus,
    quiet: bool,
    no_nodes: bool,
    resource_version: Option<&str>,
) -> Result<(), Error> {
    for warning in &status.warnings {
        job.publish(warning_reason(warning), &warning.to_string())
            .await;
    }
    for note in &status.notes {
        job.publish(Reason::AppliedDaemonSet, note).await;
    }
    let desired = desired_ingress(status);
    let digest = super::status::ingress_digest(&desired);
    let mut last = None;
    job.ctx
        .update_state(job.key, |st| last = st.published.replace(digest));
    let previous = current_ingress(job.svc);
    let changed = super::status::needs_write(&desired, &previous, last);
    let serving = condition::after_ensure(status, no_nodes);
    let serving_changed = !condition::is_current(job.svc, &serving);
    if changed || serving_changed {
        let mut patch = if changed {
            ingress_patch(&desired)
        } else {
            serde_json::json!({ "status": {} })
        };
        if serving_changed {
            patch["status"]["conditions"] =
                serde_json::json!([condition::to_json(job.svc, &serving)]);
        }
        writes::patch_status(job.ctx, job.svc, resource_version, &patch).await?;
    }
    let ips = |list: &[crate::k8s::LoadBalancerIngress]| -> Vec<String> {
        list.iter().filter_map(|i| i.ip.clone()).collect()
    };
    let (old, new) = (ips(&previous), ips(&desired));
    if no_nodes || (desired.is_empty() && (!previous.is_empty() || !status.warnings.is_empty())) {
        // Nothing can carry the traffic: no eligible node, every node refused, or the
        // last serving node went away.
        job.publish(
            Reason::UnAvailableLoadBalancer,
            "There are no available nodes for LoadBalancer",
        )
        .await;
    }
    if changed && !old.is_empty() {
        job.publish(
            Reason::UpdatedLoadBalancer,
            &format!("Updated LoadBalancer with new IPs: {old:?} -> {new:?}"),
        )
        .await;
    }
    if !quiet || (changed && old.is_empty()) {
        job.publish(
            Reason::EnsuredLoadBalancer,
            &if new.is_empty() {
                "Ensured load balancer".to_string()
            } else {
                format!("Ensured load balancer at {}", new.join(", "))
            },
        )
        .await;
    }
    info!(class, changed, "ensured load balancer");
    if changed && !previous.is_empty() {
        // A Service that moved off an address released it.
        job.ctx.retry_waiting_for_release();
    }
    Ok(())
}

async fn update(job: &Job<'_>) -> Result<Action, Error> {
    let Some((class, handle)) = handle_of(job) else {
        return Ok(Action::await_change());
    };
    let view = match job.view(class, handle) {
        Ok(v) => v,
        Err(e) => return Ok(park(job, class, &e).await),
    };
    let nodes = job.ctx.nodes.borrow().clone();
    match job
        .ctx
        .call(class, handle, Request::Update(view, nodes.nodes.clone()))
        .await
    {
        Ok(_) => {
            if nodes.nodes.is_empty() {
                job.publish(
                    Reason::UnAvailableLoadBalancer,
                    "There are no available nodes for LoadBalancer",
                )
                .await;
            } else {
                job.publish(
                    Reason::UpdatedLoadBalancer,
                    "Updated load balancer with new hosts",
                )
                .await;
            }
            job.ctx.update_state(job.key, |st| {
                st.node_generation = nodes.generation;
                st.failures = 0;
            });
            Ok(Action::await_change())
        }
        Err(e) => {
            job.publish(
                Reason::UpdateLoadBalancerFailed,
                &format!("Error updating load balancer with new hosts: {e}"),
            )
            .await;
            // Escalate to a full ensure on the next attempt, as upstream does.
            let failures = job.ctx.update_state(job.key, |st| {
                st.ensured = None;
                st.failures += 1;
            });
            Ok(Action::requeue(job.ctx.backoff(failures, &e)))
        }
    }
}

/// Releases everything Portway provisioned for a Service that no longer wants a load
/// balancer (type changed, deleted), then clears its status and drops the finalizer.
async fn cleanup(job: &Job<'_>) -> Result<Action, Error> {
    let ctx = job.ctx;
    let remembered = ctx.state_of(job.key);
    // Which providers may hold something: the class that last served it, the class the
    // Service still names, or (after a restart with the class gone from the spec) every
    // provider: ensure_deleted is idempotent.
    let known = remembered
        .as_ref()
        .map(|s| s.class.clone())
        .filter(|c| !c.is_empty())
        .or_else(|| job.class.map(str::to_string));
    let handles: Vec<(&str, &Handle)> = match known
        .as_deref()
        .and_then(|c| ctx.registry.get(c).map(|h| (c, h)))
    {
        Some(one) => vec![one],
        None => ctx.registry.iter().collect(),
    };
    let class_name = known.clone().unwrap_or_else(|| ctx.default_class.clone());
    let view = super::view::minimal_view(job.svc, &class_name);
    let exists = !current_ingress(job.svc).is_empty() || remembered.is_some_and(|s| s.served);
    if exists {
        job.publish(Reason::DeletingLoadBalancer, "Deleting load balancer")
            .await;
    }
    // The status goes first: a status never shows an address its Service no longer holds
    // (a restart adopts published addresses, and would give a released one back to this
    // Service as the older claimant), and the speakers withdraw before the address is free.
    // A Service being deleted keeps its status (it goes with the object) and claims nothing
    // at adoption.
    let says_serving = condition::is_present(job.svc);
    if !super::rules::is_deleting(job.svc) && (!current_ingress(job.svc).is_empty() || says_serving)
    {
        clear_status(job).await?;
    }
    for (c, handle) in &handles {
        if let Some(retry) = delete_in(job, c, handle, view.clone()).await {
            return Ok(retry);
        }
    }
    if let Err(e) = remove_finalizer(ctx, job.svc).await {
        job.publish(
            Reason::SyncLoadBalancerFailed,
            &format!("Error removing the cleanup finalizer: {e}"),
        )
        .await;
        return Err(e.into());
    }
    if exists {
        job.publish(Reason::DeletedLoadBalancer, "Deleted load balancer")
            .await;
    }
    debug!("load balancer cleaned up");
    ctx.forget(job.key);
    ctx.retry_waiting_for_release();
    Ok(Action::await_change())
}

/// Removes the published addresses and the Serving condition (nothing is served any
/// more), refused if the Service changed since the cached copy.
async fn clear_status(job: &Job<'_>) -> Result<(), Error> {
    // `null` removes the list; an empty object would merge nothing and leave it.
    let clear = serde_json::json!({ "status": {
        "loadBalancer": { "ingress": null },
        "conditions": [{ "type": condition::SERVING, "$patch": "delete" }] } });
    let rv = job.svc.metadata.resource_version.as_deref();
    writes::patch_status(job.ctx, job.svc, rv, &clear).await?;
    Ok(())
}

/// Cleans up a Service that disappeared from the cache without Portway's finalizer (it
/// was stripped), from what was remembered of it: upstream's `processServiceDeletion`.
pub(super) async fn cleanup_gone(ctx: &Context, key: &ObjectRef<Service>) {
    let Some(st) = ctx.state_of(key).filter(|s| s.served) else {
        ctx.forget(key);
        return;
    };
    let (Some(uid), Some(handle)) = (st.uid.clone(), ctx.registry.get(&st.class)) else {
        ctx.forget(key);
        return;
    };
    let view = LbService {
        key: portway_provider::ServiceKey::new(
            key.namespace.clone().unwrap_or_default(),
            key.name.clone(),
        ),
        uid,
        class: st.class.clone(),
        ..Default::default()
    };
    info!(service = %key, class = %st.class, "Service deleted without the finalizer; releasing what it held");
    if let Err(e) = ctx.call(&st.class, handle, Request::Delete(view)).await {
        warn!(service = %key, %e, "releasing a deleted Service failed; its resources wait for the next start's sweep");
    }
    ctx.forget(key);
    ctx.retry_waiting_for_release();
}

/// A Service another controller serves now, carrying the shared cleanup finalizer: the
/// finalizer and the status are that controller's, so neither is touched. Only what
/// Portway provisioned itself, before a change of class, is released.
async fn release_foreign(job: &Job<'_>) -> Result<Action, Error> {
    let ours = job
        .ctx
        .state_of(job.key)
        .filter(|s| s.served)
        .and_then(|s| job.ctx.registry.get(&s.class).map(|h| (s.class.clone(), h)));
    if let Some((class, handle)) = ours {
        let view = super::view::minimal_view(job.svc, &class);
        if let Some(retry) = delete_in(job, &class, handle, view).await {
            return Ok(retry);
        }
    }
    job.ctx.forget(job.key);
    job.ctx.retry_waiting_for_release();
    Ok(Action::await_change())
}

/// `ensure_deleted` on one provider; on failure, a Warning and the retry to return (the
/// finalizer stays until every provider has cleaned up).
async fn delete_in(job: &Job<'_>, class: &str, handle: &Handle, view: LbService) -> Option<Action> {
    let e = job
        .ctx
        .call(class, handle, Request::Delete(view))
        .await
        .err()?;
    job.publish(
        Reason::SyncLoadBalancerFailed,
        &format!("Error deleting load balancer: {e}"),
    )
    .await;
    let failures = job.ctx.update_state(job.key, |st| st.failures += 1);
    Some(Action::requeue(job.ctx.backoff(failures, &e)))
}

/// Says on the Service, in its `portway.dev/Serving` condition, why it is not served; a
/// failure to write it is logged (the Warning event says the same).
async fn say_not_serving(job: &Job<'_>, e: &ProviderError) {
    let serving = condition::after_error(e);
    if condition::is_current(job.svc, &serving) {
        return;
    }
    let patch = serde_json::json!({ "status": {
        "conditions": [condition::to_json(job.svc, &serving)] } });
    let rv = job.svc.metadata.resource_version.as_deref();
    if let Err(e) = writes::patch_status(job.ctx, job.svc, rv, &patch).await {
        debug!(%e, "could not write the Serving condition");
    }
}

/// A needs-a-fix error before or from the provider: one Warning event, then wait for the
/// Service to change.
async fn park(job: &Job<'_>, class: &str, e: &ProviderError) -> Action {
    job.publish(
        Reason::SyncLoadBalancerFailed,
        &format!("Error syncing load balancer: {e}"),
    )
    .await;
    say_not_serving(job, e).await;
    job.ctx.metrics.observe_user_error(class, e.kind());
    let generation = job.ctx.nodes.borrow().generation;
    job.ctx.update_state(job.key, |st| {
        if st.class.is_empty() {
            st.class = class.to_string();
        }
        st.waiting_for_release = false;
        st.parked = Some(job.fingerprint);
        st.ensured = None;
        st.node_generation = generation;
    });
    Action::await_change()
}

async fn fail(job: &Job<'_>, class: &str, e: ProviderError) -> Action {
    // Pools fill and empty, and held addresses and ports are released, without this
    // Service changing: retried like a transient error, at once after a release, never
    // parked.
    let waits_for_release = matches!(
        e,
        ProviderError::Exhausted { .. } | ProviderError::Conflict { .. }
    );
    if !e.is_transient() && !waits_for_release {
        return park(job, class, &e).await;
    }
    if waits_for_release {
        job.ctx.metrics.observe_user_error(class, e.kind());
    }
    job.publish(
        Reason::SyncLoadBalancerFailed,
        &format!("Error syncing load balancer: {e}"),
    )
    .await;
    say_not_serving(job, &e).await;
    let failures = job.ctx.update_state(job.key, |st| {
        st.class = class.to_string();
        st.ensured = None;
        st.parked = None;
        st.failures += 1;
        st.waiting_for_release = waits_for_release;
    });
    let delay = job.ctx.backoff(failures, &e);
    debug!(
        ?delay,
        failures, waits_for_release, "provider error worth retrying, retrying"
    );
    Action::requeue(delay)
}

fn warning_reason(e: &ProviderError) -> Reason {
    match e {
        ProviderError::Conflict { .. } => Reason::LoadBalancerConflict,
        ProviderError::Exhausted { .. } => Reason::AllocationFailed,
        _ => Reason::SyncLoadBalancerWarning,
    }
}
