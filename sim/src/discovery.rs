//! Discovery: the legacy documents (`/api`, `/apis`, `/apis/<group>`,
//! `/api/v1`, `/apis/<group>/<version>`) and the aggregated discovery kubectl 1.33 asks for
//! first (`Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`),
//! one document listing every resource of the core group or of all groups, as
//! kube-apiserver serves them.

use crate::kinds::ResourceKind;
use crate::store::Store;
use serde_json::{Value, json};

/// The media type of an aggregated discovery answer.
pub const AGGREGATED_MEDIA: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether a request asks for aggregated discovery in the one version served: some media
/// range of `Accept` names `g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`. kubectl
/// 1.26-1.29 ask for `v=v2beta1`, which kube-apiserver no longer serves (removed in 1.33):
/// they get the legacy documents, as from the real server.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let params: Vec<&str> = range.split(';').skip(1).map(str::trim).collect();
        params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

/// The verbs of a kind.
fn verbs(k: &ResourceKind) -> Vec<&'static str> {
    if k.custom.is_some() {
        // The CRD handler's order.
        return vec![
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "create",
            "update",
            "watch",
        ];
    }
    vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ]
}

fn aggregated_resource(k: &ResourceKind) -> Value {
    let mut r = json!({
        "resource": k.plural,
        "responseKind": {"group": "", "version": "", "kind": k.kind},
        "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": k.singular,
        "verbs": verbs(k),
    });
    if !k.short_names.is_empty() {
        r["shortNames"] = json!(k.short_names);
    }
    if !k.categories.is_empty() {
        r["categories"] = json!(k.categories);
    }
    let mut subs = Vec::new();
    if k.status {
        subs.push(json!({"subresource": "status",
            "responseKind": {"group": "", "version": "", "kind": k.kind},
            "verbs": ["get", "patch", "update"]}));
    }
    if k.storage == "namespaces" {
        subs.insert(
            0,
            json!({"subresource": "finalize",
            "responseKind": {"group": "", "version": "", "kind": "Namespace"},
            "verbs": ["update"]}),
        );
    }
    if !subs.is_empty() {
        r["subresources"] = json!(subs);
    }
    r
}

/// `APIGroupDiscoveryList` of the core group (`/api`) or of the named groups (`/apis`).
pub fn aggregated(store: &Store, core: bool) -> Value {
    let mut items = Vec::new();
    if core {
        let resources: Vec<Value> = store
            .kinds()
            .all()
            .iter()
            .filter(|k| k.group.is_empty())
            .map(aggregated_resource)
            .collect();
        items.push(json!({"metadata": {}, "versions": [
            {"version": "v1", "resources": resources, "freshness": "Current"}]}));
    } else {
        for (g, versions) in store.kinds().groups() {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = store
                        .kinds()
                        .all()
                        .iter()
                        .filter(|k| k.group == g && k.version == *v)
                        .map(aggregated_resource)
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            items.push(json!({"metadata": {"name": g}, "versions": vs}));
        }
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {}, "items": items})
}

/// `/version`.
pub fn version() -> Value {
    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-portway-sim",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
        "platform": "linux/amd64"})
}

/// `/apis` (legacy).
pub fn group_list(store: &Store) -> Value {
    let groups: Vec<Value> = store
        .kinds()
        .groups()
        .into_iter()
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": vs, "preferredVersion": vs[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/api/v1`, `/apis/<group>/<version>` (legacy).
pub fn resource_list(store: &Store, group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<ResourceKind> = store
        .kinds()
        .all()
        .into_iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut resources = Vec::new();
    for k in &kinds {
        resources.push(json!({
            "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": verbs(k),
            "shortNames": k.short_names, "categories": k.categories,
        }));
        if k.status {
            resources.push(
                json!({"name": format!("{}/status", k.plural), "singularName": "",
                "namespaced": k.namespaced, "kind": k.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
        "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_v2_is_aggregated() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json"));
    }
}
