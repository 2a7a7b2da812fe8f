//! The controller's writes to a Service, each tolerant of the Service having gone (404),
//! and the finalizer written the way upstream writes it: a strategic-merge patch that adds
//! to (or deletes from) the finalizer set, with no precondition, so a concurrent write by
//! anyone else can never make it conflict.

use super::context::Context;
use crate::k8s::{Patch, PatchParams, ResourceExt, Service};
use crate::names::FINALIZER;
use serde_json::{Value, json};

/// The patch that adds the finalizer, or `None` when it is there (or the Service is being
/// deleted: the API server refuses new finalizers then).
pub fn add_finalizer_patch(svc: &Service) -> Option<Value> {
    if super::rules::has_finalizer(svc) || svc.metadata.deletion_timestamp.is_some() {
        return None;
    }
    Some(json!({ "metadata": { "finalizers": [FINALIZER] } }))
}

/// The patch that removes the finalizer, or `None` when it is absent.
pub fn remove_finalizer_patch(svc: &Service) -> Option<Value> {
    super::rules::has_finalizer(svc)
        .then(|| json!({ "metadata": { "$deleteFromPrimitiveList/finalizers": [FINALIZER] } }))
}

/// Adds the cleanup finalizer if missing.
pub(super) async fn add_finalizer(ctx: &Context, svc: &Service) -> Result<(), kube::Error> {
    match add_finalizer_patch(svc) {
        Some(patch) => patch_meta(ctx, svc, &patch).await,
        None => Ok(()),
    }
}

/// Removes the cleanup finalizer if present.
pub(super) async fn remove_finalizer(ctx: &Context, svc: &Service) -> Result<(), kube::Error> {
    match remove_finalizer_patch(svc) {
        Some(patch) => patch_meta(ctx, svc, &patch).await,
        None => Ok(()),
    }
}

async fn patch_meta(ctx: &Context, svc: &Service, patch: &Value) -> Result<(), kube::Error> {
    gone_is_done(
        ctx.services(svc)
            .patch(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await,
    )
}

/// A merge patch of the status subresource.
pub(super) async fn patch_status(
    ctx: &Context,
    svc: &Service,
    patch: &Value,
) -> Result<(), kube::Error> {
    gone_is_done(
        ctx.services(svc)
            .patch_status(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
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
        let add = add_finalizer_patch(&svc(Some(vec!["other.io/x"]))).expect("patch");
        assert_eq!(add, json!({"metadata": {"finalizers": [FINALIZER]}}));
        assert!(add_finalizer_patch(&svc(Some(vec![FINALIZER]))).is_none());
        let remove = remove_finalizer_patch(&svc(Some(vec!["a", FINALIZER]))).expect("patch");
        assert_eq!(
            remove,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [FINALIZER]}})
        );
        assert!(remove_finalizer_patch(&svc(Some(vec!["other.io/x"]))).is_none());
        let mut deleting = svc(None);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(add_finalizer_patch(&deleting).is_none());
    }
}
