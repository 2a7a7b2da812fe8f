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

/// The OpenAPI schemas of custom resource storages (from their CRDs' storage versions):
/// their lists and maps merge as the schema's `x-kubernetes-*` extensions say. Keyed by
/// storage for the whole process, as the rules of a name are the same in every sim a test
/// starts (two sims with one CRD name and different schemas would share the last one).
static CUSTOM: std::sync::RwLock<Vec<(&'static str, std::sync::Arc<serde_json::Value>)>> =
    std::sync::RwLock::new(Vec::new());

/// Registers the schema of a custom resource storage (a CRD was established or changed).
pub fn register_custom(storage: &'static str, schema: serde_json::Value) {
    let mut list = CUSTOM.write().unwrap_or_else(|p| p.into_inner());
    list.retain(|(s, _)| *s != storage);
    list.push((storage, std::sync::Arc::new(schema)));
}

/// The schema node at `path` of a custom storage, list items stepped through.
fn custom_node(storage: &str, path: FieldPath<'_>) -> Option<serde_json::Value> {
    if path.first() == Some(&"metadata") {
        return None;
    }
    let list = CUSTOM.read().unwrap_or_else(|p| p.into_inner());
    let root = list.iter().find(|(s, _)| *s == storage)?.1.clone();
    drop(list);
    let mut node: &serde_json::Value = &root;
    for name in path {
        if node["type"] == "array" {
            node = &node["items"];
        }
        node = match node["properties"].get(*name) {
            Some(n) => n,
            None => node.get("additionalProperties").filter(|a| a.is_object())?,
        };
    }
    Some(node.clone())
}

/// The `x-kubernetes-list-map-keys` of a schema node.
fn keys_of(node: &serde_json::Value) -> &'static [&'static str] {
    let keys: Vec<&str> = node["x-kubernetes-list-map-keys"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    crate::kinds::intern_list(&keys)
}

/// The list type of the list at `path` in an object of resource `storage`.
pub fn list_type(storage: &str, path: FieldPath<'_>) -> ListType {
    if let Some(node) = custom_node(storage, path) {
        return match node["x-kubernetes-list-type"].as_str() {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(keys_of(&node)),
            _ => ListType::Atomic,
        };
    }
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
    if let Some(node) = custom_node(storage, path) {
        return node["x-kubernetes-map-type"] == "atomic";
    }
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
    if let Some(node) = custom_node(storage, path) {
        return node["items"]["x-kubernetes-map-type"] == "atomic";
    }
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
