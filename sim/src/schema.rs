//! What the real server knows from its type definitions and the sim keeps as a table: how
//! each list and map of the served kinds merges.
//!
//! Two mechanisms read it. Strategic merge patch uses the Go struct tags
//! `patchStrategy`/`patchMergeKey`; server-side apply and `managedFields` use the OpenAPI
//! extensions `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and
//! `x-kubernetes-map-type`/`structType`. Both come from the same markers in
//! `k8s.io/api/*/v1/types.go` and `apimachinery/pkg/apis/meta/v1/types.go` (v0.37.2),
//! transcribed here for the fields the served kinds have. A list not named here is atomic,
//! as an untagged list is upstream.

/// How a list merges under server-side apply (and is tracked in `managedFields`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole (`x-kubernetes-list-type: atomic`, or untagged).
    Atomic,
    /// A set of scalars, merged by value (`listType=set`).
    Set,
    /// A map of objects keyed by these fields (`listType=map`, `listMapKey`).
    Map(&'static [&'static str]),
}

/// The field names from the object root to a node, list items left out: `["spec", "ports"]`.
pub type FieldPath<'a> = &'a [&'a str];

fn last2<'a>(path: FieldPath<'a>) -> (&'a str, &'a str) {
    let n = path.len();
    let last = path.last().copied().unwrap_or("");
    let parent = if n >= 2 { path[n - 2] } else { "" };
    (parent, last)
}

/// Whether the node is inside a pod spec (a Pod's `spec`, a template's `spec`).
fn in_pod_spec(path: FieldPath<'_>) -> bool {
    path.windows(2)
        .any(|w| w == ["template", "spec"] || w == ["containers", "ports"])
        || path.first() == Some(&"spec")
}

/// The list type of the list at `path` in an object of resource `storage`.
pub fn list_type(storage: &str, path: FieldPath<'_>) -> ListType {
    let (parent, last) = last2(path);
    match (parent, last) {
        ("metadata", "finalizers") => ListType::Set,
        ("metadata", "ownerReferences") => ListType::Map(&["uid"]),
        ("spec", "ports") if storage == "services" => ListType::Map(&["port", "protocol"]),
        (_, "conditions") => ListType::Map(&["type"]),
        ("status", "addresses") if storage == "nodes" => ListType::Map(&["type"]),
        ("status", "podIPs" | "hostIPs") if storage == "pods" => ListType::Map(&["ip"]),
        ("spec", "podCIDRs") if storage == "nodes" => ListType::Set,
        (_, "containers" | "initContainers" | "ephemeralContainers") if in_pod_spec(path) => {
            ListType::Map(&["name"])
        }
        ("containers" | "initContainers" | "ephemeralContainers", "ports") => {
            ListType::Map(&["containerPort", "protocol"])
        }
        (_, "env") => ListType::Map(&["name"]),
        (_, "volumeMounts") => ListType::Map(&["mountPath"]),
        (_, "volumeDevices") => ListType::Map(&["devicePath"]),
        ("spec", "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims")
            if storage != "serviceaccounts" =>
        {
            ListType::Map(&["name"])
        }
        ("spec", "hostAliases") => ListType::Map(&["ip"]),
        ("spec", "topologySpreadConstraints") => {
            ListType::Map(&["topologyKey", "whenUnsatisfiable"])
        }
        ("", "secrets") if storage == "serviceaccounts" => ListType::Map(&["name"]),
        _ => ListType::Atomic,
    }
}

/// The strategic-merge-patch key of the list at `path` (`patchMergeKey`), `Some("")` for a
/// list of scalars merged as a set, `None` for a list the patch replaces.
pub fn patch_merge_key(storage: &str, path: FieldPath<'_>) -> Option<&'static str> {
    let (parent, last) = last2(path);
    match (parent, last) {
        ("metadata", "finalizers") => Some(""),
        ("metadata", "ownerReferences") => Some("uid"),
        ("spec", "ports") if storage == "services" => Some("port"),
        ("containers" | "initContainers" | "ephemeralContainers", "ports") => Some("containerPort"),
        // NodeStatus.addresses really merges by type: the source of the upstream bug that
        // makes CCMs replace addresses as a whole. Reproduced on purpose.
        ("status", "addresses") if storage == "nodes" => Some("type"),
        ("status", "podIPs" | "hostIPs") if storage == "pods" => Some("ip"),
        _ => match list_type(storage, path) {
            ListType::Map(keys) => keys.first().copied(),
            ListType::Set => Some(""),
            ListType::Atomic => None,
        },
    }
}

/// Whether the object at `path` is atomic (`mapType`/`structType=atomic`): owned and
/// replaced as a whole.
pub fn atomic_object(storage: &str, path: FieldPath<'_>) -> bool {
    let (parent, last) = last2(path);
    match last {
        // Service.spec.selector (mapType=atomic); LabelSelector (structType=atomic) in
        // Deployment and DaemonSet specs, affinity terms and spread constraints.
        "selector" | "labelSelector" | "namespaceSelector" | "nodeSelector" => true,
        // ObjectReference, LocalObjectReference, RoleRef, *KeySelector, NodeSelector.
        "involvedObject" | "regarding" | "related" | "targetRef" | "roleRef" | "configMapRef"
        | "secretRef" | "configMapKeyRef" | "secretKeyRef" | "fieldRef" | "resourceFieldRef" => {
            true
        }
        "requiredDuringSchedulingIgnoredDuringExecution" => parent == "nodeAffinity",
        _ => {
            let _ = storage;
            false
        }
    }
}

/// Whether each item of the list at `path` is atomic (OwnerReference, Subject,
/// LocalObjectReference, discovery EndpointPort items).
pub fn atomic_items(storage: &str, path: FieldPath<'_>) -> bool {
    let (parent, last) = last2(path);
    matches!(
        (parent, last),
        ("metadata", "ownerReferences") | ("spec", "imagePullSecrets")
    ) || (storage == "serviceaccounts" && last == "secrets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_the_served_kinds() {
        assert_eq!(
            list_type("services", &["spec", "ports"]),
            ListType::Map(&["port", "protocol"])
        );
        assert_eq!(
            patch_merge_key("services", &["spec", "ports"]),
            Some("port")
        );
        assert_eq!(
            list_type(
                "deployments",
                &["spec", "template", "spec", "containers", "ports"]
            ),
            ListType::Map(&["containerPort", "protocol"])
        );
        assert_eq!(
            list_type("endpointslices", &["ports"]),
            ListType::Atomic,
            "EndpointSlice ports are atomic"
        );
        assert_eq!(
            list_type("services", &["spec", "clusterIPs"]),
            ListType::Atomic
        );
        assert!(atomic_object("deployments", &["spec", "selector"]));
        assert!(!atomic_object("configmaps", &["data"]));
    }
}
