//! Adding and removing the cleanup finalizer with guarded JSON patches.
//!
//! kube-runtime's finalizer helper would put a finalizer on every Service the
//! controller sees; Portway must only touch Services it serves, so it writes
//! its own patches. Each carries a `test` operation, so a concurrent change
//! to the finalizer list makes the patch fail instead of clobbering it.

use super::rules::FINALIZER;
use crate::k8s::Service;
use serde_json::json;

/// The patch that adds the finalizer, or `None` when it is already there.
pub fn add_patch(svc: &Service) -> Option<serde_json::Value> {
    match &svc.metadata.finalizers {
        Some(list) if list.iter().any(|f| f == FINALIZER) => None,
        Some(list) if !list.is_empty() => Some(json!([
            { "op": "test", "path": "/metadata/finalizers", "value": list },
            { "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER },
        ])),
        _ => Some(json!([
            { "op": "test", "path": "/metadata/resourceVersion",
              "value": svc.metadata.resource_version.clone().unwrap_or_default() },
            { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
        ])),
    }
}

/// The patch that removes the finalizer, or `None` when it is absent.
pub fn remove_patch(svc: &Service) -> Option<serde_json::Value> {
    let list = svc.metadata.finalizers.as_ref()?;
    let index = list.iter().position(|f| f == FINALIZER)?;
    let path = format!("/metadata/finalizers/{index}");
    Some(json!([
        { "op": "test", "path": path, "value": FINALIZER },
        { "op": "remove", "path": path },
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::ObjectMeta;

    fn svc(finalizers: Option<Vec<&str>>) -> Service {
        Service {
            metadata: ObjectMeta {
                resource_version: Some("7".into()),
                finalizers: finalizers.map(|f| f.into_iter().map(String::from).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn apply(svc: &Service, patch: serde_json::Value) -> serde_json::Value {
        let mut doc = serde_json::to_value(svc).expect("serialize");
        let patch: json_patch::Patch = serde_json::from_value(patch).expect("patch");
        json_patch::patch(&mut doc, &patch).expect("apply");
        doc
    }

    #[test]
    fn add_to_missing_list() {
        let s = svc(None);
        let doc = apply(&s, add_patch(&s).expect("patch"));
        assert_eq!(doc["metadata"]["finalizers"], json!([FINALIZER]));
    }

    #[test]
    fn add_keeps_other_finalizers() {
        let s = svc(Some(vec!["other.io/x"]));
        let doc = apply(&s, add_patch(&s).expect("patch"));
        assert_eq!(
            doc["metadata"]["finalizers"],
            json!(["other.io/x", FINALIZER])
        );
    }

    #[test]
    fn add_is_none_when_present_and_remove_is_none_when_absent() {
        assert!(add_patch(&svc(Some(vec![FINALIZER]))).is_none());
        assert!(remove_patch(&svc(Some(vec!["other.io/x"]))).is_none());
        assert!(remove_patch(&svc(None)).is_none());
    }

    #[test]
    fn remove_only_ours() {
        let s = svc(Some(vec!["a.io/x", FINALIZER, "b.io/y"]));
        let doc = apply(&s, remove_patch(&s).expect("patch"));
        assert_eq!(doc["metadata"]["finalizers"], json!(["a.io/x", "b.io/y"]));
    }
}
