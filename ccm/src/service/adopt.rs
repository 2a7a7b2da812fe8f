//! Start-up, before the first reconcile: k3s's leftovers are removed and every provider
//! adopts the Services it already serves, so allocators are rebuilt from published statuses
//! before anything new is handed out.

use super::context::Context;
use super::view::minimal_view;
use super::writes::served_class;
use super::{rules, view};
use crate::events::Reason;
use crate::k8s::{ObjectRef, ResourceExt, Service};
use portway_provider::{LbService, LoadBalancerProvider, ProviderError};
use std::sync::Arc;
use tracing::{info, warn};

/// Every provider adopts the Services of its class. A Service whose recorded serving class
/// is another one (its class changed while no controller ran) is released from that class
/// first, and its published addresses are not adopted by the new class: they are the old
/// class's (a node's own address from hostport, an address of another class's pool).
pub(super) async fn adopt_all(
    ctx: &Context,
    providers: &[Arc<dyn LoadBalancerProvider>],
    all: &[Arc<Service>],
) {
    for svc in all {
        let now = rules::effective_class(svc, &ctx.default_class);
        let Some(before) = served_class(svc).filter(|b| Some(*b) != now) else {
            continue;
        };
        if let Some(old) = ctx.registry.get(before) {
            let gone = minimal_view(svc, before);
            match old.provider().ensure_deleted(&gone).await {
                Ok(()) => {
                    info!(service = %gone.key, from = before, "class changed while stopped: released the old class")
                }
                Err(e) => {
                    warn!(service = %gone.key, from = before, %e, "releasing the old class of a Service failed; retried at its reconcile")
                }
            }
        }
    }
    for provider in providers {
        let class = provider.class();
        let mine: Vec<(LbService, Arc<Service>)> = all
            .iter()
            .filter(|s| rules::effective_class(s, &ctx.default_class) == Some(class))
            .map(|s| {
                let mut view = view::service_view(s, class, &ctx.namespace_labels(s))
                    .unwrap_or_else(|_| minimal_view(s, class));
                // A Service being deleted claims no address: its cleanup releases what it
                // held, and its status can still show an address released and handed to
                // another Service (the release comes before the finalizer goes), which it
                // must not win back as the older of the two.
                if served_class(s).is_some_and(|b| b != class) || rules::is_deleting(s) {
                    view.current_ips.clear();
                }
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

pub(super) async fn drop_legacy_finalizers(ctx: &Context, all: &[Arc<Service>]) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
