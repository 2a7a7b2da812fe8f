//! The controller's writes to a Service, each tolerant of the Service having gone (404),
//! and the finalizer written the way upstream writes it: a strategic-merge patch that adds
//! to (or deletes from) the finalizer set, with no precondition, so a concurrent write by
//! anyone else can never make it conflict.

use super::context::Context;
use crate::k8s::{Patch, PatchParams, ResourceExt, Service};
use crate::names::{FINALIZER, SERVED_CLASS};
use serde_json::{Value, json};

/// The class recorded as the one that served the Service.
pub fn served_class(svc: &Service) -> Option<&str> {
    svc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SERVED_CLASS))
        .map(String::as_str)
}

/// The patch that adds the finalizer and records `class` as the serving class, or `None`
/// when both are there (or the Service is being deleted: the API server refuses new
/// finalizers then).
pub fn add_finalizer_patch(svc: &Service, class: &str) -> Option<Value> {
    let deleting = svc.metadata.deletion_timestamp.is_some();
    let done = super::rules::has_finalizer(svc) && served_class(svc) == Some(class);
    (!deleting && !done).then(|| {
        json!({ "metadata": { "finalizers": [FINALIZER], "annotations": { SERVED_CLASS: class } } })
    })
}

/// The patch that removes the finalizer and the serving class, or `None` when both are
/// absent.
pub fn remove_finalizer_patch(svc: &Service) -> Option<Value> {
    let needed = super::rules::has_finalizer(svc) || served_class(svc).is_some();
    needed.then(|| {
        json!({ "metadata": { "$deleteFromPrimitiveList/finalizers": [FINALIZER],
            "annotations": { SERVED_CLASS: null } } })
    })
}

/// What the finalizer write found of the Service.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Finalized {
    /// The Service is still the one the reconcile decided on: this resourceVersion (after
    /// the write, or the old one when nothing was written) is the status write's
    /// precondition.
    Current(Option<String>),
    /// The user changed the Service between the cached read and this write: an address
    /// computed from the older copy must not be published under the newer one (the status
    /// write's precondition would accept it, being taken from this answer). Reconcile the
    /// new copy instead.
    Changed,
}

/// Adds the cleanup finalizer and records the serving class if needed.
pub(super) async fn add_finalizer(
    ctx: &Context,
    svc: &Service,
    class: &str,
) -> Result<Finalized, kube::Error> {
    let Some(patch) = add_finalizer_patch(svc, class) else {
        return Ok(Finalized::Current(svc.metadata.resource_version.clone()));
    };
    let written = ctx
        .services(svc)
        .patch(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await;
    match written {
        Ok(now) if now_differs(svc, &now, class) => Ok(Finalized::Changed),
        Ok(now) => Ok(Finalized::Current(now.metadata.resource_version)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Finalized::Current(None)),
        Err(e) => Err(e),
    }
}

/// Whether the copy a write returned differs from the one decided on in what the
/// provider reads (Portway's own annotations and the finalizer aside), or in its published
/// addresses: an allocator that never saw the Service (a new leader adopting from a cache
/// that lagged) keeps the addresses the copy shows, so a decision made on an older copy
/// would publish a new address under the newer copy's resourceVersion, moving a VIP.
fn now_differs(decided: &Service, now: &Service, class: &str) -> bool {
    use super::status::{current_ingress, ingress_equal};
    super::rules::lb_fingerprint(decided, class) != super::rules::lb_fingerprint(now, class)
        || super::rules::is_deleting(now)
        || !ingress_equal(&current_ingress(decided), &current_ingress(now))
}

/// Removes the cleanup finalizer and the serving class if present.
pub(super) async fn remove_finalizer(ctx: &Context, svc: &Service) -> Result<(), kube::Error> {
    let Some(patch) = remove_finalizer_patch(svc) else {
        return Ok(());
    };
    gone_is_done(
        ctx.services(svc)
            .patch(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await,
    )
}

/// A strategic-merge patch of the status subresource (conditions merge by type, so other
/// controllers' stay; the ingress list is atomic), refused (409) if the Service changed
/// since `resource_version`: a writer that lost its lease during a pause, or that read an
/// old copy, never overwrites a newer decision.
pub(super) async fn patch_status(
    ctx: &Context,
    svc: &Service,
    resource_version: Option<&str>,
    patch: &Value,
) -> Result<(), kube::Error> {
    let mut patch = patch.clone();
    if let Some(rv) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    gone_is_done(
        ctx.services(svc)
            .patch_status(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await,
    )
}

/// A write to a Service deleted meanwhile has nothing left to do.
fn gone_is_done<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::ObjectMeta;

    fn svc(finalizers: Option<Vec<&str>>) -> Service {
        Service {
            metadata: ObjectMeta {
                finalizers: finalizers.map(|f| f.into_iter().map(String::from).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn finalizer_patches_are_set_operations_without_preconditions() {
        let c = "portway.dev/l2";
        let add = add_finalizer_patch(&svc(Some(vec!["other.io/x"])), c).expect("patch");
        assert_eq!(
            add,
            json!({"metadata": {"finalizers": [FINALIZER], "annotations": {SERVED_CLASS: c}}})
        );
        let mut served = svc(Some(vec![FINALIZER]));
        served.metadata.annotations = Some([(SERVED_CLASS.to_string(), c.to_string())].into());
        assert!(add_finalizer_patch(&served, c).is_none());
        assert!(
            add_finalizer_patch(&served, "portway.dev/bgp").is_some(),
            "a new class is recorded"
        );
        let remove = remove_finalizer_patch(&svc(Some(vec!["a", FINALIZER]))).expect("patch");
        assert_eq!(
            remove,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [FINALIZER],
                "annotations": {SERVED_CLASS: null}}})
        );
        assert!(remove_finalizer_patch(&svc(Some(vec!["other.io/x"]))).is_none());
        let mut deleting = svc(None);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(add_finalizer_patch(&deleting, c).is_none());
    }
}

#[cfg(test)]
mod finalized_tests {
    use super::*;

    fn svc(annotations: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "default", "uid": "u1",
                "annotations": annotations },
            "spec": { "type": "LoadBalancer", "ports": [{ "port": 80 }] }
        }))
        .expect("a Service")
    }

    /// Found by the long chaos run: a requested address added between the cached read and
    /// the finalizer write was published over with the pool's address, then moved.
    #[test]
    fn a_user_change_seen_in_the_finalizer_answer_is_not_published_over() {
        let class = "portway.dev/l2";
        let decided = svc(json!({}));
        let ours = svc(json!({ SERVED_CLASS: class }));
        assert!(
            !now_differs(&decided, &ours, class),
            "our own writes are no change"
        );
        let requested = svc(json!({ "portway.dev/load-balancer-ips": "192.168.78.8" }));
        assert!(now_differs(&decided, &requested, class));
        let mut deleting = ours.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        assert!(now_differs(&decided, &deleting, class));
    }

    /// Found by the chaos run on the sim: a new leader whose cache lagged decided on a copy
    /// without the address the old leader had published; the finalizer write answered with
    /// the current copy, and its resourceVersion let a new address be published over the
    /// old one.
    #[test]
    fn an_address_published_since_the_cached_read_is_a_change() {
        let class = "portway.dev/bgp";
        let decided = svc(json!({ SERVED_CLASS: class }));
        let mut published = decided.clone();
        published.status = Some(
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.4"}]}}))
                .expect("status"),
        );
        assert!(now_differs(&decided, &published, class));
        assert!(!now_differs(&published, &published.clone(), class));
    }
}
